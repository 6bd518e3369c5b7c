//! The gateway's fast path (`services/gateway/src/fast.rs`): a session's
//! plain `tools/call`s are answered as one JSON response each, many at once
//! on one session, while everything a call may need of its session still
//! works: a worker's question reaches the client on its standalone stream,
//! `notifications/cancelled` and a client going away stop the call on the
//! worker, and a call asking for progress keeps its SSE stream.

use std::sync::Arc;

use serde_json::json;
use sophia_tests::Mesh;
use sophia_tests::mesh::TEST_TOKEN;
use sophia_tests::raw::RawSession;
use sophia_tests::tools::{WAIT, wait_for_tool};
use sophia_tests::workers::{CancelProbe, asking_worker, cancellable_worker};

async fn session(mesh: &Mesh) -> RawSession {
    let mut session = RawSession::new(&mesh.mcp_url(), TEST_TOKEN);
    session.initialize().await;
    session
}

#[tokio::test]
async fn many_plain_calls_on_one_session_are_answered_at_once_as_json() {
    let mut mesh = Mesh::start().await;
    mesh.worker(echo_worker::echo_worker()).await;
    wait_for_tool(&mesh.client().await, "echo").await;
    let session = Arc::new(session(&mesh).await);

    let calls = (1..=32u64).map(|id| {
        let session = session.clone();
        tokio::spawn(async move {
            let r = session
                .post(json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
                    "params": {"name": "echo", "arguments": {"text": format!("call {id}")}}}))
                .await;
            (id, r)
        })
    });
    for call in calls {
        let (id, r) = call.await.unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.content_type, "application/json", "{}", r.body);
        assert_eq!(r.messages.len(), 1, "{}", r.body);
        assert_eq!(r.messages[0]["id"], id);
        assert_eq!(
            r.messages[0]["result"]["content"][0]["text"],
            format!("call {id}")
        );
    }

    // Asking for progress keeps the call's own (resumable) SSE stream.
    let r = session
        .post(
            json!({"jsonrpc": "2.0", "id": 99, "method": "tools/call", "params": {
            "name": "echo", "arguments": {"text": "hi"}, "_meta": {"progressToken": "p"}}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.content_type.starts_with("text/event-stream"), "{r:?}");
    assert_eq!(
        r.messages.last().unwrap()["result"]["content"][0]["text"],
        "hi"
    );
}

#[tokio::test]
async fn a_worker_question_reaches_the_client_of_a_plain_call_on_its_session_stream() {
    let mut mesh = Mesh::start().await;
    mesh.worker(asking_worker()).await;
    wait_for_tool(&mesh.client().await, "ask").await;
    let mut session = RawSession::new(&mesh.mcp_url(), TEST_TOKEN);
    session
        .initialize_as("2025-06-18", json!({"elicitation": {}}))
        .await;
    let session = Arc::new(session);
    let mut listening = session.listen().await;

    let call = tokio::spawn({
        let session = session.clone();
        async move {
            session
                .post(
                    json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
                    "name": "ask", "arguments": {"question": "Your name?", "schema": {
                        "type": "object", "properties": {"name": {"type": "string"}}}}}}),
                )
                .await
        }
    });
    let question = loop {
        let (_, message) = listening.next().await.expect("the question arrives");
        if message["method"] == "elicitation/create" {
            break message;
        }
    };
    assert_eq!(question["params"]["message"], "Your name?");
    let answer = session
        .post(json!({"jsonrpc": "2.0", "id": question["id"], "result": {
            "action": "accept", "content": {"name": "Ada"}}}))
        .await;
    assert!(
        answer.status < 300,
        "the answer is accepted: {}",
        answer.status
    );

    let r = tokio::time::timeout(WAIT, call)
        .await
        .expect("the call ends")
        .unwrap();
    assert_eq!(r.content_type, "application/json", "{}", r.body);
    assert_eq!(
        r.messages[0]["result"]["structuredContent"]["accepted"]["name"], "Ada",
        "{}",
        r.body
    );
}

/// Starts `wait_for_cancel` as a plain call with id 7; returns once the
/// worker runs it.
async fn start_waiting(
    session: &Arc<RawSession>,
    probe: &CancelProbe,
) -> tokio::task::JoinHandle<sophia_tests::raw::RawResponse> {
    let call = tokio::spawn({
        let session = session.clone();
        async move {
            session
                .post(json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
                    "params": {"name": "wait_for_cancel", "arguments": {}}}))
                .await
        }
    });
    let mut started = probe.started.subscribe();
    tokio::time::timeout(WAIT, started.wait_for(|s| *s))
        .await
        .expect("the worker starts the call")
        .unwrap();
    call
}

#[tokio::test]
async fn notifications_cancelled_stops_a_plain_call_on_the_worker() {
    let mut mesh = Mesh::start().await;
    let probe = CancelProbe::default();
    mesh.worker(cancellable_worker(probe.clone())).await;
    wait_for_tool(&mesh.client().await, "wait_for_cancel").await;
    let session = Arc::new(session(&mesh).await);
    let call = start_waiting(&session, &probe).await;

    let ack = session
        .post(
            json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
            "params": {"requestId": 7, "reason": "changed my mind"}}),
        )
        .await;
    assert!(ack.status < 300, "{}", ack.status);

    let mut cancelled = probe.cancelled.subscribe();
    tokio::time::timeout(WAIT, cancelled.wait_for(|c| *c))
        .await
        .expect("notifications/cancelled reaches the worker's handler")
        .unwrap();
    let r = tokio::time::timeout(WAIT, call)
        .await
        .expect("the call ends")
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.messages[0]["id"], 7, "{}", r.body);
}

#[tokio::test]
async fn a_client_going_away_stops_its_plain_call_on_the_worker() {
    let mut mesh = Mesh::start().await;
    let probe = CancelProbe::default();
    mesh.worker(cancellable_worker(probe.clone())).await;
    wait_for_tool(&mesh.client().await, "wait_for_cancel").await;
    let session = Arc::new(session(&mesh).await);
    let call = start_waiting(&session, &probe).await;

    call.abort(); // the connection closes with the request unanswered

    let mut cancelled = probe.cancelled.subscribe();
    tokio::time::timeout(WAIT, cancelled.wait_for(|c| *c))
        .await
        .expect("the worker's handler is cancelled")
        .unwrap();
}
