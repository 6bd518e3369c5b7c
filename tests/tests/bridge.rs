//! The MCP bridge in front of the real `@modelcontextprotocol/server-everything`
//! over stdio, reached by an rmcp client through the gateway: tools, calls,
//! progress, cancellation, sampling, a crash and restart, misbehaving
//! servers, and shutdown without orphans.

use std::time::{Duration, Instant};

use rmcp::model::{CallToolRequest, CallToolRequestParams, ClientRequest};
use serde_json::{Value, json};
use sophia_tests::bridge::{RunningBridge, everything, everything_bin, fixture, group_alive};
use sophia_tests::tools::{WAIT, call, call_with_progress, object, text_of, wait_for_tool};
use sophia_tests::{Mesh, Recorder, eventually};

/// A tools/call sent with a progress token, in the background.
async fn start_call(
    client: &sophia_tests::McpClient,
    name: &str,
    args: Value,
) -> rmcp::service::RequestHandle<rmcp::RoleClient> {
    let params = CallToolRequestParams::new(name.to_owned()).with_arguments(object(args));
    client
        .send_cancellable_request(
            ClientRequest::CallToolRequest(CallToolRequest::new(params)),
            rmcp::service::PeerRequestOptions::no_options(),
        )
        .await
        .expect("tools/call is sent")
}

/// Waits until the client has had progress for `token` (the call is
/// running upstream).
async fn wait_for_progress(client: &sophia_tests::McpClient, token: &rmcp::model::ProgressToken) {
    eventually("progress from the upstream server", WAIT, || async {
        let progress = client.service().progress.lock().expect("progress lock");
        progress
            .iter()
            .any(|p| &p.progress_token == token)
            .then_some(())
    })
    .await
}

#[tokio::test]
async fn server_everything_is_on_the_mesh_with_its_prefix_hints_and_results() {
    let mesh = Mesh::start().await;
    let mut bridge = RunningBridge::start(&mesh, vec![everything()]).await;
    let client = mesh.client().await;
    wait_for_tool(&client, "everything_trigger-sampling-request").await;

    let tools = client.list_all_tools().await.unwrap();
    let sum = tools
        .iter()
        .find(|t| t.name == "everything_get-sum")
        .expect("get-sum");
    let hints = sum.annotations.clone().expect("annotations");
    assert_eq!(hints.read_only_hint, Some(true));
    assert_eq!(hints.idempotent_hint, Some(true));
    let structured = tools
        .iter()
        .find(|t| t.name == "everything_get-structured-content");
    assert!(
        structured
            .expect("get-structured-content")
            .output_schema
            .is_some()
    );

    let result = call(&client, "everything_get-sum", json!({"a": 2, "b": 3})).await;
    assert_ne!(result.is_error, Some(true), "{result:?}");
    assert!(text_of(&result).contains('5'), "{}", text_of(&result));
    let weather = call(
        &client,
        "everything_get-structured-content",
        json!({"location": "Chicago"}),
    )
    .await;
    assert!(weather.structured_content.is_some(), "{weather:?}");
    let image = call(&client, "everything_get-tiny-image", json!({})).await;
    assert!(
        image.content.iter().any(|c| c.as_image().is_some()),
        "{image:?}"
    );
    let reference = call(
        &client,
        "everything_get-resource-reference",
        json!({"resourceId": 2}),
    )
    .await;
    assert!(
        reference.content.iter().any(|c| c.as_resource().is_some()),
        "{reference:?}"
    );
    bridge.stop().await;
}

#[tokio::test]
async fn progress_of_a_long_running_upstream_tool_reaches_the_client() {
    let mesh = Mesh::start().await;
    let mut bridge = RunningBridge::start(&mesh, vec![everything()]).await;
    let client = mesh.client().await;
    wait_for_tool(&client, "everything_trigger-long-running-operation").await;
    let (result, progress) = call_with_progress(
        &client,
        "everything_trigger-long-running-operation",
        json!({"duration": 1, "steps": 3}),
    )
    .await;
    assert!(text_of(&result).contains("completed"), "{result:?}");
    let steps: Vec<f64> = progress.iter().map(|p| p.progress).collect();
    assert_eq!(steps, [1.0, 2.0, 3.0]);
    bridge.stop().await;
}

