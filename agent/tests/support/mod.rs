//! Test support: a real api-server (SQLite), a scripted fake Director LLM, a fake OpenCode
//! server, a fake GitHub API and a local bare repository as the remote.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command as StdCommand;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path as AxPath, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};
use terarchitect_agent::RunResult;
use terarchitect_agent::config::Env;
use terarchitect_api_server::testing::{Backend, TEST_SECRET_KEY, TestOptions, TestServer};
use terarchitect_worker_api::JobKind;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// The GitHub token given to the agent (must never leak).
pub const GH_TOKEN: &str = "ghp_TopSecretToken_1234567890";
/// Secrets stored in the api-server settings (reach the agent only via agent_settings).
pub const AGENT_KEY: &str = "sk-director-key-ABCDEF123456";
pub const WORKER_KEY: &str = "sk-worker-key-987654321";
pub const OPENAI_KEY: &str = "sk-openai-key-ZYXWVU555";
/// Every secret the tests check for.
pub const SECRETS: [&str; 4] = [GH_TOKEN, AGENT_KEY, WORKER_KEY, OPENAI_KEY];

// ---- a tiny axum server ------------------------------------------------------------------

/// Serves `app` on 127.0.0.1 (a fixed port when given); returns the base URL.
pub async fn serve(app: Router, port: u16) -> String {
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port)))
        .await
        .expect("bind");
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}

/// A port nothing listens on.
pub fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

// ---- fake Director LLM -------------------------------------------------------------------

/// What kind of request the fake LLM saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LlmKind {
    Assessment,
    CommitMessage,
    Summary,
    PrDescription,
    ReviewReply,
}

#[derive(Default)]
pub struct LlmState {
    pub script: VecDeque<String>,
    pub fallback: Option<String>,
    pub requests: Vec<(LlmKind, Value)>,
}

/// A scripted OpenAI-compatible chat-completions server.
#[derive(Clone)]
pub struct FakeLlm {
    pub url: String,
    pub state: Arc<Mutex<LlmState>>,
}

