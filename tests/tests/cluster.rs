//! A three-node NATS cluster carries the mesh past one machine. Every
//! service is given all three URLs; the mesh's buckets are replicated three
//! times; and when the node the gateway is connected to is killed under
//! load, calls go on after the reconnect, the MCP session, an agent and a
//! Pulumi job record survive, and no call is lost or run twice.
//!
//! Run it alone: `cargo test -p sophia-tests --test cluster`
//! (docs/operations.md, "A NATS cluster").

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use sophia_kit::{Category, Tool, ToolOutput, Worker, WorkerConfig};
use sophia_tests::nats::NatsCluster;
use sophia_tests::pulumi::Setup;
use sophia_tests::tools::{call, text_of, wait_for_tool};
use sophia_tests::{McpClient, eventually};
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "cluster-token";
const STANDIN_PULUMI: &str = env!("CARGO_BIN_EXE_pulumi");

/// A worker whose `count` tool is neither read-only nor idempotent: it
/// records every execution of its argument `n`.
fn counter(seen: Arc<Mutex<Vec<u64>>>) -> Worker {
    Worker::new("counter", "1.0.0").tool(
        Tool::new("count", Category::CodeGeneration, "Records n.")
            .input_schema(
                json!({"type": "object", "properties": {"n": {"type": "integer"}},
                "required": ["n"]}),
            )
            .handler(move |call| {
                let seen = seen.clone();
                async move {
                    let n = call.args["n"].as_u64().unwrap_or_default();
                    seen.lock().unwrap().push(n);
                    Ok(ToolOutput::text(n.to_string()))
                }
            }),
    )
}

/// Which node the connection named `name` is on, from each node's /connz.
async fn node_of(cluster: &NatsCluster, name: &str) -> Option<usize> {
    for (i, node) in cluster.nodes.iter().enumerate() {
        let url = format!("{}/connz?limit=1024", node.monitoring_url()?);
        let connz: Value = reqwest::get(url).await.ok()?.json().await.ok()?;
        let here = connz["connections"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["name"] == name);
        if here {
            return Some(i);
        }
    }
    None
}

