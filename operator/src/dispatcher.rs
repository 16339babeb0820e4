//! The dispatcher: claims queued jobs when an agent slot is free and turns each claim into an
//! AgentJob (named after the job id, so a retry can never create a second one) and a Secret
//! with the claim's agent environment, owned by the AgentJob.
//!
//! It counts live AgentJobs (not an in-memory counter), re-reads MAX_CONCURRENT_AGENTS from the
//! api-server every cycle, serves several projects round-robin, long-polls servers that offer
//! it and polls every POLL_INTERVAL_SEC otherwise.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::reflector::Store;
use kube::{Resource, ResourceExt};
use serde_json::json;
use terarchitect_worker_api::{ClaimRequest, ClaimedJob, FailRequest, JobKind, WorkerApiError};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::config::{RunConfig, SecretValue, parse_max_concurrent};
use crate::context::SharedContext;
use crate::crd::{AgentJob, AgentJobKind, AgentJobSpec, ReviewSpec};
use crate::job_builder::{
    ANNOTATION_SECRET_ATTEMPT, LABEL_AGENTJOB, LABEL_MANAGED_BY, LABEL_PROJECT, LABEL_QUEUE_JOB,
    LABEL_TICKET, MANAGER, env_secret_name,
};
use crate::reconciler::{ANNOTATION_ENQUEUED_AT, live_agentjobs};

/// The AgentJob name of a queue job.
pub fn agentjob_name(job_id: Uuid) -> String {
    format!("aj-{job_id}")
}

/// Dispatcher settings.
#[derive(Debug, Clone)]
pub struct DispatchConfig {
    pub projects: Vec<Uuid>,
    pub max_concurrent_fallback: usize,
    pub poll_interval: Duration,
    pub claim_wait: u32,
    pub lease_seconds: u32,
    pub worker_api_key: Option<SecretValue>,
    pub github_token: Option<SecretValue>,
    /// Agents of one project at once (`None`: no per-project limit).
    pub per_project_cap: Option<usize>,
}

impl DispatchConfig {
    /// From the operator's configuration.
    pub fn from_config(cfg: &RunConfig) -> Result<Self, crate::config::ConfigError> {
        Ok(Self {
            projects: cfg.projects()?,
            max_concurrent_fallback: cfg.max_concurrent_fallback(),
            poll_interval: cfg.poll_interval(),
            claim_wait: cfg.claim_wait_sec,
            lease_seconds: cfg.job_lease_sec,
            worker_api_key: cfg.worker_api_key().map(SecretValue::from),
            github_token: cfg.fallback_github_token().map(SecretValue::from),
            per_project_cap: (cfg.max_concurrent_agents_per_project > 0)
                .then_some(cfg.max_concurrent_agents_per_project),
        })
    }
}

/// Errors turning a claim into Kubernetes objects (retried).
#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    /// A Kubernetes call failed.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// A worker API call failed.
    #[error("worker API: {0}")]
    Api(#[from] WorkerApiError),
}

/// Labels of a claim's AgentJob and Secret.
fn claim_labels(job: &ClaimedJob) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_MANAGED_BY.to_owned(), MANAGER.to_owned()),
        (LABEL_PROJECT.to_owned(), job.project_id.to_string()),
        (LABEL_TICKET.to_owned(), job.ticket_id.to_string()),
        (LABEL_QUEUE_JOB.to_owned(), job.job_id.to_string()),
    ])
}

/// The AgentJob spec of a claim: what to run, never a secret (those go to `secret_name`).
fn agentjob_spec(job: &ClaimedJob, secret_name: String) -> AgentJobSpec {
    AgentJobSpec {
        project_id: job.project_id.to_string(),
        ticket_id: job.ticket_id.to_string(),
        kind: match job.kind {
            JobKind::Ticket => AgentJobKind::Ticket,
            JobKind::Review => AgentJobKind::Review,
        },
        repo_url: job.repo_url.clone(),
        queue_job_id: Some(job.job_id.to_string()),
        attempt: job.attempt,
        review: job.review.as_ref().map(|r| ReviewSpec {
            pr_number: r.pr_number,
            comment_body: r.comment_body.clone(),
            github_comment_id: r.github_comment_id,
        }),
        image: None,
        resources: None,
        timeout_seconds: None,
        ttl_seconds_after_finished: None,
        env_from_secrets: vec![secret_name],
        pod_template: None,
        cancel: false,
    }
}

