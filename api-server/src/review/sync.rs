//! Reading GitHub's JSON for the review loop: comments (issue comments, review line comments and
//! reviews) and whether a pull request is approved.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::store::GhComment;

/// A comment of GitHub's JSON (issue comment, review line comment, or review): None without an
/// `id` or with a blank body. Reviews use `submitted_at` as their time.
pub fn comment_from_json(v: &Value) -> Option<GhComment> {
    let id = v.get("id")?.as_i64()?;
    let body = v.get("body").and_then(Value::as_str).unwrap_or_default();
    if body.trim().is_empty() {
        return None;
    }
    let author = v
        .pointer("/user/login")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let created_at = ["created_at", "submitted_at"]
        .iter()
        .find_map(|k| v.get(*k).and_then(Value::as_str))
        .and_then(parse_time);
    Some(GhComment {
        id,
        author,
        body: body.to_owned(),
        created_at,
    })
}

/// Parses GitHub's ISO 8601 times (`2025-01-01T10:00:00Z`).
pub fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// Whether the reviews (in GitHub's chronological order) approve the pull request: some
/// reviewer's latest decisive review approves and none's requests changes. (The original only
/// looked at the very last review, so a later comment-only review hid an approval.)
pub fn approved(reviews: &[Value]) -> bool {
    let mut latest: HashMap<String, String> = HashMap::new();
    for r in reviews {
        let who = r
            .pointer("/user/login")
            .and_then(Value::as_str)
            .unwrap_or("unknown")
            .to_owned();
        match r.get("state").and_then(Value::as_str).unwrap_or_default() {
            s @ ("APPROVED" | "CHANGES_REQUESTED") => {
                latest.insert(who, s.to_owned());
            }
            "DISMISSED" => {
                latest.remove(&who);
            }
            _ => {}
        }
    }
    latest.values().any(|s| s == "APPROVED") && latest.values().all(|s| s != "CHANGES_REQUESTED")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn review(who: &str, state: &str) -> Value {
        json!({"id": 1, "user": {"login": who}, "state": state, "body": ""})
    }

    #[test]
    fn approvals() {
        assert!(!approved(&[]));
        assert!(approved(&[review("a", "APPROVED")]));
        assert!(approved(&[
            review("a", "APPROVED"),
            review("b", "COMMENTED")
        ]));
        assert!(!approved(&[
            review("a", "APPROVED"),
            review("b", "CHANGES_REQUESTED")
        ]));
        assert!(approved(&[
            review("b", "CHANGES_REQUESTED"),
            review("b", "APPROVED")
        ]));
        assert!(!approved(&[
            review("a", "APPROVED"),
            review("a", "DISMISSED")
        ]));
        assert!(!approved(&[review("a", "COMMENTED")]));
    }

    #[test]
    fn comments() {
        let c = comment_from_json(&json!({"id": 5, "body": "fix", "user": {"login": "bob"},
            "created_at": "2025-01-01T10:00:00Z"}))
        .unwrap();
        assert_eq!(c.id, 5);
        assert_eq!(c.author.as_deref(), Some("bob"));
        assert_eq!(c.created_at, parse_time("2025-01-01T10:00:00+00:00"));
        let r = comment_from_json(
            &json!({"id": 6, "body": "ok", "submitted_at": "2025-01-02T10:00:00Z"}),
        )
        .unwrap();
        assert_eq!(r.created_at, parse_time("2025-01-02T10:00:00Z"));
        assert!(comment_from_json(&json!({"id": 7, "body": "  "})).is_none());
        assert!(comment_from_json(&json!({"body": "x"})).is_none());
    }
}
