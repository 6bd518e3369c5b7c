//! Prometheus metrics every worker exports, named by Prometheus conventions.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use std::time::Instant;

use sophia_proto::ToolSpec;

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

/// What a call is counted under: its tool (or MCP method) and its
/// category ([`OFFERS`] for a worker's MCP offers).
#[derive(Clone, Copy, Debug)]
pub struct Counted<'a> {
    /// Tool name, or the MCP method (`resources/read`, ...).
    pub tool: &'a str,
    /// Agent category, or [`OFFERS`].
    pub category: &'a str,
}

/// The `category` label of a worker's MCP offers (resource reads, prompts,
/// completions), which belong to no agent category.
pub const OFFERS: &str = "mcp_offers";

impl<'a> From<&'a ToolSpec> for Counted<'a> {
    fn from(spec: &'a ToolSpec) -> Self {
        Counted {
            tool: &spec.name,
            category: spec.category.as_str(),
        }
    }
}

/// Labels by category only.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CategoryLabels {
    /// Agent category.
    pub category: String,
}

fn wait_histogram() -> Histogram {
    // 10 µs .. ~10 s
    Histogram::new(exponential_buckets(0.00001, 2.0, 21))
}

fn latency_histogram() -> Histogram {
    // 100 µs .. ~105 s
    Histogram::new(exponential_buckets(0.0001, 2.0, 21))
}

/// Tool-call metrics, the same for the gateway (`sophia_gateway_*`, as MCP
/// clients see calls) and workers (`sophia_worker_*`, as handlers see them):
/// `<prefix>_tool_calls_total{tool,category,outcome}`,
/// `<prefix>_tool_call_duration_seconds{tool,category}`,
/// `<prefix>_tool_calls_in_flight{category}` and
/// `<prefix>_queue_wait_seconds{category}` (workers only: from a request's
/// arrival to its handler's start, waiting for a free slot).
#[derive(Clone, Debug)]
pub struct ToolCallMetrics {
    calls: Family<OutcomeLabels, Counter>,
    duration: Family<ToolLabels, Histogram, fn() -> Histogram>,
    in_flight: Family<CategoryLabels, Gauge>,
    queue_wait: Family<CategoryLabels, Histogram, fn() -> Histogram>,
}

impl ToolCallMetrics {
    /// Creates the metrics under `prefix` (e.g. `sophia_worker`) and registers
    /// them in `registry`.
    pub fn register(registry: &mut Registry, prefix: &str) -> Self {
        let m = Self {
            calls: Family::default(),
            duration: Family::new_with_constructor(latency_histogram),
            in_flight: Family::default(),
            queue_wait: Family::new_with_constructor(wait_histogram),
        };
        registry.register(
            format!("{prefix}_tool_calls"),
            "Tool calls, by tool, category and outcome (ok or an error code)",
            m.calls.clone(),
        );
        registry.register(
            format!("{prefix}_tool_call_duration_seconds"),
            "Time from receiving a tool call to its result",
            m.duration.clone(),
        );
        registry.register(
            format!("{prefix}_tool_calls_in_flight"),
            "Tool calls being handled now",
            m.in_flight.clone(),
        );
        m
    }

    /// Also registers `<prefix>_queue_wait_seconds` (for workers).
    pub fn with_queue_wait(self, registry: &mut Registry, prefix: &str) -> Self {
        registry.register(
            format!("{prefix}_queue_wait_seconds"),
            "Time a request waited at the worker before its handler started (for a free slot)",
            self.queue_wait.clone(),
        );
        self
    }

    /// Records how long a request waited before its handler started.
    pub fn queue_wait<'a>(&self, what: impl Into<Counted<'a>>, waited: std::time::Duration) {
        self.queue_wait
            .get_or_create(&CategoryLabels {
                category: what.into().category.to_owned(),
            })
            .observe(waited.as_secs_f64());
    }

    /// Records a finished call.
    pub fn record<'a>(&self, what: impl Into<Counted<'a>>, outcome: &str, started: Instant) {
        let what = what.into();
        let tool = what.tool.to_owned();
        let category = what.category.to_owned();
        self.duration
            .get_or_create(&ToolLabels {
                tool: tool.clone(),
                category: category.clone(),
            })
            .observe(started.elapsed().as_secs_f64());
        self.calls
            .get_or_create(&OutcomeLabels {
                tool,
                category,
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// Counts a call in flight until the returned guard is dropped.
    pub fn in_flight<'a>(&self, what: impl Into<Counted<'a>>) -> InFlight {
        let gauge = self
            .in_flight
            .get_or_create(&CategoryLabels {
                category: what.into().category.to_owned(),
            })
            .clone();
        gauge.inc();
        InFlight(gauge)
    }
}

/// Decrements the in-flight gauge when dropped.
#[derive(Debug)]
pub struct InFlight(Gauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Registers `sophia_nats_connected` and `sophia_nats_reconnects_total` and
/// keeps them current from the connection's state; and the process gauges
/// ([`register_process`]), which every service on a connection has too.
pub fn register_connection(registry: &mut Registry, conn: &Connection) {
    register_process(registry);
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

/// `process_resident_memory_bytes`, `process_open_fds` (from `/proc`, on
/// Linux) and `sophia_runtime_alive_tasks` (tokio), read at each scrape: what
/// an SRE watches to see a service's memory and tasks come back after a
/// fault.
pub fn register_process(registry: &mut Registry) {
    registry.register_collector(Box::new(ProcessGauges));
}

#[derive(Debug)]
struct ProcessGauges;

/// The resident set size from `/proc/self/status` (`VmRSS`, in kB).
fn resident_bytes() -> Option<i64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: i64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn open_fds() -> Option<i64> {
    Some(std::fs::read_dir("/proc/self/fd").ok()?.count() as i64)
}

impl prometheus_client::collector::Collector for ProcessGauges {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        let tasks = tokio::runtime::Handle::try_current()
            .map(|h| h.metrics().num_alive_tasks() as i64)
            .ok();
        for (name, help, value) in [
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                resident_bytes(),
            ),
            (
                "process_open_fds",
                "Number of open file descriptors",
                open_fds(),
            ),
            (
                "sophia_runtime_alive_tasks",
                "Tokio tasks alive in the service's runtime",
                tasks,
            ),
        ] {
            if let Some(v) = value {
                let gauge = Gauge::<i64>::default();
                gauge.set(v);
                gauge.encode(encoder.encode_descriptor(
                    name,
                    help,
                    None,
                    gauge.metric_type(),
                )?)?;
            }
        }
        Ok(())
    }
}
