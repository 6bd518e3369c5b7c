//! `sophia-gateway`: one MCP server in front of every worker on the mesh.
//!
//! # Layout
//! - [`config`]: flags and environment.
//! - [`registry`]: the live tool list, from worker announcements.
//! - [`mcp`]: the rmcp `ServerHandler`: `tools/list`, `tools/call`,
//!   progress, `list_changed`.
//! - [`http`]: Streamable HTTP at `/mcp` with auth, Host/Origin checks and a
//!   body limit; [`fast`]: plain `tools/call`s answered without rmcp's
//!   session worker ([`live`]: the sessions it answers for); [`rest`]: the
//!   seed's REST shortcuts, as tool calls.
//! - [`console`]: the mesh console at `/console` (Mesh, Traffic, Work,
//!   approvals), for people.
//! - [`identity`]: who is calling: API keys, the single token, OAuth JWTs.
//! - [`sessions`], [`results`], [`events`]: MCP sessions, large results and
//!   SSE events on JetStream, shared by the gateway replicas.
//!   Announcements are vetted first ([`sophia_kit::vetting`]).
//!
//! # How a call flows
//! Cursor sends `tools/call` → rmcp decodes it ([`http`] or stdio) →
//! [`mcp::McpGateway::call_tool`] finds the tool in the [`registry::Registry`]
//! and validates the arguments → [`sophia_kit::bus::Bus::call`] sends a MessagePack
//! request to `sophia.v1.tools.<category>.<tool>` → a worker replies →
//! the reply becomes a `CallToolResult`. See `docs/architecture.md`.
#![forbid(unsafe_code)]

pub mod access;
pub mod config;
pub mod console;
pub mod events;
pub mod fast;
pub mod faults;
pub mod http;
pub mod identity;
pub mod live;
pub mod mcp;
pub mod paging;
pub mod registry;
pub mod rest;
pub mod results;
pub mod sessions;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub use config::GatewayConfig;
use rmcp::ServiceExt;
use sophia_kit::{KitError, StartKind, nats, ops};
use tokio_util::sync::CancellationToken;

/// Why the gateway could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// Configuration or start-up plumbing failed.
    #[error(transparent)]
    Kit(#[from] KitError),
    /// HTTP was asked for with no way to authenticate.
    #[error(
        "SOPHIA_GATEWAY_TOKEN is not set: HTTP clients must authenticate. \
         Set it (e.g. `export SOPHIA_GATEWAY_TOKEN=$(openssl rand -hex 32)`), \
         or SOPHIA_GATEWAY_KEYS or SOPHIA_OAUTH_ISSUER (docs/security.md), or use --stdio"
    )]
    MissingToken,
    /// The identity configuration (keys file, OAuth settings) is wrong.
    #[error(transparent)]
    Identity(#[from] identity::IdentityError),
    /// Subscribing to the bus failed.
    #[error("could not subscribe on NATS: {0}")]
    Subscribe(#[from] async_nats::SubscribeError),
    /// The stdio session failed.
    #[error("MCP over stdio failed: {0}")]
    Stdio(String),
}

/// A running HTTP gateway.
#[derive(Debug)]
pub struct GatewayHandle {
    /// Where HTTP is served; MCP is at `http://{addr}/mcp`.
    pub http_addr: SocketAddr,
    /// This gateway's instance id on the bus.
    pub instance: String,
    task: tokio::task::JoinHandle<()>,
}

impl GatewayHandle {
    /// The MCP endpoint URL.
    pub fn mcp_url(&self) -> String {
        format!("http://{}/mcp", self.http_addr)
    }

    /// Waits until the gateway has stopped after its shutdown token fired.
    pub async fn stopped(self) {
        let _ = self.task.await;
    }
}

struct Core {
    conn: nats::Connection,
    registry: registry::Registry,
    faults: faults::Faults,
    gateway: mcp::McpGateway,
    prometheus: prometheus_client::registry::Registry,
    instance: String,
}

async fn start_core(
    config: &GatewayConfig,
    stop: &CancellationToken,
) -> Result<Core, GatewayError> {
    // A policy file that cannot be used stops start-up before anything else.
    let policy = sophia_kit::policy::Policy::from_config(config.policy.as_deref())?;
    let conn = nats::connect(&config.nats, "sophia-gateway").await?;
    let audit = access::Audit::open(&conn, Duration::from_secs(config.audit_retention_s))
        .await
        .map_err(|e| {
            KitError::start(
                StartKind::Store,
                "open the audit stream sophia_audit (JetStream)",
                e,
            )
        })?;
    let limits = access::PrincipalLimits::new(
        config.principal_concurrency,
        config.principal_rate_per_min,
        config.principal_burst,
    );
    spawn_tidy(limits.clone(), stop.child_token());
    let local = mcp::Identity {
        principal: config.principal.clone(),
        roles: config.identity.roles(),
    };
    let access = access::Access::new(policy, limits, audit, local);
    let instance = uuid::Uuid::new_v4().simple().to_string();
    let mut prometheus = prometheus_client::registry::Registry::default();
    sophia_kit::metrics::register_connection(&mut prometheus, &conn);
    let metrics = sophia_kit::metrics::ToolCallMetrics::register(&mut prometheus, "sophia_gateway");
    let faults = faults::Faults::register(&mut prometheus);
    let registry = registry::Registry::new();
    registry
        .follow(&conn, instance.clone(), stop.child_token())
        .await?;
    prometheus.register_collector(Box::new(MeshGauges(registry.clone())));
    let bus = sophia_kit::bus::Bus::start(
        conn.client.clone(),
        instance.clone(),
        config.max_payload_bytes,
    )
    .await?;
    let _ = tokio::time::timeout(Duration::from_secs(2), conn.client.flush()).await;
    let gateway = mcp::McpGateway::new(
        registry.clone(),
        bus,
        conn.clone(),
        mcp::CallLimits {
            default_timeout: Duration::from_millis(config.call_timeout_ms),
            max_timeout: Duration::from_millis(config.max_call_timeout_ms),
        },
        metrics,
        faults.clone(),
        access,
    );
    Ok(Core {
        conn,
        registry,
        faults,
        gateway,
        prometheus,
        instance,
    })
}

/// Forgets idle principals' rate state every minute (bounded memory).
fn spawn_tidy(limits: access::PrincipalLimits, stop: CancellationToken) {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(60));
        loop {
            tokio::select! {
                _ = every.tick() => limits.tidy(),
                _ = stop.cancelled() => break,
            }
        }
    });
}

