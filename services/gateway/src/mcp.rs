//! The MCP face of the gateway: an rmcp [`ServerHandler`] whose tools are the
//! ones live workers announce.
//!
//! `tools/list` reads the [`Registry`]. `tools/call` validates the arguments
//! against the tool's schema, hands the call to the [`Bus`], relays progress
//! as `notifications/progress`, and turns the outcome into a
//! `CallToolResult`. Every session's peer is kept so that registry changes
//! reach it as `notifications/tools/list_changed`.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use futures::future::BoxFuture;
#[allow(deprecated)] // sampling: see relay_question
use rmcp::model::CreateMessageRequestParams;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    InitializeRequestParams, InitializeResult, ListToolsResult, MetaObject, PaginatedRequestParams,
    ProgressNotificationParam, ProtocolVersion, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::model::{ElicitRequestParams, ElicitationSchema};
use rmcp::service::ElicitationMode;
use rmcp::service::RequestContext;
use rmcp::{ErrorData as McpError, Peer, RoleServer, ServerHandler};
use serde_json::{Value, json};
use sophia_proto::subject::McpMethod;
use sophia_proto::{
    Caller, Content, ErrorCode, Progress, Question, ToolOutput, WireError, headers,
};
use tokio::sync::mpsc;

use crate::registry::Registry;
use opentelemetry::KeyValue;
use sophia_kit::bus::{Bus, CallError, CallSpec, ClientCan, ClientQuestion, ProgressRoute};
use sophia_kit::metrics::ToolCallMetrics;
use sophia_kit::telemetry::{Span, SpanKind, attr};

/// The authenticated principal of an HTTP request, put in the request's
/// extensions by the auth layer.
#[derive(Clone, Debug)]
pub struct Principal(pub String);

/// Limits on tool calls.
#[derive(Clone, Copy, Debug)]
pub struct CallLimits {
    /// Deadline when a tool does not announce one.
    pub default_timeout: Duration,
    /// The longest deadline allowed.
    pub max_timeout: Duration,
}

/// The MCP server handler. It is cheap to clone; [`McpGateway::for_session`]
/// gives each session its own per-session state (the logging level).
#[derive(Clone)]
pub struct McpGateway {
    inner: Arc<Inner>,
    /// The lowest log level the session's client asked for
    /// (`logging/setLevel`), as a rank; `None` until it asks, and until then
    /// workers' log records are not relayed.
    log_level: Arc<std::sync::atomic::AtomicU8>,
    /// This session's key for its resource subscriptions.
    session_key: u64,
    /// Where results too large for one HTTP response go in parts; `None`
    /// over stdio, where results stay whole.
    results: Option<crate::results::LargeResults>,
}

/// No `logging/setLevel` yet.
const NO_LOG_LEVEL: u8 = u8::MAX;

/// MCP's log levels, least severe first.
const LOG_LEVELS: [&str; 8] = [
    "debug",
    "info",
    "notice",
    "warning",
    "error",
    "critical",
    "alert",
    "emergency",
];

fn log_rank(level: &str) -> Option<u8> {
    LOG_LEVELS.iter().position(|l| *l == level).map(|i| i as u8)
}

struct Inner {
    registry: Registry,
    bus: Bus,
    /// The bus link, to say so when it is down.
    link: sophia_kit::nats::Connection,
    limits: CallLimits,
    /// Principal for sessions without HTTP auth (stdio).
    local_principal: String,
    peers: Mutex<Vec<Peer<RoleServer>>>,
    metrics: ToolCallMetrics,
    /// Calls that ended because of a replica, for /health.
    faults: crate::faults::Faults,
    /// Resource subscriptions: URI → the sessions subscribed (by session key).
    subscriptions: Mutex<HashMap<String, Subscribers>>,
}

/// The sessions subscribed to one resource: (session key, its peer).
type Subscribers = Vec<(u64, Peer<RoleServer>)>;

/// Keys sessions for their resource subscriptions.
static SESSION_KEYS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// How long no replica must have joined before a `tools/list` is answered.
const DISCOVERY_QUIET: Duration = Duration::from_millis(500);
/// The longest a `tools/list` waits for that.
const DISCOVERY_CAP: Duration = Duration::from_secs(5);

/// How long to wait for progress still in transit after the reply.
const PROGRESS_PATIENCE: Duration = Duration::from_millis(250);

impl McpGateway {
    /// The service offering `uri`, or an error that says where to look.
    fn resource_owner(&self, uri: &str) -> Result<String, McpError> {
        self.inner
            .registry
            .view()
            .resource_owner(uri)
            .map(str::to_owned)
            .ok_or_else(|| {
                McpError::resource_not_found(
                    format!(
                        "no live worker offers resource {}: see resources/list and resources/templates/list",
                        sophia_kit::vetting::shown(uri)
                    ),
                    None,
                )
            })
    }

