//! The bridge as an MCP client of one upstream server: what it declares,
//! and where the server's notifications and requests go.
//!
//! - Progress goes to the call whose request carried the token (rmcp's
//!   [`ProgressDispatcher`]).
//! - `tools/list_changed`, `resources/list_changed` and
//!   `prompts/list_changed` wake the server's supervisor (a [`Notify`], so a
//!   flood of them is one wake-up), which re-lists and rebuilds the worker.
//! - `resources/updated` goes to the supervisor on a bounded queue (a flood
//!   overflows it and is dropped), which tells the gateways.
//! - Sampling, elicitation and roots requests, and log records, go to a call
//!   in flight on this connection, which puts them to its own caller through
//!   the kit's question path. MCP over stdio does not say which request a
//!   server's request is for: with one call in flight it is that one; with
//!   several, the most recent (see docs/bridge.md, "What is not done yet").

#![expect(deprecated)] // sampling, roots and logging are SEP-2577-deprecated in rmcp

use std::sync::Arc;

use parking_lot::Mutex;
use rmcp::handler::client::progress::ProgressDispatcher;
use rmcp::model::{
    ClientConfig, CreateMessageRequestParams, CreateMessageResult, ElicitRequestParams,
    ElicitResult, Implementation, ListRootsResult, LoggingMessageNotificationParam,
    ProgressNotificationParam, ResourceUpdatedNotificationParam,
};
use rmcp::service::{NotificationContext, RequestContext};
use rmcp::{ClientHandler, ErrorData as McpError, RoleClient};
use serde_json::{Value, json};
use sophia_kit::WireError;
use tokio::sync::{Notify, mpsc, oneshot};
use uuid::Uuid;

/// How many resource updates may wait for the supervisor; more are dropped.
const UPDATES_QUEUED: usize = 64;

/// What an upstream server asks of the caller of a call in flight.
#[derive(Debug)]
pub(crate) enum Question {
    /// `sampling/createMessage` params, as JSON.
    Sample(Value),
    /// A form elicitation: message and requested schema.
    Elicit(String, Value),
    /// `roots/list`.
    Roots,
}

/// A question with the way back to the upstream server.
#[derive(Debug)]
pub(crate) enum Ask {
    /// A question; the answer is MCP result JSON.
    Question(Question, oneshot::Sender<Result<Value, WireError>>),
    /// A log record (`notifications/message`): level and data.
    Log(String, Value),
}

/// State shared by the connection's handler and the calls using it.
#[derive(Debug)]
pub(crate) struct Shared {
    /// The server's name, for logs and errors.
    pub server: String,
    /// Routes progress notifications to calls by token.
    pub progress: ProgressDispatcher,
    /// Woken by `notifications/{tools,resources,prompts}/list_changed`.
    pub list_changed: Notify,
    /// URIs from `notifications/resources/updated`, for the supervisor.
    pub updated: tokio::sync::Mutex<mpsc::Receiver<String>>,
    updated_tx: mpsc::Sender<String>,
    calls: Mutex<Vec<(Uuid, mpsc::Sender<Ask>)>>,
}

/// Removes a call from the in-flight list when dropped.
pub(crate) struct InFlight<'a> {
    shared: &'a Shared,
    id: Uuid,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.shared.calls.lock().retain(|(id, _)| *id != self.id);
    }
}

impl Shared {
    pub(crate) fn new(server: &str) -> Arc<Self> {
        let (updated_tx, updated) = mpsc::channel(UPDATES_QUEUED);
        Arc::new(Self {
            server: server.to_owned(),
            progress: ProgressDispatcher::new(),
            list_changed: Notify::new(),
            updated: tokio::sync::Mutex::new(updated),
            updated_tx,
            calls: Mutex::new(Vec::new()),
        })
    }

    /// Registers call `id` as in flight; what the server asks arrives on `tx`.
    pub(crate) fn in_flight(&self, id: Uuid, tx: mpsc::Sender<Ask>) -> InFlight<'_> {
        self.calls.lock().push((id, tx));
        InFlight { shared: self, id }
    }

    /// The call a server request is for: the most recent in flight.
    fn target(&self) -> Option<mpsc::Sender<Ask>> {
        let calls = self.calls.lock();
        if calls.len() > 1 {
            tracing::debug!(server = %self.server, in_flight = calls.len(),
                "a server request with several calls in flight goes to the most recent");
        }
        calls.last().map(|(_, tx)| tx.clone())
    }

    /// Puts `question` to the caller of a call in flight.
    async fn ask(&self, question: Question) -> Result<Value, McpError> {
        let Some(tx) = self.target() else {
            return Err(McpError::invalid_request(
                "no call is in flight through the Sophia bridge to put this request to",
                None,
            ));
        };
        let (reply, answer) = oneshot::channel();
        tx.send(Ask::Question(question, reply))
            .await
            .map_err(|_| McpError::invalid_request("the call that asked has ended", None))?;
        match answer.await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(McpError::internal_error(
                format!(
                    "the caller could not answer ({}): {}",
                    e.code.as_str(),
                    e.message
                ),
                None,
            )),
            Err(_) => Err(McpError::invalid_request(
                "the call that asked has ended",
                None,
            )),
        }
    }
}

