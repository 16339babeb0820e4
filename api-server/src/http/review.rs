//! The review page's endpoints (admin API), with the original's paths, shapes, status codes and
//! error strings, on the GitHub REST API instead of the `gh` CLI: a project's pull requests, a
//! ticket's pull request, and commenting on, approving and merging it. GitHub failures answer
//! 502 `{"error", "detail"}`.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use reqwest::Method;
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::error::ApiError;
use super::extract::{OptionalJsonBody, PathParams};
use crate::db::{DbError, ProjectRow, TicketRow};
use crate::github::GitHubError;
use crate::review::store::{self, ProjectPr};
use crate::review::sync::comment_from_json;
use crate::review::{repo_slug, view};
use crate::state::AppState;

/// Longest comment or review body sent to GitHub (characters).
pub const MAX_COMMENT_CHARS: usize = 60_000;
/// PR rows a project's review list looks at.
const PROJECT_PR_ROWS: i64 = 50;
/// Entries of a project's review list.
const PROJECT_PR_LIST: usize = 20;
/// Concurrent GitHub reads of a project's review list.
const LIST_CONCURRENCY: usize = 8;

const NO_PR: &str = "No PR for this ticket";
const NO_GITHUB_URL: &str = "Project has no valid GitHub URL";

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(project_review))
        .routes(routes!(ticket_review))
        .routes(routes!(post_comment))
        .routes(routes!(approve))
        .routes(routes!(merge))
}

/// An error of a review endpoint: an API error, or GitHub's (502 with `detail`).
#[derive(Debug)]
enum ReviewHttpError {
    Api(ApiError),
    GitHub { error: &'static str, detail: String },
}

impl From<ApiError> for ReviewHttpError {
    fn from(e: ApiError) -> Self {
        Self::Api(e)
    }
}

impl From<DbError> for ReviewHttpError {
    fn from(e: DbError) -> Self {
        Self::Api(e.into())
    }
}

impl IntoResponse for ReviewHttpError {
    fn into_response(self) -> Response {
        match self {
            Self::Api(e) => e.into_response(),
            Self::GitHub { error, detail } => {
                tracing::warn!(error, %detail, "GitHub call of a review endpoint failed");
                (
                    StatusCode::BAD_GATEWAY,
                    Json(json!({"error": error, "detail": detail})),
                )
                    .into_response()
            }
        }
    }
}

type ReviewResult<T> = Result<T, ReviewHttpError>;

fn github_failed(error: &'static str) -> impl Fn(GitHubError) -> ReviewHttpError {
    move |e| ReviewHttpError::GitHub {
        error,
        detail: e.to_string(),
    }
}

async fn project_or_404(state: &AppState, pid: Uuid) -> ReviewResult<ProjectRow> {
    Ok(state
        .db
        .get_project(pid)
        .await?
        .ok_or_else(|| ApiError::not_found("Project not found"))?)
}

async fn ticket_or_404(state: &AppState, pid: Uuid, tid: Uuid) -> ReviewResult<TicketRow> {
    Ok(state
        .db
        .get_ticket(pid, tid)
        .await?
        .ok_or_else(|| ApiError::not_found("Ticket not found"))?)
}

/// The ticket's PR number and the repository slug, or the 404 of the write endpoints.
async fn pr_of(state: &AppState, pid: Uuid, tid: Uuid) -> ReviewResult<(i32, String)> {
    let ticket = ticket_or_404(state, pid, tid).await?;
    let project = project_or_404(state, pid).await?;
    let slug = project.github_url.as_deref().and_then(repo_slug);
    match (ticket.pr_number, slug) {
        (Some(n), Some(slug)) => Ok((n, slug)),
        _ => Err(ApiError::not_found(NO_PR).into()),
    }
}

async fn token(state: &AppState) -> ReviewResult<Option<String>> {
    Ok(state.review.token().await?)
}

/// Sends a write to GitHub with the configured token; a failure is a 502 with `error`.
async fn send_to_github(
    state: &AppState,
    method: Method,
    path: &str,
    body: &Value,
    error: &'static str,
) -> ReviewResult<Value> {
    let token = token(state).await?;
    state
        .review
        .github()
        .send(token.as_deref(), method, path, body)
        .await
        .map_err(github_failed(error))
}

fn truncate(text: &str) -> String {
    if text.chars().count() > MAX_COMMENT_CHARS {
        let head: String = text.chars().take(MAX_COMMENT_CHARS - 3).collect();
        format!("{head}...")
    } else {
        text.to_owned()
    }
}

fn pr_state(pull: &Value) -> (String, bool) {
    let state = match pull.get("state").and_then(Value::as_str) {
        Some(s @ ("open" | "closed")) => s.to_owned(),
        _ => "unknown".to_owned(),
    };
    let merged = pull.get("merged").and_then(Value::as_bool).unwrap_or(false);
    (state, merged)
}

/// The project's pull requests for the review page: up to 20, open ones first, then newest
/// first; closed unmerged ones are left out. An unreadable pull request shows as `unknown`.
#[utoipa::path(get, path = "/api/projects/{project_id}/review", tag = "review",
    params(("project_id" = Uuid, Path)),
    responses((status = 200, description = "[{id, title, pr_url, pr_number, pr_state, merged}]"),
        (status = 404)))]
