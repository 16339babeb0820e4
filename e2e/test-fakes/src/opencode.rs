//! A fake `opencode serve`: `GET /global/health`, `POST /session`,
//! `POST /session/{id}/message` (does [`fake_work`] in the directory the agent names in the
//! `x-opencode-directory` header), `/abort` and `/summarize`.
//!
//! Messages can be held (they hang, as a long worker turn does): from a message index on
//! ([`FakeOpenCode::set_slow_from`]: until the session is aborted, or 60 s), or per key
//! ([`FakeOpenCode::hold`]: messages whose directory contains the key hang until
//! [`FakeOpenCode::release`], which lets them do their work and answer, or until their session is
//! aborted).
//!
//! It reproduces what the real `opencode serve` (1.18.33) does that hurts a client, scripted per
//! message with [`FakeOpenCode::push`] ([`OcBehaviour`]): a failed model call answered as HTTP
//! 200 with `info.error` and no parts; the `question` tool, which blocks the message until the
//! question is answered or rejected (`GET /question`, `POST /question/{id}/reply|reject`) unless
//! the message sent `"tools": {"question": false}`; a permission request (e.g.
//! `external_directory`), which blocks the message until it is replied to (`GET /permission`,
//! `POST /permission/{id}/reply`, the older `POST /session/{id}/permissions/{id}`), announced on
//! `GET /event` (SSE) as `permission.asked`; an unknown model answered as HTTP 500
//! `UnknownError` with only a reference. [`StartOptions`] add its start-up window in which
//! requests are never answered, and basic auth (401 otherwise).

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path as AxPath, Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};
use tokio::sync::{Notify, broadcast};

use crate::serve;

/// A key whose messages are held.
#[derive(Debug, Default, Clone)]
pub struct Hold {
    /// Released: held messages go on, new ones are not held.
    pub released: bool,
    /// Messages held so far.
    pub held: usize,
}

/// What the fake does with the next message (see [`FakeOpenCode::push`]).
#[derive(Debug, Clone)]
pub enum OcBehaviour {
    /// The model call fails: HTTP 200, `parts: []`, `info.error` = this value (e.g.
    /// [`api_error`]).
    ErrorAnswer(Value),
    /// The model calls the `question` tool: the message blocks until the question is answered
    /// or rejected (or the session aborted), unless the message turned the tool off.
    Question,
    /// A tool call needs the permission `external_directory` for this pattern: the message
    /// blocks until the request is replied to (or the session aborted).
    Permission(String),
    /// HTTP 500 `UnknownError` with a reference only (as for an unknown provider or model).
    UnknownError,
}

/// An `APIError` as OpenCode reports a failed model call.
pub fn api_error(message: &str, status: u16, retryable: bool) -> Value {
    json!({"name": "APIError", "data": {"message": message, "statusCode": status,
        "isRetryable": retryable, "responseBody": format!("{{\"error\":{{\"message\":\"{message}\"}}}}")}})
}

/// How the fake starts.
#[derive(Debug, Clone, Default)]
pub struct StartOptions {
    /// Requests arriving this long after start are never answered (the real server's start-up).
    pub blackhole: Option<Duration>,
    /// Basic-auth password (user `opencode`): every request without it gets 401.
    pub password: Option<String>,
    /// Version reported by `/global/health` (default `1.18.33`).
    pub version: Option<String>,
}

/// The fake's state.
#[derive(Default)]
pub struct OcState {
    /// Behaviours of the next messages, in order.
    pub behaviours: VecDeque<OcBehaviour>,
    /// Pending permission requests.
    pub permissions: Vec<Value>,
    /// Pending questions.
    pub questions: Vec<Value>,
    /// Replies received: (request id, body).
    pub replies: Vec<(String, Value)>,
    /// Every message body whose `question` tool was offered (not turned off).
    pub question_offered: usize,
    /// Created sessions: id, title, directory.
    pub sessions: Vec<Value>,
    /// Messages: session id, directory, body.
    pub messages: Vec<(String, Option<String>, Value)>,
    /// Aborted session ids.
    pub aborted: Vec<String>,
    /// Summarize calls.
    pub summarized: usize,
    /// Messages from this index on hang until aborted (or 60 s).
    pub slow_from: Option<usize>,
    /// Authorization headers of session and message requests.
    pub auth: Vec<String>,
    /// Held keys.
    pub holds: HashMap<String, Hold>,
    /// Whether messages are recorded in `messages` (on by default).
    pub record: bool,
}

