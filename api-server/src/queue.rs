//! Queue machinery around the database: wake-ups for long-polling claimers (LISTEN/NOTIFY on
//! PostgreSQL, an in-process signal on SQLite), the lease-expiry sweeper and the long-poll claim.

use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::db::{ClaimFilter, Db, DbError, JobRow};

/// The PostgreSQL channel the `agent_jobs` trigger notifies.
pub const NOTIFY_CHANNEL: &str = "terarchitect_agent_jobs";

/// Longest a waiting claimer sleeps between attempts even without a wake-up (a safety net for a
/// lost notification, e.g. while the listener reconnects).
const SAFETY_POLL: Duration = Duration::from_secs(2);

/// A signal that some job may have become claimable.
#[derive(Debug, Clone)]
pub struct JobEvents {
    tx: watch::Sender<u64>,
}

impl Default for JobEvents {
    fn default() -> Self {
        Self::new()
    }
}

impl JobEvents {
    /// A new signal.
    pub fn new() -> Self {
        Self {
            tx: watch::channel(0).0,
        }
    }

    /// Wakes every waiting claimer.
    pub fn notify(&self) {
        self.tx.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A receiver that sees wake-ups sent after this call.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.tx.subscribe()
    }
}

/// Claims a job (binding `run_token_hash` to it), waiting up to `wait` for one to become
/// pending. Returns as soon as a claim succeeds; None at the deadline or on shutdown.
pub async fn claim_with_wait(
    db: &Db,
    events: &JobEvents,
    filter: &ClaimFilter,
    lease_seconds: u32,
    run_token_hash: &str,
    wait: Duration,
    shutdown: &CancellationToken,
) -> Result<Option<JobRow>, DbError> {
    let deadline = Instant::now() + wait;
    let mut wakeups = events.subscribe();
    loop {
        wakeups.borrow_and_update();
        if let Some(job) = db.claim_job(filter, lease_seconds, run_token_hash).await? {
            return Ok(Some(job));
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(None);
        }
        let nap = (deadline - now).min(SAFETY_POLL);
        tokio::select! {
            _ = wakeups.changed() => {}
            _ = tokio::time::sleep(nap) => {}
            _ = shutdown.cancelled() => return Ok(None),
        }
    }
}

/// Forwards PostgreSQL notifications on [`NOTIFY_CHANNEL`] to `events` until shutdown,
/// reconnecting with backoff (and waking claimers after each reconnect, in case one was missed).
pub async fn listen_for_jobs(pool: sqlx::PgPool, events: JobEvents, shutdown: CancellationToken) {
    let mut backoff = Duration::from_millis(200);
    loop {
        let mut listener = match sqlx::postgres::PgListener::connect_with(&pool).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "cannot open the job notification listener; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.cancelled() => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
                continue;
            }
        };
        if let Err(e) = listener.listen(NOTIFY_CHANNEL).await {
            tracing::warn!(error = %e, "LISTEN failed; retrying");
            continue;
        }
        backoff = Duration::from_millis(200);
        events.notify();
        loop {
            tokio::select! {
                n = listener.recv() => match n {
                    Ok(_) => events.notify(),
                    Err(e) => {
                        tracing::warn!(error = %e, "job notification listener lost its connection");
                        break;
                    }
                },
                _ = shutdown.cancelled() => return,
            }
        }
    }
}

/// Periodically returns jobs with expired leases to pending (or fails them when out of
/// attempts) until shutdown.
pub async fn sweep_leases(
    db: Db,
    events: JobEvents,
    interval: Duration,
    max_attempts: i32,
    metrics: std::sync::Arc<crate::metrics::Metrics>,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        match db.expire_leases(max_attempts).await {
            Ok(pass) => {
                if pass.requeued > 0 || pass.exhausted > 0 {
                    tracing::info!(
                        requeued = pass.requeued,
                        failed = pass.exhausted,
                        "expired job leases"
                    );
                    metrics
                        .lease_expiries
                        .inc_by(pass.requeued + pass.exhausted);
                }
                if pass.requeued > 0 {
                    events.notify();
                }
            }
            Err(e) => tracing::warn!(error = %e, "lease sweep failed"),
        }
    }
}