/// `sophia_gateway_live_replicas{service}` and
/// `sophia_gateway_live_tools{category}`, read from the registry at each
/// scrape: what the mesh looks like from this gateway.
struct MeshGauges(registry::Registry);

impl std::fmt::Debug for MeshGauges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MeshGauges")
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct ServiceLabels {
    service: String,
}

impl prometheus_client::collector::Collector for MeshGauges {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        use prometheus_client::metrics::family::Family;
        use prometheus_client::metrics::gauge::Gauge;
        use sophia_kit::metrics::CategoryLabels;
        let replicas = Family::<ServiceLabels, Gauge>::default();
        for (service, n) in self.0.replicas() {
            replicas
                .get_or_create(&ServiceLabels { service })
                .set(n as i64);
        }
        let tools = Family::<CategoryLabels, Gauge>::default();
        for t in self.0.view().tools.values() {
            tools
                .get_or_create(&CategoryLabels {
                    category: t.spec.category.to_string(),
                })
                .inc();
        }
        replicas.encode(encoder.encode_descriptor(
            "sophia_gateway_live_replicas",
            "Worker replicas announcing tools on the bus, per service",
            None,
            replicas.metric_type(),
        )?)?;
        tools.encode(encoder.encode_descriptor(
            "sophia_gateway_live_tools",
            "Tools on offer from live workers, per category",
            None,
            tools.metric_type(),
        )?)
    }
}

/// The gateway's `/health` detail: the bus link, and per category the live
/// tools and the replicas of each worker service offering them, so an SRE
/// sees at a glance which categories have live workers; and the recent
/// replica faults ([`faults`]).
fn mesh_health(
    registry: registry::Registry,
    conn: sophia_kit::nats::Connection,
    faults: faults::Faults,
) -> ops::HealthDetail {
    Arc::new(move || {
        let view = registry.view();
        let mut categories = serde_json::Map::new();
        let mut degraded = Vec::new();
        if let Some(down) = conn.down_message() {
            degraded.push(serde_json::json!({"what": "bus", "problem": down}));
        }
        for category in sophia_proto::Category::ALL {
            let tools = view
                .tools
                .values()
                .filter(|t| t.spec.category == category)
                .count();
            if tools > 0 {
                categories.insert(category.to_string(), serde_json::json!({ "tools": tools }));
            } else if sophia_proto::Category::AGENTS.contains(&category) {
                degraded.push(serde_json::json!({
                    "what": format!("category {category}"),
                    "problem": format!(
                        "no worker serves category {category}: its agents have no tools; \
                         start a worker that offers them (docs/agents.md)"
                    ),
                }));
            }
        }
        for (service, problems) in registry.degraded() {
            for problem in problems {
                degraded.push(serde_json::json!({"what": service, "problem": problem}));
            }
        }
        serde_json::json!({
            "status": if degraded.is_empty() { "ok" } else { "degraded" },
            "bus": if conn.is_up() { "connected" } else { "disconnected" },
            "categories": categories,
            "replicas": registry.replicas(),
            "degraded": degraded,
            "refused": registry.refused(),
            "faults": faults.health(),
        })
    })
}

/// What the HTTP gateway keeps on JetStream, shared by its replicas.
struct Stores {
    sessions: sessions::KvSessions,
    results: results::LargeResults,
    events: Option<Arc<dyn rmcp::transport::streamable_http_server::session::EventStore>>,
    /// The key sealing stateless clients' `requestState`, shared by replicas.
    states: mcp::RequestStates,
}

