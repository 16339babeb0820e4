//! api-server benchmark on PostgreSQL with 8 concurrent clients. Prints:
//! - claim throughput draining 5,000 pending jobs;
//! - worker-context p50/p99 and req/s for a project with 1,000 nodes, 3,000 edges, 500 tickets
//!   and 200 notes, then the same with each client presenting its run's token (the agents' case:
//!   one indexed lookup per request);
//! - logs POST req/s with a 4 KiB `raw_output`.
//!
//! Run: `cargo bench -p terarchitect-api-server --bench api_bench` (PostgreSQL binaries are
//! found as for the tests). `BENCH_SECONDS` sets the length of the timed phases (default 10).
//! The load generator runs in the same process as the server, so the figures are a lower bound.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use terarchitect_api_server::db::Db;
use terarchitect_api_server::testing::{Backend, TEST_SECRET_KEY, TestOptions, TestServer};
use uuid::Uuid;

const CLIENTS: usize = 8;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx]
}

async fn post(http: &reqwest::Client, url: String, body: &Value) -> reqwest::StatusCode {
    let resp = http.post(url).json(body).send().await.expect("request");
    let status = resp.status();
    let _ = resp.bytes().await;
    status
}

/// Inserts a project with `tickets` tickets, each with one pending job when `jobs`.
async fn seed(db: &Db, project: Uuid, tickets: usize, jobs: bool) {
    let now = chrono::Utc::now();
    macro_rules! go {
        ($pool:expr) => {{
            let mut tx = $pool.begin().await.unwrap();
            for i in 0..tickets {
                let tid = Uuid::new_v4();
                let column = ["backlog", "in_progress", "done", "in_review"][i % 4];
                sqlx::query(
                    "INSERT INTO tickets (id, project_id, column_id, title, description, associated_node_ids, associated_edge_ids, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)",
                )
                .bind(tid)
                .bind(project)
                .bind(column)
                .bind(format!("Ticket {i}"))
                .bind(format!("Description of ticket {i}: implement the thing carefully with tests."))
                .bind(sqlx::types::Json(json!([format!("n{}", i % 1000), format!("n{}", (i + 7) % 1000)])))
                .bind(sqlx::types::Json(json!([format!("e{}", i % 3000)])))
                .bind(now + chrono::Duration::microseconds(i as i64))
                .execute(&mut *tx)
                .await
                .unwrap();
                if jobs {
                    sqlx::query("INSERT INTO agent_jobs (id, ticket_id, project_id, kind, status, created_at, updated_at) VALUES ($1, $2, $3, 'ticket', 'pending', $4, $4)")
                        .bind(Uuid::new_v4())
                        .bind(tid)
                        .bind(project)
                        .bind(now + chrono::Duration::microseconds(i as i64))
                        .execute(&mut *tx)
                        .await
                        .unwrap();
                }
            }
            tx.commit().await.unwrap();
        }};
    }
    match db {
        Db::Postgres(pool) => go!(pool),
        Db::Sqlite(pool) => go!(pool),
    }
}