    /// A handler over `registry` and `bus`.
    pub fn new(
        registry: Registry,
        bus: Bus,
        link: sophia_kit::nats::Connection,
        limits: CallLimits,
        local_principal: String,
        metrics: ToolCallMetrics,
        faults: crate::faults::Faults,
    ) -> Self {
        let gw = Self {
            inner: Arc::new(Inner {
                registry,
                bus,
                link,
                limits,
                local_principal,
                peers: Mutex::new(Vec::new()),
                metrics,
                faults,
                subscriptions: Mutex::new(HashMap::new()),
            }),
            log_level: Arc::new(std::sync::atomic::AtomicU8::new(NO_LOG_LEVEL)),
            session_key: 0,
            results: None,
        };
        gw.spawn_list_changed();
        gw.spawn_offers_changed();
        gw.spawn_resource_updates();
        gw
    }

    /// Relays workers' `ResourceUpdated` to the sessions subscribed to the
    /// resource, as `notifications/resources/updated`.
    fn spawn_resource_updates(&self) {
        let weak = Arc::downgrade(&self.inner);
        let client = self.inner.bus.client().clone();
        tokio::spawn(async move {
            let Ok(mut updates) = client
                .subscribe(sophia_proto::subject::RESOURCE_UPDATED)
                .await
            else {
                tracing::warn!("could not subscribe to resource updates");
                return;
            };
            while let Some(msg) = futures::StreamExt::next(&mut updates).await {
                let Some(inner) = weak.upgrade() else { break };
                let Ok(update) =
                    sophia_proto::decode::<sophia_proto::ResourceUpdated>(&msg.payload)
                else {
                    continue;
                };
                let peers: Vec<Peer<RoleServer>> = {
                    let mut subs = inner.subscriptions.lock().expect("subscriptions lock");
                    let Some(list) = subs.get_mut(&update.uri) else {
                        continue;
                    };
                    list.retain(|(_, p)| !p.is_transport_closed());
                    list.iter().map(|(_, p)| p.clone()).collect()
                };
                for peer in peers {
                    let uri = update.uri.clone();
                    tokio::spawn(async move {
                        let param = serde_json::from_value(json!({ "uri": uri }));
                        if let Ok(param) = param
                            && let Err(e) = peer.notify_resource_updated(param).await
                        {
                            tracing::debug!(cause = %e, "could not relay a resource update");
                        }
                    });
                }
            }
        });
    }

