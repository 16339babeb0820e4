//! The Director's answer contract and its strict parsing.
//!
//! Execution and review turns: `{"complete": true, "summary": …}` or
//! `{"complete": false, "next_prompt": …}`. Plan review: `{"plan_approved": true,
//! "approved_plan_text": …}` or `{"plan_approved": false, "next_prompt": …}`. The flags must be
//! JSON booleans (the original read `"false"` as true); an answer that breaks the contract is an
//! error, and the caller asks the model again.

use serde_json::{Map, Value};

/// Which contract applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Plan review.
    PlanReview,
    /// Execution (and review) turns.
    Execution,
}

/// A parsed Director answer.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Assessment {
    /// Execution: the work is done.
    pub complete: bool,
    /// Execution: what was done (when complete).
    pub summary: String,
    /// The worker's next instruction (when not complete / not approved).
    pub next_prompt: String,
    /// Plan review: the plan is approved.
    pub plan_approved: bool,
    /// Plan review: the approved plan as a checklist.
    pub approved_plan_text: String,
    /// The JSON text the answer was read from (kept in the Director history).
    pub json_text: String,
}

/// Why an answer was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ContractError(pub String);

/// Finds the JSON object in a model answer: the whole text, a fenced block (```json preferred,
/// up to the last fence), or the outermost `{…}`.
pub fn extract_json(content: &str) -> Option<(Map<String, Value>, String)> {
    let text = content.trim();
    let mut candidates: Vec<String> = vec![text.to_owned()];
    if let Some(start) = text.find("```json") {
        let rest = &text[start + 7..];
        if let Some(end) = rest.rfind("```") {
            candidates.push(rest[..end].trim().to_owned());
        }
    }
    if let Some(start) = text.find("```") {
        let rest = &text[start + 3..];
        let rest = rest.strip_prefix("json").unwrap_or(rest);
        if let Some(end) = rest.find("```") {
            candidates.push(rest[..end].trim().to_owned());
        }
    }
    if let (Some(a), Some(b)) = (text.find('{'), text.rfind('}'))
        && a < b
    {
        candidates.push(text[a..=b].to_owned());
    }
    candidates
        .into_iter()
        .find_map(|c| match serde_json::from_str::<Value>(&c) {
            Ok(Value::Object(map)) => Some((map, c)),
            _ => None,
        })
}

fn strict_bool(map: &Map<String, Value>, key: &str) -> Result<bool, ContractError> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(other) => Err(ContractError(format!(
            "`{key}` must be the JSON boolean true or false, not {other}"
        ))),
    }
}

fn text(map: &Map<String, Value>, key: &str) -> String {
    map.get(key)
        .and_then(Value::as_str)
        .map(str::trim)
        .unwrap_or_default()
        .to_owned()
}

/// Parses and checks a Director answer.
pub fn parse_assessment(content: &str, phase: Phase) -> Result<Assessment, ContractError> {
    let (map, json_text) = extract_json(content).ok_or_else(|| {
        ContractError("the answer is not a JSON object (reply with only the JSON object)".into())
    })?;
    let mut a = Assessment {
        next_prompt: text(&map, "next_prompt"),
        summary: text(&map, "summary"),
        approved_plan_text: text(&map, "approved_plan_text"),
        json_text,
        ..Assessment::default()
    };
    match phase {
        Phase::Execution => {
            a.complete = strict_bool(&map, "complete")?;
            if !a.complete && a.next_prompt.is_empty() {
                return Err(ContractError(
                    "`complete` is false but `next_prompt` is missing or empty".into(),
                ));
            }
        }
        Phase::PlanReview => {
            a.plan_approved = strict_bool(&map, "plan_approved")?;
            if !a.plan_approved && a.next_prompt.is_empty() {
                return Err(ContractError(
                    "`plan_approved` is false but `next_prompt` is missing or empty".into(),
                ));
            }
        }
    }
    Ok(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_fenced_and_embedded_json() {
        let a =
            parse_assessment(r#"{"complete": true, "summary": "done"}"#, Phase::Execution).unwrap();
        assert!(a.complete && a.summary == "done");
        let a = parse_assessment(
            "Here you go:\n```json\n{\"complete\": false, \"next_prompt\": \"write ```x``` test\"}\n```",
            Phase::Execution,
        )
        .unwrap();
        assert_eq!(a.next_prompt, "write ```x``` test");
        let a = parse_assessment(
            "```\n{\"complete\": false, \"next_prompt\": \"go\"}\n```",
            Phase::Execution,
        )
        .unwrap();
        assert_eq!(a.next_prompt, "go");
        let a = parse_assessment(
            "Sure. {\"plan_approved\": true, \"approved_plan_text\": \"1. a\"} ok",
            Phase::PlanReview,
        )
        .unwrap();
        assert!(a.plan_approved && a.approved_plan_text == "1. a");
    }

    #[test]
    fn flags_are_strict_booleans() {
        let e = parse_assessment(r#"{"complete": "false", "summary": "x"}"#, Phase::Execution)
            .unwrap_err();
        assert!(e.0.contains("boolean"), "{e}");
        assert!(parse_assessment(r#"{"complete": "true"}"#, Phase::Execution).is_err());
        assert!(parse_assessment(r#"{"plan_approved": "true"}"#, Phase::PlanReview).is_err());
        assert!(parse_assessment(r#"{"complete": false}"#, Phase::Execution).is_err());
        assert!(parse_assessment("not json at all", Phase::Execution).is_err());
        assert!(parse_assessment("[1,2]", Phase::Execution).is_err());
        let a = parse_assessment(r#"{"next_prompt": "go on"}"#, Phase::Execution).unwrap();
        assert!(!a.complete);
    }
}
