//! A fake Director LLM: an OpenAI-compatible `POST /v1/chat/completions`.
//!
//! Commit messages, conversation summaries, pull-request descriptions and review replies get
//! fixed answers. An *assessment* (the Director judging a worker turn or a plan) is answered by
//! the first of:
//! 1. the script of the request's key (see [`FakeLlm::set_script_for`]), then that key's sticky
//!    answer ([`FakeLlm::set_fallback_for`]). The key is the id of the request's *current ticket*
//!    (`"current_ticket": {"id": ...}` in the Director's context) when it is registered, else
//!    the first registered key found anywhere in the request. Keyed by ticket id, concurrent
//!    agents get their own answers (other tickets' ids also appear in a context, in the
//!    backlog and in-progress lists, so the current ticket comes first);
//! 2. the global script, then the global fallback ([`FakeLlm::set_fallback`]);
//! 3. with [`FakeLlm::set_auto`], an answer derived from the request: plan reviews are approved,
//!    the first assessment of a phase asks for one more turn, later ones say the work is done;
//! 4. otherwise [`answers::DONE`].
//!
//! The answer `HTTP500` makes the server fail the request with status 500.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{Value, json};

use crate::serve;

/// Director answers tests use.
pub mod answers {
    /// Plan review: approved.
    pub const APPROVE: &str = r#"{"plan_approved": true, "approved_plan_text": "1. test 2. code"}"#;
    /// Execution: one more worker turn.
    pub const NEXT: &str =
        r#"{"complete": false, "next_prompt": "Add the greet() function and its unit test."}"#;
    /// Execution: the work is done.
    pub const DONE: &str =
        r#"{"complete": true, "summary": "Added greet() with unit tests; all tests pass."}"#;
    /// Breaks the answer contract in every phase.
    pub const MALFORMED: &str = "I would rather not answer in JSON.";
    /// Makes the fake answer with HTTP status 500.
    pub const HTTP500: &str = "HTTP500";
}

/// What kind of request the fake LLM saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LlmKind {
    /// The Director judging a worker turn or a plan.
    Assessment,
    /// A commit message for a turn's diff.
    CommitMessage,
    /// A summary of older conversation.
    Summary,
    /// A pull-request description.
    PrDescription,
    /// The reply to a reviewer.
    ReviewReply,
}

/// The fake's state.
#[derive(Default)]
pub struct LlmState {
    /// Global script of assessment answers.
    pub script: VecDeque<String>,
    /// Global answer once the script is used up.
    pub fallback: Option<String>,
    /// Answer assessments from the request content (see the module docs).
    pub auto: bool,
    /// Per-key scripts.
    pub keyed_scripts: HashMap<String, VecDeque<String>>,
    /// Per-key sticky answers.
    pub keyed_fallbacks: HashMap<String, String>,
    /// Every request, with its kind.
    pub requests: Vec<(LlmKind, Value)>,
    /// Whether requests are recorded in `requests` (on by default).
    pub record: bool,
}

/// A scripted OpenAI-compatible chat-completions server.
#[derive(Clone)]
pub struct FakeLlm {
    /// Base URL (`http://127.0.0.1:<port>`); the endpoint is `<url>/v1/chat/completions`.
    pub url: String,
    /// The state, for direct inspection.
    pub state: Arc<Mutex<LlmState>>,
}

fn first_content(body: &Value) -> &str {
    body["messages"][0]["content"].as_str().unwrap_or_default()
}

fn classify(body: &Value) -> LlmKind {
    let first = first_content(body);
    if first.contains("You write git commit messages") {
        LlmKind::CommitMessage
    } else if first.contains("You summarize a conversation") {
        LlmKind::Summary
    } else if first.contains("You write pull request descriptions") {
        LlmKind::PrDescription
    } else if first.contains("Write the reply to the reviewer") {
        LlmKind::ReviewReply
    } else {
        LlmKind::Assessment
    }
}

