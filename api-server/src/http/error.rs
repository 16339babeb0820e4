//! JSON error responses: every failure answers `{"error": "..."}` with a 4xx or 5xx status.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::db::DbError;

/// An error a handler returns.
#[derive(Debug)]
pub enum ApiError {
    /// 400 with a message.
    BadRequest(String),
    /// 401 with a message.
    Unauthorized(&'static str),
    /// 403 with a message.
    Forbidden(&'static str),
    /// 404 with a message.
    NotFound(String),
    /// 409 with a full JSON body.
    Conflict(Value),
    /// 413.
    PayloadTooLarge(String),
    /// 415.
    UnsupportedMediaType(String),
    /// 503 with a message.
    Unavailable(String),
    /// 500; the cause is logged, the client sees a generic message.
    Internal(String),
}

/// Result alias for handlers.
pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    /// 400 helper.
    pub fn bad_request(msg: impl Into<String>) -> Self {
        ApiError::BadRequest(msg.into())
    }

    /// 404 helper.
    pub fn not_found(msg: impl Into<String>) -> Self {
        ApiError::NotFound(msg.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, body) = match self {
            ApiError::BadRequest(m) => (StatusCode::BAD_REQUEST, json!({"error": m})),
            ApiError::Unauthorized(m) => (StatusCode::UNAUTHORIZED, json!({"error": m})),
            ApiError::Forbidden(m) => (StatusCode::FORBIDDEN, json!({"error": m})),
            ApiError::NotFound(m) => (StatusCode::NOT_FOUND, json!({"error": m})),
            ApiError::Conflict(body) => (StatusCode::CONFLICT, body),
            ApiError::PayloadTooLarge(m) => (StatusCode::PAYLOAD_TOO_LARGE, json!({"error": m})),
            ApiError::UnsupportedMediaType(m) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, json!({"error": m}))
            }
            ApiError::Unavailable(m) => (StatusCode::SERVICE_UNAVAILABLE, json!({"error": m})),
            ApiError::Internal(cause) => {
                tracing::error!(%cause, "request failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    json!({"error": "Internal server error"}),
                )
            }
        };
        (status, Json(body)).into_response()
    }
}

impl From<DbError> for ApiError {
    fn from(e: DbError) -> Self {
        match e {
            DbError::NotFound(what) => ApiError::NotFound(format!("{what} not found")),
            DbError::Conflict(msg) => ApiError::Conflict(json!({"error": msg})),
            DbError::Sqlx(sqlx::Error::PoolTimedOut) => {
                ApiError::Unavailable("Database is busy; try again".into())
            }
            other => ApiError::Internal(other.to_string()),
        }
    }
}

/// Fallback for unknown routes.
pub async fn not_found() -> ApiError {
    ApiError::not_found("Not found")
}

/// Fallback for a known path with an unsupported method.
pub async fn method_not_allowed() -> Response {
    (
        StatusCode::METHOD_NOT_ALLOWED,
        Json(json!({"error": "Method not allowed"})),
    )
        .into_response()
}
