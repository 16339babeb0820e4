//! State shared by the reconciler, the dispatcher and the watchdog.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::Client;
use kube::runtime::events::{Recorder, Reporter};
use terarchitect_worker_api::WorkerApiClient;
use tokio::sync::Notify;

use crate::job_builder::{JobDefaults, MANAGER};
use crate::metrics::Metrics;

/// Shared operator state. The capacity bookkeeping here only bridges the short lag between a
/// write and its appearance in the AgentJob watch cache; the live AgentJobs themselves are
/// always the source of truth.
pub struct Context {
    /// Kubernetes client.
    pub client: Client,
    /// Namespace of AgentJobs, Jobs and Secrets.
    pub namespace: String,
    /// Worker API client.
    pub api: WorkerApiClient,
    /// Defaults of agent Jobs.
    pub defaults: JobDefaults,
    /// Event recorder.
    pub recorder: Recorder,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Client for non-worker endpoints (`GET /api/settings`): carries the admin token, or no
    /// token at all, never the worker key.
    pub admin_api: WorkerApiClient,
    /// How long an agent pod may stay pending with a problem.
    pub pending_timeout: Duration,
    /// How long an agent pod may wait for room in the cluster.
    pub unschedulable_timeout: Duration,
    /// Default retention of finished AgentJobs (`None`: kept forever).
    pub agentjob_ttl: Option<Duration>,
    /// Notified whenever a run finishes (a slot frees up).
    pub capacity: Notify,
    /// AgentJobs this replica created that the watch cache may not show yet.
    pub inflight: Mutex<HashSet<String>>,
    /// AgentJobs this replica finished that the watch cache may still show as live.
    pub finished: Mutex<HashSet<String>>,
    /// Consecutive reconcile failures per AgentJob, for backoff.
    pub failures: Mutex<HashMap<String, u32>>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

/// The api-server clients of a [`Context`].
#[derive(Debug, Clone)]
pub struct ApiClients {
    /// Worker endpoints, with the worker key.
    pub worker: WorkerApiClient,
    /// Non-worker endpoints, with the admin token (if any).
    pub admin: WorkerApiClient,
}

/// Timing settings of a [`Context`].
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// How long an agent pod may stay pending with a problem.
    pub pending_timeout: Duration,
    /// How long an agent pod may wait for room in the cluster.
    pub unschedulable_timeout: Duration,
    /// Default retention of finished AgentJobs (`None`: kept forever).
    pub agentjob_ttl: Option<Duration>,
}

impl Context {
    /// A context for `namespace`.
    pub fn new(
        client: Client,
        namespace: String,
        apis: ApiClients,
        defaults: JobDefaults,
        metrics: Arc<Metrics>,
        timing: Timing,
        identity: &str,
    ) -> Self {
        let reporter = Reporter {
            controller: MANAGER.to_owned(),
            instance: Some(identity.to_owned()),
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            namespace,
            api: apis.worker,
            admin_api: apis.admin,
            defaults,
            metrics,
            pending_timeout: timing.pending_timeout,
            unschedulable_timeout: timing.unschedulable_timeout,
            agentjob_ttl: timing.agentjob_ttl,
            capacity: Notify::new(),
            inflight: Mutex::new(HashSet::new()),
            finished: Mutex::new(HashSet::new()),
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Records that `name` finished and wakes the dispatcher.
    pub fn mark_finished(&self, name: &str) {
        self.finished
            .lock()
            .expect("poisoned")
            .insert(name.to_owned());
        self.capacity.notify_waiters();
    }

    /// The next retry delay for `name` after a failure (exponential, capped).
    pub fn backoff(&self, name: &str) -> Duration {
        let mut failures = self.failures.lock().expect("poisoned");
        let n = failures.entry(name.to_owned()).or_insert(0);
        *n = (*n + 1).min(16);
        let millis = 500u64.saturating_mul(1 << (*n - 1).min(7));
        Duration::from_millis(millis.min(60_000))
    }

    /// Forgets `name`'s failures after a success.
    pub fn reset_backoff(&self, name: &str) {
        self.failures.lock().expect("poisoned").remove(name);
    }
}

/// A shared context.
pub type SharedContext = Arc<Context>;
