//! `release_job` against small servers that answer the way the api-server (extended protocol)
//! and the original app (no release route) do.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use terarchitect_worker_api::{
    EXTENSIONS_HEADER, EXTENSIONS_VERSION, ReleaseJobRequest, ReleaseOutcome, WorkerApiClient,
};
use uuid::Uuid;

const RUNNING: Uuid = Uuid::from_u128(1);
const FINISHED: Uuid = Uuid::from_u128(2);

type Bodies = Arc<Mutex<Vec<Value>>>;

/// The api-server's answers: 200 for the running job, 409 for a finished one, 404 otherwise,
/// every answer with the extensions header.
async fn release(State(bodies): State<Bodies>, Path(id): Path<Uuid>, body: String) -> Response {
    bodies
        .lock()
        .unwrap()
        .push(serde_json::from_str(&body).unwrap_or(Value::Null));
    let (status, answer) = match id {
        RUNNING => (
            StatusCode::OK,
            json!({"message": "Job released", "job_id": id}),
        ),
        FINISHED => (
            StatusCode::CONFLICT,
            json!({"error": "Job not running", "status": "completed", "attempt": 1}),
        ),
        _ => (StatusCode::NOT_FOUND, json!({"error": "Job not found"})),
    };
    (
        status,
        [(EXTENSIONS_HEADER, EXTENSIONS_VERSION)],
        axum::Json(answer),
    )
        .into_response()
}

async fn serve(app: Router) -> WorkerApiClient {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    WorkerApiClient::new(&format!("http://{addr}"), None).unwrap()
}

#[tokio::test]
async fn release_maps_the_extended_servers_answers() {
    let bodies = Bodies::default();
    let app = Router::new()
        .route("/api/worker/jobs/{id}/release", post(release))
        .with_state(bodies.clone());
    let client = serve(app).await;
    let req = ReleaseJobRequest {
        attempt: Some(3),
        reason: Some("Unschedulable".into()),
    };
    assert_eq!(
        client.release_job(RUNNING, &req).await.unwrap(),
        ReleaseOutcome::Released
    );
    assert_eq!(
        bodies.lock().unwrap()[0],
        json!({"attempt": 3, "reason": "Unschedulable"})
    );
    assert_eq!(
        client.release_job(FINISHED, &req).await.unwrap(),
        ReleaseOutcome::NotRunning {
            status: "completed".into()
        }
    );
    let err = client
        .release_job(Uuid::from_u128(9), &ReleaseJobRequest::default())
        .await
        .unwrap_err();
    assert!(err.is_not_found(), "{err}");
    assert_eq!(bodies.lock().unwrap()[2], json!({}));
}

#[tokio::test]
async fn a_server_without_the_route_is_unsupported() {
    // No route at all (404), and a route for another method (405), without the header.
    let app = Router::new().route(
        &format!("/api/worker/jobs/{FINISHED}/release"),
        get(|| async { "not here" }),
    );
    let client = serve(app).await;
    let req = ReleaseJobRequest::default();
    assert_eq!(
        client.release_job(RUNNING, &req).await.unwrap(),
        ReleaseOutcome::Unsupported
    );
    assert_eq!(
        client.release_job(FINISHED, &req).await.unwrap(),
        ReleaseOutcome::Unsupported
    );
}
