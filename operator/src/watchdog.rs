//! Keeps the queue's leases of running AgentJobs alive and notices cancellations: every
//! HEARTBEAT_INTERVAL_SEC each live queue-backed AgentJob gets a heartbeat, whose answer says
//! whether the ticket asked to cancel. Against a server without heartbeats (the original app)
//! the ticket's cancel-requested flag is polled instead. A cancellation sets `spec.cancel`,
//! which the reconciler acts on.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::Store;
use kube::{Resource, ResourceExt};
use serde_json::json;
use terarchitect_worker_api::{HeartbeatOutcome, HeartbeatRequest};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::context::SharedContext;
use crate::crd::AgentJob;
use crate::reconciler::ANNOTATION_CANCEL_REASON;

/// Heartbeats in flight at once.
const CONCURRENCY: usize = 16;

/// Sets `spec.cancel` with a reason.
pub async fn request_cancel(
    ctx: &SharedContext,
    aj: &AgentJob,
    reason: &str,
) -> Result<(), kube::Error> {
    let api: Api<AgentJob> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let patch = json!({
        "metadata": {"annotations": {ANNOTATION_CANCEL_REASON: reason}},
        "spec": {"cancel": true},
    });
    api.patch(
        &aj.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await?;
    tracing::info!(agentjob = %aj.name_any(), reason, "cancelling run");
    Ok(())
}

async fn check(ctx: &SharedContext, aj: &AgentJob, lease_seconds: u32, no_heartbeats: &AtomicBool) {
    let Some(job_id) = aj
        .spec
        .queue_job_id
        .as_deref()
        .and_then(|id| id.parse::<Uuid>().ok())
    else {
        return;
    };
    let mut cancel: Option<String> = None;
    if !no_heartbeats.load(Ordering::Relaxed) {
        let req = HeartbeatRequest {
            lease_seconds: Some(lease_seconds),
            attempt: aj.spec.attempt,
        };
        match ctx.api.heartbeat(job_id, &req).await {
            Ok(HeartbeatOutcome::Extended(r)) if r.cancel_requested => {
                cancel = Some("the ticket's cancellation was requested".into());
            }
            Ok(HeartbeatOutcome::Extended(_)) => {}
            Ok(HeartbeatOutcome::NotRunning { status }) => match status.as_str() {
                // Re-queued (our lease lapsed) or claimed again: the dispatcher adopts it.
                "pending" | "running" => {}
                other => cancel = Some(format!("the queue job is already {other}")),
            },
            Ok(HeartbeatOutcome::Unsupported) => {
                tracing::info!(
                    "the worker API has no heartbeats; polling cancel-requested instead"
                );
                no_heartbeats.store(true, Ordering::Relaxed);
            }
            Err(e) if e.is_not_found() => cancel = Some("the queue job no longer exists".into()),
            Err(e) => tracing::debug!(agentjob = %aj.name_any(), error = %e, "heartbeat failed"),
        }
    }
    if no_heartbeats.load(Ordering::Relaxed) {
        let (Ok(project), Ok(ticket)) = (aj.spec.project_id.parse(), aj.spec.ticket_id.parse())
        else {
            return;
        };
        match ctx.api.cancel_requested(project, ticket).await {
            Ok(true) => cancel = Some("the ticket's cancellation was requested".into()),
            Ok(false) => {}
            Err(e) => {
                tracing::debug!(agentjob = %aj.name_any(), error = %e, "cannot read the cancel flag")
            }
        }
    }
    if let Some(reason) = cancel
        && let Err(e) = request_cancel(ctx, aj, &reason).await
    {
        tracing::warn!(agentjob = %aj.name_any(), error = %e, "cannot cancel run");
    }
}

/// Runs until `shutdown`.
pub async fn run(
    ctx: SharedContext,
    store: Store<AgentJob>,
    interval: Duration,
    lease_seconds: u32,
    shutdown: CancellationToken,
) {
    let no_heartbeats = Arc::new(AtomicBool::new(false));
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        // Runs this replica just concluded may still look live in the cache; their queue job
        // is (being) finished by our own report, which is no reason to cancel them.
        let concluded = ctx.finished.lock().expect("poisoned").clone();
        let active: Vec<Arc<AgentJob>> = store
            .state()
            .into_iter()
            .filter(|aj| {
                !concluded.contains(&aj.name_any())
                    && aj.spec.queue_job_id.is_some()
                    && aj.is_live()
                    && !aj.spec.cancel
                    && aj.meta().deletion_timestamp.is_none()
            })
            .collect();
        let pass = futures::stream::iter(active).for_each_concurrent(CONCURRENCY, |aj| {
            let (ctx, flag) = (ctx.clone(), no_heartbeats.clone());
            async move { check(&ctx, &aj, lease_seconds, &flag).await }
        });
        tokio::select! {
            _ = pass => {}
            _ = shutdown.cancelled() => return,
        }
    }
}
