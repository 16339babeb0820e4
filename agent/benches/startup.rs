//! Start-up benchmark: time from `exec` of `terarchitect-agent ticket` to its first request
//! (worker-context) at a tiny local HTTP server, over N runs (`BENCH_RUNS`, default 50).
//! The server answers 404, so each run ends at once (Misconfigured). Prints figures only.
//!
//! Run: `cargo bench -p terarchitect-agent --bench startup` (the original Python runner needs
//! about a second of imports before its first request).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use tokio::sync::mpsc;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn main() {
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let (tx, mut rx) = mpsc::unbounded_channel::<Instant>();
        let app = Router::new().route(
            "/api/projects/{p}/tickets/{t}/worker-context",
            get(move || {
                let tx = tx.clone();
                async move {
                    let _ = tx.send(Instant::now());
                    (StatusCode::NOT_FOUND, "{\"error\":\"Not found\"}")
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let dir = tempfile::tempdir().expect("temp dir");
        let bin = env!("CARGO_BIN_EXE_terarchitect-agent");
        let mut samples = Vec::with_capacity(runs);
        for _ in 0..runs {
            let start = Instant::now();
            let mut child = tokio::process::Command::new(bin)
                .arg("ticket")
                .env_clear()
                .env("PATH", std::env::var("PATH").unwrap_or_default())
                .env("TICKET_ID", "6f1c9a9e-8d4b-4c1e-9b55-1d2f3a4b5c6d")
                .env("PROJECT_ID", "6f1c9a9e-8d4b-4c1e-9b55-1d2f3a4b5c6e")
                .env("TERARCHITECT_API_URL", &url)
                .env("REPO_URL", "https://github.com/acme/shop")
                .env(
                    "TERARCHITECT_TERMINATION_LOG",
                    dir.path().join("termination-log"),
                )
                .env("RUST_LOG", "off")
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("spawning the agent");
            let first = tokio::time::timeout(Duration::from_secs(30), rx.recv())
                .await
                .expect("the agent sent no request within 30 s")
                .expect("channel");
            samples.push(first - start);
            let _ = child.wait().await;
            // Drain any further requests of this run (none expected).
            while rx.try_recv().is_ok() {}
        }
        samples.sort();
        let mean = samples.iter().sum::<Duration>() / samples.len() as u32;
        println!("terarchitect-agent start-up (exec → first worker-context request), {runs} runs:");
        println!(
            "  min {}  p50 {}  p90 {}  p99 {}  max {}  mean {}",
            ms(samples[0]),
            ms(percentile(&samples, 0.50)),
            ms(percentile(&samples, 0.90)),
            ms(percentile(&samples, 0.99)),
            ms(*samples.last().unwrap()),
            ms(mean)
        );
    });
}