/// The answer of the automatic mode: approve plans; in execution, one more turn first, then done.
fn auto_answer(body: &Value) -> &'static str {
    if first_content(body).contains("Plan review mode.") {
        return answers::APPROVE;
    }
    let messages = body["messages"].as_array().map_or(0, Vec::len);
    // [system, user]: the first assessment of the phase.
    if messages <= 2 {
        answers::NEXT
    } else {
        answers::DONE
    }
}

/// The id of the current ticket in the Director's context (`"current_ticket": {"id": "..."`).
pub(crate) fn current_ticket_id(body: &Value) -> Option<String> {
    body["messages"].as_array()?.iter().find_map(|m| {
        let content = m["content"].as_str()?;
        let rest = &content[content.find("\"current_ticket\": {")?..];
        let rest = &rest[rest.find("\"id\": \"")? + 7..];
        Some(rest[..rest.find('"')?].to_owned())
    })
}

fn assessment_answer(s: &mut LlmState, body: &Value) -> String {
    if !s.keyed_scripts.is_empty() || !s.keyed_fallbacks.is_empty() {
        let registered =
            |k: &str| s.keyed_scripts.contains_key(k) || s.keyed_fallbacks.contains_key(k);
        let key = current_ticket_id(body)
            .filter(|id| registered(id))
            .or_else(|| {
                let text = body.to_string();
                s.keyed_scripts
                    .keys()
                    .chain(s.keyed_fallbacks.keys())
                    .find(|k| text.contains(k.as_str()))
                    .cloned()
            });
        if let Some(key) = key {
            if let Some(next) = s.keyed_scripts.get_mut(&key).and_then(VecDeque::pop_front) {
                return next;
            }
            if let Some(sticky) = s.keyed_fallbacks.get(&key) {
                return sticky.clone();
            }
        }
    }
    if let Some(next) = s.script.pop_front() {
        return next;
    }
    if let Some(f) = &s.fallback {
        return f.clone();
    }
    if s.auto {
        return auto_answer(body).to_owned();
    }
    answers::DONE.to_owned()
}

