//! Project notes.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::Value;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::error::{ApiError, ApiResult};
use super::extract::{JsonBody, PathParams};
use super::models::{Message, Note, NoteBody};
use super::projects::check_title;
use crate::db::NoteChanges;
use crate::state::AppState;
use crate::worker_context::normalise_id_list;

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_notes, create_note))
        .routes(routes!(get_note, update_note, delete_note))
}

/// Turns a note body into stored columns: id lists trimmed, de-duplicated and comma-joined
/// (NULL when empty).
fn changes(body: NoteBody) -> ApiResult<NoteChanges> {
    let ids = |field: &str, v: Option<Option<Value>>| -> ApiResult<Option<Option<String>>> {
        let Some(v) = v else { return Ok(None) };
        let list = normalise_id_list(&v.unwrap_or(Value::Null)).ok_or_else(|| {
            ApiError::bad_request(format!(
                "{field} must be a list of ids or a comma-separated string"
            ))
        })?;
        Ok(Some((!list.is_empty()).then(|| list.join(","))))
    };
    if let Some(Some(t)) = &body.title {
        check_title("title", t)?;
    }
    Ok(NoteChanges {
        node_id: ids("node_ids", body.node_ids)?,
        edge_id: ids("edge_ids", body.edge_ids)?,
        title: body.title,
        content: body.content,
    })
}

/// List a project's notes (an unknown project has none).
#[utoipa::path(get, path = "/api/projects/{project_id}/notes", tag = "notes",
    params(("project_id" = Uuid, Path)), responses((status = 200, body = [Note])))]
async fn list_notes(
    State(state): State<AppState>,
    PathParams(pid): PathParams<Uuid>,
) -> ApiResult<Json<Vec<Note>>> {
    Ok(Json(
        state
            .db
            .list_notes(pid)
            .await?
            .into_iter()
            .map(Note::from)
            .collect(),
    ))
}

/// Create a note.
#[utoipa::path(post, path = "/api/projects/{project_id}/notes", tag = "notes", request_body = NoteBody,
    params(("project_id" = Uuid, Path)),
    responses((status = 201, body = Note), (status = 400), (status = 404)))]
async fn create_note(
    State(state): State<AppState>,
    PathParams(pid): PathParams<Uuid>,
    JsonBody(body): JsonBody<NoteBody>,
) -> ApiResult<(StatusCode, Json<Note>)> {
    let row = state.db.create_note(pid, &changes(body)?).await?;
    Ok((StatusCode::CREATED, Json(row.into())))
}

/// Get a note.
#[utoipa::path(get, path = "/api/projects/{project_id}/notes/{note_id}", tag = "notes",
    params(("project_id" = Uuid, Path), ("note_id" = Uuid, Path)),
    responses((status = 200, body = Note), (status = 404)))]
async fn get_note(
    State(state): State<AppState>,
    PathParams((pid, nid)): PathParams<(Uuid, Uuid)>,
) -> ApiResult<Json<Note>> {
    let row = state
        .db
        .get_note(pid, nid)
        .await?
        .ok_or_else(|| ApiError::not_found("Note not found"))?;
    Ok(Json(row.into()))
}

/// Update a note; absent keys keep their value.
#[utoipa::path(patch, path = "/api/projects/{project_id}/notes/{note_id}", tag = "notes", request_body = NoteBody,
    params(("project_id" = Uuid, Path), ("note_id" = Uuid, Path)),
    responses((status = 200, body = Note), (status = 400), (status = 404)))]
async fn update_note(
    State(state): State<AppState>,
    PathParams((pid, nid)): PathParams<(Uuid, Uuid)>,
    JsonBody(body): JsonBody<NoteBody>,
) -> ApiResult<Json<Note>> {
    let row = state
        .db
        .update_note(pid, nid, &changes(body)?)
        .await?
        .ok_or_else(|| ApiError::not_found("Note not found"))?;
    Ok(Json(row.into()))
}

/// Delete a note.
#[utoipa::path(delete, path = "/api/projects/{project_id}/notes/{note_id}", tag = "notes",
    params(("project_id" = Uuid, Path), ("note_id" = Uuid, Path)),
    responses((status = 200, body = Message), (status = 404)))]
async fn delete_note(
    State(state): State<AppState>,
    PathParams((pid, nid)): PathParams<(Uuid, Uuid)>,
) -> ApiResult<Json<Message>> {
    if !state.db.delete_note(pid, nid).await? {
        return Err(ApiError::not_found("Note not found"));
    }
    Ok(Json(Message::new("Note deleted")))
}
