//! [`World`]: one scenario's api-server, fake cluster, operator process, agents and fakes.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::events::v1::Event;
use kube::CustomResourceExt;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use terarchitect_api_server::review::ReviewArgs;
use terarchitect_api_server::server::RunningServer;
use terarchitect_api_server::state::AppState;
use terarchitect_api_server::testing::{Backend, TEST_SECRET_KEY, TestOptions, TestServer};
use terarchitect_fake_apiserver::{
    Cluster, FakeApiServer, JobController, JobControllerConfig, RequestMatcher, Verb,
};
use terarchitect_operator::crd::AgentJob;
use terarchitect_test_fakes::{FakeGitHub, FakeLlm, FakeOpenCode, GitRemote};
use terarchitect_worker_api::{JobState, JobStatus};
use uuid::Uuid;

use crate::agents::{AgentRunner, Exit, JobCommand};
use crate::binaries::binaries;
use crate::process::{OperatorProcess, tail};
use crate::{eventually, metric_sum};

/// Namespace of the operator's AgentJobs, Jobs and Secrets.
pub const NS: &str = "agents";
/// Bearer token of the worker API (the api-server requires it).
pub const WORKER_TOKEN: &str = "wk-e2e-3f9a7c1d5b";
/// Admin token of the api-server: every non-worker endpoint requires it, and the operator
/// reads the settings with it (the whole flow runs contained, as the chart installs it).
pub const ADMIN_TOKEN: &str = "adm-e2e-7c44b0a2e9";
/// Secret of the api-server's GitHub webhook (`POST /api/github/webhook`).
pub const WEBHOOK_SECRET: &str = "whsec-e2e-5d1c9e";
/// GitHub token stored in the settings (reaches agents through the claim's Secret).
pub const GH_TOKEN: &str = "ghp_e2eSecretToken_0123456789";
/// Director LLM key stored in the settings.
pub const AGENT_KEY: &str = "sk-e2e-director-key-4242";
/// Worker LLM key stored in the settings.
pub const WORKER_KEY: &str = "sk-e2e-worker-key-1717";
/// Longest wait for anything in a scenario (generous for a loaded 2-core machine).
pub const TIMEOUT: Duration = Duration::from_secs(120);

/// The AgentJob (and Job) name of a queue job.
pub fn agentjob_name(job_id: Uuid) -> String {
    terarchitect_operator::dispatcher::agentjob_name(job_id)
}

/// The work branch of a ticket.
pub fn branch(ticket: Uuid) -> String {
    format!("ticket-{ticket}")
}

/// How a [`World`] is set up.
#[derive(Debug, Clone)]
pub struct WorldOptions {
    /// The api-server's database.
    pub backend: Backend,
    /// The MAX_CONCURRENT_AGENTS setting (the operator's own fallback is 1).
    pub max_concurrent: u32,
    /// Operator environment, over the defaults of [`World::operator_env`].
    pub operator_env: Vec<(String, String)>,
    /// Extra environment of every agent (test-only knobs).
    pub agent_env: Vec<(String, String)>,
    /// Settings stored through `PUT /api/settings`, over the defaults.
    pub settings: Vec<(String, String)>,
    /// What pods run.
    pub command: JobCommand,
    /// Start the operator with the world.
    pub start_operator: bool,
}

impl WorldOptions {
    /// Defaults: the real agent, 2 agent slots, the operator started.
    pub fn new(backend: Backend) -> Self {
        Self {
            backend,
            max_concurrent: 2,
            operator_env: Vec::new(),
            agent_env: Vec::new(),
            settings: Vec::new(),
            command: JobCommand::Agent,
            start_operator: true,
        }
    }

