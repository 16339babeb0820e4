//! Prometheus metrics of the operator.

use std::sync::atomic::AtomicI64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// A label set with one `result`/`outcome`-style label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    result: String,
}

/// Labels of run outcomes.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    phase: String,
    reason: String,
}

/// The operator's metrics.
pub struct Metrics {
    registry: Registry,
    claims: Family<ResultLabel, Counter>,
    reconciles: Family<ResultLabel, Counter>,
    outcomes: Family<OutcomeLabels, Counter>,
    reports: Family<ResultLabel, Counter>,
    /// Seconds from enqueue to Job creation.
    pub dispatch_latency: Histogram,
    /// 1 while this replica leads.
    pub leader: Gauge<i64, AtomicI64>,
    /// AgentJobs occupying a slot.
    pub live_agentjobs: Gauge<i64, AtomicI64>,
    /// Finished AgentJobs deleted after their retention time.
    pub expired: Counter,
    /// Live agent pods the scheduler cannot place for lack of room.
    pub unschedulable_agents: Gauge<i64, AtomicI64>,
    /// 1 while claiming is paused because agent pods are unschedulable (backpressure).
    pub claims_paused: Gauge<i64, AtomicI64>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn label(v: &str) -> ResultLabel {
    ResultLabel {
        result: v.to_owned(),
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("terarchitect_operator");
        let claims = Family::<ResultLabel, Counter>::default();
        registry.register(
            "claims",
            "Claim attempts by result (claimed, empty, error)",
            claims.clone(),
        );
        let reconciles = Family::<ResultLabel, Counter>::default();
        registry.register(
            "reconciles",
            "Reconciliations by result (ok, error)",
            reconciles.clone(),
        );
        let outcomes = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "outcomes",
            "Finished runs by phase and reason",
            outcomes.clone(),
        );
        let reports = Family::<ResultLabel, Counter>::default();
        registry.register(
            "reports",
            "Outcome reports to the worker API by result",
            reports.clone(),
        );
        let dispatch_latency = Histogram::new(exponential_buckets(0.005, 2.0, 14));
        registry.register(
            "dispatch_latency_seconds",
            "Time from enqueue to Job creation",
            dispatch_latency.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this replica is the leader",
            leader.clone(),
        );
        let live_agentjobs = Gauge::default();
        registry.register(
            "live_agentjobs",
            "AgentJobs occupying an agent slot",
            live_agentjobs.clone(),
        );
        let expired = Counter::default();
        registry.register(
            "agentjobs_expired",
            "Finished AgentJobs deleted after their retention time (ttlSecondsAfterFinished)",
            expired.clone(),
        );
        let unschedulable_agents = Gauge::default();
        registry.register(
            "unschedulable_agents",
            "Live agent pods the scheduler cannot place for lack of room",
            unschedulable_agents.clone(),
        );
        let claims_paused = Gauge::default();
        registry.register(
            "claims_paused",
            "1 while no new job is claimed because agent pods are unschedulable",
            claims_paused.clone(),
        );
        Self {
            registry,
            claims,
            reconciles,
            outcomes,
            reports,
            dispatch_latency,
            leader,
            live_agentjobs,
            expired,
            unschedulable_agents,
            claims_paused,
        }
    }

    /// Counts a claim attempt.
    pub fn claim(&self, result: &str) {
        self.claims.get_or_create(&label(result)).inc();
    }

    /// Counts a reconciliation.
    pub fn reconcile(&self, ok: bool) {
        self.reconciles
            .get_or_create(&label(if ok { "ok" } else { "error" }))
            .inc();
    }

    /// Counts a finished run.
    pub fn outcome(&self, phase: &str, reason: &str) {
        self.outcomes
            .get_or_create(&OutcomeLabels {
                phase: phase.to_owned(),
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// Counts an outcome report.
    pub fn report(&self, result: &str) {
        self.reports.get_or_create(&label(result)).inc();
    }

    /// The OpenMetrics text of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}