/// A fake `opencode serve`.
#[derive(Clone)]
pub struct FakeOpenCode {
    /// Base URL.
    pub url: String,
    /// The state, for direct inspection.
    pub state: Arc<Mutex<OcState>>,
    /// Notified when a message starts hanging (`slow_from` or a hold).
    pub slow_started: Arc<Notify>,
    /// Notified (all waiters) on every abort, release and reply.
    pub abort: Arc<Notify>,
}

#[derive(Clone)]
struct OcApp {
    state: Arc<Mutex<OcState>>,
    slow_started: Arc<Notify>,
    abort: Arc<Notify>,
    events: broadcast::Sender<Value>,
    started: tokio::time::Instant,
    options: StartOptions,
}

fn header(headers: &HeaderMap, name: &str) -> String {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

async fn oc_session(
    State(app): State<OcApp>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Json<Value> {
    let mut s = app.state.lock().unwrap();
    if s.record {
        s.auth.push(header(&headers, "authorization"));
    }
    let id = format!("ses_{}", s.sessions.len() + 1);
    s.sessions
        .push(json!({"id": id, "title": body["title"], "directory": q.get("directory")}));
    Json(json!({"id": id, "title": body["title"]}))
}

/// The work a fake worker does for a prompt, in `dir`: research and checklist prompts get a
/// text answer, the plan prompt writes the plan file it names, any other prompt creates
/// `src/greeting_<n>.txt` (and a scratch file under `.terarchitect/`).
pub fn fake_work(dir: &Path, prompt: &str) -> String {
    if prompt.contains("Before any implementation") {
        return "The project is a small shop; tests live in tests/.".into();
    }
    if let Some(end) = prompt.find("_task_plan.md") {
        let start = prompt[..end]
            .rfind(char::is_whitespace)
            .map(|i| i + 1)
            .unwrap_or(0);
        let path = PathBuf::from(&prompt[start..end + "_task_plan.md".len()]);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(
            &path,
            "1. Write a failing test for greet()\n2. Implement greet()\n",
        )
        .unwrap();
        return format!("Plan written to {}", path.display());
    }
    if prompt.contains("concise numbered checklist") {
        return "1. test\n2. code".into();
    }
    std::fs::create_dir_all(dir.join("src")).unwrap();
    let n = std::fs::read_dir(dir.join("src")).unwrap().count() + 1;
    std::fs::write(
        dir.join(format!("src/greeting_{n}.txt")),
        format!("hello {n}\n"),
    )
    .unwrap();
    std::fs::create_dir_all(dir.join(".terarchitect")).unwrap();
    std::fs::write(dir.join(".terarchitect/notes.log"), "scratch").unwrap();
    format!("Created src/greeting_{n}.txt; all tests pass.")
}

enum Wait {
    /// Hang until the session is aborted (or 60 s).
    Slow,
    /// Hang until the key is released or the session is aborted.
    Held(String),
    /// A scripted behaviour.
    Behaviour(OcBehaviour),
}

/// Waits until `pending(state)` is false (true: the session was aborted meanwhile).
async fn wait_while(app: &OcApp, session: &str, pending: impl Fn(&OcState) -> bool) -> bool {
    loop {
        let notified = app.abort.notified();
        {
            let s = app.state.lock().unwrap();
            if s.aborted.iter().any(|a| a == session) {
                return true;
            }
            if !pending(&s) {
                return false;
            }
        }
        tokio::select! {
            _ = notified => {}
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
}

/// Runs a scripted behaviour; `Some` is the answer, `None` means go on with the work.
async fn behave(app: &OcApp, session: &str, body: &Value, b: OcBehaviour) -> Option<Response> {
    match b {
        OcBehaviour::ErrorAnswer(err) => Some(
            Json(
                json!({"info": {"id": "msg_err", "role": "assistant", "sessionID": session,
                "error": err}, "parts": []}),
            )
            .into_response(),
        ),
        OcBehaviour::UnknownError => Some(
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                Json(json!({"name": "UnknownError", "data": {
                    "message": "Unexpected server error. Check server logs for details.",
                    "ref": "err_fake0001"}})),
            )
                .into_response(),
        ),
        OcBehaviour::Question => {
            if body["tools"]["question"] == json!(false) {
                return None;
            }
            let id = {
                let mut s = app.state.lock().unwrap();
                s.question_offered += 1;
                let id = format!("que_{}", s.replies.len() + s.questions.len() + 1);
                let q = json!({"id": id, "sessionID": session, "questions": [{"question": "Which file?", "header": "File", "options": []}]});
                s.questions.push(q.clone());
                let _ = app
                    .events
                    .send(json!({"type": "question.asked", "properties": q}));
                id
            };
            if wait_while(app, session, |s| s.questions.iter().any(|q| q["id"] == id)).await {
                return Some(aborted_answer());
            }
            None
        }
        OcBehaviour::Permission(pattern) => {
            let id = {
                let mut s = app.state.lock().unwrap();
                let id = format!("per_{}", s.replies.len() + s.permissions.len() + 1);
                let p = json!({"id": id, "sessionID": session, "permission": "external_directory",
                    "patterns": [pattern], "metadata": {"filepath": pattern}, "always": [pattern],
                    "tool": {"messageID": "msg_1", "callID": "call_1"}});
                s.permissions.push(p.clone());
                let _ = app
                    .events
                    .send(json!({"type": "permission.asked", "properties": p}));
                id
            };
            if wait_while(app, session, |s| {
                s.permissions.iter().any(|p| p["id"] == id)
            })
            .await
            {
                return Some(aborted_answer());
            }
            None
        }
    }
}

fn aborted_answer() -> Response {
    (
        StatusCode::OK,
        Json(json!({"info": {}, "parts": [{"type": "text", "text": "aborted"}]})),
    )
        .into_response()
}

async fn oc_message(
    State(app): State<OcApp>,
    AxPath(id): AxPath<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let dir = headers
        .get("x-opencode-directory")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let prompt = body["parts"][0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let wait = {
        let mut s = app.state.lock().unwrap();
        let i = s.messages.len();
        if s.record || s.slow_from.is_some() {
            s.messages.push((id.clone(), dir.clone(), body.clone()));
        }
        if s.record {
            s.auth.push(header(&headers, "authorization"));
        }
        let key = dir.as_deref().and_then(|d| {
            s.holds
                .iter()
                .find(|(k, h)| !h.released && d.contains(k.as_str()))
                .map(|(k, _)| k.clone())
        });
        if let Some(key) = key {
            s.holds.get_mut(&key).expect("found above").held += 1;
            Some(Wait::Held(key))
        } else if s.slow_from.is_some_and(|f| i >= f) {
            Some(Wait::Slow)
        } else {
            s.behaviours.pop_front().map(Wait::Behaviour)
        }
    };
    match wait {
        Some(Wait::Slow) => {
            app.slow_started.notify_one();
            tokio::select! {
                _ = app.abort.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(60)) => {}
            }
            return aborted_answer();
        }
        Some(Wait::Behaviour(b)) => {
            if let Some(answer) = behave(&app, &id, &body, b).await {
                return answer;
            }
        }
        Some(Wait::Held(key)) => {
            app.slow_started.notify_one();
            loop {
                let notified = app.abort.notified();
                {
                    let s = app.state.lock().unwrap();
                    if s.aborted.contains(&id) {
                        return aborted_answer();
                    }
                    if s.holds.get(&key).is_none_or(|h| h.released) {
                        break;
                    }
                }
                // Re-check now and then in case a notification raced the check above.
                tokio::select! {
                    _ = notified => {}
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                }
            }
        }
        None => {}
    }
    let text = match &dir {
        Some(d) => fake_work(Path::new(d), &prompt),
        None => "no directory given".into(),
    };
    Json(json!({"info": {"id": "msg"}, "parts": [
        {"type": "reasoning", "text": "thinking"},
        {"type": "text", "text": text}
    ]}))
    .into_response()
}

async fn oc_abort(State(app): State<OcApp>, AxPath(id): AxPath<String>) -> Json<Value> {
    app.state.lock().unwrap().aborted.push(id);
    app.abort.notify_waiters();
    Json(json!(true))
}

/// Removes a pending permission or question and records the reply; 404 when unknown.
fn reply_to(app: &OcApp, id: &str, body: Value) -> Response {
    let mut s = app.state.lock().unwrap();
    let before = s.permissions.len() + s.questions.len();
    s.permissions.retain(|p| p["id"] != id);
    s.questions.retain(|q| q["id"] != id);
    if s.permissions.len() + s.questions.len() == before {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"name": "NotFoundError", "data": {"message": format!("{id} not found")}})),
        )
            .into_response();
    }
    s.replies.push((id.to_owned(), body));
    drop(s);
    app.abort.notify_waiters();
    Json(json!(true)).into_response()
}