    /// The handler for a new session: shared state, fresh session state.
    pub fn for_session(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            log_level: Arc::new(std::sync::atomic::AtomicU8::new(NO_LOG_LEVEL)),
            session_key: SESSION_KEYS.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            results: self.results.clone(),
        }
    }

    /// This handler, sending results over [`crate::results::INLINE_LIMIT`]
    /// in parts kept in `results` (for HTTP clients).
    pub fn with_large_results(mut self, results: crate::results::LargeResults) -> Self {
        self.results = Some(results);
        self
    }

    fn log_threshold(&self) -> Option<u8> {
        match self.log_level.load(std::sync::atomic::Ordering::Relaxed) {
            NO_LOG_LEVEL => None,
            rank => Some(rank),
        }
    }

    /// Sends `notifications/tools/list_changed` to every live session each
    /// time the registry's tool list changes.
    fn spawn_list_changed(&self) {
        self.spawn_notify_sessions(self.inner.registry.subscribe(), |peer| {
            Box::pin(async move { peer.notify_tool_list_changed().await })
        });
    }

    /// Sends `notifications/resources/list_changed` and
    /// `notifications/prompts/list_changed` to every live session each time
    /// the resources, templates or prompts on offer change.
    fn spawn_offers_changed(&self) {
        self.spawn_notify_sessions(self.inner.registry.subscribe_offers(), |peer| {
            Box::pin(async move {
                peer.notify_resource_list_changed().await?;
                peer.notify_prompt_list_changed().await
            })
        });
    }

    /// Each time `changes` moves, runs `notify` for every live session.
    fn spawn_notify_sessions(
        &self,
        mut changes: tokio::sync::watch::Receiver<u64>,
        notify: fn(Peer<RoleServer>) -> BoxFuture<'static, Result<(), rmcp::service::ServiceError>>,
    ) {
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            while changes.changed().await.is_ok() {
                let Some(inner) = weak.upgrade() else { break };
                let peers: Vec<_> = {
                    let mut peers = inner.peers.lock().expect("peers lock");
                    peers.retain(|p| !p.is_transport_closed());
                    peers.clone()
                };
                tracing::debug!(
                    sessions = peers.len(),
                    "notifying sessions of a list change"
                );
                for peer in peers {
                    tokio::spawn(async move {
                        if let Err(e) = notify(peer).await {
                            tracing::debug!(cause = %e, "could not notify a session");
                        }
                    });
                }
            }
        });
    }

    /// Asks the worker service that owns a resource, prompt or completion,
    /// over the bus; its MCP result as JSON.
    async fn ask_service(
        &self,
        service: &str,
        method: McpMethod,
        params: Value,
        context: &RequestContext<RoleServer>,
    ) -> Result<Value, McpError> {
        let span = server_span(method.mcp_name(), None, context, vec![]);
        let spec = CallSpec {
            tool: method.as_str(),
            category: sophia_proto::Category::CodeGeneration,
            subject: Some(sophia_proto::subject::mcp(service, method)),
            args: params,
            timeout: self.inner.limits.default_timeout,
            caller: self.caller(context),
            trace: span.trace(),
            // Reads of resources and prompts have no side effect.
            liveness: sophia_kit::bus::Liveness {
                acked: false,
                retry: true,
            },
        };
        let outcome = self.inner.bus.call(spec, None, &context.ct).await;
        if let Err(e) = &outcome {
            span.fail_code(e.code());
        }
        match outcome {
            Ok(reply) if !reply.output.is_error => reply.output.structured.ok_or_else(|| {
                McpError::internal_error(
                    format!("worker {service} answered without a result"),
                    None,
                )
            }),
            Ok(reply) => Err(McpError::internal_error(
                format!("worker {service} failed: {:?}", reply.output.content),
                None,
            )),
            Err(CallError::Worker(e)) if e.code == ErrorCode::InvalidArguments => {
                Err(McpError::invalid_params(e.message, None))
            }
            Err(e) => Err(McpError::internal_error(
                format!("{e} (worker {service})"),
                None,
            )),
        }
    }

    fn caller(&self, context: &RequestContext<RoleServer>) -> Caller {
        let parts = context.extensions.get::<http::request::Parts>();
        let principal = parts
            .and_then(|p| p.extensions.get::<Principal>())
            .map(|p| p.0.clone())
            .unwrap_or_else(|| self.inner.local_principal.clone());
        let session = parts
            .and_then(|p| p.headers.get("mcp-session-id"))
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        Caller {
            principal,
            session,
            via: "sophia-gateway".into(),
        }
    }
}

