//! Running a worker: registration as a NATS micro service, serving tools on
//! a queue group, announcing them to gateways, cancellation, and drain. One
//! request's journey is in [`crate::serve`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::Duration;

use async_nats::service::ServiceExt;
use futures::StreamExt;
use prometheus_client::registry::Registry;
use sophia_proto::payload::PayloadStore;
use sophia_proto::{Announce, Cancel, Discover, Leave, PROTOCOL_VERSION, subject};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::metrics::ToolCallMetrics;
use crate::nats::{self, Connection, NatsConfig};
use crate::serve::{Served, Shared, ToolsBySubject, dispatch};
use crate::tool::Tool;
use crate::{KitError, StartKind, ops};
use async_nats::service::endpoint::Endpoint;

mod background;
mod config;
mod serving;

use background::{spawn_announcer, spawn_cancel_listener};
pub use config::{DegradedCheck, MetricsHook, WorkerConfig};
pub use serving::WorkerHandle;
use serving::{Identity, Serving, shared};

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
    listing: crate::Listing,
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
            listing: Default::default(),
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
        self.offers.add_prompt(prompt, move |_, args| get(args));
        self
    }

    /// [`Worker::prompt`] whose handler also gets the [`crate::Call`], to
    /// ask the client questions as a tool does ([`crate::Call::elicit`],
    /// [`crate::Call::ask_named`], ...): a client without a session answers
    /// them in rounds (an `input_required` result to `prompts/get`, then a
    /// retry with the answers), one with a session on it. `call.args` are
    /// the MCP params; `get`'s second argument is the prompt's arguments.
    pub fn prompt_with_call<F, Fut>(mut self, prompt: serde_json::Value, get: F) -> Self
    where
        F: Fn(crate::Call, serde_json::Value) -> Fut + Send + Sync + 'static,
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
        let complete = Arc::new(complete);
        self.offers.set_completions(move |params| {
            let values = complete(params);
            async move { values.await.map(crate::offers::Completion::from) }
        });
        self
    }

    /// [`Worker::completions`] for an offerer that knows the total and
    /// whether there are more (a relay of another server's answer).
    pub fn completions_full<F, Fut>(mut self, complete: F) -> Self
    where
        F: Fn(serde_json::Value) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<crate::offers::Completion, crate::WireError>>
            + Send
            + 'static,
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

    /// What this worker lists while it runs: withdraw a declared tool or
    /// prompt, or offer it again, at any time (before [`Worker::run`] too).
    /// See [`crate::listing`].
    pub fn listing(&self) -> crate::Listing {
        self.listing.clone()
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
                .map_err(|e| KitError::start(StartKind::Subscribe, "add a tool's endpoint", e))?;
            endpoints.push(endpoint);
            let mut served = Served::tool(tool, validator);
            served.handler = self.listing.guard(&spec.name, served.handler);
            by_subject.insert(subj, served);
        }
        self.register_offers(service, &mut endpoints, &mut by_subject)
            .await?;
        Ok((endpoints, by_subject))
    }

    /// The service's MCP offers, as their own endpoint group
    /// `sophia.v1.mcp.<service>` (one endpoint per method, in no category).
    async fn register_offers(
        &self,
        service: &async_nats::service::Service,
        endpoints: &mut Vec<Endpoint>,
        by_subject: &mut ToolsBySubject,
    ) -> Result<(), KitError> {
        let group = service.group(subject::mcp_group(&self.name));
        for (method, served) in self.offers.served(&self.listing) {
            let subj = subject::mcp(&self.name, method);
            if by_subject.contains_key(&subj) {
                return Err(KitError::InvalidTool {
                    tool: served.name,
                    why: format!("a tool is already served on {subj}"),
                });
            }
            let metadata = HashMap::from([
                ("service".to_owned(), self.name.clone()),
                ("mcp_method".to_owned(), method.mcp_name().to_owned()),
            ]);
            // Unnamed: the endpoint is known by its subject, which no tool
            // name can be.
            let endpoint = group
                .endpoint_builder()
                .metadata(metadata)
                .add(method.as_str())
                .await
                .map_err(|e| {
                    KitError::start(StartKind::Subscribe, "add an MCP offer's endpoint", e)
                })?;
            endpoints.push(endpoint);
            by_subject.insert(subj, served);
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
        let validators = self.validate()?;
        let policy = crate::policy::Policy::from_config(config.policy.as_deref())?;
        let conn = nats::connect(&config.nats, &self.name).await?;
        let (registry, metrics) = self.metrics_registry(&conn);
        let instance = Uuid::new_v4().simple().to_string();

        let service = conn
            .client
            .service_builder()
            .description(&self.description)
            .queue_group(subject::QUEUE_GROUP)
            .start(&self.name, &self.version)
            .await
            .map_err(|e| KitError::start(StartKind::Subscribe, "register the micro service", e))?;
        let (endpoints, by_subject) = self.register_endpoints(&service, validators).await?;

        let identity = Identity {
            instance: &instance,
            service: &self.name,
            policy,
        };
        let shared = shared(&conn, &config, by_subject, metrics, identity).await?;
        let announce = background::Announcer {
            full: self.announcement(&instance, config.heartbeat_ms),
            listing: self.listing.clone(),
            degraded: self.degraded.clone(),
        };
        let alive = crate::serve::AliveResponder::start(&conn.client, &instance)
            .await
            .map_err(|e| KitError::start(StartKind::Subscribe, "answer liveness asks", e))?;
        let registered = CancellationToken::new();
        let background = CancellationToken::new();
        spawn_cancel_listener(&shared, &self.cancel_subjects(), background.clone()).await?;
        spawn_announcer(&conn, announce, registered.clone(), background.clone()).await?;

        // Make sure the server has our subscriptions before `run` returns, so a
        // caller that starts us and then calls finds us. Skipped while NATS is
        // still unreachable (the client subscribes once it connects).
        let _ = tokio::time::timeout(Duration::from_secs(2), conn.client.flush()).await;

        let ready = ready_check(&conn, &registered);
        let http_stop = CancellationToken::new();
        let (http_bound, http_task) = self
            .serve_ops(&config, registry, ready, http_stop.clone())
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

    /// `/metrics`: the kit's call metrics, the connection's, and the
    /// worker's own (its metrics hooks).
    fn metrics_registry(&self, conn: &Connection) -> (Registry, ToolCallMetrics) {
        let mut registry = Registry::default();
        let metrics = ToolCallMetrics::register(&mut registry, "sophia_worker")
            .with_queue_wait(&mut registry, "sophia_worker");
        crate::metrics::register_connection(&mut registry, conn);
        for hook in &self.metrics {
            hook(&mut registry);
        }
        (registry, metrics)
    }

    /// Serves `/health`, `/ready` and `/metrics` (and points anything else
    /// at the gateway) until `stop` fires; what it bound.
    async fn serve_ops(
        &self,
        config: &WorkerConfig,
        registry: Registry,
        ready: ops::ReadyCheck,
        stop: CancellationToken,
    ) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), KitError> {
        let http_addr = config
            .http_addr
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
        let app = ops::router_with(Arc::new(registry), ready, self.health_detail())
            .merge(ops::gateway_pointer(config.gateway_url.clone()));
        ops::serve(
            http_addr,
            app,
            config.addr_file.as_deref(),
            stop.cancelled_owned(),
        )
        .await
    }

    /// What this worker declares, all of it (the announcer leaves out what
    /// its [`crate::Listing`] withdraws).
    fn announcement(&self, instance: &str, heartbeat_ms: u64) -> Announce {
        Announce {
            v: PROTOCOL_VERSION,
            instance: instance.to_owned(),
            service: self.name.clone(),
            version: self.version.clone(),
            tools: self
                .tools
                .iter()
                .filter(|t| t.is_announced())
                .map(|t| t.spec().clone())
                .collect(),
            heartbeat_ms,
            offers: self.offers.announced(),
            degraded: Vec::new(),
            acks: true,
            host: crate::process::host().to_owned(),
            started_at_ms: crate::process::started_at_ms(),
        }
    }

    /// Where this worker's cancels arrive: its tools' categories, and its
    /// own service's if it offers anything.
    fn cancel_subjects(&self) -> Vec<String> {
        let mut c: Vec<_> = self.tools.iter().map(|t| t.spec().category).collect();
        c.sort();
        c.dedup();
        let mut subjects: Vec<_> = c.into_iter().map(subject::cancel).collect();
        if !self.offers.served(&self.listing).is_empty() {
            subjects.push(subject::mcp_cancel(&self.name));
        }
        subjects
    }

    /// `/health`'s detail: what the worker's own check says it cannot do.
    fn health_detail(&self) -> Option<ops::HealthDetail> {
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
        })
    }
}

/// `/ready`: connected to NATS and registered with the mesh.
fn ready_check(conn: &Connection, registered: &CancellationToken) -> ops::ReadyCheck {
    let (conn, registered) = (conn.clone(), registered.clone());
    Arc::new(move || {
        if !conn.is_up() {
            return Err("not connected to NATS".into());
        }
        if !registered.is_cancelled() {
            return Err("not registered with the mesh yet".into());
        }
        Ok(())
    })
}