async fn oc_permission_reply(
    State(app): State<OcApp>,
    AxPath(id): AxPath<String>,
    Json(body): Json<Value>,
) -> Response {
    if !matches!(body["reply"].as_str(), Some("once" | "always" | "reject")) {
        return (StatusCode::BAD_REQUEST, Json(json!({"error": "reply"}))).into_response();
    }
    reply_to(&app, &id, body)
}

async fn oc_permission_respond(
    State(app): State<OcApp>,
    AxPath((_session, id)): AxPath<(String, String)>,
    Json(body): Json<Value>,
) -> Response {
    reply_to(&app, &id, body)
}

async fn oc_question_answer(
    State(app): State<OcApp>,
    AxPath((id, action)): AxPath<(String, String)>,
    body: Option<Json<Value>>,
) -> Response {
    if action != "reply" && action != "reject" {
        return StatusCode::NOT_FOUND.into_response();
    }
    let body = body.map(|b| b.0).unwrap_or(Value::Null);
    reply_to(&app, &id, json!({"action": action, "body": body}))
}

async fn oc_event(State(app): State<OcApp>) -> impl IntoResponse {
    let rx = app.events.subscribe();
    let first = json!({"type": "server.connected", "properties": {}});
    let stream = futures::stream::unfold((Some(first), rx), |(first, mut rx)| async move {
        let v = match first {
            Some(v) => v,
            None => loop {
                match rx.recv().await {
                    Ok(v) => break v,
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            },
        };
        let event = Event::default().data(v.to_string());
        Some((Ok::<_, std::convert::Infallible>(event), (None, rx)))
    });
    Sse::new(stream)
}

/// Never answers requests of the start-up window; 401 without the password.
async fn gate(State(app): State<OcApp>, req: Request, next: Next) -> Response {
    if let Some(w) = app.options.blackhole
        && app.started.elapsed() < w
    {
        std::future::pending::<()>().await;
    }
    if let Some(p) = &app.options.password {
        use base64::Engine;
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("opencode:{p}"));
        let want = format!("Basic {basic}");
        if header(req.headers(), "authorization") != want {
            return (
                StatusCode::UNAUTHORIZED,
                [("www-authenticate", "Basic realm=\"opencode\"")],
                "Unauthorized",
            )
                .into_response();
        }
    }
    next.run(req).await
}

