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
    sophia_proto::decode(&msg.payload).expect("a ToolResponse")
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
    let reply: ToolResponse = sophia_proto::decode(&msg.payload).unwrap();
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
