//! Worker API authentication: `Authorization: Bearer <key>` where the key is the
//! `TERARCHITECT_WORKER_API_KEY` setting (stored value over environment). Compared in constant
//! time. Without a key the worker API is open, unless the server was told to fail closed.

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::error::ApiError;
use crate::state::AppState;

/// Message for a missing or malformed header (exact text of the original).
pub const MISSING_HEADER: &str =
    "Missing or invalid Authorization header (expected Bearer <token>)";
/// Message for a wrong token (exact text of the original).
pub const INVALID_TOKEN: &str = "Invalid worker API token";
/// Message when the server fails closed without a key.
pub const NO_KEY_CONFIGURED: &str = "Worker API key is not configured; set TERARCHITECT_WORKER_API_KEY in settings or the environment";

/// Compares secrets in time independent of where they differ (and of their lengths, by
/// comparing digests).
pub fn tokens_match(presented: &str, expected: &str) -> bool {
    let a = Sha256::digest(presented.as_bytes());
    let b = Sha256::digest(expected.as_bytes());
    a.ct_eq(&b).into()
}

/// Middleware guarding worker endpoints; runs before any lookup, so unknown ids still get 401.
pub async fn require_worker_auth(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    let resolved = match state.settings.resolve().await {
        Ok(r) => r,
        Err(e) => return ApiError::from(e).into_response(),
    };
    let Some(expected) = resolved.worker_api_key() else {
        if state.policy.require_worker_api_key {
            return ApiError::Unavailable(NO_KEY_CONFIGURED.into()).into_response();
        }
        return next.run(req).await;
    };
    let presented = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match presented {
        None => ApiError::Unauthorized(MISSING_HEADER).into_response(),
        Some(token) if tokens_match(token.trim(), expected) => next.run(req).await,
        Some(_) => ApiError::Unauthorized(INVALID_TOKEN).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::tokens_match;

    #[test]
    fn matching_is_exact() {
        assert!(tokens_match("abc", "abc"));
        assert!(!tokens_match("abc", "abd"));
        assert!(!tokens_match("abc", "abcd"));
        assert!(!tokens_match("", "abc"));
    }
}
