//! `tools/call` through the gateway to workers on the bus: results, replicas
//! sharing load, progress, cancellation and payloads of several megabytes.

use std::collections::HashSet;

use rmcp::model::{CallToolRequest, CallToolRequestParams, ClientRequest};
use rmcp::service::PeerRequestOptions;
use serde_json::{Value, json};
use sophia_tests::tools::{
    WAIT, call, call_with_progress, part_links, read_parts, text_of, wait_for_tool,
};
use sophia_tests::workers::{
    CancelProbe, asking_worker, big_result_worker, cancellable_worker, client_asking_worker,
    pattern, progress_worker, trace_worker, whoami_worker,
};
use sophia_tests::{Mesh, eventually};

#[tokio::test]
async fn a_call_reaches_the_worker_and_its_result_comes_back() {
    let mut mesh = Mesh::start().await;
    mesh.worker(echo_worker::echo_worker()).await;
    let client = mesh.client().await;
    wait_for_tool(&client, "echo").await;

    let result = call(&client, "echo", json!({"text": "hello, mesh"})).await;
    assert_eq!(result.is_error, Some(false));
    assert_eq!(text_of(&result), "hello, mesh");
}

#[tokio::test]
async fn calls_are_spread_across_replicas_in_the_queue_group() {
    let mut mesh = Mesh::start().await;
    mesh.worker(whoami_worker("replica-a")).await;
    mesh.worker(whoami_worker("replica-b")).await;
    let client = mesh.client().await;
    wait_for_tool(&client, "whoami").await;

    let mut served_by = Vec::new();
    for _ in 0..40 {
        served_by.push(text_of(&call(&client, "whoami", json!({})).await));
    }
    let distinct: HashSet<_> = served_by.iter().cloned().collect();
    assert_eq!(
        distinct,
        HashSet::from(["replica-a".to_owned(), "replica-b".to_owned()]),
        "both replicas served calls: {served_by:?}"
    );
    // NATS hands each request to exactly one member of the queue group.
    assert_eq!(served_by.len(), 40);
}

#[tokio::test]
async fn worker_progress_is_relayed_as_mcp_progress_before_the_result() {
    let mut mesh = Mesh::start().await;
    mesh.worker(progress_worker()).await;
    let client = mesh.client().await;
    wait_for_tool(&client, "count_steps").await;

    let (result, mine) = call_with_progress(&client, "count_steps", json!({"steps": 5})).await;
    assert_eq!(text_of(&result), "counted 5 steps");

    // All five arrived before the result, for this call's token, in order.
    let steps: Vec<f64> = mine.iter().map(|p| p.progress).collect();
    assert_eq!(steps, [1.0, 2.0, 3.0, 4.0, 5.0]);
    assert!(mine.iter().all(|p| p.total == Some(5.0)));
    assert_eq!(mine[2].message.as_deref(), Some("step 3 of 5"));
}

#[tokio::test]
async fn cancelling_a_call_stops_it_on_the_worker() {
    let mut mesh = Mesh::start().await;
    let probe = CancelProbe::default();
    mesh.worker(cancellable_worker(probe.clone())).await;
    let client = mesh.client().await;
    wait_for_tool(&client, "wait_for_cancel").await;

    let handle = client
        .send_request_with_option(
            ClientRequest::CallToolRequest(CallToolRequest::new(CallToolRequestParams::new(
                "wait_for_cancel",
            ))),
            PeerRequestOptions::no_options(),
        )
        .await
        .unwrap();
    let mut started = probe.started.subscribe();
    tokio::time::timeout(WAIT, started.wait_for(|s| *s))
        .await
        .expect("the worker starts the call")
        .unwrap();

    handle.cancel(Some("changed my mind".into())).await.unwrap();

    let mut cancelled = probe.cancelled.subscribe();
    tokio::time::timeout(WAIT, cancelled.wait_for(|c| *c))
        .await
        .expect("notifications/cancelled reaches the worker's handler")
        .unwrap();
}

#[tokio::test]
async fn a_multi_megabyte_result_is_delivered_intact_in_parts() {
    let mut mesh = Mesh::start().await;
    mesh.worker(big_result_worker()).await;
    let client = mesh.client().await;
    wait_for_tool(&client, "big_result").await;

    // 5 MiB: five times NATS's default max_payload of 1 MiB, and five times
    // the SSE event the official Python SDK accepts: over HTTP it comes as
    // links to parts, each read with resources/read.
    let size = 5 * 1024 * 1024;
    let result = call(&client, "big_result", json!({"bytes": size})).await;
    assert_eq!(result.is_error, Some(false), "{:?}", text_of(&result));
    let links = part_links(&result);
    assert!(links.len() >= 10, "{} parts", links.len());
    assert!(
        text_of(&result).contains("resources/read"),
        "the result says how to read it: {}",
        text_of(&result)
    );
    let text = read_parts(&client, &result).await;
    assert_eq!(text.len(), size + 2);
    assert!(
        text == format!("0:{}", pattern(size)),
        "content differs from what the worker sent"
    );

    // A result under the limit stays whole.
    let small = call(&client, "big_result", json!({"bytes": 500 * 1024})).await;
    assert!(part_links(&small).is_empty());
    assert_eq!(text_of(&small), format!("0:{}", pattern(500 * 1024)));
}

