//! Test support: a real api-server (SQLite) and the shared fakes of `terarchitect-test-fakes`
//! (a scripted fake Director LLM, a fake OpenCode server, a fake GitHub API and a local bare
//! repository as the remote).

#![allow(dead_code)]

use std::path::PathBuf;

use serde_json::{Value, json};
use terarchitect_agent::RunResult;
use terarchitect_agent::config::Env;
use terarchitect_api_server::testing::{Backend, TEST_SECRET_KEY, TestOptions, TestServer};
use terarchitect_worker_api::JobKind;
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

pub use terarchitect_test_fakes::*;

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
    pub repo: GitRemote,
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
        let repo = GitRemote::create(dir.path());
        let remote = repo.remote.clone();

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
            repo,
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

    /// Runs a ticket job in-process, never cancelled.
    pub async fn run_ticket(&self) -> RunResult {
        self.run_in_process(JobKind::Ticket, CancellationToken::new())
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

    /// Files of a remote branch (empty when the branch does not exist).
    pub fn remote_files(&self, branch: &str) -> Vec<String> {
        self.repo.files(branch)
    }

    /// Commit subjects of a remote branch, newest first.
    pub fn remote_log(&self, branch: &str) -> Vec<String> {
        self.repo.log(branch)
    }

    /// Pushes a branch with one extra commit to the remote (an earlier run's work).
    pub fn push_branch(&self, branch: &str, file: &str) {
        self.repo.push_branch(branch, file);
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