    /// Sets an operator environment variable.
    pub fn operator_env(mut self, key: &str, value: &str) -> Self {
        self.operator_env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Sets an agent environment variable.
    pub fn agent_env(mut self, key: &str, value: &str) -> Self {
        self.agent_env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Stores a setting.
    pub fn setting(mut self, key: &str, value: &str) -> Self {
        self.settings.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Sets the MAX_CONCURRENT_AGENTS setting.
    pub fn max_concurrent(mut self, n: u32) -> Self {
        self.max_concurrent = n;
        self
    }

    /// Chooses what pods run.
    pub fn command(mut self, command: JobCommand) -> Self {
        self.command = command;
        self
    }

    /// Whether the operator starts with the world.
    pub fn start_operator(mut self, start: bool) -> Self {
        self.start_operator = start;
        self
    }
}

/// HTTP access to the api-server (UI endpoints, and the worker API with the token).
#[derive(Debug, Clone)]
pub struct ApiClient {
    /// Base URL (stable across restarts).
    pub base: String,
    http: reqwest::Client,
}

impl ApiClient {
    /// A client for `base`.
    pub fn new(base: String) -> Self {
        Self {
            base,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .expect("an HTTP client"),
        }
    }

    /// Sends a request (the worker token to worker endpoints, the admin token to the others);
    /// returns status and JSON body (null if none).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let token = if worker_route(&method, path) {
            WORKER_TOKEN
        } else {
            ADMIN_TOKEN
        };
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap_or_else(|e| panic!("{path}: {e}"));
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Sends a request and asserts a 2xx answer.
    pub async fn ok(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let (status, v) = self.call(method.clone(), path, body).await;
        assert!(status.is_success(), "{method} {path}: {status} {v}");
        v
    }

    /// A ticket.
    pub async fn ticket(&self, project: Uuid, ticket: Uuid) -> Value {
        self.ok(
            Method::GET,
            &format!("/api/projects/{project}/tickets/{ticket}"),
            None,
        )
        .await
    }

    /// A ticket's jobs, newest first.
    pub async fn jobs(&self, project: Uuid, ticket: Uuid) -> Vec<JobState> {
        let v = self
            .ok(
                Method::GET,
                &format!("/api/projects/{project}/tickets/{ticket}/jobs"),
                None,
            )
            .await;
        serde_json::from_value(v).expect("a list of jobs")
    }

    /// One queue job.
    pub async fn job(&self, id: Uuid) -> JobState {
        let v = self
            .ok(Method::GET, &format!("/api/worker/jobs/{id}"), None)
            .await;
        serde_json::from_value(v).expect("a job")
    }

    /// A ticket's log steps, oldest first.
    pub async fn steps(&self, project: Uuid, ticket: Uuid) -> Vec<String> {
        let v = self
            .ok(
                Method::GET,
                &format!("/api/projects/{project}/tickets/{ticket}/logs"),
                None,
            )
            .await;
        v.as_array()
            .into_iter()
            .flatten()
            .map(|l| l["step"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    /// The /metrics text.
    pub async fn metrics(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .expect("scraping the api-server")
            .text()
            .await
            .expect("reading the api-server's metrics")
    }
}

/// Whether `method path` belongs to the worker API (worker key or run token) rather than the
/// admin API (the api-server's `worker`, `queue` and `memory` routers).
pub fn worker_route(method: &Method, path: &str) -> bool {
    let path = path.split('?').next().unwrap_or(path);
    let ends = |suffixes: &[&str]| suffixes.iter().any(|s| path.ends_with(s));
    path.starts_with("/api/worker/")
        || path.contains("/memory/")
        || (*method == Method::GET && ends(&["/worker-context", "/cancel-requested"]))
        || (*method == Method::POST
            && path.contains("/tickets/")
            && ends(&["/logs", "/complete", "/review-jobs"]))
}

/// Lets a gated container finish (dropping it does too).
#[derive(Debug)]
pub struct Release(tokio::sync::oneshot::Sender<()>);

impl Release {
    /// Lets the container's exit code reach the Job controller.
    pub fn release(self) {
        let _ = self.0.send(());
    }
}

/// Containers that ended and wait for the test (see [`World::gate_exits`]).
#[derive(Debug)]
pub struct ExitGate {
    rx: tokio::sync::mpsc::UnboundedReceiver<(Exit, Release)>,
}

impl ExitGate {
    /// The next container that ended.
    pub async fn next(&mut self) -> (Exit, Release) {
        tokio::time::timeout(TIMEOUT, self.rx.recv())
            .await
            .expect("a container ended in time")
            .expect("the gate is open")
    }
}

enum ApiInstance {
    First(TestServer),
    Restarted(RunningServer),
}

/// One scenario's world. Dropping it stops everything (and prints the operator's and agents'
/// logs when the test failed).
pub struct World {
    /// Temporary directory of everything on disk.
    pub dir: tempfile::TempDir,
    /// The backend of the api-server.
    pub backend: Backend,
    /// The api-server's HTTP API.
    pub api: ApiClient,
    /// The project all tickets belong to.
    pub project: Uuid,
    /// The fake Kubernetes API server.
    pub k8s: FakeApiServer,
    /// Its stand-in Job controller.
    pub job_controller: JobController,
    /// What runs in the pods.
    pub runner: Arc<AgentRunner>,
    /// Fake Director LLM (automatic mode).
    pub llm: FakeLlm,
    /// Fake OpenCode server.
    pub oc: FakeOpenCode,
    /// Fake GitHub API.
    pub gh: FakeGitHub,
    /// The project's Git remote.
    pub git: GitRemote,
    operator: Option<OperatorProcess>,
    operators_started: usize,
    operator_env: Vec<(String, String)>,
    api_server: Option<ApiInstance>,
    api_opts: TestOptions,
    db_url: String,
    db_dir: Option<tempfile::TempDir>,
    retired_api_metrics: Vec<String>,
}

impl World {
    /// Starts everything.
    pub async fn start(opts: WorldOptions) -> Self {
        terarchitect_worker_api::ensure_crypto_provider();
        let bins = binaries();
        let dir = tempfile::Builder::new()
            .prefix("terarchitect-e2e-")
            .tempdir()
            .expect("a temporary directory");
        let git = GitRemote::create(&dir.path().join("git"));
        let (llm, oc, gh) = tokio::join!(
            FakeLlm::start_auto(),
            FakeOpenCode::start(),
            FakeGitHub::start()
        );

        let api_opts = TestOptions {
            admin_tokens: vec![ADMIN_TOKEN.to_owned()],
            require_admin_token: true,
            ..TestOptions::default()
        }
        .env("TERARCHITECT_SECRET_KEY", TEST_SECRET_KEY)
        .env("TERARCHITECT_WORKER_API_KEY", WORKER_TOKEN);
        // The review loop talks to the fake GitHub; the poller runs when a test asks.
        let api_opts = TestOptions {
            review: Some(ReviewArgs {
                github_api_url: gh.url.clone(),
                github_webhook_secret: Some(WEBHOOK_SECRET.to_owned()),
                ..ReviewArgs::default()
            }),
            ..api_opts
        };
        let server = TestServer::start(opts.backend, api_opts.clone()).await;
        let api_opts = TestOptions {
            port: Some(server.server.addr.port()),
            ..api_opts
        };
        let api = ApiClient::new(server.url());
        let db_url = server.database_url.clone();

        let mut settings = serde_json::Map::new();
        for (k, v) in [
            ("AGENT_LLM_URL", llm.url.as_str()),
            ("AGENT_MODEL", "director-model"),
            ("AGENT_API_KEY", AGENT_KEY),
            ("WORKER_MODE", "opencode"),
            ("WORKER_MODEL", "terarchitect-proxy/coder"),
            ("WORKER_API_KEY", WORKER_KEY),
            ("github_agent_token", GH_TOKEN),
            ("GIT_USER_NAME", "E2E Agent"),
            ("GIT_USER_EMAIL", "agent@e2e.example"),
        ] {
            settings.insert(k.to_owned(), json!(v));
        }
        settings.insert(
            "MAX_CONCURRENT_AGENTS".into(),
            json!(opts.max_concurrent.to_string()),
        );
        for (k, v) in &opts.settings {
            settings.insert(k.clone(), json!(v));
        }
        api.ok(Method::PUT, "/api/settings", Some(Value::Object(settings)))
            .await;
        let p = api
            .ok(
                Method::POST,
                "/api/projects",
                Some(json!({"name": "Shop", "description": "A small shop",
                    "github_url": git.url(), "is_existing_repo": true})),
            )
            .await;
        let project: Uuid = p["id"]
            .as_str()
            .expect("project id")
            .parse()
            .expect("a UUID");
        api.ok(
            Method::PUT,
            &format!("/api/projects/{project}/graph"),
            Some(json!({"nodes": [{"id": "n1", "data": {"label": "API"}}], "edges": []})),
        )
        .await;

        let k8s = FakeApiServer::start().await.expect("the fake API server");
        k8s.register_crd(&AgentJob::crd())
            .expect("registering the CRD");
        let kubeconfig = dir.path().join("kubeconfig");
        k8s.write_kubeconfig(&kubeconfig)
            .expect("writing the kubeconfig");

        let mut agent_env: Vec<(String, String)> = [
            ("OPENCODE_SERVER_URL", oc.url.as_str()),
            ("GITHUB_API_URL", gh.url.as_str()),
            ("AGENT_CANCEL_POLL_SEC", "0.2"),
            ("AGENT_RETRY_BACKOFF_MS", "20"),
            ("RUST_LOG", "info"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        agent_env.extend(opts.agent_env.iter().cloned());
        let runner = Arc::new(AgentRunner::new(
            opts.command,
            bins.agent.clone(),
            dir.path().join("agents"),
            agent_env,
        ));
        let job_controller = k8s.start_job_controller_with(
            runner.outcome(),
            JobControllerConfig {
                kill_grace: Duration::from_secs(5),
                ..JobControllerConfig::default()
            },
        );

        let mut operator_env: Vec<(String, String)> = [
            ("KUBECONFIG", kubeconfig.to_string_lossy().as_ref()),
            ("TERARCHITECT_API_URL", api.base.as_str()),
            ("TERARCHITECT_WORKER_API_KEY", WORKER_TOKEN),
            ("TERARCHITECT_ADMIN_TOKEN", ADMIN_TOKEN),
            ("MAX_CONCURRENT_AGENTS", "1"),
            ("POLL_INTERVAL_SEC", "0.2"),
            ("CLAIM_WAIT_SEC", "2"),
            ("HEARTBEAT_INTERVAL_SEC", "0.5"),
            ("JOB_LEASE_SEC", "30"),
            ("OPERATOR_HTTP_BIND", "127.0.0.1:0"),
            ("OPERATOR_NAMESPACE", NS),
            ("LEADER_ELECTION", "false"),
            ("LEADER_LEASE_SEC", "3"),
            ("PENDING_TIMEOUT_SEC", "60"),
            ("WORKER_TIMEOUT_SEC", "600"),
            ("DEADLINE_MARGIN_SEC", "0"),
            ("JOB_TTL_SEC", "3600"),
            ("AGENT_IMAGE", "terarchitect-agent:e2e"),
            ("LOG_FORMAT", "json"),
            ("RUST_LOG", "info,kube=warn,hyper=warn"),
            ("HOME", dir.path().to_string_lossy().as_ref()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        if let Some(path) = std::env::var_os("PATH") {
            operator_env.push(("PATH".into(), path.to_string_lossy().into_owned()));
        }
        for (k, v) in &opts.operator_env {
            operator_env.retain(|(key, _)| key != k);
            operator_env.push((k.clone(), v.clone()));
        }

        let mut world = Self {
            dir,
            backend: opts.backend,
            api,
            project,
            k8s,
            job_controller,
            runner,
            llm,
            oc,
            gh,
            git,
            operator: None,
            operators_started: 0,
            operator_env,
            api_server: Some(ApiInstance::First(server)),
            api_opts,
            db_url,
            db_dir: None,
            retired_api_metrics: Vec::new(),
        };
        if opts.start_operator {
            world.start_operator().await;
        }
        world
    }

    // ---- the operator ------------------------------------------------------------------

    /// The operator's environment.
    pub fn operator_env(&self) -> &[(String, String)] {
        &self.operator_env
    }

    /// Starts an operator process (`POD_NAME` `operator-<n>`); at most one runs at a time.
    pub async fn start_operator(&mut self) {
        assert!(self.operator.is_none(), "an operator is already running");
        self.operators_started += 1;
        let n = self.operators_started;
        let mut env = self.operator_env.clone();
        env.push(("POD_NAME".into(), format!("operator-{n}")));
        let log = self.dir.path().join(format!("operator-{n}.log"));
        self.operator = Some(OperatorProcess::start(&binaries().operator, &env, log).await);
    }

    /// The running operator.
    pub fn operator(&self) -> &OperatorProcess {
        self.operator.as_ref().expect("an operator runs")
    }

    /// Kills the operator with SIGKILL (no graceful shutdown).
    pub fn kill_operator(&mut self) {
        if let Some(mut op) = self.operator.take() {
            op.kill();
        }
    }

    /// Stops the operator with SIGTERM.
    pub async fn stop_operator(&mut self) {
        if let Some(mut op) = self.operator.take() {
            op.stop().await;
        }
    }

    /// Log files of every operator started so far.
    pub fn operator_logs(&self) -> Vec<PathBuf> {
        (1..=self.operators_started)
            .map(|n| self.dir.path().join(format!("operator-{n}.log")))
            .collect()
    }

    // ---- the api-server ----------------------------------------------------------------

    /// Stops the api-server (its database stays); its metrics are kept for
    /// [`Self::assert_reports`].
    pub async fn stop_api(&mut self) {
        let metrics = self.api.metrics().await;
        self.retired_api_metrics.push(metrics);
        match self.api_server.take().expect("the api-server runs") {
            ApiInstance::First(server) => {
                let (_url, dir) = server.stop().await;
                self.db_dir = dir;
            }
            ApiInstance::Restarted(server) => server.shutdown().await,
        }
    }

    /// Starts the api-server again on the same database and port.
    pub async fn start_api(&mut self) {
        assert!(self.api_server.is_none(), "the api-server already runs");
        let server = TestServer::start_on(&self.db_url, &self.api_opts).await;
        assert_eq!(server.url(), self.api.base, "restarted on the same address");
        self.api_server = Some(ApiInstance::Restarted(server));
    }

    /// The running api-server's state (its database, its review loop).
    pub fn api_state(&self) -> &AppState {
        match self.api_server.as_ref().expect("the api-server runs") {
            ApiInstance::First(server) => &server.server.state,
            ApiInstance::Restarted(server) => &server.state,
        }
    }

    // ---- agents ------------------------------------------------------------------------

    /// From now on, every container whose process has ended waits (still "running" for the
    /// Job controller) until the test lets it finish through the returned gate.
    pub fn gate_exits(&self) -> ExitGate {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        self.runner.set_exit_hook(Some(Arc::new(move |exit: Exit| {
            let tx: tokio::sync::mpsc::UnboundedSender<(Exit, Release)> = tx.clone();
            Box::pin(async move {
                let (go, wait) = tokio::sync::oneshot::channel();
                if tx.send((exit, Release(go))).is_ok() {
                    let _ = wait.await;
                }
            })
        })));
        ExitGate { rx }
    }

    // ---- tickets and jobs --------------------------------------------------------------

    /// Creates a ticket in the backlog.
    pub async fn create_ticket(&self, title: &str) -> Uuid {
        let t = self
            .api
            .ok(
                Method::POST,
                &format!("/api/projects/{}/tickets", self.project),
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

    /// Moves a ticket to a column.
    pub async fn move_ticket(&self, ticket: Uuid, column: &str) -> Value {
        self.api
            .ok(
                Method::PATCH,
                &format!("/api/projects/{}/tickets/{ticket}", self.project),
                Some(json!({"column_id": column})),
            )
            .await
    }

    /// Moves a ticket to In Progress and returns the job it enqueued.
    pub async fn start_ticket(&self, ticket: Uuid) -> JobState {
        self.move_ticket(ticket, "in_progress").await;
        let jobs = self.api.jobs(self.project, ticket).await;
        let job = jobs
            .into_iter()
            .next()
            .expect("moving to in_progress enqueued a job");
        assert!(
            matches!(job.status, JobStatus::Pending | JobStatus::Running),
            "{job:?}"
        );
        job
    }

    /// A ticket.
    pub async fn ticket(&self, ticket: Uuid) -> Value {
        self.api.ticket(self.project, ticket).await
    }

    /// A ticket's log steps.
    pub async fn steps(&self, ticket: Uuid) -> Vec<String> {
        self.api.steps(self.project, ticket).await
    }

    /// Asks the ticket's run to stop (the UI's Stop button).
    pub async fn cancel(&self, ticket: Uuid) {
        self.api
            .ok(
                Method::POST,
                &format!("/api/projects/{}/tickets/{ticket}/cancel", self.project),
                Some(json!({})),
            )
            .await;
    }

    /// Waits until queue job `id` is completed or failed.
    pub async fn wait_job_finished(&self, id: Uuid) -> JobState {
        eventually(&format!("queue job {id} to finish"), TIMEOUT, || async {
            let j = self.api.job(id).await;
            matches!(j.status, JobStatus::Completed | JobStatus::Failed).then_some(j)
        })
        .await
    }

    /// The AgentJob of queue job `id`.
    pub fn agentjob(&self, id: Uuid) -> Option<AgentJob> {
        self.k8s.get::<AgentJob>(NS, &agentjob_name(id))
    }

    /// The Job of queue job `id`.
    pub fn job(&self, id: Uuid) -> Option<Job> {
        self.k8s.get::<Job>(NS, &agentjob_name(id))
    }

    /// Waits until the AgentJob of queue job `id` satisfies `check`.
    pub async fn wait_agentjob(
        &self,
        id: Uuid,
        what: &str,
        check: impl Fn(&AgentJob) -> bool,
    ) -> AgentJob {
        let name = agentjob_name(id);
        let found = self
            .k8s
            .wait_for(TIMEOUT, |c: &Cluster| {
                c.get::<AgentJob>(NS, &name).filter(|aj| check(aj))
            })
            .await;
        found.unwrap_or_else(|| {
            panic!(
                "AgentJob {name}: timed out waiting for {what}; now {:?}",
                self.agentjob(id).and_then(|a| a.status)
            )
        })
    }

    /// Waits until the AgentJob of `id` is finished and its outcome reported.
    pub async fn wait_reported(&self, id: Uuid) -> AgentJob {
        self.wait_agentjob(id, "a reported outcome", |aj| {
            aj.is_finished() && aj.status.as_ref().is_some_and(|s| s.reported)
        })
        .await
    }

    /// How many times the operator created the Job of queue job `id` (requests the fake
    /// received), whatever their answer.
    pub fn job_creations(&self, id: Uuid) -> usize {
        let name = agentjob_name(id);
        self.k8s
            .requests_matching(&RequestMatcher::new(Verb::Create, "jobs").namespace(NS))
            .iter()
            .filter(|r| {
                serde_json::from_str::<Value>(&r.body)
                    .is_ok_and(|b| b["metadata"]["name"] == name.as_str())
            })
            .count()
    }

    /// Events about the AgentJob of `id` with `reason`, counting repeats of a series.
    pub fn events(&self, id: Uuid, reason: &str) -> usize {
        let name = agentjob_name(id);
        self.k8s
            .list::<Event>(NS)
            .iter()
            .filter(|e| {
                e.reason.as_deref() == Some(reason)
                    && e.regarding
                        .as_ref()
                        .is_some_and(|r| r.name.as_deref() == Some(name.as_str()))
            })
            .map(|e| e.series.as_ref().map_or(1, |s| s.count.max(1) as usize))
            .sum()
    }

    /// Asserts that the AgentJob of `id` carries a reported outcome, reported exactly once (one
    /// `Reported` Event; the operator records it just after the status, so this waits for it).
    pub async fn assert_reported_once(&self, id: Uuid) {
        let aj = self.agentjob(id).expect("the AgentJob exists");
        let status = aj.status.clone().expect("a status");
        assert!(status.reported, "{status:?}");
        assert!(
            status
                .conditions
                .iter()
                .any(|c| c.type_ == "Reported" && c.status == "True"),
            "{status:?}"
        );
        let seen = self
            .k8s
            .wait_for(TIMEOUT, |_c: &Cluster| {
                let n = self.events(id, "Reported");
                (n > 0).then_some(n)
            })
            .await;
        assert_eq!(seen, Some(1), "one Reported event for {id}");
    }

    /// Asserts what the api-server (every instance so far) received from the operator: exactly
    /// `completed` job completions and `failed` job failures, all accepted (no 409 or 404: no
    /// outcome was ever reported twice).
    pub async fn assert_reports(&self, completed: usize, failed: usize) {
        let mut texts = self.retired_api_metrics.clone();
        texts.push(self.api.metrics().await);
        let count = |route: &str, status: Option<&str>| -> f64 {
            let route = format!("route=\"/api/worker/jobs/{{job_id}}/{route}\"");
            let status = status.map(|s| format!("status=\"{s}\""));
            let mut labels = vec!["method=\"POST\"", route.as_str()];
            if let Some(s) = &status {
                labels.push(s.as_str());
            }
            texts
                .iter()
                .map(|t| metric_sum(t, "terarchitect_http_requests_total", &labels))
                .sum()
        };
        assert_eq!(
            (count("complete", Some("200")), count("fail", Some("200"))),
            (completed as f64, failed as f64),
            "accepted job completions and failures"
        );
        assert_eq!(
            (count("complete", None), count("fail", None)),
            (completed as f64, failed as f64),
            "no rejected (duplicate or stale) reports"
        );
    }

    /// Jobs in the namespace that have not finished (no Complete or Failed condition).
    pub fn active_jobs(cluster: &Cluster) -> usize {
        cluster
            .list::<Job>(NS)
            .iter()
            .filter(|j| {
                j.metadata.deletion_timestamp.is_none()
                    && !j
                        .status
                        .as_ref()
                        .and_then(|s| s.conditions.as_ref())
                        .is_some_and(|cs| {
                            cs.iter().any(|c| {
                                (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True"
                            })
                        })
            })
            .count()
    }

    /// AgentJobs in the namespace that have not finished.
    pub fn live_agentjobs(cluster: &Cluster) -> usize {
        cluster
            .list::<AgentJob>(NS)
            .iter()
            .filter(|a| a.is_live())
            .count()
    }
}

impl Drop for World {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        eprintln!("==== e2e diagnostics ({})", self.dir.path().display());
        if std::env::var_os("E2E_KEEP_DIR").is_some() {
            let kept = std::mem::replace(&mut self.dir, tempfile::tempdir().expect("a temp dir"));
            eprintln!("kept {}", kept.keep().display());
        }
        for log in self.operator_logs() {
            eprintln!("---- {} (last 60 lines)\n{}", log.display(), tail(&log, 60));
        }
        for aj in self.k8s.list::<AgentJob>(NS) {
            eprintln!(
                "---- AgentJob {:?}: {:?}",
                aj.metadata.name,
                aj.status
                    .as_ref()
                    .map(|s| (s.phase, s.reason, &s.message, s.reported))
            );
        }
        let mut logs = self.runner.logs();
        logs.sort();
        for log in logs.iter().rev().take(4) {
            eprintln!("---- {} (last 30 lines)\n{}", log.display(), tail(log, 30));
        }
    }
}