impl Stores {
    async fn open(conn: &nats::Connection, config: &GatewayConfig) -> Result<Self, GatewayError> {
        let sessions = sessions::KvSessions::open(
            conn.client.clone(),
            Duration::from_secs(config.session_ttl_s),
        )
        .await
        .map_err(|e| {
            KitError::start(StartKind::Store, "open the session store (JetStream KV)", e)
        })?;
        let results = results::LargeResults::open(
            conn.client.clone(),
            Duration::from_secs(config.result_ttl_s),
            config.inline_result_bytes,
        )
        .await
        .map_err(|e| {
            KitError::start(StartKind::Store, "open the result store (JetStream KV)", e)
        })?;
        let events: Option<Arc<dyn rmcp::transport::streamable_http_server::session::EventStore>> =
            if config.sse_replay_s > 0 {
                let store =
                    events::JsEvents::open(conn.clone(), Duration::from_secs(config.sse_replay_s))
                        .await
                        .map_err(|e| {
                            KitError::start(
                                StartKind::Store,
                                "open the SSE event stream (JetStream)",
                                e,
                            )
                        })?;
                Some(Arc::new(store))
            } else {
                None
            };
        let states = mcp::RequestStates::shared(&conn.client)
            .await
            .map_err(|e| KitError::start(StartKind::Store, "read the requestState key", e))?;
        Ok(Self {
            sessions,
            results,
            events,
            states,
        })
    }
}

/// Serves MCP over Streamable HTTP until `shutdown` fires. Returns once the
/// listener is bound.
pub async fn run(
    config: GatewayConfig,
    shutdown: CancellationToken,
) -> Result<GatewayHandle, GatewayError> {
    let auth = identity::Authenticator::from_config(&config)?.ok_or(GatewayError::MissingToken)?;
    let core = start_core(&config, &shutdown).await?;
    let ready_conn = core.conn.clone();
    let ready: ops::ReadyCheck = Arc::new(move || {
        if ready_conn.is_up() {
            Ok(())
        } else {
            Err("not connected to NATS".into())
        }
    });
    core.conn.connected().await; // sessions live on JetStream
    let stores = Stores::open(&core.conn, &config).await?;
    let auth = Arc::new(auth);
    let console = console::Console::new(
        core.gateway.clone(),
        auth.clone(),
        &config,
        core.instance.clone(),
        shutdown.child_token(),
    );
    let app = http::mcp_router(
        core.gateway
            .with_large_results(stores.results)
            .with_request_states(stores.states),
        &config,
        auth,
        Arc::new(stores.sessions),
        stores.events,
        shutdown.child_token(),
    )
    .merge(console::router(console))
    .merge(ops::router_with(
        Arc::new(core.prometheus),
        ready,
        Some(mesh_health(
            core.registry.clone(),
            core.conn.clone(),
            core.faults.clone(),
        )),
    ));
    let stop = shutdown.clone();
    let (http_addr, server) = ops::serve(
        config.http_addr,
        app,
        config.addr_file.as_deref(),
        stop.cancelled_owned(),
    )
    .await?;
    tracing::info!(addr = %http_addr, tools = core.registry.view().tools.len(), "MCP gateway listening on /mcp");
    let client = core.conn.client.clone();
    let task = tokio::spawn(async move {
        let _ = server.await;
        let _ = tokio::time::timeout(Duration::from_secs(2), client.flush()).await;
    });
    Ok(GatewayHandle {
        http_addr,
        instance: core.instance,
        task,
    })
}

/// Serves one MCP session over stdin/stdout until the client closes it or
/// `shutdown` fires. Nothing but protocol is written to stdout.
pub async fn run_stdio(
    config: GatewayConfig,
    shutdown: CancellationToken,
) -> Result<(), GatewayError> {
    let core = start_core(&config, &shutdown).await?;
    let gateway = match &config.profile {
        None => core.gateway.clone(),
        Some(name) => {
            let profile = core
                .gateway
                .access()
                .profile(name)
                .ok_or_else(|| KitError::Config {
                    key: "SOPHIA_PROFILE",
                    message: format!(
                        "no profile {name:?}; the profiles are {}",
                        core.gateway
                            .access()
                            .profiles()
                            .iter()
                            .map(|p| p.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                })?;
            core.gateway.clone().with_profile(profile)
        }
    };
    // The first tools/list waits until workers' answers to the discovery
    // request have stopped arriving (see `McpGateway::list_tools`); later
    // changes arrive as list_changed.
    let service = gateway
        .serve_with_ct(rmcp::transport::stdio(), shutdown.child_token())
        .await
        .map_err(|e| GatewayError::Stdio(e.to_string()))?;
    service
        .waiting()
        .await
        .map_err(|e| GatewayError::Stdio(e.to_string()))?;
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(2), core.conn.client.flush()).await;
    Ok(())
}
