//! Running a worker: registration as a NATS micro service, serving tools on
//! a queue group, announcing them to gateways, cancellation, and drain. One
//! request's journey is in [`crate::serve`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::service::ServiceExt;
use futures::StreamExt;
use prometheus_client::registry::Registry;
use sophia_proto::payload::PayloadStore;
use sophia_proto::{Announce, Cancel, Category, Discover, Leave, PROTOCOL_VERSION, subject};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::metrics::ToolCallMetrics;
use crate::nats::{self, Connection, NatsConfig};
use crate::serve::{Shared, ToolsBySubject, dispatch};
use crate::tool::Tool;
use crate::{KitError, ops};
use async_nats::service::endpoint::Endpoint;

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
        }
    }
}

/// Registers a worker's own metrics next to the kit's.
pub type MetricsHook = Arc<dyn Fn(&mut Registry) + Send + Sync>;

/// Says what a worker cannot do right now (see [`Worker::degraded`]).
pub type DegradedCheck = Arc<dyn Fn() -> Vec<String> + Send + Sync>;

/// A worker: a name, a version and its tools. Build it, then [`Worker::run`].
#[derive(Clone)]
pub struct Worker {
    name: String,
    version: String,
    description: String,
    tools: Vec<Tool>,
    metrics: Vec<MetricsHook>,
    offers: crate::offers::WorkerOffers,
    degraded: Option<DegradedCheck>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("tools", &self.tools)
            .finish_non_exhaustive()
    }
}

impl Worker {
    /// A worker called `name` (`[A-Za-z0-9_-]`) at semver `version`.
    pub fn new(name: impl Into<String>, version: impl Into<String>) -> Self {
        let name = name.into();
        Self {
            description: format!("Sophia Mesh worker {name}"),
            name,
            version: version.into(),
            tools: Vec::new(),
            metrics: Vec::new(),
            offers: Default::default(),
            degraded: None,
        }
    }

    /// Reports what this worker cannot do right now, each entry saying what
    /// to do about it ("no Pulumi CLI: install it, ..."). Asked at every
    /// heartbeat: it goes out with the announcement (gateways show it on
    /// `/health`) and on this worker's own `/health`.
    pub fn degraded(mut self, check: impl Fn() -> Vec<String> + Send + Sync + 'static) -> Self {
        self.degraded = Some(Arc::new(check));
        self
    }

    /// Offers an MCP resource: `resource` is its MCP description (`uri`,
    /// `name`, optional `title`, `description`, `mimeType`), `read` makes
    /// its contents. See [`crate::offers`].
    pub fn resource<F, Fut>(mut self, resource: serde_json::Value, read: F) -> Self
    where
        F: Fn(String) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<crate::offers::Contents, crate::WireError>>
            + Send
            + 'static,
    {
        self.offers.add_resource(resource, read);
        self
    }

    /// Offers an MCP resource template (`uriTemplate` with `{name}`
    /// variables, `name`, ...); `read` gets the URI and its variables.
    pub fn resource_template<F, Fut>(mut self, template: serde_json::Value, read: F) -> Self
    where
        F: Fn(String, HashMap<String, String>) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<crate::offers::Contents, crate::WireError>>
            + Send
            + 'static,
    {
        self.offers.add_template(template, read);
        self
    }

    /// Offers an MCP prompt (`name`, `description`, `arguments`); `get`
    /// gets the arguments and returns MCP's `GetPromptResult` JSON
    /// (`{"messages": [...]}`). Required arguments are checked first.
    pub fn prompt<F, Fut>(mut self, prompt: serde_json::Value, get: F) -> Self
    where
        F: Fn(serde_json::Value) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<serde_json::Value, crate::WireError>>
            + Send
            + 'static,
    {
        self.offers.add_prompt(prompt, get);
        self
    }

    /// Answers `completion/complete` for this worker's prompts and
    /// templates: `complete` gets MCP's params (`ref`, `argument`,
    /// `context`) and returns the suggestions, best first.
    pub fn completions<F, Fut>(mut self, complete: F) -> Self
    where
        F: Fn(serde_json::Value) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<Vec<String>, crate::WireError>> + Send + 'static,
    {
        self.offers.set_completions(complete);
        self
    }

    /// Adds the worker's own metrics to `/metrics`: `register` is called with
    /// the worker's registry at start.
    pub fn metrics(mut self, register: impl Fn(&mut Registry) + Send + Sync + 'static) -> Self {
        self.metrics.push(Arc::new(register));
        self
    }

    /// A description for `$SRV.INFO`.
    pub fn description(mut self, description: impl Into<String>) -> Self {
        self.description = description.into();
        self
    }

    /// Adds a tool.
    pub fn tool(mut self, tool: Tool) -> Self {
        self.tools.push(tool);
        self
    }

