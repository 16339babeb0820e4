//! Prometheus metrics: HTTP requests and latencies by route, queue depth by status, claims and
//! lease expiries.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of a request counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    method: String,
    route: String,
    status: u16,
}

/// Labels of a latency histogram.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    method: String,
    route: String,
}

/// Labels of the queue depth gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabels {
    status: String,
}

/// Labels of claim outcomes.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClaimLabels {
    outcome: String,
}

/// The server's metrics.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram>,
    queue_depth: Family<StatusLabels, Gauge>,
    claims: Family<ClaimLabels, Counter>,
    /// Jobs whose lease expired (re-queued or failed).
    pub lease_expiries: Counter,
    /// The review loop's metrics.
    pub review: crate::review::ReviewMetrics,
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

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("terarchitect");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests by method, route and status",
            requests.clone(),
        );
        let latency = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0005, 2.0, 17))
        });
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency",
            latency.clone(),
        );
        let queue_depth = Family::<StatusLabels, Gauge>::default();
        registry.register("agent_jobs", "Agent jobs by status", queue_depth.clone());
        let claims = Family::<ClaimLabels, Counter>::default();
        registry.register(
            "job_claims",
            "Claim requests by outcome (claimed, empty)",
            claims.clone(),
        );
        let lease_expiries = Counter::default();
        registry.register(
            "job_lease_expiries",
            "Jobs whose lease expired",
            lease_expiries.clone(),
        );
        let review = crate::review::ReviewMetrics::register(&mut registry);
        Self {
            registry,
            review,
            requests,
            latency,
            queue_depth,
            claims,
            lease_expiries,
        }
    }

    /// Counts a claim request.
    pub fn record_claim(&self, claimed: bool) {
        let outcome = if claimed { "claimed" } else { "empty" };
        self.claims
            .get_or_create(&ClaimLabels {
                outcome: outcome.into(),
            })
            .inc();
    }

    /// Sets the queue depth gauge from fresh counts.
    pub fn set_queue_depth(&self, counts: &[(String, i64)]) {
        for status in ["pending", "running", "completed", "failed"] {
            let n = counts
                .iter()
                .find(|(s, _)| s == status)
                .map_or(0, |(_, n)| *n);
            self.queue_depth
                .get_or_create(&StatusLabels {
                    status: status.into(),
                })
                .set(n);
        }
    }

    /// The OpenMetrics text of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

/// Middleware recording request counts and latencies by matched route.
pub async fn track(State(metrics): State<Arc<Metrics>>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().to_string();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let resp = next.run(req).await;
    metrics
        .requests
        .get_or_create(&RequestLabels {
            method: method.clone(),
            route: route.clone(),
            status: resp.status().as_u16(),
        })
        .inc();
    metrics
        .latency
        .get_or_create(&RouteLabels { method, route })
        .observe(start.elapsed().as_secs_f64());
    resp
}
