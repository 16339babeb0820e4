//! Admin authentication: when admin tokens are configured (`TERARCHITECT_ADMIN_TOKEN`, several
//! for rotation), every non-worker, non-public endpoint needs `Authorization: Bearer <admin
//! token>`. The worker key and run tokens are not admin tokens: presenting one answers 403, a
//! missing or unknown credential 401. Without admin tokens the endpoints stay open, as the
//! original's (the server warns at start-up when it listens beyond loopback).

use std::net::SocketAddr;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::auth::{bearer, is_worker_key, run_grant};
use super::error::ApiError;
use crate::run_token;
use crate::state::AppState;

/// 401 without a Bearer header.
pub const ADMIN_MISSING_HEADER: &str =
    "Missing or invalid Authorization header (expected Bearer <admin token>)";
/// 401 for an unknown credential.
pub const INVALID_ADMIN_TOKEN: &str = "Invalid admin token";
/// 403 for the worker key or a run token.
pub const NOT_AN_ADMIN_TOKEN: &str =
    "This endpoint needs an admin token; worker and run tokens are not accepted";

/// The configured admin tokens, kept as SHA-256 digests.
#[derive(Clone, Default)]
pub struct AdminTokens(Vec<[u8; 32]>);

impl std::fmt::Debug for AdminTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AdminTokens({} configured)", self.0.len())
    }
}

impl AdminTokens {
    /// The non-blank tokens among `tokens` (trimmed).
    pub fn new<S: AsRef<str>>(tokens: impl IntoIterator<Item = S>) -> Self {
        Self(
            tokens
                .into_iter()
                .map(|t| t.as_ref().trim().to_owned())
                .filter(|t| !t.is_empty())
                .map(|t| Sha256::digest(t.as_bytes()).into())
                .collect(),
        )
    }

    /// Whether admin authentication is on.
    pub fn is_enabled(&self) -> bool {
        !self.0.is_empty()
    }

    /// Whether `presented` is one of the tokens; every candidate is compared, in constant time.
    pub fn matches(&self, presented: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        self.0
            .iter()
            .fold(subtle::Choice::from(0), |found, t| found | t.ct_eq(&digest))
            .into()
    }
}

/// Whether to warn that the admin API is open: no admin token and a non-loopback address.
pub fn open_admin_api_exposed(tokens: &AdminTokens, bind: &SocketAddr) -> bool {
    !tokens.is_enabled() && !bind.ip().to_canonical().is_loopback()
}

/// Middleware guarding the admin routes.
pub async fn require_admin_auth(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    let tokens = &state.policy.admin_tokens;
    if !tokens.is_enabled() {
        return next.run(req).await;
    }
    let Some(presented) = bearer(req.headers()) else {
        return ApiError::Unauthorized(ADMIN_MISSING_HEADER).into_response();
    };
    if tokens.matches(presented) {
        return next.run(req).await;
    }
    match is_worker_credential(&state, presented).await {
        Ok(true) => ApiError::Forbidden(NOT_AN_ADMIN_TOKEN).into_response(),
        Ok(false) => ApiError::Unauthorized(INVALID_ADMIN_TOKEN).into_response(),
        Err(e) => e.into_response(),
    }
}

/// Whether `presented` is the worker key or a live run token.
async fn is_worker_credential(state: &AppState, presented: &str) -> Result<bool, ApiError> {
    if is_worker_key(state, presented).await? {
        return Ok(true);
    }
    if !run_token::looks_like(presented) {
        return Ok(false);
    }
    match run_grant(state, presented).await {
        Ok(_) => Ok(true),
        Err(ApiError::Unauthorized(_)) => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rotation_token_matches() {
        let tokens = AdminTokens::new(["old-token", " new-token ", ""]);
        assert!(tokens.is_enabled());
        assert!(tokens.matches("old-token"));
        assert!(tokens.matches("new-token"));
        assert!(!tokens.matches("other"));
        assert!(!tokens.matches(""));
        assert!(!format!("{tokens:?}").contains("old-token"));
        assert!(!AdminTokens::new([" "]).is_enabled());
    }

    #[test]
    fn only_an_open_api_on_a_non_loopback_address_is_exposed() {
        let none = AdminTokens::default();
        let some = AdminTokens::new(["t"]);
        for exposed in ["0.0.0.0:5010", "10.1.2.3:5010", "[::]:5010"] {
            let addr: SocketAddr = exposed.parse().unwrap();
            assert!(open_admin_api_exposed(&none, &addr), "{exposed}");
            assert!(!open_admin_api_exposed(&some, &addr), "{exposed}");
        }
        for local in [
            "127.0.0.1:5010",
            "127.8.9.1:1",
            "[::1]:5010",
            "[::ffff:127.0.0.1]:5010",
        ] {
            let addr: SocketAddr = local.parse().unwrap();
            assert!(!open_admin_api_exposed(&none, &addr), "{local}");
        }
    }
}
