//! Test harness: the unchanged operator, run in-process against the fake Kubernetes API server
//! (over HTTP on 127.0.0.1) and a real api-server on SQLite, with scripted agent pods.

#![allow(dead_code)]

pub mod agents;
pub mod app_api;
pub mod proxy;

use std::sync::Arc;
use std::sync::Once;
use std::time::Duration;

use kube::CustomResourceExt;
use serde_json::Value;
use terarchitect_api_server::testing::{Backend, TEST_SECRET_KEY, TestOptions, TestServer};
use terarchitect_fake_apiserver::{FakeApiServer, JobController};
use terarchitect_operator::config::RunConfig;
use terarchitect_operator::crd::{AgentJob, AgentJobKind, AgentJobSpec};
use terarchitect_operator::metrics::Metrics;
use terarchitect_worker_api::{JobState, JobStatus, WorkerApiClient};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

#[allow(unused_imports)]
pub use agents::{Agents, Behaviour};
pub use app_api::AppApi;
pub use proxy::Proxy;

/// Namespace the operator works in.
pub const NS: &str = "default";
/// The GitHub token the operator hands to agents (must never appear in a Job spec).
pub const OPERATOR_GITHUB_TOKEN: &str = "ghp_operator_fallback_token_0123456789";
/// The api-server's global worker key, held by the operator only.
pub const WORKER_KEY: &str = "wk-operator-tests-5d1c0a7e";
/// The api-server's admin token: the operator reads settings with it.
pub const ADMIN_TOKEN: &str = "adm-operator-tests-93be44f1";
/// How long any single wait may take on a loaded CI machine.
pub const WAIT: Duration = Duration::from_secs(60);

static TRACING: Once = Once::new();

/// Logs to the test output when `RUST_LOG` is set.
pub fn init_tracing() {
    TRACING.call_once(|| {
        if let Ok(filter) = std::env::var("RUST_LOG") {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
                .with_test_writer()
                .try_init();
        }
    });
}

/// One operator replica running in-process.
pub struct Operator {
    pub shutdown: CancellationToken,
    pub task: JoinHandle<()>,
    pub metrics: Arc<Metrics>,
    pub http_addr: std::net::SocketAddr,
}

impl Operator {
    /// Stops the replica and waits for it to exit.
    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(WAIT, self.task)
            .await
            .expect("the operator stops within the timeout")
            .expect("the operator task does not panic");
    }

    /// Value of one metric line (`name{labels}`), 0 when absent, read over HTTP.
    pub async fn metric(&self, series: &str) -> f64 {
        let text = reqwest::get(format!("http://{}/metrics", self.http_addr))
            .await
            .expect("metrics endpoint answers")
            .text()
            .await
            .expect("metrics body");
        text.lines()
            .filter_map(|l| l.strip_prefix(series))
            .filter_map(|rest| rest.strip_prefix(' '))
            .find_map(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    }
}

/// The fake cluster, the real api-server, a proxy in front of it, and scripted agents.
pub struct Harness {
    pub kube: FakeApiServer,
    pub api: TestServer,
    pub proxy: Proxy,
    pub agents: Agents,
    pub jobs: JobController,
    pub app: AppApi,
    pub worker: WorkerApiClient,
}

impl Harness {
    /// The reasons of the Events regarding the AgentJob `name`, oldest first.
    pub fn event_reasons(&self, name: &str) -> Vec<String> {
        let events: Vec<k8s_openapi::api::events::v1::Event> = self.kube.list(NS);
        events
            .iter()
            .filter(|e| {
                e.regarding
                    .as_ref()
                    .is_some_and(|r| r.name.as_deref() == Some(name))
            })
            .filter_map(|e| e.reason.clone())
            .collect()
    }

    /// Starts everything but the operator.
    pub async fn start() -> Self {
        init_tracing();
        terarchitect_worker_api::ensure_crypto_provider();
        let kube = FakeApiServer::start().await.expect("fake API server");
        kube.register_crd(&AgentJob::crd())
            .expect("registering the AgentJob CRD");
        // Contained, as the chart installs it: a worker key and admin auth.
        let opts = TestOptions {
            lease_sweep_ms: Some(100),
            admin_tokens: vec![ADMIN_TOKEN.to_owned()],
            ..TestOptions::default()
        }
        .env("TERARCHITECT_SECRET_KEY", TEST_SECRET_KEY)
        .env("TERARCHITECT_WORKER_API_KEY", WORKER_KEY)
        .env("GITHUB_TOKEN", "ghp_server_token");
        let api = TestServer::start(Backend::Sqlite, opts).await;
        let proxy = Proxy::start(&api.url()).await;
        let agents = Agents::default();
        let jobs = kube.start_job_controller(agents.policy());
        let app = AppApi::with_admin_token(api.url(), ADMIN_TOKEN);
        let worker = WorkerApiClient::new(&api.url(), Some(WORKER_KEY.to_owned().into()))
            .expect("worker API client");
        Self {
            kube,
            api,
            proxy,
            agents,
            jobs,
            app,
            worker,
        }
    }

