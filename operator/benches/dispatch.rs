//! Operator benchmark: the real `terarchitect-operator` binary against the fake Kubernetes API
//! server (over HTTP, through a kubeconfig) and a real api-server on SQLite.
//!
//! Prints:
//! - dispatch latency, enqueue (the ticket's move to In Progress) → Job created, p50/p99, with
//!   the default long poll (the original coordinator polls every 10 s: ~5 s mean);
//! - for 1,000 AgentJobs queued at once: the time until all their Jobs exist, and the operator
//!   process's peak RSS (VmHWM) with 1,000 live AgentJobs, Jobs, Pods and Secrets watched.
//!
//! Run: `cargo bench -p terarchitect-operator --bench dispatch` (`BENCH_SAMPLES`, `BENCH_BULK`
//! change the sizes).

use std::process::Stdio;
use std::time::{Duration, Instant};

use k8s_openapi::api::batch::v1::Job;
use kube::CustomResourceExt;
use terarchitect_api_server::testing::{Backend, TEST_SECRET_KEY, TestOptions, TestServer};
use terarchitect_fake_apiserver::{FakeApiServer, JobOutcome, JobPolicy};
use terarchitect_operator::crd::AgentJob;
use tokio::process::{Child, Command};

const NS: &str = "default";
/// The api-server runs contained, as the chart installs it: a worker key and admin auth.
const WORKER_KEY: &str = "wk-bench-19d2";
const ADMIN_TOKEN: &str = "adm-bench-4be7";

#[path = "../tests/support/app_api.rs"]
mod app_api;

use app_api::AppApi;

fn spawn_operator(kubeconfig: &std::path::Path, api_url: &str, max: usize) -> Child {
    Command::new(env!("CARGO_BIN_EXE_terarchitect-operator"))
        .arg("run")
        .env("KUBECONFIG", kubeconfig)
        .env("TERARCHITECT_API_URL", api_url)
        .env("OPERATOR_NAMESPACE", NS)
        .env("TERARCHITECT_WORKER_API_KEY", WORKER_KEY)
        .env("TERARCHITECT_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("LEADER_ELECTION", "false")
        .env("OPERATOR_HTTP_BIND", "127.0.0.1:0")
        .env("MAX_CONCURRENT_AGENTS", max.to_string())
        .env(
            "RUST_LOG",
            std::env::var("BENCH_OPERATOR_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("starting terarchitect-operator")
}

/// Peak resident set size of a process, in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx]
}

fn env_usize(key: &str, default: usize) -> usize {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() {
    terarchitect_worker_api::ensure_crypto_provider();
    let samples = env_usize("BENCH_SAMPLES", 100);
    let bulk = env_usize("BENCH_BULK", 1000);
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");

    // ---- dispatch latency ----
    let kube = FakeApiServer::start().await.unwrap();
    kube.register_crd(&AgentJob::crd()).unwrap();
    kube.write_kubeconfig(&kubeconfig).unwrap();
    let _jobs = kube.start_job_controller(JobPolicy::always(JobOutcome::succeed_after(
        Duration::from_millis(20),
    )));
    let opts = TestOptions {
        admin_tokens: vec![ADMIN_TOKEN.to_owned()],
        ..TestOptions::default()
    }
    .env("TERARCHITECT_SECRET_KEY", TEST_SECRET_KEY)
    .env("TERARCHITECT_WORKER_API_KEY", WORKER_KEY)
    .env("GITHUB_TOKEN", "ghp_bench_token");
    let server = TestServer::start(Backend::Sqlite, opts.clone()).await;
    let api = AppApi::with_admin_token(server.url(), ADMIN_TOKEN);
    let mut operator = spawn_operator(&kubeconfig, &server.url(), 4);
    let project = api.project().await;
    // Let the operator start and settle into its long poll.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut latencies = Vec::with_capacity(samples);
    for _ in 0..samples {
        let ticket = api.ticket(project).await;
        let started = Instant::now();
        let job_id = api.start_ticket(project, ticket).await;
        let name = terarchitect_operator::dispatcher::agentjob_name(job_id);
        kube.wait_for(Duration::from_secs(60), |c| c.get::<Job>(NS, &name))
            .await
            .expect("the Job is created");
        latencies.push(started.elapsed());
        // Idle between samples, so each enqueue meets a waiting long poll.
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    latencies.sort();
    let mean = latencies.iter().sum::<Duration>() / latencies.len() as u32;
    println!("dispatch latency, enqueue -> Job created ({samples} samples, long poll):");
    println!(
        "  p50 {:.1} ms   p99 {:.1} ms   mean {:.1} ms   max {:.1} ms",
        percentile(&latencies, 0.5).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        mean.as_secs_f64() * 1e3,
        latencies.last().unwrap().as_secs_f64() * 1e3,
    );
    operator.kill().await.ok();
    drop(kube);
    server.stop().await;

    // ---- 1,000 AgentJobs ----
    let kube = FakeApiServer::start().await.unwrap();
    kube.register_crd(&AgentJob::crd()).unwrap();
    kube.write_kubeconfig(&kubeconfig).unwrap();
    let _jobs = kube.start_job_controller(JobPolicy::always(JobOutcome::RunForever));
    let server = TestServer::start(Backend::Sqlite, opts).await;
    let api = AppApi::with_admin_token(server.url(), ADMIN_TOKEN);
    let project = api.project().await;
    let enqueue_started = Instant::now();
    for _ in 0..bulk {
        let ticket = api.ticket(project).await;
        api.start_ticket(project, ticket).await;
    }
    println!(
        "\nqueued {bulk} jobs in {:.2} s",
        enqueue_started.elapsed().as_secs_f64()
    );
    let started = Instant::now();
    let operator = spawn_operator(&kubeconfig, &server.url(), bulk);
    let pid = operator.id().expect("operator pid");
    loop {
        if kube.list::<Job>(NS).len() >= bulk {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "Jobs not created in time"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let all_created = started.elapsed();
    // Hold the steady state (watches, heartbeats of 1,000 running jobs) for a while.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let rss = peak_rss_kib(pid);
    println!(
        "{bulk} AgentJobs: all Jobs created {:.2} s after the operator started ({:.0} Jobs/s)",
        all_created.as_secs_f64(),
        bulk as f64 / all_created.as_secs_f64()
    );
    println!(
        "operator peak RSS with {bulk} live AgentJobs/Jobs/Pods/Secrets: {:.1} MiB",
        rss as f64 / 1024.0
    );
    drop(operator);
    server.stop().await;
}