#[tokio::test]
async fn cancelling_a_call_sends_notifications_cancelled_to_the_upstream_server() {
    let mesh = Mesh::start().await;
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut tee = fixture("everything", "tee-everything.sh");
    tee.args.push(log.path().to_str().unwrap().to_owned());
    tee.args.push(everything_bin().to_str().unwrap().to_owned());
    tee.init_timeout_ms = None;
    let mut bridge = RunningBridge::start(&mesh, vec![tee]).await;
    let client = mesh.client().await;
    wait_for_tool(&client, "everything_trigger-long-running-operation").await;

    let args = json!({"duration": 30, "steps": 30});
    let handle = start_call(&client, "everything_trigger-long-running-operation", args).await;
    wait_for_progress(&client, &handle.progress_token).await;
    handle
        .cancel(Some("the test changed its mind".into()))
        .await
        .unwrap();

    let read = || -> Vec<Value> {
        let text = std::fs::read_to_string(log.path()).unwrap_or_default();
        text.lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    };
    let cancelled = eventually(
        "notifications/cancelled reaches the server",
        WAIT,
        || async {
            let seen = read();
            let call_id = seen.iter().find(|m| {
                m["method"] == "tools/call"
                    && m["params"]["name"] == "trigger-long-running-operation"
            })?["id"]
                .clone();
            seen.into_iter().find(|m| {
                m["method"] == "notifications/cancelled" && m["params"]["requestId"] == call_id
            })
        },
    )
    .await;
    assert!(cancelled["params"]["reason"].is_string(), "{cancelled}");
    bridge.stop().await;
}

#[tokio::test]
async fn a_sampling_request_from_the_upstream_server_is_answered_by_the_client() {
    let mesh = Mesh::start().await;
    let mut bridge = RunningBridge::start(&mesh, vec![everything()]).await;
    let recorder = Recorder {
        sample_reply: Some("a reply from the client's model".into()),
        ..Recorder::default()
    };
    let client = mesh.client_as(recorder).await;
    wait_for_tool(&client, "everything_trigger-sampling-request").await;
    let result = call(
        &client,
        "everything_trigger-sampling-request",
        json!({"prompt": "say hi", "maxTokens": 20}),
    )
    .await;
    assert_ne!(result.is_error, Some(true), "{result:?}");
    assert!(
        text_of(&result).contains("a reply from the client's model"),
        "{result:?}"
    );
    let sampled = client.service().sampled.lock().unwrap().clone();
    assert_eq!(sampled.len(), 1);
    assert!(sampled[0].to_string().contains("say hi"), "{sampled:?}");
    bridge.stop().await;
}

#[tokio::test]
async fn killing_the_server_mid_call_ends_the_call_and_its_tools_leave_and_come_back() {
    let mesh = Mesh::start().await;
    let mut bridge = RunningBridge::start(&mesh, vec![everything()]).await;
    let client = mesh.client().await;
    wait_for_tool(&client, "everything_trigger-long-running-operation").await;
    let pid = bridge.server("everything").pid.expect("a pid");
    let changes_before = *client.service().list_changed.borrow();

    let args = json!({"duration": 30, "steps": 30});
    let handle = start_call(&client, "everything_trigger-long-running-operation", args).await;
    wait_for_progress(&client, &handle.progress_token).await;
    let killed = Instant::now();
    let status = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status();
    assert!(status.unwrap().success());

    let answer = tokio::time::timeout(Duration::from_secs(5), handle.await_response())
        .await
        .expect("the call ends within seconds of the crash")
        .expect("tools/call answers");
    let rmcp::model::ServerResult::CallToolResult(result) = answer else {
        panic!("expected a tool result: {answer:?}");
    };
    assert_eq!(result.is_error, Some(true));
    let text = text_of(&result);
    assert!(
        text.contains("everything") && text.contains("restart"),
        "{text}"
    );
    // Printed for the record (docs/bridge.md): the crash is noticed when
    // the server's stdout closes, so the call ends at once.
    println!("the call ended {:?} after the kill", killed.elapsed());
    assert!(killed.elapsed() < Duration::from_secs(5));

    eventually("its tools leave", WAIT, || async {
        let tools = client.list_all_tools().await.ok()?;
        (!tools.iter().any(|t| t.name.starts_with("everything_"))).then_some(())
    })
    .await;
    assert!(*client.service().list_changed.borrow() > changes_before);
    wait_for_tool(&client, "everything_get-sum").await;
    let back = bridge.server("everything");
    assert!(
        back.restarts >= 1 && back.pid.is_some_and(|p| p != pid),
        "{back:?}"
    );
    let result = call(&client, "everything_get-sum", json!({"a": 1, "b": 1})).await;
    assert!(text_of(&result).contains('2'), "{result:?}");
    bridge.stop().await;
}