    /// The worker's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The worker's version.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The worker's description.
    pub fn summary(&self) -> &str {
        &self.description
    }

    /// Checks every tool and compiles its input schema, in tool order.
    fn validate(&self) -> Result<Vec<Arc<jsonschema::Validator>>, KitError> {
        let mut seen = std::collections::HashSet::new();
        let mut validators = Vec::new();
        for t in &self.tools {
            let spec = t.spec();
            let bad = |why: String| KitError::InvalidTool {
                tool: spec.name.clone(),
                why,
            };
            if t.is_announced() {
                subject::validate_tool_name(&spec.name).map_err(|e| bad(e.to_string()))?;
            } else if spec.name.is_empty()
                || !spec
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            {
                return Err(bad(
                    "names may only contain A-Z, a-z, 0-9, '_' and '-'".into()
                ));
            }
            if !seen.insert(spec.name.clone()) || !seen.insert(t.subject()) {
                return Err(bad("declared twice".into()));
            }
            if spec.input_schema.get("type").and_then(|v| v.as_str()) != Some("object") {
                return Err(bad(
                    "input schema must be a JSON Schema with \"type\": \"object\"".into(),
                ));
            }
            let validator = jsonschema::validator_for(&spec.input_schema)
                .map_err(|e| bad(format!("input schema is not valid JSON Schema: {e}")))?;
            validators.push(Arc::new(validator));
        }
        Ok(validators)
    }

    /// One micro-service endpoint per tool on its subject, and the tools by
    /// subject for serving.
    async fn register_endpoints(
        &self,
        service: &async_nats::service::Service,
        validators: Vec<Arc<jsonschema::Validator>>,
    ) -> Result<(Vec<Endpoint>, ToolsBySubject), KitError> {
        let mut endpoints = Vec::new();
        let mut by_subject = HashMap::new();
        for (tool, validator) in self.tools.iter().zip(validators) {
            let spec = tool.spec();
            let subj = tool.subject();
            let category = HashMap::from([("category".to_owned(), spec.category.to_string())]);
            let endpoint = service
                .endpoint_builder()
                .name(&spec.name)
                .metadata(category)
                .add(subj.clone())
                .await
                .map_err(|e| KitError::Register(e.to_string()))?;
            endpoints.push(endpoint);
            by_subject.insert(subj, (tool.clone(), validator));
        }
        Ok((endpoints, by_subject))
    }

