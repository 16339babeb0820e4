//! Review loop benchmark: how long from a reviewer's comment to its review job being enqueued.
//! On PostgreSQL and on SQLite, against the fake GitHub (`terarchitect-test-fakes`), with
//! `PRS` tickets in review (default 200), each with its own pull request. Prints:
//! - via the webhook: latency of a signed `issue_comment` delivery until the api-server answers
//!   with the enqueued job (p50/p99/max), one delivery per pull request, sequentially;
//! - via the PR poller: the cycle that finds one new comment on every pull request (its length
//!   bounds the comment-to-job latency on top of the poll interval), and a quiet cycle with
//!   nothing new (every read answered 304 Not Modified), with the GitHub requests each made and
//!   how many counted against the rate limit.
//!
//! Run: `cargo bench -p terarchitect-api-server --bench review_bench` (`PRS=1000` for a larger
//! board). The fake GitHub runs in the same process on loopback, so network time is not included.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use terarchitect_api_server::review::ReviewArgs;
use terarchitect_api_server::review::webhook::sign;
use terarchitect_api_server::testing::{Backend, TEST_SECRET_KEY, TestOptions, TestServer};
use terarchitect_test_fakes::FakeGitHub;
use uuid::Uuid;

const SECRET: &str = "bench-webhook-secret";

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

struct Board {
    srv: TestServer,
    gh: FakeGitHub,
    /// (ticket, pull request number)
    prs: Vec<(Uuid, u64)>,
}

/// POSTs `body` to `url` and returns the `id` of what it created.
async fn create(http: &reqwest::Client, url: String, body: Value) -> Uuid {
    let created: Value = http
        .post(url)
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    created["id"].as_str().unwrap().parse().unwrap()
}

/// A server on `backend` with `n` tickets in review on pull requests 100…
async fn board(backend: Backend, n: usize) -> Board {
    let gh = FakeGitHub::start().await;
    let opts = TestOptions {
        review: Some(ReviewArgs {
            github_api_url: gh.url.clone(),
            github_webhook_secret: Some(SECRET.into()),
            ..ReviewArgs::default()
        }),
        ..TestOptions::default()
    }
    .env("TERARCHITECT_SECRET_KEY", TEST_SECRET_KEY)
    .env("GITHUB_TOKEN", "ghp_bench");
    let srv = TestServer::start(backend, opts).await;
    let http = reqwest::Client::new();
    let pid = create(
        &http,
        format!("{}/api/projects", srv.url()),
        json!({"name": "Bench", "github_url": "https://github.com/acme/shop", "is_existing_repo": true}),
    )
    .await;
    let mut prs = Vec::with_capacity(n);
    for i in 0..n {
        let tid = create(
            &http,
            format!("{}/api/projects/{pid}/tickets", srv.url()),
            json!({"title": format!("Ticket {i}"), "column_id": "backlog"}),
        )
        .await;
        let number = 100 + i as u64;
        gh.add_pull(number, &format!("ticket-{tid}"));
        let url = format!("https://github.example/acme/shop/pull/{number}");
        srv.db()
            .complete_ticket(pid, tid, Some(&url), Some(number as i32))
            .await
            .unwrap();
        prs.push((tid, number));
    }
    Board { srv, gh, prs }
}

async fn via_webhook(backend: Backend, n: usize) {
    let b = board(backend, n).await;
    let http = reqwest::Client::new();
    let url = format!("{}/api/github/webhook", b.srv.url());
    let mut latencies = Vec::with_capacity(n);
    let started = Instant::now();
    for (i, (_, number)) in b.prs.iter().enumerate() {
        let comment =
            b.gh.add_issue_comment(*number, "reviewer", "Please handle empty names.");
        let payload = json!({"action": "created", "repository": {"full_name": "acme/shop"},
            "issue": {"number": number, "pull_request": {}}, "comment": comment});
        let body = serde_json::to_vec(&payload).unwrap();
        let t0 = Instant::now();
        let resp: Value = http
            .post(&url)
            .header("content-type", "application/json")
            .header("x-github-event", "issue_comment")
            .header("x-github-delivery", format!("bench-{i}"))
            .header("x-hub-signature-256", sign(SECRET.as_bytes(), &body))
            .body(body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        latencies.push(t0.elapsed());
        assert_eq!(
            resp["enqueued_job_ids"].as_array().map(Vec::len),
            Some(1),
            "{resp}"
        );
    }
    let total = started.elapsed();
    latencies.sort();
    println!(
        "{:<8} webhook: {n} comments -> {n} review jobs; latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({:.0} deliveries/s)",
        b.srv.db().backend_name(),
        percentile(&latencies, 0.5).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        latencies.last().unwrap().as_secs_f64() * 1e3,
        n as f64 / total.as_secs_f64(),
    );
    b.srv.server.shutdown().await;
}

fn request_counts(gh: &FakeGitHub) -> (usize, usize) {
    let seen = gh.requests();
    let charged = seen.iter().filter(|r| r.status != 304).count();
    (seen.len(), charged)
}

async fn via_poller(backend: Backend, n: usize) {
    let b = board(backend, n).await;
    let review = b.srv.server.state.review.clone();
    // A first cycle fills the ETag cache (the steady state of a running poller).
    review.poll_once().await.unwrap();
    for (_, number) in &b.prs {
        b.gh.add_issue_comment(*number, "reviewer", "Please handle empty names.");
    }
    b.gh.clear_requests();
    let t0 = Instant::now();
    let report = review.poll_once().await.unwrap();
    let busy = t0.elapsed();
    assert_eq!(report.enqueued as usize, n, "{report:?}");
    let (busy_req, busy_charged) = request_counts(&b.gh);

    b.gh.clear_requests();
    let t0 = Instant::now();
    let quiet_report = review.poll_once().await.unwrap();
    let quiet = t0.elapsed();
    assert_eq!(quiet_report.not_modified as usize, n, "{quiet_report:?}");
    let (quiet_req, quiet_charged) = request_counts(&b.gh);
    println!(
        "{:<8} poller:  cycle over {n} PRs with a new comment each: {:.0} ms ({:.1} ms/PR, {} review jobs, {busy_req} GitHub requests, {busy_charged} charged); quiet cycle: {:.0} ms ({quiet_req} requests, all 304, {quiet_charged} charged)",
        b.srv.db().backend_name(),
        busy.as_secs_f64() * 1e3,
        busy.as_secs_f64() * 1e3 / n as f64,
        report.enqueued,
        quiet.as_secs_f64() * 1e3,
    );
    println!(
        "{:<8} poller:  comment -> review job within poll interval + {:.1} s (TERARCHITECT_PR_POLL_SEC, default 600 s)",
        b.srv.db().backend_name(),
        busy.as_secs_f64()
    );
    b.srv.server.shutdown().await;
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let n: usize = std::env::var("PRS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    for backend in [Backend::Postgres, Backend::Sqlite] {
        via_webhook(backend, n).await;
        via_poller(backend, n).await;
    }
}
