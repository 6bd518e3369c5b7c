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
use crate::config::{Config, DEFAULT_MODEL, RoutingConfig, TargetConfig};
use crate::discovery::{Discovery, Seen};
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
        Self {
            config,
            providers,
            discovery: Discovery::default(),
        }
    }

    /// Asks every provider with `discover` for its models now.
    pub async fn refresh_discovery(&self) {
        for p in &self.config.providers {
            if let Some(state) = self.providers.get(&p.name).filter(|_| p.discover) {
                self.discovery.ask(&state.provider).await;
            }
        }
    }

    /// What providers with `discover` said last: `(provider, answer)`, in
    /// configuration order.
    pub fn discovered(&self) -> Vec<(String, Seen)> {
        self.config
            .providers
            .iter()
            .filter_map(|p| Some((p.name.clone(), self.discovery.seen(&p.name)?)))
            .collect()
    }

    /// Targets for `model` from what discovering providers said last:
    /// their first model for [`DEFAULT_MODEL`], or `model` where they have it.
    fn discovered_targets(&self, model: &str) -> Vec<TargetConfig> {
        self.discovered()
            .into_iter()
            .filter_map(|(provider, seen)| match seen {
                Seen::Models(models) if model == DEFAULT_MODEL => {
                    Some((provider, models.into_iter().next()?))
                }
                Seen::Models(models) if models.iter().any(|m| m == model) => {
                    Some((provider, model.to_owned()))
                }
                _ => None,
            })
            .zip(0..)
            .map(|((provider, model), priority)| TargetConfig {
                provider,
                model,
                priority,
            })
            .collect()
    }

    /// Where `model` can be served as far as is known now, without asking
    /// any provider: the configuration's targets, else what discovering
    /// providers said last.
    pub fn targets_now(&self, model: &str) -> Vec<TargetConfig> {
        let targets = self.config.targets(model);
        if targets.is_empty() {
            return self.discovered_targets(model);
        }
        targets
    }

    /// Where `model` can be served: the configuration's targets, else what
    /// discovering providers have (asked again if they had nothing).
    async fn targets(&self, model: &str) -> Result<Vec<TargetConfig>, RouteError> {
        if self.providers.is_empty() {
            return Err(RouteError::NoProviders);
        }
        let mut targets = self.config.targets(model);
        if targets.is_empty() && self.config.providers.iter().any(|p| p.discover) {
            targets = self.discovered_targets(model);
            if targets.is_empty() {
                self.refresh_discovery().await;
                targets = self.discovered_targets(model);
            }
        }
        if !targets.is_empty() {
            return Ok(targets);
        }
        if model == DEFAULT_MODEL {
            return Err(RouteError::NoModel {
                model: model.to_owned(),
                why: self.degraded(),
            });
        }
        Err(RouteError::UnknownModel {
            model: model.to_owned(),
            known: self.config.model_names(),
        })
    }

    /// What this replica cannot do now, each with what to do about it:
    /// no provider, a discovering provider that does not answer or has no
    /// models, an open circuit breaker.
    pub fn degraded(&self) -> Vec<String> {
        if self.providers.is_empty() {
            return vec![NO_PROVIDER.to_owned()];
        }
        let mut out = Vec::new();
        for p in &self.config.providers {
            match self.discovery.seen(&p.name) {
                Some(Seen::Unreachable(why)) if p.models.is_empty() => out.push(format!(
                    "no model provider: {} at {} does not answer ({why}); start it (for \
                     Ollama: `ollama serve`), or set SOPHIA_INTELLIGENCE_CONFIG to a config file \
                     with a provider and its API key; see docs/intelligence-worker.md",
                    p.name, p.base_url
                )),
                Some(Seen::Models(models)) if models.is_empty() && p.models.is_empty() => {
                    out.push(format!(
                        "no model provider has a model: {} at {} has none; pull one (e.g. \
                         `ollama pull llama3.2:1b`)",
                        p.name, p.base_url
                    ))
                }
                _ => {}
            }
            if self.breaker(&p.name) == Some(BreakerState::Open) {
                out.push(format!(
                    "model provider {} is failing (circuit breaker open); calls go to the \
                     other targets",
                    p.name
                ));
            }
        }
        out
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
        let mut targets = self.targets(model).await?;
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
