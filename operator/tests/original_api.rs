//! The operator against a worker API that behaves like the original app: no long poll, no
//! heartbeats, no queue extensions header. The operator must fall back to plain polling every
//! POLL_INTERVAL_SEC and to the ticket's cancel-requested flag.

mod support;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};
use terarchitect_fake_apiserver::Node;
use terarchitect_operator::crd::{AgentJob, CONDITION_RELEASED, FailureReason, Phase};
use tokio::time::Instant;
use uuid::Uuid;

use support::*;

#[derive(Default)]
struct Original {
    queue: VecDeque<Value>,
    claims: Vec<(Instant, Value)>,
    completed: Vec<String>,
    failed: Vec<(String, Value)>,
    cancel_requested: Vec<String>,
    cancel_polls: usize,
}

type Shared = Arc<Mutex<Original>>;

async fn start_job(State(s): State<Shared>, body: Option<Json<Value>>) -> Response {
    let mut s = s.lock().unwrap();
    let body = body.map(|Json(b)| b).unwrap_or(Value::Null);
    s.claims.push((Instant::now(), body));
    match s.queue.pop_front() {
        Some(job) => Json(job).into_response(),
        None => StatusCode::NO_CONTENT.into_response(),
    }
}

async fn complete(State(s): State<Shared>, Path(id): Path<String>) -> Json<Value> {
    s.lock().unwrap().completed.push(id.clone());
    Json(json!({"message": "Job completed", "job_id": id}))
}

async fn fail(
    State(s): State<Shared>,
    Path(id): Path<String>,
    Json(body): Json<Value>,
) -> Json<Value> {
    s.lock().unwrap().failed.push((id.clone(), body));
    Json(json!({"message": "Job failed", "job_id": id}))
}

async fn cancel_requested(
    State(s): State<Shared>,
    Path((_, ticket)): Path<(String, String)>,
) -> Json<Value> {
    let mut s = s.lock().unwrap();
    s.cancel_polls += 1;
    Json(json!({"cancel_requested": s.cancel_requested.contains(&ticket)}))
}