#[tokio::test]
async fn result_parts_are_read_only_by_the_caller_and_at_any_gateway() {
    let mut mesh = Mesh::start().await;
    mesh.worker(big_result_worker()).await;
    let client = mesh.client().await;
    wait_for_tool(&client, "big_result").await;
    let result = call(&client, "big_result", json!({"bytes": 2 * 1024 * 1024})).await;
    let links = part_links(&result);
    assert!(!links.is_empty());

    // A second gateway replica serves the parts too.
    let mut other = mesh.gateway_config();
    other.http_addr = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    let second = sophia_gateway::run(other, tokio_util::sync::CancellationToken::new())
        .await
        .unwrap();
    let elsewhere =
        sophia_tests::client::connect_http(&second.mcp_url(), sophia_tests::mesh::TEST_TOKEN).await;
    assert_eq!(
        read_parts(&elsewhere, &result).await,
        format!("0:{}", pattern(2 * 1024 * 1024))
    );

    // Another principal does not: the part is "not found".
    let mut stranger = mesh.gateway_config();
    stranger.http_addr = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    stranger.principal = "someone-else".into();
    let third = sophia_gateway::run(stranger, tokio_util::sync::CancellationToken::new())
        .await
        .unwrap();
    let them =
        sophia_tests::client::connect_http(&third.mcp_url(), sophia_tests::mesh::TEST_TOKEN).await;
    let denied = them
        .read_resource(rmcp::model::ReadResourceRequestParams::new(
            links[0].clone(),
        ))
        .await
        .expect_err("another principal cannot read the part");
    assert!(denied.to_string().contains("no result part"), "{denied}");
}

#[tokio::test]
async fn a_multi_megabyte_argument_reaches_the_worker() {
    let mut mesh = Mesh::start().await;
    mesh.worker(big_result_worker()).await;
    let client = mesh.client().await;
    wait_for_tool(&client, "big_result").await;

    // 3 MiB of arguments: over NATS's limit, under the gateway's 4 MiB body limit.
    let echo = pattern(3 * 1024 * 1024);
    let result = call(&client, "big_result", json!({"bytes": 4, "echo": echo})).await;
    assert_eq!(text_of(&result), format!("{}:{}", echo.len(), pattern(4)));
}

