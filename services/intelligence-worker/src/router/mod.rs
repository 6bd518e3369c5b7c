//! Where each inference call goes, and what happens when a provider fails.
//!
//! An alias has targets (provider + model) in priority tiers. For each call:
//! 1. tiers are tried in priority order; within a tier, targets are tried by
//!    fewest outstanding requests per unit of weight (least outstanding
//!    requests, weighted);
//! 2. a target is skipped while its provider's circuit breaker is open, or
//!    while a 429's `Retry-After` has not passed;
//! 3. timeouts, 5xx, 429, malformed responses and cut-off streams move on to
//!    the next target; a 4xx rejection ends the call (it would fail anywhere);
//! 4. after a round with no success, the router waits (jittered exponential
//!    backoff, or until the earliest `Retry-After`) and goes round again, up
//!    to `max_retries` more rounds, never past the call's deadline.
//!
//! A streamed call falls back only until the first token has been relayed;
//! after that a failure is reported, not retried, so no output is repeated.
//!
//! # Layout
//! - this file: the call (tiers, rounds, attempts) and its outcome.
//! - `breaker.rs`: a provider's health (circuit breaker, 429 cool-down,
//!   outstanding requests) and the permit a call holds.
//! - `targets.rs`: where a model can be served (configured or discovered),
//!   and what this replica cannot do now.

mod breaker;
mod targets;

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::chat::{Delta, Usage, usage_of};
use crate::config::{Config, TargetConfig};
use crate::discovery::Discovery;
use crate::provider::{Provider, ProviderError};
use breaker::{Permit, ProviderState};

pub use breaker::BreakerState;

/// A call that succeeded.
#[derive(Debug, Clone)]
pub struct Routed {
    /// The provider's response (for streams, the assembled completion).
    pub response: Value,
    /// Which provider served it.
    pub provider: String,
    /// The model name at that provider.
    pub model: String,
    /// Tokens used, if the provider said.
    pub usage: Option<Usage>,
    /// Estimated cost in US dollars, if the model has a price.
    pub cost_usd: Option<f64>,
    /// Every attempt, in order, as `provider: outcome`.
    pub attempts: Vec<String>,
}

/// Why a call could not be served.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    /// No provider is configured at all.
    #[error("{}", NO_PROVIDER)]
    NoProviders,
    /// `default` was asked for and no provider has a model now.
    #[error("no model to serve {model:?}: {}", why.join("; "))]
    NoModel {
        /// What was asked for.
        model: String,
        /// What is missing, and how to get it.
        why: Vec<String>,
    },
    /// The model or alias is not configured.
    #[error("unknown model {model:?}; configured models: {}", known.join(", "))]
    UnknownModel {
        /// What was asked for.
        model: String,
        /// What exists.
        known: Vec<String>,
    },
    /// The provider refused the request itself; other providers would too.
    #[error("{0}")]
    Rejected(ProviderError),
    /// Every attempt failed.
    #[error("every provider for {model:?} failed: {}", attempts.join("; "))]
    Exhausted {
        /// The alias.
        model: String,
        /// Each attempt's outcome.
        attempts: Vec<String>,
    },
    /// A stream failed after output was already relayed; not retried, so
    /// nothing is sent twice.
    #[error("{0} (output was already relayed, so the call was not retried)")]
    FailedMidStream(ProviderError),
}

/// What a worker with no provider at all says.
pub const NO_PROVIDER: &str = "no model provider: start Ollama (`ollama serve`, then `ollama pull \
     llama3.2:1b`), or set SOPHIA_INTELLIGENCE_CONFIG to a config file with a provider and its \
     API key; see docs/intelligence-worker.md";

