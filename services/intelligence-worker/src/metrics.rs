//! Usage accounting as Prometheus metrics: requests, tokens and estimated
//! cost, per model, provider and principal.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    model: String,
    provider: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TokenLabels {
    model: String,
    principal: String,
    direction: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CostLabels {
    model: String,
    principal: String,
}

/// The inference metrics. Cheap to clone; clones share the counts.
#[derive(Clone, Debug, Default)]
pub struct InferenceMetrics {
    requests: Family<RequestLabels, Counter>,
    tokens: Family<TokenLabels, Counter>,
    cost: Family<CostLabels, Counter<f64, AtomicU64>>,
}

/// One finished inference call, for accounting.
#[derive(Debug)]
pub struct Accounted<'a> {
    /// The alias or model asked for.
    pub model: &'a str,
    /// The provider that served it (empty if none did).
    pub provider: &'a str,
    /// `ok` or an error code.
    pub outcome: &'a str,
    /// Who asked.
    pub principal: &'a str,
    /// Tokens in and out.
    pub usage: Option<crate::chat::Usage>,
    /// Estimated cost.
    pub cost_usd: Option<f64>,
}

impl InferenceMetrics {
    /// Registers the metrics in `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "sophia_inference_requests",
            "Inference calls, by model alias, provider and outcome",
            self.requests.clone(),
        );
        registry.register(
            "sophia_inference_tokens",
            "Tokens used, by model alias, principal and direction (input or output)",
            self.tokens.clone(),
        );
        registry.register(
            "sophia_inference_cost_usd",
            "Estimated cost in US dollars from the configured price table",
            self.cost.clone(),
        );
    }

    /// Records one call.
    pub fn record(&self, a: Accounted<'_>) {
        self.requests
            .get_or_create(&RequestLabels {
                model: a.model.to_owned(),
                provider: a.provider.to_owned(),
                outcome: a.outcome.to_owned(),
            })
            .inc();
        if let Some(u) = a.usage {
            for (direction, n) in [("input", u.input_tokens), ("output", u.output_tokens)] {
                self.tokens
                    .get_or_create(&TokenLabels {
                        model: a.model.to_owned(),
                        principal: a.principal.to_owned(),
                        direction: direction.to_owned(),
                    })
                    .inc_by(n);
            }
        }
        if let Some(c) = a.cost_usd {
            self.cost
                .get_or_create(&CostLabels {
                    model: a.model.to_owned(),
                    principal: a.principal.to_owned(),
                })
                .inc_by(c);
        }
    }
}