async fn serve(state: Shared) -> String {
    // Flask answers 404 with an HTML page for routes it does not have (heartbeat).
    let app = Router::new()
        .route("/api/settings", get(|| async { Json(json!({})) }))
        .route("/api/worker/jobs/start", post(start_job))
        .route("/api/worker/jobs/{id}/complete", post(complete))
        .route("/api/worker/jobs/{id}/fail", post(fail))
        .route(
            "/api/projects/{project}/tickets/{ticket}/cancel-requested",
            get(cancel_requested),
        )
        .fallback(|| async {
            (
                StatusCode::NOT_FOUND,
                [("content-type", "text/html")],
                "<!doctype html><title>404 Not Found</title>",
            )
        })
        .with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

fn original_job(ticket: Uuid) -> (String, Value) {
    let id = Uuid::new_v4().to_string();
    let job = json!({
        "job_id": id,
        "ticket_id": ticket,
        "project_id": Uuid::new_v4(),
        "kind": "ticket",
        "repo_url": "https://github.com/acme/shop",
        "execution_mode": "docker",
        "project_path": null,
    });
    (id, job)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_polling_and_cancel_flag_against_the_original_api() {
    let h = Harness::start().await;
    let state: Shared = Arc::default();
    let url = serve(state.clone()).await;
    h.agents.set_default(Behaviour::Hold);
    let op = h
        .operator(h.config(&[("--api-url", &url), ("--poll-interval-sec", "0.3")]))
        .await;

    // Nothing queued: claims come every POLL_INTERVAL_SEC, not in a busy loop.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle_claims = state.lock().unwrap().claims.len();
    assert!(
        (3..=10).contains(&idle_claims),
        "{idle_claims} claims in 2 s with a 0.3 s poll interval"
    );

    // A job runs and its success is reported with the original `complete` call.
    let ticket = Uuid::new_v4();
    let (id, job) = original_job(ticket);
    state.lock().unwrap().queue.push_back(job);
    let name = format!("aj-{id}");
    h.wait_running(&name).await;
    h.agents.release(ticket, 0, "");
    h.wait_agentjob(&name, "reported", |aj| {
        aj.status.as_ref().is_some_and(|s| s.reported)
    })
    .await;
    assert_eq!(state.lock().unwrap().completed, vec![id.clone()]);
    // The original mints no run tokens: the agent gets the operator's key, as the coordinator
    // handed it out; the Secret still goes once the outcome is reported.
    assert_eq!(
        h.agents.envs(ticket)[0]["TERARCHITECT_WORKER_API_KEY"],
        WORKER_KEY
    );
    h.wait_until("the env Secret is deleted after the report", |k| {
        k.get::<k8s_openapi::api::core::v1::Secret>(NS, &format!("{name}-env"))
            .is_none()
    })
    .await;

    // Without heartbeats, the ticket's cancel-requested flag stops a run.
    let ticket = Uuid::new_v4();
    let (id, job) = original_job(ticket);
    state.lock().unwrap().queue.push_back(job);
    let name = format!("aj-{id}");
    h.wait_running(&name).await;
    state
        .lock()
        .unwrap()
        .cancel_requested
        .push(ticket.to_string());
    let aj = h
        .wait_agentjob(&name, "cancelled and reported", |aj| {
            aj.status.as_ref().is_some_and(|s| s.reported)
        })
        .await;
    let status = aj.status.unwrap();
    assert_eq!(status.phase, Some(Phase::Cancelled));
    assert_eq!(status.reason, Some(FailureReason::Cancelled));
    {
        let s = state.lock().unwrap();
        assert!(s.cancel_polls >= 1);
        assert_eq!(s.failed.len(), 1);
        assert_eq!(s.failed[0].0, id);
        assert_eq!(s.failed[0].1["reason"], "Cancelled");
        // The original ignores unknown claim fields; the operator sends no long-poll wait
        // once it knows the server has none.
        let (_, last) = s.claims.last().unwrap();
        assert!(
            last.get("wait_seconds").is_none_or(Value::is_null),
            "{last}"
        );
    }
    op.stop().await;
}

/// The original app has no release call: a run that waited too long for room fails its job
/// with the retryable reason `Unschedulable` instead, reported once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_release_call_a_run_without_room_fails_its_job() {
    let h = Harness::start().await;
    let state: Shared = Arc::default();
    let url = serve(state.clone()).await;
    h.jobs.set_node(Node {
        max_pods: Some(1),
        ..Node::default()
    });
    h.agents.set_default(Behaviour::Hold);
    let op = h
        .operator(h.config(&[
            ("--api-url", &url),
            ("--poll-interval-sec", "0.3"),
            ("--unschedulable-timeout-sec", "2"),
        ]))
        .await;
    let tickets = [Uuid::new_v4(), Uuid::new_v4()];
    let (first_id, first) = original_job(tickets[0]);
    let (second_id, second) = original_job(tickets[1]);
    let ids = [first_id, second_id];
    state.lock().unwrap().queue.extend([first, second]);
    let aj = h
        .kube
        .wait_for(WAIT, |c| {
            ids.iter().find_map(|id| {
                c.get::<AgentJob>(NS, &format!("aj-{id}"))
                    .filter(|aj| aj.status.as_ref().is_some_and(|s| s.reported))
            })
        })
        .await
        .expect("the run without room is reported");
    let status = aj.status.clone().unwrap();
    assert_eq!(status.phase, Some(Phase::Failed));
    assert_eq!(status.reason, Some(FailureReason::Unschedulable));
    let released = aj.condition(CONDITION_RELEASED).expect("Released");
    assert_eq!(
        (released.status.as_str(), released.reason.as_str()),
        ("False", "ReleaseUnsupported")
    );
    let id = aj.spec.queue_job_id.clone().unwrap();
    {
        let s = state.lock().unwrap();
        assert_eq!(s.failed.len(), 1, "reported once: {:?}", s.failed);
        assert_eq!(s.failed[0].0, id);
        assert_eq!(s.failed[0].1["reason"], "Unschedulable");
        let message = s.failed[0].1["message"].as_str().unwrap();
        assert!(message.contains("can be retried"), "{message}");
        assert!(message.contains("no release call"), "{message}");
    }
    for ticket in tickets {
        h.agents.release(ticket, 0, "");
    }
    op.stop().await;
}
