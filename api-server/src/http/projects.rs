//! Projects, their graph and their kanban board.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::error::{ApiError, ApiResult};
use super::extract::{JsonBody, OptionalJsonBody, PathParams};
use super::models::*;
use crate::db::{DefaultTicket, NewProject, ProjectChanges};
use crate::memory::bootstrap_doc;
use crate::state::AppState;

/// Title of the ticket every new project (that is not an existing repository) starts with.
pub const SETUP_TICKET_TITLE: &str = "Project setup";

const SETUP_TICKET_DESCRIPTION: &str = "Lay out the repository for this project. From the architecture graph, \
create only the folder structure its components need and a .gitignore that suits the technologies in the graph. \
Configuration files may be added, empty or minimal. Do not write application code.";

/// Longest project name, ticket title or note title (VARCHAR(255) in the original).
pub const MAX_TITLE_CHARS: usize = 255;

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_projects, create_project))
        .routes(routes!(get_project, update_project, delete_project))
        .routes(routes!(get_graph, update_graph))
        .routes(routes!(get_kanban, update_kanban))
}

pub(super) fn check_title(field: &str, value: &str) -> ApiResult<()> {
    if value.chars().count() > MAX_TITLE_CHARS {
        return Err(ApiError::bad_request(format!(
            "{field} must be at most {MAX_TITLE_CHARS} characters"
        )));
    }
    Ok(())
}

/// The items of a stored JSON list (anything else reads as empty).
fn into_list(v: Value) -> Vec<Value> {
    match v {
        Value::Array(items) => items,
        _ => Vec::new(),
    }
}

fn execution_mode(raw: Option<&str>) -> String {
    if raw.is_some_and(|m| m.trim().eq_ignore_ascii_case("local")) {
        "local".into()
    } else {
        "docker".into()
    }
}

pub(super) async fn project_or_404(state: &AppState, id: Uuid) -> ApiResult<crate::db::ProjectRow> {
    state
        .db
        .get_project(id)
        .await?
        .ok_or_else(|| ApiError::not_found("Project not found"))
}

/// List projects.
#[utoipa::path(get, path = "/api/projects", tag = "projects",
    responses((status = 200, body = [Project])))]
async fn list_projects(State(state): State<AppState>) -> ApiResult<Json<Vec<Project>>> {
    let rows = state.db.list_projects().await?;
    Ok(Json(rows.into_iter().map(Project::from).collect()))
}

/// Create a project with its graph, its board (four columns) and, unless `is_existing_repo`,
/// the "Project setup" ticket.
#[utoipa::path(post, path = "/api/projects", tag = "projects", request_body = ProjectCreate,
    responses((status = 201, body = Project), (status = 400, description = "Invalid body")))]
async fn create_project(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<ProjectCreate>,
) -> ApiResult<(StatusCode, Json<Project>)> {
    let name = match body.name {
        None => "Untitled Project".to_owned(),
        Some(None) => return Err(ApiError::bad_request("name must be a string")),
        Some(Some(n)) => n,
    };
    check_title("name", &name)?;
    let existing_repo = matches!(body.is_existing_repo, Some(Value::Bool(true)));
    let default_tickets = if existing_repo {
        Vec::new()
    } else {
        vec![DefaultTicket {
            title: SETUP_TICKET_TITLE.into(),
            description: SETUP_TICKET_DESCRIPTION.into(),
            associated_node_ids: json!(["*"]),
            associated_edge_ids: json!(["*"]),
            priority: "medium".into(),
            status: "todo".into(),
        }]
    };
    let row = state
        .db
        .create_project(&NewProject {
            name,
            description: body.description,
            github_url: body.github_url,
            execution_mode: execution_mode(body.execution_mode.as_deref()),
            project_path: body.project_path,
            default_tickets,
        })
        .await?;
    let doc = bootstrap_doc(&row.name, row.description.as_deref());
    match state.settings.resolve().await {
        Ok(settings) => {
            if let Err(e) = state.memory.index(row.id, &[doc], &settings).await {
                tracing::warn!(project = %row.id, error = %e, "bootstrap memory indexing failed");
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot read settings for bootstrap memory"),
    }
    Ok((StatusCode::CREATED, Json(row.into())))
}

/// Get a project.
#[utoipa::path(get, path = "/api/projects/{project_id}", tag = "projects",
    params(("project_id" = Uuid, Path)),
    responses((status = 200, body = Project), (status = 404)))]
async fn get_project(
    State(state): State<AppState>,
    PathParams(id): PathParams<Uuid>,
) -> ApiResult<Json<Project>> {
    Ok(Json(project_or_404(&state, id).await?.into()))
}

/// Update a project; absent keys keep their value.
#[utoipa::path(put, path = "/api/projects/{project_id}", tag = "projects", request_body = ProjectUpdate,
    params(("project_id" = Uuid, Path)),
    responses((status = 200, body = Project), (status = 400), (status = 404)))]
