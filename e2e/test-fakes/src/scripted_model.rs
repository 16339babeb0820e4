//! A scripted OpenAI-compatible model for the *worker* (OpenCode's provider): `POST
//! /v1/chat/completions`, streaming (SSE `chat.completion.chunk`s, as OpenCode always asks) and
//! non-streaming, with tool calls the way OpenAI sends them, so that OpenCode's real tools
//! (`write`, `bash`, `question`, ...) run.
//!
//! OpenCode sends the whole session with every request: one `user` message per worker prompt
//! (`POST /session/{id}/message`), then after each tool call the assistant's `tool_calls`
//! message and a `tool` message with the result. The fake answers a request by its *turn* (the
//! text of the last `user` message, the prompt) and its *step* (how many assistant messages
//! follow that prompt): a [`Rule`] matching the prompt gives the reply of each step; past its
//! replies, or when no rule matches, the model answers with text ([`DEFAULT_TEXT`]). A reply can
//! also be computed from the request ([`Reply::Dynamic`]), e.g. from the last tool result.
//!
//! Requests OpenCode makes for itself (its summarization/compaction agent, title generation)
//! are answered with a short text and recorded with their [`ModelKind`]. Every request is
//! recorded with its `Authorization` header and the time it arrived.

use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{Value, json};

use crate::serve;

/// The answer when no rule gives one.
pub const DEFAULT_TEXT: &str = "Done with this step.";

/// A computed reply.
pub type ReplyFn = Arc<dyn Fn(&ModelCall) -> Reply + Send + Sync>;

/// One answer of the model.
#[derive(Clone)]
pub enum Reply {
    /// A final text answer (`finish_reason: stop`).
    Text(String),
    /// One tool call (`finish_reason: tool_calls`) with JSON arguments.
    Tool {
        /// Tool name (`write`, `bash`, `question`, ...).
        name: String,
        /// Its arguments.
        args: Value,
    },
    /// An HTTP error with an OpenAI-style body `{"error": {"message", "type"}}` and extra headers
    /// (e.g. `retry-after-ms`, which OpenCode honours between its retries).
    Error {
        /// HTTP status.
        status: u16,
        /// `error.message`.
        message: String,
        /// Extra response headers.
        headers: Vec<(String, String)>,
    },
    /// Computed from the request.
    Dynamic(ReplyFn),
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Text(t) => f.debug_tuple("Text").field(t).finish(),
            Self::Tool { name, args } => f
                .debug_struct("Tool")
                .field("name", name)
                .field("args", args)
                .finish(),
            Self::Error {
                status, message, ..
            } => f
                .debug_struct("Error")
                .field("status", status)
                .field("message", message)
                .finish(),
            Self::Dynamic(_) => f.write_str("Dynamic"),
        }
    }
}

impl Reply {
    /// A text answer.
    pub fn text(t: impl Into<String>) -> Self {
        Self::Text(t.into())
    }

    /// A tool call.
    pub fn tool(name: &str, args: Value) -> Self {
        Self::Tool {
            name: name.to_owned(),
            args,
        }
    }

    /// An HTTP error.
    pub fn error(status: u16, message: impl Into<String>) -> Self {
        Self::Error {
            status,
            message: message.into(),
            headers: Vec::new(),
        }
    }

    /// An HTTP error asking the client to retry after `ms` milliseconds (`retry-after-ms`).
    pub fn error_retry_after(status: u16, message: impl Into<String>, ms: u64) -> Self {
        Self::Error {
            status,
            message: message.into(),
            headers: vec![("retry-after-ms".into(), ms.to_string())],
        }
    }

    /// A reply computed from the request.
    pub fn dynamic(f: impl Fn(&ModelCall) -> Reply + Send + Sync + 'static) -> Self {
        Self::Dynamic(Arc::new(f))
    }
}

/// What a request was for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelKind {
    /// The worker agent's own loop (tools offered).
    Agent,
    /// OpenCode's summarization/compaction agent.
    Summary,
    /// OpenCode's title generation.
    Title,
}

/// One request the model received.
#[derive(Debug, Clone)]
pub struct ModelCall {
    /// What it was for.
    pub kind: ModelKind,
    /// The request body.
    pub body: Value,
    /// Its `Authorization` header.
    pub authorization: Option<String>,
    /// The request path (`/v1/chat/completions` or `/chat/completions`).
    pub path: String,
    /// When it arrived.
    pub at: Instant,
}

