//! Providers, model aliases and prices, from a TOML file. Secrets are never
//! in the file: each provider names the environment variable holding its key.
//!
//! ```toml
//! [[providers]]
//! name = "openrouter"
//! base_url = "https://openrouter.ai/api/v1"
//! api_key_env = "OPENROUTER_API_KEY"
//! models = ["anthropic/claude-sonnet-4"]
//! weight = 1
//! timeout_ms = 60000
//!
//! [aliases.claude]
//! targets = [
//!   { provider = "openrouter", model = "anthropic/claude-sonnet-4" },
//!   { provider = "together", model = "meta-llama/Llama-3.3-70B-Instruct-Turbo", priority = 1 },
//! ]
//!
//! [prices."anthropic/claude-sonnet-4"]
//! input_per_million = 3.0
//! output_per_million = 15.0
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema.
    #[error("{path} is not a valid intelligence-worker config: {message}")]
    Parse {
        /// The file.
        path: String,
        /// What the parser said.
        message: String,
    },
    /// The file is well-formed but inconsistent.
    #[error("invalid config: {0}")]
    Invalid(String),
}

/// An OpenAI-compatible endpoint.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// Unique name, e.g. `openrouter` or `vllm-gpu1`.
    pub name: String,
    /// Base URL up to and including `/v1`.
    pub base_url: String,
    /// The environment variable holding the API key (none for local servers).
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// The model names it serves.
    #[serde(default)]
    pub models: Vec<String>,
    /// Share of traffic among equal-priority targets (higher takes more).
    #[serde(default = "one")]
    pub weight: u32,
    /// How long one attempt may take, in milliseconds.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Ask the provider for its models (`GET /models`) when a call needs
    /// them, rather than only trusting `models`: for a local Ollama or vLLM
    /// whose models are pulled or loaded after this worker starts. The
    /// auto-detected Ollama has it on.
    #[serde(default)]
    pub discover: bool,
}

fn one() -> u32 {
    1
}

fn default_timeout_ms() -> u64 {
    60_000
}

/// One place an alias can be served.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    /// The provider's name.
    pub provider: String,
    /// The model name at that provider.
    pub model: String,
    /// Lower is tried first; targets of equal priority share the load.
    #[serde(default)]
    pub priority: u32,
}

/// A model alias: the name callers use.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AliasConfig {
    /// Where it can be served, in fallback order by priority.
    pub targets: Vec<TargetConfig>,
}

/// Price of a model, in US dollars per million tokens.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Price {
    /// Per million input (prompt) tokens.
    pub input_per_million: f64,
    /// Per million output (completion) tokens.
    pub output_per_million: f64,
}

/// How hard the router tries.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RoutingConfig {
    /// Rounds through all targets after the first, with backoff in between.
    #[serde(default = "default_retries")]
    pub max_retries: u32,
    /// First backoff, in milliseconds; doubles each round, with jitter.
    #[serde(default = "default_backoff_ms")]
    pub backoff_ms: u64,
    /// Consecutive failures that open a provider's breaker.
    #[serde(default = "default_breaker_failures")]
    pub breaker_failures: u32,
    /// How long an open breaker stays open before one trial, in milliseconds.
    #[serde(default = "default_breaker_open_ms")]
    pub breaker_open_ms: u64,
}

fn default_retries() -> u32 {
    2
}
fn default_backoff_ms() -> u64 {
    200
}
fn default_breaker_failures() -> u32 {
    5
}
fn default_breaker_open_ms() -> u64 {
    30_000
}

impl Default for RoutingConfig {
    fn default() -> Self {
        Self {
            max_retries: default_retries(),
            backoff_ms: default_backoff_ms(),
            breaker_failures: default_breaker_failures(),
            breaker_open_ms: default_breaker_open_ms(),
        }
    }
}

/// The model name that always exists: an alias if the configuration has
/// one of that name, or else the first healthy model of any provider (every
/// built-in agent template uses it).
pub const DEFAULT_MODEL: &str = "default";

/// The whole configuration.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The providers.
    #[serde(default)]
    pub providers: Vec<ProviderConfig>,
    /// Model aliases.
    #[serde(default)]
    pub aliases: BTreeMap<String, AliasConfig>,
    /// Prices by model name.
    #[serde(default)]
    pub prices: BTreeMap<String, Price>,
    /// Retry and breaker settings.
    #[serde(default)]
    pub routing: RoutingConfig,
}