/// The agent's environment for a claim: the claim's `agent_env` (settings and secrets), the
/// claim's run token as `TERARCHITECT_WORKER_API_KEY`, and the operator's GitHub token as a
/// fallback. Only a server that mints no run tokens (the original app) gets the operator's own
/// worker key handed to the agent, as the original coordinator did.
pub fn agent_env(job: &ClaimedJob, cfg: &DispatchConfig) -> BTreeMap<String, String> {
    let mut env: BTreeMap<String, String> = job.agent_env.clone().unwrap_or_default();
    env.retain(|_, v| !v.trim().is_empty());
    let run_token = job.run_token.as_deref().filter(|t| !t.trim().is_empty());
    if let Some(token) = run_token {
        env.insert(WORKER_KEY_ENV.to_owned(), token.to_owned());
    }
    // Without a run token: the operator's own key, as the original coordinator did.
    let worker_key = match run_token {
        Some(_) => None,
        None => cfg.worker_api_key.as_ref().map(SecretValue::expose),
    };
    let fallbacks = [
        (WORKER_KEY_ENV, worker_key),
        (
            "GITHUB_TOKEN",
            cfg.github_token.as_ref().map(SecretValue::expose),
        ),
        (
            "GH_TOKEN",
            cfg.github_token.as_ref().map(SecretValue::expose),
        ),
    ];
    for (key, value) in fallbacks {
        if let Some(v) = value {
            env.entry(key.to_owned()).or_insert_with(|| v.to_owned());
        }
    }
    env
}

/// The agent's variable for its worker API bearer token.
pub const WORKER_KEY_ENV: &str = "TERARCHITECT_WORKER_API_KEY";

/// The claim loop.
pub struct Dispatcher {
    ctx: SharedContext,
    cfg: DispatchConfig,
    store: Store<AgentJob>,
    next_project: usize,
    extensions: Option<bool>,
    max_concurrent: Option<usize>,
    /// Whether the last settings read was refused (401/403), to warn once.
    settings_refused: bool,
    /// Claims whose objects could not be created yet (retried before claiming more).
    unmaterialized: Vec<ClaimedJob>,
    /// The project of each AgentJob this dispatcher created (for per-project caps while the
    /// watch cache does not show it yet).
    dispatched: HashMap<String, Uuid>,
    /// Why claiming is paused, as last logged.
    paused: Option<Pause>,
}

/// Why the dispatcher claims nothing although the global limit has room.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Pause {
    /// Agent pods wait for room in the cluster (backpressure).
    Unschedulable { pods: usize, example: String },
    /// Every served project has its per-project limit of agents.
    ProjectCaps,
}

impl Dispatcher {
    /// A dispatcher reading live AgentJobs from `store`.
    pub fn new(ctx: SharedContext, cfg: DispatchConfig, store: Store<AgentJob>) -> Self {
        Self {
            ctx,
            cfg,
            store,
            next_project: 0,
            extensions: None,
            max_concurrent: None,
            settings_refused: false,
            unmaterialized: Vec::new(),
            dispatched: HashMap::new(),
            paused: None,
        }
    }

    /// Live agents per project: the watch cache's live AgentJobs plus those this replica just
    /// created.
    fn agents_per_project(&mut self) -> HashMap<Uuid, usize> {
        let state = self.store.state();
        let inflight = self.ctx.inflight.lock().expect("poisoned").clone();
        self.dispatched.retain(|name, _| inflight.contains(name));
        let mut load: HashMap<Uuid, usize> = HashMap::new();
        for aj in state.iter().filter(|aj| aj.is_live()) {
            if let Ok(project) = aj.spec.project_id.parse() {
                *load.entry(project).or_default() += 1;
            }
        }
        for (name, project) in &self.dispatched {
            if !state.iter().any(|aj| &aj.name_any() == name) {
                *load.entry(*project).or_default() += 1;
            }
        }
        load
    }