#[tokio::test]
async fn offloaded_payloads_are_removed_once_collected() {
    let mut mesh = Mesh::start().await;
    mesh.worker(big_result_worker()).await;
    let client = mesh.client().await;
    wait_for_tool(&client, "big_result").await;
    call(&client, "big_result", json!({"bytes": 2 * 1024 * 1024})).await;

    let js = async_nats::jetstream::new(mesh.nats_client().await);
    let store = js
        .get_object_store(sophia_proto::payload::BUCKET)
        .await
        .unwrap();
    eventually("the collected payload is deleted", WAIT, || async {
        use futures::StreamExt;
        let mut list = store.list().await.ok()?;
        let mut live = 0;
        while let Some(Ok(o)) = list.next().await {
            live += (!o.deleted) as usize;
        }
        (live == 0).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_worker_can_ask_the_person_a_question_through_mcp_elicitation() {
    use rmcp::model::{ElicitResult, ElicitationAction};
    let mut mesh = Mesh::start().await;
    mesh.worker(asking_worker()).await;
    let schema =
        json!({"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]});
    let args = json!({"question": "Which branch?", "schema": schema});

    let answering = mesh
        .client_answering([
            ElicitResult::new(ElicitationAction::Accept).with_content(json!({"name": "main"})),
            ElicitResult::new(ElicitationAction::Decline),
        ])
        .await;
    wait_for_tool(&answering, "ask").await;
    let r = call(&answering, "ask", args.clone()).await;
    assert_eq!(
        r.structured_content,
        Some(json!({"accepted": {"name": "main"}}))
    );
    let r = call(&answering, "ask", args.clone()).await;
    assert_eq!(r.structured_content, Some(json!({"declined": true})));
    let asked = answering.service().asked.lock().unwrap().clone();
    assert_eq!(asked[0].0, "Which branch?");
    assert_eq!(asked[0].1["properties"]["name"]["type"], "string");

    // A question MCP cannot carry (nested objects) is refused, not sent.
    let nested = json!({"question": "?", "schema": {"type": "object",
        "properties": {"deep": {"type": "object", "properties": {}}}}});
    let r = call(&answering, "ask", nested).await;
    assert_eq!(
        sophia_tests::tools::error_code(&r).as_deref(),
        Some("invalid_arguments"),
        "{}",
        text_of(&r)
    );
    assert_eq!(answering.service().asked.lock().unwrap().len(), 2);

    // A client without elicitation: the worker is told it cannot ask, and
    // the caller which capability its client lacks.
    let plain = mesh.client().await;
    let r = call(&plain, "ask", args).await;
    assert_eq!(
        sophia_tests::tools::error_code(&r).as_deref(),
        Some("missing_capability")
    );
    assert!(
        text_of(&r).contains("`elicitation` client capability"),
        "{}",
        text_of(&r)
    );
}

#[tokio::test]
async fn a_worker_can_sample_the_clients_model_and_list_its_roots() {
    let mut mesh = Mesh::start().await;
    mesh.worker(client_asking_worker()).await;
    let recorder = sophia_tests::Recorder {
        sample_reply: Some("forty-two".into()),
        roots: Some(vec!["file:///work/repo".into()]),
        ..Default::default()
    };
    let client = mesh.client_as(recorder).await;
    wait_for_tool(&client, "sample").await;

    let r = call(&client, "sample", json!({"prompt": "the answer?"})).await;
    let result = r.structured_content.clone().unwrap_or_default();
    assert_eq!(result["content"]["text"], "forty-two", "{}", text_of(&r));
    assert_eq!(result["model"], "test-model");
    let sampled = client.service().sampled.lock().unwrap().clone();
    assert_eq!(sampled[0]["messages"][0]["content"]["text"], "the answer?");
    assert_eq!(sampled[0]["maxTokens"], 50);

    let r = call(&client, "roots", json!({})).await;
    assert_eq!(
        r.structured_content.clone().unwrap_or_default()["roots"][0]["uri"],
        "file:///work/repo",
        "{}",
        text_of(&r)
    );

    // A client without those capabilities: the worker is told which is missing.
    let plain = mesh.client().await;
    let r = call(&plain, "sample", json!({"prompt": "?"})).await;
    assert_eq!(
        sophia_tests::tools::error_code(&r).as_deref(),
        Some("missing_capability")
    );
    assert!(
        text_of(&r).contains("does not support sampling"),
        "{}",
        text_of(&r)
    );
    let r = call(&plain, "roots", json!({})).await;
    assert!(
        text_of(&r).contains("does not support roots"),
        "{}",
        text_of(&r)
    );
}

#[tokio::test]
async fn worker_logs_reach_the_client_at_or_above_the_level_it_set() {
    let mut mesh = Mesh::start().await;
    mesh.worker(client_asking_worker()).await;
    let client = mesh.client().await;
    wait_for_tool(&client, "chatty").await;

    // Before logging/setLevel, nothing is relayed.
    call(&client, "chatty", json!({})).await;
    assert!(client.service().logs.lock().unwrap().is_empty());

    #[allow(deprecated)]
    client
        .set_level(
            serde_json::from_value::<rmcp::model::SetLevelRequestParams>(json!({"level": "info"}))
                .unwrap(),
        )
        .await
        .unwrap();
    call(&client, "chatty", json!({})).await;
    let logs = client.service().logs.lock().unwrap().clone();
    let levels: Vec<&str> = logs.iter().map(|l| l["level"].as_str().unwrap()).collect();
    assert_eq!(levels, ["info", "error"], "{logs:?}");
    assert_eq!(logs[0]["data"], json!({"said": "info"}));
    assert_eq!(logs[0]["logger"], "chatty");
}

#[tokio::test]
async fn the_callers_trace_context_continues_onto_the_bus() {
    let mut mesh = Mesh::start().await;
    mesh.worker(trace_worker()).await;
    let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    // From the HTTP request's `traceparent` header.
    let mut headers = sophia_tests::client::traceparent_headers(parent);
    headers.insert(
        http::HeaderName::from_static("tracestate"),
        http::HeaderValue::from_static("vendor=1"),
    );
    let client = sophia_tests::client::connect_http_with(
        &mesh.mcp_url(),
        sophia_tests::mesh::TEST_TOKEN,
        headers,
    )
    .await;
    wait_for_tool(&client, "trace").await;
    let r = call(&client, "trace", json!({})).await;
    assert_eq!(
        r.structured_content,
        Some(json!({"traceparent": parent, "tracestate": "vendor=1"}))
    );

    // From `params._meta` (SEP-414), as a client without HTTP headers sends it.
    let mut session =
        sophia_tests::raw::RawSession::new(&mesh.mcp_url(), sophia_tests::mesh::TEST_TOKEN);
    session.initialize().await;
    let meta_parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let r = session
        .post(
            json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {
            "name": "trace", "arguments": {}, "_meta": {"traceparent": meta_parent}}}),
        )
        .await;
    let result = r
        .messages
        .iter()
        .find(|m| m["id"] == 7)
        .expect("the call's answer")["result"]["structuredContent"]
        .clone();
    assert_eq!(result["traceparent"], meta_parent, "{result}");

    // A malformed traceparent is not passed on.
    let r = session
        .post(
            json!({"jsonrpc": "2.0", "id": 8, "method": "tools/call", "params": {
            "name": "trace", "arguments": {}, "_meta": {"traceparent": "not-a-trace"}}}),
        )
        .await;
    let result =
        r.messages.iter().find(|m| m["id"] == 8).unwrap()["result"]["structuredContent"].clone();
    assert_eq!(result["traceparent"], Value::Null, "{result}");
}
