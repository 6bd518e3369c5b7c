//! A client of MCP 2026-07-28 driven by hand: no session, no `initialize`;
//! every request carries its protocol version and client capabilities in
//! `_meta` (and the `MCP-Protocol-Version`, `Mcp-Method`, `Mcp-Name`
//! headers). Each request may go to another gateway replica, as a load
//! balancer would send it.

use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Value, json};

use crate::raw::RawSession;

/// The revision spoken.
pub const VERSION: &str = "2026-07-28";

/// A stateless client with fixed capabilities.
pub struct Stateless {
    capabilities: Value,
    token: String,
    next_id: AtomicU64,
}

impl Stateless {
    /// A client declaring `capabilities` (e.g. `{"elicitation": {"form": {}}}`)
    /// with bearer `token`.
    pub fn new(capabilities: Value, token: &str) -> Self {
        Self {
            capabilities,
            token: token.to_owned(),
            next_id: AtomicU64::new(1),
        }
    }

    /// Sends `method` with `params` (its `_meta` is added) to the gateway at
    /// `url`; the JSON-RPC response (with `result` or `error`).
    pub async fn request(&self, url: &str, method: &str, mut params: Value) -> Value {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        params["_meta"] = json!({
            "io.modelcontextprotocol/protocolVersion": VERSION,
            "io.modelcontextprotocol/clientCapabilities": self.capabilities,
            "io.modelcontextprotocol/clientInfo": {"name": "stateless-test", "version": "0"},
        });
        // SEP-2243's `Mcp-Name`: the tool, prompt, resource or task named.
        let name = ["name", "uri", "taskId"]
            .iter()
            .find_map(|k| params[*k].as_str())
            .unwrap_or_default()
            .to_owned();
        let mut headers = vec![("MCP-Protocol-Version", VERSION), ("Mcp-Method", method)];
        if !name.is_empty() {
            headers.push(("Mcp-Name", name.as_str()));
        }
        let body = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        let response = RawSession::new(url, &self.token)
            .post_raw(body.to_string(), &headers)
            .await;
        response
            .messages
            .into_iter()
            .find(|m| m["id"] == id)
            .unwrap_or_else(|| {
                panic!(
                    "an answer to {method}: {} {}",
                    response.status, response.body
                )
            })
    }

    /// `tools/call` of `name` with `arguments`, plus `round` (the retry's
    /// `inputResponses` and `requestState`, or `{}`): the JSON-RPC response.
    pub async fn call(&self, url: &str, name: &str, arguments: Value, round: Value) -> Value {
        let mut params = json!({"name": name, "arguments": arguments});
        if let Value::Object(round) = round {
            for (k, v) in round {
                params[k] = v;
            }
        }
        self.request(url, "tools/call", params).await
    }

    /// `tasks/get` of task `id` at `url`, polled until `ready` holds for
    /// its result; panics with the last answer (naming `what`) after
    /// [`crate::tools::WAIT`].
    pub async fn task_when(
        &self,
        url: &str,
        id: &str,
        what: &str,
        ready: impl Fn(&Value) -> bool,
    ) -> Value {
        let last = std::sync::Mutex::new(Value::Null);
        let found = tokio::time::timeout(crate::tools::WAIT, async {
            loop {
                let r = self.request(url, "tasks/get", json!({"taskId": id})).await;
                if ready(&r["result"]) {
                    return r["result"].clone();
                }
                *last.lock().unwrap() = r;
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        })
        .await;
        found.unwrap_or_else(|_| panic!("timed out waiting for {what}: {}", last.lock().unwrap()))
    }
}
