//! Soak: thousands of jobs through the real api-server, the real operator executable and the
//! fake cluster. Ignored by default; run it with
//!
//! ```sh
//! E2E_SOAK_JOBS=2000 cargo test -p terarchitect-e2e --release -- --ignored soak --nocapture
//! ```
//!
//! The pods do not run the agent: their command completes the ticket through the worker API
//! directly, as a successful agent's last call does ([`JobCommand::Fast`]), so the figures are
//! those of the dispatch pipeline (api-server queue, operator, Kubernetes objects), not of agents.
//!
//! Settings (environment): `E2E_SOAK_JOBS` (default 500), `E2E_SOAK_CONCURRENCY`
//! (MAX_CONCURRENT_AGENTS, default 16), `E2E_SOAK_BACKEND` (`postgres`, the default, or `sqlite`).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::batch::v1::Job;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::watcher;
use terarchitect_api_server::testing::Backend;
use terarchitect_e2e::*;
use terarchitect_worker_api::JobStatus;
use tokio_util::sync::CancellationToken;

fn env_usize(key: &str, default: usize) -> usize {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[derive(Default)]
struct Sampled {
    /// When each Job first appeared.
    created: HashMap<String, SystemTime>,
    /// Distinct Job objects (uids) seen per name.
    uids: HashMap<String, HashSet<String>>,
    /// Jobs seen and whether they finished.
    finished: HashMap<String, bool>,
    peak_active: usize,
}

fn is_finished(job: &Job) -> bool {
    job.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
        })
}

/// Watches Jobs (in-process, no socket): first-seen times and the most unfinished at once.
fn sample_jobs(client: kube::Client, stop: CancellationToken) -> Arc<Mutex<Sampled>> {
    let sampled = Arc::new(Mutex::new(Sampled::default()));
    let state = sampled.clone();
    tokio::spawn(async move {
        let api: Api<Job> = Api::namespaced(client, NS);
        let mut events = watcher(api, watcher::Config::default()).boxed();
        loop {
            let event = tokio::select! {
                e = events.try_next() => e,
                _ = stop.cancelled() => break,
            };
            let (job, deleted) = match event {
                Ok(Some(watcher::Event::Apply(j) | watcher::Event::InitApply(j))) => (j, false),
                Ok(Some(watcher::Event::Delete(j))) => (j, true),
                Ok(Some(_)) => continue,
                Ok(None) => break,
                Err(e) => {
                    eprintln!("job watch error (retrying): {e}");
                    continue;
                }
            };
            let now = SystemTime::now();
            let mut s = state.lock().unwrap();
            let name = job.name_any();
            s.created.entry(name.clone()).or_insert(now);
            s.uids
                .entry(name.clone())
                .or_default()
                .insert(job.uid().unwrap_or_default());
            if deleted {
                s.finished.insert(name, true);
            } else {
                s.finished.insert(name, is_finished(&job));
            }
            let active = s.finished.values().filter(|f| !**f).count();
            s.peak_active = s.peak_active.max(active);
        }
    });
    sampled
}

fn to_duration(from: DateTime<Utc>, to: DateTime<Utc>) -> Duration {
    (to - from).to_std().unwrap_or_default()
}