    /// The served projects below their per-project limit (all of them without one).
    fn open_projects(&mut self) -> Vec<Uuid> {
        let Some(cap) = self.cfg.per_project_cap else {
            return self.cfg.projects.clone();
        };
        let load = self.agents_per_project();
        self.cfg
            .projects
            .iter()
            .filter(|p| load.get(p).copied().unwrap_or(0) < cap)
            .copied()
            .collect()
    }

    /// Why claiming must pause although a global slot is free: agent pods waiting for room in
    /// the cluster, or every project at its limit.
    fn pause_reason(&mut self) -> Option<Pause> {
        let waiting: Vec<_> = self
            .store
            .state()
            .into_iter()
            .filter(|aj| aj.waits_for_room())
            .collect();
        self.ctx
            .metrics
            .unschedulable_agents
            .set(waiting.len() as i64);
        if let Some(first) = waiting.first() {
            let example = first
                .condition(crate::crd::CONDITION_SCHEDULED)
                .map(|c| c.message.clone())
                .unwrap_or_default();
            return Some(Pause::Unschedulable {
                pods: waiting.len(),
                example,
            });
        }
        if self.cfg.per_project_cap.is_some() && self.open_projects().is_empty() {
            return Some(Pause::ProjectCaps);
        }
        None
    }

    /// Logs (once per change) and exposes why claiming is paused.
    fn set_paused(&mut self, pause: Option<Pause>) {
        let backpressure = matches!(pause, Some(Pause::Unschedulable { .. }));
        self.ctx.metrics.claims_paused.set(i64::from(backpressure));
        let changed = match (&self.paused, &pause) {
            (Some(Pause::Unschedulable { .. }), Some(Pause::Unschedulable { .. })) => false,
            (a, b) => a != b,
        };
        if changed {
            match &pause {
                Some(Pause::Unschedulable { pods, example }) => tracing::warn!(
                    unschedulable_pods = pods,
                    scheduler = %example,
                    "not claiming new jobs: agent pods wait for room in the cluster"
                ),
                Some(Pause::ProjectCaps) => tracing::info!(
                    cap = ?self.cfg.per_project_cap,
                    "not claiming new jobs: every project has its MAX_CONCURRENT_AGENTS_PER_PROJECT agents"
                ),
                None => tracing::info!("claiming resumes"),
            }
        }
        self.paused = pause;
    }

    /// MAX_CONCURRENT_AGENTS from the api-server's settings (read with the admin token, if
    /// any), else the configured fallback. A refused read (401/403: admin auth on, and no or a
    /// wrong admin token) is logged as a warning once, and dispatching carries on.
    async fn max_concurrent(&mut self) -> usize {
        let value = match self.ctx.admin_api.settings().await {
            Ok(settings) => {
                self.settings_refused = false;
                parse_max_concurrent(settings.get("MAX_CONCURRENT_AGENTS"))
            }
            Err(e) => {
                self.settings_unreadable(&e);
                None
            }
        };
        let max = value.unwrap_or(self.cfg.max_concurrent_fallback);
        if self.max_concurrent != Some(max) {
            tracing::info!(max_concurrent_agents = max, "agent slots");
            self.max_concurrent = Some(max);
        }
        max
    }

    fn settings_unreadable(&mut self, e: &WorkerApiError) {
        let refused = matches!(e.status().map(|s| s.as_u16()), Some(401 | 403));
        if refused && !self.settings_refused {
            tracing::warn!(
                error = %e,
                fallback = self.cfg.max_concurrent_fallback,
                "the api-server refused GET /api/settings: give the operator the api-server's admin token (TERARCHITECT_ADMIN_TOKEN); using MAX_CONCURRENT_AGENTS from the operator's own configuration meanwhile"
            );
        } else if !refused {
            tracing::debug!(error = %e, "cannot read settings; using the configured MAX_CONCURRENT_AGENTS");
        }
        self.settings_refused = refused;
    }

