//! The kit answers every request, however it arrives: raw bus requests that
//! no gateway would send still get a typed reply, never silence. And its KV
//! helper tells a missing key from a bus that does not answer.

use std::time::Duration;

use serde_json::json;
use sophia_kit::kv::{Bucket, BucketConfig, KvErrorKind};
use sophia_proto::{Caller, Category, ErrorCode, ToolRequest, ToolResponse, headers, subject};
use sophia_tests::{Mesh, nats_server};

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

#[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct Note {
    text: String,
}

fn note(text: &str) -> Note {
    Note { text: text.into() }
}

#[tokio::test]
async fn a_kv_bucket_tells_missing_from_corrupt_and_from_unreachable() {
    let mut nats = nats_server();
    let client = async_nats::connect(nats.url()).await.unwrap();
    let config = BucketConfig::new("kit_notes", "notes").max_age(Duration::from_secs(60));
    let notes = Bucket::open(&client, config.clone()).await.unwrap();

    // Missing is Ok(None); what is put comes back, from any replica's handle.
    assert_eq!(notes.get::<Note>("a").await.unwrap(), None);
    notes.put("a", &note("hello")).await.unwrap();
    let other = Bucket::open(&client, config).await.unwrap();
    assert_eq!(other.get("a").await.unwrap(), Some(note("hello")));
    other.delete("a").await.unwrap();
    assert_eq!(notes.get::<Note>("a").await.unwrap(), None);

    // A value this reader cannot decode is corrupt, not missing.
    let js = async_nats::jetstream::new(client.clone());
    let raw = js.get_key_value("kit_notes").await.unwrap();
    raw.put("b", "not json".into()).await.unwrap();
    let err = notes.get::<Note>("b").await.unwrap_err();
    assert_eq!(err.kind(), KvErrorKind::Corrupt);
    assert!(err.to_string().contains("kit_notes"), "{err}");

    // Keys a bucket cannot hold are named as such.
    let err = notes.put("", &note("x")).await.unwrap_err();
    assert_eq!(err.kind(), KvErrorKind::InvalidKey);

    // With the server gone, a read is unreachable, never "missing".
    nats.stop();
    let err = notes.get::<Note>("a").await.unwrap_err();
    assert_eq!(err.kind(), KvErrorKind::Unreachable);
    assert!(err.to_string().contains("JetStream"), "{err}");
}

#[tokio::test]
async fn a_kv_bucket_compares_and_swaps() {
    let nats = nats_server();
    let client = async_nats::connect(nats.url()).await.unwrap();
    let locks = Bucket::open(&client, BucketConfig::new("kit_locks", "locks"))
        .await
        .unwrap();

    let first = locks.create("stack", &note("mine")).await.unwrap();
    let taken = locks.create("stack", &note("yours")).await.unwrap_err();
    assert_eq!(taken.kind(), KvErrorKind::Conflict);

    let (held, revision) = locks.entry::<Note>("stack").await.unwrap().unwrap();
    assert_eq!((held, revision), (note("mine"), first));
    let second = locks
        .update("stack", &note("renewed"), first)
        .await
        .unwrap();
    let stale = locks
        .update("stack", &note("late"), first)
        .await
        .unwrap_err();
    assert_eq!(stale.kind(), KvErrorKind::Conflict);
    assert_eq!(locks.keys().await.unwrap(), ["stack"]);

    assert_eq!(
        locks.delete_at("stack", first).await.unwrap_err().kind(),
        KvErrorKind::Conflict
    );
    locks.delete_at("stack", second).await.unwrap();
    assert_eq!(locks.entry::<Note>("stack").await.unwrap(), None);
    assert!(locks.keys().await.unwrap().is_empty());
    // Deleted, the key can be created again.
    locks.create("stack", &note("next")).await.unwrap();
}

#[tokio::test]
async fn a_kv_bucket_says_when_jetstream_refuses_it() {
    let nats = nats_server();
    let client = async_nats::connect(nats.url()).await.unwrap();
    let err = Bucket::open(
        &client,
        BucketConfig::new("kit_deep", "deep").history(1_000),
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), KvErrorKind::Refused);
    // Another stream holds the bucket's subjects: JetStream answers, with a no.
    let js = async_nats::jetstream::new(client.clone());
    js.create_stream(async_nats::jetstream::stream::Config {
        name: "squatter".into(),
        subjects: vec!["$KV.kit_taken.>".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    let err = Bucket::open(&client, BucketConfig::new("kit_taken", "taken"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), KvErrorKind::Refused, "{err}");
    let err = Bucket::open(&client, BucketConfig::new("not a name", "bad"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), KvErrorKind::InvalidKey);
}
