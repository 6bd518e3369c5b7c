//! Prometheus metrics every worker exports, named by Prometheus conventions.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::nats::{Connection, LinkState};

/// Labels of a tool call.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ToolLabels {
    /// Tool name.
    pub tool: String,
    /// Agent category.
    pub category: String,
}

/// Labels of a finished tool call.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// Tool name.
    pub tool: String,
    /// Agent category.
    pub category: String,
    /// `ok`, or the error code.
    pub outcome: String,
}

/// Labels by category only.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CategoryLabels {
    /// Agent category.
    pub category: String,
}

fn latency_histogram() -> Histogram {
    // 100 µs .. ~105 s
    Histogram::new(exponential_buckets(0.0001, 2.0, 21))
}

/// A worker's tool-call metrics.
#[derive(Clone, Debug)]
pub struct WorkerMetrics {
    /// `sophia_worker_requests_total{tool,category,outcome}`.
    pub requests: Family<OutcomeLabels, Counter>,
    /// `sophia_worker_request_duration_seconds{tool,category}`.
    pub duration: Family<ToolLabels, Histogram, fn() -> Histogram>,
    /// `sophia_worker_requests_in_flight{category}`.
    pub in_flight: Family<CategoryLabels, Gauge>,
}

impl WorkerMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self {
            requests: Family::default(),
            duration: Family::new_with_constructor(latency_histogram),
            in_flight: Family::default(),
        };
        registry.register(
            "sophia_worker_requests",
            "Tool calls handled, by tool, category and outcome",
            m.requests.clone(),
        );
        registry.register(
            "sophia_worker_request_duration_seconds",
            "Time from receiving a tool call to replying",
            m.duration.clone(),
        );
        registry.register(
            "sophia_worker_requests_in_flight",
            "Tool calls being handled now",
            m.in_flight.clone(),
        );
        m
    }
}

/// Registers `sophia_nats_connected` and `sophia_nats_reconnects_total` and
/// keeps them current from the connection's state.
pub fn register_connection(registry: &mut Registry, conn: &Connection) {
    let connected = Gauge::<i64>::default();
    let reconnects = Counter::<u64>::default();
    registry.register(
        "sophia_nats_connected",
        "1 while connected to NATS, 0 otherwise",
        connected.clone(),
    );
    registry.register(
        "sophia_nats_reconnects",
        "Reconnects to NATS after the first connect",
        reconnects.clone(),
    );
    let mut state = conn.state.clone();
    tokio::spawn(async move {
        loop {
            let up = *state.borrow_and_update() == LinkState::Up;
            connected.set(up as i64);
            if state.changed().await.is_err() {
                break;
            }
        }
    });
    let mut connects = conn.connects.clone();
    tokio::spawn(async move {
        let mut seen = *connects.borrow_and_update();
        while connects.changed().await.is_ok() {
            let now = *connects.borrow_and_update();
            if seen > 0 {
                reconnects.inc_by(now - seen);
            }
            seen = now;
        }
    });
}