    fn request(
        &self,
        project_id: Option<Uuid>,
        project_ids: Option<Vec<Uuid>>,
        wait: u32,
    ) -> ClaimRequest {
        ClaimRequest {
            project_id,
            project_ids,
            wait_seconds: (wait > 0).then_some(wait),
            lease_seconds: Some(self.cfg.lease_seconds),
        }
    }

    async fn claim(&mut self, req: &ClaimRequest) -> Result<Option<ClaimedJob>, WorkerApiError> {
        let outcome = self.ctx.api.claim_job(req).await;
        match &outcome {
            Ok(o) => {
                if self.extensions != Some(o.server_extensions) {
                    tracing::info!(
                        long_poll = o.server_extensions,
                        "worker API queue protocol detected"
                    );
                    self.extensions = Some(o.server_extensions);
                }
                self.ctx
                    .metrics
                    .claim(if o.job.is_some() { "claimed" } else { "empty" });
            }
            Err(_) => self.ctx.metrics.claim("error"),
        }
        Ok(outcome?.job)
    }

    /// Claims the next job: round-robin over the configured projects without waiting, then a
    /// long poll over all of them (when the server supports it).
    async fn claim_next(&mut self) -> Result<Option<ClaimedJob>, WorkerApiError> {
        let long_poll = self.extensions != Some(false);
        if self.cfg.projects.is_empty() {
            let req = self.request(None, None, if long_poll { self.cfg.claim_wait } else { 0 });
            return self.claim(&req).await;
        }
        let open = self.open_projects();
        let n = self.cfg.projects.len();
        for i in 0..n {
            let idx = (self.next_project + i) % n;
            if !open.contains(&self.cfg.projects[idx]) {
                continue;
            }
            let req = self.request(Some(self.cfg.projects[idx]), None, 0);
            if let Some(job) = self.claim(&req).await? {
                self.next_project = (idx + 1) % n;
                return Ok(Some(job));
            }
        }
        if self.extensions == Some(true) && self.cfg.claim_wait > 0 && !open.is_empty() {
            let req = self.request(None, Some(open), self.cfg.claim_wait);
            if let Some(job) = self.claim(&req).await? {
                if let Some(idx) = self.cfg.projects.iter().position(|p| *p == job.project_id) {
                    self.next_project = (idx + 1) % n;
                }
                return Ok(Some(job));
            }
        }
        Ok(None)
    }

    /// Creates (or adopts) the AgentJob of a claim and the Secret with its environment.
    async fn materialize(&self, job: &ClaimedJob) -> Result<String, DispatchError> {
        let name = agentjob_name(job.job_id);
        let labels = claim_labels(job);
        let created = self.create_or_adopt(job, &name, &labels).await?;
        self.apply_env_secret(job, &created, labels).await?;
        tracing::info!(agentjob = %name, queue_job = %job.job_id, ticket = %job.ticket_id, kind = %job.kind, attempt = ?job.attempt, run_token = job.run_token.is_some(), "dispatched claim");
        Ok(created.name_any())
    }