/// How a tool call made outside MCP (the REST shortcuts) failed.
#[derive(Debug, thiserror::Error)]
pub enum DirectCallError {
    /// No live worker offers the tool.
    #[error("no live worker offers `{0}`; is its worker running?")]
    UnknownTool(String),
    /// The bus is down.
    #[error("{0}")]
    BusDown(String),
    /// The arguments do not fit the tool's schema.
    #[error("invalid arguments for `{tool}`: {}", problems.join("; "))]
    InvalidArguments {
        /// The tool.
        tool: String,
        /// What is wrong.
        problems: Vec<String>,
    },
    /// The call itself failed.
    #[error(transparent)]
    Call(#[from] CallError),
}

impl McpGateway {
    /// Calls `name` as `tools/call` would (schema check, deadline, bus), for
    /// callers that are not MCP clients, such as the REST shortcuts.
    pub async fn call_direct(
        &self,
        name: &str,
        args: Value,
        principal: &str,
    ) -> Result<ToolOutput, DirectCallError> {
        if let Some(down) = self.inner.link.down_message() {
            return Err(DirectCallError::BusDown(down));
        }
        let entry = self
            .inner
            .registry
            .get(name)
            .ok_or_else(|| DirectCallError::UnknownTool(sophia_kit::vetting::shown(name)))?;
        let problems = sophia_kit::schema::problems(&entry.validator, &args);
        if !problems.is_empty() {
            return Err(DirectCallError::InvalidArguments {
                tool: name.to_owned(),
                problems,
            });
        }
        let spec = &entry.spec;
        let timeout = spec
            .timeout_ms
            .map(Duration::from_millis)
            .unwrap_or(self.inner.limits.default_timeout)
            .min(self.inner.limits.max_timeout);
        let started = Instant::now();
        let span = Span::start(
            format!("tools/call {name}"),
            SpanKind::Server,
            &headers::Context::default(),
            vec![
                KeyValue::new(attr::TOOL_NAME, name.to_owned()),
                KeyValue::new(attr::GEN_AI_OPERATION, "execute_tool"),
                KeyValue::new(attr::CATEGORY, spec.category.to_string()),
                KeyValue::new(attr::NETWORK_TRANSPORT, "tcp"),
                KeyValue::new("sophia.via", "rest"),
            ],
        );
        let call = CallSpec {
            tool: &spec.name,
            category: spec.category,
            subject: None,
            args,
            timeout,
            caller: Caller {
                principal: principal.to_owned(),
                session: None,
                via: "sophia-gateway (REST)".into(),
            },
            trace: span.trace(),
            liveness: liveness(&entry),
        };
        let outcome = self
            .inner
            .bus
            .call(call, None, &tokio_util::sync::CancellationToken::new())
            .await;
        let label = match &outcome {
            Ok(_) => "ok",
            Err(e) => e.code().as_str(),
        };
        if let Err(e) = &outcome {
            span.fail_code(e.code());
            self.inner.faults.note(&entry.service, e);
        }
        self.inner.metrics.record(spec, label, started);
        Ok(outcome?.output)
    }
}

/// Trace context from the HTTP `traceparent` header, else from the request's
/// `_meta` (MCP SEP-414).
fn trace_context(context: &RequestContext<RoleServer>) -> headers::Context {
    let parts = context.extensions.get::<http::request::Parts>();
    let header = |name: &str| {
        parts
            .and_then(|p| p.headers.get(name))
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let traceparent = header(headers::TRACEPARENT)
        .or_else(|| context.meta.get_traceparent().map(str::to_owned))
        .filter(|t| headers::is_traceparent(t));
    // tracestate only means something alongside its traceparent.
    let tracestate = traceparent.as_ref().and_then(|_| {
        header(headers::TRACESTATE)
            .or_else(|| context.meta.get_tracestate().map(str::to_owned))
            .filter(|s| !s.is_empty() && s.len() <= 512)
    });
    headers::Context {
        request_id: None,
        traceparent,
        tracestate,
    }
}

/// One page of an MCP list result (`{"<key>": [...], "nextCursor"?}`) of
/// the offers in `offers`, as their workers announced them.
fn offers_list<T: serde::de::DeserializeOwned>(
    key: &str,
    offers: &std::collections::BTreeMap<String, (String, Value)>,
    request: Option<PaginatedRequestParams>,
) -> Result<T, McpError> {
    let cursor = request.and_then(|r| r.cursor);
    let (items, next) = crate::paging::page(
        offers.iter().map(|(k, (_, item))| (k.as_str(), item)),
        cursor.as_deref(),
    )?;
    let mut list = json!({ key: items });
    if let Some(next) = next {
        list["nextCursor"] = json!(next);
    }
    from_json(list)
}

/// The gateway's span for one MCP request (`<method> <target>`, kind
/// server), a child of the client's trace context when it sent one.
fn server_span(
    method: &str,
    target: Option<&str>,
    context: &RequestContext<RoleServer>,
    mut attributes: Vec<KeyValue>,
) -> Span {
    let parts = context.extensions.get::<http::request::Parts>();
    attributes.push(KeyValue::new(attr::MCP_METHOD, method.to_owned()));
    attributes.push(KeyValue::new(
        attr::JSONRPC_REQUEST_ID,
        context.id.to_string(),
    ));
    attributes.push(KeyValue::new(
        attr::NETWORK_TRANSPORT,
        if parts.is_some() { "tcp" } else { "pipe" },
    ));
    if let Some(session) = parts
        .and_then(|p| p.headers.get("mcp-session-id"))
        .and_then(|v| v.to_str().ok())
    {
        attributes.push(KeyValue::new(attr::MCP_SESSION, session.to_owned()));
    }
    if let Some(info) = context.peer.peer_info() {
        attributes.push(KeyValue::new(
            attr::MCP_PROTOCOL_VERSION,
            info.protocol_version.to_string(),
        ));
    }
    let name = match target {
        Some(t) => format!("{method} {t}"),
        None => method.to_owned(),
    };
    Span::start(name, SpanKind::Server, &trace_context(context), attributes)
}

async fn next_question(
    questions: &mut Option<mpsc::Receiver<ClientQuestion>>,
) -> Option<ClientQuestion> {
    match questions {
        Some(q) => q.recv().await,
        None => std::future::pending().await,
    }
}

/// What the session's client can answer mid-call.
fn client_can(peer: &Peer<RoleServer>) -> ClientCan {
    let capabilities = peer.peer_info().map(|i| i.capabilities.clone());
    ClientCan {
        elicit: peer
            .supported_elicitation_modes()
            .contains(&ElicitationMode::Form),
        sample: capabilities.as_ref().is_some_and(|c| c.sampling.is_some()),
        roots: capabilities.as_ref().is_some_and(|c| c.roots.is_some()),
    }
}

/// Puts a worker's question to the MCP client (elicitation, sampling or
/// roots) and sends the client's answer back to the worker.
async fn ask(peer: Peer<RoleServer>, question: ClientQuestion, timeout: Duration) {
    match relay_question(&peer, &question.ask.question, timeout).await {
        Ok(result) => question.answer(result).await,
        Err(e) => question.fail(e).await,
    }
}

// Sampling and roots are deprecated by SEP-2577 in rmcp, but clients speaking
// the 2025 revisions (Cursor among them) use them.
#[allow(deprecated)]
async fn relay_question(
    peer: &Peer<RoleServer>,
    question: &Question,
    timeout: Duration,
) -> Result<Value, WireError> {
    let unanswered = |e: &dyn std::fmt::Display| {
        WireError::new(
            ErrorCode::Unavailable,
            format!("the client did not answer: {e}"),
        )
    };
    let to_json =
        |v: Result<Value, serde_json::Error>| v.map_err(|e| WireError::internal(e.to_string()));
    match question {
        Question::Elicit { message, schema } => {
            let schema = schema
                .as_object()
                .cloned()
                .ok_or_else(|| "the schema is not a JSON object".to_owned())
                .and_then(|o| ElicitationSchema::from_json_schema(o).map_err(|e| e.to_string()))
                .map_err(|why| {
                    WireError::invalid_arguments(format!(
                        "the question's schema is not one MCP elicitation allows (a flat object \
                         of primitive properties): {why}"
                    ))
                })?;
            let params = ElicitRequestParams::FormElicitationParams {
                meta: None,
                message: message.clone(),
                requested_schema: schema,
            };
            let result = peer
                .create_elicitation_with_timeout(params, Some(timeout))
                .await
                .map_err(|e| unanswered(&e))?;
            to_json(serde_json::to_value(result))
        }
        Question::Sample { params } => {
            let params: CreateMessageRequestParams = serde_json::from_value(params.clone())
                .map_err(|e| {
                    WireError::invalid_arguments(format!(
                        "not MCP sampling parameters (messages, maxTokens, ...): {e}"
                    ))
                })?;
            let result = tokio::time::timeout(timeout, peer.create_message(params))
                .await
                .map_err(|_| {
                    WireError::new(ErrorCode::Timeout, "the client did not answer in time")
                })?
                .map_err(|e| unanswered(&e))?;
            to_json(serde_json::to_value(result))
        }
        Question::Roots => {
            let result = tokio::time::timeout(timeout, peer.list_roots())
                .await
                .map_err(|_| {
                    WireError::new(ErrorCode::Timeout, "the client did not answer in time")
                })?
                .map_err(|e| unanswered(&e))?;
            to_json(serde_json::to_value(result))
        }
    }
}

async fn next_progress(route: &mut Option<ProgressRoute>) -> Option<Progress> {
    match route {
        Some(r) => r.next().await,
        None => std::future::pending().await,
    }
}

impl ServerHandler for McpGateway {
    #[allow(deprecated)] // logging: see relay_log
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            serde_json::from_value::<ServerCapabilities>(json!({
                "tools": {"listChanged": true},
                "logging": {},
                "resources": {"subscribe": true, "listChanged": true},
                "prompts": {"listChanged": true},
                "completions": {},
            }))
            .expect("server capabilities"),
        )
        .with_server_info(Implementation::new(
            "sophia-gateway",
            env!("CARGO_PKG_VERSION"),
        ))
        .with_instructions(
            "Sophia Mesh: the tools listed are served by live workers on the mesh, \
             grouped by category (business_intelligence, infrastructure, code_generation). \
             The list changes as workers join and leave.",
        )
    }

