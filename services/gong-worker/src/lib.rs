//! `gong-worker`: Gong's calls, call details and transcripts as MCP tools
//! on the mesh (category `business_intelligence`). Gong has no official MCP
//! server, so these are written natively against its public REST API v2.
//!
//! A call flows: the kit hands a tool call to its `run_*` in [`tools`],
//! which asks Gong through [`client::GongClient`] (Basic auth, bounded 429
//! retries), reads the answer as [`api`]'s types and returns readable text
//! plus structured content. Gong's failures become [`client::GongError`]s,
//! and those the wire's error codes in one place (`tools::gong_error`).
//!
//! # Layout
//! - [`api`]: Gong's request and response bodies, read leniently.
//! - [`client`]: HTTP to Gong: auth, retries, errors.
//! - [`tools`]: the MCP tools, one file per family.
//! - [`time`]: ISO-8601 timestamps for Gong's date filters.
//!
//! Without credentials the worker still starts: its `/health` says which
//! variables to set, and every call returns an error saying the same. See
//! `docs/gong.md`.
#![forbid(unsafe_code)]

pub mod api;
pub mod client;
pub mod time;
pub mod tools;

use std::sync::Arc;
use std::time::Duration;

use sophia_kit::{KitError, WorkerConfig, WorkerHandle};
use tokio_util::sync::CancellationToken;

use client::{ClientConfig, GongClient};

/// The default port for `/health`, `/ready` and `/metrics`.
pub const DEFAULT_HTTP_PORT: u16 = 8093;

/// The gong-worker's settings, besides the kit's.
#[derive(Clone, Debug, clap::Args)]
pub struct GongArgs {
    /// Gong's API base URL (your account's may differ: Gong's API page shows it).
    #[arg(
        long = "gong-base-url",
        env = "GONG_BASE_URL",
        default_value = "https://api.gong.io",
        value_parser = http_url
    )]
    pub base_url: String,
    /// The access key (Gong: Company settings → API → Create).
    #[arg(
        long = "gong-access-key",
        env = "GONG_ACCESS_KEY",
        hide_env_values = true
    )]
    pub access_key: Option<String>,
    /// The access key's secret. Never logged.
    #[arg(
        long = "gong-access-key-secret",
        env = "GONG_ACCESS_KEY_SECRET",
        hide_env_values = true
    )]
    pub access_key_secret: Option<String>,
    /// Each request's timeout, in ms.
    #[arg(
        long = "gong-timeout-ms",
        env = "GONG_TIMEOUT_MS",
        default_value_t = 30_000
    )]
    pub timeout_ms: u64,
    /// How many times a rate-limited (429) request is retried.
    #[arg(
        long = "gong-max-retries",
        env = "GONG_MAX_RETRIES",
        default_value_t = 2
    )]
    pub max_retries: u32,
    /// The longest `Retry-After` waited out before retrying, in ms; a
    /// longer one is returned to the caller at once.
    #[arg(
        long = "gong-max-retry-wait-ms",
        env = "GONG_MAX_RETRY_WAIT_MS",
        default_value_t = 10_000
    )]
    pub max_retry_wait_ms: u64,
}

/// An `http(s)://` URL, refused at start-up otherwise.
fn http_url(v: &str) -> Result<String, String> {
    match reqwest::Url::parse(v) {
        Ok(u) if matches!(u.scheme(), "http" | "https") => Ok(v.to_owned()),
        Ok(u) => Err(format!("{} is not http or https", u.scheme())),
        Err(e) => Err(format!("not a URL ({e}); e.g. https://api.gong.io")),
    }
}

/// The command line of the `gong-worker` binary.
#[derive(Clone, Debug, clap::Parser)]
#[command(name = "gong-worker", version, about = "Sophia Mesh Gong tools")]
pub struct Cli {
    /// Mesh settings.
    #[command(flatten)]
    pub worker: WorkerConfig,
    /// Gong settings.
    #[command(flatten)]
    pub gong: GongArgs,
}

/// Starts the worker until `shutdown`. Missing credentials are logged and
/// reported on `/health`; the worker still serves, and calls say what to set.
pub async fn run(cli: Cli, shutdown: CancellationToken) -> Result<WorkerHandle, KitError> {
    let g = cli.gong;
    let client = GongClient::new(ClientConfig {
        base_url: g.base_url,
        access_key: g.access_key,
        access_key_secret: g.access_key_secret,
        timeout: Duration::from_millis(g.timeout_ms.max(1)),
        max_retries: g.max_retries,
        max_retry_wait: Duration::from_millis(g.max_retry_wait_ms),
    });
    let ctx = Arc::new(tools::Ctx { client });
    for problem in ctx.degraded() {
        tracing::warn!(problem = %problem, "Gong tools cannot work yet");
    }
    let health = ctx.clone();
    tools::worker(ctx)
        .degraded(move || health.degraded())
        .run(cli.worker, shutdown)
        .await
}
