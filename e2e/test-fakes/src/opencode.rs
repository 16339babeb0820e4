//! A fake `opencode serve`: `GET /global/health`, `POST /session`,
//! `POST /session/{id}/message` (does [`fake_work`] in the directory the agent names in the
//! `x-opencode-directory` header), `/abort` and `/summarize`.
//!
//! Messages can be held (they hang, as a long worker turn does): from a message index on
//! ([`FakeOpenCode::set_slow_from`]: until the session is aborted, or 60 s), or per key
//! ([`FakeOpenCode::hold`]: messages whose directory contains the key hang until
//! [`FakeOpenCode::release`], which lets them do their work and answer, or until their session is
//! aborted).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path as AxPath, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};
use tokio::sync::Notify;

use crate::serve;

/// A key whose messages are held.
#[derive(Debug, Default, Clone)]
pub struct Hold {
    /// Released: held messages go on, new ones are not held.
    pub released: bool,
    /// Messages held so far.
    pub held: usize,
}

/// The fake's state.
#[derive(Default)]
pub struct OcState {
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
    /// Notified (all waiters) on every abort and release.
    pub abort: Arc<Notify>,
}

#[derive(Clone)]
struct OcApp {
    state: Arc<Mutex<OcState>>,
    slow_started: Arc<Notify>,
    abort: Arc<Notify>,
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
            None
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

async fn oc_summarize(State(app): State<OcApp>) -> Json<Value> {
    app.state.lock().unwrap().summarized += 1;
    Json(json!(true))
}

impl FakeOpenCode {
    /// Starts on `port` (0 for any).
    pub async fn start_on(port: u16) -> Self {
        let state = Arc::new(Mutex::new(OcState {
            record: true,
            ..OcState::default()
        }));
        let app = OcApp {
            state: state.clone(),
            slow_started: Arc::new(Notify::new()),
            abort: Arc::new(Notify::new()),
        };
        let router = Router::new()
            .route(
                "/global/health",
                get(|| async { Json(json!({"healthy": true, "version": "fake"})) }),
            )
            .route("/session", post(oc_session))
            .route("/session/{id}/message", post(oc_message))
            .route("/session/{id}/abort", post(oc_abort))
            .route("/session/{id}/summarize", post(oc_summarize))
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
