//! The dispatcher: claims queued jobs when an agent slot is free and turns each claim into an
//! AgentJob (named after the job id, so a retry can never create a second one) and a Secret
//! with the claim's agent environment, owned by the AgentJob.
//!
//! It counts live AgentJobs (not an in-memory counter), re-reads MAX_CONCURRENT_AGENTS from the
//! api-server every cycle, serves several projects round-robin, long-polls servers that offer
//! it and polls every POLL_INTERVAL_SEC otherwise.

use std::collections::BTreeMap;
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

use crate::config::{RunConfig, parse_max_concurrent};
use crate::context::SharedContext;
use crate::crd::{AgentJob, AgentJobKind, AgentJobSpec, ReviewSpec};
use crate::job_builder::{
    LABEL_AGENTJOB, LABEL_MANAGED_BY, LABEL_PROJECT, LABEL_QUEUE_JOB, LABEL_TICKET, MANAGER,
    env_secret_name,
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
    pub worker_api_key: Option<String>,
    pub github_token: Option<String>,
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
            worker_api_key: cfg.worker_api_key.clone().filter(|k| !k.trim().is_empty()),
            github_token: cfg.fallback_github_token().map(str::to_owned),
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

/// The claim loop.
pub struct Dispatcher {
    ctx: SharedContext,
    cfg: DispatchConfig,
    store: Store<AgentJob>,
    next_project: usize,
    extensions: Option<bool>,
    max_concurrent: Option<usize>,
    /// Claims whose objects could not be created yet (retried before claiming more).
    unmaterialized: Vec<ClaimedJob>,
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
            unmaterialized: Vec::new(),
        }
    }

    /// MAX_CONCURRENT_AGENTS from the api-server's settings, else the configured fallback.
    async fn max_concurrent(&mut self) -> usize {
        let value = match self.ctx.api.settings().await {
            Ok(settings) => parse_max_concurrent(settings.get("MAX_CONCURRENT_AGENTS")),
            Err(e) => {
                tracing::debug!(error = %e, "cannot read settings; using the configured MAX_CONCURRENT_AGENTS");
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
        let n = self.cfg.projects.len();
        for i in 0..n {
            let idx = (self.next_project + i) % n;
            let req = self.request(Some(self.cfg.projects[idx]), None, 0);
            if let Some(job) = self.claim(&req).await? {
                self.next_project = (idx + 1) % n;
                return Ok(Some(job));
            }
        }
        if self.extensions == Some(true) && self.cfg.claim_wait > 0 {
            let req = self.request(None, Some(self.cfg.projects.clone()), self.cfg.claim_wait);
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
        let ns = &self.ctx.namespace;
        let agentjobs: Api<AgentJob> = Api::namespaced(self.ctx.client.clone(), ns);
        let secret_name = env_secret_name(&name);
        let labels = BTreeMap::from([
            (LABEL_MANAGED_BY.to_owned(), MANAGER.to_owned()),
            (LABEL_PROJECT.to_owned(), job.project_id.to_string()),
            (LABEL_TICKET.to_owned(), job.ticket_id.to_string()),
            (LABEL_QUEUE_JOB.to_owned(), job.job_id.to_string()),
        ]);
        let mut annotations = BTreeMap::new();
        if let Some(created) = job.created_at {
            annotations.insert(ANNOTATION_ENQUEUED_AT.to_owned(), created.to_rfc3339());
        }
        let mut aj = AgentJob::new(
            &name,
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
                env_from_secrets: vec![secret_name.clone()],
                cancel: false,
            },
        );
        aj.metadata.namespace = Some(ns.clone());
        aj.metadata.labels = Some(labels.clone());
        aj.metadata.annotations = Some(annotations);
        let created = match agentjobs.create(&PostParams::default(), &aj).await {
            Ok(created) => created,
            Err(kube::Error::Api(e)) if e.code == 409 => {
                // A retried or re-queued claim: keep the run, record the new attempt.
                let patch = json!({"spec": {"attempt": job.attempt}});
                agentjobs
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await?
            }
            Err(e) => return Err(e.into()),
        };

        // The claim's environment (settings and secrets), with the operator's own token and
        // GitHub token as fallbacks, as the coordinator did. Only ever in a Secret.
        let mut env: BTreeMap<String, String> = job.agent_env.clone().unwrap_or_default();
        env.retain(|_, v| !v.trim().is_empty());
        let fallbacks = [
            (
                "TERARCHITECT_WORKER_API_KEY",
                self.cfg.worker_api_key.as_deref(),
            ),
            ("GITHUB_TOKEN", self.cfg.github_token.as_deref()),
            ("GH_TOKEN", self.cfg.github_token.as_deref()),
        ];
        for (key, value) in fallbacks {
            if let Some(v) = value {
                env.entry(key.to_owned()).or_insert_with(|| v.to_owned());
            }
        }
        let mut secret_labels = labels;
        secret_labels.insert(LABEL_AGENTJOB.to_owned(), name.clone());
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(secret_name.clone()),
                namespace: Some(ns.clone()),
                labels: Some(secret_labels),
                owner_references: created.controller_owner_ref(&()).map(|o| vec![o]),
                ..Default::default()
            },
            type_: Some("Opaque".to_owned()),
            data: Some(
                env.into_iter()
                    .map(|(k, v)| (k, ByteString(v.into_bytes())))
                    .collect(),
            ),
            ..Default::default()
        };
        let secrets: Api<Secret> = Api::namespaced(self.ctx.client.clone(), ns);
        secrets
            .patch(
                &secret_name,
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(&secret),
            )
            .await?;
        tracing::info!(agentjob = %name, queue_job = %job.job_id, ticket = %job.ticket_id, kind = %job.kind, attempt = ?job.attempt, "dispatched claim");
        Ok(created.name_any())
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
                self.ctx.inflight.lock().expect("poisoned").insert(name);
            }
            Err(e) => {
                tracing::warn!(queue_job = %job.job_id, error = %e, "cannot create the AgentJob yet; will retry");
                self.unmaterialized.push(job);
            }
        }
    }

    /// Runs until `shutdown`.
    pub async fn run(mut self, shutdown: CancellationToken) {
        tokio::select! {
            _ = self.store.wait_until_ready() => {}
            _ = shutdown.cancelled() => return,
        }
        let mut error_delay = Duration::from_millis(500);
        while !shutdown.is_cancelled() {
            // Claims already made come first: they hold a lease and a slot.
            if !self.unmaterialized.is_empty() {
                for job in std::mem::take(&mut self.unmaterialized) {
                    self.dispatch(job).await;
                }
                if !self.unmaterialized.is_empty() {
                    tokio::select! {
                        _ = tokio::time::sleep(error_delay) => {}
                        _ = shutdown.cancelled() => return,
                    }
                    error_delay = (error_delay * 2).min(Duration::from_secs(30));
                    continue;
                }
            }
            let ctx = Arc::clone(&self.ctx);
            let freed = ctx.capacity.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            let max = self.max_concurrent().await;
            if live_agentjobs(&self.store, &self.ctx) >= max {
                tokio::select! {
                    _ = &mut freed => {}
                    _ = tokio::time::sleep(self.cfg.poll_interval.max(Duration::from_millis(100))) => {}
                    _ = shutdown.cancelled() => return,
                }
                continue;
            }
            let claimed = tokio::select! {
                r = self.claim_next() => r,
                _ = shutdown.cancelled() => return,
            };
            match claimed {
                Ok(Some(job)) => {
                    error_delay = Duration::from_millis(500);
                    self.dispatch(job).await;
                }
                Ok(None) => {
                    // A long poll already waited; a plain poll waits POLL_INTERVAL_SEC.
                    if self.extensions != Some(true) || self.cfg.claim_wait == 0 {
                        tokio::select! {
                            _ = tokio::time::sleep(self.cfg.poll_interval) => {}
                            _ = shutdown.cancelled() => return,
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?error_delay, "claim failed");
                    tokio::select! {
                        _ = tokio::time::sleep(error_delay) => {}
                        _ = shutdown.cancelled() => return,
                    }
                    error_delay =
                        (error_delay * 2).min(self.cfg.poll_interval.max(Duration::from_secs(1)));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::agentjob_name;

    #[test]
    fn names_follow_the_job_id() {
        let id = uuid::Uuid::parse_str("6f1c9a9e-8d4b-4c1e-9b55-1d2f3a4b5c6d").unwrap();
        assert_eq!(agentjob_name(id), "aj-6f1c9a9e-8d4b-4c1e-9b55-1d2f3a4b5c6d");
    }
}
