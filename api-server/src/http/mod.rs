//! The HTTP API: routes, middleware, the OpenAPI document, health and metrics.

pub mod admin_auth;
pub mod auth;
pub mod error;
pub mod extract;
pub mod github_webhook;
mod memory;
pub mod models;
mod notes;
pub mod openapi;
mod projects;
mod queue;
mod review;
mod root;
pub mod run_scope;
mod settings;
mod tickets;
mod worker;

use std::sync::Arc;

use axum::Json;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::from_fn_with_state;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa_axum::router::OpenApiRouter;

use crate::state::AppState;

pub use projects::SETUP_TICKET_TITLE;
pub use tickets::messages;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Terarchitect API",
        description = "Projects, tickets, settings, the agent job queue, memory and the worker API.",
    ),
    modifiers(&WorkerTokenScheme),
    tags(
        (name = "worker", description = "Agent-facing ticket endpoints (Bearer worker token)"),
        (name = "queue", description = "The agent job queue (Bearer worker token)"),
        (name = "memory", description = "Project memory (Bearer worker token)"),
    )
)]
struct ApiDoc;

struct WorkerTokenScheme;

impl utoipa::Modify for WorkerTokenScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let bearer = |description: &str| {
            let http = HttpBuilder::new().scheme(HttpAuthScheme::Bearer);
            SecurityScheme::Http(http.description(Some(description)).build())
        };
        components.add_security_scheme(
            "worker_token",
            bearer(
                "The worker key (TERARCHITECT_WORKER_API_KEY; the worker API is open while none is configured) or a claim's run token, which reaches only its own ticket, project and job.",
            ),
        );
        // Required by every non-worker endpoint when the server has admin tokens configured.
        components.add_security_scheme(
            "admin_token",
            bearer(
                "An admin token (TERARCHITECT_ADMIN_TOKEN, several for rotation); the admin API is open while none is configured.",
            ),
        );
    }
}

/// Options of the router.
#[derive(Debug, Clone)]
pub struct RouterOptions {
    /// Largest accepted request body.
    pub max_body_bytes: usize,
}

fn local_origin(origin: &HeaderValue) -> bool {
    let Ok(o) = origin.to_str() else { return false };
    ["http://localhost", "http://127.0.0.1"]
        .iter()
        .any(|prefix| {
            o.strip_prefix(prefix).is_some_and(|rest| {
                rest.is_empty()
                    || rest
                        .strip_prefix(':')
                        .is_some_and(|p| p.chars().all(|c| c.is_ascii_digit()))
            })
        })
}

/// Builds the whole application router and its OpenAPI document.
pub fn router(state: AppState, opts: &RouterOptions) -> axum::Router {
    // Three groups, each with its own guard: the admin API (admin token when configured), the
    // worker API (worker key or run token) and public routes (no guard of ours).
    let mut admin_routes = projects::router()
        .merge(tickets::router())
        .merge(notes::router())
        .merge(settings::router())
        .merge(review::router())
        .route_layer(from_fn_with_state(
            state.clone(),
            admin_auth::require_admin_auth,
        ));
    let mut worker_routes = worker::router()
        .merge(queue::router())
        .merge(memory::router())
        .route_layer(from_fn_with_state(state.clone(), auth::require_worker_auth));
    // Each group's document says what its guard requires and answers.
    let (admin_doc, worker_doc) = (
        admin_routes.get_openapi_mut(),
        worker_routes.get_openapi_mut(),
    );
    openapi::guard(admin_doc, openapi::ADMIN_SCHEME, openapi::ADMIN_ERRORS);
    openapi::guard(worker_doc, openapi::WORKER_SCHEME, openapi::WORKER_ERRORS);
    let (api, openapi) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(admin_routes)
        .merge(worker_routes)
        .merge(public_routes())
        .split_for_parts();
    let mut openapi = openapi
        .merge_from(root::RootDoc::openapi())
        .merge_from(OpsDoc::openapi());
    openapi::finish(&mut openapi);
    let openapi_json = Arc::new(openapi::to_json(&openapi));

    let cors = CorsLayer::new()
        .allow_origin(AllowOrigin::predicate(|origin, _| local_origin(origin)))
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
            Method::OPTIONS,
        ])
        .allow_headers([CONTENT_TYPE, AUTHORIZATION]);

    api.route(
        "/api/openapi.json",
        get(move || {
            let doc = openapi_json.clone();
            async move {
                (
                    [(CONTENT_TYPE, "application/json")],
                    doc.as_str().to_owned(),
                )
            }
        }),
    )
    .route("/", get(root::index))
    .route("/health", get(health))
    .route("/readyz", get(ready))
    .route("/metrics", get(metrics))
    .fallback(error::not_found)
    .method_not_allowed_fallback(error::method_not_allowed)
    .layer(cors)
    .layer(DefaultBodyLimit::max(opts.max_body_bytes))
    .layer(from_fn_with_state(
        state.metrics.clone(),
        crate::metrics::track,
    ))
    .layer(TraceLayer::new_for_http())
    .layer(CatchPanicLayer::custom(|_| {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({"error": "Internal server error"})),
        )
            .into_response()
    }))
    .with_state(state)
}

/// Documented routes exempt from admin and worker auth, for endpoints that check their own
/// credential (e.g. a webhook verifying its signature): to exempt a route, merge its router
/// here. The probes, `/metrics` and `/api/openapi.json` are open too (added in [`router`]).
fn public_routes() -> OpenApiRouter<AppState> {
    // The GitHub webhook authenticates deliveries by their HMAC signature.
    OpenApiRouter::new().merge(github_webhook::router())
}

/// The OpenAPI description of the probes and metrics (public).
#[derive(OpenApi)]
#[openapi(paths(health, ready, metrics))]
struct OpsDoc;

/// Liveness, as the original: always healthy while the process serves.
#[utoipa::path(get, path = "/health", tag = "service",
    responses((status = 200, description = "`{\"status\": \"healthy\"}`", body = Object)))]
async fn health() -> Json<serde_json::Value> {
    Json(json!({"status": "healthy"}))
}

/// Readiness: the database answers.
#[utoipa::path(get, path = "/readyz", tag = "service",
    responses((status = 200, description = "`{\"status\": \"ready\"}`", body = Object),
        (status = 503, description = "The database does not answer")))]
async fn ready(State(state): State<AppState>) -> Response {
    match state.db.ping().await {
        Ok(()) => Json(json!({"status": "ready"})).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"error": "database unavailable"})),
            )
                .into_response()
        }
    }
}

/// Prometheus metrics; the queue depth is read fresh on each scrape.
#[utoipa::path(get, path = "/metrics", tag = "service",
    responses((status = 200, description = "OpenMetrics text", content_type = "application/openmetrics-text", body = String)))]
async fn metrics(State(state): State<AppState>) -> Response {
    match state.db.queue_depth().await {
        Ok(counts) => state.metrics.set_queue_depth(&counts),
        Err(e) => tracing::warn!(error = %e, "cannot read queue depth for metrics"),
    }
    (
        [(
            CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::local_origin;
    use axum::http::HeaderValue;

    #[test]
    fn cors_allows_only_local_origins() {
        for ok in [
            "http://localhost:3000",
            "http://127.0.0.1:5173",
            "http://localhost",
        ] {
            assert!(local_origin(&HeaderValue::from_static(ok)), "{ok}");
        }
        for bad in [
            "http://localhost.evil.com",
            "https://localhost:3000",
            "http://example.com",
            "http://localhost:80x",
        ] {
            assert!(!local_origin(&HeaderValue::from_static(bad)), "{bad}");
        }
    }
}
