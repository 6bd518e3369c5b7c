//! Nothing from a client or a worker can crash the gateway, knock it or a
//! worker off NATS, or break another client's list: hostile announcements,
//! session ids and request ids, and subjects smuggled into an envelope.

use std::time::Duration;

use futures::future::join_all;
use serde_json::{Value, json};
use sophia_proto::{Category, ToolRequest, subject};
use sophia_tests::announce::{announce, spec};
use sophia_tests::mesh::TEST_TOKEN;
use sophia_tests::raw::RawSession;
use sophia_tests::tools::{call, text_of, wait_for_tool};
use sophia_tests::{Mesh, eventually};

async fn health(mesh: &Mesh) -> Value {
    mesh.health().await.expect("the gateway's /health")
}

/// Waits until the gateway's health lists `n` refused entries.
async fn refused(mesh: &Mesh, n: usize) -> Vec<String> {
    eventually(
        "the refusals are on /health",
        Duration::from_secs(10),
        || async {
            let h = health(mesh).await;
            let list = h["refused"].as_array()?.clone();
            (list.len() >= n).then(|| {
                list.iter()
                    .map(|r| r["what"].as_str().unwrap_or_default().to_owned())
                    .collect()
            })
        },
    )
    .await
}

#[tokio::test]
async fn bad_schemas_are_refused_one_by_one_and_the_gateway_lives() {
    let mut mesh = Mesh::start().await;
    mesh.worker(echo_worker::echo_worker()).await;
    let client = mesh.client().await;
    wait_for_tool(&client, "echo").await;
    sophia_tests::announce::announce_junk_beside_fine(&mesh).await;
    wait_for_tool(&client, "fine").await;
    let mut what = refused(&mesh, 5).await;
    what.sort();
    assert_eq!(
        what,
        [
            "announcements that are not valid envelopes",
            "tool deep_100",
            "tool no_type",
            "tool nullable_root",
            "tool string_root"
        ]
    );
    let tools = client.list_all_tools().await.unwrap();
    let names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    assert_eq!(names, ["echo", "fine"], "good tools stay listed");
    // Every listed schema is one MCP clients accept: an object at the root.
    for t in &tools {
        assert_eq!(t.input_schema.get("type"), Some(&json!("object")));
    }
    let r = call(&client, "echo", json!({"text": "still here"})).await;
    assert_eq!(text_of(&r), "still here", "the gateway lives");
}

#[tokio::test]
async fn an_announcement_cannot_displace_a_tool_that_is_served() {
    let mut mesh = Mesh::start().await;
    mesh.worker(echo_worker::echo_worker()).await;
    let client = mesh.client().await;
    wait_for_tool(&client, "echo").await;
    let real = client.list_all_tools().await.unwrap()[0].clone();
    announce(
        &mesh,
        "hijacker",
        vec![spec(
            "echo",
            json!({"type": "object", "properties": {"x": {"type": "number"}}}),
        )],
        json!({}),
    )
    .await;
    let what = refused(&mesh, 1).await;
    assert_eq!(what, ["tool echo"]);
    let listed = client.list_all_tools().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        listed[0].input_schema, real.input_schema,
        "the real schema stays"
    );
    let r = call(&client, "echo", json!({"text": "mine"})).await;
    assert_eq!(text_of(&r), "mine");
}

#[tokio::test]
async fn one_bad_prompt_resource_or_template_leaves_the_good_ones_listed() {
    let mesh = Mesh::start().await;
    let client = mesh.client().await;
    announce(
        &mesh,
        "offers",
        vec![],
        json!({
            "prompts": [{"name": "greet", "description": "hi"}, {"name": "broken", "arguments": 7}, 42],
            "resources": [{"uri": "mem://ok", "name": "ok"}, {"uri": "mem://nameless"}],
            "resource_templates": [{"uriTemplate": "mem://{x}", "name": "x"}, {"name": "no template"}]
        }),
    )
    .await;
    refused(&mesh, 4).await;
    let prompts = client.list_all_prompts().await.unwrap();
    assert_eq!(
        prompts.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
        ["greet"]
    );
    let resources = client.list_all_resources().await.unwrap();
    assert_eq!(
        resources.iter().map(|r| r.uri.as_str()).collect::<Vec<_>>(),
        ["mem://ok"]
    );
    let templates = client.list_all_resource_templates().await.unwrap();
    assert_eq!(templates.len(), 1);
}