async fn oc_summarize(State(app): State<OcApp>) -> Json<Value> {
    app.state.lock().unwrap().summarized += 1;
    Json(json!(true))
}

impl FakeOpenCode {
    /// Starts on `port` (0 for any).
    pub async fn start_on(port: u16) -> Self {
        Self::start_with(port, StartOptions::default()).await
    }

    /// Starts on `port` (0 for any) with `options`.
    pub async fn start_with(port: u16, options: StartOptions) -> Self {
        let state = Arc::new(Mutex::new(OcState {
            record: true,
            ..OcState::default()
        }));
        let app = OcApp {
            state: state.clone(),
            slow_started: Arc::new(Notify::new()),
            abort: Arc::new(Notify::new()),
            events: broadcast::channel(64).0,
            started: tokio::time::Instant::now(),
            options,
        };
        let version = app
            .options
            .version
            .clone()
            .unwrap_or_else(|| "1.18.33".to_owned());
        let router = Router::new()
            .route(
                "/global/health",
                get(move || async move { Json(json!({"healthy": true, "version": version})) }),
            )
            .route("/session", post(oc_session))
            .route("/session/{id}/message", post(oc_message))
            .route("/session/{id}/abort", post(oc_abort))
            .route("/session/{id}/summarize", post(oc_summarize))
            .route(
                "/session/{id}/permissions/{pid}",
                post(oc_permission_respond),
            )
            .route(
                "/permission",
                get(|State(app): State<OcApp>| async move {
                    Json(json!(app.state.lock().unwrap().permissions))
                }),
            )
            .route("/permission/{id}/reply", post(oc_permission_reply))
            .route(
                "/question",
                get(|State(app): State<OcApp>| async move {
                    Json(json!(app.state.lock().unwrap().questions))
                }),
            )
            .route("/question/{id}/{action}", post(oc_question_answer))
            .route("/event", get(oc_event))
            .layer(middleware::from_fn_with_state(app.clone(), gate))
            .with_state(app.clone());
        Self {
            url: serve(router, port).await,
            state,
            slow_started: app.slow_started,
            abort: app.abort,
        }
    }