fn classify(body: &Value) -> LlmKind {
    let first = body["messages"][0]["content"].as_str().unwrap_or_default();
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

async fn llm_handler(State(st): State<Arc<Mutex<LlmState>>>, Json(body): Json<Value>) -> Response {
    let kind = classify(&body);
    let content = {
        let mut s = st.lock().unwrap();
        s.requests.push((kind, body));
        match kind {
            LlmKind::CommitMessage => "\"Add greeting feature\"\nextra".to_owned(),
            LlmKind::Summary => "Summary of the earlier turns.".to_owned(),
            LlmKind::PrDescription => {
                "This pull request adds a greeting module with tests.".to_owned()
            }
            LlmKind::ReviewReply => "Renamed greet to welcome and updated the tests.".to_owned(),
            LlmKind::Assessment => s
                .script
                .pop_front()
                .or_else(|| s.fallback.clone())
                .unwrap_or_else(|| r#"{"complete": true, "summary": "Done."}"#.to_owned()),
        }
    };
    if content == "HTTP500" {
        return (StatusCode::INTERNAL_SERVER_ERROR, "overloaded").into_response();
    }
    Json(json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": content}}]}))
        .into_response()
}

impl FakeLlm {
    pub async fn start(script: &[&str]) -> Self {
        let state = Arc::new(Mutex::new(LlmState {
            script: script.iter().map(|s| s.to_string()).collect(),
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

    pub fn set_fallback(&self, content: &str) {
        self.state.lock().unwrap().fallback = Some(content.to_owned());
    }

    pub fn requests(&self) -> Vec<(LlmKind, Value)> {
        self.state.lock().unwrap().requests.clone()
    }

    pub fn count(&self, kind: LlmKind) -> usize {
        self.requests().iter().filter(|(k, _)| *k == kind).count()
    }
}

// ---- fake OpenCode -----------------------------------------------------------------------

#[derive(Default)]
pub struct OcState {
    pub sessions: Vec<Value>,
    pub messages: Vec<(String, Option<String>, Value)>,
    pub aborted: Vec<String>,
    pub summarized: usize,
    /// Messages from this index on hang until aborted (or 60 s).
    pub slow_from: Option<usize>,
    /// Authorization headers of session and message requests.
    pub auth: Vec<String>,
}

/// A fake `opencode serve`: makes file changes in the request's directory.
#[derive(Clone)]
pub struct FakeOpenCode {
    pub url: String,
    pub state: Arc<Mutex<OcState>>,
    pub slow_started: Arc<Notify>,
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
    Query(q): Query<std::collections::HashMap<String, String>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Json<Value> {
    let mut s = app.state.lock().unwrap();
    s.auth.push(header(&headers, "authorization"));
    let id = format!("ses_{}", s.sessions.len() + 1);
    s.sessions
        .push(json!({"id": id, "title": body["title"], "directory": q.get("directory")}));
    Json(json!({"id": id, "title": body["title"]}))
}

/// The work a fake worker does for a prompt, in `dir`.
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
    let slow = {
        let mut s = app.state.lock().unwrap();
        s.messages.push((id.clone(), dir.clone(), body.clone()));
        s.auth.push(header(&headers, "authorization"));
        let i = s.messages.len() - 1;
        s.slow_from.is_some_and(|f| i >= f)
    };
    if slow {
        app.slow_started.notify_one();
        tokio::select! {
            _ = app.abort.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(60)) => {}
        }
        return (
            StatusCode::OK,
            Json(json!({"info": {}, "parts": [{"type": "text", "text": "aborted"}]})),
        )
            .into_response();
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
        let state = Arc::new(Mutex::new(OcState::default()));
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

    pub async fn start() -> Self {
        Self::start_on(0).await
    }

    pub fn set_slow_from(&self, index: usize) {
        self.state.lock().unwrap().slow_from = Some(index);
    }

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

    pub fn aborted(&self) -> Vec<String> {
        self.state.lock().unwrap().aborted.clone()
    }
}

// ---- fake GitHub -------------------------------------------------------------------------

#[derive(Default)]
pub struct GhState {
    pub base: String,
    pub pulls: Vec<Value>,
    pub comments: Vec<(u64, String)>,
    pub auth: Vec<String>,
    pub created: usize,
    /// Refuse to open pull requests.
    pub refuse_create: bool,
}

#[derive(Clone)]
pub struct FakeGitHub {
    pub url: String,
    pub state: Arc<Mutex<GhState>>,
}

fn record_auth(st: &Mutex<GhState>, headers: &HeaderMap) {
    let a = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    st.lock().unwrap().auth.push(a);
}

async fn gh_list(
    State(st): State<Arc<Mutex<GhState>>>,
    AxPath((o, r)): AxPath<(String, String)>,
    Query(q): Query<std::collections::HashMap<String, String>>,
    headers: HeaderMap,
) -> Json<Value> {
    record_auth(&st, &headers);
    let s = st.lock().unwrap();
    let head = q.get("head").cloned().unwrap_or_default();
    let list: Vec<Value> = s
        .pulls
        .iter()
        .filter(|p| p["state"] == "open")
        .filter(|p| {
            head.is_empty() || format!("{o}:{}", p["head"]["ref"].as_str().unwrap()) == head
        })
        .filter(|_| r == "shop")
        .cloned()
        .collect();
    Json(json!(list))
}

pub fn pull_json(base: &str, number: u64, head: &str, base_ref: &str) -> Value {
    json!({
        "number": number,
        "html_url": format!("{base}/acme/shop/pull/{number}"),
        "state": "open",
        "title": "t",
        "body": "",
        "head": {"ref": head, "repo": {"full_name": "acme/shop"}},
        "base": {"ref": base_ref, "repo": {"full_name": "acme/shop"}},
    })
}

async fn gh_create(
    State(st): State<Arc<Mutex<GhState>>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    record_auth(&st, &headers);
    let mut s = st.lock().unwrap();
    if s.refuse_create {
        return (
            StatusCode::FORBIDDEN,
            Json(json!({"message": "Resource not accessible by integration"})),
        )
            .into_response();
    }
    let number = 100 + s.pulls.len() as u64;
    let mut pr = pull_json(
        &s.base,
        number,
        body["head"].as_str().unwrap(),
        body["base"].as_str().unwrap(),
    );
    pr["title"] = body["title"].clone();
    pr["body"] = body["body"].clone();
    s.pulls.push(pr.clone());
    s.created += 1;
    (StatusCode::CREATED, Json(pr)).into_response()
}

async fn gh_get(
    State(st): State<Arc<Mutex<GhState>>>,
    AxPath((_o, _r, n)): AxPath<(String, String, u64)>,
    headers: HeaderMap,
) -> Response {
    record_auth(&st, &headers);
    let s = st.lock().unwrap();
    match s.pulls.iter().find(|p| p["number"] == n) {
        Some(p) => Json(p.clone()).into_response(),
        None => (StatusCode::NOT_FOUND, Json(json!({"message": "Not Found"}))).into_response(),
    }
}

async fn gh_comment(
    State(st): State<Arc<Mutex<GhState>>>,
    AxPath((_o, _r, n)): AxPath<(String, String, u64)>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    record_auth(&st, &headers);
    let mut s = st.lock().unwrap();
    s.comments
        .push((n, body["body"].as_str().unwrap_or_default().to_owned()));
    let url = format!("{}/acme/shop/pull/{n}#issuecomment-1", s.base);
    (StatusCode::CREATED, Json(json!({"id": 1, "html_url": url}))).into_response()
}

impl FakeGitHub {
    pub async fn start() -> Self {
        let state = Arc::new(Mutex::new(GhState::default()));
        let app = Router::new()
            .route("/repos/{o}/{r}/pulls", get(gh_list).post(gh_create))
            .route("/repos/{o}/{r}/pulls/{n}", get(gh_get))
            .route("/repos/{o}/{r}/issues/{n}/comments", post(gh_comment))
            .with_state(state.clone());
        let url = serve(app, 0).await;
        state.lock().unwrap().base = "https://github.example".into();
        Self { url, state }
    }

    pub fn add_pull(&self, number: u64, head: &str) {
        let mut s = self.state.lock().unwrap();
        let pr = pull_json(&s.base.clone(), number, head, "main");
        s.pulls.push(pr);
    }

    pub fn pulls(&self) -> Vec<Value> {
        self.state.lock().unwrap().pulls.clone()
    }

    pub fn comments(&self) -> Vec<(u64, String)> {
        self.state.lock().unwrap().comments.clone()
    }
}

// ---- git ---------------------------------------------------------------------------------

/// Runs git in `dir` and returns stdout (panics on failure).
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = StdCommand::new("git")
        .args(["-c", "user.name=Seed", "-c", "user.email=seed@example.com"])
        .args(args)
        .current_dir(dir)
        .env("GIT_TERMINAL_PROMPT", "0")
        .output()
        .expect("git");
    assert!(
        out.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

// ---- the harness -------------------------------------------------------------------------

/// One scenario's world.
pub struct Harness {
    pub srv: TestServer,
    pub http: reqwest::Client,
    pub pid: Uuid,
    pub tid: Uuid,
    pub llm: FakeLlm,
    pub oc: FakeOpenCode,
    pub gh: FakeGitHub,
    pub dir: tempfile::TempDir,
    pub remote: PathBuf,
    pub env: Vec<(String, String)>,
}

impl Harness {
    /// A project with a ticket titled `title`, a remote with one commit on `main`, and the fakes.
    pub async fn new(title: &str, script: &[&str]) -> Self {
        terarchitect_worker_api::ensure_crypto_provider();
        let srv = TestServer::start(
            Backend::Sqlite,
            TestOptions::default()
                .env("GITHUB_TOKEN", GH_TOKEN)
                .env("TERARCHITECT_SECRET_KEY", TEST_SECRET_KEY),
        )
        .await;
        let http = reqwest::Client::new();
        let base = srv.url();
        let call = |m: reqwest::Method, path: &str, body: Value| {
            let http = http.clone();
            let url = format!("{base}{path}");
            async move {
                let r = http.request(m, url).json(&body).send().await.unwrap();
                let s = r.status();
                let v: Value = r.json().await.unwrap_or(Value::Null);
                assert!(s.is_success(), "{s}: {v}");
                v
            }
        };
        call(
            reqwest::Method::PUT,
            "/api/settings",
            json!({"AGENT_API_KEY": AGENT_KEY, "AGENT_MODEL": "director-model",
                   "WORKER_API_KEY": WORKER_KEY, "WORKER_MODEL": "terarchitect-proxy/coder",
                   "openai_api_key": OPENAI_KEY}),
        )
        .await;
        let p = call(
            reqwest::Method::POST,
            "/api/projects",
            json!({"name": "Shop", "description": "A small shop", "github_url": "https://github.com/acme/shop", "is_existing_repo": true}),
        )
        .await;
        let pid: Uuid = p["id"].as_str().unwrap().parse().unwrap();
        call(
            reqwest::Method::PUT,
            &format!("/api/projects/{pid}/graph"),
            json!({"nodes": [{"id": "n1", "data": {"label": "API"}}], "edges": []}),
        )
        .await;
        let t = call(
            reqwest::Method::POST,
            &format!("/api/projects/{pid}/tickets"),
            json!({"title": title, "description": "Add a greet(name) function with tests.", "column_id": "backlog", "associated_node_ids": ["n1"]}),
        )
        .await;
        let tid: Uuid = t["id"].as_str().unwrap().parse().unwrap();

        let dir = tempfile::tempdir().unwrap();
        let remote = dir.path().join("remotes/acme/shop.git");
        std::fs::create_dir_all(&remote).unwrap();
        git(&remote, &["init", "-q", "--bare", "-b", "main"]);
        let seed = dir.path().join("seed");
        git(
            dir.path(),
            &[
                "clone",
                "-q",
                remote.to_str().unwrap(),
                seed.to_str().unwrap(),
            ],
        );
        git(&seed, &["checkout", "-q", "-b", "main"]);
        std::fs::write(seed.join("README.md"), "# Shop\n").unwrap();
        git(&seed, &["add", "-A"]);
        git(&seed, &["commit", "-q", "-m", "Initial commit"]);
        git(&seed, &["push", "-q", "origin", "main"]);

        let llm = FakeLlm::start(script).await;
        let oc = FakeOpenCode::start().await;
        let gh = FakeGitHub::start().await;
        let ws = dir.path().join("ws");
        let env: Vec<(String, String)> = [
            ("TICKET_ID", tid.to_string()),
            ("PROJECT_ID", pid.to_string()),
            ("TERARCHITECT_API_URL", srv.url()),
            ("REPO_URL", format!("file://{}", remote.display())),
            ("GITHUB_TOKEN", GH_TOKEN.to_owned()),
            ("AGENT_LLM_URL", llm.url.clone()),
            ("WORKER_MODE", "opencode".to_owned()),
            ("OPENCODE_SERVER_URL", oc.url.clone()),
            ("GITHUB_API_URL", gh.url.clone()),
            ("AGENT_WORKSPACE", ws.to_string_lossy().into_owned()),
            (
                "AGENT_TRACE_DIR",
                dir.path().join("trace").to_string_lossy().into_owned(),
            ),
            (
                "TERARCHITECT_TERMINATION_LOG",
                dir.path()
                    .join("termination-log")
                    .to_string_lossy()
                    .into_owned(),
            ),
            ("AGENT_CANCEL_POLL_SEC", "0.2".to_owned()),
            ("AGENT_RETRY_BACKOFF_MS", "20".to_owned()),
            ("GIT_USER_NAME", "Agent Tester".to_owned()),
            ("GIT_USER_EMAIL", "agent@example.com".to_owned()),
            ("PATH", std::env::var("PATH").unwrap_or_default()),
            ("HOME", dir.path().to_string_lossy().into_owned()),
            ("RUST_LOG", "warn".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        Self {
            srv,
            http,
            pid,
            tid,
            llm,
            oc,
            gh,
            dir,
            remote,
            env,
        }
    }

    /// Sets (or replaces) an agent environment variable.
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_owned(), value.to_owned()));
    }

    /// Removes an agent environment variable.
    pub fn unset_env(&mut self, key: &str) {
        self.env.retain(|(k, _)| k != key);
    }

    pub fn branch(&self) -> String {
        format!("ticket-{}", self.tid)
    }

    pub fn workspace(&self) -> PathBuf {
        self.dir.path().join("ws")
    }

    /// Runs the agent in-process.
    pub async fn run_in_process(&self, kind: JobKind, stop: CancellationToken) -> RunResult {
        let env = Env::from_pairs(self.env.clone());
        terarchitect_agent::runner::run(kind, &env, stop, &mut terarchitect_agent::runner::NoSetup)
            .await
    }

    /// Runs the binary as a child process; returns (exit code, stderr).
    pub async fn run_binary(&self, args: &[&str]) -> (i32, String) {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_terarchitect-agent"))
            .args(args)
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .output()
            .await
            .expect("running the agent");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    pub fn termination(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("termination-log")).unwrap_or_default()
    }

    pub async fn get(&self, path: &str) -> Value {
        self.http
            .get(format!("{}{path}", self.srv.url()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    pub async fn logs(&self) -> Vec<Value> {
        self.get(&format!(
            "/api/projects/{}/tickets/{}/logs",
            self.pid, self.tid
        ))
        .await
        .as_array()
        .cloned()
        .unwrap_or_default()
    }

    pub async fn steps(&self) -> Vec<String> {
        self.logs()
            .await
            .iter()
            .map(|l| l["step"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    pub async fn ticket(&self) -> Value {
        self.get(&format!("/api/projects/{}/tickets/{}", self.pid, self.tid))
            .await
    }

    pub async fn cancel(&self) {
        let r = self
            .http
            .post(format!(
                "{}/api/projects/{}/tickets/{}/cancel",
                self.srv.url(),
                self.pid,
                self.tid
            ))
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
    }

    /// Output lines of a git command in the remote (empty on failure).
    fn remote_lines(&self, args: &[&str]) -> Vec<String> {
        let out = StdCommand::new("git")
            .args(args)
            .current_dir(&self.remote)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// Files of a remote branch (empty when the branch does not exist).
    pub fn remote_files(&self, branch: &str) -> Vec<String> {
        self.remote_lines(&["ls-tree", "-r", "--name-only", branch])
    }

    /// Commit subjects of a remote branch, newest first.
    pub fn remote_log(&self, branch: &str) -> Vec<String> {
        self.remote_lines(&["log", "--format=%s", branch])
    }

    /// Pushes a branch with one extra commit to the remote (an earlier run's work).
    pub fn push_branch(&self, branch: &str, file: &str) {
        let seed = self.dir.path().join("seed");
        git(&seed, &["checkout", "-q", "-B", branch, "origin/main"]);
        std::fs::write(seed.join(file), "earlier work\n").unwrap();
        git(&seed, &["add", "-A"]);
        git(&seed, &["commit", "-q", "-m", "Earlier work"]);
        git(
            &seed,
            &[
                "push",
                "-q",
                "origin",
                &format!("{branch}:refs/heads/{branch}"),
            ],
        );
    }

    /// Asserts that no secret appears in anything sent to a model, logged or committed.
    pub async fn assert_no_secret_leaked(&self) {
        let mut haystack = String::new();
        for (_, body) in self.llm.requests() {
            haystack.push_str(&body.to_string());
        }
        for p in self.oc.prompts() {
            haystack.push_str(&p);
        }
        for l in self.logs().await {
            haystack.push_str(&l.to_string());
        }
        for pr in self.gh.pulls() {
            haystack.push_str(&pr.to_string());
        }
        for (_, c) in self.gh.comments() {
            haystack.push_str(&c);
        }
        let trace_dir = self.dir.path().join("trace");
        if let Ok(entries) = std::fs::read_dir(&trace_dir) {
            for e in entries.flatten() {
                haystack.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
            }
        }
        for s in SECRETS {
            assert!(!haystack.contains(s), "secret {s} leaked");
        }
        assert!(
            !haystack.contains("agent_settings"),
            "agent_settings reached a model or a log"
        );
        let git_config = self.workspace().join(".git/config");
        if let Ok(c) = std::fs::read_to_string(git_config) {
            assert!(!c.contains(GH_TOKEN) && !c.contains("extraHeader"), "{c}");
        }
    }
}
