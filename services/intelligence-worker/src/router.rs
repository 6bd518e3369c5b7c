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

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::chat::{Delta, Usage};
use crate::config::{Config, RoutingConfig, TargetConfig};
use crate::provider::{Provider, ProviderError};

/// A circuit breaker's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls flow; counts consecutive failures.
    Closed,
    /// Calls are refused until the open period ends.
    Open,
    /// One trial call decides whether to close or open again.
    HalfOpen,
}

#[derive(Debug)]
struct Breaker {
    failures: u32,
    open_until: Option<Instant>,
    trial_in_flight: bool,
}

struct ProviderState {
    provider: Provider,
    outstanding: AtomicUsize,
    breaker: Mutex<Breaker>,
    cooldown_until: Mutex<Option<Instant>>,
}

impl ProviderState {
    fn state(&self) -> BreakerState {
        let b = self.breaker.lock().expect("breaker lock");
        match b.open_until {
            None => BreakerState::Closed,
            Some(t) if Instant::now() < t => BreakerState::Open,
            Some(_) => BreakerState::HalfOpen,
        }
    }

    /// Whether a call may go to this provider now; reserves the half-open trial.
    fn try_acquire(&self) -> bool {
        if let Some(t) = *self.cooldown_until.lock().expect("cooldown lock")
            && Instant::now() < t
        {
            return false;
        }
        let mut b = self.breaker.lock().expect("breaker lock");
        match b.open_until {
            None => true,
            Some(t) if Instant::now() < t => false,
            Some(_) if b.trial_in_flight => false,
            Some(_) => {
                b.trial_in_flight = true;
                true
            }
        }
    }

    fn succeeded(&self) {
        let mut b = self.breaker.lock().expect("breaker lock");
        if b.open_until.is_some() {
            tracing::info!(provider = %self.provider.config.name, "circuit breaker closed");
        }
        *b = Breaker {
            failures: 0,
            open_until: None,
            trial_in_flight: false,
        };
    }

    fn failed(&self, routing: &RoutingConfig) {
        let mut b = self.breaker.lock().expect("breaker lock");
        b.failures += 1;
        let reopen = b.trial_in_flight || b.failures >= routing.breaker_failures;
        b.trial_in_flight = false;
        if reopen {
            b.open_until = Some(Instant::now() + Duration::from_millis(routing.breaker_open_ms));
            tracing::warn!(provider = %self.provider.config.name, failures = b.failures, "circuit breaker open");
        }
    }

    fn release_trial(&self) {
        self.breaker.lock().expect("breaker lock").trial_in_flight = false;
    }
}

/// Counts a request outstanding at a provider while alive.
struct Outstanding<'a>(&'a AtomicUsize);

impl<'a> Outstanding<'a> {
    fn new(n: &'a AtomicUsize) -> Self {
        n.fetch_add(1, Ordering::SeqCst);
        Self(n)
    }
}

impl Drop for Outstanding<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

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
    #[error(
        "no model provider is configured: set SOPHIA_INTELLIGENCE_CONFIG to a config file \
         with [[providers]] (see docs/intelligence-worker.md)"
    )]
    NoProviders,
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
}

impl Router {
    /// A router over `config`'s providers.
    pub fn new(config: Config) -> Self {
        let providers = config
            .providers
            .iter()
            .map(|p| {
                let state = ProviderState {
                    provider: Provider::new(p.clone()),
                    outstanding: AtomicUsize::new(0),
                    breaker: Mutex::new(Breaker {
                        failures: 0,
                        open_until: None,
                        trial_in_flight: false,
                    }),
                    cooldown_until: Mutex::new(None),
                };
                (p.name.clone(), Arc::new(state))
            })
            .collect();
        Self { config, providers }
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
            .map(|p| p.outstanding.load(Ordering::SeqCst))
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
        ranked.sort_by(|(ia, _, a), (ib, _, b)| {
            let load = |p: &ProviderState| {
                p.outstanding.load(Ordering::SeqCst) as f64 / p.provider.config.weight as f64
            };
            load(a).total_cmp(&load(b)).then(ia.cmp(ib))
        });
        ranked.into_iter().map(|(_, t, p)| (t, p)).collect()
    }

