//! GitHub webhooks: the `X-Hub-Signature-256` check and the events the review loop acts on —
//! `issue_comment`, `pull_request_review_comment`, `pull_request_review` and `pull_request`
//! (closed and merged) — applied to the pull requests of tickets in review exactly as the
//! poller applies what it reads.

use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use uuid::Uuid;

use super::store::{self, GhComment, ReviewTarget};
use super::sync::{approved, comment_from_json};
use super::{Review, ReviewError, repo_slug};

/// Whether `signature` (`sha256=<hex>`) is the HMAC-SHA256 of `body` under `secret`, compared
/// in constant time.
pub fn verify_signature(secret: &[u8], body: &[u8], signature: Option<&str>) -> bool {
    let Some(hex_sig) = signature.and_then(|s| s.trim().strip_prefix("sha256=")) else {
        return false;
    };
    let Ok(expected) = hex::decode(hex_sig) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&expected).is_ok()
}

/// The `X-Hub-Signature-256` value for `body` (for tests and tools).
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// What a delivery asks of the review loop.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A new or edited comment (issue comment, review line comment, or a review with a body);
    /// `approval` when it is a submitted approving review.
    Comment {
        repo: String,
        pr: i32,
        comment: Option<GhComment>,
        approval: bool,
    },
    /// The pull request was merged.
    Merged { repo: String, pr: i32 },
    /// Nothing to do (why).
    Ignored(&'static str),
}

fn pr_number(v: Option<&Value>) -> Option<i32> {
    v.and_then(Value::as_i64)
        .and_then(|n| i32::try_from(n).ok())
}

/// Reads a delivery of `event` (the `X-GitHub-Event` header).
pub fn parse_event(event: &str, payload: &Value) -> Event {
    let Some(repo) = payload
        .pointer("/repository/full_name")
        .and_then(Value::as_str)
        .map(str::to_owned)
    else {
        return Event::Ignored("no repository in the payload");
    };
    let action = payload
        .get("action")
        .and_then(Value::as_str)
        .unwrap_or_default();
    match event {
        "issue_comment" => {
            if payload.pointer("/issue/pull_request").is_none() {
                return Event::Ignored("a comment on an issue, not a pull request");
            }
            if !matches!(action, "created" | "edited") {
                return Event::Ignored("comment action not handled");
            }
            match pr_number(payload.pointer("/issue/number")) {
                Some(pr) => Event::Comment {
                    repo,
                    pr,
                    comment: payload.get("comment").and_then(comment_from_json),
                    approval: false,
                },
                None => Event::Ignored("no issue number"),
            }
        }
        "pull_request_review_comment" => {
            if !matches!(action, "created" | "edited") {
                return Event::Ignored("comment action not handled");
            }
            match pr_number(payload.pointer("/pull_request/number")) {
                Some(pr) => Event::Comment {
                    repo,
                    pr,
                    comment: payload.get("comment").and_then(comment_from_json),
                    approval: false,
                },
                None => Event::Ignored("no pull request number"),
            }
        }
        "pull_request_review" => {
            if !matches!(action, "submitted" | "edited") {
                return Event::Ignored("review action not handled");
            }
            let review = payload.get("review");
            let state = review
                .and_then(|r| r.get("state"))
                .and_then(Value::as_str)
                .unwrap_or_default();
            match pr_number(payload.pointer("/pull_request/number")) {
                Some(pr) => Event::Comment {
                    repo,
                    pr,
                    comment: review.and_then(comment_from_json),
                    approval: state.eq_ignore_ascii_case("approved"),
                },
                None => Event::Ignored("no pull request number"),
            }
        }
        "pull_request" => {
            let merged = payload
                .pointer("/pull_request/merged")
                .and_then(Value::as_bool);
            match (
                action,
                merged,
                pr_number(payload.pointer("/pull_request/number")),
            ) {
                ("closed", Some(true), Some(pr)) => Event::Merged { repo, pr },
                _ => Event::Ignored("pull request action other than a merge"),
            }
        }
        _ => Event::Ignored("event not handled"),
    }
}

/// What processing a delivery did.
#[derive(Debug, Clone, Default)]
pub struct Processed {
    /// Tickets in review the delivery concerned.
    pub tickets: Vec<Uuid>,
    /// Review jobs enqueued.
    pub enqueued: Vec<Uuid>,
    /// Tickets moved to done.
    pub done: Vec<Uuid>,
}

impl Review {
    /// The tickets in review whose pull request is `pr` of repository `repo`.
    async fn targets_for(&self, repo: &str, pr: i32) -> Result<Vec<ReviewTarget>, ReviewError> {
        Ok(store::in_review_by_number(self.db(), pr)
            .await?
            .into_iter()
            .filter(|t| {
                t.github_url
                    .as_deref()
                    .and_then(repo_slug)
                    .is_some_and(|s| s.eq_ignore_ascii_case(repo))
            })
            .collect())
    }

