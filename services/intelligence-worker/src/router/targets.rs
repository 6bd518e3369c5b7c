//! Where a model can be served: the configuration's targets, or what
//! discovering providers (a local Ollama, a vLLM whose model loads late)
//! said they have; and what this replica cannot do now, for `/health`.

use super::{BreakerState, NO_PROVIDER, RouteError, Router};
use crate::config::{DEFAULT_MODEL, TargetConfig};
use crate::discovery::Seen;

impl Router {
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
    pub(super) async fn targets(&self, model: &str) -> Result<Vec<TargetConfig>, RouteError> {
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
}
