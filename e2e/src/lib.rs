//! End-to-end tests of the whole Terarchitect flow, ticket to pull request.
//!
//! A [`World`] wires up, per test:
//! - the real api-server ([`terarchitect_api_server::testing::TestServer`], on SQLite or on a
//!   PostgreSQL cluster the tests start themselves), restartable on the same port;
//! - the in-process fake Kubernetes API server ([`terarchitect_fake_apiserver::FakeApiServer`])
//!   with the operator's `AgentJob` CRD registered and its stand-in Job controller, whose pods run
//!   through an [`AgentRunner`] (the real `terarchitect-agent` executable, see [`agents`]);
//! - the real `terarchitect-operator run` executable as a child process, talking to the fake
//!   cluster through a kubeconfig and to the api-server over HTTP ([`process`]);
//! - the fakes of `terarchitect-test-fakes`: a Director LLM answering from the request content,
//!   an OpenCode server that writes files and can hold a turn, a GitHub API and a local bare
//!   repository (`file://`) as the remote.
//!
//! [`real_opencode`] is the world of the suite that runs the agent against the real `opencode
//! serve` with a scripted worker model.
//!
//! The executables are built (once per test process) by [`binaries()`]. See `e2e/README.md` for
//! the scenarios and how to run them.

pub mod agents;
pub mod binaries;
pub mod process;
pub mod real_opencode;
pub mod world;

use std::future::Future;
use std::time::Duration;

pub use agents::{AgentRunner, Exit, ExitHook, JobCommand, RunStats};
pub use binaries::{Binaries, binaries};
pub use process::{OperatorProcess, cpu_time, peak_rss_kib};
pub use world::*;

/// The value of one sample in a Prometheus/OpenMetrics text, `name{labels}` exactly as exposed
/// (or a bare name); 0 when absent.
pub fn metric_value(text: &str, sample: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            (name == sample).then(|| value.parse().ok()).flatten()
        })
        .unwrap_or(0.0)
}

/// The sum of every sample of `name` whose labels contain all of `labels` (`key="value"` pairs).
pub fn metric_sum(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (sample, value) = l.rsplit_once(' ')?;
            let (n, rest) = sample.split_once('{').unwrap_or((sample, ""));
            (n == name && labels.iter().all(|want| rest.contains(want)))
                .then(|| value.parse::<f64>().ok())
                .flatten()
        })
        .sum::<f64>()
        // An empty float sum is -0.0.
        + 0.0
}

/// Polls `check` every 50 ms until it returns `Some`; panics with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The `p`-th percentile (0–100) of `values` (nearest rank; 0 when empty).
pub fn percentile(values: &[Duration], p: f64) -> Duration {
    if values.is_empty() {
        return Duration::ZERO;
    }
    let mut sorted = values.to_vec();
    sorted.sort();
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_parsing() {
        let text = "# HELP x\nterarchitect_operator_reports_total{result=\"recorded\"} 3\n\
                    terarchitect_http_requests_total{method=\"POST\",route=\"/a\",status=\"200\"} 2\n\
                    terarchitect_http_requests_total{method=\"POST\",route=\"/a\",status=\"409\"} 1\n";
        assert_eq!(
            metric_value(
                text,
                "terarchitect_operator_reports_total{result=\"recorded\"}"
            ),
            3.0
        );
        assert_eq!(metric_value(text, "missing"), 0.0);
        assert!(metric_sum(text, "missing", &[]).is_sign_positive());
        assert_eq!(
            metric_sum(text, "terarchitect_http_requests_total", &["route=\"/a\""]),
            3.0
        );
        assert_eq!(
            metric_sum(
                text,
                "terarchitect_http_requests_total",
                &["route=\"/a\"", "status=\"409\""]
            ),
            1.0
        );
    }

    #[test]
    fn percentiles() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&v, 50.0), Duration::from_millis(50));
        assert_eq!(percentile(&v, 99.0), Duration::from_millis(99));
        assert_eq!(percentile(&v, 100.0), Duration::from_millis(100));
        assert_eq!(percentile(&[], 50.0), Duration::ZERO);
    }
}
