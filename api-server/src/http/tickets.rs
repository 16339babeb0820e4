//! Tickets: CRUD, the move to `in_progress` (which enqueues an agent job), cancellation, and the
//! UI's read of a ticket's logs and jobs.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::Value;
use terarchitect_worker_api::JobState;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::error::{ApiError, ApiResult};
use super::extract::{JsonBody, PathParams};
use super::models::*;
use super::projects::{check_title, project_or_404};
use super::queue::job_state;
use crate::db::{IN_PROGRESS, NewTicket, TicketChanges};
use crate::state::AppState;

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_tickets, create_ticket))
        .routes(routes!(get_ticket, patch_ticket, delete_ticket))
        .routes(routes!(list_ticket_logs))
        .routes(routes!(list_ticket_jobs))
        .routes(routes!(cancel_ticket))
}

/// Precondition messages of the move to In Progress (exact texts of the original).
pub mod messages {
    pub const LOCAL_NEEDS_PATH: &str = "Project has execution mode Local; set Project path in project settings before moving a ticket to In Progress.";
    pub const NEEDS_GITHUB_URL: &str =
        "Project must have a GitHub URL set before moving a ticket to In Progress.";
    pub const NEEDS_NODE: &str =
        "Add at least one node to the graph before moving a ticket to In Progress.";
    pub const NEEDS_TOKEN: &str = "GitHub agent token is not set. Go to Settings and add a GitHub agent token (classic PAT with repo scope) so the agent can push branches and open PRs.";
}

fn blank(s: Option<&str>) -> bool {
    s.is_none_or(|v| v.trim().is_empty())
}

fn ids_value(ids: Option<Vec<String>>) -> Value {
    Value::Array(
        ids.unwrap_or_default()
            .into_iter()
            .map(Value::String)
            .collect(),
    )
}

/// List a project's tickets (an unknown project has none).
#[utoipa::path(get, path = "/api/projects/{project_id}/tickets", tag = "tickets",
    params(("project_id" = Uuid, Path)), responses((status = 200, body = [Ticket])))]
async fn list_tickets(
    State(state): State<AppState>,
    PathParams(pid): PathParams<Uuid>,
) -> ApiResult<Json<Vec<Ticket>>> {
    let rows = state.db.list_tickets(pid).await?;
    Ok(Json(rows.into_iter().map(Ticket::from).collect()))
}

/// Create a ticket (creating it directly in `in_progress` does not enqueue a job).
#[utoipa::path(post, path = "/api/projects/{project_id}/tickets", tag = "tickets", request_body = TicketCreate,
    params(("project_id" = Uuid, Path)),
    responses((status = 201, body = Ticket),
        (status = 400, description = "`title` or `column_id` missing or empty, or a field of the wrong type"),
        (status = 404, description = "Unknown project")))]
async fn create_ticket(
    State(state): State<AppState>,
    PathParams(pid): PathParams<Uuid>,
    JsonBody(body): JsonBody<TicketCreate>,
) -> ApiResult<(StatusCode, Json<Ticket>)> {
    let (Some(title), Some(column_id)) = (
        body.title.filter(|t| !t.is_empty()),
        body.column_id.filter(|c| !c.is_empty()),
    ) else {
        return Err(ApiError::bad_request("title and column_id are required"));
    };
    check_title("title", &title)?;
    let row = state
        .db
        .create_ticket(
            pid,
            &NewTicket {
                column_id,
                title,
                description: body.description,
                associated_node_ids: ids_value(body.associated_node_ids),
                associated_edge_ids: ids_value(body.associated_edge_ids),
                priority: body.priority,
                status: body.status,
            },
        )
        .await?;
    Ok((StatusCode::CREATED, Json(row.into())))
}

/// Get a ticket.
#[utoipa::path(get, path = "/api/projects/{project_id}/tickets/{ticket_id}", tag = "tickets",
    params(("project_id" = Uuid, Path), ("ticket_id" = Uuid, Path)),
    responses((status = 200, body = Ticket), (status = 404)))]
async fn get_ticket(
    State(state): State<AppState>,
    PathParams((pid, tid)): PathParams<(Uuid, Uuid)>,
) -> ApiResult<Json<Ticket>> {
    let row = state
        .db
        .get_ticket(pid, tid)
        .await?
        .ok_or_else(|| ApiError::not_found("Ticket not found"))?;
    Ok(Json(row.into()))
}

/// The checks the original makes before a ticket may move to In Progress.
async fn check_can_start(state: &AppState, pid: Uuid) -> ApiResult<()> {
    let project = project_or_404(state, pid).await?;
    if project.execution_mode == "local" {
        if blank(project.project_path.as_deref()) {
            return Err(ApiError::bad_request(messages::LOCAL_NEEDS_PATH));
        }
    } else if blank(project.github_url.as_deref()) {
        return Err(ApiError::bad_request(messages::NEEDS_GITHUB_URL));
    }
    let has_node = state
        .db
        .get_graph(pid)
        .await?
        .is_some_and(|g| g.nodes.0.as_array().is_some_and(|n| !n.is_empty()));
    if !has_node {
        return Err(ApiError::bad_request(messages::NEEDS_NODE));
    }
    if state.settings.resolve().await?.github_token().is_none() {
        return Err(ApiError::bad_request(messages::NEEDS_TOKEN));
    }
    Ok(())
}