/// The text of a chat message's `content` (a string, or an array of `{type: text, text}`).
pub fn content_text(message: &Value) -> String {
    match &message["content"] {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p["text"].as_str())
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

impl ModelCall {
    fn messages(&self) -> &[Value] {
        self.body["messages"].as_array().map_or(&[], Vec::as_slice)
    }

    /// The prompt of the current turn: the text of the last `user` message.
    pub fn prompt(&self) -> String {
        self.messages()
            .iter()
            .rev()
            .find(|m| m["role"] == "user")
            .map(content_text)
            .unwrap_or_default()
    }

    /// The number of `user` messages (worker prompts so far, this one included).
    pub fn turn(&self) -> usize {
        self.messages()
            .iter()
            .filter(|m| m["role"] == "user")
            .count()
    }

    /// How many assistant messages follow the last `user` message (0 for a turn's first
    /// request).
    pub fn step(&self) -> usize {
        self.messages()
            .iter()
            .rev()
            .take_while(|m| m["role"] != "user")
            .filter(|m| m["role"] == "assistant")
            .count()
    }

    /// The content of the last `tool` message after the prompt (the last tool result).
    pub fn last_tool_result(&self) -> Option<String> {
        self.messages()
            .iter()
            .rev()
            .take_while(|m| m["role"] != "user")
            .find(|m| m["role"] == "tool")
            .map(content_text)
    }

    /// Names of the tools offered.
    pub fn tools(&self) -> Vec<String> {
        self.body["tools"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t["function"]["name"].as_str().map(str::to_owned))
            .collect()
    }

    /// The working directory OpenCode tells the model about (`Working directory: ...` in its
    /// system prompt), i.e. the session's directory.
    pub fn working_directory(&self) -> Option<String> {
        let system = self.system();
        let rest = &system[system.find("Working directory: ")? + "Working directory: ".len()..];
        Some(rest.lines().next()?.trim().to_owned())
    }

    fn system(&self) -> String {
        self.messages()
            .iter()
            .find(|m| m["role"] == "system")
            .map(content_text)
            .unwrap_or_default()
    }
}

fn classify(call: &ModelCall) -> ModelKind {
    let system = call.system().to_lowercase();
    if system.contains("summarization agent") {
        ModelKind::Summary
    } else if system.contains("title generator") || call.prompt().starts_with("Generate a title") {
        ModelKind::Title
    } else {
        ModelKind::Agent
    }
}

/// Replies for the turns whose prompt contains `prompt_contains` (every turn when empty), one
/// per step.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Substring of the turn's prompt.
    pub prompt_contains: String,
    /// The reply of step 0, 1, ...
    pub replies: Vec<Reply>,
    /// Whether the last reply repeats for later steps (e.g. a failing model).
    pub sticky: bool,
}

/// The fake's state.
#[derive(Default)]
pub struct ModelState {
    /// Rules, first match wins.
    pub rules: Vec<Rule>,
    /// Every request.
    pub calls: Vec<ModelCall>,
}

/// A scripted OpenAI-compatible model.
#[derive(Clone)]
pub struct ScriptedModel {
    /// Base URL including `/v1` (OpenCode's `baseURL`).
    pub url: String,
    /// The state, for direct inspection.
    pub state: Arc<Mutex<ModelState>>,
}