async fn create_project(http: &reqwest::Client, base: &str, name: &str) -> Uuid {
    let resp: Value = http
        .post(format!("{base}/api/projects"))
        .json(&json!({"name": name, "github_url": "https://github.com/acme/bench", "is_existing_repo": true}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    resp["id"].as_str().unwrap().parse().unwrap()
}

/// Runs `CLIENTS` loops of `op` for `duration`; returns (requests, latencies sorted).
async fn load<F, Fut>(duration: Duration, op: F) -> (usize, Vec<Duration>)
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let op = Arc::new(op);
    let deadline = Instant::now() + duration;
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let op = op.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while Instant::now() < deadline {
                let t = Instant::now();
                op(c).await;
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort();
    (all.len(), all)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let seconds: u64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let duration = Duration::from_secs(seconds);
    // Production defaults for caching (the test default reads settings fresh every time).
    let opts = TestOptions {
        settings_cache_ms: Some(1000),
        ..TestOptions::default()
    }
    .env("TERARCHITECT_SECRET_KEY", TEST_SECRET_KEY)
    .env("GITHUB_TOKEN", "ghp_bench");
    let srv = TestServer::start(Backend::Postgres, opts).await;
    let base = srv.url();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()
        .unwrap();
    println!(
        "api-server benchmark: PostgreSQL, {CLIENTS} concurrent clients, {seconds}s timed phases"
    );

    // 1. Claim throughput over 5,000 pending jobs.
    let claim_project = create_project(&http, &base, "claims").await;
    seed(srv.db(), claim_project, 5000, true).await;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let http = http.clone();
        let url = format!("{base}/api/worker/jobs/start");
        let body = json!({"project_id": claim_project.to_string()});
        tasks.push(tokio::spawn(async move {
            let mut n = 0usize;
            while post(&http, url.clone(), &body).await == reqwest::StatusCode::OK {
                n += 1;
            }
            n
        }));
    }
    let mut claimed = 0;
    for t in tasks {
        claimed += t.await.unwrap();
    }
    let took = start.elapsed();
    println!(
        "claims: {claimed} jobs in {:.2}s = {:.0} claims/s (original: 49/s)",
        took.as_secs_f64(),
        claimed as f64 / took.as_secs_f64()
    );

    // 2. worker-context on a large project.
    let ctx_project = create_project(&http, &base, "context").await;
    let nodes: Vec<Value> = (0..1000)
        .map(|i| json!({"id": format!("n{i}"), "type": "service", "position": {"x": i, "y": i * 2}, "data": {"label": format!("Service {i}"), "description": "A component of the system", "tech": "rust"}}))
        .collect();
    let edges: Vec<Value> = (0..3000)
        .map(|i| json!({"id": format!("e{i}"), "source": format!("n{}", i % 1000), "target": format!("n{}", (i * 7 + 1) % 1000), "data": {"label": "calls"}}))
        .collect();
    let status = http
        .put(format!("{base}/api/projects/{ctx_project}/graph"))
        .json(&json!({"nodes": nodes, "edges": edges}))
        .send()
        .await
        .unwrap()
        .status();
    assert!(status.is_success());
    seed(srv.db(), ctx_project, 500, false).await;
    for i in 0..200 {
        let st = post(&http, format!("{base}/api/projects/{ctx_project}/notes"), &json!({"title": format!("Note {i}"), "content": "Decision record: use PostgreSQL.", "node_ids": [format!("n{i}")]})).await;
        assert!(st.is_success());
    }
    let tickets: Vec<Value> = http
        .get(format!("{base}/api/projects/{ctx_project}/tickets"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ticket_ids: Arc<Vec<String>> = Arc::new(
        tickets
            .iter()
            .map(|t| t["id"].as_str().unwrap().to_owned())
            .collect(),
    );
    let size = http
        .get(format!(
            "{base}/api/projects/{ctx_project}/tickets/{}/worker-context",
            ticket_ids[1]
        ))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap()
        .len();
    let (n, lat) = {
        let http = http.clone();
        let base = base.clone();
        let ids = ticket_ids.clone();
        load(duration, move |c| {
            let url = format!(
                "{base}/api/projects/{ctx_project}/tickets/{}/worker-context",
                ids[c % ids.len()]
            );
            let http = http.clone();
            async move {
                let r = http.get(url).send().await.unwrap();
                assert!(r.status().is_success());
                let _ = r.bytes().await;
            }
        })
        .await
    };
    println!(
        "worker-context ({} KiB): {:.0} req/s, p50 {:.1} ms, p99 {:.1} ms (original: 17 req/s, p99 626 ms)",
        size / 1024,
        n as f64 / duration.as_secs_f64(),
        percentile(&lat, 0.50).as_secs_f64() * 1000.0,
        percentile(&lat, 0.99).as_secs_f64() * 1000.0
    );

    // 2b. The same, each client with the run token of a job on its ticket.
    let mut tokens = Vec::new();
    for id in ticket_ids.iter().take(CLIENTS) {
        // Moving a ticket into In Progress enqueues its job.
        for column in ["backlog", "in_progress"] {
            let status = http
                .patch(format!("{base}/api/projects/{ctx_project}/tickets/{id}"))
                .json(&json!({"column_id": column}))
                .send()
                .await
                .unwrap()
                .status();
            assert!(status.is_success());
        }
        let job: Value = http
            .post(format!("{base}/api/worker/jobs/start"))
            .json(&json!({"project_id": ctx_project.to_string()}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let token = job["run_token"].as_str().unwrap().to_owned();
        tokens.push((job["ticket_id"].as_str().unwrap().to_owned(), token));
    }
    let tokens = Arc::new(tokens);
    let (n, lat) = {
        let http = http.clone();
        let base = base.clone();
        load(duration, move |c| {
            let (ticket, token) = &tokens[c];
            let req = http
                .get(format!(
                    "{base}/api/projects/{ctx_project}/tickets/{ticket}/worker-context"
                ))
                .bearer_auth(token);
            async move {
                let r = req.send().await.unwrap();
                assert!(r.status().is_success());
                let _ = r.bytes().await;
            }
        })
        .await
    };
    println!(
        "worker-context with run tokens: {:.0} req/s, p50 {:.1} ms, p99 {:.1} ms",
        n as f64 / duration.as_secs_f64(),
        percentile(&lat, 0.50).as_secs_f64() * 1000.0,
        percentile(&lat, 0.99).as_secs_f64() * 1000.0
    );

    // 3. logs POST with a 4 KiB raw_output.
    let raw = "x".repeat(4096);
    let (n, lat) = {
        let http = http.clone();
        let base = base.clone();
        let ids = ticket_ids.clone();
        load(duration, move |c| {
            let url = format!("{base}/api/projects/{ctx_project}/tickets/{}/logs", ids[c]);
            let body = json!({"session_id": "bench", "step": "worker_turn_1", "summary": "Turn 1 completed", "raw_output": raw});
            let http = http.clone();
            async move {
                assert_eq!(post(&http, url, &body).await, reqwest::StatusCode::OK);
            }
        })
        .await
    };
    println!(
        "logs POST (4 KiB): {:.0} req/s, p50 {:.1} ms, p99 {:.1} ms (original: 262 req/s)",
        n as f64 / duration.as_secs_f64(),
        percentile(&lat, 0.50).as_secs_f64() * 1000.0,
        percentile(&lat, 0.99).as_secs_f64() * 1000.0
    );
    srv.server.shutdown().await;
}