    /// A fast operator configuration talking to the api-server through the proxy; `overrides`
    /// are `(flag, value)` pairs replacing or adding to the defaults.
    pub fn config(&self, overrides: &[(&str, &str)]) -> RunConfig {
        let url = self.proxy.url();
        let mut flags: Vec<(&str, &str)> = vec![
            ("--api-url", url.as_str()),
            ("--namespace", NS),
            ("--poll-interval-sec", "0.2"),
            ("--claim-wait-sec", "1"),
            ("--heartbeat-interval-sec", "0.3"),
            ("--job-lease-sec", "20"),
            ("--leader-election", "false"),
            ("--http-bind", "127.0.0.1:0"),
            ("--pending-timeout-sec", "2"),
            ("--unschedulable-timeout-sec", "3"),
            ("--max-concurrent-agents", "4"),
            ("--github-token", OPERATOR_GITHUB_TOKEN),
            ("--worker-api-key", WORKER_KEY),
            ("--admin-token", ADMIN_TOKEN),
            ("--agent-image", "registry.example/terarchitect-agent:test"),
        ];
        for (flag, value) in overrides {
            match flags.iter_mut().find(|(f, _)| f == flag) {
                Some(slot) => slot.1 = value,
                None => flags.push((flag, value)),
            }
        }
        RunConfig::from_args(flags.into_iter().flat_map(|(f, v)| [f, v]))
            .expect("valid operator configuration")
    }

    /// Starts an operator replica with `cfg`.
    pub async fn operator(&self, cfg: RunConfig) -> Operator {
        let client = self.kube.client().await;
        let shutdown = CancellationToken::new();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let token = shutdown.clone();
        let task = tokio::spawn(async move {
            terarchitect_operator::run(cfg, client, token, move |running| {
                let _ = tx.send(running);
            })
            .await
            .expect("the operator runs without error");
        });
        let running = tokio::time::timeout(WAIT, rx)
            .await
            .expect("the operator starts")
            .expect("the operator reports its start");
        Operator {
            shutdown,
            task,
            metrics: running.metrics,
            http_addr: running.http_addr,
        }
    }

    /// A request to the api-server's app API, asserting a 2xx answer.
    pub async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        self.app.call(method, path, body).await
    }

    /// Creates a project with a graph node (an existing repository, so no setup ticket).
    pub async fn project(&self) -> Uuid {
        self.app.project().await
    }

    /// Creates a backlog ticket.
    pub async fn ticket(&self, project: Uuid) -> Uuid {
        self.app.ticket(project).await
    }

    /// Moves a ticket to In Progress and returns the queue job it enqueued.
    pub async fn start_ticket(&self, project: Uuid, ticket: Uuid) -> Uuid {
        self.app.start_ticket(project, ticket).await
    }

    /// A new ticket, started; returns (ticket, queue job).
    pub async fn queued_ticket(&self, project: Uuid) -> (Uuid, Uuid) {
        let ticket = self.ticket(project).await;
        (ticket, self.start_ticket(project, ticket).await)
    }

    /// Waits until AgentJob `name`'s agent pod runs.
    pub async fn wait_running(&self, name: &str) {
        self.wait_agentjob(name, "running", |aj| {
            aj.phase() == terarchitect_operator::crd::Phase::Running
        })
        .await;
    }

    /// A new ticket, started and its agent running; returns (ticket, queue job, AgentJob name).
    pub async fn running_ticket(&self, project: Uuid) -> (Uuid, Uuid, String) {
        let (ticket, job_id) = self.queued_ticket(project).await;
        let name = agentjob_name(job_id);
        self.wait_running(&name).await;
        (ticket, job_id, name)
    }

    /// Sets api-server settings.
    pub async fn settings(&self, body: Value) {
        self.call(reqwest::Method::PUT, "/api/settings", Some(body))
            .await;
    }

    /// The queue job's state.
    pub async fn job(&self, id: Uuid) -> JobState {
        self.worker.job(id).await.expect("queue job exists")
    }

    /// Waits until the queue job reaches a final state and returns it.
    pub async fn finished_job(&self, id: Uuid) -> JobState {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let job = self.job(id).await;
            if matches!(job.status, JobStatus::Completed | JobStatus::Failed) {
                return job;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "queue job {id} still {:?}",
                job.status
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The AgentJob named `name`, if any.
    pub fn agentjob(&self, name: &str) -> Option<AgentJob> {
        self.kube.get::<AgentJob>(NS, name)
    }

    /// Waits until `check` holds for AgentJob `name` and returns it.
    pub async fn wait_agentjob(
        &self,
        name: &str,
        what: &str,
        check: impl Fn(&AgentJob) -> bool,
    ) -> AgentJob {
        self.kube
            .wait_for(WAIT, |c| c.get::<AgentJob>(NS, name).filter(|aj| check(aj)))
            .await
            .unwrap_or_else(|| {
                panic!(
                    "AgentJob {name}: {what} did not happen; now {:?}",
                    self.agentjob(name).map(|aj| aj.status)
                )
            })
    }

    /// Waits until a condition on the fake cluster holds.
    pub async fn wait_until(&self, what: &str, check: impl Fn(&FakeApiServer) -> bool) {
        let ok = self
            .kube
            .wait_for(WAIT, |_| check(&self.kube).then_some(()))
            .await;
        assert!(ok.is_some(), "{what} did not happen");
    }
}

/// Name of the AgentJob of queue job `id`.
pub fn agentjob_name(id: Uuid) -> String {
    terarchitect_operator::dispatcher::agentjob_name(id)
}

/// An AgentJob as a person would `kubectl apply` it, in the test namespace.
pub fn hand_made(name: &str, spec: AgentJobSpec) -> AgentJob {
    let mut aj = AgentJob::new(name, spec);
    aj.metadata.namespace = Some(NS.into());
    aj
}

/// The smallest valid spec of a hand-applied AgentJob of `kind`.
pub fn hand_made_spec(kind: AgentJobKind) -> AgentJobSpec {
    AgentJobSpec {
        project_id: Uuid::new_v4().to_string(),
        ticket_id: Uuid::new_v4().to_string(),
        kind,
        repo_url: "https://github.com/acme/shop".into(),
        queue_job_id: None,
        attempt: None,
        review: None,
        image: None,
        resources: None,
        timeout_seconds: None,
        ttl_seconds_after_finished: None,
        env_from_secrets: vec![],
        pod_template: None,
        cancel: false,
    }
}
