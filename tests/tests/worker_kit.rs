//! The kit answers every request, however it arrives: raw bus requests that
//! no gateway would send still get a typed reply, never silence.

use std::time::Duration;

use serde_json::json;
use sophia_proto::{Caller, Category, ErrorCode, ToolRequest, ToolResponse, headers, subject};
use sophia_tests::Mesh;

async fn ask(client: &async_nats::Client, subj: String, body: Vec<u8>) -> ToolResponse {
    let msg = client
        .send_request(
            subj,
            async_nats::Request::new()
                .payload(body.into())
                .timeout(Some(Duration::from_secs(10))),
        )
        .await
        .expect("the worker replies");
    ToolResponse::from_reply(msg.headers.as_ref(), &msg.payload).expect("a ToolResponse")
}

#[tokio::test]
async fn garbage_on_a_tool_subject_gets_a_bad_envelope_reply() {
    let mut mesh = Mesh::without_gateway();
    mesh.worker(echo_worker::echo_worker()).await;
    let nats = mesh.nats_client().await;
    let subj = subject::tool(Category::CodeGeneration, "echo");

    let reply = ask(&nats, subj.clone(), b"\xc1\xff not msgpack".to_vec()).await;
    assert_eq!(
        reply.into_outcome().unwrap_err().code,
        ErrorCode::BadEnvelope
    );

    // The same request id comes back when the header carries it.
    let id = uuid::Uuid::new_v4();
    let hdrs = headers::Context {
        request_id: Some(id),
        ..Default::default()
    }
    .to_headers();
    let msg = nats
        .send_request(
            subj,
            async_nats::Request::new()
                .payload("{}".into())
                .headers(hdrs),
        )
        .await
        .unwrap();
    let reply = ToolResponse::from_reply(msg.headers.as_ref(), &msg.payload).unwrap();
    assert_eq!(reply.id, id);
}

#[tokio::test]
async fn extreme_deadlines_and_other_versions_are_answered_not_crashed_on() {
    let mut mesh = Mesh::without_gateway();
    mesh.worker(echo_worker::echo_worker()).await;
    let nats = mesh.nats_client().await;
    let subj = subject::tool(Category::CodeGeneration, "echo");

    let mut far = ToolRequest::new(
        "echo",
        json!({"text": "later"}),
        u64::MAX,
        Caller::default(),
    );
    let reply = ask(&nats, subj.clone(), sophia_proto::encode(&far).unwrap()).await;
    assert_eq!(
        reply.into_outcome().unwrap().content,
        vec![sophia_proto::Content::text("later")]
    );

    far.v = 2;
    let reply = ask(&nats, subj.clone(), sophia_proto::encode(&far).unwrap()).await;
    assert_eq!(
        reply.into_outcome().unwrap_err().code,
        ErrorCode::UnsupportedVersion
    );

    // The kit checks types too, for callers that skip the gateway.
    let wrong = ToolRequest::new("echo", json!({"text": 7}), 5_000, Caller::default());
    let reply = ask(&nats, subj, sophia_proto::encode(&wrong).unwrap()).await;
    let err = reply.into_outcome().unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidArguments);
    assert!(err.message.contains("text"), "{}", err.message);
}

#[tokio::test]
async fn a_tools_errors_are_counted_by_nats_service_stats_and_still_typed() {
    let mut mesh = Mesh::without_gateway();
    mesh.worker(echo_worker::echo_worker()).await;
    let nats = mesh.nats_client().await;

    // Arguments that do not fit echo's schema: the kit refuses them.
    let request = ToolRequest::new("echo", json!({"text": 42}), 5_000, Caller::default());
    let reply = ask(
        &nats,
        subject::tool(Category::CodeGeneration, "echo"),
        sophia_proto::encode(&request).unwrap(),
    )
    .await;
    let error = reply.into_outcome().unwrap_err();
    assert_eq!(error.code, ErrorCode::InvalidArguments, "{error}");

    // NATS's own tooling sees the error (`nats micro stats echo-worker`).
    let stats = nats
        .request("$SRV.STATS.echo-worker", "".into())
        .await
        .expect("the service answers $SRV.STATS");
    let stats: serde_json::Value = serde_json::from_slice(&stats.payload).unwrap();
    let echo = stats["endpoints"]
        .as_array()
        .and_then(|e| {
            e.iter()
                .find(|e| e["subject"] == subject::tool(Category::CodeGeneration, "echo"))
        })
        .unwrap_or_else(|| panic!("the echo endpoint in {stats}"));
    assert_eq!(echo["num_errors"], 1, "{echo}");
    assert!(
        echo["last_error"].to_string().contains("400"),
        "the error's service code: {echo}"
    );
}