async fn project_review(
    State(state): State<AppState>,
    PathParams(pid): PathParams<Uuid>,
) -> ReviewResult<Json<Vec<Value>>> {
    let project = project_or_404(&state, pid).await?;
    let rows = store::project_prs(&state.db, pid, PROJECT_PR_ROWS).await?;
    let slug = project.github_url.as_deref().and_then(repo_slug);
    let token = token(&state).await?;
    let gh = state.review.github();
    let read = |row: ProjectPr| {
        let (slug, token) = (slug.clone(), token.clone());
        async move {
            let pull = match slug {
                Some(s) => gh
                    .get(
                        token.as_deref(),
                        &format!("/repos/{s}/pulls/{}", row.pr_number),
                    )
                    .await
                    .map(|f| f.value)
                    .unwrap_or(Value::Null),
                None => Value::Null,
            };
            (row, pr_state(&pull))
        }
    };
    let mut listed: Vec<(ProjectPr, (String, bool))> = futures::stream::iter(rows)
        .map(read)
        .buffered(LIST_CONCURRENCY)
        .filter(|(_, (s, merged))| std::future::ready(s != "closed" || *merged))
        .collect()
        .await;
    // Rows come newest first; a stable sort keeps that order within each group.
    listed.sort_by_key(|(_, (_, merged))| *merged);
    Ok(Json(
        listed
            .into_iter()
            .take(PROJECT_PR_LIST)
            .map(|(row, (pr_state, merged))| {
                json!({"id": row.ticket_id, "title": row.title, "pr_url": row.pr_url,
                    "pr_number": row.pr_number, "pr_state": pr_state, "merged": merged})
            })
            .collect(),
    ))
}

/// A ticket's pull request: summary, commits, test files, conversation, state.
#[utoipa::path(get, path = "/api/projects/{project_id}/tickets/{ticket_id}/review", tag = "review",
    params(("project_id" = Uuid, Path), ("ticket_id" = Uuid, Path)),
    responses((status = 200, description = "{summary, commits, test_files, tests_description, comments, pr_url, pr_number, pr_state, merged}"),
        (status = 404), (status = 502)))]
async fn ticket_review(
    State(state): State<AppState>,
    PathParams((pid, tid)): PathParams<(Uuid, Uuid)>,
) -> ReviewResult<Json<Value>> {
    let ticket = ticket_or_404(&state, pid, tid).await?;
    let project = project_or_404(&state, pid).await?;
    let (Some(n), Some(pr_url)) = (ticket.pr_number, ticket.pr_url.clone()) else {
        return Err(ApiError::not_found(NO_PR).into());
    };
    let Some(slug) = project.github_url.as_deref().and_then(repo_slug) else {
        return Err(ApiError::not_found(NO_GITHUB_URL).into());
    };
    let token = token(&state).await?;
    let (t, gh) = (token.as_deref(), state.review.github());
    let paths = [
        format!("/repos/{slug}/pulls/{n}"),
        format!("/repos/{slug}/pulls/{n}/commits"),
        format!("/repos/{slug}/pulls/{n}/files"),
        format!("/repos/{slug}/issues/{n}/comments"),
    ];
    let (pull, commits, files, comments) = tokio::try_join!(
        gh.get(t, &paths[0]),
        gh.get_all(t, &paths[1]),
        gh.get_all(t, &paths[2]),
        gh.get_all(t, &paths[3]),
    )
    .map_err(github_failed("Failed to fetch PR from GitHub"))?;
    let (pr_state, merged) = pr_state(&pull.value);
    Ok(Json(json!({
        "summary": view::summary(pull.value.get("body").and_then(Value::as_str)),
        "commits": commits.value.iter().map(view::commit).collect::<Vec<_>>(),
        "test_files": view::test_files(&files.value),
        "tests_description": "",
        "comments": comments.value.iter().map(view::comment).collect::<Vec<_>>(),
        "pr_url": pr_url,
        "pr_number": n,
        "pr_state": pr_state,
        "merged": merged,
    })))
}

/// Body of a comment on the pull request.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[schema(as = ReviewComment)]
struct CommentBody {
    /// The comment (not blank; at most 60,000 characters are sent).
    #[schema(required = true, value_type = String, pattern = r"\S")]
    body: Option<Value>,
}

/// Body of an approval (optional).
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[schema(as = ReviewApproval)]
struct TextBody {
    /// The review's text, when a non-empty string.
    #[schema(value_type = Value, required = false)]
    body: Option<Value>,
}

/// Body of a merge (optional).
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[schema(as = ReviewMerge)]
struct MergeBody {
    /// `merge`, `squash` or `rebase`; any other value merges.
    #[schema(value_type = Value, required = false)]
    merge_method: Option<Value>,
}