impl Config {
    /// Parses and checks a configuration.
    pub fn parse(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_owned(),
            message: e.to_string(),
        })?;
        config.check()?;
        Ok(config)
    }

    /// Reads, parses and checks a configuration file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    fn check(&self) -> Result<(), ConfigError> {
        let mut names = std::collections::HashSet::new();
        for p in &self.providers {
            if !names.insert(p.name.as_str()) {
                return Err(ConfigError::Invalid(format!(
                    "provider {:?} is defined twice",
                    p.name
                )));
            }
            if !(p.base_url.starts_with("http://") || p.base_url.starts_with("https://")) {
                return Err(ConfigError::Invalid(format!(
                    "provider {:?}: base_url must start with http:// or https://",
                    p.name
                )));
            }
            if p.weight == 0 {
                return Err(ConfigError::Invalid(format!(
                    "provider {:?}: weight must be at least 1",
                    p.name
                )));
            }
        }
        for (alias, a) in &self.aliases {
            if a.targets.is_empty() {
                return Err(ConfigError::Invalid(format!(
                    "alias {alias:?} has no targets"
                )));
            }
            for t in &a.targets {
                if !names.contains(t.provider.as_str()) {
                    return Err(ConfigError::Invalid(format!(
                        "alias {alias:?} names provider {:?}, which is not defined",
                        t.provider
                    )));
                }
            }
        }
        Ok(())
    }

    /// The targets for `alias`: its configured targets, or else every
    /// provider that lists a model of that name (priority by file order).
    /// [`DEFAULT_MODEL`], when nothing else defines it, is every provider's
    /// every model, each a tier of its own in file order, so the first
    /// healthy one serves.
    pub fn targets(&self, alias: &str) -> Vec<TargetConfig> {
        if let Some(a) = self.aliases.get(alias) {
            return a.targets.clone();
        }
        let named: Vec<TargetConfig> = self
            .providers
            .iter()
            .filter(|p| p.models.iter().any(|m| m == alias))
            .map(|p| TargetConfig {
                provider: p.name.clone(),
                model: alias.to_owned(),
                priority: 0,
            })
            .collect();
        if !named.is_empty() || alias != DEFAULT_MODEL {
            return named;
        }
        self.providers
            .iter()
            .flat_map(|p| p.models.iter().map(move |m| (p, m)))
            .zip(0..)
            .map(|((p, m), priority)| TargetConfig {
                provider: p.name.clone(),
                model: m.clone(),
                priority,
            })
            .collect()
    }

    /// Every alias or model name callers may use; [`DEFAULT_MODEL`] always.
    pub fn model_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.aliases.keys().cloned().collect();
        names.push(DEFAULT_MODEL.to_owned());
        for p in &self.providers {
            names.extend(p.models.iter().cloned());
        }
        names.sort();
        names.dedup();
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
        [[providers]]
        name = "openrouter"
        base_url = "https://openrouter.ai/api/v1"
        api_key_env = "OPENROUTER_API_KEY"
        models = ["anthropic/claude-sonnet-4"]

        [[providers]]
        name = "gpu1"
        base_url = "http://gpu1:8000/v1"
        models = ["llama"]
        weight = 3
        timeout_ms = 5000

        [aliases.claude]
        targets = [{ provider = "openrouter", model = "anthropic/claude-sonnet-4" }]

        [prices."anthropic/claude-sonnet-4"]
        input_per_million = 3.0
        output_per_million = 15.0
    "#;

    #[test]
    fn an_example_config_parses_with_defaults() {
        let c = Config::parse(EXAMPLE, "example").unwrap();
        assert_eq!(c.providers[1].weight, 3);
        assert_eq!(c.providers[0].timeout_ms, 60_000);
        assert_eq!(c.targets("claude")[0].provider, "openrouter");
        // A model name a provider lists works without an alias.
        assert_eq!(c.targets("llama")[0].provider, "gpu1");
        assert!(c.targets("unknown").is_empty());
        assert_eq!(
            c.model_names(),
            ["anthropic/claude-sonnet-4", "claude", "default", "llama"]
        );
        assert_eq!(c.routing, RoutingConfig::default());
    }

    #[test]
    fn default_is_every_model_in_file_order_unless_an_alias_says_otherwise() {
        let c = Config::parse(EXAMPLE, "example").unwrap();
        let targets: Vec<_> = c
            .targets(DEFAULT_MODEL)
            .into_iter()
            .map(|t| (t.provider, t.model, t.priority))
            .collect();
        assert_eq!(
            targets,
            [
                ("openrouter".into(), "anthropic/claude-sonnet-4".into(), 0),
                ("gpu1".into(), "llama".into(), 1)
            ]
        );
        let aliased = format!(
            "{EXAMPLE}\n[aliases.default]\ntargets = [{{ provider = \"gpu1\", model = \"llama\" }}]"
        );
        let c = Config::parse(&aliased, "aliased").unwrap();
        assert_eq!(c.targets(DEFAULT_MODEL).len(), 1);
        assert_eq!(c.targets(DEFAULT_MODEL)[0].provider, "gpu1");
        // No provider: `default` is still a name (calls say what is missing).
        assert_eq!(Config::default().model_names(), [DEFAULT_MODEL]);
        assert!(Config::default().targets(DEFAULT_MODEL).is_empty());
    }

    #[test]
    fn the_shipped_example_parses() {
        let c = Config::parse(
            include_str!("../../../ops/intelligence/example.toml"),
            "example.toml",
        )
        .unwrap();
        assert_eq!(c.targets("claude").len(), 2);
        assert_eq!(c.targets("local")[0].provider, "ollama");
        assert_eq!(
            c.targets(DEFAULT_MODEL).len(),
            3,
            "the example names `default`"
        );
    }

    #[test]
    fn mistakes_are_named() {
        let e = Config::parse(
            "[aliases.x]\ntargets = [{ provider = \"nope\", model = \"m\" }]",
            "t",
        )
        .unwrap_err();
        assert!(e.to_string().contains("\"nope\""), "{e}");
        let e =
            Config::parse("[[providers]]\nname = \"a\"\nbase_url = \"ftp://x\"", "t").unwrap_err();
        assert!(e.to_string().contains("base_url"), "{e}");
        let e = Config::parse(
            "[[providers]]\nname = \"a\"\nbase_url = \"http://x\"\napi_key = \"sk-oops\"",
            "t",
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("api_key"),
            "secrets belong in env vars: {e}"
        );
    }
}
