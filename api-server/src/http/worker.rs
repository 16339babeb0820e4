//! Agent-facing ticket endpoints (worker auth): worker-context, logs, ticket completion, the
//! cancel flag, and enqueueing review jobs.

use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Value, json};
use terarchitect_worker_api::{
    CancelRequested, CompleteTicketResponse, JobState, LogResponse, WorkerContext,
};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::auth::RunCaller;
use super::error::{ApiError, ApiResult};
use super::extract::{JsonBody, OptionalJsonBody, PathParams, json_integer};
use super::queue::job_state;
use crate::context_cache::ContextVersion;
use crate::db::{DbError, NewLog, NewReviewJob};
use crate::settings::Resolved;
use crate::state::AppState;
use crate::worker_context::{self, COLUMN_QUERY_LIMIT, ContextInputs};

/// Longest stored step name (characters).
pub const MAX_STEP_CHARS: usize = 100;

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_worker_context))
        .routes(routes!(post_log))
        .routes(routes!(complete_ticket))
        .routes(routes!(cancel_requested))
        .routes(routes!(enqueue_review_job))
}

fn ticket_not_found() -> ApiError {
    ApiError::not_found("Ticket not found")
}

/// Full context for the agent working on a ticket.
#[utoipa::path(get, path = "/api/projects/{project_id}/tickets/{ticket_id}/worker-context", tag = "worker",
    params(("project_id" = Uuid, Path), ("ticket_id" = Uuid, Path)),
    security(("worker_token" = [])),
    responses((status = 200, body = WorkerContext), (status = 404)))]
async fn get_worker_context(
    State(state): State<AppState>,
    run_caller: Option<Extension<RunCaller>>,
    PathParams((pid, tid)): PathParams<(Uuid, Uuid)>,
) -> ApiResult<Response> {
    let failed = |e: DbError| ApiError::Internal(format!("Failed to load context: {e}"));
    // The revision is read before the data, so a document is never older than its version.
    let (revision, settings) = tokio::try_join!(
        state.db.context_revision(pid, tid),
        state.settings.resolve()
    )
    .map_err(failed)?;
    let revision = revision.ok_or_else(ticket_not_found)?;
    // A run token's holder gets its secrets from its own environment: blanking them here keeps
    // a stolen run token from reading every secret in the settings.
    let version = ContextVersion {
        project_revision: revision,
        settings_generation: settings.generation(),
        secrets_redacted: state.policy.redact_context_secrets || run_caller.is_some(),
    };
    let body = match state.context_cache.get(tid, version) {
        Some(body) => body,
        None => {
            let body = build_worker_context(&state, pid, tid, &settings, version).await?;
            state.context_cache.put(tid, version, body.clone());
            body
        }
    };
    Ok(([(CONTENT_TYPE, "application/json")], body).into_response())
}

/// Loads everything worker-context shows and serialises it.
async fn build_worker_context(
    state: &AppState,
    pid: Uuid,
    tid: Uuid,
    settings: &Resolved,
    version: ContextVersion,
) -> ApiResult<Bytes> {
    let failed = |e: DbError| ApiError::Internal(format!("Failed to load context: {e}"));
    let (project, ticket, graph, notes, backlog, in_progress, done) = tokio::try_join!(
        state.db.get_project(pid),
        state.db.get_ticket(pid, tid),
        state.db.get_graph(pid),
        state.db.list_notes(pid),
        state
            .db
            .recent_tickets_in_column(pid, "backlog", worker_context::BACKLOG_LIMIT as i64),
        state
            .db
            .recent_tickets_in_column(pid, "in_progress", COLUMN_QUERY_LIMIT),
        state
            .db
            .recent_tickets_in_column(pid, "done", COLUMN_QUERY_LIMIT),
    )
    .map_err(failed)?;
    let (Some(project), Some(ticket)) = (project, ticket) else {
        return Err(ticket_not_found());
    };
    let mut agent_settings = settings.agent_settings();
    if version.secrets_redacted {
        worker_context::redact_secrets(&mut agent_settings);
    }
    let ctx = worker_context::build(ContextInputs {
        project: &project,
        ticket: &ticket,
        graph: graph.as_ref().map(|g| (&g.nodes.0, &g.edges.0)),
        notes: &notes,
        backlog,
        in_progress,
        done,
        agent_settings,
    });
    let body = serde_json::to_vec(&ctx)
        .map_err(|e| ApiError::Internal(format!("serialising worker-context: {e}")))?;
    Ok(Bytes::from(body))
}