    /// Applies a delivery: the same upserts, enqueues and moves to done as the poller.
    pub async fn process_event(&self, event: &Event) -> Result<Processed, ReviewError> {
        let mut out = Processed::default();
        let (repo, pr) = match event {
            Event::Comment { repo, pr, .. } | Event::Merged { repo, pr } => (repo, *pr),
            Event::Ignored(_) => return Ok(out),
        };
        for target in self.targets_for(repo, pr).await? {
            out.tickets.push(target.ticket_id);
            match event {
                Event::Merged { .. } => {
                    if self.finish(&target, "webhook", "merged").await? {
                        out.done.push(target.ticket_id);
                    }
                }
                Event::Comment {
                    comment, approval, ..
                } => {
                    if *approval
                        && self.approved_now(repo, pr).await
                        && self.finish(&target, "webhook", "approved").await?
                    {
                        out.done.push(target.ticket_id);
                        continue;
                    }
                    let comments: Vec<GhComment> = comment.iter().cloned().collect();
                    let applied = self.apply_comments(&target, &comments, "webhook").await?;
                    out.enqueued.extend(applied.enqueued.map(|j| j.id));
                }
                Event::Ignored(_) => {}
            }
        }
        Ok(out)
    }

    /// Whether the pull request is approved by all its reviews (read from GitHub: one approval
    /// does not outweigh another reviewer's request for changes). On a GitHub error the poller
    /// decides later.
    async fn approved_now(&self, repo: &str, pr: i32) -> bool {
        let token = self.token().await.ok().flatten();
        match self
            .github()
            .get_all(
                token.as_deref(),
                &format!("/repos/{repo}/pulls/{pr}/reviews"),
            )
            .await
        {
            Ok(reviews) => approved(&reviews.value),
            Err(e) => {
                tracing::warn!(error = %e, pr_number = pr, "webhook: cannot read the reviews; the poller will check the approval");
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn signatures() {
        let body = br#"{"zen":"Keep it logically awesome."}"#;
        let sig = sign(b"s3cret", body);
        assert!(verify_signature(b"s3cret", body, Some(&sig)));
        assert!(!verify_signature(b"other", body, Some(&sig)));
        assert!(!verify_signature(b"s3cret", b"{}", Some(&sig)));
        assert!(!verify_signature(b"s3cret", body, None));
        assert!(!verify_signature(b"s3cret", body, Some("sha256=zz")));
        assert!(!verify_signature(
            b"s3cret",
            body,
            Some(&sig.replace("sha256=", "sha1="))
        ));
        // GitHub's documented example.
        assert_eq!(
            sign(b"It's a Secret to Everybody", b"Hello, World!"),
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
        );
    }

    #[test]
    fn events() {
        let repo = json!({"full_name": "acme/shop"});
        let c = json!({"id": 9, "body": "please fix", "user": {"login": "rev"}, "created_at": "2025-01-01T00:00:00Z"});
        let e = parse_event(
            "issue_comment",
            &json!({"action": "created", "issue": {"number": 7, "pull_request": {}}, "comment": c, "repository": repo}),
        );
        assert!(matches!(
            e,
            Event::Comment {
                pr: 7,
                comment: Some(_),
                approval: false,
                ..
            }
        ));
        let e = parse_event(
            "issue_comment",
            &json!({"action": "created", "issue": {"number": 7}, "comment": c, "repository": repo}),
        );
        assert!(matches!(e, Event::Ignored(_)));
        let e = parse_event(
            "pull_request_review",
            &json!({"action": "submitted", "pull_request": {"number": 7}, "review": {"id": 3, "state": "approved", "body": null}, "repository": repo}),
        );
        assert_eq!(
            e,
            Event::Comment {
                repo: "acme/shop".into(),
                pr: 7,
                comment: None,
                approval: true
            }
        );
        let e = parse_event(
            "pull_request",
            &json!({"action": "closed", "pull_request": {"number": 7, "merged": true}, "repository": repo}),
        );
        assert_eq!(
            e,
            Event::Merged {
                repo: "acme/shop".into(),
                pr: 7
            }
        );
        let e = parse_event(
            "pull_request",
            &json!({"action": "closed", "pull_request": {"number": 7, "merged": false}, "repository": repo}),
        );
        assert!(matches!(e, Event::Ignored(_)));
        assert!(matches!(
            parse_event("push", &json!({"repository": repo})),
            Event::Ignored(_)
        ));
    }
}