    /// Connects, registers and serves until `shutdown` is cancelled, then
    /// drains. Returns once serving has started; the handle reports what was
    /// bound and waits for the drain to finish.
    pub async fn run(
        mut self,
        config: WorkerConfig,
        shutdown: CancellationToken,
    ) -> Result<WorkerHandle, KitError> {
        let offer_tools = self.offers.tools(&self.name);
        self.tools.extend(offer_tools);
        let validators = self.validate()?;
        let conn = nats::connect(&config.nats, &self.name).await?;
        let mut registry = Registry::default();
        let metrics = ToolCallMetrics::register(&mut registry, "sophia_worker")
            .with_queue_wait(&mut registry, "sophia_worker");
        crate::metrics::register_connection(&mut registry, &conn);
        for hook in &self.metrics {
            hook(&mut registry);
        }
        let instance = Uuid::new_v4().simple().to_string();

        let service = conn
            .client
            .service_builder()
            .description(&self.description)
            .queue_group(subject::QUEUE_GROUP)
            .start(&self.name, &self.version)
            .await
            .map_err(|e| KitError::Register(e.to_string()))?;
        let (endpoints, by_subject) = self.register_endpoints(&service, validators).await?;

        let shared = Arc::new(Shared {
            client: conn.client.clone(),
            payloads: PayloadStore::new(conn.client.clone())
                .with_max_bytes(config.max_payload_bytes),
            tools: by_subject,
            in_flight: Mutex::new(HashMap::new()),
            early_cancels: Mutex::new(HashMap::new()),
            metrics,
            cancel_grace: Duration::from_millis(config.cancel_grace_ms),
            bus: crate::bus::Bus::start(
                conn.client.clone(),
                instance.clone(),
                config.max_payload_bytes,
            )
            .await
            .map_err(|e| KitError::Register(e.to_string()))?,
            instance: instance.clone(),
        });
        let announce = Announce {
            v: PROTOCOL_VERSION,
            instance: instance.clone(),
            service: self.name.clone(),
            version: self.version.clone(),
            tools: self
                .tools
                .iter()
                .filter(|t| t.is_announced())
                .map(|t| t.spec().clone())
                .collect(),
            heartbeat_ms: config.heartbeat_ms,
            offers: self.offers.announced(),
            degraded: Vec::new(),
            acks: true,
        };
        let alive = crate::serve::AliveResponder::start(&conn.client, &instance)
            .await
            .map_err(|e| KitError::Register(e.to_string()))?;
        let registered = CancellationToken::new();
        let background = CancellationToken::new();
        let categories: Vec<Category> = {
            let mut c: Vec<_> = self.tools.iter().map(|t| t.spec().category).collect();
            c.sort();
            c.dedup();
            c
        };
        spawn_cancel_listener(&shared, &categories, background.clone()).await?;
        spawn_announcer(
            &conn,
            announce,
            self.degraded.clone(),
            config.heartbeat_ms,
            registered.clone(),
            background.clone(),
        )
        .await?;

        // Make sure the server has our subscriptions before `run` returns, so a
        // caller that starts us and then calls finds us. Skipped while NATS is
        // still unreachable (the client subscribes once it connects).
        let _ = tokio::time::timeout(Duration::from_secs(2), conn.client.flush()).await;

        let ready_conn = conn.clone();
        let ready_reg = registered.clone();
        let ready: ops::ReadyCheck = Arc::new(move || {
            if !ready_conn.is_up() {
                return Err("not connected to NATS".into());
            }
            if !ready_reg.is_cancelled() {
                return Err("not registered with the mesh yet".into());
            }
            Ok(())
        });
        let http_addr = config
            .http_addr
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
        let http_stop = CancellationToken::new();
        let (http_bound, http_task) = ops::serve(
            http_addr,
            ops::router_with(
                Arc::new(registry),
                ready,
                self.degraded.clone().map(|check| -> ops::HealthDetail {
                    Arc::new(move || {
                        let degraded = check();
                        let status = if degraded.is_empty() {
                            "ok"
                        } else {
                            "degraded"
                        };
                        serde_json::json!({"status": status, "degraded": degraded})
                    })
                }),
            )
            .merge(ops::gateway_pointer(config.gateway_url.clone())),
            config.addr_file.as_deref(),
            http_stop.clone().cancelled_owned(),
        )
        .await?;

        let task = tokio::spawn(
            Serving {
                _alive: alive,
                name: self.name.clone(),
                shared,
                limit: Arc::new(Semaphore::new(config.max_in_flight.max(1))),
                max_in_flight: config.max_in_flight.max(1),
                drain_timeout: Duration::from_millis(config.drain_timeout_ms),
                leave: Leave {
                    v: PROTOCOL_VERSION,
                    instance: instance.clone(),
                },
                background,
                http_stop,
                http_task,
            }
            .run(service, endpoints, shutdown),
        );
        Ok(WorkerHandle {
            instance,
            http_addr: http_bound,
            client: conn.client,
            task,
        })
    }
}

/// Everything the serving task owns, from first request to drained.
struct Serving {
    /// Answers liveness asks until the drain is over (dropped with this).
    _alive: crate::serve::AliveResponder,
    name: String,
    shared: Arc<Shared>,
    limit: Arc<Semaphore>,
    max_in_flight: usize,
    drain_timeout: Duration,
    leave: Leave,
    background: CancellationToken,
    http_stop: CancellationToken,
    http_task: tokio::task::JoinHandle<()>,
}

impl Serving {
    /// Serves requests until `shutdown`, then drains: say goodbye, stop
    /// taking requests, serve what NATS already delivered, wait for calls in
    /// flight (cancelling them after the drain timeout), and stop HTTP.
    async fn run(
        self,
        service: async_nats::service::Service,
        endpoints: Vec<Endpoint>,
        shutdown: CancellationToken,
    ) {
        let mut requests = futures::stream::select_all(endpoints);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                next = requests.next() => match next {
                    Some(req) => dispatch(&self.shared, &self.limit, req).await,
                    // No endpoints (a worker without tools yet): idle until shutdown.
                    None => {
                        shutdown.cancelled().await;
                        break;
                    }
                },
            }
        }
        tracing::info!(worker = %self.name, "draining: leaving the mesh and finishing calls in flight");
        if let Ok(bytes) = sophia_proto::encode(&self.leave) {
            let _ = self
                .shared
                .client
                .publish(subject::REGISTRY_LEAVE, bytes.into())
                .await;
        }
        self.background.cancel();
        match tokio::time::timeout(Duration::from_secs(2), service.stop()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(cause = %e, "could not stop the NATS service cleanly"),
            Err(_) => tracing::warn!("stopping the NATS service timed out (is NATS down?)"),
        }
        // Requests NATS had already delivered are still served. With NATS
        // gone the stop above could not unsubscribe, so the stream may never
        // end: take what is buffered and stop waiting once it goes quiet.
        while let Ok(Some(req)) =
            tokio::time::timeout(Duration::from_millis(500), requests.next()).await
        {
            dispatch(&self.shared, &self.limit, req).await;
        }
        let all = u32::try_from(self.max_in_flight).unwrap_or(u32::MAX);
        if tokio::time::timeout(self.drain_timeout, self.limit.acquire_many(all))
            .await
            .is_err()
        {
            tracing::warn!(worker = %self.name, "drain timed out; cancelling calls still in flight");
            self.shared.cancel_all();
            // Let the cancelled calls reply `cancelled` before going.
            let grace = self.shared.cancel_grace + Duration::from_secs(1);
            let _ = tokio::time::timeout(grace, self.limit.acquire_many(all)).await;
        }
        // Best effort: with NATS gone, flush would wait for a reconnect forever.
        let _ = tokio::time::timeout(Duration::from_secs(2), self.shared.client.flush()).await;
        self.http_stop.cancel();
        let _ = self.http_task.await;
        tracing::info!(worker = %self.name, "drained");
    }
}

