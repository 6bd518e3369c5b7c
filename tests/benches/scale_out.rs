//! Scale-out: throughput of `tools/call` through the gateway with 1, 2 and 4
//! replicas of a worker whose tool takes 10 ms, each replica taking at most
//! 4 calls at once (`SOPHIA_MAX_IN_FLIGHT`), under 64 calls in flight from
//! an rmcp client. Queue groups spread the calls; the efficiency printed is
//! throughput(4) / (4 × throughput(1)), 1.0 being perfect.
//!
//! `cargo bench -p sophia-tests --bench scale_out`; without `--bench` (as
//! under `cargo test --all-targets`) it runs a short smoke pass.

use std::sync::Arc;
use std::time::Instant;

use rmcp::model::CallToolRequestParams;
use sophia_tests::Mesh;
use sophia_tests::tools::wait_for_tool;

const IN_FLIGHT: usize = 64;
const PER_REPLICA: usize = 4;
const TOOL_MS: u64 = 10;

async fn throughput(replicas: usize, calls: usize) -> f64 {
    let mut mesh = Mesh::start().await;
    for _ in 0..replicas {
        let mut config = mesh.worker_config();
        config.max_in_flight = PER_REPLICA;
        mesh.worker_with(sophia_tests::workers::slow_worker(TOOL_MS), config)
            .await;
    }
    let client = Arc::new(mesh.client().await);
    wait_for_tool(&client, "slow").await;
    let call = |client: Arc<sophia_tests::McpClient>| async move {
        let r = client
            .call_tool(CallToolRequestParams::new("slow"))
            .await
            .expect("tools/call");
        assert_ne!(r.is_error, Some(true), "{r:?}");
    };
    for _ in 0..IN_FLIGHT {
        call(client.clone()).await; // warm up
    }
    let started = Instant::now();
    let tasks: Vec<_> = (0..IN_FLIGHT)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move {
                for _ in 0..calls / IN_FLIGHT {
                    call(client.clone()).await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    (calls / IN_FLIGHT * IN_FLIGHT) as f64 / started.elapsed().as_secs_f64()
}

#[tokio::main]
async fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let calls = if full { 64 * 60 } else { 64 * 2 };
    let ideal_one = (PER_REPLICA as f64) * 1000.0 / TOOL_MS as f64;
    println!(
        "scale-out: tool takes {TOOL_MS} ms, {PER_REPLICA} calls at once per replica \
         (ideal {ideal_one:.0} calls/s per replica), {IN_FLIGHT} in flight"
    );
    let mut figures = Vec::new();
    for replicas in [1, 2, 4] {
        let t = throughput(replicas, calls).await;
        println!(
            "{replicas} replica(s): {t:>8.0} calls/s  ({:.2} of ideal)",
            t / (ideal_one * replicas as f64)
        );
        figures.push(t);
    }
    println!(
        "efficiency 1 -> 2 replicas: {:.2}; 1 -> 4 replicas: {:.2} (throughput(n) / (n x throughput(1)))",
        figures[1] / (2.0 * figures[0]),
        figures[2] / (4.0 * figures[0])
    );
}