fn pick(state: &ModelState, call: &ModelCall) -> Reply {
    if call.kind == ModelKind::Summary {
        return Reply::text("Summary: the worker studied the task and made the requested changes.");
    }
    if call.kind == ModelKind::Title {
        return Reply::text("Ticket work");
    }
    let prompt = call.prompt();
    let step = call.step();
    let rule = state
        .rules
        .iter()
        .find(|r| r.prompt_contains.is_empty() || prompt.contains(&r.prompt_contains));
    let reply = rule.and_then(|r| {
        r.replies
            .get(step)
            .or_else(|| r.sticky.then(|| r.replies.last()).flatten())
    });
    let mut reply = reply.cloned().unwrap_or_else(|| Reply::text(DEFAULT_TEXT));
    while let Reply::Dynamic(f) = reply {
        reply = f(call);
    }
    reply
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn chunk(model: &str, delta: Value, finish: Option<&str>) -> Value {
    let mut c = json!({
        "id": "chatcmpl-scripted",
        "object": "chat.completion.chunk",
        "created": now_secs(),
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    });
    if finish.is_some() {
        c["usage"] = json!({"prompt_tokens": 100, "completion_tokens": 10, "total_tokens": 110});
    }
    c
}

/// The SSE body of a streamed answer.
fn stream_body(model: &str, reply: &Reply, call_id: &str) -> String {
    let (delta, finish) = match reply {
        Reply::Tool { name, args } => (
            json!({"role": "assistant", "tool_calls": [{"index": 0, "id": call_id, "type": "function",
                "function": {"name": name, "arguments": args.to_string()}}]}),
            "tool_calls",
        ),
        Reply::Text(t) => (json!({"role": "assistant", "content": t}), "stop"),
        _ => (json!({"role": "assistant", "content": ""}), "stop"),
    };
    let mut out = String::new();
    for c in [
        chunk(model, delta, None),
        chunk(model, json!({}), Some(finish)),
    ] {
        out.push_str(&format!("data: {c}\n\n"));
    }
    out.push_str("data: [DONE]\n\n");
    out
}

/// The JSON body of a non-streamed answer.
fn completion_body(model: &str, reply: &Reply, call_id: &str) -> Value {
    let (message, finish) = match reply {
        Reply::Tool { name, args } => (
            json!({"role": "assistant", "content": null, "tool_calls": [{"id": call_id, "type": "function",
                "function": {"name": name, "arguments": args.to_string()}}]}),
            "tool_calls",
        ),
        Reply::Text(t) => (json!({"role": "assistant", "content": t}), "stop"),
        _ => (json!({"role": "assistant", "content": ""}), "stop"),
    };
    json!({
        "id": "chatcmpl-scripted",
        "object": "chat.completion",
        "created": now_secs(),
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": {"prompt_tokens": 100, "completion_tokens": 10, "total_tokens": 110},
    })
}

async fn completions(
    State(st): State<Arc<Mutex<ModelState>>>,
    uri: Uri,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let mut call = ModelCall {
        kind: ModelKind::Agent,
        path: uri.path().to_owned(),
        authorization: headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        body,
        at: Instant::now(),
    };
    call.kind = classify(&call);
    let (reply, n) = {
        let mut s = st.lock().unwrap();
        let reply = pick(&s, &call);
        s.calls.push(call.clone());
        (reply, s.calls.len())
    };
    let model = call.body["model"].as_str().unwrap_or("scripted").to_owned();
    let call_id = format!("call_{n}");
    if let Reply::Error {
        status,
        message,
        headers,
    } = &reply
    {
        let status = StatusCode::from_u16(*status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut resp = (
            status,
            Json(json!({"error": {"message": message, "type": "scripted_error", "code": null}})),
        )
            .into_response();
        for (k, v) in headers {
            if let (Ok(k), Ok(v)) = (
                header::HeaderName::from_bytes(k.as_bytes()),
                header::HeaderValue::from_str(v),
            ) {
                resp.headers_mut().insert(k, v);
            }
        }
        return resp;
    }
    if call.body["stream"] == true {
        Response::builder()
            .header(header::CONTENT_TYPE, "text/event-stream")
            .header(header::CACHE_CONTROL, "no-cache")
            .body(Body::from(stream_body(&model, &reply, &call_id)))
            .expect("a valid response")
    } else {
        Json(completion_body(&model, &reply, &call_id)).into_response()
    }
}

impl ScriptedModel {
    /// Starts the model with no rules (every turn answered with [`DEFAULT_TEXT`]).
    pub async fn start() -> Self {
        let state = Arc::new(Mutex::new(ModelState::default()));
        let app = Router::new()
            .route("/v1/chat/completions", post(completions))
            .route("/chat/completions", post(completions))
            .with_state(state.clone());
        let base = serve(app, 0).await;
        Self {
            url: format!("{base}/v1"),
            state,
        }
    }

    /// Adds a rule: turns whose prompt contains `prompt_contains` (every turn when empty) get
    /// `replies`, one per step, then [`DEFAULT_TEXT`]. Earlier rules win.
    pub fn on_prompt(&self, prompt_contains: &str, replies: Vec<Reply>) {
        self.state.lock().unwrap().rules.push(Rule {
            prompt_contains: prompt_contains.to_owned(),
            replies,
            sticky: false,
        });
    }

    /// Adds a rule whose last reply repeats for every later step and retry.
    pub fn on_prompt_always(&self, prompt_contains: &str, replies: Vec<Reply>) {
        self.state.lock().unwrap().rules.push(Rule {
            prompt_contains: prompt_contains.to_owned(),
            replies,
            sticky: true,
        });
    }

    /// Every request so far.
    pub fn calls(&self) -> Vec<ModelCall> {
        self.state.lock().unwrap().calls.clone()
    }

    /// Requests of `kind`.
    pub fn calls_of(&self, kind: ModelKind) -> Vec<ModelCall> {
        self.calls()
            .into_iter()
            .filter(|c| c.kind == kind)
            .collect()
    }

    /// When the first request arrived.
    pub fn first_call_at(&self) -> Option<Instant> {
        self.state.lock().unwrap().calls.first().map(|c| c.at)
    }

    /// Every request body, serialized (to search for strings that must never reach the model).
    pub fn transcript(&self) -> String {
        self.calls()
            .iter()
            .map(|c| c.body.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(messages: Value) -> ModelCall {
        let mut c = ModelCall {
            kind: ModelKind::Agent,
            body: json!({"messages": messages, "tools": [{"type": "function", "function": {"name": "write"}}]}),
            authorization: None,
            path: "/v1/chat/completions".into(),
            at: Instant::now(),
        };
        c.kind = classify(&c);
        c
    }

    #[test]
    fn turns_steps_and_rules() {
        let first = call(json!([
            {"role": "system", "content": "You are opencode\n<env>\n  Working directory: /w/ws\n  Platform: linux\n</env>"},
            {"role": "user", "content": "Research the code"},
            {"role": "assistant", "content": "found it"},
            {"role": "user", "content": [{"type": "text", "text": "Add the greet() function"}]},
        ]));
        assert_eq!(
            (first.turn(), first.step(), first.prompt().as_str()),
            (2, 0, "Add the greet() function")
        );
        assert_eq!(first.tools(), ["write"]);
        assert_eq!(first.working_directory().as_deref(), Some("/w/ws"));
        let mut second = first.clone();
        let msgs = second.body["messages"].as_array_mut().unwrap();
        msgs.push(json!({"role": "assistant", "content": "", "tool_calls": [{"id": "c1"}]}));
        msgs.push(
            json!({"role": "tool", "tool_call_id": "c1", "content": "Wrote file successfully."}),
        );
        assert_eq!(second.step(), 1);
        assert_eq!(
            second.last_tool_result().as_deref(),
            Some("Wrote file successfully.")
        );
        assert_eq!(first.last_tool_result(), None);

        let mut state = ModelState::default();
        state.rules.push(Rule {
            prompt_contains: "greet()".into(),
            replies: vec![
                Reply::tool("write", json!({"filePath": "/x", "content": "y"})),
                Reply::dynamic(|c| Reply::text(format!("saw: {}", c.last_tool_result().unwrap()))),
            ],
            sticky: false,
        });
        assert!(matches!(pick(&state, &first), Reply::Tool { ref name, .. } if name == "write"));
        assert!(
            matches!(pick(&state, &second), Reply::Text(ref t) if t == "saw: Wrote file successfully.")
        );
        let research = call(json!([{"role": "user", "content": "Research the code"}]));
        assert!(matches!(pick(&state, &research), Reply::Text(ref t) if t == DEFAULT_TEXT));
        state.rules.insert(
            0,
            Rule {
                prompt_contains: String::new(),
                replies: vec![Reply::error(500, "down")],
                sticky: true,
            },
        );
        assert!(matches!(
            pick(&state, &second),
            Reply::Error { status: 500, .. }
        ));
    }

    #[test]
    fn opencode_housekeeping_requests_are_told_apart() {
        let summary = call(json!([
            {"role": "system", "content": "You are a context summarization agent. ..."},
            {"role": "user", "content": "Here is the conversation so far"},
        ]));
        assert_eq!(summary.kind, ModelKind::Summary);
        let title =
            call(json!([{"role": "user", "content": "Generate a title for this conversation: x"}]));
        assert_eq!(title.kind, ModelKind::Title);
    }

    #[test]
    fn streamed_and_plain_bodies_follow_openai() {
        let tool = Reply::tool("write", json!({"filePath": "/a", "content": "b"}));
        let sse = stream_body("m", &tool, "call_1");
        let events: Vec<&str> = sse
            .split("\n\n")
            .filter_map(|e| e.strip_prefix("data: "))
            .collect();
        assert_eq!(events.len(), 3);
        assert_eq!(events[2], "[DONE]");
        let first: Value = serde_json::from_str(events[0]).unwrap();
        let call = &first["choices"][0]["delta"]["tool_calls"][0];
        assert_eq!(call["function"]["name"], "write");
        assert_eq!(
            serde_json::from_str::<Value>(call["function"]["arguments"].as_str().unwrap()).unwrap(),
            json!({"filePath": "/a", "content": "b"})
        );
        let last: Value = serde_json::from_str(events[1]).unwrap();
        assert_eq!(last["choices"][0]["finish_reason"], "tool_calls");
        let plain = completion_body("m", &Reply::text("hi"), "call_1");
        assert_eq!(plain["choices"][0]["message"]["content"], "hi");
        assert_eq!(plain["choices"][0]["finish_reason"], "stop");
    }
}