/// Comment on the ticket's pull request. When the ticket is in review, the comment is handled
/// at once like a reviewer's (a review job is enqueued).
#[utoipa::path(post, path = "/api/projects/{project_id}/tickets/{ticket_id}/review/comment", tag = "review",
    params(("project_id" = Uuid, Path), ("ticket_id" = Uuid, Path)),
    request_body = CommentBody,
    responses((status = 200, description = "{\"message\": \"Comment posted\"}"),
        (status = 404, description = "Unknown ticket, or the ticket has no pull request"),
        (status = 502, description = "GitHub failed (`error`, `detail`)")))]
async fn post_comment(
    State(state): State<AppState>,
    PathParams((pid, tid)): PathParams<(Uuid, Uuid)>,
    OptionalJsonBody(req): OptionalJsonBody<CommentBody>,
) -> ReviewResult<Json<Value>> {
    ticket_or_404(&state, pid, tid).await?;
    let text = req
        .body
        .as_ref()
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ApiError::bad_request("body is required"))?;
    let (n, slug) = pr_of(&state, pid, tid).await?;
    let posted = send_to_github(
        &state,
        Method::POST,
        &format!("/repos/{slug}/issues/{n}/comments"),
        &json!({"body": truncate(text)}),
        "Failed to post comment",
    )
    .await?;
    if let Some(comment) = comment_from_json(&posted) {
        handle_ui_comment(&state, pid, tid, comment).await;
    }
    Ok(Json(json!({"message": "Comment posted"})))
}

async fn handle_ui_comment(
    state: &AppState,
    pid: Uuid,
    tid: Uuid,
    comment: crate::review::store::GhComment,
) {
    let result = async {
        if let Some(target) = store::target_of_ticket(&state.db, pid, tid).await? {
            state
                .review
                .apply_comments(&target, &[comment], "ui")
                .await?;
        }
        Ok::<_, DbError>(())
    }
    .await;
    if let Err(e) = result {
        tracing::warn!(error = %e, ticket_id = %tid, "could not record the posted comment; the poller will");
    }
}

/// Approve the ticket's pull request (GitHub refuses approving one's own pull request).
#[utoipa::path(post, path = "/api/projects/{project_id}/tickets/{ticket_id}/review/approve", tag = "review",
    params(("project_id" = Uuid, Path), ("ticket_id" = Uuid, Path)),
    request_body = Option<TextBody>,
    responses((status = 200, description = "{\"message\": \"PR approved\"}"),
        (status = 404, description = "Unknown ticket, or the ticket has no pull request"),
        (status = 502, description = "GitHub failed (`error`, `detail`)")))]
async fn approve(
    State(state): State<AppState>,
    PathParams((pid, tid)): PathParams<(Uuid, Uuid)>,
    OptionalJsonBody(req): OptionalJsonBody<TextBody>,
) -> ReviewResult<Json<Value>> {
    let (n, slug) = pr_of(&state, pid, tid).await?;
    let mut review = json!({"event": "APPROVE"});
    if let Some(text) = req
        .body
        .as_ref()
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
    {
        review["body"] = json!(text.chars().take(MAX_COMMENT_CHARS).collect::<String>());
    }
    send_to_github(
        &state,
        Method::POST,
        &format!("/repos/{slug}/pulls/{n}/reviews"),
        &review,
        "Failed to approve",
    )
    .await?;
    Ok(Json(json!({"message": "PR approved"})))
}

/// Merge the ticket's pull request (`merge_method`: merge, squash or rebase; anything else
/// merges). A ticket in review moves to done at once.
#[utoipa::path(post, path = "/api/projects/{project_id}/tickets/{ticket_id}/review/merge", tag = "review",
    params(("project_id" = Uuid, Path), ("ticket_id" = Uuid, Path)),
    request_body = Option<MergeBody>,
    responses((status = 200, description = "{\"message\": \"PR merged\"}"),
        (status = 404, description = "Unknown ticket, or the ticket has no pull request"),
        (status = 502, description = "GitHub failed (`error`, `detail`)")))]
async fn merge(
    State(state): State<AppState>,
    PathParams((pid, tid)): PathParams<(Uuid, Uuid)>,
    OptionalJsonBody(req): OptionalJsonBody<MergeBody>,
) -> ReviewResult<Json<Value>> {
    let (n, slug) = pr_of(&state, pid, tid).await?;
    let method = req
        .merge_method
        .as_ref()
        .and_then(Value::as_str)
        .filter(|m| matches!(*m, "merge" | "squash" | "rebase"))
        .unwrap_or("merge");
    send_to_github(
        &state,
        Method::PUT,
        &format!("/repos/{slug}/pulls/{n}/merge"),
        &json!({"merge_method": method}),
        "Failed to merge",
    )
    .await?;
    if let Ok(Some(target)) = store::target_of_ticket(&state.db, pid, tid).await
        && let Err(e) = state.review.finish(&target, "ui", "merged").await
    {
        tracing::warn!(error = %e, ticket_id = %tid, "could not move the merged ticket to done; the poller will");
    }
    Ok(Json(json!({"message": "PR merged"})))
}