    /// Starts on any port.
    pub async fn start() -> Self {
        Self::start_on(0).await
    }

    /// Scripts the behaviour of the next message not held otherwise.
    pub fn push(&self, b: OcBehaviour) {
        self.state.lock().unwrap().behaviours.push_back(b);
    }

    /// Replies received to permission requests and questions: (request id, body).
    pub fn replies(&self) -> Vec<(String, Value)> {
        self.state.lock().unwrap().replies.clone()
    }

    /// Messages that were offered the `question` tool (did not turn it off).
    pub fn question_offered(&self) -> usize {
        self.state.lock().unwrap().question_offered
    }

    /// Messages from `index` on hang until their session is aborted.
    pub fn set_slow_from(&self, index: usize) {
        self.state.lock().unwrap().slow_from = Some(index);
    }

    /// Whether requests are recorded (turn off for long runs).
    pub fn set_record(&self, record: bool) {
        self.state.lock().unwrap().record = record;
    }

    /// Holds every later message whose directory contains `key`.
    pub fn hold(&self, key: &str) {
        self.state
            .lock()
            .unwrap()
            .holds
            .insert(key.to_owned(), Hold::default());
    }

    /// Lets the messages held for `key` do their work and answer; later ones are not held.
    pub fn release(&self, key: &str) {
        if let Some(h) = self.state.lock().unwrap().holds.get_mut(key) {
            h.released = true;
        }
        self.abort.notify_waiters();
    }

    /// How many messages were held for `key` so far.
    pub fn held(&self, key: &str) -> usize {
        self.state
            .lock()
            .unwrap()
            .holds
            .get(key)
            .map_or(0, |h| h.held)
    }

