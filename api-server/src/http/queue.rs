//! The job queue endpoints (worker auth): claim (with optional long poll and lease), job state,
//! heartbeat, complete, fail and release.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use terarchitect_worker_api::{
    ClaimedJob, EXTENSIONS_HEADER, EXTENSIONS_VERSION, HeartbeatResponse, JobConflict, JobKind,
    JobState, JobStatus, JobTransitionResponse, MAX_WAIT_SECONDS, ReviewFields,
};
use tower_http::set_header::SetResponseHeaderLayer;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::error::{ApiError, ApiResult};
use super::extract::{OptionalJsonBody, PathParams, json_integer, optional_integer};
use crate::db::{ClaimFilter, JobRow, TransitionOutcome};
use crate::queue::claim_with_wait;
use crate::run_token;
use crate::state::AppState;

/// Shortest lease a claimer may ask for, in seconds.
pub const MIN_LEASE_SECONDS: u64 = 1;
/// Longest lease a claimer may ask for, in seconds.
pub const MAX_LEASE_SECONDS: u64 = 7 * 24 * 3600;
/// Longest stored failure reason (characters).
const MAX_REASON_CHARS: usize = 100;

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(start_job))
        .routes(routes!(get_job))
        .routes(routes!(complete_job))
        .routes(routes!(fail_job))
        .routes(routes!(heartbeat_job))
        .routes(routes!(release_job))
        // Every queue answer (errors included) tells clients this server speaks the extended
        // protocol, so they can tell "no heartbeat endpoint" (the original) from "no such job".
        .layer(SetResponseHeaderLayer::overriding(
            HeaderName::from_static(EXTENSIONS_HEADER),
            HeaderValue::from_static(EXTENSIONS_VERSION),
        ))
}

fn parse_status(s: &str) -> JobStatus {
    s.parse().unwrap_or(JobStatus::Failed)
}

fn parse_kind(s: &str) -> JobKind {
    s.parse().unwrap_or(JobKind::Ticket)
}

/// The wire form of a job row.
pub(super) fn job_state(j: JobRow, cancel_requested: bool) -> JobState {
    JobState {
        job_id: j.id,
        ticket_id: j.ticket_id,
        project_id: j.project_id,
        kind: parse_kind(&j.kind),
        status: parse_status(&j.status),
        attempt: j.attempt,
        created_at: j.created_at,
        updated_at: j.updated_at,
        claimed_at: j.claimed_at,
        lease_expires_at: j.lease_expires_at,
        finished_at: j.finished_at,
        fail_reason: j.fail_reason,
        fail_message: j.fail_message,
        pr_number: j.pr_number.map(i64::from),
        comment_body: j.comment_body,
        github_comment_id: j.github_comment_id,
        cancel_requested,
    }
}

/// Claim body (optional: no body claims from every project at once), read loosely so each
/// field gets its own clear error.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[schema(as = ClaimRequest, examples(json!({"project_ids": ["6f1c9a9e-8d4b-4c1e-9b55-1d2f3a4b5c6f"], "wait_seconds": 20, "lease_seconds": 300})))]
struct ClaimBody {
    /// Only claim jobs of this project; all projects when absent.
    #[schema(value_type = Option<Uuid>)]
    project_id: Option<Value>,
    /// Only claim jobs of these projects (extension).
    #[schema(value_type = Option<Vec<Uuid>>)]
    project_ids: Option<Value>,
    /// Long poll: wait up to this many seconds for a job before answering 204.
    #[schema(value_type = Option<u32>, minimum = 0, maximum = 30)]
    wait_seconds: Option<Value>,
    /// Lease length the claimer keeps alive with heartbeats; the server default when absent.
    #[schema(value_type = Option<u32>, minimum = 1, maximum = 604800)]
    lease_seconds: Option<Value>,
}

/// Body of job complete (optional; the original accepts none).
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[schema(as = CompleteJobRequest)]
struct CompleteBody {
    /// Only complete the job if this is still its current attempt.
    #[serde(default, deserialize_with = "optional_integer")]
    attempt: Option<i32>,
}

