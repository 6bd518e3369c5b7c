//! Tools are the ones live workers announce: merged, sorted, and kept current
//! as workers join and leave, whichever of gateway and worker starts first.

use std::time::Duration;

use sophia_tests::workers::{progress_worker, whoami_worker};
use sophia_tests::{McpClient, Mesh, eventually};

const WAIT: Duration = Duration::from_secs(10);

async fn tool_names(client: &McpClient) -> Vec<String> {
    client
        .list_all_tools()
        .await
        .expect("tools/list")
        .into_iter()
        .map(|t| t.name.to_string())
        .collect()
}

async fn wait_for_tools(client: &McpClient, want: &[&str]) {
    eventually(&format!("tools {want:?}"), WAIT, || async {
        let names = tool_names(client).await;
        (names == want).then_some(())
    })
    .await
}

async fn wait_for_list_changed(client: &McpClient, more_than: usize) -> usize {
    let mut rx = client.service().list_changed.subscribe();
    tokio::time::timeout(WAIT, rx.wait_for(|n| *n > more_than))
        .await
        .expect("notifications/tools/list_changed arrives")
        .map(|n| *n)
        .expect("recorder alive")
}

#[tokio::test]
async fn tools_from_two_workers_are_merged_in_name_order() {
    let mut mesh = Mesh::start().await;
    mesh.worker(echo_worker::echo_worker()).await;
    mesh.worker(progress_worker()).await;
    let client = mesh.client().await;

    wait_for_tools(&client, &["count_steps", "echo"]).await;

    let tools = client.list_all_tools().await.unwrap();
    let echo = tools.iter().find(|t| t.name == "echo").unwrap();
    assert_eq!(
        echo.description.as_deref(),
        Some("Returns the text it is given.")
    );
    assert_eq!(echo.input_schema["required"], serde_json::json!(["text"]));
    let hints = echo.annotations.as_ref().expect("annotations carried");
    assert_eq!(hints.read_only_hint, Some(true));
    assert_eq!(hints.idempotent_hint, Some(true));
    assert_eq!(hints.destructive_hint, Some(false));
}

#[tokio::test]
async fn list_changed_is_sent_when_a_worker_joins_and_when_it_leaves() {
    let mut mesh = Mesh::start().await;
    let client = mesh.client().await;
    assert!(tool_names(&client).await.is_empty());

    let w = mesh.worker(echo_worker::echo_worker()).await;
    let n = wait_for_list_changed(&client, 0).await;
    wait_for_tools(&client, &["echo"]).await;

    // A graceful drain says goodbye at once.
    mesh.stop_worker(w).await;
    let n = wait_for_list_changed(&client, n).await;
    wait_for_tools(&client, &[]).await;

    // A worker that dies without a goodbye is dropped after three missed heartbeats.
    let w = mesh.worker(progress_worker()).await;
    let n = wait_for_list_changed(&client, n).await;
    wait_for_tools(&client, &["count_steps"]).await;
    mesh.kill_worker(w).await;
    wait_for_list_changed(&client, n).await;
    wait_for_tools(&client, &[]).await;
}

#[tokio::test]
async fn a_worker_started_before_the_gateway_is_discovered() {
    let mut mesh = Mesh::without_gateway();
    let mut config = mesh.worker_config();
    // A heartbeat far longer than the test: only the gateway's discovery
    // request can make the worker announce itself in time.
    config.heartbeat_ms = 3_600_000;
    mesh.worker_with(echo_worker::echo_worker(), config).await;
    // Let the worker's first announcement pass while no gateway listens.
    tokio::time::sleep(Duration::from_millis(200)).await;
    mesh.start_gateway().await;
    let client = mesh.client().await;
    wait_for_tools(&client, &["echo"]).await;
}

#[tokio::test]
async fn replicas_of_one_worker_offer_each_tool_once() {
    let mut mesh = Mesh::start().await;
    mesh.worker(whoami_worker("a")).await;
    mesh.worker(whoami_worker("b")).await;
    let client = mesh.client().await;
    wait_for_tools(&client, &["whoami"]).await;
}

#[tokio::test]
async fn workers_register_as_nats_micro_services() {
    let mut mesh = Mesh::start().await;
    mesh.worker(echo_worker::echo_worker()).await;
    let nats = mesh.nats_client().await;
    let ping = nats
        .request("$SRV.PING.echo-worker", "".into())
        .await
        .expect("$SRV.PING answers");
    let ping: serde_json::Value = serde_json::from_slice(&ping.payload).unwrap();
    assert_eq!(ping["name"], "echo-worker");
    let info = nats
        .request("$SRV.INFO.echo-worker", "".into())
        .await
        .expect("$SRV.INFO answers");
    let info: serde_json::Value = serde_json::from_slice(&info.payload).unwrap();
    let endpoint = &info["endpoints"][0];
    assert_eq!(endpoint["subject"], "sophia.v1.tools.code_generation.echo");
    assert_eq!(endpoint["queue_group"], "sophia");
    assert_eq!(endpoint["metadata"]["category"], "code_generation");

    // STATS counts the calls an endpoint served.
    let client = mesh.client().await;
    wait_for_tools(&client, &["echo"]).await;
    let args = serde_json::json!({"text": "counted"});
    client
        .call_tool(
            rmcp::model::CallToolRequestParams::new("echo")
                .with_arguments(args.as_object().cloned().unwrap()),
        )
        .await
        .unwrap();
    let stats = nats
        .request("$SRV.STATS.echo-worker", "".into())
        .await
        .expect("$SRV.STATS answers");
    let stats: serde_json::Value = serde_json::from_slice(&stats.payload).unwrap();
    assert_eq!(stats["endpoints"][0]["num_requests"], 1, "{stats}");
}

#[tokio::test]
async fn cursors_protocol_version_and_the_current_one_are_both_spoken() {
    use sophia_tests::mesh::TEST_TOKEN;
    use sophia_tests::raw::RawSession;

    let mesh = Mesh::start().await;
    for version in ["2025-06-18", "2025-11-25"] {
        let mut raw = RawSession::new(&mesh.mcp_url(), TEST_TOKEN);
        let result = raw.initialize_with(version).await;
        assert_eq!(result["protocolVersion"], version);
        assert_eq!(result["capabilities"]["tools"]["listChanged"], true);
    }
    // rmcp's own client asks for the newest revision it knows; the gateway
    // answers with the newest session-based one.
    let client = mesh.client().await;
    let info = client.peer_info().expect("initialized");
    assert_eq!(info.protocol_version.to_string(), "2025-11-25");
}
