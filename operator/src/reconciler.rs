//! The AgentJob controller: one `batch/v1` Job per AgentJob, status and conditions kept true,
//! Events recorded, the outcome reported to the worker API exactly once, cancellation, and a
//! finalizer that stops and reports an AgentJob deleted before it finished.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions, PropagationPolicy,
};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::events::{Event, EventType};
use kube::runtime::finalizer::{self, Event as Finalizer};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::context::{Context, SharedContext};
use crate::crd::{
    AgentJob, AgentJobStatus, CONDITION_ADMITTED, CONDITION_RELEASED, CONDITION_SCHEDULED,
    FINALIZER, FailureReason, Phase,
};
use crate::job_builder::{
    ANNOTATION_SECRET_ATTEMPT, LABEL_AGENTJOB, LABEL_MANAGED_BY, MANAGER, build_job,
    env_secret_name, job_name,
};
use crate::observe::{Observed, observe};
use crate::report::{Reported, report};

/// Annotation with the time the queue job was enqueued (for dispatch latency).
pub const ANNOTATION_ENQUEUED_AT: &str = "terarchitect.io/enqueued-at";
/// Annotation saying why `spec.cancel` was set.
pub const ANNOTATION_CANCEL_REASON: &str = "terarchitect.io/cancel-reason";

/// Errors of a reconciliation; all are retried with backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes API call failed.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// The worker API did not take the outcome (it will be retried).
    #[error("reporting the outcome to the worker API: {0}")]
    Report(#[from] terarchitect_worker_api::WorkerApiError),
    /// The finalizer could not be managed.
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<finalizer::Error<Error>>),
    /// An object the controller expects is not what it should be.
    #[error("{0}")]
    Unexpected(String),
}

impl Error {
    /// Whether the error is a 409 Conflict: a write based on an outdated object, which a
    /// prompt retry on fresh data resolves.
    pub fn is_conflict(&self) -> bool {
        let inner = match self {
            Error::Finalizer(e) => match e.as_ref() {
                finalizer::Error::ApplyFailed(e) | finalizer::Error::CleanupFailed(e) => e,
                finalizer::Error::AddFinalizer(kube::Error::Api(s))
                | finalizer::Error::RemoveFinalizer(kube::Error::Api(s)) => return s.code == 409,
                _ => return false,
            },
            other => other,
        };
        matches!(inner, Error::Kube(kube::Error::Api(s)) if s.code == 409)
    }
}

type Result<T, E = Error> = std::result::Result<T, E>;

fn now() -> Time {
    Time(Timestamp::now())
}

/// Sets condition `type_` (keeping its transition time when its status does not change).
fn set_condition(
    status: &mut AgentJobStatus,
    type_: &str,
    ok: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
) {
    let value = if ok { "True" } else { "False" };
    if let Some(c) = status.conditions.iter_mut().find(|c| c.type_ == type_) {
        if c.status != value {
            c.last_transition_time = now();
        }
        c.status = value.to_owned();
        c.reason = reason.to_owned();
        c.message = message.to_owned();
        c.observed_generation = generation;
    } else {
        status.conditions.push(Condition {
            type_: type_.to_owned(),
            status: value.to_owned(),
            reason: reason.to_owned(),
            message: message.to_owned(),
            last_transition_time: now(),
            observed_generation: generation,
        });
    }
}

/// Marks a status finished.
fn finish(
    status: &mut AgentJobStatus,
    phase: Phase,
    reason: Option<FailureReason>,
    message: String,
    finished: Option<Time>,
    generation: Option<i64>,
) {
    status.phase = Some(phase);
    status.reason = reason;
    status.message = Some(message.clone());
    status.finish_time = Some(finished.unwrap_or_else(now));
    let why = reason.map_or("Succeeded", FailureReason::as_str);
    set_condition(status, "Finished", true, why, &message, generation);
    set_condition(status, "Running", false, why, "the run is over", generation);
}

