//! A worker's configuration: flags and environment.

use super::*;

/// How a worker runs: where NATS is, where to serve HTTP, and its limits.
#[derive(Clone, Debug, clap::Args)]
pub struct WorkerConfig {
    /// How to reach NATS.
    #[command(flatten)]
    pub nats: NatsConfig,
    /// Where to serve `/health`, `/ready` and `/metrics`.
    #[arg(long = "http-addr", env = "SOPHIA_HTTP_ADDR")]
    pub http_addr: Option<SocketAddr>,
    /// Write the HTTP address actually bound to this file once listening
    /// (with port 0 in `--http-addr`, how a supervisor learns the port).
    #[arg(long = "addr-file", env = "SOPHIA_ADDR_FILE")]
    pub addr_file: Option<std::path::PathBuf>,
    /// The mesh's gateway, as callers reach it: requests for the API that
    /// land on this worker's HTTP port are pointed there.
    #[arg(
        long = "gateway-url",
        env = "SOPHIA_GATEWAY_URL",
        default_value = "http://127.0.0.1:8000"
    )]
    pub gateway_url: String,
    /// How often to announce the worker's tools, in milliseconds. Gateways
    /// forget a replica after three silent intervals.
    #[arg(long, env = "SOPHIA_HEARTBEAT_MS", default_value_t = 5_000)]
    pub heartbeat_ms: u64,
    /// How many calls one replica handles at once; more wait in NATS.
    #[arg(long, env = "SOPHIA_MAX_IN_FLIGHT", default_value_t = 256)]
    pub max_in_flight: usize,
    /// How long to wait for calls in flight when draining, in milliseconds.
    #[arg(long, env = "SOPHIA_DRAIN_TIMEOUT_MS", default_value_t = 30_000)]
    pub drain_timeout_ms: u64,
    /// How long a cancelled handler may take to stop by itself before it is
    /// dropped, in milliseconds.
    #[arg(long, env = "SOPHIA_CANCEL_GRACE_MS", default_value_t = 5_000)]
    pub cancel_grace_ms: u64,
    /// The largest payload (request or result) carried, in bytes.
    #[arg(long, env = "SOPHIA_MAX_PAYLOAD_BYTES", default_value_t = sophia_proto::payload::DEFAULT_MAX_BYTES)]
    pub max_payload_bytes: usize,
    /// The mesh's policy file (`docs/security.md`): this worker refuses any
    /// call whose caller's roles it does not allow, whoever put it on the
    /// bus. Without one, the worker trusts the gateway's checks.
    #[arg(long, env = "SOPHIA_POLICY")]
    pub policy: Option<std::path::PathBuf>,
}

impl WorkerConfig {
    /// Serves `/health`, `/ready` and `/metrics` on `0.0.0.0:port` unless
    /// `SOPHIA_HTTP_ADDR` (or `--http-addr`) says otherwise.
    pub fn default_http_port(&mut self, port: u16) {
        self.http_addr
            .get_or_insert(std::net::SocketAddr::from(([0, 0, 0, 0], port)));
    }
}

impl WorkerConfig {
    /// Defaults for a worker talking to NATS at `nats_url`, serving HTTP on an
    /// ephemeral loopback port (what tests want).
    pub fn new(nats_url: impl Into<String>) -> Self {
        Self {
            nats: NatsConfig::new(nats_url),
            http_addr: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            addr_file: None,
            gateway_url: "http://127.0.0.1:8000".into(),
            heartbeat_ms: 5_000,
            max_in_flight: 256,
            drain_timeout_ms: 30_000,
            cancel_grace_ms: 5_000,
            max_payload_bytes: sophia_proto::payload::DEFAULT_MAX_BYTES,
            policy: None,
        }
    }
}

/// Registers a worker's own metrics next to the kit's.
pub type MetricsHook = Arc<dyn Fn(&mut Registry) + Send + Sync>;

/// Says what a worker cannot do right now (see [`Worker::degraded`]).
pub type DegradedCheck = Arc<dyn Fn() -> Vec<String> + Send + Sync>;
