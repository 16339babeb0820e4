//! Job release (an addition to the worker API): a claimer gives a running job back to the
//! queue; the claim's run token ends, the attempt guard holds, and the claim does not count
//! against max-attempts.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::*;

const WORKER_KEY: &str = "release-worker-key";
const RUN_EXPIRED: &str = "Run token is no longer valid: its run finished, its lease expired or the job was claimed again";

/// Claims a job; returns (job id, attempt, run token).
async fn claim(worker: &Api, body: Value) -> (String, i64, String) {
    let (s, j) = worker.post("/api/worker/jobs/start", body).await;
    assert_eq!(s, StatusCode::OK, "{j}");
    (
        j["job_id"].as_str().unwrap().to_owned(),
        j["attempt"].as_i64().unwrap(),
        j["run_token"].as_str().expect("a run token").to_owned(),
    )
}

async fn release_returns_the_job_to_the_queue(backend: Backend) {
    let srv = TestServer::start(
        backend,
        ready_options().env("TERARCHITECT_WORKER_API_KEY", WORKER_KEY),
    )
    .await;
    let admin = Api::new(&srv);
    let worker = admin.with_token(WORKER_KEY);
    let pid = ready_project(&admin, "R").await;
    let tid = ticket(&admin, pid, "t").await;
    start_ticket(&admin, pid, tid).await;
    let (id, attempt, token) = claim(&worker, json!({})).await;
    assert_eq!(attempt, 1);
    let release = format!("/api/worker/jobs/{id}/release");
    let state_path = format!("/api/worker/jobs/{id}");
    let as_run = admin.with_token(&token);
    assert_eq!(as_run.get(&state_path).await.0, StatusCode::OK);

    // Worker key only: the run's own token cannot give its job back.
    let (s, e) = as_run.post(&release, json!({"attempt": 1})).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{e}");
    // Bad bodies: JSON 400.
    for body in [
        json!({"attempt": "one"}),
        json!({"attempt": 1.5}),
        json!({"reason": 7}),
    ] {
        let (s, e) = worker.post(&release, body.clone()).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body}: {e}");
        assert!(e["error"].is_string(), "{e}");
    }
    // A stale attempt: 409 with the job's state, and nothing changes.
    let (s, e) = worker.post(&release, json!({"attempt": 7})).await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_eq!(
        (e["error"].as_str(), e["status"].as_str()),
        (Some("Job not running"), Some("running"))
    );
    // Unknown job: 404.
    let missing = format!("/api/worker/jobs/{}/release", uuid::Uuid::new_v4());
    assert_eq!(
        worker.post(&missing, json!({})).await,
        (StatusCode::NOT_FOUND, json!({"error": "Job not found"}))
    );

    let (s, r) = worker
        .post(&release, json!({"attempt": 1, "reason": "Unschedulable"}))
        .await;
    assert_eq!(
        (s, r),
        (
            StatusCode::OK,
            json!({"message": "Job released", "job_id": id})
        )
    );
    let (_, state) = worker.get(&state_path).await;
    assert_eq!(state["status"], "pending");
    assert_eq!(state["attempt"], 1);
    assert_eq!(state["lease_expires_at"], Value::Null);
    assert_eq!(state["claimed_at"], Value::Null);
    assert_eq!(state["fail_reason"], Value::Null);
    // The released claim's token is over, and so is the claim: a second release is a 409.
    assert_eq!(
        as_run.get(&state_path).await,
        (StatusCode::UNAUTHORIZED, json!({"error": RUN_EXPIRED}))
    );
    let (s, e) = worker.post(&release, json!({"attempt": 1})).await;
    assert_eq!(
        (s, e["status"].as_str()),
        (StatusCode::CONFLICT, Some("pending"))
    );

    // Claimable again, with a new token; the old one stays refused, the stale attempt too.
    let (again, attempt, new_token) = claim(&worker, json!({})).await;
    assert_eq!((again.as_str(), attempt), (id.as_str(), 2));
    assert_ne!(new_token, token);
    assert_eq!(as_run.get(&state_path).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(
        admin.with_token(&new_token).get(&state_path).await.0,
        StatusCode::OK
    );
    let (s, e) = worker
        .post(
            &format!("/api/worker/jobs/{id}/complete"),
            json!({"attempt": 1}),
        )
        .await;
    assert_eq!(
        (s, e["status"].as_str()),
        (StatusCode::CONFLICT, Some("running"))
    );

    // A finished job cannot be released.
    let (s, _) = worker
        .post(
            &format!("/api/worker/jobs/{id}/complete"),
            json!({"attempt": 2}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, e) = worker.post(&release, json!({})).await;
    assert_eq!(
        (s, e["error"].as_str(), e["status"].as_str()),
        (
            StatusCode::CONFLICT,
            Some("Job not running"),
            Some("completed")
        )
    );
}

async fn releases_do_not_use_up_attempts(backend: Backend) {
    let opts = TestOptions {
        max_attempts: Some(2),
        lease_sweep_ms: Some(50),
        ..ready_options()
    };
    let srv = TestServer::start(backend, opts).await;
    let api = Api::new(&srv);
    let pid = ready_project(&api, "M").await;
    let tid = ticket(&api, pid, "t").await;
    start_ticket(&api, pid, tid).await;

    // Three claims released (more than max-attempts), with no body, as the original
    // coordinator posts.
    for expected in 1..=3 {
        let (id, attempt, _) = claim(&api, json!({})).await;
        assert_eq!(attempt, expected);
        let (s, r) = api
            .raw(
                reqwest::Method::POST,
                &format!("/api/worker/jobs/{id}/release"),
                None,
                Vec::new(),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{r}");
    }
    // The fourth claim's lease runs out: re-queued (one real attempt used), not failed.
    let (id, attempt, _) = claim(&api, json!({"lease_seconds": 1})).await;
    assert_eq!(attempt, 4);
    let state = wait_for_status(&api, &id, "pending").await;
    assert_eq!(state["fail_reason"], Value::Null);
    // The fifth is the second real attempt: when its lease runs out the job fails.
    let (_, attempt, _) = claim(&api, json!({"lease_seconds": 1})).await;
    assert_eq!(attempt, 5);
    let state = wait_for_status(&api, &id, "failed").await;
    assert_eq!(state["fail_reason"], "LeaseExpired");
}

on_both_backends!(
    release_returns_the_job_to_the_queue,
    releases_do_not_use_up_attempts,
);
