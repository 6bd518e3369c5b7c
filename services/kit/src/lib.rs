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
//! - `detach`: tools that run detached, as jobs followed by id (MCP tasks).
//! - `rounds`: questions for clients that answer in rounds (MCP
//!   2026-07-28's multi-round-trip requests).
//! - `serve`: serving one request, from its arrival to the reply; `served`:
//!   what a subject serves (a tool, or an MCP offer).
//! - [`bus`]: calling tools over the bus, for the gateway and for workers.
//! - [`offers`]: MCP resources, prompts and completions a worker offers.
//! - [`listing`]: withdrawing and offering again declared tools and prompts
//!   while a worker runs.
//! - [`nats`]: connecting to NATS (credentials, TLS, reconnect).
//! - [`kv`]: JSON records in JetStream KV buckets, shared by replicas.
//! - [`schema`]: JSON Schema checks of tool arguments.
//! - [`vetting`]: checks on other workers' announcements.
//! - [`process`]: the host and start time replicas announce.
//! - [`ops`], [`metrics`], [`telemetry`]: `/health`, `/ready`, `/metrics`,
//!   logs and traces.
#![forbid(unsafe_code)]

pub mod bus;
mod detach;
pub mod kv;
pub mod listing;
pub mod metrics;
pub mod nats;
pub mod offers;
pub mod ops;

/// The allocator every service binary uses (`#[global_allocator] static
/// ALLOCATOR: sophia_kit::Allocator = sophia_kit::Allocator;`): mimalloc. Under
/// load, glibc malloc was about a fifth of the gateway's CPU profile, and
/// mimalloc carried 1.7x the `tools/call`s (docs/performance.md).
pub type Allocator = mimalloc::MiMalloc;
pub mod policy;
pub mod process;
mod rounds;
pub mod schema;
mod serve;
mod served;
pub mod telemetry;
pub mod tool;
pub mod vetting;
pub mod worker;

pub use listing::Listing;
pub use sophia_proto::headers::Context as TraceContext;
pub use sophia_proto::{Category, Content, ErrorCode, Question, ToolOutput, WireError};
pub use tool::{Answer, Call, Tool, ToolResult};
pub use worker::{Worker, WorkerConfig, WorkerHandle};

use std::net::SocketAddr;

/// What a start-up step needed that failed, and so what to look at (in
/// async-nats's `Error<Kind>` style: a small `Copy` kind to match on).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartKind {
    /// A subscription, micro-service endpoint or reply subject on NATS.
    Subscribe,
    /// Publishing on NATS (announcements, resource updates).
    Publish,
    /// A JetStream bucket or stream.
    Store,
    /// A file the service reads (templates, configuration).
    File,
}

impl StartKind {
    /// What the person starting the service can do about it.
    pub fn advice(self) -> &'static str {
        match self {
            StartKind::Subscribe | StartKind::Publish => {
                "Check that NATS is reachable and that this service's NATS user may use \
                 these subjects (ops/nats/nats.conf; the server logs permission violations)"
            }
            StartKind::Store => {
                "Check that JetStream is enabled on the NATS server (-js) and that this \
                 service's NATS user may use its $JS.API subjects (ops/nats/nats.conf)"
            }
            StartKind::File => "Fix the file, or unset the setting that points to it",
        }
    }
}

impl KitError {
    /// A failed start-up step.
    pub fn start(kind: StartKind, what: &'static str, cause: impl std::fmt::Display) -> Self {
        KitError::Start {
            kind,
            what,
            message: cause.to_string(),
        }
    }
}

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
    /// Something the service sets up at start failed: `kind` says what to
    /// look at.
    #[error("could not {what}: {message}. {}", kind.advice())]
    Start {
        /// What kind of thing failed, for the caller to match.
        kind: StartKind,
        /// What the service was doing, e.g. "subscribe to cancels".
        what: &'static str,
        /// The cause.
        message: String,
    },
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