async fn publish(ctx: &Context, aj: &AgentJob, type_: EventType, reason: &str, note: String) {
    let event = Event {
        type_,
        reason: reason.to_owned(),
        note: Some(note.chars().take(1000).collect()),
        action: reason.to_owned(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &aj.object_ref(&())).await {
        tracing::warn!(agentjob = %aj.name_any(), error = %e, "cannot record event");
    }
}

/// Writes an AgentJob's status with optimistic concurrency: every write carries the
/// `resourceVersion` its decision was based on, so a decision made from a stale watch cache is
/// refused with a 409 (and retried on fresh data) instead of overwriting newer status.
struct StatusWriter {
    api: Api<AgentJob>,
    name: String,
    resource_version: Option<String>,
}

impl StatusWriter {
    fn new(ctx: &Context, aj: &AgentJob) -> Self {
        Self {
            api: Api::namespaced(ctx.client.clone(), &ctx.namespace),
            name: aj.name_any(),
            resource_version: aj.resource_version(),
        }
    }

    /// Writes `status`; returns the AgentJob as stored after the write.
    async fn write(&mut self, status: &AgentJobStatus) -> Result<AgentJob> {
        let patch = json!({
            "metadata": { "resourceVersion": self.resource_version },
            "status": status,
        });
        let updated = self
            .api
            .patch_status(&self.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        self.resource_version = updated.resource_version();
        Ok(updated)
    }
}

async fn delete_job(ctx: &Context, name: &str) -> Result<()> {
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let dp = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        ..DeleteParams::default()
    };
    match jobs.delete(name, &dp).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Reports a finished, unreported outcome and records that it was reported. Returns the
/// AgentJob as it now stands.
async fn report_outcome(
    aj: &AgentJob,
    ctx: &Context,
    writer: &mut StatusWriter,
    mut status: AgentJobStatus,
) -> Result<AgentJob> {
    let name = aj.name_any();
    let Some(job_id) = aj.spec.queue_job_id.as_deref() else {
        return Ok(aj.clone());
    };
    if status.reported && status.reported_attempt == aj.spec.attempt {
        return Ok(aj.clone());
    }
    let job_id: uuid::Uuid = job_id
        .parse()
        .map_err(|_| Error::Unexpected(format!("spec.queueJobId {job_id:?} is not a UUID")))?;
    let result = match report(&ctx.api, job_id, aj.spec.attempt, &status).await {
        Ok(r) => r,
        Err(e) => {
            ctx.metrics.report("error");
            tracing::warn!(agentjob = %name, error = %e, "cannot report the outcome yet; retrying");
            return Err(e.into());
        }
    };
    let (label, note) = match &result {
        Reported::Recorded => (
            "recorded",
            "reported the outcome to the worker API".to_owned(),
        ),
        Reported::Released => (
            "released",
            "released the queue job back to the queue".to_owned(),
        ),
        Reported::FailedWithoutRelease => (
            "failed_without_release",
            "the worker API has no release call: failed the queue job (retryable) instead"
                .to_owned(),
        ),
        Reported::AlreadyFinished(s) => {
            ("already_finished", format!("the queue job was already {s}"))
        }
        Reported::Gone => ("gone", "the queue job no longer exists".to_owned()),
    };
    ctx.metrics.report(label);
    let unsupported = result == Reported::FailedWithoutRelease;
    let mark_reported = |status: &mut AgentJobStatus, generation: Option<i64>| {
        status.reported = true;
        status.reported_attempt = aj.spec.attempt;
        set_condition(status, "Reported", true, "Reported", &note, generation);
        if unsupported {
            let why = "ReleaseUnsupported";
            set_condition(status, CONDITION_RELEASED, false, why, &note, generation);
        }
    };
    mark_reported(&mut status, aj.metadata.generation);
    // The queue has the outcome now: record that even if the AgentJob changed meanwhile (e.g.
    // the watchdog set spec.cancel), on the stored object, rather than report a second time.
    let stored = match writer.write(&status).await {
        Ok(stored) => stored,
        Err(e) if e.is_conflict() => {
            let fresh = writer.api.get(&name).await?;
            let mut stored = fresh.status.clone().unwrap_or_default();
            mark_reported(&mut stored, fresh.metadata.generation);
            writer.resource_version = fresh.resource_version();
            writer.write(&stored).await?
        }
        Err(e) => return Err(e),
    };
    publish(ctx, aj, EventType::Normal, "Reported", note).await;
    tracing::info!(agentjob = %name, queue_job = %job_id, result = label, "outcome reported");
    Ok(stored)
}

/// Records a terminal status, reports it, then cleans up.
async fn conclude(
    aj: &AgentJob,
    ctx: &Context,
    writer: &mut StatusWriter,
    status: AgentJobStatus,
) -> Result<Action> {
    let name = aj.name_any();
    let phase = status.phase.unwrap_or(Phase::Failed);
    let reason = status.reason.map_or("Succeeded", FailureReason::as_str);
    let finished = writer.write(&status).await?;
    ctx.mark_finished(&name);
    ctx.metrics.outcome(&format!("{phase:?}"), reason);
    let message = status.message.clone().unwrap_or_default();
    let (type_, event) = if status.releases_job() {
        (EventType::Normal, "Released".to_owned())
    } else if phase == Phase::Succeeded {
        (EventType::Normal, format!("{phase:?}"))
    } else {
        (EventType::Warning, format!("{phase:?}"))
    };
    publish(ctx, aj, type_, &event, message.clone()).await;
    tracing::info!(agentjob = %name, ?phase, reason, %message, "run finished");
    let reported = report_outcome(&finished, ctx, writer, status).await?;
    settle(&reported, ctx).await
}

/// The metadata of the env Secret the dispatcher made for `aj` (named `<agentjob>-env`,
/// labelled with the AgentJob and managed by the operator), if it exists. A Secret of that name
/// that someone else made is none of the operator's business. Never reads the Secret's data.
async fn our_env_secret(
    aj: &AgentJob,
    secrets: &Api<Secret>,
) -> Result<Option<PartialObjectMeta<Secret>>> {
    let name = aj.name_any();
    let secret_name = env_secret_name(&name);
    if !aj.spec.env_from_secrets.contains(&secret_name) {
        return Ok(None);
    }
    let Some(meta) = secrets.get_metadata_opt(&secret_name).await? else {
        return Ok(None);
    };
    let labels = meta.labels();
    let ours = labels.get(LABEL_AGENTJOB) == Some(&name)
        && labels.get(LABEL_MANAGED_BY).map(String::as_str) == Some(MANAGER);
    Ok(ours.then_some(meta))
}

/// Makes sure the claim's environment Secret (if the dispatcher made one) is owned by the
/// AgentJob, so it is garbage-collected with it.
async fn adopt_env_secret(aj: &AgentJob, ctx: &Context) -> Result<()> {
    let secret_name = env_secret_name(&aj.name_any());
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let Some(secret) = our_env_secret(aj, &secrets).await? else {
        return Ok(());
    };
    let uid = aj.uid().unwrap_or_default();
    if secret.owner_references().iter().any(|o| o.uid == uid) {
        return Ok(());
    }
    let owner = aj
        .controller_owner_ref(&())
        .ok_or_else(|| Error::Unexpected("AgentJob without uid".into()))?;
    let patch = json!({"metadata": {"ownerReferences": [owner]}});
    secrets
        .patch(&secret_name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(())
}

fn cancel_message(aj: &AgentJob) -> String {
    aj.annotations()
        .get(ANNOTATION_CANCEL_REASON)
        .cloned()
        .unwrap_or_else(|| "cancelled through spec.cancel".to_owned())
}

fn observe_dispatch_latency(aj: &AgentJob, ctx: &Context) {
    let Some(enqueued) = aj.annotations().get(ANNOTATION_ENQUEUED_AT) else {
        return;
    };
    if let Ok(at) = enqueued.parse::<Timestamp>() {
        let secs = Timestamp::now().duration_since(at).as_secs_f64();
        if secs >= 0.0 {
            ctx.metrics.dispatch_latency.observe(secs);
        }
    }
}

/// Creates the Job (adopting one this AgentJob already owns).
async fn create_job(aj: &AgentJob, ctx: &Context) -> Result<Job> {
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let job = build_job(aj, &ctx.defaults).map_err(|e| Error::Unexpected(e.to_string()))?;
    match jobs.create(&PostParams::default(), &job).await {
        Ok(created) => {
            observe_dispatch_latency(aj, ctx);
            Ok(created)
        }
        Err(kube::Error::Api(e)) if e.code == 409 => {
            let existing = jobs.get(&job_name(aj)).await?;
            let uid = aj.uid().unwrap_or_default();
            if existing.metadata.deletion_timestamp.is_some() {
                // A released run's Job still going away: retried (with backoff) until it is gone.
                Err(Error::Unexpected(format!(
                    "the previous run's Job {} is still being deleted",
                    job_name(aj)
                )))
            } else if existing.owner_references().iter().any(|o| o.uid == uid) {
                Ok(existing)
            } else {
                Err(Error::Unexpected(format!(
                    "a Job named {} exists and belongs to something else",
                    job_name(aj)
                )))
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// Reconciles a live or finished AgentJob.
async fn apply(aj: Arc<AgentJob>, ctx: &Context) -> Result<Action> {
    if aj.is_finished() {
        return apply_finished(&aj, ctx).await;
    }
    let generation = aj.metadata.generation;
    let mut status = aj.status.clone().unwrap_or_default();
    status.observed_generation = generation;
    let mut writer = StatusWriter::new(ctx, &aj);
    if let Some((phase, reason, message)) = must_stop(&aj, ctx).await? {
        finish(&mut status, phase, Some(reason), message, None, generation);
        return conclude(&aj, ctx, &mut writer, status).await;
    }
    adopt_env_secret(&aj, ctx).await?;

    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    match jobs.get_opt(&job_name(&aj)).await? {
        Some(job) => follow_job(&aj, ctx, &mut writer, status, &job).await,
        None if status.job_name.is_some() => {
            let msg = "the Job disappeared before the run finished".to_owned();
            let reason = Some(FailureReason::JobLost);
            finish(&mut status, Phase::Failed, reason, msg, None, generation);
            conclude(&aj, ctx, &mut writer, status).await
        }
        None => start_job(&aj, ctx, &mut writer, status).await,
    }
}

/// A finished AgentJob: report its outcome if that is still due (deciding on the stored
/// object, as the watch cache may lag behind our own last write), then clean up.
async fn apply_finished(aj: &AgentJob, ctx: &Context) -> Result<Action> {
    if aj.is_settled() {
        return settle(aj, ctx).await;
    }
    let api: Api<AgentJob> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let Some(fresh) = api.get_opt(&aj.name_any()).await? else {
        return Ok(Action::await_change());
    };
    let mut writer = StatusWriter::new(ctx, &fresh);
    let status = fresh.status.clone().unwrap_or_default();
    if status.releases_job() && status.reported && status.reported_attempt != fresh.spec.attempt {
        return restart(&fresh, ctx, &mut writer).await;
    }
    let fresh = report_outcome(&fresh, ctx, &mut writer, status).await?;
    settle(&fresh, ctx).await
}

/// A released run whose queue job was claimed again (the dispatcher recorded the new attempt):
/// the AgentJob starts over as a new run (its status cleared; the next reconcile creates the
/// Job).
async fn restart(aj: &AgentJob, ctx: &Context, writer: &mut StatusWriter) -> Result<Action> {
    let name = aj.name_any();
    let patch = json!({
        "metadata": { "resourceVersion": writer.resource_version },
        "status": {
            "phase": Phase::Pending, "conditions": [], "jobName": null, "startTime": null,
            "finishTime": null, "reason": null, "message": null, "reported": false,
            "reportedAttempt": null, "observedGeneration": aj.metadata.generation,
        },
    });
    writer
        .api
        .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    ctx.finished.lock().expect("poisoned").remove(&name);
    let attempt = aj.spec.attempt.unwrap_or_default();
    let note =
        format!("the released queue job was claimed again (attempt {attempt}); starting a new run");
    publish(ctx, aj, EventType::Normal, "Reclaimed", note).await;
    tracing::info!(agentjob = %name, attempt, "released job claimed again: new run");
    Ok(Action::await_change())
}

/// Why a live AgentJob must end without (further) running: an invalid spec or a cancel
/// request (whose Job is deleted here).
async fn must_stop(aj: &AgentJob, ctx: &Context) -> Result<Option<(Phase, FailureReason, String)>> {
    if let Err(e) = aj.spec.validate() {
        let message = format!("invalid spec: {e}");
        return Ok(Some((Phase::Failed, FailureReason::InvalidSpec, message)));
    }
    if let Err(e) = build_job(aj, &ctx.defaults) {
        let message = format!("invalid pod template: {e}");
        return Ok(Some((Phase::Failed, FailureReason::InvalidSpec, message)));
    }
    if aj.spec.cancel {
        delete_job(ctx, &job_name(aj)).await?;
        return Ok(Some((
            Phase::Cancelled,
            FailureReason::Cancelled,
            cancel_message(aj),
        )));
    }
    Ok(None)
}

/// Creates the Job of an AgentJob that has none yet and records it.
async fn start_job(
    aj: &AgentJob,
    ctx: &Context,
    writer: &mut StatusWriter,
    mut status: AgentJobStatus,
) -> Result<Action> {
    let job = create_job(aj, ctx).await?;
    let job_name = job.name_any();
    status.phase = Some(Phase::Pending);
    status.job_name = Some(job_name.clone());
    let message = format!("created Job {job_name}");
    let generation = aj.metadata.generation;
    set_condition(
        &mut status,
        "JobCreated",
        true,
        "JobCreated",
        &message,
        generation,
    );
    writer.write(&status).await?;
    let note = format!("Created Job {job_name}");
    publish(ctx, aj, EventType::Normal, "JobCreated", note).await;
    tracing::info!(agentjob = %aj.name_any(), job = %job_name, "created Job");
    Ok(Action::requeue(ctx.pending_timeout))
}

/// What following a Job decided.
enum Step {
    /// The run is over: record and report the (finished) status.
    Conclude,
    /// Still going: write the status if it changed, come back after the action.
    Continue(Action),
}

/// Follows an existing Job: the run's status from the Job and its pods.
async fn follow_job(
    aj: &AgentJob,
    ctx: &Context,
    writer: &mut StatusWriter,
    mut status: AgentJobStatus,
    job: &Job,
) -> Result<Action> {
    let name = aj.name_any();
    if !job
        .owner_references()
        .iter()
        .any(|o| Some(&o.uid) == aj.uid().as_ref())
    {
        return Err(Error::Unexpected(format!(
            "Job {} is not owned by AgentJob {name}",
            job.name_any()
        )));
    }
    status.job_name = Some(job.name_any());
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let pods = pods
        .list(&ListParams::default().labels(&format!("{LABEL_AGENTJOB}={name}")))
        .await?
        .items;
    let generation = aj.metadata.generation;
    if job.spec.as_ref().and_then(|s| s.suspend) == Some(true) {
        let action = wait_for_admission(aj, ctx, &mut status);
        if status != aj.status.clone().unwrap_or_default() {
            writer.write(&status).await?;
        }
        return Ok(action);
    }
    mark_admitted(aj, &mut status);
    let observed = observe(job, &pods);
    let scheduled = !waits_for_room(&observed) && mark_scheduled(aj, &mut status);
    let step = match observed {
        Observed::Succeeded { finished } => {
            let message = "the agent finished its work".into();
            finish(
                &mut status,
                Phase::Succeeded,
                None,
                message,
                finished,
                generation,
            );
            Step::Conclude
        }
        Observed::Failed {
            reason,
            message,
            finished,
            ..
        } => {
            let phase = if reason == FailureReason::Cancelled {
                Phase::Cancelled
            } else {
                Phase::Failed
            };
            finish(
                &mut status,
                phase,
                Some(reason),
                message,
                finished,
                generation,
            );
            Step::Conclude
        }
        Observed::Running { started } => {
            Step::Continue(on_running(aj, ctx, &mut status, started).await)
        }
        Observed::Pending {
            problem: Some(problem),
            permanent,
            since,
        } => on_stuck(aj, ctx, &mut status, problem, permanent, since).await?,
        Observed::Pending { problem: None, .. } => {
            status.phase = Some(Phase::Pending);
            Step::Continue(Action::requeue(ctx.pending_timeout))
        }
    };
    match step {
        Step::Conclude => conclude(aj, ctx, writer, status).await,
        Step::Continue(action) => {
            if status != aj.status.clone().unwrap_or_default() {
                writer.write(&status).await?;
            }
            if scheduled {
                ctx.capacity.notify_waiters();
            }
            Ok(action)
        }
    }
}

/// A suspended Job (held by Kueue until its quota admits it): the run is Pending with
/// condition `Admitted=False`, reason `WaitingForAdmission`. No pod exists, so no pending
/// timeout runs; the Job's deadline only starts once it is admitted.
fn wait_for_admission(aj: &AgentJob, ctx: &Context, status: &mut AgentJobStatus) -> Action {
    let message = match &ctx.defaults.kueue_queue {
        Some(queue) => format!("the Job waits for admission by Kueue (LocalQueue {queue})"),
        None => "the Job is suspended".to_owned(),
    };
    let waiting = aj
        .condition(CONDITION_ADMITTED)
        .is_some_and(|c| c.status == "False");
    if !waiting {
        tracing::info!(agentjob = %aj.name_any(), %message, "waiting for admission");
    }
    status.phase = Some(Phase::Pending);
    let generation = aj.metadata.generation;
    set_condition(
        status,
        CONDITION_ADMITTED,
        false,
        "WaitingForAdmission",
        &message,
        generation,
    );
    Action::requeue(Duration::from_secs(300))
}

/// The Job runs (no longer suspended): an `Admitted=False` condition turns True.
fn mark_admitted(aj: &AgentJob, status: &mut AgentJobStatus) {
    let waiting = status
        .conditions
        .iter()
        .any(|c| c.type_ == CONDITION_ADMITTED && c.status == "False");
    if waiting {
        let generation = aj.metadata.generation;
        let message = "the Job was admitted";
        set_condition(
            status,
            CONDITION_ADMITTED,
            true,
            "Admitted",
            message,
            generation,
        );
    }
}

/// Whether the pod waits for room in the cluster (unschedulable, but could fit).
fn waits_for_room(observed: &Observed) -> bool {
    matches!(
        observed,
        Observed::Pending {
            problem: Some((FailureReason::Unschedulable, _)),
            permanent: false,
            ..
        }
    )
}

/// The pod found room: a `Scheduled=False` condition turns True (true when it did; the
/// dispatcher, which claims nothing while a pod waits for room, is then woken).
fn mark_scheduled(aj: &AgentJob, status: &mut AgentJobStatus) -> bool {
    let waiting = status
        .conditions
        .iter()
        .any(|c| c.type_ == CONDITION_SCHEDULED && c.status == "False");
    if waiting {
        let message = "the agent pod found room in the cluster";
        let generation = aj.metadata.generation;
        set_condition(
            status,
            CONDITION_SCHEDULED,
            true,
            "Scheduled",
            message,
            generation,
        );
        tracing::info!(agentjob = %aj.name_any(), "agent pod scheduled");
    }
    waiting
}

/// Records that the pod waits for room: condition `Scheduled=False` (reason `Unschedulable`,
/// which pauses claiming), and once a Warning Event and a log line.
async fn wait_for_room(
    aj: &AgentJob,
    ctx: &Context,
    status: &mut AgentJobStatus,
    message: &str,
    limit: Duration,
) {
    let newly = !aj.waits_for_room();
    let text = format!(
        "waiting up to {}s for room in the cluster; no new job is claimed meanwhile: {message}",
        limit.as_secs()
    );
    let generation = aj.metadata.generation;
    set_condition(
        status,
        CONDITION_SCHEDULED,
        false,
        "Unschedulable",
        &text,
        generation,
    );
    if newly {
        tracing::warn!(agentjob = %aj.name_any(), scheduler = %message, "agent pod unschedulable: waiting for room, claims paused");
        publish(ctx, aj, EventType::Warning, "WaitingForCapacity", text).await;
    }
}

/// Why a stuck pod's run ends: the scheduler's message when the pod can never fit or other
/// problems; after waiting for room, that the job goes back to the queue.
fn stuck_message(capacity: bool, permanent: bool, limit: Duration, message: &str) -> String {
    if capacity && !permanent {
        format!(
            "no node had room for the agent pod for {}s; its queue job goes back to the queue (released, not failed): {message}",
            limit.as_secs()
        )
    } else {
        format!("the agent pod could not start: {message}")
    }
}

/// A pod that cannot start (image pull errors, unschedulable): the run fails at once when the
/// problem is permanent (e.g. the scheduler says the pod can never fit) or has lasted
/// PENDING_TIMEOUT_SEC, its Job deleted; else it waits. A pod that waited UNSCHEDULABLE_TIMEOUT_SEC
/// for room ends too, but its queue job is released back to the queue (condition `Released`).
async fn on_stuck(
    aj: &AgentJob,
    ctx: &Context,
    status: &mut AgentJobStatus,
    (reason, message): (FailureReason, String),
    permanent: bool,
    since: Option<Time>,
) -> Result<Step> {
    let generation = aj.metadata.generation;
    let waited = since
        .map(|t| Timestamp::now().duration_since(t.0).as_secs_f64())
        .unwrap_or_default()
        .max(0.0);
    let capacity = reason == FailureReason::Unschedulable;
    let timeout = if capacity {
        ctx.unschedulable_timeout
    } else {
        ctx.pending_timeout
    };
    let limit = timeout.as_secs_f64();
    if permanent || waited >= limit {
        delete_job(ctx, &job_name(aj)).await?;
        let msg = stuck_message(capacity, permanent, timeout, &message);
        if capacity && !permanent {
            let note = "the queue job goes back to the queue to be claimed again";
            set_condition(
                status,
                CONDITION_RELEASED,
                true,
                "Unschedulable",
                note,
                generation,
            );
        }
        finish(status, Phase::Failed, Some(reason), msg, None, generation);
        return Ok(Step::Conclude);
    }
    status.phase = Some(Phase::Pending);
    set_condition(
        status,
        "Running",
        false,
        reason.as_str(),
        &message,
        generation,
    );
    if capacity {
        wait_for_room(aj, ctx, status, &message, timeout).await;
    }
    let wait = (limit - waited).clamp(1.0, limit.max(1.0));
    Ok(Step::Continue(Action::requeue(Duration::from_secs_f64(
        wait,
    ))))
}

/// Records that the agent pod runs.
async fn on_running(
    aj: &AgentJob,
    ctx: &Context,
    status: &mut AgentJobStatus,
    started: Option<Time>,
) -> Action {
    if status.phase != Some(Phase::Running) {
        let note = "The agent pod is running".into();
        publish(ctx, aj, EventType::Normal, "Running", note).await;
    }
    status.phase = Some(Phase::Running);
    if status.start_time.is_none() {
        status.start_time = Some(started.unwrap_or_else(now));
    }
    let generation = aj.metadata.generation;
    let message = "the agent pod is running";
    set_condition(status, "Running", true, "PodRunning", message, generation);
    Action::requeue(Duration::from_secs(300))
}

/// After the outcome is reported (or there is nothing to report): the run's env Secret goes
/// at once, the AgentJob itself when its retention time is over.
async fn settle(aj: &AgentJob, ctx: &Context) -> Result<Action> {
    if !aj.is_settled() {
        return Ok(Action::await_change());
    }
    delete_env_secret(aj, ctx).await?;
    let Some(ttl) = retention(aj, ctx) else {
        return Ok(Action::await_change());
    };
    let finished = aj
        .finished_at()
        .map(|t| t.0)
        .or_else(|| aj.metadata.creation_timestamp.as_ref().map(|t| t.0))
        .unwrap_or_else(Timestamp::now);
    let age = Timestamp::now()
        .duration_since(finished)
        .as_secs_f64()
        .max(0.0);
    let left = ttl.as_secs_f64() - age;
    if left > 0.0 {
        return Ok(Action::requeue(Duration::from_secs_f64(left)));
    }
    expire(aj, ctx).await?;
    Ok(Action::await_change())
}

/// How long a finished AgentJob is kept: `spec.ttlSecondsAfterFinished`, else the operator's
/// AGENTJOB_TTL_SECONDS; `None` (0) keeps it forever.
pub fn retention(aj: &AgentJob, ctx: &Context) -> Option<Duration> {
    match aj.spec.ttl_seconds_after_finished {
        Some(secs) if secs > 0 => Some(Duration::from_secs(secs.unsigned_abs())),
        Some(_) => None,
        None => ctx.agentjob_ttl,
    }
}

/// Deletes a finished, settled AgentJob whose retention time is over. The deletion goes
/// through the finalizer, which finds nothing left to report; the Job and the Secret go with
/// the AgentJob (owner references).
async fn expire(aj: &AgentJob, ctx: &Context) -> Result<()> {
    let api: Api<AgentJob> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let dp = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        preconditions: aj.uid().map(|uid| Preconditions {
            uid: Some(uid),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match api.delete(&aj.name_any(), &dp).await {
        Ok(_) => {
            ctx.metrics.expired.inc();
            tracing::info!(agentjob = %aj.name_any(), "deleted the finished AgentJob: its retention time is over");
            Ok(())
        }
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Deletes the run's env Secret once nothing needs it: the one the dispatcher made for this
/// AgentJob (`<agentjob>-env`, labelled with it and managed by the operator). Secrets an
/// AgentJob merely references are never touched. Reads metadata only, never the data.
async fn delete_env_secret(aj: &AgentJob, ctx: &Context) -> Result<()> {
    let name = aj.name_any();
    let secret_name = env_secret_name(&name);
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let Some(meta) = our_env_secret(aj, &secrets).await? else {
        return Ok(());
    };
    if meta.metadata.deletion_timestamp.is_some() || holds_a_newer_claim(aj, &meta) {
        return Ok(());
    }
    // Exactly the version read: a re-claim that rewrites the Secret meanwhile keeps it.
    let dp = DeleteParams {
        preconditions: Some(Preconditions {
            uid: meta.uid(),
            resource_version: meta.resource_version(),
        }),
        ..DeleteParams::default()
    };
    match secrets.delete(&secret_name, &dp).await {
        Ok(_) => {
            tracing::info!(agentjob = %name, secret = %secret_name, "deleted the run's env Secret");
            Ok(())
        }
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Whether the env Secret already holds a later claim of the queue job than the run that
/// finished (a released job claimed again): that Secret belongs to the next run.
fn holds_a_newer_claim(aj: &AgentJob, secret: &PartialObjectMeta<Secret>) -> bool {
    let finished_attempt = aj
        .status
        .as_ref()
        .and_then(|s| s.reported_attempt)
        .or(aj.spec.attempt);
    let secret_attempt = secret
        .annotations()
        .get(ANNOTATION_SECRET_ATTEMPT)
        .and_then(|a| a.parse::<i32>().ok());
    matches!((secret_attempt, finished_attempt), (Some(s), Some(f)) if s > f)
}

/// Runs when an AgentJob is deleted: an unfinished run is stopped and reported as cancelled
/// before the finalizer goes (retried until the worker API answers).
async fn cleanup(aj: Arc<AgentJob>, ctx: &Context) -> Result<Action> {
    let name = aj.name_any();
    let mut writer = StatusWriter::new(ctx, &aj);
    let mut status = aj.status.clone().unwrap_or_default();
    if !aj.is_finished() {
        delete_job(ctx, &job_name(&aj)).await?;
        let msg = "the AgentJob was deleted before the run finished".to_owned();
        finish(
            &mut status,
            Phase::Cancelled,
            Some(FailureReason::Cancelled),
            msg,
            None,
            aj.metadata.generation,
        );
        ctx.mark_finished(&name);
        ctx.metrics.outcome("Cancelled", "Cancelled");
        writer.write(&status).await?;
    }
    let reported = report_outcome(&aj, ctx, &mut writer, status).await?;
    delete_env_secret(&reported, ctx).await?;
    ctx.mark_finished(&name);
    Ok(Action::await_change())
}

/// The reconcile entry point: runs `apply` or `cleanup` under the finalizer.
pub async fn reconcile(aj: Arc<AgentJob>, ctx: SharedContext) -> Result<Action> {
    let api: Api<AgentJob> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let name = aj.name_any();
    let result = finalizer::finalizer(&api, FINALIZER, aj, |event| async {
        match event {
            Finalizer::Apply(aj) => apply(aj, &ctx).await,
            Finalizer::Cleanup(aj) => cleanup(aj, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)));
    ctx.metrics.reconcile(result.is_ok());
    if result.is_ok() {
        ctx.reset_backoff(&name);
    }
    result
}

/// Retries a failed reconciliation with a growing delay per AgentJob.
pub fn error_policy(aj: Arc<AgentJob>, error: &Error, ctx: SharedContext) -> Action {
    if error.is_conflict() {
        tracing::debug!(agentjob = %aj.name_any(), "the AgentJob changed meanwhile; reconciling again");
        return Action::requeue(Duration::from_millis(100));
    }
    let delay = ctx.backoff(&aj.name_any());
    tracing::warn!(agentjob = %aj.name_any(), %error, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// Reconciliations running at once: bounds memory and API load when many AgentJobs change
/// together (a restart with 1,000 live runs relists them all).
pub const RECONCILE_CONCURRENCY: u16 = 32;

/// The controller's watch configuration for objects it manages.
pub fn managed_selector() -> String {
    format!("{LABEL_MANAGED_BY}={MANAGER}")
}

/// Builds the controller; its store is what the dispatcher and the watchdog read.
pub fn controller(ctx: &Context) -> Controller<AgentJob> {
    let agentjobs: Api<AgentJob> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let managed = watcher::Config::default().labels(&managed_selector());
    Controller::new(agentjobs, watcher::Config::default())
        .with_config(controller::Config::default().concurrency(RECONCILE_CONCURRENCY))
        .owns(jobs, managed.clone())
        .watches(pods, managed, |pod| {
            let name = pod.labels().get(LABEL_AGENTJOB)?.clone();
            Some(ObjectRef::new(&name).within(&pod.namespace()?))
        })
}

/// Runs the controller until `shutdown`.
pub async fn run(
    controller: Controller<AgentJob>,
    ctx: SharedContext,
    shutdown: CancellationToken,
) {
    controller
        .graceful_shutdown_on(async move { shutdown.cancelled().await })
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "reconcile error");
            }
        })
        .await;
}

/// Counts AgentJobs occupying an agent slot: live ones in the watch cache, plus ones this
/// replica just created that the cache does not show yet, minus ones it just finished.
pub fn live_agentjobs(store: &Store<AgentJob>, ctx: &Context) -> usize {
    let state = store.state();
    let mut inflight = ctx.inflight.lock().expect("poisoned");
    let mut finished = ctx.finished.lock().expect("poisoned");
    let seen: std::collections::HashMap<String, bool> = state
        .iter()
        .map(|aj| (aj.name_any(), aj.is_live()))
        .collect();
    inflight.retain(|n| !seen.contains_key(n));
    finished.retain(|n| seen.get(n).copied().unwrap_or(false));
    let live = seen
        .iter()
        .filter(|(n, live)| **live && !finished.contains(*n))
        .count()
        + inflight.len();
    ctx.metrics.live_agentjobs.set(live as i64);
    live
}
