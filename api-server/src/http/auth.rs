//! Worker API authentication: `Authorization: Bearer <credential>`, where the credential is
//! either
//! - the global worker key, the `TERARCHITECT_WORKER_API_KEY` setting (stored value over
//!   environment): full worker API access, exactly as the original; or
//! - a run token minted by a claim ([`crate::run_token`]): only its own ticket, project and
//!   job ([`super::run_scope`]); 403 elsewhere, 401 once its run finished, its lease ran out or
//!   the job was claimed again.
//!
//! Without a worker key the worker API is open (the original's development mode) unless the
//! server was told to fail closed; a run token presented there is still scoped, so an agent
//! cannot widen its reach by presenting it (it could omit it: an open worker API contains
//! nothing, which is why deployments configure a key). Every comparison is constant-time and
//! no credential is logged.

use axum::extract::{MatchedPath, RawPathParams, Request, State};
use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::error::ApiError;
use super::run_scope;
use crate::run_token::{self, RunGrant};
use crate::state::AppState;

/// Message for a missing or malformed header (exact text of the original).
pub const MISSING_HEADER: &str =
    "Missing or invalid Authorization header (expected Bearer <token>)";
/// Message for a wrong token (exact text of the original).
pub const INVALID_TOKEN: &str = "Invalid worker API token";
/// Message when the server fails closed without a key.
pub const NO_KEY_CONFIGURED: &str = "Worker API key is not configured; set TERARCHITECT_WORKER_API_KEY in settings or the environment";
/// 401 for a run token no claim minted.
pub const INVALID_RUN_TOKEN: &str = "Invalid run token";
/// 401 for a run token whose run is over.
pub const RUN_TOKEN_EXPIRED: &str = "Run token is no longer valid: its run finished, its lease expired or the job was claimed again";
/// 403 for a run token used outside its run.
pub const RUN_TOKEN_FORBIDDEN: &str = "A run token may only reach its own ticket, project and job";

/// Compares secrets in time independent of where they differ (and of their lengths, by
/// comparing digests).
pub fn tokens_match(presented: &str, expected: &str) -> bool {
    let a = Sha256::digest(presented.as_bytes());
    let b = Sha256::digest(expected.as_bytes());
    a.ct_eq(&b).into()
}

/// The credential of an `Authorization: Bearer <credential>` header (trimmed), if any.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
}

/// Whether `presented` is the configured global worker key.
pub async fn is_worker_key(state: &AppState, presented: &str) -> Result<bool, ApiError> {
    let resolved = state.settings.resolve().await?;
    Ok(resolved
        .worker_api_key()
        .is_some_and(|key| tokens_match(presented, key)))
}

/// The grant of a presented run token: 401 when no claim minted it or its run is over.
pub async fn run_grant(state: &AppState, presented: &str) -> Result<RunGrant, ApiError> {
    let hash = run_token::hash(presented);
    let grant = state
        .db
        .run_grant(&hash)
        .await?
        .filter(|g| tokens_match(&hash, g.run_token_hash.as_deref().unwrap_or("")))
        .ok_or(ApiError::Unauthorized(INVALID_RUN_TOKEN))?;
    if !grant.is_live(crate::db::now()) {
        return Err(ApiError::Unauthorized(RUN_TOKEN_EXPIRED));
    }
    Ok(grant)
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
    let presented = bearer(req.headers()).map(str::to_owned);
    let key = resolved.worker_api_key();
    if let (Some(key), Some(token)) = (key, presented.as_deref())
        && tokens_match(token, key)
    {
        return next.run(req).await;
    }
    if let Some(token) = presented.as_deref().filter(|t| run_token::looks_like(t)) {
        return match run_grant(&state, token).await {
            Ok(grant) => scoped(grant, req, next).await,
            Err(e) => e.into_response(),
        };
    }
    match (key, presented) {
        (None, _) if state.policy.require_worker_api_key => {
            ApiError::Unavailable(NO_KEY_CONFIGURED.into()).into_response()
        }
        (None, _) => next.run(req).await,
        (Some(_), None) => ApiError::Unauthorized(MISSING_HEADER).into_response(),
        (Some(_), Some(_)) => ApiError::Unauthorized(INVALID_TOKEN).into_response(),
    }
}

/// Marks a request authenticated by a run token (not the worker key), for handlers that
/// give such callers less (worker-context blanks the secrets of its agent settings).
#[derive(Debug, Clone, Copy)]
pub struct RunCaller;

/// Lets a run-token request through when the route and its ids belong to the grant.
async fn scoped(grant: RunGrant, req: Request, next: Next) -> Response {
    let (mut parts, body) = req.into_parts();
    let route = parts.extensions.get::<MatchedPath>().cloned();
    let params = match axum::RequestPartsExt::extract::<RawPathParams>(&mut parts).await {
        Ok(p) => p,
        Err(_) => return ApiError::Forbidden(RUN_TOKEN_FORBIDDEN).into_response(),
    };
    let params: Vec<(&str, &str)> = params.iter().collect();
    let permitted = route
        .as_ref()
        .is_some_and(|r| run_scope::permits(&parts.method, r.as_str(), &params, &grant));
    if !permitted {
        return ApiError::Forbidden(RUN_TOKEN_FORBIDDEN).into_response();
    }
    parts.extensions.insert(RunCaller);
    next.run(Request::from_parts(parts, body)).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn matching_is_exact() {
        assert!(tokens_match("abc", "abc"));
        assert!(!tokens_match("abc", "abd"));
        assert!(!tokens_match("abc", "abcd"));
        assert!(!tokens_match("", "abc"));
    }

    #[test]
    fn bearer_needs_the_exact_prefix() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h), None);
        h.insert(AUTHORIZATION, HeaderValue::from_static("Bearer  abc "));
        assert_eq!(bearer(&h), Some("abc"));
        h.insert(AUTHORIZATION, HeaderValue::from_static("bearer abc"));
        assert_eq!(bearer(&h), None);
        h.insert(AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(bearer(&h), None);
    }
}
