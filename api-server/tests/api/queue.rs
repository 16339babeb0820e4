//! The job queue: claim shape and order, outcomes and the 409 rule, leases, heartbeats,
//! long polling, review jobs, and concurrent claimers.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use terarchitect_api_server::db::Db;
use uuid::Uuid;

use crate::common::*;

async fn claim_shape_order_and_filters(backend: Backend) {
    let srv = TestServer::start(
        backend,
        ready_options()
            .env("WORKER_MODE", "opencode")
            .env("openai_api_key", "sk-oa"),
    )
    .await;
    let api = Api::new(&srv);
    let (s, body) = api.post("/api/worker/jobs/start", json!({})).await;
    assert_eq!((s, body), (StatusCode::NO_CONTENT, Value::Null));
    let resp = api
        .http
        .post(format!("{}/api/worker/jobs/start", api.base))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-terarchitect-queue"], "2");

    let p1 = ready_project(&api, "P1").await;
    let p2 = ready_project(&api, "P2").await;
    let a = ticket(&api, p1, "a").await;
    let b = ticket(&api, p2, "b").await;
    let c = ticket(&api, p1, "c").await;
    for (p, t) in [(p1, a), (p2, b), (p1, c)] {
        start_ticket(&api, p, t).await;
    }

    let (s, e) = api
        .post("/api/worker/jobs/start", json!({"project_id": "nope"}))
        .await;
    assert_eq!(
        (s, e),
        (
            StatusCode::BAD_REQUEST,
            json!({"error": "project_id must be a valid UUID"})
        )
    );
    let (s, e) = api
        .post(
            "/api/worker/jobs/start",
            json!({"project_id": Uuid::new_v4().to_string()}),
        )
        .await;
    assert_eq!(
        (s, e),
        (StatusCode::NOT_FOUND, json!({"error": "Project not found"}))
    );

    // Filtered by project, oldest first.
    let (s, j) = api
        .post(
            "/api/worker/jobs/start",
            json!({"project_id": p2.to_string()}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(j["ticket_id"], b.to_string());
    let (_, j1) = api.post("/api/worker/jobs/start", json!({})).await;
    assert_eq!(j1["ticket_id"], a.to_string());
    let (_, j2) = api
        .post("/api/worker/jobs/start", json!({"project_id": null}))
        .await;
    assert_eq!(j2["ticket_id"], c.to_string());
    assert_eq!(
        api.post("/api/worker/jobs/start", json!({})).await.0,
        StatusCode::NO_CONTENT
    );

    // The original's fields, plus the additions.
    assert_eq!(j1["kind"], "ticket");
    assert_eq!(j1["project_id"], p1.to_string());
    assert_eq!(j1["repo_url"], "https://github.com/acme/shop");
    assert_eq!(j1["execution_mode"], "docker");
    assert_eq!(j1["project_path"], Value::Null);
    assert!(j1.get("pr_number").is_none() && j1.get("comment_body").is_none());
    let env = j1["agent_env"].as_object().unwrap();
    assert_eq!(env["GITHUB_TOKEN"], "ghp_test_token");
    assert_eq!(env["GH_TOKEN"], "ghp_test_token");
    assert_eq!(env["WORKER_MODE"], "opencode");
    assert_eq!(env["OPENAI_API_KEY"], "sk-oa");
    assert_eq!(j1["attempt"], 1);
    assert!(j1["created_at"].is_string() && j1["lease_expires_at"].is_string());

    // Several projects at once (extension): the oldest pending job among them.
    let (s, _) = api
        .post("/api/worker/jobs/start", json!({"project_ids": ["x"]}))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = api
        .post(
            "/api/worker/jobs/start",
            json!({"project_ids": [Uuid::new_v4().to_string()]}),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let d = ticket(&api, p1, "d").await;
    let e = ticket(&api, p2, "e").await;
    start_ticket(&api, p1, d).await;
    start_ticket(&api, p2, e).await;
    let (_, j) = api
        .post(
            "/api/worker/jobs/start",
            json!({"project_ids": [p2.to_string(), p1.to_string()]}),
        )
        .await;
    assert_eq!(j["ticket_id"], d.to_string());
    let (_, j) = api
        .post(
            "/api/worker/jobs/start",
            json!({"project_ids": [p2.to_string()]}),
        )
        .await;
    assert_eq!(j["ticket_id"], e.to_string());
}

async fn outcomes_and_conflicts(backend: Backend) {
    let srv = TestServer::start(backend, ready_options()).await;
    let api = Api::new(&srv);
    let pid = ready_project(&api, "O").await;
    let t1 = ticket(&api, pid, "one").await;
    let t2 = ticket(&api, pid, "two").await;
    start_ticket(&api, pid, t1).await;
    start_ticket(&api, pid, t2).await;
    let (_, j1) = api.post("/api/worker/jobs/start", json!({})).await;
    let (_, j2) = api.post("/api/worker/jobs/start", json!({})).await;
    let (id1, id2) = (
        j1["job_id"].as_str().unwrap(),
        j2["job_id"].as_str().unwrap(),
    );

    // The original coordinator posts with no body and no content type.
    let (s, r) = api
        .raw(
            reqwest::Method::POST,
            &format!("/api/worker/jobs/{id1}/complete"),
            None,
            Vec::new(),
        )
        .await;
    assert_eq!(
        (s, r),
        (
            StatusCode::OK,
            json!({"message": "Job completed", "job_id": id1})
        )
    );
    let (s, r) = api
        .post(&format!("/api/worker/jobs/{id1}/complete"), json!({}))
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_eq!(
        (r["error"].as_str(), r["status"].as_str()),
        (Some("Job not running"), Some("completed"))
    );
    let (s, r) = api
        .post(&format!("/api/worker/jobs/{id1}/fail"), json!({}))
        .await;
    assert_eq!(
        (s, r["status"].as_str()),
        (StatusCode::CONFLICT, Some("completed"))
    );

    // A stale attempt cannot finish the job.
    let (s, r) = api
        .post(
            &format!("/api/worker/jobs/{id2}/fail"),
            json!({"attempt": 7}),
        )
        .await;
    assert_eq!(
        (s, r["status"].as_str()),
        (StatusCode::CONFLICT, Some("running"))
    );
    let (s, r) = api
        .post(
            &format!("/api/worker/jobs/{id2}/fail"),
            json!({"reason": "DeadlineExceeded", "message": "ran past 3600s", "attempt": 1}),
        )
        .await;
    assert_eq!(
        (s, r),
        (
            StatusCode::OK,
            json!({"message": "Job failed", "job_id": id2})
        )
    );
    let (s, state) = api.get(&format!("/api/worker/jobs/{id2}")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(state["status"], "failed");
    assert_eq!(state["fail_reason"], "DeadlineExceeded");
    assert_eq!(state["fail_message"], "ran past 3600s");
    assert_eq!(state["attempt"], 1);
    assert!(state["finished_at"].is_string());
    assert_eq!(state["lease_expires_at"], Value::Null);

    let missing = Uuid::new_v4();
    for path in [
        format!("/api/worker/jobs/{missing}/complete"),
        format!("/api/worker/jobs/{missing}/fail"),
        format!("/api/worker/jobs/{missing}/heartbeat"),
    ] {
        let (s, e) = api.post(&path, json!({})).await;
        assert_eq!(
            (s, e),
            (StatusCode::NOT_FOUND, json!({"error": "Job not found"})),
            "{path}"
        );
    }
    assert_eq!(
        api.get(&format!("/api/worker/jobs/{missing}")).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        api.get("/api/worker/jobs/not-a-uuid").await.0,
        StatusCode::NOT_FOUND
    );

    // A failed job does not block its ticket: moving it again queues a new one.
    api.patch(
        &format!("/api/projects/{pid}/tickets/{t2}"),
        json!({"column_id": "backlog"}),
    )
    .await;
    start_ticket(&api, pid, t2).await;
    let (s, j3) = api.post("/api/worker/jobs/start", json!({})).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(j3["ticket_id"], t2.to_string());
    assert_ne!(j3["job_id"], j2["job_id"]);
}

async fn leases_expire_and_requeue(backend: Backend) {
    let opts = TestOptions {
        max_attempts: Some(2),
        lease_sweep_ms: Some(50),
        ..ready_options()
    };
    let srv = TestServer::start(backend, opts).await;
    let api = Api::new(&srv);
    let pid = ready_project(&api, "L").await;
    let tid = ticket(&api, pid, "t").await;
    start_ticket(&api, pid, tid).await;

    let (_, j) = api
        .post("/api/worker/jobs/start", json!({"lease_seconds": 1}))
        .await;
    let id = j["job_id"].as_str().unwrap().to_owned();
    assert_eq!(j["attempt"], 1);
    // Heartbeats keep it.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        let (s, hb) = api
            .post(
                &format!("/api/worker/jobs/{id}/heartbeat"),
                json!({"attempt": 1}),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{hb}");
        assert_eq!(hb["status"], "running");
        assert_eq!(hb["cancel_requested"], false);
    }
    // Without heartbeats the lease runs out and the job is pending again.
    let state = wait_for_status(&api, &id, "pending").await;
    assert_eq!(state["attempt"], 1);
    let (s, _) = api
        .post(&format!("/api/worker/jobs/{id}/complete"), json!({}))
        .await;
    assert_eq!(
        s,
        StatusCode::CONFLICT,
        "the crashed claimer cannot complete a re-queued job"
    );
    let (_, again) = api
        .post("/api/worker/jobs/start", json!({"lease_seconds": 1}))
        .await;
    assert_eq!(again["job_id"], id.as_str());
    assert_eq!(again["attempt"], 2);
    let (s, _) = api
        .post(
            &format!("/api/worker/jobs/{id}/heartbeat"),
            json!({"attempt": 1}),
        )
        .await;
    assert_eq!(
        s,
        StatusCode::CONFLICT,
        "a stale claimer's heartbeat is refused"
    );
    // Out of attempts: failed, and the ticket is free again.
    let state = wait_for_status(&api, &id, "failed").await;
    assert_eq!(state["fail_reason"], "LeaseExpired");
    api.patch(
        &format!("/api/projects/{pid}/tickets/{tid}"),
        json!({"column_id": "backlog"}),
    )
    .await;
    start_ticket(&api, pid, tid).await;
    assert_eq!(
        api.post("/api/worker/jobs/start", json!({})).await.0,
        StatusCode::OK
    );
}

async fn heartbeat_reports_cancellation(backend: Backend) {
    let srv = TestServer::start(backend, ready_options()).await;
    let api = Api::new(&srv);
    let pid = ready_project(&api, "H").await;
    let tid = ticket(&api, pid, "t").await;
    start_ticket(&api, pid, tid).await;
    let (_, j) = api
        .post("/api/worker/jobs/start", json!({"lease_seconds": 60}))
        .await;
    let id = j["job_id"].as_str().unwrap();
    api.post(
        &format!("/api/projects/{pid}/tickets/{tid}/cancel"),
        json!({}),
    )
    .await;
    let (_, hb) = api
        .post(
            &format!("/api/worker/jobs/{id}/heartbeat"),
            json!({"lease_seconds": 30}),
        )
        .await;
    assert_eq!(hb["cancel_requested"], true);
    assert_eq!(
        api.get(&format!("/api/worker/jobs/{id}")).await.1["cancel_requested"],
        true
    );
    let (s, _) = api
        .post(
            &format!("/api/worker/jobs/{id}/heartbeat"),
            json!({"lease_seconds": 0}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    api.post(
        &format!("/api/worker/jobs/{id}/fail"),
        json!({"reason": "Cancelled"}),
    )
    .await;
    let (s, r) = api
        .post(&format!("/api/worker/jobs/{id}/heartbeat"), json!({}))
        .await;
    assert_eq!(
        (s, r["status"].as_str()),
        (StatusCode::CONFLICT, Some("failed"))
    );
}

async fn long_poll(backend: Backend) {
    let srv = TestServer::start(backend, ready_options()).await;
    let api = Api::new(&srv);
    let pid = ready_project(&api, "W").await;
    let tid = ticket(&api, pid, "t").await;

    let started = Instant::now();
    let (s, _) = api
        .post("/api/worker/jobs/start", json!({"wait_seconds": 1}))
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert!(
        started.elapsed() >= Duration::from_millis(950),
        "waited {:?}",
        started.elapsed()
    );
    let (s, _) = api
        .post("/api/worker/jobs/start", json!({"wait_seconds": 31}))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);

    let waiter = {
        let api = api.clone();
        tokio::spawn(async move {
            let t = Instant::now();
            let r = api
                .post("/api/worker/jobs/start", json!({"wait_seconds": 20}))
                .await;
            (r, t.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    start_ticket(&api, pid, tid).await;
    let ((s, job), waited) = waiter.await.unwrap();
    assert_eq!(s, StatusCode::OK);
    assert_eq!(job["ticket_id"], tid.to_string());
    assert!(waited < Duration::from_secs(5), "woke after {waited:?}");
}

async fn review_jobs(backend: Backend) {
    let srv = TestServer::start(backend, ready_options()).await;
    let api = Api::new(&srv);
    let pid = ready_project(&api, "R").await;
    let tid = ticket(&api, pid, "t").await;
    let path = format!("/api/projects/{pid}/tickets/{tid}/review-jobs");
    for bad in [
        json!({}),
        json!({"pr_number": 0}),
        json!({"pr_number": "7"}),
        json!({"pr_number": 7, "github_comment_id": "x"}),
    ] {
        assert_eq!(
            api.post(&path, bad.clone()).await.0,
            StatusCode::BAD_REQUEST,
            "{bad}"
        );
    }
    let (s, job) = api
        .post(
            &path,
            json!({"pr_number": 7, "comment_body": "Please add tests", "github_comment_id": 9001}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{job}");
    assert_eq!(job["kind"], "review");
    assert_eq!(job["status"], "pending");
    let (s, e) = api.post(&path, json!({"pr_number": 7})).await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_eq!(e["job_id"], job["job_id"]);
    assert_eq!(
        api.post(
            &format!("/api/projects/{pid}/tickets/{}/review-jobs", Uuid::new_v4()),
            json!({"pr_number": 1})
        )
        .await
        .0,
        StatusCode::NOT_FOUND
    );

    let (_, claimed) = api.post("/api/worker/jobs/start", json!({})).await;
    assert_eq!(claimed["kind"], "review");
    assert_eq!(claimed["pr_number"], 7);
    assert_eq!(claimed["comment_body"], "Please add tests");
    assert_eq!(claimed["github_comment_id"], 9001);
    let id = claimed["job_id"].as_str().unwrap();
    assert_eq!(
        srv.db()
            .review_comment_addressed(pid, 7, 9001)
            .await
            .unwrap(),
        Some(false)
    );
    api.post(&format!("/api/worker/jobs/{id}/complete"), json!({}))
        .await;
    assert_eq!(
        srv.db()
            .review_comment_addressed(pid, 7, 9001)
            .await
            .unwrap(),
        Some(true)
    );
    // A review job without a comment id has the key, as null.
    let (_, _) = api.post(&path, json!({"pr_number": 8})).await;
    let (_, claimed) = api.post("/api/worker/jobs/start", json!({})).await;
    assert_eq!(claimed["github_comment_id"], Value::Null);
    assert_eq!(claimed["comment_body"], "");
}

/// Inserts `n` tickets with one pending job each, straight into the database.
async fn seed_jobs(db: &Db, project: Uuid, n: usize) {
    let now = chrono::Utc::now();
    macro_rules! seed {
        ($pool:expr) => {{
            let mut tx = $pool.begin().await.unwrap();
            for i in 0..n {
                let tid = Uuid::new_v4();
                sqlx::query("INSERT INTO tickets (id, project_id, column_id, title, created_at, updated_at) VALUES ($1, $2, 'in_progress', 'bulk', $3, $3)")
                    .bind(tid)
                    .bind(project)
                    .bind(now)
                    .execute(&mut *tx)
                    .await
                    .unwrap();
                sqlx::query("INSERT INTO agent_jobs (id, ticket_id, project_id, kind, status, created_at, updated_at) VALUES ($1, $2, $3, 'ticket', 'pending', $4, $4)")
                    .bind(Uuid::new_v4())
                    .bind(tid)
                    .bind(project)
                    .bind(now + chrono::Duration::microseconds(i as i64))
                    .execute(&mut *tx)
                    .await
                    .unwrap();
            }
            tx.commit().await.unwrap();
        }};
    }
    match db {
        Db::Postgres(pool) => seed!(pool),
        Db::Sqlite(pool) => seed!(pool),
    }
}

async fn concurrent_claimers_never_double_claim(backend: Backend) {
    const JOBS: usize = 2000;
    const CLAIMERS: usize = 16;
    let srv = TestServer::start(backend, ready_options()).await;
    let api = Api::new(&srv);
    let pid = ready_project(&api, "C").await;
    seed_jobs(srv.db(), pid, JOBS).await;
    let mut tasks = Vec::new();
    for _ in 0..CLAIMERS {
        let api = api.clone();
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let (s, j) = api
                    .post(
                        "/api/worker/jobs/start",
                        json!({"project_id": pid.to_string()}),
                    )
                    .await;
                match s {
                    StatusCode::OK => mine.push(j["job_id"].as_str().unwrap().to_owned()),
                    StatusCode::NO_CONTENT => return mine,
                    other => panic!("claim failed: {other} {j}"),
                }
            }
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let unique: HashSet<&String> = all.iter().collect();
    assert_eq!(all.len(), JOBS, "every job claimed");
    assert_eq!(unique.len(), JOBS, "no job claimed twice");
    let depth = srv.db().queue_depth().await.unwrap();
    assert_eq!(depth, vec![("running".to_owned(), JOBS as i64)]);
}

on_both_backends!(
    claim_shape_order_and_filters,
    outcomes_and_conflicts,
    leases_expire_and_requeue,
    heartbeat_reports_cancellation,
    long_poll,
    review_jobs,
    concurrent_claimers_never_double_claim,
);

/// PostgreSQL only: a claimer long-polling one replica wakes when another replica (or a
/// hand-written INSERT) enqueues, through LISTEN/NOTIFY.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_notify_wakes_other_replicas() {
    let a = TestServer::start(Backend::Postgres, ready_options()).await;
    let b = TestServer::start_on(&a.database_url, &ready_options()).await;
    let api_a = Api::new(&a);
    let api_b = Api {
        base: b.url(),
        ..api_a.clone()
    };
    let pid = ready_project(&api_a, "N").await;
    let tid = ticket(&api_a, pid, "t").await;
    let waiter = {
        let api_b = api_b.clone();
        tokio::spawn(async move {
            let t = Instant::now();
            (
                api_b
                    .post("/api/worker/jobs/start", json!({"wait_seconds": 20}))
                    .await,
                t.elapsed(),
            )
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    start_ticket(&api_a, pid, tid).await;
    let ((s, job), waited) = waiter.await.unwrap();
    assert_eq!(s, StatusCode::OK);
    assert_eq!(job["ticket_id"], tid.to_string());
    // The safety poll is 2 s; a wake-up through NOTIFY is much faster.
    assert!(
        waited < Duration::from_millis(1900),
        "woke after {waited:?}"
    );

    // A row inserted by hand (as the original's docs suggest) wakes claimers too.
    let t2 = ticket(&api_a, pid, "t2").await;
    let waiter = {
        let api_b = api_b.clone();
        tokio::spawn(async move {
            api_b
                .post("/api/worker/jobs/start", json!({"wait_seconds": 20}))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let Db::Postgres(pool) = a.db() else {
        unreachable!()
    };
    sqlx::query("INSERT INTO agent_jobs (id, ticket_id, project_id, kind, status) VALUES (gen_random_uuid(), $1, $2, 'ticket', 'pending')")
        .bind(t2)
        .bind(pid)
        .execute(pool)
        .await
        .unwrap();
    let (s, job) = waiter.await.unwrap();
    assert_eq!(s, StatusCode::OK);
    assert_eq!(job["ticket_id"], t2.to_string());
    b.shutdown().await;
}