#[tokio::test]
async fn killing_the_gateways_nats_node_under_load_loses_nothing() {
    let mut cluster = NatsCluster::start(3).await;
    let urls = cluster.urls();
    let stop = CancellationToken::new();
    let _stop = stop.clone().drop_guard();

    let gateway = sophia_gateway::run(
        sophia_gateway::GatewayConfig::new(urls.clone(), TOKEN),
        stop.clone(),
    )
    .await
    .expect("gateway on the cluster");
    let seen: Arc<Mutex<Vec<u64>>> = Arc::default();
    let mut workers = Vec::new();
    for worker in [echo_worker::echo_worker(), counter(seen.clone())] {
        workers.push(
            worker
                .run(WorkerConfig::new(urls.clone()), stop.clone())
                .await
                .unwrap(),
        );
    }
    workers.push(
        agno_worker::run(
            agno_worker::Cli {
                worker: WorkerConfig::new(urls.clone()),
                agno: agno_worker::AgnoArgs {
                    categories: Category::AGENTS.to_vec(),
                    templates: None,
                    session_ttl_s: 3600,
                },
            },
            stop.clone(),
        )
        .await
        .unwrap(),
    );
    let setup = Setup::new(1);
    workers.push(
        pulumi_worker::run(
            pulumi_worker::Cli {
                worker: WorkerConfig::new(urls.clone()),
                pulumi: setup.args(STANDIN_PULUMI, 30_000),
            },
            stop.clone(),
        )
        .await
        .unwrap(),
    );

    let client = Arc::new(sophia_tests::connect_http(&gateway.mcp_url(), TOKEN).await);
    for tool in ["echo", "count", "agno_create_agent", "pulumi_refresh"] {
        wait_for_tool(&client, tool).await;
    }
    // State that must outlive a node: an agent, and a Pulumi job record.
    let agent = call(
        &client,
        "agno_create_agent",
        json!({"agent_type": "code_agent"}),
    )
    .await;
    let agent_id = agent.structured_content.clone().unwrap()["agent_id"].clone();
    let preview = call(&client, "pulumi_preview", json!({"stack": "dev"})).await;
    assert_ne!(preview.is_error, Some(true), "{}", text_of(&preview));
    let refresh = call(&client, "pulumi_refresh", json!({"stack": "dev"})).await;
    let job = refresh.structured_content.clone().unwrap_or_default();
    assert_eq!(job["state"], "succeeded", "{}", text_of(&refresh));
    let job_id = job["id"].clone();
    assert!(job_id.is_string(), "{job}");

    // Every bucket the mesh wrote is kept on three servers.
    let js = async_nats::jetstream::new(cluster.client().await);
    for stream in [
        "KV_sophia_gateway_sessions",
        "KV_sophia_agno_agents",
        "KV_sophia_pulumi_jobs",
    ] {
        let info = js
            .get_stream(stream)
            .await
            .unwrap()
            .info()
            .await
            .unwrap()
            .clone();
        assert_eq!(info.config.num_replicas, 3, "{stream}");
    }

    // Load: eight callers of the non-idempotent `count`, each `n` unique.
    let next = Arc::new(AtomicU64::new(0));
    let running = Arc::new(AtomicBool::new(true));
    let outcomes: Arc<Mutex<BTreeMap<u64, Result<String, String>>>> = Arc::default();
    let callers: Vec<_> = (0..8)
        .map(|_| {
            let (client, next, running, outcomes) = (
                client.clone(),
                next.clone(),
                running.clone(),
                outcomes.clone(),
            );
            tokio::spawn(async move {
                while running.load(Ordering::Relaxed) {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    let r = call(&client, "count", json!({ "n": n })).await;
                    let outcome = if r.is_error == Some(true) {
                        Err(text_of(&r))
                    } else {
                        Ok(text_of(&r))
                    };
                    outcomes.lock().unwrap().insert(n, outcome);
                }
            })
        })
        .collect();
    let ok = |outcomes: &Arc<Mutex<BTreeMap<u64, Result<String, String>>>>| {
        outcomes
            .lock()
            .unwrap()
            .values()
            .filter(|o| o.is_ok())
            .count()
    };
    eventually("calls flow", Duration::from_secs(10), || async {
        (ok(&outcomes) >= 50).then_some(())
    })
    .await;
    let victim = node_of(&cluster, "sophia-gateway")
        .await
        .expect("the gateway's node");
    let before = ok(&outcomes);
    cluster.nodes[victim].stop();
    eventually(
        "calls go on after the gateway reconnects to another node",
        Duration::from_secs(30),
        || async { (ok(&outcomes) >= before + 100).then_some(()) },
    )
    .await;
    running.store(false, Ordering::Relaxed);
    for c in callers {
        c.await.expect("every caller finished: no call hung");
    }
    assert_ne!(node_of(&cluster, "sophia-gateway").await, Some(victim));

    // No call lost: every call sent has an outcome, each a result or a clear
    // error. None ran twice; every one answered `n` ran exactly once.
    let outcomes = outcomes.lock().unwrap().clone();
    let sent = next.load(Ordering::Relaxed);
    assert_eq!(outcomes.len() as u64, sent, "an outcome for every call");
    let failed = outcomes.values().filter(|o| o.is_err()).count();
    println!(
        "{sent} calls: {} answered, {failed} ended with an error (node {victim} killed)",
        outcomes.len() - failed
    );
    let mut runs: BTreeMap<u64, usize> = BTreeMap::new();
    for n in seen.lock().unwrap().iter() {
        *runs.entry(*n).or_default() += 1;
    }
    assert!(runs.values().all(|&c| c == 1), "a call ran twice: {runs:?}");
    for (n, outcome) in &outcomes {
        match outcome {
            Ok(text) => {
                assert_eq!(text, &n.to_string());
                assert_eq!(runs.get(n), Some(&1), "call {n} answered, so it ran once");
            }
            // The counter's own node may be the one killed: until it has
            // reconnected, its calls find no worker, and so never ran.
            Err(why) if why.contains("no worker is serving `count`") => {
                assert_eq!(runs.get(n), None, "call {n} found no worker, yet ran")
            }
            Err(why) => assert!(
                why.contains("may or may not have run") || why.contains("message bus is down"),
                "call {n} failed without saying what to do: {why}"
            ),
        }
    }

    // The state lived on: the same MCP session, the agent, the job record
    // (once the workers on the killed node have reconnected too).
    let r = call(&client, "echo", json!({"text": "after"})).await;
    assert_eq!(text_of(&r), "after");
    for (tool, args) in [
        ("agno_get_agent", json!({"agent_id": agent_id})),
        ("pulumi_job", json!({"job_id": job_id})),
    ] {
        let mut last = String::new();
        let found = eventually_ok(&client, tool, args, &mut last).await;
        assert!(found, "{tool} after the node's death: {last}");
    }
}

/// Calls `tool` until it answers without error (10 s at most).
async fn eventually_ok(client: &McpClient, tool: &str, args: Value, last: &mut String) -> bool {
    for _ in 0..100 {
        let r = call(client, tool, args.clone()).await;
        if r.is_error != Some(true) {
            return true;
        }
        *last = text_of(&r);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}
