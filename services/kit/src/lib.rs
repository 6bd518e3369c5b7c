//! The Sophia Mesh worker kit: everything a worker needs besides its tools.
//!
//! A worker declares [`Tool`]s with a JSON input schema, a category and
//! hints, and hands them to a [`Worker`]. [`Worker::run`] then:
//! 1. connects to NATS ([`nats`]) with credentials, TLS and reconnect backoff;
//! 2. registers a NATS micro service (so `$SRV.PING/INFO/STATS` answer and
//!    `nats micro ls` lists it) with one endpoint per tool on
//!    `sophia.v1.tools.<category>.<tool>`, in the queue group `sophia`;
//! 3. announces its tools to gateways and keeps announcing ([`worker`]);
//! 4. runs each call's handler with progress and cancellation ([`Call`]);
//! 5. serves `/health`, `/ready` and `/metrics` ([`ops`], [`metrics`]);
//! 6. on SIGTERM, leaves the mesh and drains calls in flight.
//!
//! Whoever follows announcements (gateways, the agent runtime) vets them
//! first with [`vetting`].
//!
//! See `examples/echo-worker` for a complete worker in about 30 lines.
//!
//! # Layout
//! - [`tool`]: declaring tools and writing their handlers ([`Tool`], [`Call`]).
//! - [`worker`]: running a worker: registration, announcements, draining.
//! - `serve`: serving one request, from its arrival to the reply.
//! - [`bus`]: calling tools over the bus, for the gateway and for workers.
//! - [`offers`]: MCP resources, prompts and completions a worker offers.
//! - [`nats`]: connecting to NATS (credentials, TLS, reconnect).
//! - [`kv`]: JSON records in JetStream KV buckets, shared by replicas.
//! - [`schema`]: JSON Schema checks of tool arguments.
//! - [`vetting`]: checks on other workers' announcements.
//! - [`ops`], [`metrics`], [`telemetry`]: `/health`, `/ready`, `/metrics`,
//!   logs and traces.
#![forbid(unsafe_code)]

pub mod bus;
pub mod kv;
pub mod metrics;
pub mod nats;
pub mod offers;
pub mod ops;
pub mod schema;
mod serve;
pub mod telemetry;
pub mod tool;
pub mod vetting;
pub mod worker;

pub use sophia_proto::headers::Context as TraceContext;
pub use sophia_proto::{Category, Content, ErrorCode, ToolOutput, WireError};
pub use tool::{Answer, Call, Tool, ToolResult};
pub use worker::{Worker, WorkerConfig, WorkerHandle};

use std::net::SocketAddr;

/// Why a service could not start.
#[derive(Debug, thiserror::Error)]
pub enum KitError {
    /// A configuration value is unusable; the message names the key.
    #[error("bad configuration {key}: {message}")]
    Config {
        /// The environment variable (or flag) at fault.
        key: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// A declared tool is invalid.
    #[error("tool {tool:?} is invalid: {why}")]
    InvalidTool {
        /// The tool.
        tool: String,
        /// Why.
        why: String,
    },
    /// Registering with NATS failed.
    #[error("could not register with NATS: {0}")]
    Register(String),
    /// The bound address could not be written where `SOPHIA_ADDR_FILE` says.
    #[error("could not write the bound address to {path} (SOPHIA_ADDR_FILE): {source}")]
    AddrFile {
        /// The file.
        path: std::path::PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// An HTTP address could not be bound.
    #[error("could not listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// The whole `main` of a worker binary: parses `--help`-documented flags and
/// `SOPHIA_*`/`NATS_*` environment into a [`WorkerConfig`] (bad values exit
/// with a message naming the flag), then [`run_until_signal`].
pub async fn main(worker: Worker, default_port: u16) -> Result<(), KitError> {
    use clap::{Args, FromArgMatches};
    let command = clap::Command::new(worker.name().to_owned())
        .version(worker.version().to_owned())
        .about(worker.summary().to_owned());
    let matches = WorkerConfig::augment_args(command).get_matches();
    let config = WorkerConfig::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    run_until_signal(worker, config, default_port).await
}

/// Runs `worker` until SIGTERM or Ctrl-C, then drains: the `main` of a
/// worker binary. `default_port` is the HTTP port used when
/// `SOPHIA_HTTP_ADDR` is not set.
pub async fn run_until_signal(
    worker: Worker,
    mut config: WorkerConfig,
    default_port: u16,
) -> Result<(), KitError> {
    config.default_http_port(default_port);
    let name = worker.name().to_owned();
    serve_until_signal(&name, |shutdown| worker.run(config, shutdown)).await
}

/// The `main` of a worker service: sets up logs and traces for `name`
/// ([`telemetry::init`]), starts the service with `start` (given the token
/// that stops it), runs until SIGTERM or Ctrl-C, drains, and flushes the
/// last spans.
pub async fn serve_until_signal<F, Fut>(name: &str, start: F) -> Result<(), KitError>
where
    F: FnOnce(tokio_util::sync::CancellationToken) -> Fut,
    Fut: std::future::Future<Output = Result<WorkerHandle, KitError>>,
{
    let traces = telemetry::init(name);
    let shutdown = tokio_util::sync::CancellationToken::new();
    // Listen for the signal first: it stops start-up too (waiting for NATS).
    tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            telemetry::shutdown_signal().await;
            shutdown.cancel();
        }
    });
    let handle = tokio::select! {
        handle = start(shutdown.clone()) => handle?,
        _ = shutdown.cancelled() => {
            tracing::info!("{name} stopped before it had started");
            traces.shutdown();
            return Ok(());
        }
    };
    tracing::info!(instance = %handle.instance, http = %handle.http_addr, "{name} started");
    shutdown.cancelled().await;
    handle.stopped().await;
    traces.shutdown();
    Ok(())
}