fn line(what: &str, values: &[Duration]) {
    println!(
        "  {what:<34} p50 {:>9.1} ms   p99 {:>9.1} ms   max {:>9.1} ms",
        percentile(values, 50.0).as_secs_f64() * 1e3,
        percentile(values, 99.0).as_secs_f64() * 1e3,
        percentile(values, 100.0).as_secs_f64() * 1e3,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "soak: E2E_SOAK_JOBS=2000 cargo test -p terarchitect-e2e --release -- --ignored soak --nocapture"]
async fn soak() {
    let jobs = env_usize("E2E_SOAK_JOBS", 500);
    let concurrency = env_usize("E2E_SOAK_CONCURRENCY", 16);
    let backend = match std::env::var("E2E_SOAK_BACKEND").as_deref() {
        Ok("sqlite") => Backend::Sqlite,
        _ => Backend::Postgres,
    };
    let ttl = std::env::var("E2E_SOAK_JOB_TTL_SEC").unwrap_or_else(|_| "3600".into());
    let w = World::start(
        WorldOptions::new(backend)
            .command(JobCommand::Fast)
            .max_concurrent(concurrency as u32)
            // JOB_TTL_SEC: finished Jobs go away after a while, as in a cluster (AgentJobs stay).
            .operator_env("JOB_TTL_SEC", &ttl)
            .operator_env(
                "RUST_LOG",
                std::env::var("E2E_SOAK_OPERATOR_LOG")
                    .as_deref()
                    .unwrap_or("warn"),
            ),
    )
    .await;
    println!(
        "soak: {jobs} jobs, MAX_CONCURRENT_AGENTS={concurrency}, JOB_TTL_SEC={ttl}, {backend:?}, \
         pods run the fast fake agent (worker API ticket completion, no agent process)"
    );
    let tickets: Vec<uuid::Uuid> = futures::stream::iter(0..jobs)
        .map(|i| {
            let w = &w;
            async move { w.create_ticket(&format!("Soak {i}")).await }
        })
        .buffer_unordered(16)
        .collect()
        .await;

    let stop = CancellationToken::new();
    let sampled = sample_jobs(w.k8s.in_process_client(), stop.clone());
    let (operator_cpu0, self_cpu0) = (w.operator().cpu_time(), cpu_time(None));
    let started = Instant::now();
    futures::stream::iter(tickets.iter())
        .map(|t| w.move_ticket(*t, "in_progress"))
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    let enqueued = started.elapsed();
    let deadline = Duration::from_secs(120 + jobs as u64 / 2);
    eventually("every queue job to finish", deadline, || async {
        let m = w.api.metrics().await;
        let done = metric_value(&m, "terarchitect_agent_jobs{status=\"completed\"}")
            + metric_value(&m, "terarchitect_agent_jobs{status=\"failed\"}");
        (done as usize >= jobs).then_some(())
    })
    .await;
    let wall = started.elapsed();
    let operator_rss = w.operator().peak_rss_kib();
    let cpu = |now: Option<Duration>, then: Option<Duration>| {
        now.zip(then)
            .map_or(0.0, |(n, t)| n.saturating_sub(t).as_secs_f64())
    };
    let operator_cpu = cpu(w.operator().cpu_time(), operator_cpu0);
    let self_cpu = cpu(cpu_time(None), self_cpu0);
    stop.cancel();

    let states = futures::stream::iter(tickets.iter())
        .map(|t| w.api.jobs(w.project, *t))
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    let sampled = std::mem::take(&mut *sampled.lock().unwrap());
    let (mut queue_wait, mut dispatch, mut total) = (Vec::new(), Vec::new(), Vec::new());
    let (mut first, mut last) = (None::<DateTime<Utc>>, None::<DateTime<Utc>>);
    for list in &states {
        assert_eq!(list.len(), 1, "{list:?}");
        let j = &list[0];
        assert_eq!((j.status, j.attempt), (JobStatus::Completed, 1), "{j:?}");
        let claimed = j.claimed_at.expect("claimed");
        let seen: DateTime<Utc> = sampled
            .created
            .get(&agentjob_name(j.job_id))
            .copied()
            .expect("the Job was seen")
            .into();
        queue_wait.push(to_duration(j.created_at, claimed));
        dispatch.push(to_duration(claimed, seen));
        total.push(to_duration(j.created_at, seen));
        first = Some(first.map_or(j.created_at, |f| f.min(j.created_at)));
        let end = j.finished_at.expect("finished");
        last = Some(last.map_or(end, |l| l.max(end)));
    }
    // The fake's request log is bounded (50 000); the watch saw every Job object.
    assert_eq!(sampled.uids.len(), jobs, "a Job per queue job");
    let recreated = sampled.uids.values().filter(|u| u.len() > 1).count();
    assert_eq!(recreated, 0, "no Job was created twice");
    assert!(
        sampled.peak_active <= concurrency,
        "{} Jobs at once",
        sampled.peak_active
    );

    let span = to_duration(first.unwrap(), last.unwrap());
    println!("soak results ({jobs} jobs):");
    println!(
        "  throughput                         {:.1} jobs/s (first enqueue to last completion: {:.1} s; \
         wall {:.1} s; enqueueing took {:.1} s)",
        jobs as f64 / span.as_secs_f64(),
        span.as_secs_f64(),
        wall.as_secs_f64(),
        enqueued.as_secs_f64()
    );
    line("dispatch latency: enqueue → Job", &total);
    line("  of which queue wait (→ claim)", &queue_wait);
    line("  of which claim → Job created", &dispatch);
    println!(
        "  peak active Jobs                   {} (limit {concurrency})",
        sampled.peak_active
    );
    println!(
        "  CPU during the run                 operator {operator_cpu:.1} s, test process {self_cpu:.1} s \
         (of {:.1} s wall)",
        wall.as_secs_f64()
    );
    println!(
        "  peak RSS: operator process         {:.1} MiB",
        operator_rss.unwrap_or(0) as f64 / 1024.0
    );
    println!(
        "  peak RSS: test process             {:.1} MiB (api-server, fake Kubernetes API server, \
         fakes and harness in-process; PostgreSQL not included)",
        peak_rss_kib(None).unwrap_or(0) as f64 / 1024.0
    );
    let m = w.api.metrics().await;
    let reports = |route: &str, status: &str| {
        metric_sum(
            &m,
            "terarchitect_http_requests_total",
            &[
                &format!("route=\"/api/worker/jobs/{{job_id}}/{route}\""),
                &format!("status=\"{status}\""),
            ],
        )
    };
    println!(
        "  outcome reports                    complete: {} accepted, {} rejected with 409; fail: {} accepted",
        reports("complete", "200"),
        reports("complete", "409"),
        reports("fail", "200"),
    );
    let duplicates: Vec<String> = w
        .operator_logs()
        .iter()
        .flat_map(|l| terarchitect_e2e::process::log_events(l, "outcome reported"))
        .filter(|e| e["result"] != "recorded")
        .map(|e| e.to_string())
        .collect();
    for d in &duplicates {
        println!("  not recorded: {d}");
    }
    w.assert_reports(jobs, 0).await;
}
