//! The gateway's configuration, from flags and environment.

use std::net::SocketAddr;

use sophia_kit::nats::NatsConfig;

/// Default HTTP address: loopback only, the seed's port 8000.
pub const DEFAULT_HTTP_ADDR: &str = "127.0.0.1:8000";

/// How the gateway runs.
#[derive(Clone, Debug, clap::Parser)]
#[command(
    name = "sophia-gateway",
    version,
    about = "MCP gateway to the Sophia Mesh over NATS"
)]
pub struct GatewayConfig {
    /// How to reach NATS.
    #[command(flatten)]
    pub nats: NatsConfig,
    /// Serve MCP over stdin/stdout (for Cursor `command` entries) instead of HTTP.
    #[arg(long)]
    pub stdio: bool,
    /// Where to serve MCP over Streamable HTTP (`/mcp`), `/health`, `/ready` and `/metrics`.
    #[arg(long = "http-addr", env = "SOPHIA_GATEWAY_ADDR", default_value = DEFAULT_HTTP_ADDR)]
    pub http_addr: SocketAddr,
    /// Write the HTTP address actually bound to this file once listening
    /// (with port 0 in `--http-addr`, how a supervisor learns the port).
    #[arg(long = "addr-file", env = "SOPHIA_ADDR_FILE")]
    pub addr_file: Option<std::path::PathBuf>,
    /// A bearer token HTTP clients may send (`Authorization: Bearer ...`),
    /// standing for `--principal` with `SOPHIA_GATEWAY_ROLES`. HTTP needs it,
    /// a keys file or an OAuth issuer; generate one with `openssl rand -hex 32`.
    #[arg(long, env = "SOPHIA_GATEWAY_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// The principal that token stands for, passed to workers as the caller
    /// (and the caller over stdio).
    #[arg(long, env = "SOPHIA_GATEWAY_PRINCIPAL", default_value = "local")]
    pub principal: String,
    /// Browser origins allowed to call `/mcp` (scheme://host:port, `:*` for any
    /// port). Requests with any other `Origin` get 403 (DNS-rebinding defence);
    /// requests without `Origin` (Cursor, CLIs) are not affected.
    #[arg(
        long,
        env = "SOPHIA_ALLOWED_ORIGINS",
        value_delimiter = ',',
        default_value = "http://localhost:*,http://127.0.0.1:*,http://[::1]:*"
    )]
    pub allowed_origins: Vec<String>,
    /// `Host` header values accepted on `/mcp`. Add the gateway's public name
    /// when it serves beyond this machine.
    #[arg(
        long,
        env = "SOPHIA_ALLOWED_HOSTS",
        value_delimiter = ',',
        default_value = "localhost,127.0.0.1,::1"
    )]
    pub allowed_hosts: Vec<String>,
    /// A link to a trace in your tracing UI, with `{trace_id}` where the
    /// trace id goes (e.g. Jaeger's `http://localhost:16686/trace/{trace_id}`):
    /// the console links each error to its trace.
    #[arg(long = "trace-url-template", env = "SOPHIA_TRACE_URL_TEMPLATE")]
    pub trace_url_template: Option<String>,
    /// The largest HTTP request body accepted, in bytes.
    #[arg(long, env = "SOPHIA_MAX_BODY_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub max_body_bytes: usize,
    /// The most requests one session may have in flight at once; past it,
    /// a request is refused at once (429) instead of queued, so a flood on
    /// one session cannot grow the gateway's memory without bound. Above
    /// the per-principal call limit, so a client's parallel calls (Cursor's
    /// agent mode) never meet it.
    #[arg(long, env = "SOPHIA_SESSION_IN_FLIGHT", default_value_t = 256)]
    pub session_in_flight: usize,
    /// How long a tool call may take when the tool does not say, in milliseconds.
    #[arg(long, env = "SOPHIA_CALL_TIMEOUT_MS", default_value_t = 60_000)]
    pub call_timeout_ms: u64,
    /// The longest any tool call may take, whatever the tool says, in milliseconds.
    #[arg(long, env = "SOPHIA_MAX_CALL_TIMEOUT_MS", default_value_t = 15 * 60_000)]
    pub max_call_timeout_ms: u64,
    /// The largest tool result or argument payload carried over the bus, in bytes.
    #[arg(long, env = "SOPHIA_MAX_PAYLOAD_BYTES", default_value_t = sophia_proto::payload::DEFAULT_MAX_BYTES)]
    pub max_payload_bytes: usize,
    /// How long an MCP session may last, in seconds. Sessions are kept on
    /// JetStream KV, so they survive a gateway restart and move between
    /// gateway replicas.
    #[arg(long, env = "SOPHIA_SESSION_TTL_S", default_value_t = 86_400)]
    pub session_ttl_s: u64,
    /// How long the parts of a large result stay readable, in seconds. HTTP
    /// clients get results over 768 KiB as resource links to parts
    /// (`docs/mcp.md`, "Large results").
    #[arg(long, env = "SOPHIA_RESULT_TTL_S", default_value_t = 900)]
    pub result_ttl_s: u64,
    /// The largest result (as JSON) sent whole to an HTTP client, in bytes;
    /// larger ones go in parts. The default stays under the 1 MiB SSE event
    /// the official Python SDK accepts.
    #[arg(long, env = "SOPHIA_INLINE_RESULT_BYTES", default_value_t = crate::results::INLINE_LIMIT)]
    pub inline_result_bytes: usize,
    /// How long SSE events are kept on JetStream so that a client whose
    /// stream broke resumes it (`Last-Event-ID`) at any gateway replica, in
    /// seconds; 0 keeps them only in this replica's memory.
    #[arg(long, env = "SOPHIA_SSE_REPLAY_S", default_value_t = 300)]
    pub sse_replay_s: u64,
    /// Whether a session's plain `tools/call`s (no progress asked for) are
    /// answered as one JSON response without rmcp's session worker
    /// (`docs/performance.md`, issue 16); `false` sends every request
    /// through rmcp's session, each answered on its own SSE stream.
    #[arg(long, env = "SOPHIA_FAST_CALLS", default_value_t = true, action = clap::ArgAction::Set)]
    pub fast_calls: bool,
    /// The mesh's policy file: roles mapped to what they may call, and the
    /// profiles served at `/mcp/<profile>` (`docs/security.md`). Without
    /// one, every authenticated caller may call every tool.
    #[arg(long, env = "SOPHIA_POLICY")]
    pub policy: Option<std::path::PathBuf>,
    /// Over stdio, the profile to serve (`ask`, `agent`, `background`, or
    /// one the policy defines); the whole mesh by default.
    #[arg(long, env = "SOPHIA_PROFILE")]
    pub profile: Option<String>,
    /// The most calls one principal may have in flight at once (0: no
    /// limit); more get `busy`.
    #[arg(long, env = "SOPHIA_PRINCIPAL_CONCURRENCY", default_value_t = 64)]
    pub principal_concurrency: usize,
    /// The calls a minute one principal may start, on average (0: no
    /// limit); faster ones get `busy` with the time to retry.
    #[arg(long, env = "SOPHIA_PRINCIPAL_RATE_PER_MIN", default_value_t = 0)]
    pub principal_rate_per_min: u32,
    /// The burst a principal may make above its rate (default: the rate).
    #[arg(long, env = "SOPHIA_PRINCIPAL_BURST", default_value_t = 0)]
    pub principal_burst: u32,
    /// How long audit records are kept in the JetStream stream
    /// `sophia_audit`, in seconds; 0 turns auditing off.
    #[arg(long, env = "SOPHIA_AUDIT_RETENTION_S", default_value_t = 90 * 86_400)]
    pub audit_retention_s: u64,
    /// API keys and OAuth (`docs/security.md`, "Identities").
    #[command(flatten)]
    pub identity: crate::identity::IdentityConfig,
    /// A command other than serving, e.g. `keys new`.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// What `sophia-gateway` does instead of serving.
#[derive(Clone, Debug, clap::Subcommand)]
pub enum Command {
    /// API keys for the keys file (`SOPHIA_GATEWAY_KEYS`).
    #[command(subcommand)]
    Keys(KeysCommand),
}

/// `sophia-gateway keys ...`.
#[derive(Clone, Debug, clap::Subcommand)]
pub enum KeysCommand {
    /// Make a key: prints it once, and the entry to append to the keys file.
    New(crate::identity::keys::NewKeyArgs),
}

impl GatewayConfig {
    /// A configuration for tests: NATS at `nats_url`, HTTP on an ephemeral
    /// loopback port, the given token.
    pub fn new(nats_url: impl Into<String>, token: impl Into<String>) -> Self {
        use clap::Parser;
        let mut c = GatewayConfig::parse_from(["sophia-gateway"]);
        c.nats = NatsConfig::new(nats_url);
        c.http_addr = SocketAddr::from(([127, 0, 0, 1], 0));
        c.token = Some(token.into());
        c
    }
}
