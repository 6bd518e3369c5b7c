//! Bad input gets a clear error and the gateway keeps serving: malformed
//! JSON-RPC, unknown methods and tools, wrong argument types, oversized
//! bodies, foreign origins, workers that reply garbage or never reply, no
//! worker at all, and a NATS server that goes away and comes back.

use rmcp::model::CallToolRequestParams;
use serde_json::json;
use sophia_tests::mesh::TEST_TOKEN;
use sophia_tests::raw::RawSession;
use sophia_tests::tools::{WAIT, call, error_code, text_of, wait_for_tool};
use sophia_tests::workers::{Misbehaviour, misbehaving_worker};
use sophia_tests::{McpClient, Mesh, eventually};

/// The gateway still serves a normal call.
async fn still_serves(client: &McpClient) {
    let ok = call(client, "echo", json!({"text": "still here"})).await;
    assert_eq!(text_of(&ok), "still here");
}

async fn mesh_with_echo() -> (Mesh, McpClient) {
    let mut mesh = Mesh::start().await;
    mesh.worker(echo_worker::echo_worker()).await;
    let client = mesh.client().await;
    wait_for_tool(&client, "echo").await;
    (mesh, client)
}

#[tokio::test]
async fn malformed_json_rpc_gets_a_parse_error() {
    let (mesh, client) = mesh_with_echo().await;
    let mut raw = RawSession::new(&mesh.mcp_url(), TEST_TOKEN);
    raw.initialize().await;

    let resp = raw
        .post_raw("{\"jsonrpc\": \"2.0\", \"id\": 1, \"method\": ", &[])
        .await;
    assert_eq!(resp.status, 400, "{}", resp.body);
    let error = &resp.messages[0]["error"];
    assert_eq!(error["code"], -32700, "JSON-RPC parse error: {}", resp.body);
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("not valid JSON")
    );

    let resp = raw
        .post(json!({"jsonrpc": "2.0", "id": 2, "params": {}}))
        .await;
    assert!(
        resp.status >= 400,
        "a message without a method is refused: {}",
        resp.body
    );

    still_serves(&client).await;
}

#[tokio::test]
async fn an_unknown_method_gets_method_not_found() {
    let (mesh, client) = mesh_with_echo().await;
    let mut raw = RawSession::new(&mesh.mcp_url(), TEST_TOKEN);
    raw.initialize().await;

    let resp = raw
        .post(json!({"jsonrpc": "2.0", "id": 7, "method": "tools/explode", "params": {}}))
        .await;
    let error = resp
        .messages
        .iter()
        .find_map(|m| m.get("error"))
        .unwrap_or_else(|| panic!("a JSON-RPC error: {}", resp.body));
    assert_eq!(error["code"], -32601, "{error}");

    still_serves(&client).await;
}

#[tokio::test]
async fn an_unknown_tool_is_an_invalid_params_error() {
    let (_mesh, client) = mesh_with_echo().await;
    let err = client
        .call_tool(CallToolRequestParams::new("no_such_tool"))
        .await
        .expect_err("unknown tool is an error");
    let text = err.to_string();
    assert!(
        text.contains("no_such_tool") && text.contains("tools/list"),
        "{text}"
    );
    still_serves(&client).await;
}

#[tokio::test]
async fn wrong_argument_types_are_refused_before_reaching_the_bus() {
    let (_mesh, client) = mesh_with_echo().await;
    let result = call(&client, "echo", json!({"text": 42})).await;
    assert_eq!(result.is_error, Some(true));
    assert_eq!(error_code(&result).as_deref(), Some("invalid_arguments"));
    let text = text_of(&result);
    assert!(
        text.contains("/text") && text.contains("string"),
        "names the field and type: {text}"
    );

    let result = call(&client, "echo", json!({})).await;
    assert!(
        text_of(&result).contains("required"),
        "{}",
        text_of(&result)
    );
    still_serves(&client).await;
}

#[tokio::test]
async fn an_oversized_body_is_refused_with_413() {
    let (mesh, client) = mesh_with_echo().await;
    let mut raw = RawSession::new(&mesh.mcp_url(), TEST_TOKEN);
    raw.initialize().await;
    let huge = "x".repeat(5 * 1024 * 1024);
    let body = json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call",
        "params": {"name": "echo", "arguments": {"text": huge}}});
    let resp = raw.post(body).await;
    assert_eq!(
        resp.status,
        413,
        "{}",
        &resp.body[..resp.body.len().min(200)]
    );
    assert!(
        resp.body.contains("SOPHIA_MAX_BODY_BYTES"),
        "says which limit: {}",
        resp.body
    );
    still_serves(&client).await;
}

