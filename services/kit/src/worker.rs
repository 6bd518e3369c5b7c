//! Running a worker: registration as a NATS micro service, serving tools on
//! a queue group, announcing them to gateways, cancellation, and drain.
//!
//! A request flows through [`serve_request`]: unpack (large payloads) →
//! decode the [`ToolRequest`] → look up the tool by subject → run the handler
//! racing cancellation and the deadline → encode and pack the
//! [`ToolResponse`] → reply.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::service::{self, ServiceExt};
use futures::{FutureExt, StreamExt};
use prometheus_client::registry::Registry;
use sophia_proto::payload::PayloadStore;
use sophia_proto::{
    Announce, Cancel, Category, Discover, ErrorCode, Leave, PROTOCOL_VERSION, ToolRequest,
    ToolResponse, WireError, headers, subject,
};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::metrics::{CategoryLabels, OutcomeLabels, ToolLabels, WorkerMetrics};
use crate::nats::{self, Connection, NatsConfig};
use crate::tool::{Call, ProgressSink, Tool};
use crate::{KitError, ops};

/// The longest deadline a request may ask for (one day).
const MAX_DEADLINE_MS: u64 = 24 * 60 * 60 * 1000;

/// How a worker runs: where NATS is, where to serve HTTP, and its limits.
#[derive(Clone, Debug, clap::Args)]
pub struct WorkerConfig {
    /// How to reach NATS.
    #[command(flatten)]
    pub nats: NatsConfig,
    /// Where to serve `/health`, `/ready` and `/metrics`.
    #[arg(long = "http-addr", env = "SOPHIA_HTTP_ADDR")]
    pub http_addr: Option<SocketAddr>,
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
    /// Defaults for a worker talking to NATS at `nats_url`, serving HTTP on an
    /// ephemeral loopback port (what tests want).
    pub fn new(nats_url: impl Into<String>) -> Self {
        Self {
            nats: NatsConfig::new(nats_url),
            http_addr: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            heartbeat_ms: 5_000,
            max_in_flight: 256,
            drain_timeout_ms: 30_000,
            cancel_grace_ms: 5_000,
            max_payload_bytes: sophia_proto::payload::DEFAULT_MAX_BYTES,
        }
    }
}