/// Body of job fail (optional; the original accepts none).
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[schema(as = FailRequest, examples(json!({"reason": "AgentFailed", "message": "exit code 1", "attempt": 1})))]
struct FailBody {
    /// Machine-readable reason, e.g. `AgentFailed`, `DeadlineExceeded`, `Cancelled` (at most
    /// 100 characters are kept).
    reason: Option<String>,
    /// Human-readable detail.
    message: Option<String>,
    /// Only fail the job if this is still its current attempt.
    #[serde(default, deserialize_with = "optional_integer")]
    attempt: Option<i32>,
}

/// Body of job release (optional; an addition).
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[schema(as = ReleaseJobRequest, examples(json!({"attempt": 1, "reason": "Unschedulable"})))]
struct ReleaseBody {
    /// Only release the job if this is still its current attempt.
    #[serde(default, deserialize_with = "optional_integer")]
    attempt: Option<i32>,
    /// Why the claimer gives the job back, e.g. `Unschedulable` (logged; at most 100
    /// characters).
    reason: Option<String>,
}

/// Body of a heartbeat (optional).
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[schema(as = HeartbeatRequest, examples(json!({"lease_seconds": 300, "attempt": 1})))]
struct HeartbeatBody {
    /// New lease length from now; the claim's lease length when absent.
    #[serde(default, deserialize_with = "optional_integer")]
    #[schema(minimum = 1, maximum = 604800)]
    lease_seconds: Option<u32>,
    /// Only extend the lease if this is still the job's current attempt.
    #[serde(default, deserialize_with = "optional_integer")]
    attempt: Option<i32>,
}

fn bounded_seconds(field: &str, v: Option<&Value>, min: u64, max: u64) -> ApiResult<Option<u64>> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(v) => json_integer(v)
            .and_then(|n| u64::try_from(n).ok())
            .filter(|n| (min..=max).contains(n))
            .map(Some)
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "{field} must be an integer between {min} and {max}"
                ))
            }),
    }
}

fn parse_project_id(v: &Value, message: &str) -> ApiResult<Uuid> {
    v.as_str()
        .and_then(|s| Uuid::parse_str(s.trim()).ok())
        .ok_or_else(|| ApiError::bad_request(message))
}

/// Claim one pending job (oldest first). 204 when none is available within `wait_seconds`.
#[utoipa::path(post, path = "/api/worker/jobs/start", tag = "queue",
    request_body = Option<ClaimBody>,
    security(("worker_token" = [])),
    responses((status = 200, body = ClaimedJob), (status = 204, description = "No job"),
        (status = 400, description = "A field of the wrong type or out of range"),
        (status = 404, description = "A named project does not exist")))]
