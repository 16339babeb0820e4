//! No credential reaches the server's logs or traces: with every api-server, tower-http, axum
//! and sqlx event recorded at TRACE, a run of claims, worker calls (allowed and refused) and
//! admin calls (allowed and refused) leaves no token in the output.

use std::io::Write;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use terarchitect_api_server::testing::{Backend, TEST_SECRET_KEY, TestOptions, TestServer};
use tracing_subscriber::EnvFilter;

const WORKER_KEY: &str = "worker-key-4d1c9b";
const ADMIN_TOKEN: &str = "admin-token-7f3e2a";

/// A writer appending to a shared buffer.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

async fn send(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    token: &str,
    body: Value,
) -> (reqwest::StatusCode, Value) {
    let resp = http
        .request(method, url)
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_never_reach_the_logs() {
    let capture = Capture::default();
    let writer = capture.clone();
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::new(
            "terarchitect_api_server=trace,tower_http=trace,axum=trace,sqlx=trace",
        ))
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .init();

    let opts = TestOptions {
        admin_tokens: vec![ADMIN_TOKEN.into()],
        ..TestOptions::default()
            .env("TERARCHITECT_SECRET_KEY", TEST_SECRET_KEY)
            .env("GITHUB_TOKEN", "ghp_test_token")
            .env("TERARCHITECT_WORKER_API_KEY", WORKER_KEY)
    };
    let srv = TestServer::start(Backend::Sqlite, opts).await;
    let base = srv.url();
    let http = reqwest::Client::new();
    use reqwest::Method as M;
    let (s, p) = send(
        &http,
        M::POST,
        format!("{base}/api/projects"),
        ADMIN_TOKEN,
        json!({"name": "L", "github_url": "https://github.com/acme/l", "is_existing_repo": true}),
    )
    .await;
    assert!(s.is_success(), "{p}");
    let pid = p["id"].as_str().unwrap().to_owned();
    send(
        &http,
        M::PUT,
        format!("{base}/api/projects/{pid}/graph"),
        ADMIN_TOKEN,
        json!({"nodes": [{"id": "n1", "data": {"label": "API"}}]}),
    )
    .await;
    let (_, t) = send(
        &http,
        M::POST,
        format!("{base}/api/projects/{pid}/tickets"),
        ADMIN_TOKEN,
        json!({"title": "t", "column_id": "backlog"}),
    )
    .await;
    let tid = t["id"].as_str().unwrap().to_owned();
    let (s, _) = send(
        &http,
        M::PATCH,
        format!("{base}/api/projects/{pid}/tickets/{tid}"),
        ADMIN_TOKEN,
        json!({"column_id": "in_progress"}),
    )
    .await;
    assert!(s.is_success());
    let (s, job) = send(
        &http,
        M::POST,
        format!("{base}/api/worker/jobs/start"),
        WORKER_KEY,
        json!({}),
    )
    .await;
    assert!(s.is_success(), "{job}");
    let run_token = job["run_token"].as_str().unwrap().to_owned();
    let ctx = format!("{base}/api/projects/{pid}/tickets/{tid}/worker-context");
    for (token, url) in [
        (run_token.as_str(), ctx.clone()),
        (run_token.as_str(), format!("{base}/api/settings")),
        (run_token.as_str(), format!("{base}/api/worker/jobs/start")),
        (WORKER_KEY, format!("{base}/api/settings")),
        (ADMIN_TOKEN, ctx.clone()),
        (ADMIN_TOKEN, format!("{base}/api/settings")),
    ] {
        send(&http, M::GET, url, token, json!({})).await;
    }
    send(
        &http,
        M::POST,
        format!(
            "{base}/api/worker/jobs/{}/complete",
            job["job_id"].as_str().unwrap()
        ),
        WORKER_KEY,
        json!({}),
    )
    .await;
    let (s, _) = send(&http, M::GET, ctx, &run_token, json!({})).await;
    assert_eq!(s, reqwest::StatusCode::UNAUTHORIZED);
    srv.server.shutdown().await;

    let logs = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("worker-context") && logs.contains("claimed job"),
        "the requests were traced:\n{logs}"
    );
    for secret in [run_token.as_str(), WORKER_KEY, ADMIN_TOKEN] {
        assert!(!logs.contains(secret), "{secret} was logged");
    }
    let secret_body = &run_token["tart_".len()..];
    assert!(!logs.contains(secret_body), "the run token was logged");
}
