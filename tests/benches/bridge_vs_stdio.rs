//! What the bridge costs: one `tools/call` of server-everything's `echo`
//! (1 KiB message), measured four ways in one run against one real
//! nats-server and the pinned `@modelcontextprotocol/server-everything`
//! over stdio:
//!
//! 1. directly: an rmcp client speaking to its own server-everything over
//!    stdio (the baseline: what Cursor pays running the server itself);
//! 2. the bus path: a MessagePack `ToolRequest` to the bridge's worker,
//!    relayed to its server-everything over stdio (what an agent pays);
//! 3. through the gateway: an rmcp client over Streamable HTTP → gateway →
//!    bus → bridge → server-everything over stdio (what Cursor pays through
//!    the mesh);
//! 4. the gateway path to the kit's own echo worker, no bridge, for scale.
//!
//! Each is measured sequentially (p50/p99 latency) and with 64 requests in
//! flight (throughput). Run with `cargo bench -p sophia-tests --bench
//! bridge_vs_stdio` (SOPHIA_MCP_SERVERS set, as for the bridge's tests);
//! without `--bench` (as under `cargo test --all-targets`) it runs a short
//! smoke pass.

use std::sync::Arc;
use std::time::Duration;

use rmcp::ServiceExt;
use rmcp::model::CallToolRequestParams;
use rmcp::transport::TokioChildProcess;
use serde_json::{Value, json};
use sophia_proto::{Caller, ToolRequest, ToolResponse, subject};
use sophia_tests::Mesh;
use sophia_tests::bench::{IN_FLIGHT, Plan, measure, print_table};
use sophia_tests::bridge::{RunningBridge, everything, everything_bin};
use sophia_tests::tools::{object, wait_for_tool};

const PAYLOAD: usize = 1024;

/// An MCP `tools/call` of `tool` with `args`, checked to have worked.
async fn mcp_call<S: rmcp::service::Service<rmcp::RoleClient>>(
    client: &rmcp::service::RunningService<rmcp::RoleClient, S>,
    tool: &'static str,
    args: &Value,
) {
    let params = CallToolRequestParams::new(tool).with_arguments(object(args.clone()));
    let result = client.call_tool(params).await.expect("tools/call answers");
    assert_ne!(result.is_error, Some(true), "{result:?}");
}

#[tokio::main]
async fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let plan = if full {
        Plan {
            warmup: 300,
            sequential: 3_000,
            concurrent: 64 * 100,
        }
    } else {
        Plan {
            warmup: 5,
            sequential: 20,
            concurrent: 64 * 2,
        }
    };
    let message = json!({ "message": "x".repeat(PAYLOAD) });

    // 1. Directly over stdio, with rmcp's client.
    let child = TokioChildProcess::new(tokio::process::Command::new(everything_bin()))
        .expect("server-everything starts");
    let direct = Arc::new(().serve(child).await.expect("initialize"));
    let direct_fig = {
        let (c, m) = (direct.clone(), message.clone());
        measure("direct: rmcp client -> stdio", &plan, move || {
            let (c, m) = (c.clone(), m.clone());
            async move { mcp_call(&c, "echo", &m).await }
        })
        .await
    };

    let mut mesh = Mesh::start().await;
    mesh.worker(echo_worker::echo_worker()).await;
    let mut bridge = RunningBridge::start(&mesh, vec![everything()]).await;
    let client = Arc::new(mesh.client().await);
    wait_for_tool(&client, "everything_echo").await;
    wait_for_tool(&client, "echo").await;

    // 2. The bus path to the bridge's worker.
    let nats = mesh.nats_client().await;
    let bus = {
        let (c, m) = (nats.clone(), message.clone());
        measure("bus -> bridge -> stdio", &plan, move || {
            let (c, m) = (c.clone(), m.clone());
            async move {
                let req = ToolRequest::new("everything_echo", m, 10_000, Caller::default());
                let to = subject::tool(sophia_proto::Category::CodeGeneration, "everything_echo");
                let msg = c
                    .request(to, sophia_proto::encode(&req).unwrap().into())
                    .await
                    .expect("bus reply");
                let resp: ToolResponse = sophia_proto::decode(&msg.payload).unwrap();
                resp.into_outcome().expect("echo result");
            }
        })
        .await
    };

    // 3. Through the gateway to the bridge.
    let gateway = {
        let (c, m) = (client.clone(), message.clone());
        measure("gateway -> bus -> bridge -> stdio", &plan, move || {
            let (c, m) = (c.clone(), m.clone());
            async move { mcp_call(&c, "everything_echo", &m).await }
        })
        .await
    };

    // 4. Through the gateway to the kit's echo worker.
    let kit = {
        let (c, t) = (client.clone(), json!({ "text": "x".repeat(PAYLOAD) }));
        measure("gateway -> bus -> kit echo worker", &plan, move || {
            let (c, t) = (c.clone(), t.clone());
            async move { mcp_call(&c, "echo", &t).await }
        })
        .await
    };

    println!();
    println!(
        "server-everything `echo`, 1 KiB message; {} sequential samples; throughput with \
         {IN_FLIGHT} in flight{}",
        plan.sequential,
        if full {
            ""
        } else {
            " (smoke run: pass --bench for real figures)"
        }
    );
    print_table(&[&direct_fig, &bus, &gateway, &kit]);
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!();
    println!(
        "p50 added over direct stdio: bus -> bridge {:+.0} µs; gateway -> bridge {:+.0} µs \
         (of which the gateway and bus without a bridge: {:.0} µs)",
        us(bus.p50) - us(direct_fig.p50),
        us(gateway.p50) - us(direct_fig.p50),
        us(kit.p50)
    );
    bridge.stop().await;
    if let Ok(client) = Arc::try_unwrap(client) {
        let _ = client.cancel().await;
    }
    if let Ok(direct) = Arc::try_unwrap(direct) {
        let _ = direct.cancel().await;
    }
}
