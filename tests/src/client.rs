//! A real MCP client (rmcp's) that records what the server sends it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rmcp::model::{
    ClientConfig, ElicitRequestParams, ElicitResult, ElicitationAction, Implementation,
    ProgressNotificationParam,
};
use rmcp::service::{NotificationContext, RequestContext, RunningService};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{ClientHandler, RoleClient, ServiceExt};
use tokio::sync::watch;

/// Records notifications: `list_changed` count and progress. With
/// [`Recorder::answering`], it also declares MCP elicitation and answers
/// questions the way a person in Cursor would, recording what it was asked.
#[derive(Clone)]
pub struct Recorder {
    /// How many `notifications/tools/list_changed` arrived.
    pub list_changed: watch::Sender<usize>,
    /// Every progress notification, in arrival order.
    pub progress: Arc<Mutex<Vec<ProgressNotificationParam>>>,
    /// Answers to give, in order; `None` means no elicitation capability.
    pub answers: Option<Arc<Mutex<std::collections::VecDeque<ElicitResult>>>>,
    /// The questions asked: message and requested schema.
    pub asked: Arc<Mutex<Vec<(String, serde_json::Value)>>>,
    /// With `Some`, declares sampling and answers every request with this
    /// text, recording the requests' parameters in `sampled`.
    pub sample_reply: Option<String>,
    /// Sampling requests received.
    pub sampled: Arc<Mutex<Vec<serde_json::Value>>>,
    /// With `Some`, declares roots and lists these URIs.
    pub roots: Option<Vec<String>>,
    /// Log records received (`notifications/message`), as JSON.
    pub logs: Arc<Mutex<Vec<serde_json::Value>>>,
    /// How many `notifications/resources/list_changed` and
    /// `notifications/prompts/list_changed` arrived.
    pub offers_changed: watch::Sender<usize>,
    /// URIs of `notifications/resources/updated` received.
    pub updated: watch::Sender<Vec<String>>,
}

impl Default for Recorder {
    fn default() -> Self {
        Self {
            list_changed: watch::channel(0).0,
            progress: Default::default(),
            answers: None,
            asked: Default::default(),
            sample_reply: None,
            sampled: Default::default(),
            roots: None,
            logs: Default::default(),
            offers_changed: watch::channel(0).0,
            updated: watch::channel(Vec::new()).0,
        }
    }
}

impl Recorder {
    /// A client that supports elicitation (form mode) and gives `answers`
    /// in order (declining once they run out).
    pub fn answering(answers: impl IntoIterator<Item = ElicitResult>) -> Self {
        Self {
            answers: Some(Arc::new(Mutex::new(answers.into_iter().collect()))),
            ..Self::default()
        }
    }
}

impl ClientHandler for Recorder {
    fn get_info(&self) -> ClientConfig {
        let mut declared = serde_json::Map::new();
        if self.answers.is_some() {
            declared.insert("elicitation".into(), serde_json::json!({"form": {}}));
        }
        if self.sample_reply.is_some() {
            declared.insert("sampling".into(), serde_json::json!({}));
        }
        if self.roots.is_some() {
            declared.insert("roots".into(), serde_json::json!({}));
        }
        let capabilities = serde_json::from_value(serde_json::Value::Object(declared))
            .expect("client capabilities");
        ClientConfig::new(
            capabilities,
            Implementation::new("sophia-test-client", "0.0.1"),
        )
    }

    async fn create_elicitation(
        &self,
        request: ElicitRequestParams,
        _cx: RequestContext<RoleClient>,
    ) -> Result<ElicitResult, rmcp::ErrorData> {
        if let ElicitRequestParams::FormElicitationParams {
            message,
            requested_schema,
            ..
        } = &request
        {
            let schema = serde_json::to_value(requested_schema).unwrap_or_default();
            self.asked
                .lock()
                .expect("asked lock")
                .push((message.clone(), schema));
        }
        let next = self
            .answers
            .as_ref()
            .and_then(|a| a.lock().expect("answers lock").pop_front());
        Ok(next.unwrap_or_else(|| ElicitResult::new(ElicitationAction::Decline)))
    }

