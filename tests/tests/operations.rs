//! What an SRE relies on: `/health`, `/ready` and `/metrics` on every
//! service, and a drain that finishes the calls in flight.

use rmcp::model::CallToolRequestParams;
use serde_json::json;
use sophia_tests::tools::{WAIT, call, wait_for_tool};
use sophia_tests::workers::slow_worker;
use sophia_tests::{Mesh, eventually};

async fn get(url: String) -> (u16, String) {
    match reqwest::get(&url).await {
        Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
        Err(e) => panic!("GET {url}: {e}"),
    }
}

#[tokio::test]
async fn every_service_serves_health_readiness_and_metrics() {
    let mut mesh = Mesh::start().await;
    let w = mesh.worker(echo_worker::echo_worker()).await;
    let client = mesh.client().await;
    wait_for_tool(&client, "echo").await;
    call(&client, "echo", json!({"text": "x"})).await;

    let worker = format!("http://{}", mesh.worker_handle(w).http_addr);
    assert_eq!(get(format!("{worker}/health")).await.0, 200);
    assert_eq!(get(format!("{worker}/ready")).await.0, 200);
    let (status, metrics) = get(format!("{worker}/metrics")).await;
    assert_eq!(status, 200);
    assert!(metrics.contains("sophia_nats_connected 1"), "{metrics}");
    assert!(
        metrics.contains(
            r#"sophia_worker_tool_calls_total{tool="echo",category="code_generation",outcome="ok"} 1"#
        ),
        "{metrics}"
    );
    assert!(metrics.contains("sophia_worker_tool_call_duration_seconds_bucket"));

    let gateway = mesh.http_base();
    let (status, health) = get(format!("{gateway}/health")).await;
    assert_eq!(status, 200);
    let health: serde_json::Value = serde_json::from_str(&health).unwrap();
    let no_worker = |c: &str| {
        json!({"what": format!("category {c}"),
            "problem": format!("no worker serves category {c}: its agents have no tools; \
                start a worker that offers them (docs/agents.md)")})
    };
    assert_eq!(
        health,
        json!({"status": "degraded", "bus": "connected",
            "categories": {"code_generation": {"tools": 1}},
            "replicas": {"echo-worker": 1},
            "degraded": [no_worker("business_intelligence"), no_worker("infrastructure")],
            "refused": [], "faults": []}),
        "the gateway's health sums up the mesh, and what it cannot do"
    );
    assert_eq!(get(format!("{gateway}/ready")).await.0, 200);
    let (_, metrics) = get(format!("{gateway}/metrics")).await;
    assert!(
        metrics.contains(r#"sophia_gateway_tool_calls_total{tool="echo",category="code_generation",outcome="ok"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn readiness_follows_the_bus_connection() {
    let mut mesh = Mesh::start().await;
    let w = mesh.worker(echo_worker::echo_worker()).await;
    let worker = format!("http://{}/ready", mesh.worker_handle(w).http_addr);
    let gateway = format!("{}/ready", mesh.http_base());
    assert_eq!(get(worker.clone()).await.0, 200);

    mesh.nats.stop();
    for url in [&worker, &gateway] {
        let body = eventually("not ready while NATS is down", WAIT, || async {
            let (status, body) = get(url.clone()).await;
            (status == 503).then_some(body)
        })
        .await;
        assert!(body.contains("NATS"), "says why: {body}");
    }
    mesh.nats.restart();
    for url in [&worker, &gateway] {
        eventually("ready again once NATS is back", WAIT, || async {
            (get(url.clone()).await.0 == 200).then_some(())
        })
        .await;
    }
}

#[tokio::test]
async fn draining_finishes_calls_in_flight_then_leaves_the_mesh() {
    let mut mesh = Mesh::start().await;
    let w = mesh.worker(slow_worker(800)).await;
    let client = mesh.client().await;
    wait_for_tool(&client, "slow").await;

    let in_flight = {
        let client = client.clone();
        tokio::spawn(async move { client.call_tool(CallToolRequestParams::new("slow")).await })
    };
    // Drain once the call is being handled.
    let metrics_url = format!("http://{}/metrics", mesh.worker_handle(w).http_addr);
    eventually("the call is in flight", WAIT, || async {
        let (_, m) = get(metrics_url.clone()).await;
        m.contains(r#"sophia_worker_tool_calls_in_flight{category="infrastructure"} 1"#)
            .then_some(())
    })
    .await;
    mesh.stop_worker(w).await;

    let result = in_flight
        .await
        .unwrap()
        .expect("the call in flight completed");
    assert_eq!(result.is_error, Some(false));
    assert_eq!(result.content[0].as_text().unwrap().text, "done");
    eventually("the drained worker's tool is gone", WAIT, || async {
        let tools = client.list_all_tools().await.ok()?;
        tools.is_empty().then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_worker_drains_and_exits_even_when_nats_is_already_gone() {
    let mut mesh = Mesh::start().await;
    let w = mesh.worker(echo_worker::echo_worker()).await;
    mesh.nats.stop();
    tokio::time::timeout(WAIT, mesh.stop_worker(w))
        .await
        .expect("the drain finishes without the bus");
}
