//! Latency and throughput of one 1 KiB request, measured three ways in one
//! run against one real nats-server:
//!
//! 1. raw NATS request-reply between two async-nats clients (the baseline);
//! 2. the bus path: a MessagePack `ToolRequest` to an echo worker built with
//!    the kit (what an agent calling a tool pays);
//! 3. a plain HTTP round trip (reqwest → axum echoing the JSON body), the
//!    cost of any HTTP hop before MCP adds anything;
//! 4. an MCP `tools/call` through the gateway over Streamable HTTP to that
//!    same worker (what Cursor pays);
//! 5. the same call from a minimal HTTP client;
//! 6. the seed's `create_agent` (`agno_create_agent`, no task) through the
//!    gateway: the agno-worker's front door, an agent from its template,
//!    and its record written to JetStream KV.
//!
//! Each is measured sequentially (p50/p99 latency) and with 64 requests in
//! flight (throughput). Run with `cargo bench -p sophia-tests`; without
//! `--bench` (as under `cargo test --all-targets`) it runs a short smoke pass.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use rmcp::ServiceExt;
use rmcp::model::CallToolRequestParams;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use serde_json::json;
use sophia_proto::{Caller, ToolRequest, ToolResponse, subject};
use sophia_tests::bench::{Figures, IN_FLIGHT, Plan, measure, print_table, raw_tools_call};
use sophia_tests::mesh::TEST_TOKEN;
use sophia_tests::{Mesh, Recorder, eventually};

/// The services' allocator, as in their binaries (the gateway and worker
/// run in this process).
#[global_allocator]
static ALLOCATOR: sophia_kit::Allocator = sophia_kit::Allocator {};

const PAYLOAD: usize = 1024;