/// A worker: a name, a version and its tools. Build it, then [`Worker::run`].
#[derive(Debug, Clone)]
pub struct Worker {
    name: String,
    version: String,
    description: String,
    tools: Vec<Tool>,
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
        }
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

    fn validate(&self) -> Result<(), KitError> {
        let mut seen = std::collections::HashSet::new();
        for t in &self.tools {
            let spec = t.spec();
            let bad = |why: String| KitError::InvalidTool {
                tool: spec.name.clone(),
                why,
            };
            subject::validate_tool_name(&spec.name).map_err(|e| bad(e.to_string()))?;
            if !seen.insert(spec.name.clone()) {
                return Err(bad("declared twice".into()));
            }
            if spec.input_schema.get("type").and_then(|v| v.as_str()) != Some("object") {
                return Err(bad(
                    "input schema must be a JSON Schema with \"type\": \"object\"".into(),
                ));
            }
            jsonschema::validator_for(&spec.input_schema)
                .map_err(|e| bad(format!("input schema is not valid JSON Schema: {e}")))?;
        }
        Ok(())
    }

    /// Connects, registers and serves until `shutdown` is cancelled, then
    /// drains. Returns once serving has started; the handle reports what was
    /// bound and waits for the drain to finish.
    pub async fn run(
        self,
        config: WorkerConfig,
        shutdown: CancellationToken,
    ) -> Result<WorkerHandle, KitError> {
        self.validate()?;
        let conn = nats::connect(&config.nats, &self.name).await?;
        let mut registry = Registry::default();
        let metrics = WorkerMetrics::register(&mut registry);
        crate::metrics::register_connection(&mut registry, &conn);
        let instance = Uuid::new_v4().simple().to_string();

        let service = conn
            .client
            .service_builder()
            .description(&self.description)
            .queue_group(subject::QUEUE_GROUP)
            .start(&self.name, &self.version)
            .await
            .map_err(|e| KitError::Register(e.to_string()))?;
        let mut endpoints = Vec::new();
        let mut by_subject = HashMap::new();
        for tool in &self.tools {
            let spec = tool.spec();
            let subj = subject::tool(spec.category, &spec.name);
            let endpoint = service
                .endpoint_builder()
                .name(&spec.name)
                .metadata(HashMap::from([(
                    "category".to_owned(),
                    spec.category.to_string(),
                )]))
                .add(subj.clone())
                .await
                .map_err(|e| KitError::Register(e.to_string()))?;
            endpoints.push(endpoint);
            let validator = jsonschema::validator_for(&spec.input_schema).map_err(|e| {
                KitError::InvalidTool {
                    tool: spec.name.clone(),
                    why: e.to_string(),
                }
            })?;
            by_subject.insert(subj, (tool.clone(), Arc::new(validator)));
        }

        let shared = Arc::new(Shared {
            client: conn.client.clone(),
            payloads: PayloadStore::new(conn.client.clone())
                .with_max_bytes(config.max_payload_bytes),
            tools: by_subject,
            in_flight: Mutex::new(HashMap::new()),
            early_cancels: Mutex::new(HashMap::new()),
            metrics,
            cancel_grace: Duration::from_millis(config.cancel_grace_ms),
        });
        let announce = Announce {
            v: PROTOCOL_VERSION,
            instance: instance.clone(),
            service: self.name.clone(),
            version: self.version.clone(),
            tools: self.tools.iter().map(|t| t.spec().clone()).collect(),
            heartbeat_ms: config.heartbeat_ms,
        };
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
            ops::router(Arc::new(registry), ready),
            http_stop.clone().cancelled_owned(),
        )
        .await?;

        let limit = Arc::new(Semaphore::new(config.max_in_flight.max(1)));
        let serve_shared = shared.clone();
        let serve_limit = limit.clone();
        let drain_timeout = Duration::from_millis(config.drain_timeout_ms);
        let name = self.name.clone();
        let leave = Leave {
            v: PROTOCOL_VERSION,
            instance: instance.clone(),
        };
        let task = tokio::spawn(async move {
            let mut requests = futures::stream::select_all(endpoints);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    next = requests.next() => match next {
                        Some(req) => dispatch(&serve_shared, &serve_limit, req).await,
                        // No endpoints (a worker without tools yet): idle until shutdown.
                        None => {
                            shutdown.cancelled().await;
                            break;
                        }
                    },
                }
            }
            tracing::info!(worker = %name, "draining: leaving the mesh and finishing calls in flight");
            if let Ok(bytes) = sophia_proto::encode(&leave) {
                let _ = serve_shared
                    .client
                    .publish(subject::REGISTRY_LEAVE, bytes.into())
                    .await;
            }
            background.cancel();
            match tokio::time::timeout(Duration::from_secs(2), service.stop()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(cause = %e, "could not stop the NATS service cleanly"),
                Err(_) => tracing::warn!("stopping the NATS service timed out (is NATS down?)"),
            }
            // Requests NATS had already delivered are still served.
            while let Some(req) = requests.next().await {
                dispatch(&serve_shared, &serve_limit, req).await;
            }
            let all = u32::try_from(config.max_in_flight.max(1)).unwrap_or(u32::MAX);
            if tokio::time::timeout(drain_timeout, serve_limit.acquire_many(all))
                .await
                .is_err()
            {
                tracing::warn!(worker = %name, "drain timed out; cancelling calls still in flight");
                serve_shared.cancel_all();
            }
            // Best effort: with NATS gone, flush would wait for a reconnect forever.
            let _ = tokio::time::timeout(Duration::from_secs(2), serve_shared.client.flush()).await;
            http_stop.cancel();
            let _ = http_task.await;
            tracing::info!(worker = %name, "drained");
        });
        Ok(WorkerHandle {
            instance,
            http_addr: http_bound,
            client: conn.client,
            task,
        })
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

struct Shared {
    client: async_nats::Client,
    payloads: PayloadStore,
    /// Tools by subject, with their compiled input schemas.
    tools: HashMap<String, (Tool, Arc<jsonschema::Validator>)>,
    in_flight: Mutex<HashMap<Uuid, CancellationToken>>,
    /// Cancels that arrived before their request (NATS does not order
    /// messages across subjects); kept for a minute.
    early_cancels: Mutex<HashMap<Uuid, Instant>>,
    metrics: WorkerMetrics,
    cancel_grace: Duration,
}

