//! Memory endpoints (worker auth): index, retrieve and delete passages.

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use serde_json::Value;
use terarchitect_worker_api::{MemoryDocsResponse, MemoryRetrieveResponse};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::error::{ApiError, ApiResult};
use super::extract::{JsonBody, PathParams, json_integer};
use super::projects::project_or_404;
use crate::memory::{DEFAULT_TOP_K, bootstrap_doc};
use crate::state::AppState;

/// Most passages a retrieval returns per query.
pub const MAX_TOP_K: u64 = 1000;

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(index_memory))
        .routes(routes!(retrieve_memory))
        .routes(routes!(delete_memory))
}

/// Body of memory index and delete.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[schema(as = MemoryDocsRequest, examples(json!({"docs": ["The API uses axum."]})))]
struct DocsBody {
    /// Passages (exact texts for delete).
    #[schema(required = true, value_type = Vec<String>, min_items = 1)]
    docs: Option<Value>,
}

/// Body of memory retrieve.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[schema(as = MemoryRetrieveRequest, examples(json!({"queries": ["web framework"], "num_to_retrieve": 5})))]
struct RetrieveBody {
    /// One or more queries.
    #[schema(required = true, value_type = Vec<String>, min_items = 1)]
    queries: Option<Value>,
    /// Passages per query (default 200, like the original).
    #[schema(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    num_to_retrieve: Option<Value>,
}

/// A non-empty list of strings, or the given 400 message.
fn string_list(v: Option<Value>, message: &str) -> ApiResult<Vec<String>> {
    let items = match v {
        Some(Value::Array(items)) if !items.is_empty() => items,
        _ => return Err(ApiError::bad_request(message)),
    };
    items
        .into_iter()
        .map(|i| match i {
            Value::String(s) => Ok(s),
            _ => Err(ApiError::bad_request(message)),
        })
        .collect()
}

const DOCS_REQUIRED: &str = "docs (list of strings) is required";
const QUERIES_REQUIRED: &str = "queries (list of strings) is required";

fn memory_failed(what: &'static str) -> impl Fn(crate::db::DbError) -> ApiError {
    move |e| ApiError::Internal(format!("{what}: {e}"))
}

/// Index passages into the project's memory (idempotent per exact text).
#[utoipa::path(post, path = "/api/projects/{project_id}/memory/index", tag = "memory",
    params(("project_id" = Uuid, Path)), request_body = DocsBody,
    security(("worker_token" = [])),
    responses((status = 200, body = MemoryDocsResponse), (status = 404)))]
async fn index_memory(
    State(state): State<AppState>,
    PathParams(pid): PathParams<Uuid>,
    JsonBody(body): JsonBody<DocsBody>,
) -> ApiResult<Json<MemoryDocsResponse>> {
    project_or_404(&state, pid).await?;
    let docs = string_list(body.docs, DOCS_REQUIRED)?;
    let settings = state.settings.resolve().await?;
    state
        .memory
        .index(pid, &docs, &settings)
        .await
        .map_err(memory_failed("Index failed"))?;
    Ok(Json(MemoryDocsResponse {
        message: "Indexed".into(),
        count: docs.len(),
    }))
}

/// Retrieve the best passages for each query (BM25, or embeddings when configured).
#[utoipa::path(post, path = "/api/projects/{project_id}/memory/retrieve", tag = "memory",
    params(("project_id" = Uuid, Path)), request_body = RetrieveBody,
    security(("worker_token" = [])),
    responses((status = 200, body = MemoryRetrieveResponse), (status = 404)))]
async fn retrieve_memory(
    State(state): State<AppState>,
    PathParams(pid): PathParams<Uuid>,
    JsonBody(body): JsonBody<RetrieveBody>,
) -> ApiResult<Json<MemoryRetrieveResponse>> {
    let project = project_or_404(&state, pid).await?;
    let queries = string_list(body.queries, QUERIES_REQUIRED)?;
    let top_k = match body.num_to_retrieve {
        None | Some(Value::Null) => DEFAULT_TOP_K,
        Some(v) => json_integer(&v)
            .and_then(|n| u64::try_from(n).ok())
            .filter(|n| (1..=MAX_TOP_K).contains(n))
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "num_to_retrieve must be an integer between 1 and {MAX_TOP_K}"
                ))
            })? as usize,
    };
    let settings = state.settings.resolve().await?;
    let failed = memory_failed("Retrieve failed");
    let mut results = state
        .memory
        .retrieve(pid, &queries, top_k, &settings)
        .await
        .map_err(&failed)?;
    if results.iter().all(|r| r.docs.is_empty()) {
        // As the original: make sure the project's bootstrap passage exists, then try once more.
        let doc = bootstrap_doc(&project.name, project.description.as_deref());
        if state
            .memory
            .index(pid, &[doc], &settings)
            .await
            .map_err(&failed)?
            > 0
        {
            results = state
                .memory
                .retrieve(pid, &queries, top_k, &settings)
                .await
                .map_err(&failed)?;
        }
    }
    Ok(Json(MemoryRetrieveResponse { results }))
}

/// Delete passages by exact text.
#[utoipa::path(post, path = "/api/projects/{project_id}/memory/delete", tag = "memory",
    params(("project_id" = Uuid, Path)), request_body = DocsBody,
    security(("worker_token" = [])),
    responses((status = 200, body = MemoryDocsResponse), (status = 404)))]
async fn delete_memory(
    State(state): State<AppState>,
    PathParams(pid): PathParams<Uuid>,
    JsonBody(body): JsonBody<DocsBody>,
) -> ApiResult<Json<MemoryDocsResponse>> {
    project_or_404(&state, pid).await?;
    let docs = string_list(body.docs, DOCS_REQUIRED)?;
    state
        .memory
        .delete(pid, &docs)
        .await
        .map_err(memory_failed("Delete failed"))?;
    Ok(Json(MemoryDocsResponse {
        message: "Deleted".into(),
        count: docs.len(),
    }))
}