/// Body of a log POST; wrong field types are rejected.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[schema(as = LogEntry, examples(json!({"session_id": "s-1", "step": "plan", "summary": "Planned the change"})))]
struct LogBody {
    /// Director session id (required; not blank).
    #[schema(required = true, value_type = String, pattern = r"\S")]
    session_id: Option<String>,
    /// Step name (blank: `step`; truncated to 100 characters).
    step: Option<String>,
    /// One-line summary.
    summary: Option<String>,
    /// Full prompt or output.
    raw_output: Option<String>,
    /// Whether the step succeeded (`false` for the final entry of a failed run; default `true`).
    success: Option<bool>,
}

/// Append an entry to the ticket's agent log.
#[utoipa::path(post, path = "/api/projects/{project_id}/tickets/{ticket_id}/logs", tag = "worker",
    params(("project_id" = Uuid, Path), ("ticket_id" = Uuid, Path)),
    request_body = LogBody,
    security(("worker_token" = [])),
    responses((status = 200, body = LogResponse), (status = 404)))]
async fn post_log(
    State(state): State<AppState>,
    PathParams((pid, tid)): PathParams<(Uuid, Uuid)>,
    JsonBody(body): JsonBody<LogBody>,
) -> ApiResult<Json<LogResponse>> {
    let session_id = body.session_id.as_deref().map(str::trim).unwrap_or("");
    if session_id.is_empty() {
        if !state.db.ticket_exists(pid, tid).await? {
            return Err(ticket_not_found());
        }
        return Err(ApiError::bad_request("session_id is required"));
    }
    let step = body
        .step
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .unwrap_or("step");
    let log = NewLog {
        project_id: pid,
        ticket_id: tid,
        session_id: session_id.to_owned(),
        step: step.chars().take(MAX_STEP_CHARS).collect(),
        summary: body
            .summary
            .as_deref()
            .map(str::trim)
            .unwrap_or("")
            .to_owned(),
        raw_output: body.raw_output,
        success: body.success.unwrap_or(true),
    };
    let id = state.logs.write(log).await?.ok_or_else(ticket_not_found)?;
    Ok(Json(LogResponse {
        id,
        message: "Logged".into(),
    }))
}

/// Body of ticket complete (optional): values are read leniently, as the original does.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[schema(as = CompleteTicketRequest, examples(json!({"pr_url": "https://github.com/acme/shop/pull/7", "pr_number": 7, "summary": "Added GET /version"})))]
struct CompleteBody {
    /// URL of the opened pull request (recorded with the number when given).
    #[schema(value_type = Option<String>)]
    pr_url: Option<Value>,
    /// Number of the opened pull request: an integer, or a string holding one; any other
    /// value is stored as no number.
    #[schema(value_type = Value, required = false)]
    pr_number: Option<Value>,
    /// Summary of the work (kept in the ticket's log).
    #[schema(value_type = Option<String>)]
    summary: Option<Value>,
    /// Review flow: the reply posted on the pull request (kept in the ticket's log).
    #[schema(value_type = Option<String>)]
    review_comment_body: Option<Value>,
}

fn optional_string(field: &str, v: Option<Value>) -> ApiResult<Option<String>> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(ApiError::bad_request(format!("{field} must be a string"))),
    }
}

/// `int()`-like reading of a pull request number; anything unreadable is null.
fn lenient_int(v: Option<&Value>) -> Option<i32> {
    let n = match v? {
        Value::Number(n) => n
            .as_i64()
            .or_else(|| n.as_f64().map(|f| f.trunc() as i64))?,
        Value::String(s) => s.trim().parse::<i64>().ok()?,
        _ => return None,
    };
    i32::try_from(n).ok()
}

/// Mark the ticket complete: status `completed`, column `in_review`, and the pull request
/// recorded when `pr_url` is given. The summary and review reply are kept in the ticket's log.
#[utoipa::path(post, path = "/api/projects/{project_id}/tickets/{ticket_id}/complete", tag = "worker",
    params(("project_id" = Uuid, Path), ("ticket_id" = Uuid, Path)),
    request_body = Option<CompleteBody>,
    security(("worker_token" = [])),
    responses((status = 200, body = CompleteTicketResponse), (status = 404)))]
async fn complete_ticket(
    State(state): State<AppState>,
    PathParams((pid, tid)): PathParams<(Uuid, Uuid)>,
    OptionalJsonBody(body): OptionalJsonBody<CompleteBody>,
) -> ApiResult<Json<CompleteTicketResponse>> {
    let pr_url = optional_string("pr_url", body.pr_url)?
        .map(|u| u.trim().to_owned())
        .filter(|u| !u.is_empty());
    let pr_number = lenient_int(body.pr_number.as_ref());
    let summary = optional_string("summary", body.summary)?;
    let reply = optional_string("review_comment_body", body.review_comment_body)?;
    if !state
        .db
        .complete_ticket(pid, tid, pr_url.as_deref(), pr_number)
        .await?
    {
        return Err(ticket_not_found());
    }
    if summary.is_some() || reply.is_some() {
        state
            .db
            .insert_log(&NewLog {
                project_id: pid,
                ticket_id: tid,
                session_id: "api".into(),
                step: "ticket_completed".into(),
                summary: summary.unwrap_or_default(),
                raw_output: reply,
                success: true,
            })
            .await?;
    }
    Ok(Json(CompleteTicketResponse {
        message: "Complete".into(),
        ticket_id: tid,
    }))
}