#[tokio::test]
async fn fifteen_thousand_tools_are_listed_across_pages() {
    let mut mesh = Mesh::start().await;
    mesh.worker(echo_worker::echo_worker()).await;
    let client = mesh.client().await;
    // Five fake replicas of 3,000 tools each (one announcement must fit in
    // a NATS message).
    for part in 0..5 {
        let tools = (0..3_000)
            .map(|i| spec(&format!("t{part}_{i:04}"), json!({"type": "object"})))
            .collect();
        announce(&mesh, &format!("many{part}"), tools, json!({})).await;
    }
    wait_for_tool(&client, "t4_2999").await;
    let first = client
        .peer()
        .list_tools(None)
        .await
        .expect("the first page");
    assert!(first.next_cursor.is_some(), "more than one page");
    assert!(first.tools.len() <= sophia_gateway::paging::PAGE_ITEMS);
    let all = client.list_all_tools().await.unwrap();
    assert_eq!(all.len(), 15_001);
    let mut names: Vec<&str> = all.iter().map(|t| t.name.as_ref()).collect();
    names.dedup();
    assert_eq!(names.len(), 15_001, "no tool twice");
}

#[tokio::test]
async fn malformed_and_oversized_session_ids_get_400_and_touch_nothing() {
    let mut mesh = Mesh::start().await;
    mesh.worker(sophia_tests::workers::slow_worker(300)).await;
    let client = mesh.client().await;
    wait_for_tool(&client, "slow").await;
    // A call in flight meanwhile is not affected.
    let concurrent = tokio::spawn({
        let peer = client.peer().clone();
        async move {
            peer.call_tool(rmcp::model::CallToolRequestParams::new("slow"))
                .await
        }
    });
    let long = "s".repeat(4_100);
    let bad = [
        "",
        "*",
        ">",
        "a.b.c",
        "../../etc",
        "sophia.v1.>",
        long.as_str(),
    ];
    let mut session = RawSession::new(&mesh.mcp_url(), TEST_TOKEN);
    for id in bad {
        session.session = Some(id.to_owned());
        let r = session
            .post(json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}))
            .await;
        assert_eq!(r.status, 400, "session id {:.20?}: {}", id, r.body);
        assert!(r.body.contains("invalid Mcp-Session-Id"), "{}", r.body);
        assert!(r.body.len() < 1_000, "the id is not echoed back");
    }
    let done = concurrent.await.unwrap().expect("the concurrent call");
    assert_eq!(text_of(&done), "done");
    let h = health(&mesh).await;
    assert_eq!(h["bus"], "connected", "{h}");
    let r = call(&client, "slow", json!({})).await;
    assert_eq!(text_of(&r), "done");
}

#[tokio::test]
async fn a_request_id_in_flight_cannot_be_reused_on_its_session() {
    let mut mesh = Mesh::start().await;
    mesh.worker(sophia_tests::workers::slow_worker(500)).await;
    let client = mesh.client().await;
    wait_for_tool(&client, "slow").await;
    let mut session = RawSession::new(&mesh.mcp_url(), TEST_TOKEN);
    session.initialize().await;
    let same = json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
        "params": {"name": "slow", "arguments": {}}});
    let answers = join_all((0..12).map(|_| session.post(same.clone()))).await;
    let ok = answers.iter().filter(|a| a.status == 200).count();
    let refused: Vec<_> = answers.iter().filter(|a| a.status == 409).collect();
    assert_eq!(ok, 1, "{answers:#?}");
    assert_eq!(refused.len(), 11, "{answers:#?}");
    assert!(
        refused[0].body.contains("already in use"),
        "{}",
        refused[0].body
    );
    // Once answered, the id may be used again.
    let again = session.post(same).await;
    assert_eq!(again.status, 200, "{}", again.body);
}

#[tokio::test]
async fn a_smuggled_progress_subject_is_ignored_and_the_worker_stays_connected() {
    let mut mesh = Mesh::start().await;
    let i = mesh.worker(echo_worker::echo_worker()).await;
    let nats = mesh.nats_client().await;
    for progress_to in [
        format!("sophia.v1.progress.{}", "x".repeat(5_000)),
        "sophia.v1.registry.announce".to_owned(),
        "sophia.v1.progress.>".to_owned(),
    ] {
        let mut request = ToolRequest::new(
            "echo",
            json!({"text": "hi"}),
            5_000,
            sophia_proto::Caller::default(),
        );
        request.progress_to = Some(progress_to);
        let reply = nats
            .request(
                subject::tool(Category::CodeGeneration, "echo"),
                sophia_proto::encode(&request).unwrap().into(),
            )
            .await
            .expect("the worker answers");
        let response: sophia_proto::ToolResponse = sophia_proto::decode(&reply.payload).unwrap();
        let out = response.into_outcome().expect("echo ran");
        assert_eq!(out.content.len(), 1);
    }
    let ready = reqwest::get(format!("http://{}/ready", mesh.worker_handle(i).http_addr))
        .await
        .unwrap();
    assert_eq!(ready.status(), 200, "still connected to NATS");
}
