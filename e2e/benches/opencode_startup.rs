//! Start-up of a run on the real OpenCode: from starting `terarchitect-agent entrypoint` to the
//! worker model receiving OpenCode's first request (the first worker turn sent), over
//! `BENCH_RUNS` runs (default 10); prints every run and p50/p90/max. The agent is stopped
//! (SIGTERM) once the first request arrived.
//!
//! ```sh
//! scripts/install-opencode.sh   # once
//! cargo bench -p terarchitect-e2e --bench opencode_startup --profile dev
//! ```
//!
//! (`--profile dev` reuses the test build of the agent; without it the agent and operator are
//! built with the release profile first.) See `e2e/README.md`.

use std::time::{Duration, Instant};

use terarchitect_e2e::percentile;
use terarchitect_e2e::real_opencode::{RealWorld, RunOptions, opencode_bin};

async fn first_request_after(world: &RealWorld, seen: usize, started: Instant) -> Duration {
    let deadline = started + Duration::from_secs(120);
    loop {
        let calls = world.model.calls();
        if let Some(c) = calls.get(seen) {
            return c.at.duration_since(started);
        }
        assert!(Instant::now() < deadline, "no worker request within 120 s");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The 1, 5 and 15 minute load averages (the figures mean little on a busy machine).
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let Some(bin) = opencode_bin() else { return };
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let mut world = RealWorld::start(bin).await;
    let mut times = Vec::with_capacity(runs);
    for i in 1..=runs {
        let ticket = world.create_ticket(&format!("Start-up {i}")).await;
        let seen = world.model.calls().len();
        let run = world.start_run(ticket, RunOptions::default()).await;
        let started = run.started;
        let t = first_request_after(&world, seen, started).await;
        let finished = run.stop().await;
        println!(
            "run {i:>2}: entrypoint start -> first worker turn sent {:>7.3} s (agent stopped, exit {})",
            t.as_secs_f64(),
            finished.code
        );
        times.push(t);
    }
    println!(
        "opencode start-up over {runs} runs: p50 {:.3} s, p90 {:.3} s, max {:.3} s (load average {})",
        percentile(&times, 50.0).as_secs_f64(),
        percentile(&times, 90.0).as_secs_f64(),
        percentile(&times, 100.0).as_secs_f64(),
        load_average()
    );
}