    /// Waits until a message is held for `key`; false after `timeout`.
    pub async fn wait_held(&self, key: &str, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.held(key) > 0 {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The text of every recorded prompt.
    pub fn prompts(&self) -> Vec<String> {
        self.state
            .lock()
            .unwrap()
            .messages
            .iter()
            .map(|(_, _, b)| {
                b["parts"][0]["text"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned()
            })
            .collect()
    }

    /// Aborted session ids.
    pub fn aborted(&self) -> Vec<String> {
        self.state.lock().unwrap().aborted.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    /// Sends a raw HTTP/1.1 request; returns the open stream after writing it.
    async fn send(url: &str, method: &str, path: &str, body: &Value) -> TcpStream {
        let addr = url.trim_start_matches("http://");
        let mut s = TcpStream::connect(addr).await.unwrap();
        let body = body.to_string();
        let req = format!(
            "{method} {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes()).await.unwrap();
        s
    }

    /// A whole answer (status line, headers and body) as text.
    async fn call(url: &str, method: &str, path: &str, body: Value) -> String {
        let mut s = send(url, method, path, &body).await;
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    /// Sends the research prompt to `ses_1` in the background (the fake may block it); the
    /// task ends with the whole answer.
    fn spawn_research_message(url: &str) -> tokio::task::JoinHandle<String> {
        let url = url.to_owned();
        tokio::spawn(async move {
            let body = json!({"parts": [{"type": "text", "text": "Before any implementation"}]});
            call(&url, "POST", "/session/ses_1/message", body).await
        })
    }

    #[tokio::test]
    async fn permission_requests_block_until_rejected_and_are_announced() {
        let oc = FakeOpenCode::start().await;
        oc.push(OcBehaviour::Permission("/etc/*".into()));
        let mut events = send(&oc.url, "GET", "/event", &Value::Null).await;
        let message = spawn_research_message(&oc.url);
        // Announced on the event stream, listed, and blocking.
        let mut seen = String::new();
        while !seen.contains("permission.asked") {
            let mut buf = [0u8; 4096];
            let n = events.read(&mut buf).await.unwrap();
            assert!(n > 0, "event stream closed: {seen}");
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        assert!(seen.contains("\"external_directory\""), "{seen}");
        let list = call(&oc.url, "GET", "/permission", Value::Null).await;
        assert!(list.contains("per_1") && list.contains("/etc/*"), "{list}");
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!message.is_finished(), "the message waits for an answer");
        let bad = call(
            &oc.url,
            "POST",
            "/permission/per_9/reply",
            json!({"reply": "reject"}),
        )
        .await;
        assert!(bad.starts_with("HTTP/1.1 404"), "{bad}");
        let ok = call(
            &oc.url,
            "POST",
            "/permission/per_1/reply",
            json!({"reply": "reject"}),
        )
        .await;
        assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
        let answer = tokio::time::timeout(Duration::from_secs(5), message)
            .await
            .expect("the message goes on once rejected")
            .unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert_eq!(oc.replies()[0].1["reply"], "reject");
    }

    #[tokio::test]
    async fn the_question_tool_blocks_unless_turned_off_and_errors_come_as_200() {
        let oc = FakeOpenCode::start().await;
        oc.push(OcBehaviour::Question);
        let body = json!({"parts": [{"type": "text", "text": "Before any implementation"}],
            "tools": {"question": false}});
        let off = call(&oc.url, "POST", "/session/ses_1/message", body).await;
        assert!(off.starts_with("HTTP/1.1 200"), "{off}");
        assert_eq!(oc.question_offered(), 0);

        oc.push(OcBehaviour::Question);
        let on = spawn_research_message(&oc.url);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!on.is_finished(), "the question blocks the message");
        let list = call(&oc.url, "GET", "/question", Value::Null).await;
        assert!(list.contains("que_1"), "{list}");
        let r = call(&oc.url, "POST", "/question/que_1/reject", json!({})).await;
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
        tokio::time::timeout(Duration::from_secs(5), on)
            .await
            .unwrap()
            .unwrap();

        oc.push(OcBehaviour::ErrorAnswer(api_error(
            "bad request",
            400,
            false,
        )));
        let err = call(
            &oc.url,
            "POST",
            "/session/ses_1/message",
            json!({"parts": []}),
        )
        .await;
        assert!(err.starts_with("HTTP/1.1 200"), "{err}");
        assert!(
            err.contains("\"APIError\"") && err.contains("\"parts\":[]"),
            "{err}"
        );
        oc.push(OcBehaviour::UnknownError);
        let err = call(
            &oc.url,
            "POST",
            "/session/ses_1/message",
            json!({"parts": []}),
        )
        .await;
        assert!(
            err.starts_with("HTTP/1.1 500") && err.contains("err_"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn start_up_window_and_basic_auth() {
        let oc = FakeOpenCode::start_with(
            0,
            StartOptions {
                blackhole: Some(Duration::from_millis(500)),
                password: Some("pw".into()),
                version: None,
            },
        )
        .await;
        let early = tokio::time::timeout(
            Duration::from_millis(300),
            call(&oc.url, "GET", "/global/health", Value::Null),
        )
        .await;
        assert!(
            early.is_err(),
            "a request of the start-up window is never answered"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        let anonymous = call(&oc.url, "GET", "/global/health", Value::Null).await;
        assert!(anonymous.starts_with("HTTP/1.1 401"), "{anonymous}");
        let mut s = TcpStream::connect(oc.url.trim_start_matches("http://"))
            .await
            .unwrap();
        // base64("opencode:pw")
        s.write_all(b"GET /global/health HTTP/1.1\r\nhost: x\r\nauthorization: Basic b3BlbmNvZGU6cHc=\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut ok = String::new();
        s.read_to_string(&mut ok).await.unwrap();
        assert!(
            ok.starts_with("HTTP/1.1 200") && ok.contains("1.18.33"),
            "{ok}"
        );
    }
}