/// Whether the ticket's run should stop.
#[utoipa::path(get, path = "/api/projects/{project_id}/tickets/{ticket_id}/cancel-requested", tag = "worker",
    params(("project_id" = Uuid, Path), ("ticket_id" = Uuid, Path)),
    security(("worker_token" = [])),
    responses((status = 200, body = CancelRequested), (status = 404)))]
async fn cancel_requested(
    State(state): State<AppState>,
    PathParams((pid, tid)): PathParams<(Uuid, Uuid)>,
) -> ApiResult<Json<CancelRequested>> {
    let flag = state
        .db
        .cancel_requested(pid, tid)
        .await?
        .ok_or_else(ticket_not_found)?;
    Ok(Json(CancelRequested {
        cancel_requested: flag,
    }))
}

/// Body of a review job.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[schema(as = EnqueueReviewRequest, examples(json!({"pr_number": 7, "comment_body": "Please add a test", "github_comment_id": 123})))]
struct ReviewBody {
    /// Pull request number (required).
    #[schema(required = true, value_type = i32, minimum = 1, maximum = 2147483647)]
    pr_number: Option<Value>,
    /// The reviewer's comment.
    #[schema(value_type = Option<String>)]
    comment_body: Option<Value>,
    /// GitHub id of the comment.
    #[schema(value_type = Option<i64>)]
    github_comment_id: Option<Value>,
}

/// Enqueue a review job: address `comment_body` on pull request `pr_number` of the ticket.
/// 409 when the ticket already has a pending or running job.
#[utoipa::path(post, path = "/api/projects/{project_id}/tickets/{ticket_id}/review-jobs", tag = "worker",
    params(("project_id" = Uuid, Path), ("ticket_id" = Uuid, Path)),
    request_body = ReviewBody,
    security(("worker_token" = [])),
    responses((status = 201, body = JobState), (status = 404),
        (status = 409, description = "The ticket already has a pending or running job (`job_id`)")))]
async fn enqueue_review_job(
    State(state): State<AppState>,
    PathParams((pid, tid)): PathParams<(Uuid, Uuid)>,
    JsonBody(body): JsonBody<ReviewBody>,
) -> ApiResult<(StatusCode, Json<JobState>)> {
    let pr_number = body
        .pr_number
        .as_ref()
        .and_then(json_integer)
        .filter(|n| *n > 0)
        .and_then(|n| i32::try_from(n).ok())
        .ok_or_else(|| ApiError::bad_request("pr_number (positive integer) is required"))?;
    let comment_body = optional_string("comment_body", body.comment_body)?.unwrap_or_default();
    let github_comment_id = match body.github_comment_id {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            json_integer(&v)
                .ok_or_else(|| ApiError::bad_request("github_comment_id must be an integer"))?,
        ),
    };
    let review = NewReviewJob {
        pr_number,
        comment_body,
        github_comment_id,
    };
    let job = match state.db.enqueue_review_job(pid, tid, &review).await {
        Ok(job) => job,
        Err(DbError::NotFound(_)) => return Err(ticket_not_found()),
        Err(DbError::Conflict(active)) => {
            return Err(ApiError::Conflict(json!({
                "error": "Ticket already has a pending or running job",
                "job_id": active,
            })));
        }
        Err(e) => return Err(e.into()),
    };
    state.events.notify();
    let cancel = state.db.cancel_requested(pid, tid).await?.unwrap_or(false);
    Ok((StatusCode::CREATED, Json(job_state(job, cancel))))
}

#[cfg(test)]
mod tests {
    use super::lenient_int;
    use serde_json::json;

    #[test]
    fn pr_numbers_are_read_like_python_int() {
        assert_eq!(lenient_int(Some(&json!(42))), Some(42));
        assert_eq!(lenient_int(Some(&json!(" 7 "))), Some(7));
        assert_eq!(lenient_int(Some(&json!(4.9))), Some(4));
        assert_eq!(lenient_int(Some(&json!("4.2"))), None);
        assert_eq!(lenient_int(Some(&json!("abc"))), None);
        assert_eq!(lenient_int(Some(&json!(null))), None);
        assert_eq!(lenient_int(None), None);
    }
}