async fn start_job(
    State(state): State<AppState>,
    OptionalJsonBody(body): OptionalJsonBody<ClaimBody>,
) -> ApiResult<Response> {
    let mut project_ids = Vec::new();
    match &body.project_id {
        None | Some(Value::Null) => {}
        Some(v) => project_ids.push(parse_project_id(v, "project_id must be a valid UUID")?),
    }
    match &body.project_ids {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => {
            for v in items {
                project_ids.push(parse_project_id(v, "project_ids must be a list of UUIDs")?);
            }
        }
        Some(_) => return Err(ApiError::bad_request("project_ids must be a list of UUIDs")),
    }
    project_ids.sort();
    project_ids.dedup();
    let wait = bounded_seconds(
        "wait_seconds",
        body.wait_seconds.as_ref(),
        0,
        u64::from(MAX_WAIT_SECONDS),
    )?
    .unwrap_or(0);
    let lease = bounded_seconds(
        "lease_seconds",
        body.lease_seconds.as_ref(),
        MIN_LEASE_SECONDS,
        MAX_LEASE_SECONDS,
    )?
    .map_or(state.policy.default_lease_seconds, |s| s as u32);
    let filter = ClaimFilter { project_ids };
    let run_token = run_token::mint();
    // Try at once; only an empty answer needs the projects to be checked (and the wait).
    let mut job = state.db.claim_job(&filter, lease, &run_token.hash).await?;
    if job.is_none() {
        for pid in &filter.project_ids {
            if state.db.get_project(*pid).await?.is_none() {
                return Err(ApiError::not_found("Project not found"));
            }
        }
        if wait > 0 {
            job = claim_with_wait(
                &state.db,
                &state.events,
                &filter,
                lease,
                &run_token.hash,
                Duration::from_secs(wait),
                &state.shutdown,
            )
            .await?;
        }
    }
    state.metrics.record_claim(job.is_some());
    let Some(job) = job else {
        return Ok(StatusCode::NO_CONTENT.into_response());
    };
    let (project, settings) = tokio::try_join!(
        state.db.get_project(job.project_id),
        state.settings.resolve()
    )?;
    let agent_env = settings.agent_env();
    let kind = parse_kind(&job.kind);
    let claimed = ClaimedJob {
        job_id: job.id,
        ticket_id: job.ticket_id,
        project_id: job.project_id,
        kind,
        repo_url: project
            .as_ref()
            .and_then(|p| p.github_url.clone())
            .unwrap_or_default(),
        execution_mode: project
            .as_ref()
            .map_or_else(|| "docker".into(), |p| p.execution_mode.clone()),
        project_path: project
            .as_ref()
            .and_then(|p| p.project_path.as_deref())
            .map(|p| p.trim().to_owned())
            .filter(|p| !p.is_empty()),
        review: (kind == JobKind::Review).then(|| ReviewFields {
            pr_number: job.pr_number.map_or(0, i64::from),
            comment_body: job.comment_body.clone().unwrap_or_default(),
            github_comment_id: job.github_comment_id,
        }),
        agent_env: (!agent_env.is_empty()).then_some(agent_env),
        created_at: Some(job.created_at),
        attempt: Some(job.attempt),
        lease_expires_at: job.lease_expires_at,
        run_token: Some(run_token.token),
    };
    tracing::info!(job = %job.id, ticket = %job.ticket_id, kind = %kind, attempt = job.attempt, "claimed job");
    Ok(Json(claimed).into_response())
}

/// Full state of a job.
#[utoipa::path(get, path = "/api/worker/jobs/{job_id}", tag = "queue",
    params(("job_id" = Uuid, Path)),
    security(("worker_token" = [])),
    responses((status = 200, body = JobState), (status = 404)))]
async fn get_job(
    State(state): State<AppState>,
    PathParams(id): PathParams<Uuid>,
) -> ApiResult<Json<JobState>> {
    let job = state.db.get_job(id).await?.ok_or_else(job_not_found)?;
    let cancel = state
        .db
        .cancel_requested(job.project_id, job.ticket_id)
        .await?
        .unwrap_or(false);
    Ok(Json(job_state(job, cancel)))
}

fn job_not_found() -> ApiError {
    ApiError::not_found("Job not found")
}

fn transition_response(outcome: TransitionOutcome, message: &str) -> ApiResult<Response> {
    match outcome {
        TransitionOutcome::Applied(job) => Ok(Json(JobTransitionResponse {
            message: message.into(),
            job_id: job.id,
        })
        .into_response()),
        TransitionOutcome::NotFound => Err(job_not_found()),
        TransitionOutcome::NotRunning { status, attempt } => Err(ApiError::Conflict(
            json!({"error": "Job not running", "status": status, "attempt": attempt}),
        )),
    }
}

/// Mark a running job completed (409 when it is not running, or runs under another attempt).
#[utoipa::path(post, path = "/api/worker/jobs/{job_id}/complete", tag = "queue",
    params(("job_id" = Uuid, Path)), request_body = Option<CompleteBody>,
    security(("worker_token" = [])),
    responses((status = 200, body = JobTransitionResponse), (status = 404),
        (status = 409, body = JobConflict, description = "The job is not running, or runs under another attempt")))]
async fn complete_job(
    State(state): State<AppState>,
    PathParams(id): PathParams<Uuid>,
    OptionalJsonBody(body): OptionalJsonBody<CompleteBody>,
) -> ApiResult<Response> {
    let outcome = state.db.complete_job(id, body.attempt).await?;
    transition_response(outcome, "Job completed")
}

