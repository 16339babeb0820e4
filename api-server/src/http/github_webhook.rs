//! `POST /api/github/webhook`: GitHub deliveries, authenticated by their `X-Hub-Signature-256`
//! HMAC (so the route is exempt from admin auth). 503 while no secret is configured, 401 for a
//! missing or wrong signature, 200 for everything else it accepts (including events it ignores
//! and redeliveries of a processed `X-GitHub-Delivery`). The body is never logged.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::ApiError;
use crate::review::store;
use crate::review::webhook::{Event, parse_event, verify_signature};
use crate::state::AppState;

/// 503 while no webhook secret is configured.
pub const NOT_CONFIGURED: &str =
    "GitHub webhooks are not configured (set GITHUB_WEBHOOK_SECRET on the api-server)";
/// 401 for a missing or wrong signature.
pub const BAD_SIGNATURE: &str = "Missing or invalid X-Hub-Signature-256";

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(github_webhook))
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

fn answer(status: StatusCode, body: Value) -> Response {
    (status, Json(body)).into_response()
}

/// Receive a GitHub webhook delivery (`issue_comment`, `pull_request_review`,
/// `pull_request_review_comment`, `pull_request`, `ping`; content type `application/json`).
#[utoipa::path(post, path = "/api/github/webhook", tag = "github",
    request_body(content = Object, description = "A GitHub webhook payload"),
    params(("X-Hub-Signature-256" = String, Header), ("X-GitHub-Event" = String, Header),
        ("X-GitHub-Delivery" = Option<String>, Header)),
    responses((status = 200, description = "Processed, ignored or a redelivery"),
        (status = 400), (status = 401), (status = 415), (status = 503)))]
async fn github_webhook(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let metrics = state.review.metrics().clone();
    let Some(secret) = state.review.webhook_secret() else {
        metrics.delivery("unknown", "not_configured");
        return ApiError::Unavailable(NOT_CONFIGURED.into()).into_response();
    };
    if !verify_signature(
        secret.as_bytes(),
        &body,
        header(&headers, "x-hub-signature-256"),
    ) {
        metrics.delivery("unknown", "bad_signature");
        tracing::warn!("GitHub webhook: rejected a delivery with a missing or wrong signature");
        return ApiError::Unauthorized(BAD_SIGNATURE).into_response();
    }
    let Some(event) = header(&headers, "x-github-event").map(str::to_owned) else {
        return ApiError::bad_request("Missing X-GitHub-Event header").into_response();
    };
    if event == "ping" {
        metrics.delivery(&event, "ok");
        return answer(StatusCode::OK, json!({"message": "pong"}));
    }
    let json_body = header(&headers, CONTENT_TYPE.as_str())
        .is_some_and(|ct| ct.to_ascii_lowercase().starts_with("application/json"));
    if !json_body {
        return ApiError::UnsupportedMediaType(
            "Set the webhook's content type to application/json".into(),
        )
        .into_response();
    }
    // GitHub's payloads are JSON objects; anything else is not a delivery.
    let Some(payload) = serde_json::from_slice::<Value>(&body)
        .ok()
        .filter(Value::is_object)
    else {
        return ApiError::bad_request("Invalid JSON payload (expected an object)").into_response();
    };
    let delivery = header(&headers, "x-github-delivery")
        .filter(|d| !d.is_empty())
        .map(|d| d.chars().take(100).collect::<String>());
    let retention =
        chrono::Duration::hours(i64::from(state.review.args().delivery_retention_hours));
    if let Some(id) = &delivery {
        match store::record_delivery(&state.db, id, &event, retention).await {
            Ok(true) => {}
            Ok(false) => {
                metrics.delivery(&event, "duplicate");
                return answer(
                    StatusCode::OK,
                    json!({"message": "Duplicate delivery ignored", "delivery": id}),
                );
            }
            Err(e) => return ApiError::from(e).into_response(),
        }
    }
    let parsed = parse_event(&event, &payload);
    if let Event::Ignored(why) = parsed {
        metrics.delivery(&event, "ignored");
        return answer(
            StatusCode::OK,
            json!({"message": format!("Ignored: {why}")}),
        );
    }
    match state.review.process_event(&parsed).await {
        Ok(done) => {
            let outcome = if done.tickets.is_empty() {
                "ignored"
            } else {
                "ok"
            };
            metrics.delivery(&event, outcome);
            tracing::info!(
                event,
                delivery = delivery.as_deref().unwrap_or_default(),
                tickets = done.tickets.len(),
                enqueued = done.enqueued.len(),
                done = done.done.len(),
                "GitHub webhook delivery processed"
            );
            let message = if done.tickets.is_empty() {
                "Ignored: no ticket in review for this pull request"
            } else {
                "Processed"
            };
            answer(
                StatusCode::OK,
                json!({"message": message, "tickets": done.tickets,
                    "enqueued_job_ids": done.enqueued, "done_ticket_ids": done.done}),
            )
        }
        Err(e) => {
            metrics.delivery(&event, "failed");
            // Let GitHub's redelivery be processed.
            if let Some(id) = &delivery {
                let _ = store::forget_delivery(&state.db, id).await;
            }
            ApiError::Internal(format!("processing the {event} delivery: {e}")).into_response()
        }
    }
}