#[tokio::test]
async fn servers_that_print_garbage_or_hang_are_isolated_while_the_others_serve() {
    let mesh = Mesh::start().await;
    let servers = vec![
        fixture("garbage", "garbage.sh"),
        fixture("hang", "hang.sh"),
        everything(),
    ];
    let mut bridge = RunningBridge::start(&mesh, servers).await;
    let client = mesh.client().await;
    wait_for_tool(&client, "everything_echo").await;
    let result = call(&client, "everything_echo", json!({"message": "still here"})).await;
    assert!(text_of(&result).contains("still here"), "{result:?}");

    for (name, said) in [("garbage", "garbage-server"), ("hang", "hanging-server")] {
        let s = bridge.server(name);
        assert_eq!(s.state, mcp_bridge::State::Down, "{s:?}");
        let error = s.error.unwrap_or_default();
        assert!(
            error.contains("initialize") && error.contains(said),
            "{error}"
        );
    }
    let addr = bridge.handle.as_ref().unwrap().http_addr;
    let health: Value = reqwest::get(format!("http://{addr}/health"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let degraded = health["degraded"].to_string();
    assert!(
        degraded.contains("MCP server hang is not serving"),
        "{health}"
    );
    assert!(
        degraded.contains("MCP server garbage is not serving"),
        "{health}"
    );
    bridge.stop().await;
}

#[tokio::test]
async fn shutdown_leaves_no_server_process_behind() {
    let mesh = Mesh::start().await;
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut tee = fixture("teed", "tee-everything.sh");
    tee.args.push(log.path().to_str().unwrap().to_owned());
    tee.args.push(everything_bin().to_str().unwrap().to_owned());
    tee.init_timeout_ms = None;
    let mut bridge = RunningBridge::start(&mesh, vec![everything(), tee]).await;
    let pids: Vec<u32> = ["everything", "teed"]
        .iter()
        .map(|n| bridge.server(n).pid.expect("a pid"))
        .collect();
    assert!(pids.iter().all(|p| group_alive(*p)));
    bridge.stop().await;
    for pid in pids {
        assert!(!group_alive(pid), "process group {pid} outlived the bridge");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_server_with_a_bad_schema_and_bad_lines_is_contained() {
    let mesh = Mesh::start().await;
    let script =
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/bridge/unruly.py");
    let unruly = mcp_bridge::ServerConfig::stdio(
        "unruly",
        sophia_kit::Category::CodeGeneration,
        "python3",
        &[script.to_str().unwrap()],
    );
    let mut bridge = RunningBridge::start(&mesh, vec![unruly, everything()]).await;
    let client = mesh.client().await;
    wait_for_tool(&client, "everything_echo").await;
    wait_for_tool(&client, "unruly_fine").await;
    // While it floods, the other server and its own good tool still answer.
    for i in 0..20 {
        let message = format!("still here {i}");
        let echoed = call(&client, "everything_echo", json!({"message": message})).await;
        assert!(text_of(&echoed).contains(&message), "{echoed:?}");
        let fine = call(&client, "unruly_fine", json!({})).await;
        assert_eq!(text_of(&fine), "fine", "{fine:?}");
    }
    // The tool whose schema is not JSON Schema is not offered, and the
    // server's status says why.
    let listed = client.list_all_tools().await.unwrap();
    assert!(!listed.iter().any(|t| t.name == "unruly_broken"));
    let status = bridge.server("unruly");
    let said = format!("{status:?}");
    assert!(said.contains("broken"), "{said}");
    // The lines that are not JSON-RPC were skipped, not fatal.
    assert_eq!(
        (status.state, status.restarts),
        (mcp_bridge::State::Serving, 0),
        "{said}"
    );
    bridge.stop().await;
}
