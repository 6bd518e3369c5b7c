//! `intelligence-worker`: the mesh's door to model inference.
//!
//! # Layout
//! - [`config`]: providers, model aliases, prices and routing settings (TOML;
//!   API keys come from environment variables the file names).
//! - [`discovery`]: what providers that are asked for their models (a local
//!   Ollama) said last.
//! - [`provider`]: one OpenAI-compatible provider, one HTTP attempt, its
//!   failures classified (timeout, 429 with `Retry-After`, 5xx, rejection,
//!   malformed, cut-off stream).
//! - [`chat`]: token usage, and assembling streamed chunks (text and
//!   tool-call deltas by index; `choices: null` tolerated).
//! - [`router`]: fallback across priority tiers, least-outstanding balancing,
//!   per-provider circuit breakers, retries with jittered backoff.
//!
//! - [`service`]: the bus API (`sophia.v1.infer.<model>.chat|embeddings`,
//!   typed by [`sophia_proto::chat`]) and the MCP tools `model_chat` and
//!   `model_embeddings`.
//! - [`models`]: the model-list responder and the `list_models` tool.
//! - [`metrics`]: usage accounting (requests, tokens, cost) for Prometheus.
//!
//! See `docs/intelligence-worker.md` for configuration and GPU-host
//! deployment.
#![forbid(unsafe_code)]

pub mod chat;
pub mod config;
pub mod discovery;
pub mod provider;
pub mod router;

pub mod metrics;
pub mod models;
pub mod service;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use sophia_kit::{KitError, StartKind, WorkerConfig, WorkerHandle};
use tokio_util::sync::CancellationToken;

/// The default port for `/health`, `/ready` and `/metrics` (the seed's layout).
pub const DEFAULT_HTTP_PORT: u16 = 8092;

/// The intelligence worker's settings, besides the kit's.
#[derive(Clone, Debug, clap::Args)]
pub struct InferenceArgs {
    /// The providers/aliases/prices file (TOML). Without one, a local Ollama
    /// is used if it answers; otherwise the worker serves no models.
    #[arg(long = "config", env = "SOPHIA_INTELLIGENCE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Where to look for a local Ollama when there is no config file.
    #[arg(
        long,
        env = "SOPHIA_OLLAMA_URL",
        default_value = "http://127.0.0.1:11434/v1"
    )]
    pub ollama_url: String,
    /// The largest prompt accepted, as JSON bytes of `messages` or `input`.
    #[arg(long, env = "SOPHIA_MAX_PROMPT_BYTES", default_value_t = 1024 * 1024)]
    pub max_prompt_bytes: usize,
}

/// The command line of the `intelligence-worker` binary.
#[derive(Clone, Debug, clap::Parser)]
#[command(
    name = "intelligence-worker",
    version,
    about = "Sophia Mesh model inference routing"
)]
pub struct Cli {
    /// Mesh settings.
    #[command(flatten)]
    pub worker: WorkerConfig,
    /// Inference settings.
    #[command(flatten)]
    pub inference: InferenceArgs,
}

/// Loads the configuration: the file if given; else the local Ollama at
/// `ollama_url`, asked for its models now and again whenever `default`
/// finds none (so an Ollama started, or a model pulled, after this worker
/// still serves agents).
pub async fn load_config(args: &InferenceArgs) -> Result<config::Config, KitError> {
    // An empty SOPHIA_INTELLIGENCE_CONFIG (compose's `${VAR:-}`) means none.
    if let Some(path) = args.config.as_ref().filter(|p| !p.as_os_str().is_empty()) {
        return config::Config::load(path).map_err(|e| KitError::Config {
            key: "SOPHIA_INTELLIGENCE_CONFIG",
            message: e.to_string(),
        });
    }
    let mut ollama = config::ProviderConfig {
        name: "ollama".into(),
        base_url: args.ollama_url.clone(),
        api_key_env: None,
        models: vec![],
        weight: 1,
        timeout_ms: 120_000,
        discover: true,
    };
    let probe = discovery::Discovery::default();
    match probe.ask(&provider::Provider::new(ollama.clone())).await {
        discovery::Seen::Models(models) => {
            tracing::info!(url = %args.ollama_url, models = ?models, "no config file; using the local Ollama (`default` is its first model)");
            ollama.models = models;
        }
        discovery::Seen::Unreachable(why) => tracing::warn!(
            url = %args.ollama_url,
            cause = %why,
            "no config file, and no Ollama answers yet: model calls will say so until one does \
             (start Ollama, or set SOPHIA_INTELLIGENCE_CONFIG; see docs/intelligence-worker.md)"
        ),
    }
    Ok(config::Config {
        providers: vec![ollama],
        ..Default::default()
    })
}

/// How often providers with `discover` are asked for their models, so that
/// `/health` says what is missing (and stops saying it once it is there).
const DISCOVERY_INTERVAL: Duration = Duration::from_secs(15);

/// Starts the worker: routes the configured models, serves the bus API and
/// the MCP tools, and answers model-list queries, until `shutdown`.
pub async fn run(cli: Cli, shutdown: CancellationToken) -> Result<WorkerHandle, KitError> {
    let config = load_config(&cli.inference).await?;
    let router = Arc::new(router::Router::new(config));
    let limits = service::Limits {
        max_prompt_bytes: cli.inference.max_prompt_bytes,
    };
    let degraded = router.clone();
    let handle = service::worker(router.clone(), metrics::InferenceMetrics::default(), limits)
        .degraded(move || degraded.degraded())
        .run(cli.worker, shutdown.clone())
        .await?;
    if router.config().providers.iter().any(|p| p.discover) {
        let router = router.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(DISCOVERY_INTERVAL);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tick.tick() => router.refresh_discovery().await,
                }
            }
        });
    }
    models::answer_model_queries(handle.client.clone(), router, handle.instance.clone())
        .await
        .map_err(|e| KitError::start(StartKind::Subscribe, "answer model queries", e))?;
    Ok(handle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_empty_config_path_means_no_config_file() {
        let args = InferenceArgs {
            config: Some(PathBuf::new()),
            ollama_url: "http://127.0.0.1:9/v1".into(),
            max_prompt_bytes: 1024,
        };
        let config = load_config(&args).await.expect("no file is read");
        assert_eq!(config.providers.len(), 1);
        assert!(config.providers[0].discover, "the local Ollama, asked");
    }
}