    /// Creates the claim's AgentJob; a retried or re-queued claim keeps the existing run and
    /// records the new attempt.
    async fn create_or_adopt(
        &self,
        job: &ClaimedJob,
        name: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<AgentJob, DispatchError> {
        let agentjobs: Api<AgentJob> =
            Api::namespaced(self.ctx.client.clone(), &self.ctx.namespace);
        let mut aj = AgentJob::new(name, agentjob_spec(job, env_secret_name(name)));
        aj.metadata.namespace = Some(self.ctx.namespace.clone());
        aj.metadata.labels = Some(labels.clone());
        aj.metadata.annotations = Some(
            job.created_at
                .map(|created| (ANNOTATION_ENQUEUED_AT.to_owned(), created.to_rfc3339()))
                .into_iter()
                .collect(),
        );
        match agentjobs.create(&PostParams::default(), &aj).await {
            Ok(created) => Ok(created),
            Err(kube::Error::Api(e)) if e.code == 409 => {
                let patch = json!({"spec": {"attempt": job.attempt}});
                Ok(agentjobs
                    .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await?)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Writes the Secret `<agentjob>-env` with the claim's environment, owned by the AgentJob
    /// (server-side apply, so a re-claim replaces the run token).
    async fn apply_env_secret(
        &self,
        job: &ClaimedJob,
        owner: &AgentJob,
        mut labels: BTreeMap<String, String>,
    ) -> Result<(), DispatchError> {
        let name = owner.name_any();
        let secret_name = env_secret_name(&name);
        labels.insert(LABEL_AGENTJOB.to_owned(), name);
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(secret_name.clone()),
                namespace: Some(self.ctx.namespace.clone()),
                labels: Some(labels),
                annotations: job.attempt.map(|attempt| {
                    BTreeMap::from([(ANNOTATION_SECRET_ATTEMPT.to_owned(), attempt.to_string())])
                }),
                owner_references: owner.controller_owner_ref(&()).map(|o| vec![o]),
                ..Default::default()
            },
            type_: Some("Opaque".to_owned()),
            data: Some(
                agent_env(job, &self.cfg)
                    .into_iter()
                    .map(|(k, v)| (k, ByteString(v.into_bytes())))
                    .collect(),
            ),
            ..Default::default()
        };
        let secrets: Api<Secret> = Api::namespaced(self.ctx.client.clone(), &self.ctx.namespace);
        secrets
            .patch(
                &secret_name,
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(&secret),
            )
            .await?;
        Ok(())
    }

    /// Handles one claim: local-mode jobs cannot run here and fail at once; others become an
    /// AgentJob, retried later if Kubernetes refuses for now.
    async fn dispatch(&mut self, job: ClaimedJob) {
        if job.execution_mode == "local" {
            let req = FailRequest {
                reason: Some("UnsupportedExecutionMode".into()),
                message: Some("the Kubernetes operator runs docker-mode projects only; local execution needs the host".into()),
                attempt: job.attempt,
            };
            if let Err(e) = self.ctx.api.fail_job(job.job_id, &req).await {
                tracing::warn!(queue_job = %job.job_id, error = %e, "cannot fail a local-mode job");
            }
            return;
        }
        match self.materialize(&job).await {
            Ok(name) => {
                self.dispatched.insert(name.clone(), job.project_id);
                self.ctx.inflight.lock().expect("poisoned").insert(name);
            }
            Err(e) => {
                tracing::warn!(queue_job = %job.job_id, error = %e, "cannot create the AgentJob yet; will retry");
                self.unmaterialized.push(job);
            }
        }
    }

    /// Dispatches the claims whose objects could not be created before; true when none is
    /// left over.
    async fn retry_unmaterialized(&mut self) -> bool {
        for job in std::mem::take(&mut self.unmaterialized) {
            self.dispatch(job).await;
        }
        self.unmaterialized.is_empty()
    }

    /// Whether an agent slot is free; when none is, waits until one frees up or the poll
    /// interval passes.
    async fn slot_free(&mut self, shutdown: &CancellationToken) -> bool {
        let ctx = Arc::clone(&self.ctx);
        let freed = ctx.capacity.notified();
        tokio::pin!(freed);
        freed.as_mut().enable();
        let max = self.max_concurrent().await;
        if live_agentjobs(&self.store, &self.ctx) < max {
            let pause = self.pause_reason();
            let free = pause.is_none();
            self.set_paused(pause);
            if free {
                return true;
            }
        }
        tokio::select! {
            _ = &mut freed => {}
            _ = tokio::time::sleep(self.cfg.poll_interval.max(Duration::from_millis(100))) => {}
            _ = shutdown.cancelled() => {}
        }
        false
    }

    /// Claims one job and dispatches it; returns how long to pause before the next claim.
    async fn claim_once(
        &mut self,
        shutdown: &CancellationToken,
        error_delay: &mut Duration,
    ) -> Duration {
        let claimed = tokio::select! {
            r = self.claim_next() => r,
            _ = shutdown.cancelled() => return Duration::ZERO,
        };
        match claimed {
            Ok(Some(job)) => {
                *error_delay = FIRST_ERROR_DELAY;
                self.dispatch(job).await;
                Duration::ZERO
            }
            // A long poll already waited; a plain poll waits POLL_INTERVAL_SEC.
            Ok(None) if self.extensions == Some(true) && self.cfg.claim_wait > 0 => Duration::ZERO,
            Ok(None) => self.cfg.poll_interval,
            Err(e) => {
                let delay = *error_delay;
                tracing::warn!(error = %e, retry_in = ?delay, "claim failed");
                *error_delay = (delay * 2).min(self.cfg.poll_interval.max(Duration::from_secs(1)));
                delay
            }
        }
    }

    /// Runs until `shutdown`.
    pub async fn run(mut self, shutdown: CancellationToken) {
        tokio::select! {
            _ = self.store.wait_until_ready() => {}
            _ = shutdown.cancelled() => return,
        }
        let mut retry_delay = FIRST_ERROR_DELAY;
        let mut error_delay = FIRST_ERROR_DELAY;
        while !shutdown.is_cancelled() {
            // Claims already made come first: they hold a lease and a slot.
            if !self.retry_unmaterialized().await {
                if pause(retry_delay, &shutdown).await {
                    return;
                }
                retry_delay = (retry_delay * 2).min(Duration::from_secs(30));
                continue;
            }
            retry_delay = FIRST_ERROR_DELAY;
            if !self.slot_free(&shutdown).await {
                continue;
            }
            let delay = self.claim_once(&shutdown, &mut error_delay).await;
            if !delay.is_zero() && pause(delay, &shutdown).await {
                return;
            }
        }
    }
}

/// First delay after a failure (doubled on each further one).
const FIRST_ERROR_DELAY: Duration = Duration::from_millis(500);

/// Sleeps for `delay`; true when `shutdown` came first.
async fn pause(delay: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(delay) => false,
        _ = shutdown.cancelled() => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(run_token: Option<&str>) -> ClaimedJob {
        serde_json::from_value(json!({
            "job_id": Uuid::new_v4(),
            "ticket_id": Uuid::new_v4(),
            "project_id": Uuid::new_v4(),
            "kind": "ticket",
            "repo_url": "https://github.com/acme/shop",
            "agent_env": {"GITHUB_TOKEN": "ghp_claim", "AGENT_API_KEY": "sk-director", "BLANK": " "},
            "run_token": run_token,
        }))
        .unwrap()
    }

    fn config() -> DispatchConfig {
        let cfg = RunConfig::from_args([
            "--api-url",
            "http://api",
            "--worker-api-key",
            "operator-key",
            "--github-token",
            "ghp_operator",
        ])
        .unwrap();
        DispatchConfig::from_config(&cfg).unwrap()
    }

    #[test]
    fn agents_get_the_run_token_never_the_operator_key() {
        let env = agent_env(&claim(Some("rt-123")), &config());
        assert_eq!(env[WORKER_KEY_ENV], "rt-123");
        assert_eq!(env["GITHUB_TOKEN"], "ghp_claim", "the claim's token wins");
        assert_eq!(env["GH_TOKEN"], "ghp_operator");
        assert_eq!(env["AGENT_API_KEY"], "sk-director");
        assert!(!env.contains_key("BLANK"));
        assert!(!env.values().any(|v| v == "operator-key"), "{env:?}");
        let debug = format!("{:?} {:?}", config(), claim(Some("rt-123")));
        assert!(
            !debug.contains("operator-key") && !debug.contains("rt-123"),
            "{debug}"
        );
    }

    #[test]
    fn without_a_run_token_the_coordinators_behaviour_stays() {
        let env = agent_env(&claim(None), &config());
        assert_eq!(env[WORKER_KEY_ENV], "operator-key");
        let env = agent_env(&claim(Some("  ")), &config());
        assert_eq!(
            env[WORKER_KEY_ENV], "operator-key",
            "a blank token is no token"
        );
    }

    #[test]
    fn names_follow_the_job_id() {
        let id = uuid::Uuid::parse_str("6f1c9a9e-8d4b-4c1e-9b55-1d2f3a4b5c6d").unwrap();
        assert_eq!(agentjob_name(id), "aj-6f1c9a9e-8d4b-4c1e-9b55-1d2f3a4b5c6d");
    }
}
