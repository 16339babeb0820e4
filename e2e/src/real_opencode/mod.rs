//! The world of the real-OpenCode suite (`tests/real_opencode.rs`) and its start-up benchmark
//! (`benches/opencode_startup.rs`): the agent's own `terarchitect-agent entrypoint`, which
//! starts the real `opencode serve` (npm `opencode-ai`, [`OPENCODE_VERSION`]), whose provider is
//! a [`ScriptedModel`]; the real api-server on SQLite (in-process) with an admin token and the
//! worker key configured; the fake Director LLM and GitHub API; a local bare repository.
//!
//! A run is dispatched the way the operator does it: the ticket is moved to In Progress, the
//! job claimed with the worker key, and the agent started with the claim's `agent_env`, the
//! job's identifiers and the claim's run token as `TERARCHITECT_WORKER_API_KEY` (the global key
//! only from servers that mint none). When the tests run as root, the agent runs as `nobody`
//! (the image's agent is not root either), in directories of its own: `$HOME`, `$TMPDIR` (its
//! private `/tmp`) and the workspace.
//!
//! Every secret is a distinctive string with a random part ([`Secrets`]), so a leak is found by
//! searching for it, and nothing left on the machine by an earlier run can look like one.

mod install;
mod run;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use terarchitect_api_server::testing::{Backend, TEST_SECRET_KEY, TestOptions, TestServer};
use terarchitect_test_fakes::{FakeGitHub, FakeLlm, GitRemote, ScriptedModel, closed_port};
use tokio::process::Command;
use uuid::Uuid;

pub use install::{
    INSTALL_FAILED_MARKER, INSTALLED_BIN, OPENCODE_VERSION, agent_user, executable_by_others,
    opencode_bin, reachable,
};
pub use run::{AgentRun, Finished, RUN_TIMEOUT, RunOptions};

use crate::binaries::binaries;
use crate::process::die_with_parent;
use install::chown_tree;

/// The run's secrets: distinctive, with a random part.
#[derive(Debug, Clone)]
pub struct Secrets {
    /// The GitHub token (setting `github_agent_token`).
    pub github: String,
    /// The api-server's global worker key.
    pub worker_key: String,
    /// The Director LLM's key (`AGENT_API_KEY`).
    pub director_key: String,
    /// The worker model's key (`WORKER_API_KEY`, OpenCode's provider key).
    pub provider_key: String,
    /// The api-server's admin token.
    pub admin: String,
    /// `OPENCODE_SERVER_PASSWORD`, when a test sets it.
    pub opencode_password: String,
}

impl Secrets {
    /// Fresh secrets.
    pub fn new() -> Self {
        let r = || Uuid::new_v4().simple().to_string();
        Self {
            github: format!("ghp_e2eLeakCanaryGitHub{}", r()),
            worker_key: format!("wk-e2e-leak-canary-worker-{}", r()),
            director_key: format!("sk-e2e-leak-canary-director-{}", r()),
            provider_key: format!("sk-e2e-leak-canary-provider-{}", r()),
            admin: format!("adm-e2e-leak-canary-{}", r()),
            opencode_password: format!("ocpw-e2e-leak-canary-{}", r()),
        }
    }

    /// Every secret with its name.
    pub fn all(&self) -> Vec<(&'static str, &str)> {
        vec![
            ("GitHub token", &self.github),
            ("worker key", &self.worker_key),
            ("Director key", &self.director_key),
            ("provider key", &self.provider_key),
            ("admin token", &self.admin),
            ("OpenCode server password", &self.opencode_password),
        ]
    }
}

impl Default for Secrets {
    fn default() -> Self {
        Self::new()
    }
}

/// The names of the `secrets` found in `text`.
pub fn leaks<'a>(text: &str, secrets: &[(&'a str, &str)]) -> Vec<&'a str> {
    secrets
        .iter()
        .filter(|(_, s)| !s.is_empty() && text.contains(*s))
        .map(|(n, _)| *n)
        .collect()
}