/// The bridge's MCP client handler for one upstream connection.
pub(crate) struct Bridged(pub Arc<Shared>);

fn from_json<T: serde::de::DeserializeOwned>(what: &str, v: Value) -> Result<T, McpError> {
    serde_json::from_value(v).map_err(|e| {
        McpError::internal_error(format!("the caller's {what} is not valid MCP: {e}"), None)
    })
}

impl ClientHandler for Bridged {
    fn get_info(&self) -> ClientConfig {
        // Declared so that servers offer their sampling, elicitation and
        // roots tools; each request is put to the caller of the call.
        let capabilities = serde_json::from_value(json!({
            "sampling": {}, "elicitation": {"form": {}}, "roots": {}
        }))
        .unwrap_or_default();
        ClientConfig::new(
            capabilities,
            Implementation::new("sophia-mcp-bridge", env!("CARGO_PKG_VERSION")),
        )
    }

    async fn create_message(
        &self,
        params: CreateMessageRequestParams,
        _cx: RequestContext<RoleClient>,
    ) -> Result<CreateMessageResult, McpError> {
        let params = serde_json::to_value(&params)
            .map_err(|e| McpError::invalid_params(e.to_string(), None))?;
        let answer = self.0.ask(Question::Sample(params)).await?;
        from_json("sampling result", answer)
    }

    async fn create_elicitation(
        &self,
        request: ElicitRequestParams,
        _cx: RequestContext<RoleClient>,
    ) -> Result<ElicitResult, McpError> {
        let ElicitRequestParams::FormElicitationParams {
            message,
            requested_schema,
            ..
        } = request
        else {
            return Err(McpError::invalid_params(
                "the Sophia bridge relays form elicitation only, not URL elicitation",
                None,
            ));
        };
        let schema = serde_json::to_value(&requested_schema).unwrap_or_default();
        let answer = self.0.ask(Question::Elicit(message, schema)).await?;
        from_json("elicitation result", answer)
    }

    async fn list_roots(
        &self,
        _cx: RequestContext<RoleClient>,
    ) -> Result<ListRootsResult, McpError> {
        if self.0.target().is_none() {
            // Servers ask right after initialize, with no call to ask for.
            return Ok(ListRootsResult::default());
        }
        let answer = self.0.ask(Question::Roots).await?;
        from_json("roots", answer)
    }

    async fn on_progress(
        &self,
        params: ProgressNotificationParam,
        _cx: NotificationContext<RoleClient>,
    ) {
        self.0.progress.handle_notification(params).await;
    }

    async fn on_logging_message(
        &self,
        params: LoggingMessageNotificationParam,
        _cx: NotificationContext<RoleClient>,
    ) {
        let level = serde_json::to_value(params.level)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_else(|| "info".into());
        match self.0.target() {
            // Best effort, like progress: a full queue drops the record.
            Some(tx) => {
                let _ = tx.try_send(Ask::Log(level, params.data));
            }
            None => tracing::debug!(server = %self.0.server, level, "log record from the server"),
        }
    }

    async fn on_tool_list_changed(&self, _cx: NotificationContext<RoleClient>) {
        self.0.list_changed.notify_one();
    }

    async fn on_resource_list_changed(&self, _cx: NotificationContext<RoleClient>) {
        self.0.list_changed.notify_one();
    }

    async fn on_prompt_list_changed(&self, _cx: NotificationContext<RoleClient>) {
        self.0.list_changed.notify_one();
    }

    async fn on_resource_updated(
        &self,
        params: ResourceUpdatedNotificationParam,
        _cx: NotificationContext<RoleClient>,
    ) {
        if self.0.updated_tx.try_send(params.uri).is_err() {
            tracing::debug!(server = %self.0.server, "too many resource updates at once; dropped one");
        }
    }
}
