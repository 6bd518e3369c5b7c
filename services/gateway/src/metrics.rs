//! The gateway's Prometheus metrics.

use std::time::Instant;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use sophia_kit::metrics::{CategoryLabels, OutcomeLabels, ToolLabels};
use sophia_proto::ToolSpec;

fn latency() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.0, 21))
}

/// Tool-call metrics as MCP clients see them.
#[derive(Clone, Debug)]
pub struct GatewayMetrics {
    calls: Family<OutcomeLabels, Counter>,
    duration: Family<ToolLabels, Histogram, fn() -> Histogram>,
    in_flight: Family<CategoryLabels, Gauge>,
}

impl GatewayMetrics {
    /// Creates and registers the metrics.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self {
            calls: Family::default(),
            duration: Family::new_with_constructor(latency),
            in_flight: Family::default(),
        };
        registry.register(
            "sophia_gateway_tool_calls",
            "MCP tool calls, by tool, category and outcome",
            m.calls.clone(),
        );
        registry.register(
            "sophia_gateway_tool_call_duration_seconds",
            "Time from an MCP tools/call to its result",
            m.duration.clone(),
        );
        registry.register(
            "sophia_gateway_tool_calls_in_flight",
            "MCP tool calls waiting for a worker",
            m.in_flight.clone(),
        );
        m
    }

    /// Records a finished call.
    pub fn record(&self, spec: &ToolSpec, outcome: &str, started: Instant) {
        let tool = spec.name.clone();
        let category = spec.category.to_string();
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

    /// Counts a call in flight until the guard is dropped.
    pub fn in_flight(&self, spec: &ToolSpec) -> InFlight {
        let gauge = self
            .in_flight
            .get_or_create(&CategoryLabels {
                category: spec.category.to_string(),
            })
            .clone();
        gauge.inc();
        InFlight(gauge)
    }
}

/// Decrements the in-flight gauge when dropped.
pub struct InFlight(Gauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}