/// What to ask a provider.
pub enum Operation<'a> {
    /// `POST chat/completions`, not streamed.
    Chat(&'a Value),
    /// `POST chat/completions`, streamed, with a sink for deltas.
    ChatStream(&'a Value, &'a mut (dyn FnMut(Delta) + Send)),
    /// `POST embeddings`.
    Embeddings(&'a Value),
}

/// The router. Cheap to share behind an `Arc`.
pub struct Router {
    config: Config,
    providers: HashMap<String, Arc<ProviderState>>,
    discovery: Discovery,
}

/// How a round through the targets ended: with the call's result (a
/// success, or a failure that ends the call), or with none, and the
/// earliest time a `Retry-After` allows.
type Round = ControlFlow<Result<Routed, RouteError>, Option<Instant>>;

impl Router {
    /// A router over `config`'s providers.
    pub fn new(config: Config) -> Self {
        let providers = config
            .providers
            .iter()
            .map(|p| {
                let state = ProviderState::new(Provider::new(p.clone()));
                (p.name.clone(), Arc::new(state))
            })
            .collect();
        Self {
            config,
            providers,
            discovery: Discovery::default(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// A provider's breaker state (`None` if there is no such provider).
    pub fn breaker(&self, provider: &str) -> Option<BreakerState> {
        self.providers.get(provider).map(|p| p.state())
    }

    /// Requests outstanding at a provider now.
    pub fn outstanding(&self, provider: &str) -> usize {
        self.providers
            .get(provider)
            .map(|p| p.outstanding())
            .unwrap_or(0)
    }

    /// The provider client named `name`.
    pub fn provider(&self, name: &str) -> Option<&Provider> {
        self.providers.get(name).map(|p| &p.provider)
    }

    fn price(&self, model: &str, usage: Option<Usage>) -> Option<f64> {
        let (price, usage) = (self.config.prices.get(model)?, usage?);
        Some(
            usage.input_tokens as f64 * price.input_per_million / 1e6
                + usage.output_tokens as f64 * price.output_per_million / 1e6,
        )
    }

    /// The targets of one priority tier, best first: fewest outstanding
    /// requests per unit of weight, then configuration order.
    fn ranked(&self, tier: &[TargetConfig]) -> Vec<(TargetConfig, Arc<ProviderState>)> {
        let mut ranked: Vec<_> = tier
            .iter()
            .enumerate()
            .filter_map(|(i, t)| Some((i, t.clone(), self.providers.get(&t.provider)?.clone())))
            .collect();
        ranked.sort_by(|(ia, _, a), (ib, _, b)| a.load().total_cmp(&b.load()).then(ia.cmp(ib)));
        ranked.into_iter().map(|(_, t, p)| (t, p)).collect()
    }

    /// Serves `op` for `model` before `deadline`.
    pub async fn call(
        &self,
        model: &str,
        mut op: Operation<'_>,
        deadline: Instant,
    ) -> Result<Routed, RouteError> {
        let tiers = tiers(self.targets(model).await?);
        let routing = &self.config.routing;
        let mut attempts = Vec::new();
        for round in 0..=routing.max_retries {
            let earliest_retry = match self
                .round(model, &tiers, &mut op, deadline, &mut attempts)
                .await
            {
                ControlFlow::Break(done) => return done,
                ControlFlow::Continue(earliest_retry) => earliest_retry,
            };
            if round == routing.max_retries {
                break;
            }
            let backoff = sophia_kit::nats::backoff(round as usize + 1).as_secs_f64()
                * routing.backoff_ms as f64
                / 100.0;
            // Wait out the backoff, or the earliest Retry-After if that is
            // later; a backoff the clock cannot hold is past any deadline.
            let wake = Duration::try_from_secs_f64(backoff)
                .ok()
                .and_then(|d| Instant::now().checked_add(d))
                .map_or(deadline, |wake| {
                    earliest_retry.map_or(wake, |t| t.max(wake))
                });
            if wake >= deadline {
                attempts.push("no time left for another round".to_owned());
                break;
            }
            tokio::time::sleep_until(wake.into()).await;
        }
        Err(exhausted(model, attempts))
    }

    /// One round through the tiers, each tier's targets best first.
    async fn round(
        &self,
        model: &str,
        tiers: &[Vec<TargetConfig>],
        op: &mut Operation<'_>,
        deadline: Instant,
        attempts: &mut Vec<String>,
    ) -> Round {
        let mut earliest_retry: Option<Instant> = None;
        for (target, state) in tiers.iter().flat_map(|tier| self.ranked(tier)) {
            if Instant::now() >= deadline {
                attempts.push("deadline reached".to_owned());
                return ControlFlow::Break(Err(exhausted(model, std::mem::take(attempts))));
            }
            let Some(permit) = state.try_acquire() else {
                attempts.push(format!(
                    "{}: skipped (breaker open or cooling down)",
                    target.provider
                ));
                continue;
            };
            let (e, relayed) = match self
                .attempt(&state, &permit, &target.model, op, deadline)
                .await
            {
                Ok(response) => {
                    permit.succeeded();
                    attempts.push(format!("{}: ok", target.provider));
                    let routed = self.routed(target, response, std::mem::take(attempts));
                    return ControlFlow::Break(Ok(routed));
                }
                Err(failure) => failure,
            };
            if let Some(until) = self.settle_failure(permit, &state, &e) {
                earliest_retry = Some(earliest_retry.map_or(until, |t| t.min(until)));
            }
            tracing::info!(provider = %target.provider, cause = %e, "inference attempt failed");
            attempts.push(format!("{}: {e}", target.provider));
            if relayed {
                return ControlFlow::Break(Err(RouteError::FailedMidStream(e)));
            }
            if !e.is_retryable() {
                return ControlFlow::Break(Err(RouteError::Rejected(e)));
            }
        }
        ControlFlow::Continue(earliest_retry)
    }

    /// Counts a failed attempt against the provider (or gives its trial
    /// back), and cools it down for a 429's `Retry-After`, until the
    /// returned time.
    fn settle_failure(
        &self,
        permit: Permit<'_>,
        state: &ProviderState,
        e: &ProviderError,
    ) -> Option<Instant> {
        if e.counts_against_provider() {
            permit.failed(&self.config.routing);
        } else {
            permit.released();
        }
        match e {
            ProviderError::RateLimited {
                retry_after: Some(d),
                ..
            } => state.cool_down(*d),
            _ => None,
        }
    }

    /// The outcome of a successful attempt, with its usage and cost.
    fn routed(&self, target: TargetConfig, response: Value, attempts: Vec<String>) -> Routed {
        let usage = usage_of(&response);
        Routed {
            cost_usd: self.price(&target.model, usage),
            response,
            provider: target.provider,
            model: target.model,
            usage,
            attempts,
        }
    }

    async fn attempt(
        &self,
        state: &ProviderState,
        permit: &Permit<'_>,
        model: &str,
        op: &mut Operation<'_>,
        deadline: Instant,
    ) -> Result<Value, (ProviderError, bool)> {
        let _outstanding = permit.outstanding();
        let with_model = |body: &Value| {
            let mut b = body.clone();
            b["model"] = Value::String(model.to_owned());
            b
        };
        let p = &state.provider;
        let work = async {
            match op {
                Operation::Chat(body) => p
                    .post_json("chat/completions", &with_model(body))
                    .await
                    .map_err(|e| (e, false)),
                Operation::Embeddings(body) => p
                    .post_json("embeddings", &with_model(body))
                    .await
                    .map_err(|e| (e, false)),
                Operation::ChatStream(body, sink) => {
                    let mut relayed = false;
                    let r = p.chat_stream(&with_model(body), *sink, &mut relayed).await;
                    r.map_err(|e| (e, relayed))
                }
            }
        };
        match tokio::time::timeout_at(deadline.into(), work).await {
            Ok(r) => r,
            Err(_) => Err((
                ProviderError::Timeout {
                    provider: p.config.name.clone(),
                    timeout: Duration::from_millis(p.config.timeout_ms),
                },
                false,
            )),
        }
    }
}

/// Targets grouped into priority tiers, highest priority (lowest number) first.
fn tiers(mut targets: Vec<TargetConfig>) -> Vec<Vec<TargetConfig>> {
    targets.sort_by_key(|t| t.priority);
    targets
        .chunk_by(|a, b| a.priority == b.priority)
        .map(<[TargetConfig]>::to_vec)
        .collect()
}

fn exhausted(model: &str, attempts: Vec<String>) -> RouteError {
    RouteError::Exhausted {
        model: model.to_owned(),
        attempts,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::retry_after_secs;

    fn router() -> Router {
        let text = r#"
            [[providers]]
            name = "p"
            base_url = "http://127.0.0.1:9/v1"
            models = ["m"]

            [routing]
            breaker_failures = 1
            breaker_open_ms = 0
        "#;
        Router::new(Config::parse(text, "test").expect("test config parses"))
    }

    /// A trial at a half-open provider answers 429 with `retry_after`: the
    /// call goes on, the trial is settled, and the cool-down is bounded.
    fn trial_rate_limited(retry_after: &str) -> Option<Instant> {
        let r = router();
        let state = r.providers["p"].clone();
        state.try_acquire().unwrap().failed(&r.config.routing);
        assert_eq!(state.state(), BreakerState::HalfOpen);
        let trial = state.try_acquire().expect("the trial");
        let e = ProviderError::RateLimited {
            provider: "p".into(),
            retry_after: retry_after_secs(retry_after),
        };
        let until = r.settle_failure(trial, &state, &e);
        assert!(e.is_retryable());
        until
    }

    #[test]
    fn a_429_with_any_retry_after_never_panics_and_cools_down_at_most_an_hour() {
        let hour = Duration::from_secs(3600);
        for huge in ["inf", "1e300"] {
            let until = trial_rate_limited(huge).expect("a cool-down");
            assert!(until <= Instant::now() + hour, "{huge}");
            assert!(
                until > Instant::now() + hour - Duration::from_secs(60),
                "{huge}"
            );
        }
        for ignored in ["-1", "NaN", "soon"] {
            assert_eq!(trial_rate_limited(ignored), None, "{ignored}");
        }
    }
}