/// Mark a running job failed, with an optional reason and message.
#[utoipa::path(post, path = "/api/worker/jobs/{job_id}/fail", tag = "queue",
    params(("job_id" = Uuid, Path)), request_body = Option<FailBody>,
    security(("worker_token" = [])),
    responses((status = 200, body = JobTransitionResponse), (status = 404),
        (status = 409, body = JobConflict, description = "The job is not running, or runs under another attempt")))]
async fn fail_job(
    State(state): State<AppState>,
    PathParams(id): PathParams<Uuid>,
    OptionalJsonBody(body): OptionalJsonBody<FailBody>,
) -> ApiResult<Response> {
    let reason: Option<String> = body
        .reason
        .map(|r| r.trim().chars().take(MAX_REASON_CHARS).collect())
        .filter(|r: &String| !r.is_empty());
    let outcome = state
        .db
        .fail_job(id, body.attempt, reason.as_deref(), body.message.as_deref())
        .await?;
    transition_response(outcome, "Job failed")
}

/// Give a running job back to the queue (an addition): it is `pending` again, its lease and its
/// claim's run token end, and the claim does not count against the attempts limit.
#[utoipa::path(post, path = "/api/worker/jobs/{job_id}/release", tag = "queue",
    params(("job_id" = Uuid, Path)), request_body = Option<ReleaseBody>,
    security(("worker_token" = [])),
    responses((status = 200, body = JobTransitionResponse), (status = 400, description = "A field of the wrong type"),
        (status = 404),
        (status = 409, body = JobConflict, description = "The job is not running, or runs under another attempt")))]
async fn release_job(
    State(state): State<AppState>,
    PathParams(id): PathParams<Uuid>,
    OptionalJsonBody(body): OptionalJsonBody<ReleaseBody>,
) -> ApiResult<Response> {
    let reason: String = body
        .reason
        .unwrap_or_default()
        .trim()
        .chars()
        .take(MAX_REASON_CHARS)
        .collect();
    let outcome = state.db.release_job(id, body.attempt).await?;
    if let TransitionOutcome::Applied(job) = &outcome {
        tracing::info!(job = %job.id, ticket = %job.ticket_id, attempt = job.attempt, %reason, "released job back to the queue");
        state.events.notify();
    }
    transition_response(outcome, "Job released")
}

/// Extend a running job's lease; the answer says whether its ticket asked to cancel.
#[utoipa::path(post, path = "/api/worker/jobs/{job_id}/heartbeat", tag = "queue",
    params(("job_id" = Uuid, Path)), request_body = Option<HeartbeatBody>,
    security(("worker_token" = [])),
    responses((status = 200, body = HeartbeatResponse), (status = 404),
        (status = 409, body = JobConflict, description = "The job is not running, or runs under another attempt")))]
async fn heartbeat_job(
    State(state): State<AppState>,
    PathParams(id): PathParams<Uuid>,
    OptionalJsonBody(body): OptionalJsonBody<HeartbeatBody>,
) -> ApiResult<Response> {
    let lease = body.lease_seconds.map(u64::from);
    bounded_seconds(
        "lease_seconds",
        lease.map(Value::from).as_ref(),
        MIN_LEASE_SECONDS,
        MAX_LEASE_SECONDS,
    )?;
    let outcome = state
        .db
        .heartbeat_job(id, body.attempt, body.lease_seconds)
        .await?;
    let job = match outcome {
        TransitionOutcome::Applied(job) => job,
        other => return transition_response(other, ""),
    };
    let cancel = state
        .db
        .cancel_requested(job.project_id, job.ticket_id)
        .await?
        .unwrap_or(false);
    let answer = HeartbeatResponse {
        job_id: job.id,
        status: JobStatus::Running,
        attempt: job.attempt,
        lease_expires_at: job.lease_expires_at.unwrap_or(job.updated_at),
        cancel_requested: cancel,
    };
    Ok(Json(answer).into_response())
}
