//! MCP sessions live on the bus (JetStream KV): a session started on one
//! gateway goes on at another gateway replica, and after a gateway restart,
//! without the client initializing again.

use serde_json::{Value, json};
use sophia_gateway::GatewayHandle;
use sophia_tests::Mesh;
use sophia_tests::mesh::TEST_TOKEN;
use sophia_tests::raw::{RawResponse, RawSession, SseReader};
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

/// A tool that reports steps 1–3, waits for the test to open `gate`, then
/// reports 4–6 and answers.
fn gated_worker(gate: std::sync::Arc<tokio::sync::Notify>) -> sophia_kit::Worker {
    use sophia_kit::{Category, Tool, ToolOutput, Worker};
    Worker::new("gated-worker", "1.0.0").tool(
        Tool::new(
            "gated_steps",
            Category::Infrastructure,
            "Six steps with a pause.",
        )
        .input_schema(json!({"type": "object"}))
        .handler(move |call| {
            let gate = gate.clone();
            async move {
                for i in 1..=6 {
                    if i == 4 {
                        gate.notified().await;
                    }
                    call.progress(i as f64, Some(6.0), Some(format!("step {i}")))
                        .await;
                }
                Ok(ToolOutput::text("six steps done"))
            }
        }),
    )
}

#[tokio::test]
async fn a_broken_sse_stream_resumes_at_another_gateway_replica_with_no_event_lost() {
    let mut mesh = Mesh::start().await;
    let gate = std::sync::Arc::new(tokio::sync::Notify::new());
    mesh.worker(gated_worker(gate.clone())).await;
    let (second, _stop_second) = gateway(&mesh).await;
    for url in [mesh.mcp_url(), second.mcp_url()] {
        let client = sophia_tests::connect_http(&url, TEST_TOKEN).await;
        wait_for_tool(&client, "gated_steps").await;
    }
    let mut session = RawSession::new(&mesh.mcp_url(), TEST_TOKEN);
    session.initialize().await;
    let sid = session.session.clone().expect("a session id");
    let http = reqwest::Client::new();

    // The call starts on the first replica; its stream breaks after step 2.
    let call = json!({"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": {
        "name": "gated_steps", "arguments": {}, "_meta": {"progressToken": "p9"}}});
    let resp = http
        .post(mesh.mcp_url())
        .bearer_auth(TEST_TOKEN)
        .header("Accept", "application/json, text/event-stream")
        .header("Content-Type", "application/json")
        .header("MCP-Protocol-Version", "2025-06-18")
        .header("Mcp-Session-Id", &sid)
        .body(call.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let mut first = SseReader::new(resp);
    let mut steps = Vec::new();
    let mut last_id = None;
    while !steps.contains(&2) {
        let (id, message) = first.next().await.expect("events before the break");
        assert_eq!(message["method"], "notifications/progress", "{message}");
        steps.push(message["params"]["progress"].as_f64().unwrap() as u32);
        last_id = id;
    }
    drop(first); // the connection breaks
    let last_id = last_id.expect("events carry ids to resume from");

    // The client reconnects through the load balancer to the other replica.
    let resp = http
        .get(second.mcp_url())
        .bearer_auth(TEST_TOKEN)
        .header("Accept", "text/event-stream")
        .header("MCP-Protocol-Version", "2025-06-18")
        .header("Mcp-Session-Id", &sid)
        .header("Last-Event-ID", &last_id)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let mut resumed = SseReader::new(resp);
    gate.notify_one(); // the work goes on at the first replica
    let result = loop {
        let (_, message) = resumed
            .next()
            .await
            .expect("the resumed stream reaches the result");
        if message["id"] == 9 {
            break message;
        }
        assert_eq!(message["method"], "notifications/progress", "{message}");
        steps.push(message["params"]["progress"].as_f64().unwrap() as u32);
    };
    assert_eq!(steps, [1, 2, 3, 4, 5, 6], "every step once, in order");
    assert_eq!(result["result"]["content"][0]["text"], "six steps done");
}