/// Update a ticket. Moving it into `in_progress` checks the preconditions (400 with the
/// reason), clears its cancel flag and enqueues a ticket job unless one is pending or running.
#[utoipa::path(patch, path = "/api/projects/{project_id}/tickets/{ticket_id}", tag = "tickets",
    request_body = TicketPatch,
    params(("project_id" = Uuid, Path), ("ticket_id" = Uuid, Path)),
    responses((status = 200, body = Ticket),
        (status = 400, description = "A field of the wrong type or empty, or the project is not ready for In Progress (the reason: its GitHub URL or project path, a graph node, the GitHub token)"),
        (status = 404, description = "Unknown ticket")))]
async fn patch_ticket(
    State(state): State<AppState>,
    PathParams((pid, tid)): PathParams<(Uuid, Uuid)>,
    JsonBody(body): JsonBody<TicketPatch>,
) -> ApiResult<Json<Ticket>> {
    let required = |field: &str, v: Option<Option<String>>| -> ApiResult<Option<String>> {
        match v {
            Some(None) => Err(ApiError::bad_request(format!("{field} must be a string"))),
            Some(Some(s)) if s.is_empty() => {
                Err(ApiError::bad_request(format!("{field} must not be empty")))
            }
            other => Ok(other.flatten()),
        }
    };
    let column_id = required("column_id", body.column_id)?;
    let title = required("title", body.title)?;
    if let Some(t) = &title {
        check_title("title", t)?;
    }
    let current = state
        .db
        .get_ticket(pid, tid)
        .await?
        .ok_or_else(|| ApiError::not_found("Ticket not found"))?;
    if column_id.as_deref() == Some(IN_PROGRESS) && current.column_id != IN_PROGRESS {
        check_can_start(&state, pid).await?;
    }
    let changes = TicketChanges {
        column_id,
        title,
        description: body.description,
        priority: body.priority,
        status: body.status,
        associated_node_ids: body.associated_node_ids.map(ids_value),
        associated_edge_ids: body.associated_edge_ids.map(ids_value),
    };
    let update = state
        .db
        .update_ticket(pid, tid, &changes)
        .await?
        .ok_or_else(|| ApiError::not_found("Ticket not found"))?;
    if let Some(job) = &update.enqueued {
        tracing::info!(job = %job.id, ticket = %tid, "enqueued ticket job");
        state.events.notify();
    }
    Ok(Json(update.ticket.into()))
}

/// Delete a ticket with its logs, pull request row and jobs.
#[utoipa::path(delete, path = "/api/projects/{project_id}/tickets/{ticket_id}", tag = "tickets",
    params(("project_id" = Uuid, Path), ("ticket_id" = Uuid, Path)),
    responses((status = 200, body = Message), (status = 404)))]
async fn delete_ticket(
    State(state): State<AppState>,
    PathParams((pid, tid)): PathParams<(Uuid, Uuid)>,
) -> ApiResult<Json<Message>> {
    if !state.db.delete_ticket(pid, tid).await? {
        return Err(ApiError::not_found("Ticket not found"));
    }
    Ok(Json(Message::new("Ticket deleted")))
}

/// A ticket's agent log, oldest first (an unknown ticket has none).
#[utoipa::path(get, path = "/api/projects/{project_id}/tickets/{ticket_id}/logs", tag = "tickets",
    params(("project_id" = Uuid, Path), ("ticket_id" = Uuid, Path)),
    responses((status = 200, body = [LogView])))]
async fn list_ticket_logs(
    State(state): State<AppState>,
    PathParams((pid, tid)): PathParams<(Uuid, Uuid)>,
) -> ApiResult<Json<Vec<LogView>>> {
    let rows = state.db.list_logs(pid, tid).await?;
    Ok(Json(rows.into_iter().map(LogView::from).collect()))
}

/// A ticket's agent jobs, newest first.
#[utoipa::path(get, path = "/api/projects/{project_id}/tickets/{ticket_id}/jobs", tag = "tickets",
    params(("project_id" = Uuid, Path), ("ticket_id" = Uuid, Path)),
    responses((status = 200, body = [JobState]), (status = 404)))]
async fn list_ticket_jobs(
    State(state): State<AppState>,
    PathParams((pid, tid)): PathParams<(Uuid, Uuid)>,
) -> ApiResult<Json<Vec<JobState>>> {
    let cancel = state
        .db
        .cancel_requested(pid, tid)
        .await?
        .ok_or_else(|| ApiError::not_found("Ticket not found"))?;
    let jobs = state.db.jobs_for_ticket(tid).await?;
    Ok(Json(
        jobs.into_iter().map(|j| job_state(j, cancel)).collect(),
    ))
}

/// Ask the ticket's run to stop. The flag is stored, survives restarts, is seen by the agent
/// and the operator, and is cleared when the ticket moves to In Progress again. Pending jobs
/// of the ticket fail at once with reason `Cancelled`.
#[utoipa::path(post, path = "/api/projects/{project_id}/tickets/{ticket_id}/cancel", tag = "tickets",
    params(("project_id" = Uuid, Path), ("ticket_id" = Uuid, Path)),
    responses((status = 200, body = Message), (status = 404)))]
async fn cancel_ticket(
    State(state): State<AppState>,
    PathParams((pid, tid)): PathParams<(Uuid, Uuid)>,
) -> ApiResult<Json<Message>> {
    let failed = state
        .db
        .request_cancel(pid, tid)
        .await?
        .ok_or_else(|| ApiError::not_found("Ticket not found"))?;
    tracing::info!(ticket = %tid, pending_jobs_failed = failed, "cancellation requested");
    Ok(Json(Message::new("Cancellation requested")))
}
