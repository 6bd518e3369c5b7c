//! The MCP face of the gateway: an rmcp [`ServerHandler`] whose tools are the
//! ones live workers announce. This module holds the handler and delegates:
//! - [`call`]: `tools/call` (and the REST shortcuts) as one plan to the bus;
//! - [`relay`]: progress, log records and questions during a call;
//! - [`convert`]: worker outputs and refusals as MCP results;
//! - [`offers`]: resources, prompts, completions, subscriptions;
//! - [`notify`]: `list_changed` notifications; [`spans`]: server spans.
//!
//! `tools/list` reads the [`Registry`]. `tools/call` validates the arguments
//! against the tool's schema, hands the call to the [`Bus`], relays progress
//! as `notifications/progress`, and turns the outcome into a
//! `CallToolResult`. Every session's peer is kept so that registry changes
//! reach it as `notifications/tools/list_changed`.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
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
use sophia_kit::bus::{Bus, CallError, CallSpec, ClientCan, ClientQuestion, ProgressRoute, Target};
use sophia_kit::metrics::ToolCallMetrics;
use sophia_kit::telemetry::{Span, SpanKind, attr};

mod call;
mod convert;
mod guard;
mod notify;
mod offers;
mod relay;
mod rounds;
pub(crate) use rounds::is_stateless;
mod spans;
mod states;
mod tasks;

pub use call::{DirectCallError, Refusal};
use convert::{error_result, result_from_json, to_mcp};
use relay::{Relay, log_rank};
use spans::server_span;
pub use states::{KEYS_BUCKET, RequestStates, StateKeyError};

/// Who an HTTP request comes from, as authentication established it (API
/// key, OAuth access token, or the single gateway token), put in the
/// request's extensions by the auth layer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Identity {
    /// The principal, e.g. `alice` or the token's `sub`.
    pub principal: String,
    /// Its roles, which the policy maps to what it may call.
    pub roles: Vec<String>,
}

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
    /// The profile this endpoint serves (`/mcp/<profile>`); `None` on `/mcp`.
    profile: Option<Arc<sophia_kit::policy::Profile>>,
    /// What this session has been shown, past a profile's budget.
    shown: Arc<Mutex<guard::Shown>>,
    /// Seals `requestState` for stateless (2026-07-28) clients; a key of
    /// this process until [`McpGateway::with_request_states`] gives the
    /// replicas' shared one. `None` only if the OS gave no random bytes.
    states: Option<RequestStates>,
}

/// No `logging/setLevel` yet.
const NO_LOG_LEVEL: u8 = u8::MAX;

struct Inner {
    registry: Registry,
    bus: Bus,
    /// The bus link, to say so when it is down.
    link: sophia_kit::nats::Connection,
    limits: CallLimits,
    peers: Mutex<Vec<Peer<RoleServer>>>,
    metrics: ToolCallMetrics,
    /// Calls that ended because of a replica, for /health.
    faults: crate::faults::Faults,
    /// Resource subscriptions: URI → the sessions subscribed (by session key).
    subscriptions: Mutex<HashMap<String, Subscribers>>,
    /// Every resource update's URI, for `subscriptions/listen` streams.
    updates: tokio::sync::broadcast::Sender<String>,
    /// Policy, per-principal limits, audit.
    access: crate::access::Access,
    /// The calls the console shows.
    traffic: crate::console::Traffic,
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
    /// A handler over `registry` and `bus`.
    pub fn new(
        registry: Registry,
        bus: Bus,
        link: sophia_kit::nats::Connection,
        limits: CallLimits,
        metrics: ToolCallMetrics,
        faults: crate::faults::Faults,
        access: crate::access::Access,
    ) -> Self {
        let gw = Self {
            inner: Arc::new(Inner {
                registry,
                bus,
                link,
                limits,
                peers: Mutex::new(Vec::new()),
                metrics,
                faults,
                subscriptions: Mutex::new(HashMap::new()),
                updates: tokio::sync::broadcast::channel(256).0,
                access,
                traffic: Default::default(),
            }),
            log_level: Arc::new(std::sync::atomic::AtomicU8::new(NO_LOG_LEVEL)),
            session_key: 0,
            results: None,
            profile: None,
            shown: Arc::default(),
            states: RequestStates::ephemeral()
                .inspect_err(|e| tracing::error!(cause = %e, "stateless clients cannot be asked"))
                .ok(),
        };
        gw.spawn_list_changed();
        gw.spawn_offers_changed();
        gw.spawn_resource_updates();
        gw
    }

    /// The calls this gateway sent, for the console.
    pub fn traffic(&self) -> &crate::console::Traffic {
        &self.inner.traffic
    }

    /// The registry of live tools and replicas.
    pub fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    /// The bus link.
    pub fn link(&self) -> &sophia_kit::nats::Connection {
        &self.inner.link
    }