#[tokio::main]
async fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let plan = if full {
        Plan {
            warmup: 500,
            sequential: 5_000,
            concurrent: 64 * 300,
        }
    } else {
        Plan {
            warmup: 5,
            sequential: 20,
            concurrent: 64 * 2,
        }
    };
    let text = "x".repeat(PAYLOAD);

    let mut mesh = Mesh::start().await;
    mesh.worker(echo_worker::echo_worker()).await;

    // 1. Raw NATS: a plain responder echoing the payload.
    let responder = mesh.nats_client().await;
    let mut sub = responder.subscribe("bench.echo").await.unwrap();
    let r = responder.clone();
    tokio::spawn(async move {
        while let Some(msg) = sub.next().await {
            if let Some(reply) = msg.reply {
                let _ = r.publish(reply, msg.payload).await;
            }
        }
    });
    responder.flush().await.unwrap();
    let requester = mesh.nats_client().await;
    let raw_payload = bytes::Bytes::from(text.clone().into_bytes());
    let raw = {
        let c = requester.clone();
        let p = raw_payload.clone();
        measure("raw NATS request-reply", &plan, move || {
            let (c, p) = (c.clone(), p.clone());
            async move {
                c.request("bench.echo", p).await.expect("raw reply");
            }
        })
        .await
    };

    // 2. The bus path to the kit's echo worker.
    let args = json!({ "text": text });
    let bus = {
        let c = requester.clone();
        let args = args.clone();
        measure("bus: ToolRequest -> kit echo worker", &plan, move || {
            let (c, args) = (c.clone(), args.clone());
            async move {
                let req = ToolRequest::new("echo", args, 10_000, Caller::default());
                let body = sophia_proto::encode(&req).unwrap();
                let msg = c
                    .request(
                        subject::tool(sophia_proto::Category::CodeGeneration, "echo"),
                        body.into(),
                    )
                    .await
                    .expect("bus reply");
                let resp: ToolResponse = sophia_proto::decode(&msg.payload).unwrap();
                resp.into_outcome().expect("echo result");
            }
        })
        .await
    };

    // 3. Plain HTTP: reqwest POSTing the same JSON to an axum echo handler.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http_addr = listener.local_addr().unwrap();
    let app = axum::Router::new().route(
        "/echo",
        axum::routing::post(|body: axum::body::Bytes| async move { body }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    let http = {
        let client = reqwest::Client::new();
        let url = format!("http://{http_addr}/echo");
        let body = args.to_string();
        measure(
            "plain HTTP round trip (reqwest -> axum)",
            &plan,
            move || {
                let (client, url, body) = (client.clone(), url.clone(), body.clone());
                async move {
                    let r = client
                        .post(url)
                        .body(body)
                        .send()
                        .await
                        .expect("HTTP reply");
                    r.bytes().await.expect("HTTP body");
                }
            },
        )
        .await
    };

    // 4. MCP tools/call through the gateway over Streamable HTTP.
    let transport = StreamableHttpClientTransport::from_config(
        StreamableHttpClientTransportConfig::with_uri(mesh.mcp_url())
            .auth_header(TEST_TOKEN.to_owned())
            .max_concurrent_requests(IN_FLIGHT),
    );
    let client = Arc::new(Recorder::default().serve(transport).await.unwrap());
    eventually("echo is listed", Duration::from_secs(10), || async {
        let tools = client.list_all_tools().await.ok()?;
        tools.iter().any(|t| t.name == "echo").then_some(())
    })
    .await;
    let arguments = args.as_object().cloned().unwrap();
    let mcp = {
        let client = client.clone();
        measure("MCP tools/call via gateway (HTTP)", &plan, move || {
            let (client, arguments) = (client.clone(), arguments.clone());
            async move {
                let r = client
                    .call_tool(CallToolRequestParams::new("echo").with_arguments(arguments))
                    .await
                    .expect("MCP reply");
                assert_eq!(r.is_error, Some(false));
            }
        })
        .await
    };

    // 5. The same tools/call with a minimal HTTP client (one reqwest POST in a
    // session, SSE body read whole): the gateway's cost without rmcp's client.
    let mut session = sophia_tests::raw::RawSession::new(&mesh.mcp_url(), TEST_TOKEN);
    session.initialize().await;
    let raw_call = raw_tools_call(
        Arc::new(session),
        json!({"name": "echo", "arguments": args}),
    );
    let mcp_raw = measure(
        "MCP tools/call via gateway (raw HTTP)",
        &plan,
        raw_call.clone(),
    )
    .await;

    // 5b. The same through a second gateway that keeps SSE events in its
    // memory only (SOPHIA_SSE_REPLAY_S=0): what storing them on JetStream
    // for resumption at any replica costs.
    let no_replay = {
        let mut config = mesh.gateway_config();
        config.sse_replay_s = 0;
        let stop = tokio_util::sync::CancellationToken::new();
        let gateway = sophia_gateway::run(config, stop.clone())
            .await
            .expect("a second gateway starts");
        let probe = sophia_tests::connect_http(&gateway.mcp_url(), TEST_TOKEN).await;
        sophia_tests::tools::wait_for_tool(&probe, "echo").await;
        let mut session = sophia_tests::raw::RawSession::new(&gateway.mcp_url(), TEST_TOKEN);
        session.initialize().await;
        let op = raw_tools_call(
            Arc::new(session),
            json!({"name": "echo", "arguments": args}),
        );
        let figures = measure("  same, SSE events not kept on JetStream", &plan, op).await;
        stop.cancel();
        figures
    };

    // 6. The seed's create_agent through the gateway: the agent made from a
    // template and its record written to JetStream KV (no task, so no model).
    let _agno = {
        let stop = tokio_util::sync::CancellationToken::new();
        let handle = agno_worker::run(
            agno_worker::Cli {
                worker: mesh.worker_config(),
                agno: agno_worker::AgnoArgs {
                    categories: sophia_kit::Category::AGENTS.to_vec(),
                    templates: None,
                    session_ttl_s: 600,
                },
            },
            stop.clone(),
        )
        .await
        .expect("agno-worker starts");
        (handle, stop.drop_guard())
    };
    eventually(
        "agno_create_agent is listed",
        Duration::from_secs(10),
        || async {
            let tools = client.list_all_tools().await.ok()?;
            tools
                .iter()
                .any(|t| t.name == "agno_create_agent")
                .then_some(())
        },
    )
    .await;
    let create = {
        let client = client.clone();
        let arguments = json!({"agent_type": "gong_agent"})
            .as_object()
            .cloned()
            .unwrap();
        measure("MCP agno_create_agent via gateway", &plan, move || {
            let (client, arguments) = (client.clone(), arguments.clone());
            async move {
                let r = client
                    .call_tool(
                        CallToolRequestParams::new("agno_create_agent").with_arguments(arguments),
                    )
                    .await
                    .expect("MCP reply");
                assert_eq!(r.is_error, Some(false));
            }
        })
        .await
    };

    // 7. The same raw tools/call with tracing on: an SDK tracer exporting
    // every span (gateway and worker, both in this process) over OTLP/HTTP
    // to a real receiver. Until here no tracer was installed (no-op spans).
    let otlp = sophia_tests::otlp::Receiver::start().await;
    let telemetry = sophia_kit::telemetry::init_exporting_to("bench", &otlp.endpoint);
    let traced = measure("MCP tools/call, traced (OTLP export)", &plan, raw_call).await;
    telemetry.shutdown();
    let exported = otlp.spans().len();
    assert!(exported > 0, "the traced calls exported spans");

    println!();
    println!(
        "1 KiB payload; {} sequential samples; throughput with {IN_FLIGHT} in flight{}",
        plan.sequential,
        if full {
            ""
        } else {
            " (smoke run: pass --bench for real figures)"
        }
    );
    print_table(&[
        &raw, &bus, &http, &mcp, &mcp_raw, &no_replay, &create, &traced,
    ]);
    let ratio = |f: &Figures| f.p50.as_secs_f64() / raw.p50.as_secs_f64();
    println!();
    println!(
        "p50 ratio to raw NATS: bus {:.2}x, plain HTTP {:.2}x, MCP via gateway {:.2}x \
         (rmcp client) / {:.2}x (raw HTTP client); aim: gateway within 1.5x",
        ratio(&bus),
        ratio(&http),
        ratio(&mcp),
        ratio(&mcp_raw)
    );
    println!(
        "tracing on (every span exported over OTLP/HTTP, {exported} spans): p50 {:+.0} µs, \
         throughput {:.2}x of tracing off (raw HTTP client)",
        (traced.p50.as_secs_f64() - mcp_raw.p50.as_secs_f64()) * 1e6,
        traced.throughput / mcp_raw.throughput
    );
    println!(
        "SSE events kept on JetStream (resumable at any replica): p50 {:+.0} µs, throughput \
         {:.2}x of keeping them in one gateway's memory (raw HTTP client)",
        (mcp_raw.p50.as_secs_f64() - no_replay.p50.as_secs_f64()) * 1e6,
        mcp_raw.throughput / no_replay.throughput
    );
    println!(
        "create_agent end to end: p50 {:.2} ms, p99 {:.2} ms (target: under 5 ms; the seed's: under 2 s)",
        create.p50.as_secs_f64() * 1e3,
        create.p99.as_secs_f64() * 1e3
    );
    println!(
        "throughput ratio to raw NATS: bus {:.2}, MCP via gateway {:.2}",
        bus.throughput / raw.throughput,
        mcp.throughput / raw.throughput
    );
    // Close the MCP session before the mesh goes away.
    if let Ok(client) = Arc::try_unwrap(client) {
        let _ = client.cancel().await;
    }
}
