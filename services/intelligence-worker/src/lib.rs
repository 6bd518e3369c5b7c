//! `intelligence-worker`: the mesh's door to model inference.
//!
//! # Layout
//! - [`config`]: providers, model aliases, prices and routing settings (TOML;
//!   API keys come from environment variables the file names).
//! - [`provider`]: one OpenAI-compatible provider, one HTTP attempt, its
//!   failures classified (timeout, 429 with `Retry-After`, 5xx, rejection,
//!   malformed, cut-off stream).
//! - [`chat`]: token usage, and assembling streamed chunks (text and
//!   tool-call deltas by index; `choices: null` tolerated).
//! - [`router`]: fallback across priority tiers, least-outstanding balancing,
//!   per-provider circuit breakers, retries with jittered backoff.
//!
//! - [`service`]: the bus API (`sophia.v1.infer.<model>.chat|embeddings`),
//!   the MCP tools (`model_chat`, `model_embeddings`, `list_models`) and the
//!   model-list responder.
//! - [`metrics`]: usage accounting (requests, tokens, cost) for Prometheus.
//!
//! See `docs/intelligence-worker.md` for configuration and GPU-host
//! deployment.
#![forbid(unsafe_code)]

pub mod chat;
pub mod config;
pub mod provider;
pub mod router;

pub mod metrics;
pub mod service;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use sophia_kit::{KitError, WorkerConfig, WorkerHandle};
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

/// Loads the configuration: the file if given; else a local Ollama if one
/// answers at `ollama_url` (its models become servable); else nothing.
pub async fn load_config(args: &InferenceArgs) -> Result<config::Config, KitError> {
    if let Some(path) = &args.config {
        return config::Config::load(path).map_err(|e| KitError::Config {
            key: "SOPHIA_INTELLIGENCE_CONFIG",
            message: e.to_string(),
        });
    }
    let probe = provider::Provider::new(config::ProviderConfig {
        name: "ollama".into(),
        base_url: args.ollama_url.clone(),
        api_key_env: None,
        models: vec![],
        weight: 1,
        timeout_ms: 500,
    });
    match tokio::time::timeout(Duration::from_secs(1), probe.list_models()).await {
        Ok(Ok(list)) => {
            let models: Vec<String> = list["data"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|m| m["id"].as_str().map(str::to_owned))
                .collect();
            tracing::info!(url = %args.ollama_url, models = ?models, "no config file; using the local Ollama");
            let mut provider = probe.config.clone();
            provider.models = models;
            provider.timeout_ms = 120_000;
            Ok(config::Config {
                providers: vec![provider],
                ..Default::default()
            })
        }
        _ => {
            tracing::warn!(
                "no model provider configured: set SOPHIA_INTELLIGENCE_CONFIG (docs/intelligence-worker.md); \
                 serving no models"
            );
            Ok(config::Config::default())
        }
    }
}

/// Starts the worker: routes the configured models, serves the bus API and
/// the MCP tools, and answers model-list queries, until `shutdown`.
pub async fn run(cli: Cli, shutdown: CancellationToken) -> Result<WorkerHandle, KitError> {
    let config = load_config(&cli.inference).await?;
    let router = Arc::new(router::Router::new(config));
    let limits = service::Limits {
        max_prompt_bytes: cli.inference.max_prompt_bytes,
    };
    let handle = service::worker(router.clone(), metrics::InferenceMetrics::default(), limits)
        .run(cli.worker, shutdown)
        .await?;
    service::answer_model_queries(handle.client.clone(), router, handle.instance.clone())
        .await
        .map_err(|e| KitError::Register(e.to_string()))?;
    Ok(handle)
}
