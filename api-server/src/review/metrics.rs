//! Metrics of the review loop: poller cycles, GitHub calls, webhook deliveries and the review
//! jobs they enqueue.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// An `outcome` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    outcome: String,
}

/// Labels of a webhook delivery.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeliveryLabels {
    event: String,
    outcome: String,
}

/// A `source` label (poller, webhook, ui).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabels {
    source: String,
}

/// The review loop's metrics. Cheap to clone (the families are shared).
#[derive(Clone, Debug)]
pub struct ReviewMetrics {
    poll_cycles: Family<OutcomeLabels, Counter>,
    poll_duration: Histogram,
    poll_prs: Counter,
    github_requests: Family<OutcomeLabels, Counter>,
    rate_remaining: Gauge,
    deliveries: Family<DeliveryLabels, Counter>,
    enqueued: Family<SourceLabels, Counter>,
    done: Family<SourceLabels, Counter>,
}

impl Default for ReviewMetrics {
    fn default() -> Self {
        Self::register(&mut Registry::default())
    }
}

impl ReviewMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self {
            poll_cycles: Family::default(),
            poll_duration: Histogram::new(exponential_buckets(0.01, 2.0, 14)),
            poll_prs: Counter::default(),
            github_requests: Family::default(),
            rate_remaining: Gauge::default(),
            deliveries: Family::default(),
            enqueued: Family::default(),
            done: Family::default(),
        };
        registry.register(
            "pr_poll_cycles",
            "PR poller cycles by outcome (ok, partial, rate_limited, failed)",
            m.poll_cycles.clone(),
        );
        registry.register(
            "pr_poll_duration_seconds",
            "Duration of a PR poller cycle",
            m.poll_duration.clone(),
        );
        registry.register(
            "pr_poll_pull_requests",
            "Pull requests checked by the PR poller",
            m.poll_prs.clone(),
        );
        registry.register(
            "github_requests",
            "GitHub REST calls by outcome (ok, not_modified, error, rate_limited)",
            m.github_requests.clone(),
        );
        registry.register(
            "github_ratelimit_remaining",
            "The last x-ratelimit-remaining GitHub sent",
            m.rate_remaining.clone(),
        );
        registry.register(
            "github_webhook_deliveries",
            "GitHub webhook deliveries by event and outcome",
            m.deliveries.clone(),
        );
        registry.register(
            "review_jobs_enqueued",
            "Review jobs enqueued by source (poller, webhook, ui)",
            m.enqueued.clone(),
        );
        registry.register(
            "review_tickets_done",
            "Tickets moved to done because their pull request was merged or approved, by source",
            m.done.clone(),
        );
        m
    }

    /// Counts a poller cycle.
    pub fn poll_cycle(&self, outcome: &str, seconds: f64, prs: u64) {
        self.poll_cycles
            .get_or_create(&OutcomeLabels {
                outcome: outcome.into(),
            })
            .inc();
        self.poll_duration.observe(seconds);
        self.poll_prs.inc_by(prs);
    }

    /// Counts a GitHub call.
    pub fn github_request(&self, outcome: &str) {
        self.github_requests
            .get_or_create(&OutcomeLabels {
                outcome: outcome.into(),
            })
            .inc();
    }

    /// Records the remaining rate limit.
    pub fn set_rate_remaining(&self, remaining: Option<u64>) {
        if let Some(r) = remaining {
            self.rate_remaining.set(r as i64);
        }
    }

    /// Counts a webhook delivery.
    pub fn delivery(&self, event: &str, outcome: &str) {
        self.deliveries
            .get_or_create(&DeliveryLabels {
                event: event.chars().take(40).collect(),
                outcome: outcome.into(),
            })
            .inc();
    }

    /// Counts an enqueued review job.
    pub fn enqueued(&self, source: &str) {
        self.enqueued
            .get_or_create(&SourceLabels {
                source: source.into(),
            })
            .inc();
    }

    /// Counts a ticket moved to done.
    pub fn done(&self, source: &str) {
        self.done
            .get_or_create(&SourceLabels {
                source: source.into(),
            })
            .inc();
    }
}