async fn update_project(
    State(state): State<AppState>,
    PathParams(id): PathParams<Uuid>,
    JsonBody(body): JsonBody<ProjectUpdate>,
) -> ApiResult<Json<Project>> {
    let name = match body.name {
        Some(None) => return Err(ApiError::bad_request("name must be a string")),
        Some(Some(n)) => {
            check_title("name", &n)?;
            Some(n)
        }
        None => None,
    };
    let changes = ProjectChanges {
        name,
        description: body.description,
        github_url: body.github_url,
        execution_mode: body.execution_mode.map(|m| execution_mode(m.as_deref())),
        project_path: body
            .project_path
            .map(|p| p.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty())),
    };
    let row = state
        .db
        .update_project(id, &changes)
        .await?
        .ok_or_else(|| ApiError::not_found("Project not found"))?;
    Ok(Json(row.into()))
}

/// Delete a project and everything it owns (jobs included). Body `{"confirm_name": <name>}`.
#[utoipa::path(delete, path = "/api/projects/{project_id}", tag = "projects", request_body = DeleteConfirmation,
    params(("project_id" = Uuid, Path)),
    responses((status = 200, body = Message),
        (status = 400, description = "`confirm_name` missing or not the project's name"),
        (status = 404, description = "Unknown project")))]
async fn delete_project(
    State(state): State<AppState>,
    PathParams(id): PathParams<Uuid>,
    OptionalJsonBody(body): OptionalJsonBody<DeleteConfirmation>,
) -> ApiResult<Json<Message>> {
    let project = project_or_404(&state, id).await?;
    if body.confirm_name.as_deref().map(str::trim) != Some(project.name.as_str()) {
        return Err(ApiError::bad_request(
            "Name does not match. Send confirm_name equal to the project name to confirm deletion.",
        ));
    }
    state.db.delete_project(id).await?;
    Ok(Json(Message::new("Project deleted")))
}

/// Get the project's graph.
#[utoipa::path(get, path = "/api/projects/{project_id}/graph", tag = "graph",
    params(("project_id" = Uuid, Path)),
    responses((status = 200, body = Graph), (status = 404)))]
async fn get_graph(
    State(state): State<AppState>,
    PathParams(id): PathParams<Uuid>,
) -> ApiResult<Json<Graph>> {
    let g = state
        .db
        .get_graph(id)
        .await?
        .ok_or_else(|| ApiError::not_found("Graph not found"))?;
    Ok(Json(Graph {
        id: g.id,
        project_id: g.project_id,
        nodes: into_list(g.nodes.0),
        edges: into_list(g.edges.0),
        version: g.version,
    }))
}

/// Replace the graph's nodes and/or edges; the version always goes up by one.
#[utoipa::path(put, path = "/api/projects/{project_id}/graph", tag = "graph", request_body = GraphUpdate,
    params(("project_id" = Uuid, Path)),
    responses((status = 200, body = GraphVersion), (status = 400), (status = 404)))]
async fn update_graph(
    State(state): State<AppState>,
    PathParams(id): PathParams<Uuid>,
    JsonBody(body): JsonBody<GraphUpdate>,
) -> ApiResult<Json<GraphVersion>> {
    let as_value =
        |v: Option<Option<Vec<Value>>>| v.map(|list| Value::Array(list.unwrap_or_default()));
    let (nodes, edges) = (as_value(body.nodes), as_value(body.edges));
    let version = state
        .db
        .update_graph(id, nodes.as_ref(), edges.as_ref())
        .await?
        .ok_or_else(|| ApiError::not_found("Graph not found"))?;
    Ok(Json(GraphVersion { version }))
}

/// Get the kanban board.
#[utoipa::path(get, path = "/api/projects/{project_id}/kanban", tag = "kanban",
    params(("project_id" = Uuid, Path)),
    responses((status = 200, body = Kanban), (status = 404)))]
async fn get_kanban(
    State(state): State<AppState>,
    PathParams(id): PathParams<Uuid>,
) -> ApiResult<Json<Kanban>> {
    let k = state
        .db
        .get_kanban(id)
        .await?
        .ok_or_else(|| ApiError::not_found("Kanban board not found"))?;
    Ok(Json(Kanban {
        id: k.id,
        project_id: k.project_id,
        columns: into_list(k.columns.0),
    }))
}

/// Replace the board's columns (tickets are unaffected).
#[utoipa::path(put, path = "/api/projects/{project_id}/kanban", tag = "kanban", request_body = KanbanUpdate,
    params(("project_id" = Uuid, Path)),
    responses((status = 200, body = KanbanColumns), (status = 400), (status = 404)))]
async fn update_kanban(
    State(state): State<AppState>,
    PathParams(id): PathParams<Uuid>,
    JsonBody(body): JsonBody<KanbanUpdate>,
) -> ApiResult<Json<KanbanColumns>> {
    let columns = Value::Array(body.columns.unwrap_or_default());
    let stored = state
        .db
        .update_kanban(id, &columns)
        .await?
        .ok_or_else(|| ApiError::not_found("Kanban board not found"))?;
    Ok(Json(KanbanColumns {
        columns: into_list(stored),
    }))
}