/// A running worker.
#[derive(Debug)]
pub struct WorkerHandle {
    /// This replica's instance id, as announced.
    pub instance: String,
    /// Where `/health`, `/ready` and `/metrics` are served.
    pub http_addr: SocketAddr,
    /// The worker's NATS client.
    pub client: async_nats::Client,
    task: tokio::task::JoinHandle<()>,
}

impl WorkerHandle {
    /// Tells the gateways that resource `uri` changed, so that the MCP
    /// sessions subscribed to it get `notifications/resources/updated`.
    pub async fn resource_updated(&self, uri: &str) -> Result<(), KitError> {
        let update = sophia_proto::ResourceUpdated {
            v: PROTOCOL_VERSION,
            uri: uri.to_owned(),
        };
        let bytes = sophia_proto::encode(&update).map_err(|e| KitError::Register(e.to_string()))?;
        self.client
            .publish(subject::RESOURCE_UPDATED, bytes.into())
            .await
            .map_err(|e| KitError::Register(format!("could not publish a resource update: {e}")))
    }

    /// Waits until the worker has drained after its shutdown token fired.
    pub async fn stopped(self) {
        let _ = self.task.await;
    }

    /// Stops serving at once, without draining (as a crash would, but the
    /// process lives on). For tests of dead workers.
    pub fn abort(&self) {
        self.task.abort();
    }
}

async fn spawn_cancel_listener(
    shared: &Arc<Shared>,
    categories: &[Category],
    stop: CancellationToken,
) -> Result<(), KitError> {
    let mut subs = Vec::new();
    for c in categories {
        let sub = shared
            .client
            .subscribe(subject::cancel(*c))
            .await
            .map_err(|e| KitError::Register(e.to_string()))?;
        subs.push(sub);
    }
    let shared = shared.clone();
    tokio::spawn(async move {
        let mut all = futures::stream::select_all(subs);
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                Some(msg) = all.next() => match sophia_proto::decode::<Cancel>(&msg.payload) {
                    Ok(c) => shared.cancel(c.id),
                    Err(e) => tracing::warn!(cause = %e, "ignoring a malformed cancel message"),
                },
                else => break,
            }
        }
    });
    Ok(())
}

/// Announces the worker now, on every reconnect, when a gateway asks, and
/// every heartbeat.
async fn spawn_announcer(
    conn: &Connection,
    mut announce: Announce,
    degraded: Option<DegradedCheck>,
    heartbeat_ms: u64,
    registered: CancellationToken,
    stop: CancellationToken,
) -> Result<(), KitError> {
    let mut payload: bytes::Bytes = sophia_proto::encode(&announce)
        .map_err(|e| KitError::Register(e.to_string()))?
        .into();
    let client = conn.client.clone();
    let mut discover = client
        .subscribe(subject::REGISTRY_DISCOVER)
        .await
        .map_err(|e| KitError::Register(e.to_string()))?;
    let mut connects = conn.connects.clone();
    tokio::spawn(async move {
        let mut beat = tokio::time::interval(Duration::from_millis(heartbeat_ms.max(10)));
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = beat.tick() => {}
                changed = connects.changed() => if changed.is_err() { break },
                Some(msg) = discover.next() => {
                    if let Ok(d) = sophia_proto::decode::<Discover>(&msg.payload) {
                        tracing::debug!(gateway = %d.requester, "discovery request");
                    }
                }
            }
            if let Some(check) = &degraded {
                let now = check();
                if now != announce.degraded {
                    announce.degraded = now;
                    if let Ok(bytes) = sophia_proto::encode(&announce) {
                        payload = bytes.into();
                    }
                }
            }
            match client
                .publish(subject::REGISTRY_ANNOUNCE, payload.clone())
                .await
            {
                Ok(()) => registered.cancel(),
                Err(e) => tracing::warn!(cause = %e, "could not announce the worker"),
            }
        }
    });
    Ok(())
}
