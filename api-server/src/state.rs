//! Shared state of the HTTP handlers.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::context_cache::ContextCache;
use crate::db::Db;
use crate::http::admin_auth::AdminTokens;
use crate::log_writer::LogWriter;
use crate::memory::Memory;
use crate::metrics::Metrics;
use crate::queue::JobEvents;
use crate::settings::Settings;

/// Queue and security options the handlers need.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Refuse worker calls when no worker API key is configured.
    pub require_worker_api_key: bool,
    /// Lease given to claimers that do not ask for one.
    pub default_lease_seconds: u32,
    /// Blank secret values in worker-context's agent_settings.
    pub redact_context_secrets: bool,
    /// Tokens the admin endpoints require (none: open).
    pub admin_tokens: AdminTokens,
}

/// Everything a handler may use. Cheap to clone.
#[derive(Clone, Debug)]
pub struct AppState {
    pub db: Db,
    pub settings: Arc<Settings>,
    pub memory: Memory,
    pub events: JobEvents,
    pub metrics: Arc<Metrics>,
    pub policy: Arc<Policy>,
    /// Batched writes of agent log entries.
    pub logs: LogWriter,
    /// Serialised worker-context documents.
    pub context_cache: Arc<ContextCache>,
    /// Cancelled when the server shuts down (ends long polls early).
    pub shutdown: CancellationToken,
    /// The review loop (GitHub client, poller, webhook processing).
    pub review: Arc<crate::review::Review>,
}

impl axum::extract::FromRef<AppState> for Arc<Metrics> {
    fn from_ref(state: &AppState) -> Self {
        state.metrics.clone()
    }
}