    #[allow(deprecated)] // sampling and roots: see the gateway's relay_question
    async fn create_message(
        &self,
        params: rmcp::model::CreateMessageRequestParams,
        _cx: RequestContext<RoleClient>,
    ) -> Result<rmcp::model::CreateMessageResult, rmcp::ErrorData> {
        let Some(reply) = &self.sample_reply else {
            return Err(rmcp::ErrorData::method_not_found::<
                rmcp::model::CreateMessageRequestMethod,
            >());
        };
        self.sampled
            .lock()
            .expect("sampled lock")
            .push(serde_json::to_value(&params).unwrap_or_default());
        serde_json::from_value(serde_json::json!({"role": "assistant",
            "content": {"type": "text", "text": reply}, "model": "test-model"}))
        .map_err(|e| rmcp::ErrorData::internal_error(e.to_string(), None))
    }

    #[allow(deprecated)] // logging: see the gateway's relay_log
    async fn on_logging_message(
        &self,
        params: rmcp::model::LoggingMessageNotificationParam,
        _cx: NotificationContext<RoleClient>,
    ) {
        self.logs
            .lock()
            .expect("logs lock")
            .push(serde_json::to_value(&params).unwrap_or_default());
    }

    #[allow(deprecated)]
    async fn list_roots(
        &self,
        _cx: RequestContext<RoleClient>,
    ) -> Result<rmcp::model::ListRootsResult, rmcp::ErrorData> {
        let roots: Vec<serde_json::Value> = self
            .roots
            .iter()
            .flatten()
            .map(|uri| serde_json::json!({"uri": uri}))
            .collect();
        serde_json::from_value(serde_json::json!({ "roots": roots }))
            .map_err(|e| rmcp::ErrorData::internal_error(e.to_string(), None))
    }

    async fn on_tool_list_changed(&self, _cx: NotificationContext<RoleClient>) {
        self.list_changed.send_modify(|n| *n += 1);
    }

    async fn on_resource_list_changed(&self, _cx: NotificationContext<RoleClient>) {
        self.offers_changed.send_modify(|n| *n += 1);
    }

    async fn on_prompt_list_changed(&self, _cx: NotificationContext<RoleClient>) {
        self.offers_changed.send_modify(|n| *n += 1);
    }

    async fn on_resource_updated(
        &self,
        params: rmcp::model::ResourceUpdatedNotificationParam,
        _cx: NotificationContext<RoleClient>,
    ) {
        self.updated.send_modify(|u| u.push(params.uri.clone()));
    }

    async fn on_progress(
        &self,
        p: ProgressNotificationParam,
        _cx: NotificationContext<RoleClient>,
    ) {
        self.progress.lock().expect("progress lock").push(p);
    }
}

/// A connected MCP client.
pub type McpClient = RunningService<RoleClient, Recorder>;

/// Connects to `url` with bearer `token` over Streamable HTTP.
pub async fn connect_http(url: &str, token: &str) -> McpClient {
    connect_http_with(url, token, HashMap::new()).await
}

/// HTTP headers carrying W3C trace context `traceparent`, as a traced
/// client sends them.
pub fn traceparent_headers(traceparent: &str) -> HashMap<http::HeaderName, http::HeaderValue> {
    HashMap::from([(
        http::HeaderName::from_static("traceparent"),
        http::HeaderValue::from_str(traceparent).expect("a header value"),
    )])
}

/// Connects with extra HTTP headers.
pub async fn connect_http_with(
    url: &str,
    token: &str,
    headers: HashMap<http::HeaderName, http::HeaderValue>,
) -> McpClient {
    connect_http_as(url, token, headers, Recorder::default()).await
}

/// Connects with extra HTTP headers, as `recorder`.
pub async fn connect_http_as(
    url: &str,
    token: &str,
    headers: HashMap<http::HeaderName, http::HeaderValue>,
    recorder: Recorder,
) -> McpClient {
    crate::install_crypto();
    let transport = StreamableHttpClientTransport::from_config(
        StreamableHttpClientTransportConfig::with_uri(url.to_owned())
            .auth_header(token.to_owned())
            .custom_headers(headers),
    );
    recorder
        .serve(transport)
        .await
        .expect("MCP client connects and initializes")
}
