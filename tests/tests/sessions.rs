//! MCP sessions live on the bus (JetStream KV): a session started on one
//! gateway goes on at another gateway replica, and after a gateway restart,
//! without the client initializing again.

use serde_json::{Value, json};
use sophia_gateway::GatewayHandle;
use sophia_tests::Mesh;
use sophia_tests::mesh::TEST_TOKEN;
use sophia_tests::raw::{RawResponse, RawSession};
use sophia_tests::tools::wait_for_tool;
use tokio_util::sync::CancellationToken;

async fn gateway(mesh: &Mesh) -> (GatewayHandle, CancellationToken) {
    let stop = CancellationToken::new();
    let handle = sophia_gateway::run(mesh.gateway_config(), stop.clone())
        .await
        .expect("a second gateway starts");
    (handle, stop)
}

fn echoed(r: &RawResponse, id: u64) -> Value {
    r.messages
        .iter()
        .find(|m| m["id"] == id)
        .unwrap_or_else(|| panic!("an answer to {id}: {} {}", r.status, r.body))["result"]["content"]
        [0]["text"]
        .clone()
}

fn echo(id: u64, text: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
        "params": {"name": "echo", "arguments": {"text": text}}})
}

#[tokio::test]
async fn a_session_goes_on_at_another_gateway_replica_and_after_a_restart() {
    let mut mesh = Mesh::start().await;
    mesh.worker(echo_worker::echo_worker()).await;
    let (second, stop_second) = gateway(&mesh).await;
    // Both gateways know the echo tool.
    for url in [mesh.mcp_url(), second.mcp_url()] {
        let client = sophia_tests::connect_http(&url, TEST_TOKEN).await;
        wait_for_tool(&client, "echo").await;
    }

    let mut first = RawSession::new(&mesh.mcp_url(), TEST_TOKEN);
    first.initialize().await;
    assert_eq!(
        echoed(&first.post(echo(1, "on the first")).await, 1),
        "on the first"
    );

    // The load balancer sends the next request to the other replica.
    let moved = first.moved_to(&second.mcp_url());
    let r = moved.post(echo(2, "on the second")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(echoed(&r, 2), "on the second");

    // That replica restarts; the session goes on at its successor.
    stop_second.cancel();
    second.stopped().await;
    let (third, _stop_third) = gateway(&mesh).await;
    let client = sophia_tests::connect_http(&third.mcp_url(), TEST_TOKEN).await;
    wait_for_tool(&client, "echo").await;
    let restarted = first.moved_to(&third.mcp_url());
    let r = restarted.post(echo(3, "after a restart")).await;
    assert_eq!(echoed(&r, 3), "after a restart");

    // A session id nobody issued is still refused, and an ended session is
    // gone from the store, so no replica brings it back.
    let mut forged = first.moved_to(&third.mcp_url());
    forged.session = Some("00000000-0000-0000-0000-000000000000".into());
    assert_eq!(forged.post(echo(4, "x")).await.status, 404);
    assert!((200..300).contains(&restarted.delete().await));
    let r = first.moved_to(&third.mcp_url()).post(echo(5, "x")).await;
    assert_eq!(r.status, 404, "{}", r.body);
}
