//! The mesh runs on `ops/nats/nats.conf` with one least-privilege NATS user
//! per role, and each role is held to its permissions.

use std::time::Duration;

use rmcp::model::CallToolRequestParams;
use serde_json::json;
use sophia_tests::workers::big_result_worker;
use sophia_tests::{Mesh, eventually};

use sophia_tests::nats::{GATEWAY_PASSWORD, WORKER_PASSWORD, secured as secured_nats};

async fn connect_as(
    url: &str,
    user: &str,
    password: &str,
) -> Result<async_nats::Client, async_nats::ConnectError> {
    async_nats::ConnectOptions::with_user_and_password(user.into(), password.into())
        .connect(url)
        .await
}

#[tokio::test]
async fn the_mesh_works_with_per_service_users_including_large_payloads() {
    let mut mesh = Mesh::on(secured_nats());
    let mut worker = mesh.worker_config();
    worker.nats.user = Some("worker".into());
    worker.nats.password = Some(WORKER_PASSWORD.into());
    mesh.worker_with(echo_worker::echo_worker(), worker.clone())
        .await;
    mesh.worker_with(big_result_worker(), worker).await;
    let mut gateway = mesh.gateway_config();
    gateway.nats.user = Some("gateway".into());
    gateway.nats.password = Some(GATEWAY_PASSWORD.into());
    mesh.start_gateway_with(gateway).await;
    let client = mesh.client().await;

    eventually(
        "both workers are discovered",
        Duration::from_secs(10),
        || async {
            let tools = client.list_all_tools().await.ok()?;
            (tools.len() == 2).then_some(())
        },
    )
    .await;
    let echo = client
        .call_tool(
            CallToolRequestParams::new("echo").with_arguments(
                json!({"text": "least privilege"})
                    .as_object()
                    .cloned()
                    .unwrap(),
            ),
        )
        .await
        .unwrap();
    assert_eq!(echo.content[0].as_text().unwrap().text, "least privilege");

    // 2 MiB goes through the object store, which both roles may use.
    // The SSE events of these calls are kept in the gateway's event stream.
    let big = client
        .call_tool(
            CallToolRequestParams::new("big_result").with_arguments(
                json!({"bytes": 2 * 1024 * 1024})
                    .as_object()
                    .cloned()
                    .unwrap(),
            ),
        )
        .await
        .unwrap();
    assert_eq!(big.is_error, Some(false), "{:?}", big.content);
    // Over HTTP it comes in parts, kept in the gateway's result bucket.
    assert_eq!(
        sophia_tests::tools::read_parts(&client, &big).await.len(),
        2 * 1024 * 1024 + 2
    );
    // and the calls' SSE events were kept, so their streams can resume.
    let js = async_nats::jetstream::new(
        connect_as(&mesh.nats.url(), "gateway", GATEWAY_PASSWORD)
            .await
            .unwrap(),
    );
    let mut events = js
        .get_stream(sophia_gateway::events::EVENTS_STREAM)
        .await
        .unwrap();
    assert!(events.info().await.unwrap().state.messages >= 4);
}

#[tokio::test]
async fn roles_cannot_step_outside_their_permissions() {
    let nats = secured_nats();
    let url = nats.url();

    assert!(
        connect_as(&url, "gateway", "wrong").await.is_err(),
        "a wrong password is refused"
    );
    assert!(
        async_nats::connect(&url).await.is_err(),
        "anonymous clients are refused"
    );

    // The gateway may not delete the payload stream (or any stream).
    let gateway = connect_as(&url, "gateway", GATEWAY_PASSWORD).await.unwrap();
    let deleted = gateway
        .send_request(
            "$JS.API.STREAM.DELETE.OBJ_sophia_payloads",
            async_nats::Request::new().timeout(Some(Duration::from_millis(500))),
        )
        .await;
    assert!(
        deleted.is_err(),
        "stream deletion is not permitted for the gateway"
    );

    // A worker may not pose as a gateway asking for discovery, nor listen to
    // other workers' announcements.
    let worker = connect_as(&url, "worker", WORKER_PASSWORD).await.unwrap();
    let listener = connect_as(&url, "gateway", GATEWAY_PASSWORD).await.unwrap();
    let mut discover = {
        let w2 = connect_as(&url, "worker", WORKER_PASSWORD).await.unwrap();
        w2.subscribe("sophia.v1.registry.discover").await.unwrap()
    };
    listener.flush().await.unwrap();
    worker
        .publish("sophia.v1.registry.discover", "x".into())
        .await
        .unwrap();
    worker.flush().await.unwrap();
    let got = tokio::time::timeout(
        Duration::from_millis(500),
        futures::StreamExt::next(&mut discover),
    )
    .await;
    assert!(
        got.is_err(),
        "a worker's discover request was not delivered"
    );

    // The same publish from the gateway role is delivered: the check above can fail.
    let gw_client = connect_as(&url, "gateway", GATEWAY_PASSWORD).await.unwrap();
    gw_client
        .publish("sophia.v1.registry.discover", "x".into())
        .await
        .unwrap();
    gw_client.flush().await.unwrap();
    let got = tokio::time::timeout(
        Duration::from_secs(5),
        futures::StreamExt::next(&mut discover),
    )
    .await;
    assert!(got.is_ok(), "the gateway's discover request is delivered");
}