    async fn list_resources(
        &self,
        request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<rmcp::model::ListResourcesResult, McpError> {
        offers_list("resources", &self.inner.registry.view().resources, request)
    }

    async fn list_resource_templates(
        &self,
        request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<rmcp::model::ListResourceTemplatesResult, McpError> {
        offers_list(
            "resourceTemplates",
            &self.inner.registry.view().templates,
            request,
        )
    }

    async fn read_resource(
        &self,
        request: rmcp::model::ReadResourceRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<rmcp::model::ReadResourceResponse, McpError> {
        if let Some(results) = self
            .results
            .as_ref()
            .filter(|_| crate::results::is_part(&request.uri))
        {
            let reader = self.caller(&context).principal;
            return Ok(results.read(&request.uri, &reader).await?.into());
        }
        let service = self.resource_owner(&request.uri)?;
        let result = self
            .ask_service(
                &service,
                McpMethod::ReadResource,
                json!({"uri": request.uri}),
                &context,
            )
            .await?;
        Ok(from_json::<rmcp::model::ReadResourceResult>(result)?.into())
    }

    async fn subscribe(
        &self,
        request: rmcp::model::SubscribeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        self.resource_owner(&request.uri)?;
        let mut subs = self.inner.subscriptions.lock().expect("subscriptions lock");
        let list = subs.entry(request.uri).or_default();
        if !list.iter().any(|(k, _)| *k == self.session_key) {
            list.push((self.session_key, context.peer));
        }
        Ok(())
    }

    async fn unsubscribe(
        &self,
        request: rmcp::model::UnsubscribeRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        self.resource_owner(&request.uri)?;
        let mut subs = self.inner.subscriptions.lock().expect("subscriptions lock");
        if let Some(list) = subs.get_mut(&request.uri) {
            list.retain(|(k, _)| *k != self.session_key);
        }
        Ok(())
    }

    async fn list_prompts(
        &self,
        request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<rmcp::model::ListPromptsResult, McpError> {
        offers_list("prompts", &self.inner.registry.view().prompts, request)
    }

    async fn get_prompt(
        &self,
        request: rmcp::model::GetPromptRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<rmcp::model::GetPromptResponse, McpError> {
        let view = self.inner.registry.view();
        let Some((service, _)) = view.prompts.get(&request.name) else {
            return Err(McpError::invalid_params(
                format!(
                    "unknown prompt {:?}: see prompts/list",
                    sophia_kit::vetting::shown(&request.name)
                ),
                None,
            ));
        };
        let params = serde_json::to_value(&request).unwrap_or_default();
        let result = self
            .ask_service(service, McpMethod::GetPrompt, params, &context)
            .await?;
        Ok(from_json::<rmcp::model::GetPromptResult>(result)?.into())
    }

    async fn complete(
        &self,
        request: rmcp::model::CompleteRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<rmcp::model::CompleteResult, McpError> {
        let params = serde_json::to_value(&request).unwrap_or_default();
        let view = self.inner.registry.view();
        let owner = match params["ref"]["type"].as_str() {
            Some("ref/prompt") => params["ref"]["name"]
                .as_str()
                .and_then(|n| view.prompts.get(n))
                .map(|(s, _)| s.clone()),
            Some("ref/resource") => params["ref"]["uri"].as_str().and_then(|u| {
                view.templates
                    .get(u)
                    .map(|(s, _)| s.clone())
                    .or_else(|| view.resource_owner(u).map(str::to_owned))
            }),
            _ => None,
        };
        let Some(service) = owner.filter(|s| view.completers.contains(s)) else {
            // Nothing to suggest is a valid answer, not an error.
            return from_json(json!({"completion": {"values": [], "total": 0, "hasMore": false}}));
        };
        let result = self
            .ask_service(&service, McpMethod::Complete, params, &context)
            .await?;
        from_json(result)
    }

    #[allow(deprecated)] // logging: see relay_log
    async fn set_level(
        &self,
        request: rmcp::model::SetLevelRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        let name = serde_json::to_value(request.level)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        let rank = log_rank(&name)
            .ok_or_else(|| McpError::invalid_params(format!("unknown log level {name:?}"), None))?;
        self.log_level
            .store(rank, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    fn supported_protocol_versions(&self) -> Cow<'static, [ProtocolVersion]> {
        // Session-based revisions only for now; see docs/architecture.md.
        Cow::Borrowed(ProtocolVersion::known_up_to(&ProtocolVersion::V_2025_11_25))
    }

    async fn initialize(
        &self,
        request: InitializeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<InitializeResult, McpError> {
        context.peer.set_peer_info(request.clone());
        self.inner
            .peers
            .lock()
            .expect("peers lock")
            .push(context.peer.clone());
        self.negotiate_initialize(&request)
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        self.inner.registry.get(name).map(|e| e.mcp.clone())
    }

    async fn list_tools(
        &self,
        request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        // Replicas starting together join one after another: answer once
        // they have (at once on a gateway that has been up a while).
        self.inner
            .registry
            .settled(DISCOVERY_QUIET, DISCOVERY_CAP)
            .await;
        let view = self.inner.registry.view();
        if view.tools.is_empty()
            && let Some(down) = self.inner.link.down_message()
        {
            return Err(McpError::internal_error(
                format!("no tools to list: {down}"),
                None,
            ));
        }
        let cursor = request.and_then(|r| r.cursor);
        let (tools, next) = crate::paging::page(
            view.tools.iter().map(|(name, e)| (name.as_str(), &e.mcp)),
            cursor.as_deref(),
        )?;
        let mut result = ListToolsResult::with_all_items(tools.into_iter().cloned().collect());
        result.next_cursor = next;
        Ok(result)
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let started = Instant::now();
        let span = server_span(
            "tools/call",
            Some(&sophia_kit::vetting::shown(&request.name)),
            &context,
            vec![
                KeyValue::new(attr::TOOL_NAME, sophia_kit::vetting::shown(&request.name)),
                KeyValue::new(attr::GEN_AI_OPERATION, "execute_tool"),
            ],
        );
        if let Some(down) = self.inner.link.down_message() {
            span.fail(ErrorCode::Unavailable.as_str(), "bus down");
            return Ok(error_result(ErrorCode::Unavailable, down, None).into());
        }
        let Some(entry) = self.inner.registry.get(&request.name) else {
            span.fail(ErrorCode::UnknownTool.as_str(), "unknown tool");
            return Err(McpError::invalid_params(
                format!(
                    "unknown tool `{}`: no live worker offers it. Call tools/list for the tools on offer now",
                    sophia_kit::vetting::shown(&request.name)
                ),
                None,
            ));
        };
        let spec = &entry.spec;
        let args = Value::Object(request.arguments.unwrap_or_default());
        let problems = sophia_kit::schema::problems(&entry.validator, &args);
        if !problems.is_empty() {
            span.fail(ErrorCode::InvalidArguments.as_str(), "invalid arguments");
            self.inner
                .metrics
                .record(spec, "invalid_arguments", started);
            return Ok(error_result(
                ErrorCode::InvalidArguments,
                format!(
                    "invalid arguments for `{}`: {}. Fix them to match the tool's input schema and call again",
                    spec.name,
                    problems.join("; ")
                ),
                Some(json!({ "errors": problems })),
            )
            .into());
        }
        let timeout = spec
            .timeout_ms
            .map(Duration::from_millis)
            .unwrap_or(self.inner.limits.default_timeout)
            .min(self.inner.limits.max_timeout);
        let token = context.meta.get_progress_token();
        // A client that can answer questions gets a route for them (and
        // for progress, if it asked for that too).
        let can = client_can(&context.peer);
        let logs = self.log_threshold();
        let mut route = if can.any() {
            Some(self.inner.bus.route_with_questions(can))
        } else {
            (token.is_some() || logs.is_some()).then(|| self.inner.bus.progress_route())
        };
        let mut questions = route.as_mut().and_then(ProgressRoute::take_questions);
        let call_spec = CallSpec {
            tool: &spec.name,
            category: spec.category,
            subject: None,
            args,
            timeout,
            caller: self.caller(&context),
            trace: span.trace(),
            liveness: liveness(&entry),
        };
        span.set(KeyValue::new(attr::CATEGORY, spec.category.to_string()));
        let _in_flight = self.inner.metrics.in_flight(spec);
        let call = self.inner.bus.call(
            call_spec,
            route.as_ref().map(sophia_kit::bus::ProgressRoute::target),
            &context.ct,
        );
        tokio::pin!(call);
        let outcome = loop {
            tokio::select! {
                outcome = &mut call => break outcome,
                Some(p) = next_progress(&mut route) => {
                    relay(&context.peer, token.as_ref(), logs, p).await
                }
                Some(q) = next_question(&mut questions) => {
                    // Answered on the side: the person may take a while,
                    // and progress and cancellation must go on meanwhile.
                    tokio::spawn(ask(context.peer.clone(), q, timeout));
                }
            }
        };
        if let (Ok(reply), Some(r)) = (&outcome, route.as_mut()) {
            for p in r.drain(reply.progress_sent, PROGRESS_PATIENCE).await {
                relay(&context.peer, token.as_ref(), logs, p).await;
            }
        }
        drop(route);
        let result = match outcome {
            Ok(reply) => {
                let label = if reply.output.is_error {
                    span.fail("tool_error", "the tool reported an error");
                    "tool_error"
                } else {
                    "ok"
                };
                self.inner.metrics.record(spec, label, started);
                to_mcp(reply.output)
            }
            Err(e) => {
                let code = e.code();
                span.fail_code(code);
                self.inner.metrics.record(spec, code.as_str(), started);
                tracing::info!(tool = %spec.name, code = %code, cause = %e, "tool call failed");
                self.inner.faults.note(&entry.service, &e);
                let data = match &e {
                    CallError::Worker(w) => w.data.clone(),
                    _ => None,
                };
                error_result(code, e.to_string(), data)
            }
        };
        let result = match &self.results {
            Some(results) => results.fit(result, &self.caller(&context).principal).await,
            None => result,
        };
        Ok(result.into())
    }
}

/// What a call of `entry` does if its replica is lost: read-only and
/// idempotent tools run once more elsewhere; others end with `worker_lost`.
fn liveness(entry: &crate::registry::ToolEntry) -> sophia_kit::bus::Liveness {
    sophia_kit::bus::Liveness {
        acked: entry.acked,
        retry: entry.spec.hints.read_only || entry.spec.hints.idempotent,
    }
}

/// Relays a worker's progress step (if the client sent a progress token) or
/// log record (if it is at or above the level the client set).
async fn relay(
    peer: &Peer<RoleServer>,
    token: Option<&rmcp::model::ProgressToken>,
    log_threshold: Option<u8>,
    p: Progress,
) {
    if let Some(record) = p.log {
        if let (Some(rank), Some(threshold)) = (log_rank(&record.level), log_threshold)
            && rank >= threshold
        {
            relay_log(peer, record).await;
        }
        return;
    }
    let Some(token) = token else { return };
    let mut param = ProgressNotificationParam::new(token.clone(), p.progress);
    if let Some(total) = p.total {
        param = param.with_total(total);
    }
    if let Some(message) = p.message {
        param = param.with_message(message);
    }
    if let Err(e) = peer.notify_progress(param).await {
        tracing::debug!(cause = %e, "could not relay progress");
    }
}

// Logging is deprecated by SEP-2577 in rmcp; clients speaking the 2025
// revisions use it.
#[allow(deprecated)]
async fn relay_log(peer: &Peer<RoleServer>, record: sophia_proto::LogRecord) {
    let param = serde_json::from_value::<rmcp::model::LoggingMessageNotificationParam>(json!({
        "level": record.level, "logger": record.logger, "data": record.data}));
    match param {
        Ok(param) => {
            if let Err(e) = peer.notify_logging_message(param).await {
                tracing::debug!(cause = %e, "could not relay a log record");
            }
        }
        Err(e) => tracing::debug!(cause = %e, "dropping a malformed log record"),
    }
}

/// An rmcp result from its MCP JSON form.
fn from_json<T: serde::de::DeserializeOwned>(value: Value) -> Result<T, McpError> {
    serde_json::from_value(value.clone()).map_err(|e| {
        McpError::internal_error(
            format!("a worker's answer is not valid MCP ({e}): {value}"),
            None,
        )
    })
}

/// A tool result carrying an error the model and the person can read; the
/// machine-readable code is in `_meta["sophia/error"]`.
fn error_result(code: ErrorCode, message: String, data: Option<Value>) -> CallToolResult {
    let mut result = CallToolResult::error(vec![ContentBlock::text(message)]);
    let mut meta = serde_json::Map::new();
    meta.insert(
        "sophia/error".into(),
        json!({ "code": code.as_str(), "retryable": code.is_retryable(), "data": data }),
    );
    result.meta = Some(MetaObject(meta));
    result
}

/// A content block from its MCP JSON form (the wire shape is the spec's, so
/// this cannot drift from what clients read).
fn mcp_block(value: Value) -> ContentBlock {
    serde_json::from_value(value.clone()).unwrap_or_else(|e| {
        ContentBlock::text(format!(
            "(content the gateway could not relay: {e}: {value})"
        ))
    })
}

fn to_mcp(output: ToolOutput) -> CallToolResult {
    let b64 = base64::engine::general_purpose::STANDARD;
    let content = output
        .content
        .into_iter()
        .map(|c| match c {
            Content::Text { text } => ContentBlock::text(text),
            Content::Image { data, mime_type } => ContentBlock::image(b64.encode(data), mime_type),
            Content::Audio { data, mime_type } => ContentBlock::audio(b64.encode(data), mime_type),
            Content::Resource {
                uri,
                mime_type,
                text,
                blob,
            } => {
                let mut resource = json!({"uri": uri});
                if let Some(m) = mime_type {
                    resource["mimeType"] = json!(m);
                }
                match (text, blob) {
                    (_, Some(blob)) => resource["blob"] = json!(b64.encode(blob)),
                    (text, None) => resource["text"] = json!(text.unwrap_or_default()),
                }
                mcp_block(json!({"type": "resource", "resource": resource}))
            }
            Content::ResourceLink {
                uri,
                name,
                mime_type,
                description,
            } => {
                let mut link = json!({"type": "resource_link", "uri": uri, "name": name});
                if let Some(m) = mime_type {
                    link["mimeType"] = json!(m);
                }
                if let Some(d) = description {
                    link["description"] = json!(d);
                }
                mcp_block(link)
            }
        })
        .collect();
    let mut result = if output.is_error {
        CallToolResult::error(content)
    } else {
        CallToolResult::success(content)
    };
    result.structured_content = output.structured;
    result
}