async fn llm_handler(State(st): State<Arc<Mutex<LlmState>>>, Json(body): Json<Value>) -> Response {
    let kind = classify(&body);
    let content = {
        let mut s = st.lock().unwrap();
        let content = match kind {
            LlmKind::CommitMessage => "\"Add greeting feature\"\nextra".to_owned(),
            LlmKind::Summary => "Summary of the earlier turns.".to_owned(),
            LlmKind::PrDescription => {
                "This pull request adds a greeting module with tests.".to_owned()
            }
            LlmKind::ReviewReply => "Renamed greet to welcome and updated the tests.".to_owned(),
            LlmKind::Assessment => assessment_answer(&mut s, &body),
        };
        if s.record {
            s.requests.push((kind, body));
        }
        content
    };
    if content == answers::HTTP500 {
        return (StatusCode::INTERNAL_SERVER_ERROR, "overloaded").into_response();
    }
    Json(json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": content}}]}))
        .into_response()
}

impl FakeLlm {
    /// Starts a fake whose assessments follow `script` (then [`answers::DONE`]).
    pub async fn start(script: &[&str]) -> Self {
        let state = Arc::new(Mutex::new(LlmState {
            script: script.iter().map(|s| s.to_string()).collect(),
            record: true,
            ..Default::default()
        }));
        let app = Router::new()
            .route("/v1/chat/completions", post(llm_handler))
            .with_state(state.clone());
        Self {
            url: serve(app, 0).await,
            state,
        }
    }

    /// Starts a fake in automatic mode (for many concurrent agents).
    pub async fn start_auto() -> Self {
        let llm = Self::start(&[]).await;
        llm.set_auto(true);
        llm
    }

    /// The answer once the global script is used up.
    pub fn set_fallback(&self, content: &str) {
        self.state.lock().unwrap().fallback = Some(content.to_owned());
    }

    /// Turns the automatic mode on or off.
    pub fn set_auto(&self, auto: bool) {
        self.state.lock().unwrap().auto = auto;
    }

    /// Whether requests are recorded (turn off for long runs).
    pub fn set_record(&self, record: bool) {
        self.state.lock().unwrap().record = record;
    }

    /// Assessments whose request contains `key` are answered from `script` first.
    pub fn set_script_for(&self, key: &str, script: &[&str]) {
        self.state.lock().unwrap().keyed_scripts.insert(
            key.to_owned(),
            script.iter().map(|s| s.to_string()).collect(),
        );
    }

    /// Assessments whose request contains `key` get `content` once its script is used up
    /// (`None` removes the sticky answer).
    pub fn set_fallback_for(&self, key: &str, content: Option<&str>) {
        let mut s = self.state.lock().unwrap();
        match content {
            Some(c) => {
                s.keyed_fallbacks.insert(key.to_owned(), c.to_owned());
            }
            None => {
                s.keyed_fallbacks.remove(key);
            }
        }
    }

    /// Every recorded request.
    pub fn requests(&self) -> Vec<(LlmKind, Value)> {
        self.state.lock().unwrap().requests.clone()
    }

    /// Recorded requests of `kind`.
    pub fn count(&self, kind: LlmKind) -> usize {
        self.state
            .lock()
            .unwrap()
            .requests
            .iter()
            .filter(|(k, _)| *k == kind)
            .count()
    }

    /// Recorded assessment requests containing `key`.
    pub fn assessments_for(&self, key: &str) -> usize {
        self.state
            .lock()
            .unwrap()
            .requests
            .iter()
            .filter(|(k, b)| *k == LlmKind::Assessment && b.to_string().contains(key))
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(system: &str, n: usize, user: &str) -> Value {
        let mut messages = vec![json!({"role": "system", "content": system})];
        for _ in 1..n {
            messages.push(json!({"role": "user", "content": user}));
        }
        json!({"messages": messages})
    }

    #[test]
    fn keyed_then_global_then_auto() {
        let mut s = LlmState {
            auto: true,
            script: VecDeque::from(["global".to_owned()]),
            ..Default::default()
        };
        s.keyed_scripts
            .insert("ticket-a".into(), VecDeque::from(["a1".to_owned()]));
        s.keyed_fallbacks
            .insert("ticket-a".into(), "a-sticky".into());
        let a = request("Director", 2, "Context: ticket-a");
        assert_eq!(assessment_answer(&mut s, &a), "a1");
        assert_eq!(assessment_answer(&mut s, &a), "a-sticky");
        let b = request("Director", 2, "Context: ticket-b");
        assert_eq!(assessment_answer(&mut s, &b), "global");
        assert_eq!(assessment_answer(&mut s, &b), answers::NEXT);
        let later = request("Director", 4, "Context: ticket-b");
        assert_eq!(assessment_answer(&mut s, &later), answers::DONE);
        let plan = request("Director\n\nPlan review mode. Judge", 2, "x");
        assert_eq!(assessment_answer(&mut s, &plan), answers::APPROVE);
        s.auto = false;
        assert_eq!(assessment_answer(&mut s, &b), answers::DONE);
    }

    #[test]
    fn the_current_ticket_wins_over_other_tickets_in_the_context() {
        let ctx = "Context:\n{\n  \"project_name\": \"Shop\",\n  \"current_ticket\": {\n    \"id\": \"t-2\",\n    \"title\": \"x\"\n  },\n  \"backlog_tickets\": [{\"id\": \"t-1\"}]\n}";
        let body = request("Director", 2, ctx);
        assert_eq!(current_ticket_id(&body).as_deref(), Some("t-2"));
        let mut s = LlmState::default();
        s.keyed_fallbacks.insert("t-1".into(), "one".into());
        assert_eq!(
            assessment_answer(&mut s, &body),
            "one",
            "substring fallback"
        );
        s.keyed_fallbacks.insert("t-2".into(), "two".into());
        assert_eq!(assessment_answer(&mut s, &body), "two");
    }
}
