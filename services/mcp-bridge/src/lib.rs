//! `mcp-bridge`: puts existing MCP servers on the Sophia Mesh.
//!
//! Each upstream server in the configuration (stdio or Streamable HTTP,
//! reached with rmcp's client) becomes a kit worker of its own,
//! `bridge-<name>`, announcing the server's tools as `<prefix>_<tool>` in
//! the server's category (the server's own names with prefix `""`), and its
//! resources, resource templates, prompts and completions as the kit's
//! offers. A call flows: gateway → bus → that worker's handler ([`relay`])
//! → the server's `tools/call`; the server's progress, log records and
//! requests (sampling, elicitation, roots) go back through the kit's call,
//! and a cancel goes up as `notifications/cancelled`. A resource read,
//! prompt or completion flows: gateway → `sophia.v1.mcp.bridge-<name>.*` →
//! the worker's offer handler ([`offers`]) → the server, its answer passed
//! on unchanged.
//!
//! # Layout
//! - [`config`]: the TOML file and the command line.
//! - [`upstream`]: starting a server and speaking MCP to it (rmcp client,
//!   process group, stderr tail).
//! - [`names`]: which tools go on the mesh under which names.
//! - [`offers`]: the server's resources, templates, prompts and
//!   completions: listed, offered, and each request relayed.
//! - [`convert`]: MCP tools and results into the mesh's shapes.
//! - [`relay`]: one call, relayed.
//! - `supervisor`: one server's life: serve, re-announce (tools or offers
//!   changed), relay resource updates, restart, stop.
//! - [`lease`]: `replicas = "single"`: one replica at a time serves a
//!   server, the holder of its lease on JetStream KV.
//! - [`status`]: what each server is doing, for `/health` and tests.
//!
//! See `docs/bridge.md`.
#![forbid(unsafe_code)]

pub mod config;
pub mod convert;
pub mod lease;
pub mod names;
pub mod offers;
pub mod relay;
pub mod status;
mod supervisor;
pub mod upstream;

use std::net::SocketAddr;
use std::sync::Arc;

use sophia_kit::{KitError, Worker, WorkerHandle};
use tokio_util::sync::CancellationToken;

pub use config::{BridgeConfig, Cli, ConfigError, Replicas, ServerConfig};
pub use names::Clash;
pub use status::{ServerStatus, State, Status};

use lease::Leases;
use names::Names;
use supervisor::Supervisor;

/// The default port of the bridge's `/health`, `/ready` and `/metrics`.
pub const DEFAULT_HTTP_PORT: u16 = 8093;

/// Why the bridge did not start.
#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    /// The configuration is unusable; the message names the key.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Two servers' tools would have the same name on the mesh.
    #[error("{0}")]
    Clash(#[from] Clash),
    /// The bridge's own worker (its `/health`) could not start.
    #[error(transparent)]
    Kit(#[from] KitError),
}

/// A running bridge.
pub struct BridgeHandle {
    /// Where the bridge's `/health` (listing servers that are down) is served.
    pub http_addr: SocketAddr,
    /// What each server is doing.
    pub status: Status,
    /// This replica's instance id (its `mcp-bridge` worker's), as leases
    /// name their holder.
    pub instance: String,
    task: tokio::task::JoinHandle<()>,
    runs: Vec<tokio::task::AbortHandle>,
    own: Arc<parking_lot::Mutex<Option<WorkerHandle>>>,
}

impl BridgeHandle {
    /// Every server's status, by name.
    pub fn servers(&self) -> Vec<ServerStatus> {
        self.status.servers()
    }

    /// Waits until every server and worker has stopped after shutdown.
    pub async fn stopped(self) {
        let _ = self.task.await;
    }

    /// Stops at once, without draining, giving back leases or saying
    /// goodbye, as a killed process would (its upstream processes are
    /// killed). For tests of a replica that dies.
    pub fn abort(&self) {
        for run in &self.runs {
            run.abort();
        }
        self.task.abort();
        if let Some(own) = self.own.lock().take() {
            own.abort();
            tokio::spawn(async move {
                let _ = own.client.drain().await;
            });
        }
    }
}

/// Starts every server (concurrently; one that fails is reported and
/// retried while the others serve), refuses tool names that clash, and
/// serves until `shutdown`; then drains every worker and stops every
/// server process.
pub async fn run(
    config: BridgeConfig,
    shutdown: CancellationToken,
) -> Result<BridgeHandle, BridgeError> {
    config.validate()?;
    let (status, names) = (Status::default(), Names::default());
    let supervisors: Vec<Supervisor> = config
        .servers
        .iter()
        .map(|s| Supervisor {
            server: Arc::new(s.clone()),
            worker: config.worker.clone(),
            status: status.clone(),
            names: names.clone(),
            shutdown: shutdown.clone(),
        })
        .collect();
    // A `replicas = "single"` server starts once this replica holds its lease.
    let started = futures::future::join_all(supervisors.iter().map(|s| async move {
        match s.server.replicas {
            Replicas::All => Some(s.start().await),
            Replicas::Single => None,
        }
    }))
    .await;
    let first_clash = started
        .iter()
        .filter_map(|r| r.as_ref()?.as_ref().ok())
        .find_map(|(_, sel)| sel.clashes.first().cloned());
    if let Some(clash) = first_clash {
        close_all(started).await;
        return Err(clash.into());
    }
    let health = status.clone();
    let own = Worker::new("mcp-bridge", env!("CARGO_PKG_VERSION"))
        .description("Sophia Mesh bridge to MCP servers")
        .degraded(move || health.degraded());
    let own_stop = CancellationToken::new();
    let own: WorkerHandle = own.run(config.worker.clone(), own_stop.clone()).await?;
    let (http_addr, instance) = (own.http_addr, own.instance.clone());
    let leases = Leases::new(own.client.clone(), instance.clone());
    let runs: Vec<_> = supervisors
        .into_iter()
        .zip(started)
        .map(|(s, first)| {
            let leases = (s.server.replicas == Replicas::Single).then(|| leases.clone());
            tokio::spawn(s.run(first, leases))
        })
        .collect();
    let aborts = runs.iter().map(|r| r.abort_handle()).collect();
    let own = Arc::new(parking_lot::Mutex::new(Some(own)));
    let ours = own.clone();
    let task = tokio::spawn(async move {
        shutdown.cancelled().await;
        futures::future::join_all(runs).await;
        own_stop.cancel();
        let own = ours.lock().take();
        if let Some(own) = own {
            own.stopped().await;
        }
    });
    Ok(BridgeHandle {
        http_addr,
        status,
        instance,
        task,
        runs: aborts,
        own,
    })
}

/// Closes started connections (stopping their processes) before giving up.
async fn close_all(started: Vec<Option<Result<supervisor::Started, upstream::StartError>>>) {
    let closing = started
        .into_iter()
        .flatten()
        .flatten()
        .map(|(conn, _)| async move {
            let (_, close, closed) = conn.split();
            close.cancel();
            let _ = closed.await;
        });
    futures::future::join_all(closing).await;
}
