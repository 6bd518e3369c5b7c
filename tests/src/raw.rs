//! Raw HTTP to the gateway's `/mcp`, for requests no well-behaved MCP client
//! would send: malformed JSON-RPC, unknown methods, oversized bodies, foreign
//! origins.

use serde_json::{Value, json};

/// A hand-driven Streamable HTTP session.
pub struct RawSession {
    http: reqwest::Client,
    url: String,
    token: String,
    /// The `Mcp-Session-Id` once initialized.
    pub session: Option<String>,
}

/// A response: status and the JSON-RPC messages in its body (plain JSON or
/// the `data:` lines of an SSE stream).
#[derive(Debug)]
pub struct RawResponse {
    /// HTTP status.
    pub status: u16,
    /// The `Content-Type` (`application/json` or `text/event-stream`).
    pub content_type: String,
    /// JSON-RPC messages found in the body.
    pub messages: Vec<Value>,
    /// The body as text.
    pub body: String,
}

impl RawSession {
    /// A session against `url` with bearer `token` (not yet initialized).
    pub fn new(url: &str, token: &str) -> Self {
        crate::install_crypto();
        Self {
            http: reqwest::Client::new(),
            url: url.to_owned(),
            token: token.to_owned(),
            session: None,
        }
    }

    /// POSTs `body` as is, with the headers a correct client sends (`extra`
    /// adds to them, or replaces `MCP-Protocol-Version`).
    pub async fn post_raw(
        &self,
        body: impl Into<reqwest::Body>,
        extra: &[(&str, &str)],
    ) -> RawResponse {
        let mut req = self
            .http
            .post(&self.url)
            .header("Accept", "application/json, text/event-stream")
            .header("Content-Type", "application/json")
            .bearer_auth(&self.token)
            .body(body);
        if !extra
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("MCP-Protocol-Version"))
        {
            req = req.header("MCP-Protocol-Version", "2025-06-18");
        }
        if let Some(s) = &self.session {
            req = req.header("Mcp-Session-Id", s);
        }
        for (k, v) in extra {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.expect("HTTP request completes");
        let status = resp.status().as_u16();
        let content_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let body = resp.text().await.unwrap_or_default();
        let messages = parse_messages(&body);
        RawResponse {
            status,
            content_type,
            messages,
            body,
        }
    }

    /// The same session, sent to another URL (another gateway replica).
    pub fn moved_to(&self, url: &str) -> Self {
        Self {
            http: self.http.clone(),
            url: url.to_owned(),
            token: self.token.clone(),
            session: self.session.clone(),
        }
    }

    /// Opens the session's standalone SSE stream (`GET`), where the server
    /// sends what belongs to no request (questions to the person, log
    /// records, list changes).
    pub async fn listen(&self) -> SseReader {
        let mut req = self
            .http
            .get(&self.url)
            .header("Accept", "text/event-stream")
            .header("MCP-Protocol-Version", "2025-06-18")
            .bearer_auth(&self.token);
        if let Some(s) = &self.session {
            req = req.header("Mcp-Session-Id", s);
        }
        let resp = req.send().await.expect("HTTP request completes");
        assert_eq!(resp.status().as_u16(), 200, "the standalone stream opens");
        SseReader::new(resp)
    }

    /// Ends the session (`DELETE` with its `Mcp-Session-Id`); the status.
    pub async fn delete(&self) -> u16 {
        let mut req = self.http.delete(&self.url).bearer_auth(&self.token);
        if let Some(s) = &self.session {
            req = req.header("Mcp-Session-Id", s);
        }
        req.send()
            .await
            .expect("HTTP request completes")
            .status()
            .as_u16()
    }

    /// POSTs a JSON value.
    pub async fn post(&self, msg: Value) -> RawResponse {
        self.post_raw(msg.to_string(), &[]).await
    }

    /// Runs the initialize handshake (2025-06-18, as Cursor does) and returns
    /// the server's `InitializeResult`.
    pub async fn initialize(&mut self) -> Value {
        self.initialize_with("2025-06-18").await
    }

    /// Runs the initialize handshake asking for `version`.
    pub async fn initialize_with(&mut self, version: &str) -> Value {
        self.initialize_as(version, json!({})).await
    }

    /// Runs the initialize handshake asking for `version`, declaring the
    /// client `capabilities` (e.g. `{"elicitation": {}}`).
    pub async fn initialize_as(&mut self, version: &str, capabilities: Value) -> Value {
        let resp = self
            .http
            .post(&self.url)
            .header("Accept", "application/json, text/event-stream")
            .header("Content-Type", "application/json")
            .bearer_auth(&self.token)
            .body(
                json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
                    "protocolVersion": version, "capabilities": capabilities,
                    "clientInfo": {"name": "raw-test", "version": "0"}}})
                .to_string(),
            )
            .send()
            .await
            .expect("initialize");
        assert_eq!(resp.status().as_u16(), 200, "initialize accepted");
        self.session = resp
            .headers()
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = resp.text().await.unwrap_or_default();
        let result = parse_messages(&body)
            .into_iter()
            .find_map(|m| m.get("result").cloned())
            .unwrap_or_else(|| panic!("an InitializeResult: {body}"));
        let ack = self
            .post(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            .await;
        assert!(
            ack.status < 300,
            "initialized notification accepted: {}",
            ack.status
        );
        result
    }
}

fn parse_messages(body: &str) -> Vec<Value> {
    if let Ok(v) = serde_json::from_str::<Value>(body) {
        return vec![v];
    }
    body.lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .filter_map(|d| serde_json::from_str(d.trim()).ok())
        .collect()
}

/// The events of an SSE body as they arrive: `(id, JSON-RPC message)`.
pub struct SseReader {
    body: futures::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buf: String,
}

impl SseReader {
    /// Reads `resp`'s body.
    pub fn new(resp: reqwest::Response) -> Self {
        use futures::StreamExt;
        Self {
            body: resp.bytes_stream().boxed(),
            buf: String::new(),
        }
    }

    /// The next event carrying a message, with its id.
    pub async fn next(&mut self) -> Option<(Option<String>, Value)> {
        use futures::StreamExt;
        loop {
            while let Some(end) = self.buf.find("\n\n") {
                let event: String = self.buf.drain(..end + 2).collect();
                let mut id = None;
                let mut data = String::new();
                for line in event.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        id = Some(v.trim().to_owned());
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim());
                    }
                }
                if let Ok(message) = serde_json::from_str(&data) {
                    return Some((id, message));
                }
            }
            let chunk = tokio::time::timeout(crate::tools::WAIT, self.body.next())
                .await
                .expect("the stream goes on")?
                .ok()?;
            self.buf
                .push_str(&String::from_utf8_lossy(&chunk).replace("\r\n", "\n"));
        }
    }
}