    /// The handler for a new session: shared state, fresh session state.
    pub fn for_session(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            log_level: Arc::new(std::sync::atomic::AtomicU8::new(NO_LOG_LEVEL)),
            session_key: SESSION_KEYS.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            results: self.results.clone(),
            profile: self.profile.clone(),
            shown: Arc::default(),
            states: self.states.clone(),
        }
    }

    /// This handler, sealing `requestState` with `states` (the key every
    /// replica shares, so a retry may reach any of them).
    pub fn with_request_states(mut self, states: RequestStates) -> Self {
        self.states = Some(states);
        self
    }

    /// This handler, serving `profile`'s subset of the tools.
    pub fn with_profile(mut self, profile: sophia_kit::policy::Profile) -> Self {
        self.profile = Some(Arc::new(profile));
        self
    }

    /// The gateway's policy, limits and audit.
    pub fn access(&self) -> &crate::access::Access {
        &self.inner.access
    }

    /// This handler, sending results over [`crate::results::INLINE_LIMIT`]
    /// in parts kept in `results` (for HTTP clients).
    pub fn with_large_results(mut self, results: crate::results::LargeResults) -> Self {
        self.results = Some(results);
        self
    }

    /// The lowest level of workers' log records to relay: the session's
    /// `logging/setLevel`, or a stateless request's own `_meta` log level.
    fn log_threshold(&self, context: &RequestContext<RoleServer>) -> Option<u8> {
        if let Some(level) = context.meta.log_level() {
            let name = serde_json::to_value(level).ok()?;
            return log_rank(name.as_str()?);
        }
        match self.log_level.load(std::sync::atomic::Ordering::Relaxed) {
            NO_LOG_LEVEL => None,
            rank => Some(rank),
        }
    }

    fn caller(&self, context: &RequestContext<RoleServer>) -> Caller {
        let parts = context.extensions.get::<http::request::Parts>();
        let identity = parts
            .and_then(|p| p.extensions.get::<Identity>())
            .cloned()
            .unwrap_or_else(|| self.inner.access.local.clone());
        let session = parts
            .and_then(|p| p.headers.get("mcp-session-id"))
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        Caller {
            principal: identity.principal,
            session,
            via: "sophia-gateway".into(),
            roles: identity.roles,
        }
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
                "extensions": {rmcp::model::TASKS_EXTENSION_ID: {}},
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
        self.offer_list_resources(request, _context).await
    }

    async fn list_resource_templates(
        &self,
        request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<rmcp::model::ListResourceTemplatesResult, McpError> {
        self.offer_list_resource_templates(request, _context).await
    }

    async fn read_resource(
        &self,
        request: rmcp::model::ReadResourceRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<rmcp::model::ReadResourceResponse, McpError> {
        self.offer_read_resource(request, context).await
    }

    async fn subscribe(
        &self,
        request: rmcp::model::SubscribeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        self.offer_subscribe(request, context).await
    }

    async fn unsubscribe(
        &self,
        request: rmcp::model::UnsubscribeRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        self.offer_unsubscribe(request, _context).await
    }

    async fn list_prompts(
        &self,
        request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<rmcp::model::ListPromptsResult, McpError> {
        self.offer_list_prompts(request, _context).await
    }

    async fn get_prompt(
        &self,
        request: rmcp::model::GetPromptRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<rmcp::model::GetPromptResponse, McpError> {
        self.offer_get_prompt(request, context).await
    }

    async fn complete(
        &self,
        request: rmcp::model::CompleteRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<rmcp::model::CompleteResult, McpError> {
        self.offer_complete(request, context).await
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
        // The session-based revisions (Cursor speaks 2025-06-18) and the
        // stateless 2026-07-28; see docs/mcp.md, "Protocol revisions".
        Cow::Borrowed(ProtocolVersion::known_up_to(&ProtocolVersion::V_2026_07_28))
    }

    fn accepted_subscription_filter(
        &self,
        requested: &rmcp::model::SubscriptionFilter,
    ) -> Option<rmcp::model::SubscriptionFilter> {
        Some(notify::accepted(requested))
    }

    async fn listen(
        &self,
        subscription: rmcp::service::SubscriptionContext,
    ) -> Result<(), McpError> {
        self.serve_subscription(subscription).await
    }

    async fn initialize(
        &self,
        request: InitializeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<InitializeResult, McpError> {
        context.peer.set_peer_info(request.clone());
        self.inner.peers.lock().push(context.peer.clone());
        // Over HTTP: the session's calls may take the fast path (crate::fast).
        if let Some(key) = context.extensions.get::<crate::live::LiveKey>() {
            let answers = relay::client_can(&context.peer).any();
            key.register(self.clone(), context.peer.clone(), answers);
        }
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
        let caller = self.caller(&_context);
        let visible = self.visible(&caller.roles, &view);
        self.remember_listed(&visible);
        let mut listed: Vec<(&str, Tool)> = visible
            .listed
            .iter()
            .map(|e| (e.spec.name.as_str(), e.mcp.clone()))
            .collect();
        if let Some(profile) = self.profile().filter(|_| !visible.hidden.is_empty()) {
            listed.push((
                guard::FIND_TOOLS,
                guard::find_tools_tool(profile, visible.hidden.len()),
            ));
            listed.sort_by(|a, b| a.0.cmp(b.0));
        }
        let cursor = request.and_then(|r| r.cursor);
        let (tools, next) = crate::paging::page(
            listed.iter().map(|(name, tool)| (*name, tool)),
            cursor.as_deref(),
        )?;
        let mut result = ListToolsResult::with_all_items(tools.into_iter().cloned().collect());
        result.next_cursor = next;
        Ok(result)
    }

    async fn get_task(
        &self,
        request: rmcp::model::GetTaskParams,
        context: RequestContext<RoleServer>,
    ) -> Result<rmcp::model::GetTaskResult, McpError> {
        self.task_get(request, context).await
    }

    async fn update_task(
        &self,
        request: rmcp::model::UpdateTaskParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        self.task_update(request, context).await
    }

    async fn cancel_task(
        &self,
        request: rmcp::model::CancelTaskParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        self.task_cancel(request, context).await
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        if is_stateless(&context) {
            self.shown.lock().stateless = true;
        }
        if request.name == guard::FIND_TOOLS && self.profile().is_some() {
            let args = request.arguments.unwrap_or_default();
            return self.find_tools(&args, &context).await.map(Into::into);
        }
        self.call_mcp(request, context).await
    }
}