impl Shared {
    fn cancel(&self, id: Uuid) {
        let token = self
            .in_flight
            .lock()
            .expect("in-flight lock")
            .get(&id)
            .cloned();
        match token {
            Some(t) => t.cancel(),
            None => {
                let mut early = self.early_cancels.lock().expect("cancel lock");
                early.retain(|_, at| at.elapsed() < Duration::from_secs(60));
                early.insert(id, Instant::now());
            }
        }
    }

    fn cancel_all(&self) {
        for t in self.in_flight.lock().expect("in-flight lock").values() {
            t.cancel();
        }
    }

    fn track(&self, id: Uuid) -> CancellationToken {
        let token = CancellationToken::new();
        if self
            .early_cancels
            .lock()
            .expect("cancel lock")
            .remove(&id)
            .is_some()
        {
            token.cancel();
        }
        self.in_flight
            .lock()
            .expect("in-flight lock")
            .insert(id, token.clone());
        token
    }

    fn untrack(&self, id: Uuid) {
        self.in_flight.lock().expect("in-flight lock").remove(&id);
    }
}

async fn dispatch(shared: &Arc<Shared>, limit: &Arc<Semaphore>, req: service::Request) {
    let Ok(permit) = limit.clone().acquire_owned().await else {
        return;
    };
    let shared = shared.clone();
    tokio::spawn(async move {
        serve_request(&shared, req).await;
        drop(permit);
    });
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
    announce: Announce,
    heartbeat_ms: u64,
    registered: CancellationToken,
    stop: CancellationToken,
) -> Result<(), KitError> {
    let payload: bytes::Bytes = sophia_proto::encode(&announce)
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

/// Serves one request from start to reply. Never panics on bad input: every
/// path ends in a reply with a result or a typed error.
async fn serve_request(shared: &Shared, req: service::Request) {
    let started = Instant::now();
    let trace = headers::Context::from_headers(req.message.headers.as_ref());
    let fallback_id = trace.request_id.unwrap_or(Uuid::nil());
    let tool = shared.tools.get(req.message.subject.as_str()).cloned();
    let labels = tool.as_ref().map(|(t, _)| ToolLabels {
        tool: t.spec().name.clone(),
        category: t.spec().category.to_string(),
    });

    let (id, outcome, progress_sent) = match decode_request(shared, &req).await {
        Err(e) => (fallback_id, Err(e), 0),
        Ok(request) => {
            let id = request.id;
            match tool {
                None => (
                    id,
                    Err(WireError::new(
                        ErrorCode::UnknownTool,
                        format!("this worker does not serve {}", req.message.subject),
                    )),
                    0,
                ),
                Some((tool, validator)) => match check_args(&validator, &request) {
                    Err(e) => (id, Err(e), 0),
                    Ok(()) => {
                        let (outcome, sent) = run_tool(shared, &tool, request, trace.clone()).await;
                        (id, outcome, sent)
                    }
                },
            }
        }
    };
    let outcome_label = match &outcome {
        Ok(_) => "ok".to_owned(),
        Err(e) => e.code.to_string(),
    };
    let mut response = ToolResponse::new(id, outcome);
    response.progress_sent = progress_sent;
    reply(shared, &req, id, &response).await;
    if let Some(l) = labels {
        shared
            .metrics
            .duration
            .get_or_create(&l)
            .observe(started.elapsed().as_secs_f64());
        shared
            .metrics
            .requests
            .get_or_create(&OutcomeLabels {
                tool: l.tool,
                category: l.category,
                outcome: outcome_label,
            })
            .inc();
    }
}

/// Validates the arguments here too: agents may call workers on the bus
/// directly, without a gateway in front.
fn check_args(validator: &jsonschema::Validator, request: &ToolRequest) -> Result<(), WireError> {
    let problems = crate::schema::problems(validator, &request.args);
    if problems.is_empty() {
        return Ok(());
    }
    Err(WireError::invalid_arguments(format!(
        "invalid arguments for `{}`: {}",
        request.tool,
        problems.join("; ")
    ))
    .with_data(serde_json::json!({ "errors": problems })))
}

async fn decode_request(shared: &Shared, req: &service::Request) -> Result<ToolRequest, WireError> {
    let body = shared
        .payloads
        .unpack(req.message.headers.as_ref(), req.message.payload.clone())
        .await
        .map_err(|e| WireError::new(ErrorCode::TooLarge, e.to_string()))?;
    let request: ToolRequest = sophia_proto::decode(&body)
        .map_err(|e| WireError::new(ErrorCode::BadEnvelope, e.to_string()))?;
    if request.v != PROTOCOL_VERSION {
        return Err(WireError::new(
            ErrorCode::UnsupportedVersion,
            format!(
                "request uses protocol version {}, this worker speaks {PROTOCOL_VERSION}",
                request.v
            ),
        ));
    }
    Ok(request)
}

async fn run_tool(
    shared: &Shared,
    tool: &Tool,
    request: ToolRequest,
    trace: headers::Context,
) -> (Result<sophia_proto::ToolOutput, WireError>, u64) {
    let category = CategoryLabels {
        category: tool.spec().category.to_string(),
    };
    let id = request.id;
    let span = tracing::info_span!("tool_call", tool = %request.tool, request_id = %id,
        principal = %request.caller.principal, traceparent = trace.traceparent.as_deref().unwrap_or(""));
    let _enter = span.enter();
    let token = shared.track(id);
    // Clamped: a garbage deadline must not overflow the clock.
    let deadline = Instant::now() + Duration::from_millis(request.timeout_ms.min(MAX_DEADLINE_MS));
    let progress_sent = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let call = Call {
        id,
        tool: request.tool,
        args: request.args,
        caller: request.caller,
        deadline,
        trace,
        cancel: token.clone(),
        progress: request.progress_to.map(|subject| ProgressSink {
            client: shared.client.clone(),
            subject,
        }),
        progress_sent: progress_sent.clone(),
    };
    shared.metrics.in_flight.get_or_create(&category).inc();
    let mut work = std::panic::AssertUnwindSafe((tool.handler)(call)).catch_unwind();
    let outcome = tokio::select! {
        done = &mut work => done,
        _ = token.cancelled() => {
            // Give the handler a moment to stop on its own (and clean up).
            match tokio::time::timeout(shared.cancel_grace, &mut work).await {
                Ok(done) => done,
                Err(_) => Ok(Err(WireError::new(ErrorCode::Cancelled, "the call was cancelled"))),
            }
        }
        _ = tokio::time::sleep_until(deadline.into()) => {
            token.cancel();
            Ok(Err(WireError::new(ErrorCode::Timeout, "the call's deadline passed before the tool finished")))
        }
    };
    shared.metrics.in_flight.get_or_create(&category).dec();
    shared.untrack(id);
    let outcome = match outcome {
        Ok(result) => result,
        Err(_) => {
            tracing::error!("tool handler panicked");
            Err(WireError::internal(
                "the tool failed unexpectedly (handler panicked); see the worker's logs",
            ))
        }
    };
    // What the handler returned is the truth, even after a cancel: a call
    // that completed must not be reported as cancelled and then retried.
    (
        outcome,
        progress_sent.load(std::sync::atomic::Ordering::Relaxed),
    )
}

async fn reply(shared: &Shared, req: &service::Request, id: Uuid, response: &ToolResponse) {
    let mut reply_headers = headers::Context {
        request_id: Some(id),
        ..Default::default()
    }
    .to_headers();
    let encoded = match sophia_proto::encode(response) {
        Ok(b) => b,
        Err(e) => {
            let fallback = ToolResponse::new(id, Err(WireError::internal(e.to_string())));
            sophia_proto::encode(&fallback).unwrap_or_default()
        }
    };
    let body = match shared.payloads.pack(encoded, &mut reply_headers).await {
        Ok(body) => body,
        Err(e) => {
            tracing::warn!(cause = %e, request_id = %id, "result too large to deliver");
            let fallback =
                ToolResponse::new(id, Err(WireError::new(ErrorCode::TooLarge, e.to_string())));
            sophia_proto::encode(&fallback).unwrap_or_default().into()
        }
    };
    if let Err(e) = req.respond_with_headers(Ok(body), reply_headers).await {
        tracing::warn!(cause = %e, request_id = %id, "could not send the reply");
    }
}