    /// Serves `op` for `model` before `deadline`.
    pub async fn call(
        &self,
        model: &str,
        mut op: Operation<'_>,
        deadline: Instant,
    ) -> Result<Routed, RouteError> {
        if self.providers.is_empty() {
            return Err(RouteError::NoProviders);
        }
        let mut targets = self.config.targets(model);
        if targets.is_empty() {
            return Err(RouteError::UnknownModel {
                model: model.to_owned(),
                known: self.config.model_names(),
            });
        }
        targets.sort_by_key(|t| t.priority);
        let tiers: Vec<Vec<TargetConfig>> = targets
            .chunk_by(|a, b| a.priority == b.priority)
            .map(<[TargetConfig]>::to_vec)
            .collect();
        let routing = self.config.routing.clone();
        let mut attempts = Vec::new();
        for round in 0..=routing.max_retries {
            let mut earliest_retry: Option<Instant> = None;
            for tier in &tiers {
                for (target, state) in self.ranked(tier) {
                    if Instant::now() >= deadline {
                        attempts.push("deadline reached".to_owned());
                        return Err(exhausted(model, attempts));
                    }
                    if !state.try_acquire() {
                        attempts.push(format!(
                            "{}: skipped (breaker open or cooling down)",
                            target.provider
                        ));
                        continue;
                    }
                    match self.attempt(&state, &target.model, &mut op, deadline).await {
                        Ok(response) => {
                            state.succeeded();
                            attempts.push(format!("{}: ok", target.provider));
                            let usage = Usage::from_response(&response);
                            return Ok(Routed {
                                cost_usd: self.price(&target.model, usage),
                                response,
                                provider: target.provider,
                                model: target.model,
                                usage,
                                attempts,
                            });
                        }
                        Err((e, relayed)) => {
                            if e.counts_against_provider() {
                                state.failed(&routing);
                            } else {
                                state.release_trial();
                            }
                            if let ProviderError::RateLimited {
                                retry_after: Some(d),
                                ..
                            } = &e
                            {
                                let until = Instant::now() + *d;
                                *state.cooldown_until.lock().expect("cooldown lock") = Some(until);
                                earliest_retry =
                                    Some(earliest_retry.map_or(until, |t| t.min(until)));
                            }
                            tracing::info!(provider = %target.provider, cause = %e, "inference attempt failed");
                            attempts.push(format!("{}: {e}", target.provider));
                            if relayed {
                                return Err(RouteError::FailedMidStream(e));
                            }
                            if !e.is_retryable() {
                                return Err(RouteError::Rejected(e));
                            }
                        }
                    }
                }
            }
            if round == routing.max_retries {
                break;
            }
            let backoff = sophia_kit::nats::backoff(round as usize + 1)
                .mul_f64(routing.backoff_ms as f64 / 100.0);
            // Wait out the backoff, or the earliest Retry-After if that is later.
            let wake = Instant::now() + backoff;
            let wake = earliest_retry.map_or(wake, |t| t.max(wake));
            if wake >= deadline {
                attempts.push("no time left for another round".to_owned());
                break;
            }
            tokio::time::sleep_until(wake.into()).await;
        }
        Err(exhausted(model, attempts))
    }

    async fn attempt(
        &self,
        state: &ProviderState,
        model: &str,
        op: &mut Operation<'_>,
        deadline: Instant,
    ) -> Result<Value, (ProviderError, bool)> {
        let _outstanding = Outstanding::new(&state.outstanding);
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

fn exhausted(model: &str, attempts: Vec<String>) -> RouteError {
    RouteError::Exhausted {
        model: model.to_owned(),
        attempts,
    }
}