#[tokio::test]
async fn http_clients_must_authenticate_and_foreign_origins_are_refused() {
    let (mesh, client) = mesh_with_echo().await;
    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "x", "version": "0"}}});

    let no_token = RawSession::new(&mesh.mcp_url(), "");
    assert_eq!(no_token.post(init.clone()).await.status, 401);
    let wrong = RawSession::new(&mesh.mcp_url(), "not-the-token");
    assert_eq!(wrong.post(init.clone()).await.status, 401);

    let raw = RawSession::new(&mesh.mcp_url(), TEST_TOKEN);
    let foreign = raw
        .post_raw(init.to_string(), &[("Origin", "https://evil.example")])
        .await;
    assert_eq!(
        foreign.status, 403,
        "DNS-rebinding origin refused: {}",
        foreign.body
    );
    let rebound_host = raw
        .post_raw(init.to_string(), &[("Host", "evil.example")])
        .await;
    assert_eq!(
        rebound_host.status, 403,
        "foreign Host refused: {}",
        rebound_host.body
    );
    let local = raw
        .post_raw(init.to_string(), &[("Origin", "http://localhost:3000")])
        .await;
    assert_eq!(local.status, 200, "a local origin is fine: {}", local.body);

    still_serves(&client).await;
}

#[tokio::test]
async fn a_worker_replying_garbage_gets_a_clear_error() {
    let (mesh, client) = mesh_with_echo().await;
    let (seen, _stop) = misbehaving_worker(
        mesh.nats_client().await,
        "garbage_tool",
        5_000,
        Misbehaviour::Garbage,
    )
    .await;
    wait_for_tool(&client, "garbage_tool").await;

    let result = call(&client, "garbage_tool", json!({})).await;
    assert_eq!(result.is_error, Some(true));
    assert_eq!(error_code(&result).as_deref(), Some("bad_envelope"));
    assert!(
        text_of(&result).contains("malformed reply"),
        "{}",
        text_of(&result)
    );
    assert_eq!(seen.load(std::sync::atomic::Ordering::SeqCst), 1);
    still_serves(&client).await;
}

#[tokio::test]
async fn a_worker_that_never_replies_times_out_with_a_clear_error() {
    let (mesh, client) = mesh_with_echo().await;
    let (seen, _stop) = misbehaving_worker(
        mesh.nats_client().await,
        "silent_tool",
        300,
        Misbehaviour::Silent,
    )
    .await;
    wait_for_tool(&client, "silent_tool").await;

    let result = call(&client, "silent_tool", json!({})).await;
    assert_eq!(result.is_error, Some(true));
    assert_eq!(error_code(&result).as_deref(), Some("timeout"));
    assert!(
        text_of(&result).contains("did not answer"),
        "{}",
        text_of(&result)
    );
    assert_eq!(
        seen.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "the request was delivered once"
    );
    still_serves(&client).await;
}

#[tokio::test]
async fn no_worker_for_the_category_is_reported_as_unavailable_not_as_a_timeout() {
    let (mesh, client) = mesh_with_echo().await;
    // Announced with a one-hour deadline: only NATS "no responders" can make
    // this call end before the test does.
    let (_seen, _stop) = misbehaving_worker(
        mesh.nats_client().await,
        "orphan_tool",
        3_600_000,
        Misbehaviour::NobodyHome,
    )
    .await;
    wait_for_tool(&client, "orphan_tool").await;

    let result = tokio::time::timeout(WAIT, call(&client, "orphan_tool", json!({})))
        .await
        .expect("no-responders answers without waiting for the deadline");
    assert_eq!(result.is_error, Some(true));
    assert_eq!(error_code(&result).as_deref(), Some("unavailable"));
    assert!(
        text_of(&result).contains("no worker is serving"),
        "{}",
        text_of(&result)
    );
    still_serves(&client).await;
}

#[tokio::test]
async fn a_nats_restart_is_reported_then_survived() {
    let (mut mesh, client) = mesh_with_echo().await;

    mesh.nats.stop();
    let outage = eventually("calls report the bus as unreachable", WAIT, || async {
        let r = call(&client, "echo", json!({"text": "during"})).await;
        (r.is_error == Some(true)).then_some(r)
    })
    .await;
    assert_eq!(error_code(&outage).as_deref(), Some("unavailable"));
    assert!(
        text_of(&outage).contains("unreachable"),
        "{}",
        text_of(&outage)
    );
    // Which bus, and since when.
    assert!(
        text_of(&outage).contains(&format!("NATS at {} unreachable since", mesh.nats.url())),
        "{}",
        text_of(&outage)
    );

    mesh.nats.restart();
    let back = eventually("calls succeed again after NATS is back", WAIT, || async {
        let r = call(&client, "echo", json!({"text": "after"})).await;
        (r.is_error == Some(false)).then_some(r)
    })
    .await;
    assert_eq!(text_of(&back), "after");
}

#[tokio::test]
async fn an_ended_session_is_gone_and_unknown_protocol_versions_are_refused() {
    let (mesh, _client) = mesh_with_echo().await;
    let mut session = sophia_tests::raw::RawSession::new(&mesh.mcp_url(), TEST_TOKEN);
    session.initialize().await;
    let ping = json!({"jsonrpc": "2.0", "id": 1, "method": "ping"});
    assert_eq!(session.post(ping.clone()).await.status, 200);

    let version = session
        .post_raw(ping.to_string(), &[("MCP-Protocol-Version", "1999-01-01")])
        .await;
    assert_eq!(version.status, 400, "{}", version.body);

    let ended = session.delete().await;
    assert!(
        (200..300).contains(&ended),
        "DELETE ends the session: {ended}"
    );
    let after = session.post(ping).await;
    assert_eq!(
        after.status, 404,
        "a request in an ended session: {}",
        after.body
    );
}
