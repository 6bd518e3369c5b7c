//! Helpers that keep tests reading like what a client does: wait for a tool,
//! call it, read its text and error code.

use std::time::Duration;

use rmcp::model::{CallToolRequestParams, CallToolResult};
use serde_json::Value;

use crate::{McpClient, eventually};

/// How long tests wait for the mesh to converge.
pub const WAIT: Duration = Duration::from_secs(20);

/// Waits until `tools/list` offers `name`.
pub async fn wait_for_tool(client: &McpClient, name: &str) {
    eventually(&format!("tool {name} is listed"), WAIT, || async {
        let tools = client.list_all_tools().await.ok()?;
        tools.iter().any(|t| t.name == name).then_some(())
    })
    .await
}

/// Calls `name` with `arguments` (a JSON object).
pub async fn call(client: &McpClient, name: &str, arguments: Value) -> CallToolResult {
    client
        .call_tool(CallToolRequestParams::new(name.to_owned()).with_arguments(object(arguments)))
        .await
        .expect("tools/call answers")
}

/// Starts `tools/call` of `name` in the background (for calls a test acts
/// on while they run); the task yields the result.
pub fn spawn_call(
    client: &McpClient,
    name: &str,
    arguments: Value,
) -> tokio::task::JoinHandle<CallToolResult> {
    let peer = client.peer().clone();
    let params = CallToolRequestParams::new(name.to_owned()).with_arguments(object(arguments));
    tokio::spawn(async move { peer.call_tool(params).await.expect("tools/call answers") })
}

/// `v` as a JSON object (panics if it is not one).
pub fn object(v: Value) -> serde_json::Map<String, Value> {
    v.as_object().cloned().expect("arguments are a JSON object")
}

/// The result's text content, concatenated.
pub fn text_of(result: &CallToolResult) -> String {
    result
        .content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect()
}

/// The gateway's machine-readable error code, from `_meta["sophia/error"]`.
pub fn error_code(result: &CallToolResult) -> Option<String> {
    let meta = result.meta.as_ref()?;
    meta.0
        .get("sophia/error")?
        .get("code")?
        .as_str()
        .map(str::to_owned)
}

/// Calls `name` with a progress token, as Cursor does, and returns the result
/// with the progress notifications for this call, in arrival order.
pub async fn call_with_progress(
    client: &McpClient,
    name: &str,
    arguments: Value,
) -> (CallToolResult, Vec<rmcp::model::ProgressNotificationParam>) {
    use rmcp::model::{CallToolRequest, ClientRequest, ServerResult};
    let handle = client
        .send_request_with_option(
            ClientRequest::CallToolRequest(CallToolRequest::new(
                CallToolRequestParams::new(name.to_owned()).with_arguments(object(arguments)),
            )),
            rmcp::service::PeerRequestOptions::no_options(),
        )
        .await
        .expect("tools/call is sent");
    let token = handle.progress_token.clone();
    let ServerResult::CallToolResult(result) =
        handle.await_response().await.expect("tools/call answers")
    else {
        panic!("expected a CallToolResult");
    };
    let progress = client
        .service()
        .progress
        .lock()
        .expect("progress lock")
        .iter()
        .filter(|p| p.progress_token == token)
        .cloned()
        .collect();
    (result, progress)
}

/// The links in `result` to parts of a large result
/// (`sophia://results/...`, see `docs/mcp.md`), in order.
pub fn part_links(result: &CallToolResult) -> Vec<String> {
    result
        .content
        .iter()
        .filter_map(|c| c.as_resource_link())
        .filter(|l| l.uri.starts_with("sophia://results/"))
        .map(|l| l.uri.clone())
        .collect()
}

/// Reads every part `result` links to with `resources/read` and joins
/// them, as a client of a large result does (text parts).
pub async fn read_parts(client: &McpClient, result: &CallToolResult) -> String {
    let mut joined = String::new();
    for uri in part_links(result) {
        let read = client
            .read_resource(rmcp::model::ReadResourceRequestParams::new(uri.clone()))
            .await
            .unwrap_or_else(|e| panic!("resources/read {uri}: {e}"));
        match &read.contents[..] {
            [rmcp::model::ResourceContents::TextResourceContents { text, .. }] => {
                joined.push_str(text)
            }
            other => panic!("part {uri} is not one text: {other:?}"),
        }
    }
    joined
}
