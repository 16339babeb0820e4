//! Reporting a run's outcome to the worker API: `complete` on success, `release` for a run
//! that never found room in the cluster (its job goes back to the queue; `fail` with reason
//! `Unschedulable` when the server has no release call, like the original app), `fail` with a
//! reason otherwise. A 409 means the queue already has an outcome (reported before, or the job
//! was re-queued); a 404 means the job no longer exists. Network and server errors are returned
//! so the caller retries with backoff: an outcome is never dropped.

use terarchitect_worker_api::{
    AgentOutcome, CompleteJobRequest, FailRequest, JobReport, ReleaseJobRequest, ReleaseOutcome,
    WorkerApiClient, WorkerApiError,
};
use uuid::Uuid;

use crate::crd::{AgentJobStatus, FailureReason, Phase};

/// What the queue was told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reported {
    /// The outcome was recorded.
    Recorded,
    /// The job went back to the queue (pending again).
    Released,
    /// The server has no release call: the job was failed (retryable) instead.
    FailedWithoutRelease,
    /// The queue already had an outcome for this job (or attempt).
    AlreadyFinished(String),
    /// The queue job no longer exists (e.g. its ticket was deleted).
    Gone,
}

/// The queue's failure reason for a status: the agent's own reason for agent failures (for
/// example `PushFailed`), else the AgentJob's reason.
pub fn queue_reason(status: &AgentJobStatus) -> String {
    let reason = status.reason.unwrap_or(FailureReason::AgentFailed);
    if reason == FailureReason::AgentFailed
        && let Some((outcome, _)) = status
            .message
            .as_deref()
            .and_then(AgentOutcome::parse_message_line)
        && outcome != AgentOutcome::Succeeded
    {
        return outcome.reason().to_owned();
    }
    reason.as_str().to_owned()
}

/// Reports a finished status for queue job `job_id`.
pub async fn report(
    api: &WorkerApiClient,
    job_id: Uuid,
    attempt: Option<i32>,
    status: &AgentJobStatus,
) -> Result<Reported, WorkerApiError> {
    if status.releases_job() {
        return release(api, job_id, attempt, status).await;
    }
    if status.phase != Some(Phase::Succeeded) {
        return fail(api, job_id, attempt, status).await;
    }
    known(
        api.complete_job(job_id, &CompleteJobRequest { attempt })
            .await,
    )
}

/// Gives the job back to the queue; fails it (retryable reason) when the server has no
/// release call.
async fn release(
    api: &WorkerApiClient,
    job_id: Uuid,
    attempt: Option<i32>,
    status: &AgentJobStatus,
) -> Result<Reported, WorkerApiError> {
    let req = ReleaseJobRequest {
        attempt,
        reason: Some(queue_reason(status)),
    };
    match api.release_job(job_id, &req).await {
        Ok(ReleaseOutcome::Released) => Ok(Reported::Released),
        Ok(ReleaseOutcome::NotRunning { status }) => Ok(Reported::AlreadyFinished(status)),
        Ok(ReleaseOutcome::Unsupported) => {
            let mut failed = status.clone();
            failed.message = Some(format!(
                "{} (the worker API has no release call: failed instead; the job can be retried)",
                status.message.as_deref().unwrap_or_default()
            ));
            match fail(api, job_id, attempt, &failed).await? {
                Reported::Recorded => Ok(Reported::FailedWithoutRelease),
                other => Ok(other),
            }
        }
        Err(e) if e.is_not_found() => Ok(Reported::Gone),
        Err(e) => Err(e),
    }
}

/// Reports a failed status with `fail`.
async fn fail(
    api: &WorkerApiClient,
    job_id: Uuid,
    attempt: Option<i32>,
    status: &AgentJobStatus,
) -> Result<Reported, WorkerApiError> {
    let req = FailRequest {
        reason: Some(queue_reason(status)),
        message: status.message.clone(),
        attempt,
    };
    known(api.fail_job(job_id, &req).await)
}

/// What a complete or fail answer means for the run.
fn known(result: Result<JobReport, WorkerApiError>) -> Result<Reported, WorkerApiError> {
    match result {
        Ok(JobReport::Recorded) => Ok(Reported::Recorded),
        Ok(JobReport::NotRunning { status }) => Ok(Reported::AlreadyFinished(status)),
        Err(e) if e.is_not_found() => Ok(Reported::Gone),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_reason_prefers_the_agents_reason() {
        let mut s = AgentJobStatus {
            phase: Some(Phase::Failed),
            reason: Some(FailureReason::AgentFailed),
            message: Some("PushFailed: remote rejected".into()),
            ..Default::default()
        };
        assert_eq!(queue_reason(&s), "PushFailed");
        s.message = Some("agent exited with code 1".into());
        assert_eq!(queue_reason(&s), "AgentFailed");
        s.reason = Some(FailureReason::OomKilled);
        assert_eq!(queue_reason(&s), "OOMKilled");
        s.reason = Some(FailureReason::DeadlineExceeded);
        s.message = Some("TimeLimit: over".into());
        assert_eq!(queue_reason(&s), "DeadlineExceeded");
    }
}
