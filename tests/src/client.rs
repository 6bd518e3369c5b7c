//! A real MCP client (rmcp's) that records what the server sends it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rmcp::model::{ClientConfig, Implementation, ProgressNotificationParam};
use rmcp::service::{NotificationContext, RunningService};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{ClientHandler, RoleClient, ServiceExt};
use tokio::sync::watch;

/// Records notifications: `list_changed` count and progress.
#[derive(Clone)]
pub struct Recorder {
    /// How many `notifications/tools/list_changed` arrived.
    pub list_changed: watch::Sender<usize>,
    /// Every progress notification, in arrival order.
    pub progress: Arc<Mutex<Vec<ProgressNotificationParam>>>,
}

impl Default for Recorder {
    fn default() -> Self {
        Self {
            list_changed: watch::channel(0).0,
            progress: Default::default(),
        }
    }
}

impl ClientHandler for Recorder {
    fn get_info(&self) -> ClientConfig {
        ClientConfig::new(
            Default::default(),
            Implementation::new("sophia-test-client", "0.0.1"),
        )
    }

    async fn on_tool_list_changed(&self, _cx: NotificationContext<RoleClient>) {
        self.list_changed.send_modify(|n| *n += 1);
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

/// Connects with extra HTTP headers.
pub async fn connect_http_with(
    url: &str,
    token: &str,
    headers: HashMap<http::HeaderName, http::HeaderValue>,
) -> McpClient {
    crate::install_crypto();
    let transport = StreamableHttpClientTransport::from_config(
        StreamableHttpClientTransportConfig::with_uri(url.to_owned())
            .auth_header(token.to_owned())
            .custom_headers(headers),
    );
    Recorder::default()
        .serve(transport)
        .await
        .expect("MCP client connects and initializes")
}
