//! `pulumi-worker`: Pulumi stacks (issue: pulumi-worker).
//!
//! # Layout
//! - [`events`]: Pulumi's engine event log, read finished or live.
//! - [`cli`]: the Pulumi CLI, driven as the Automation API does.
//! - [`jobs`]: durable job records and cross-replica stack locks (JetStream KV).
//! - [`tools`]: the MCP tools and the preview → confirmed up flow.
//!
//! See `docs/pulumi-worker.md` for the tools, the confirmation flow, the job
//! model, and what is not built yet.
#![forbid(unsafe_code)]

pub mod cli;
pub mod events;
pub mod jobs;

pub mod tools;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use sophia_kit::{KitError, StartKind, WorkerConfig, WorkerHandle};
use tokio_util::sync::CancellationToken;

/// The default port for `/health`, `/ready` and `/metrics` (the seed's layout).
pub const DEFAULT_HTTP_PORT: u16 = 8091;

/// The pulumi-worker's settings, besides the kit's.
#[derive(Clone, Debug, clap::Args)]
pub struct PulumiArgs {
    /// The directory holding the Pulumi projects, one subdirectory each.
    #[arg(long, env = "SOPHIA_PULUMI_WORKSPACE", default_value = "./pulumi")]
    pub workspace: PathBuf,
    /// The `pulumi` executable.
    #[arg(
        long = "pulumi-binary",
        env = "PULUMI_BINARY",
        default_value = "pulumi"
    )]
    pub binary: PathBuf,
    /// The Pulumi state backend, e.g. `s3://bucket` or `file:///var/pulumi`.
    #[arg(long = "pulumi-backend-url", env = "PULUMI_BACKEND_URL")]
    pub backend_url: Option<String>,
    /// The passphrase of the passphrase secrets provider. Never logged.
    #[arg(
        long = "pulumi-passphrase",
        env = "PULUMI_CONFIG_PASSPHRASE",
        hide_env_values = true
    )]
    pub passphrase: Option<String>,
    /// After how long without a heartbeat a job's worker counts as dead, in ms.
    #[arg(long, env = "SOPHIA_PULUMI_STALE_AFTER_MS", default_value_t = 60_000)]
    pub stale_after_ms: u64,
    /// How long `pulumi_up` waits for its job before returning the job id, in ms.
    #[arg(long, env = "SOPHIA_PULUMI_WAIT_MS", default_value_t = 50_000)]
    pub wait_ms: u64,
}

/// The command line of the `pulumi-worker` binary.
#[derive(Clone, Debug, clap::Parser)]
#[command(name = "pulumi-worker", version, about = "Sophia Mesh Pulumi stacks")]
pub struct Cli {
    /// Mesh settings.
    #[command(flatten)]
    pub worker: WorkerConfig,
    /// Pulumi settings.
    #[command(flatten)]
    pub pulumi: PulumiArgs,
}

/// Starts the worker and its reaper (which fails the jobs of replicas that
/// died and frees their stacks), until `shutdown`. A missing Pulumi CLI is
/// logged; the worker still starts, and calls say what to install.
pub async fn run(cli: Cli, shutdown: CancellationToken) -> Result<WorkerHandle, KitError> {
    let driver = cli::PulumiCli::new(cli::CliConfig {
        binary: cli.pulumi.binary.clone(),
        backend_url: cli.pulumi.backend_url.clone(),
        passphrase: cli.pulumi.passphrase.clone(),
    });
    let conn = sophia_kit::nats::connect(&cli.worker.nats, "pulumi-worker-jobs").await?;
    conn.connected().await; // the job store is on JetStream
    let instance = uuid::Uuid::new_v4().simple().to_string();
    let stale_after = Duration::from_millis(cli.pulumi.stale_after_ms);
    let store_err =
        |e: String| KitError::start(StartKind::Store, "open the Pulumi job store (JetStream)", e);
    let jobs = jobs::JobStore::open(conn.client.clone(), instance, stale_after)
        .await
        .map_err(|e| store_err(e.to_string()))?;
    let ctx = tools::Ctx::new(
        driver,
        cli.pulumi.workspace.clone(),
        jobs.clone(),
        conn.client.clone(),
        stale_after / 4,
        Duration::from_millis(cli.pulumi.wait_ms),
    )
    .await
    .map_err(store_err)?;
    match ctx.check_cli().await {
        Ok(v) => tracing::info!(version = %v, "found the Pulumi CLI"),
        Err(e) => tracing::warn!(cause = %e, "the Pulumi CLI is not usable; tools will say so"),
    }
    let ctx = Arc::new(ctx);
    let health = ctx.clone();
    let handle = tools::worker(ctx)
        .degraded(move || health.degraded())
        .run(cli.worker, shutdown.clone())
        .await?;
    tokio::spawn(async move {
        let mut tick = tokio::time::interval((stale_after / 2).max(Duration::from_millis(50)));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => if let Err(e) = jobs.reap().await {
                    tracing::debug!(cause = %e, "reaper pass failed");
                },
            }
        }
    });
    Ok(handle)
}
