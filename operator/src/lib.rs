//! Terarchitect Kubernetes operator: claims queued agent jobs from the api-server, turns each
//! into an `AgentJob` custom resource, reconciles AgentJobs into `batch/v1` Jobs running the
//! agent image, and reports every outcome back to the worker API exactly once.
//!
//! Only the elected leader dispatches and reconciles. See `operator/README.md` for the RBAC the
//! operator needs.

pub mod config;
pub mod context;
pub mod crd;
pub mod dispatcher;
pub mod http;
pub mod job_builder;
pub mod leader;
pub mod metrics;
pub mod observe;
pub mod pod_template;
pub mod reconciler;
pub mod report;
pub mod watchdog;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use kube::Client;
use kube::api::{Api, ListParams};
use secrecy::SecretString;
use terarchitect_worker_api::WorkerApiClient;
use tokio_util::sync::CancellationToken;

use crate::config::RunConfig;
use crate::context::{ApiClients, Context, Timing};
use crate::crd::AgentJob;
use crate::dispatcher::{DispatchConfig, Dispatcher};
use crate::http::Health;
use crate::job_builder::JobDefaults;
use crate::leader::LeaderConfig;
use crate::metrics::Metrics;

/// Why the operator stopped.
#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    /// The configuration is invalid.
    #[error("configuration: {0}")]
    Config(#[from] config::ConfigError),
    /// The worker API client could not be built.
    #[error("worker API: {0}")]
    Api(#[from] terarchitect_worker_api::WorkerApiError),
    /// The AgentJob CRD is not installed, or AgentJobs cannot be listed.
    #[error(
        "cannot list AgentJobs in namespace {namespace} (is the CRD installed? `kubectl apply --server-side -f crds/`): {source}"
    )]
    Crd {
        namespace: String,
        #[source]
        source: kube::Error,
    },
    /// Leader election failed.
    #[error("leader election: {0}")]
    Leader(#[from] kube_lease_manager::LeaseManagerError),
    /// The probe server could not bind.
    #[error("cannot serve probes on {addr}: {source}")]
    Http {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Handles of a running operator, for tests and `main`.
pub struct Running {
    /// Address of /healthz, /readyz and /metrics.
    pub http_addr: SocketAddr,
    /// The operator's metrics.
    pub metrics: Arc<Metrics>,
}

/// Runs the operator until `shutdown` is cancelled. `on_start` receives the probe address once
/// serving.
pub async fn run(
    cfg: RunConfig,
    client: Client,
    shutdown: CancellationToken,
    on_start: impl FnOnce(Running),
) -> Result<(), OperatorError> {
    terarchitect_worker_api::ensure_crypto_provider();
    cfg.validate()?;
    let mut defaults = JobDefaults::from_config(&cfg);
    defaults.pod_template = cfg.agent_pod_template()?;
    let namespace = cfg
        .namespace
        .clone()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| client.default_namespace().to_owned());
    let token = cfg.worker_api_key().map(SecretString::from);
    let api = WorkerApiClient::new(&cfg.api_url, token)?;
    let admin_api = WorkerApiClient::new(&cfg.api_url, cfg.admin_token().map(SecretString::from))?;
    let identity = cfg.identity();
    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(Health::default());
    let http_addr = http::serve(
        cfg.http_bind,
        health.clone(),
        metrics.clone(),
        shutdown.clone(),
    )
    .await
    .map_err(|source| OperatorError::Http {
        addr: cfg.http_bind,
        source,
    })?;

    let agentjobs: Api<AgentJob> = Api::namespaced(client.clone(), &namespace);
    agentjobs
        .list(&ListParams::default().limit(1))
        .await
        .map_err(|source| OperatorError::Crd {
            namespace: namespace.clone(),
            source,
        })?;

    let ctx = Arc::new(Context::new(
        client.clone(),
        namespace.clone(),
        ApiClients {
            worker: api,
            admin: admin_api,
        },
        defaults,
        metrics.clone(),
        Timing {
            pending_timeout: Duration::from_secs(cfg.pending_timeout_sec),
            unschedulable_timeout: Duration::from_secs(cfg.unschedulable_timeout_sec),
            agentjob_ttl: (cfg.agentjob_ttl_seconds > 0)
                .then(|| Duration::from_secs(cfg.agentjob_ttl_seconds)),
        },
        &identity,
    ));
    let dispatch = DispatchConfig::from_config(&cfg)?;
    let heartbeat = cfg.heartbeat_interval();
    let lease = cfg.job_lease_sec;
    tracing::info!(
        namespace = %namespace,
        api = %cfg.api_url,
        projects = ?dispatch.projects,
        admin_token = cfg.admin_token().is_some(),
        agentjob_ttl_seconds = cfg.agentjob_ttl_seconds,
        identity = %identity,
        "terarchitect operator starting"
    );
    health.ready.store(true, Ordering::Relaxed);
    on_start(Running {
        http_addr,
        metrics: metrics.clone(),
    });

    let work = |term: CancellationToken| {
        let (ctx, dispatch) = (ctx.clone(), dispatch.clone());
        async move {
            ctx.metrics.leader.set(1);
            let controller = reconciler::controller(&ctx);
            let store = controller.store();
            let dispatcher = Dispatcher::new(ctx.clone(), dispatch, store.clone());
            tokio::join!(
                reconciler::run(controller, ctx.clone(), term.clone()),
                dispatcher.run(term.clone()),
                watchdog::run(ctx.clone(), store, heartbeat, lease, term.clone()),
            );
            ctx.metrics.leader.set(0);
        }
    };
    if cfg.leader_election {
        let leader = LeaderConfig {
            lease_name: cfg.lease_name.clone(),
            namespace: namespace.clone(),
            identity,
            lease_seconds: cfg.leader_lease_sec,
        };
        leader::run_as_leader(client, leader, shutdown, work).await?;
    } else {
        work(shutdown).await;
    }
    tracing::info!("terarchitect operator stopped");
    Ok(())
}