/// Git in a directory the tests may not own (the agent's), as the tests' user.
pub fn git_lines(dir: &Path, args: &[&str]) -> Vec<String> {
    let out = std::process::Command::new("git")
        .args(["-c", "safe.directory=*"])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("git");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// HTTP access to the api-server: UI endpoints with the admin token, worker endpoints with
/// the worker key.
#[derive(Debug, Clone)]
pub struct Api {
    /// Base URL.
    pub base: String,
    admin: String,
    worker: String,
    http: reqwest::Client,
}

impl Api {
    /// Sends a request with `token`; returns the status and the JSON body (null if none).
    pub async fn call(
        &self,
        token: Option<&str>,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap_or_else(|e| panic!("{path}: {e}"));
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// A UI call with the admin token; asserts a 2xx answer.
    pub async fn admin(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let (status, v) = self
            .call(Some(&self.admin), method.clone(), path, body)
            .await;
        assert!(status.is_success(), "{method} {path}: {status} {v}");
        v
    }

    /// A worker call with the global worker key.
    pub async fn worker(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        self.call(Some(&self.worker), method, path, body).await
    }
}

/// One scenario's world.
pub struct RealWorld {
    /// Everything on disk.
    pub dir: tempfile::TempDir,
    /// The api-server.
    pub server: TestServer,
    /// Its HTTP API.
    pub api: Api,
    /// The Director LLM (automatic mode: approves plans, one worker turn, then done).
    pub llm: FakeLlm,
    /// The worker's model.
    pub model: ScriptedModel,
    /// GitHub.
    pub gh: FakeGitHub,
    /// The project's repository.
    pub git: GitRemote,
    /// The project.
    pub project: Uuid,
    /// The secrets.
    pub secrets: Secrets,
    /// The `opencode` executable.
    pub opencode: PathBuf,
    agent: PathBuf,
    agent_user: Option<(u32, u32)>,
    runs: usize,
}

impl RealWorld {
    /// Starts everything for the `opencode` executable, the api-server on SQLite.
    pub async fn start(opencode: PathBuf) -> Self {
        Self::start_on(opencode, Backend::Sqlite).await
    }

    /// Starts everything for the `opencode` executable, the api-server on `backend`.
    pub async fn start_on(opencode: PathBuf, backend: Backend) -> Self {
        terarchitect_worker_api::ensure_crypto_provider();
        binaries();
        let secrets = Secrets::new();
        let dir = tempfile::Builder::new()
            .prefix("terarchitect-real-opencode-")
            .tempdir()
            .expect("a temporary directory");
        // Reachable by the agent's user, not listable.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711))
            .expect("chmod");
        let agent_user = agent_user();
        let opencode = reachable(&opencode, agent_user);
        let agent = reachable(&binaries().agent, agent_user);
        let git = GitRemote::create(&dir.path().join("git"));
        chown_tree(&dir.path().join("git"), agent_user);
        let (llm, model, gh) = tokio::join!(
            FakeLlm::start_auto(),
            ScriptedModel::start(),
            FakeGitHub::start()
        );
        let opts = TestOptions {
            admin_tokens: vec![secrets.admin.clone()],
            ..TestOptions::default()
                .env("TERARCHITECT_SECRET_KEY", TEST_SECRET_KEY)
                .env("TERARCHITECT_WORKER_API_KEY", &secrets.worker_key)
        };
        let server = TestServer::start(backend, opts).await;
        let api = Api {
            base: server.url(),
            admin: secrets.admin.clone(),
            worker: secrets.worker_key.clone(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .expect("an HTTP client"),
        };
        let settings = json!({
            "AGENT_LLM_URL": llm.url, "AGENT_MODEL": "director-model",
            "AGENT_API_KEY": secrets.director_key,
            "WORKER_MODE": "opencode", "WORKER_MODEL": "terarchitect-proxy/coder",
            "WORKER_LLM_URL": model.url, "WORKER_API_KEY": secrets.provider_key,
            "github_agent_token": secrets.github,
            "GIT_USER_NAME": "E2E Agent", "GIT_USER_EMAIL": "agent@e2e.example",
        });
        api.admin(Method::PUT, "/api/settings", Some(settings))
            .await;
        let project = Self::create_project(&api, &git.url()).await;
        Self {
            dir,
            server,
            api,
            llm,
            model,
            gh,
            git,
            project,
            secrets,
            opencode,
            agent,
            agent_user,
            runs: 0,
        }
    }

    /// Creates a project with a one-node graph; returns its id.
    pub async fn create_project(api: &Api, repo_url: &str) -> Uuid {
        let p = api
            .admin(
                Method::POST,
                "/api/projects",
                Some(json!({"name": "Shop", "description": "A small shop",
                    "github_url": repo_url, "is_existing_repo": true})),
            )
            .await;
        let project: Uuid = p["id"]
            .as_str()
            .expect("project id")
            .parse()
            .expect("a UUID");
        api.admin(
            Method::PUT,
            &format!("/api/projects/{project}/graph"),
            Some(json!({"nodes": [{"id": "n1", "data": {"label": "API"}}], "edges": []})),
        )
        .await;
        project
    }

    /// Creates a ticket in the backlog of `project`.
    pub async fn create_ticket_in(&self, project: Uuid, title: &str) -> Uuid {
        let t = self
            .api
            .admin(
                Method::POST,
                &format!("/api/projects/{project}/tickets"),
                Some(
                    json!({"title": title, "description": "Add a greet(name) function with tests.",
                    "column_id": "backlog", "associated_node_ids": ["n1"]}),
                ),
            )
            .await;
        t["id"]
            .as_str()
            .expect("ticket id")
            .parse()
            .expect("a UUID")
    }

    /// Creates a ticket in the world's project.
    pub async fn create_ticket(&self, title: &str) -> Uuid {
        self.create_ticket_in(self.project, title).await
    }

    /// Moves a ticket to a column.
    pub async fn move_ticket(&self, project: Uuid, ticket: Uuid, column: &str) {
        self.api
            .admin(
                Method::PATCH,
                &format!("/api/projects/{project}/tickets/{ticket}"),
                Some(json!({"column_id": column})),
            )
            .await;
    }

    /// A ticket.
    pub async fn ticket(&self, ticket: Uuid) -> Value {
        self.api
            .admin(
                Method::GET,
                &format!("/api/projects/{}/tickets/{ticket}", self.project),
                None,
            )
            .await
    }

    /// A ticket's `/logs` entries, oldest first.
    pub async fn logs(&self, ticket: Uuid) -> Vec<Value> {
        let v = self
            .api
            .admin(
                Method::GET,
                &format!("/api/projects/{}/tickets/{ticket}/logs", self.project),
                None,
            )
            .await;
        v.as_array().cloned().unwrap_or_default()
    }

    /// The work branch of a ticket.
    pub fn branch(ticket: Uuid) -> String {
        format!("ticket-{ticket}")
    }

    /// Files of a branch of the remote.
    pub fn remote_files(&self, branch: &str) -> Vec<String> {
        git_lines(&self.git.remote, &["ls-tree", "-r", "--name-only", branch])
    }

    /// A file of a branch of the remote.
    pub fn remote_file(&self, branch: &str, path: &str) -> String {
        git_lines(&self.git.remote, &["show", &format!("{branch}:{path}")]).join("\n")
    }

    /// Moves `ticket` to In Progress and claims its job with the worker key, as the operator.
    async fn claim(&self, ticket: Uuid) -> Value {
        self.move_ticket(self.project, ticket, "in_progress").await;
        let (status, claim) = self
            .api
            .worker(
                Method::POST,
                "/api/worker/jobs/start",
                Some(json!({"project_id": self.project})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "claim: {claim}");
        assert_eq!(claim["ticket_id"], ticket.to_string(), "{claim}");
        claim
    }

    /// A fresh, private directory for the next run, with `home`, `tmp` and `ws`, owned by the
    /// agent's user.
    fn run_dir(&mut self) -> PathBuf {
        self.runs += 1;
        let root = self.dir.path().join(format!("run-{}", self.runs));
        for d in ["home", "tmp", "ws"] {
            std::fs::create_dir_all(root.join(d)).expect("creating the agent's directories");
        }
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        chown_tree(&root, self.agent_user);
        root
    }

    /// The agent's environment: the claim's `agent_env` with the run token as the worker key
    /// (as the operator's Secret), the pod's variables, local directories and test knobs.
    fn agent_env(
        &self,
        ticket: Uuid,
        claim: &Value,
        root: &Path,
        port: u16,
        opts: RunOptions,
    ) -> BTreeMap<String, String> {
        let mut env: BTreeMap<String, String> = claim["agent_env"]
            .as_object()
            .into_iter()
            .flatten()
            .filter(|_| !opts.by_hand)
            .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
            .collect();
        let key = match (claim["run_token"].as_str(), opts.by_hand) {
            (Some(t), false) => t.to_owned(),
            _ => self.secrets.worker_key.clone(),
        };
        let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
        let path = |p: &str| root.join(p).to_string_lossy().into_owned();
        for (k, v) in [
            ("TERARCHITECT_WORKER_API_KEY", key),
            ("TICKET_ID", ticket.to_string()),
            ("PROJECT_ID", self.project.to_string()),
            ("JOB_ID", text(&claim["job_id"])),
            ("JOB_KIND", "ticket".to_owned()),
            ("REPO_URL", text(&claim["repo_url"])),
            ("TERARCHITECT_API_URL", self.api.base.clone()),
            ("AGENT_WORKSPACE", path("ws")),
            ("HOME", path("home")),
            ("TMPDIR", path("tmp")),
            ("TERARCHITECT_TERMINATION_LOG", path("termination-log")),
            ("OPENCODE_BIN", self.opencode.to_string_lossy().into_owned()),
            ("OPENCODE_SERVER_PORT", port.to_string()),
            ("GITHUB_API_URL", self.gh.url.clone()),
            ("AGENT_CANCEL_POLL_SEC", "0.5".to_owned()),
            ("AGENT_RETRY_BACKOFF_MS", "20".to_owned()),
            ("AGENT_STARTUP_TIMEOUT_SEC", "60".to_owned()),
            ("RUST_LOG", "info".to_owned()),
            (
                "PATH",
                std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into()),
            ),
        ] {
            env.insert(k.to_owned(), v);
        }
        env.extend(opts.env);
        env
    }

    /// Moves `ticket` to In Progress, claims its job as the operator does and starts the agent
    /// (`terarchitect-agent entrypoint`) as the agent's user.
    pub async fn start_run(&mut self, ticket: Uuid, opts: RunOptions) -> AgentRun {
        let claim = self.claim(ticket).await;
        let root = self.run_dir();
        let port = closed_port();
        let env = self.agent_env(ticket, &claim, &root, port, opts);
        let log = self.dir.path().join(format!("agent-{}.log", self.runs));
        let file = std::fs::File::create(&log).expect("the agent's log");
        let mut cmd = Command::new(&self.agent);
        cmd.arg("entrypoint")
            .env_clear()
            .envs(&env)
            .current_dir(root.join("ws"))
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("a file handle"))
            .stderr(file)
            .process_group(0)
            .kill_on_drop(true);
        if let Some((uid, gid)) = self.agent_user {
            cmd.uid(uid).gid(gid);
        }
        die_with_parent(cmd.as_std_mut());
        let started = Instant::now();
        let child = cmd.spawn().expect("starting terarchitect-agent entrypoint");
        AgentRun {
            child,
            started,
            log,
            termination: root.join("termination-log"),
            port,
            run_token: claim["run_token"].as_str().map(str::to_owned),
            job_id: claim["job_id"].as_str().unwrap_or_default().to_owned(),
            root,
        }
    }

    /// Starts the agent on `ticket` and waits for it to end.
    pub async fn run(&mut self, ticket: Uuid, opts: RunOptions) -> Finished {
        self.start_run(ticket, opts).await.wait().await
    }
}

impl Drop for RealWorld {
    fn drop(&mut self) {
        let keep = std::env::var_os("E2E_KEEP_DIR").is_some();
        if keep || std::thread::panicking() {
            eprintln!(
                "==== real-OpenCode scenario directory: {}",
                self.dir.path().display()
            );
        }
        if keep {
            let kept = std::mem::replace(&mut self.dir, tempfile::tempdir().expect("a temp dir"));
            eprintln!("kept {}", kept.keep().display());
        }
    }
}
