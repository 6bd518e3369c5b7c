//! Latency and throughput of one 1 KiB request, measured many ways in one
//! run against one real nats-server:
//!
//! 1. raw NATS request-reply between two async-nats clients (the baseline);
//! 2. the bus path: a MessagePack `ToolRequest` to an echo worker built with
//!    the kit (what an agent calling a tool pays);
//! 3. a plain HTTP round trip (reqwest → axum echoing the JSON body), the
//!    cost of any HTTP hop before MCP adds anything;
//! 4. an MCP `tools/call` through the gateway over Streamable HTTP to that
//!    same worker (what Cursor pays), from rmcp's client;
//! 5. the same call from a minimal HTTP client, all 64 calls in flight on
//!    one session (as Cursor sends them), then spread over 64 sessions, then
//!    with a 100 KiB result; then through gateways with the fast path off
//!    (`SOPHIA_FAST_CALLS=false`: every request through rmcp's session
//!    worker), on one session, on 64, and with SSE events kept in memory
//!    only instead of on JetStream; and with no audit trail; then the
//!    stateless revision (MCP 2026-07-28: no session, everything in each
//!    request);
//! 6. the seed's `create_agent` (`agno_create_agent`, no task) through the
//!    gateway: the agno-worker's front door, an agent from its template,
//!    and its record written to JetStream KV;
//! 7. the minimal-client call with every span exported over OTLP;
//! 8. the minimal-client call through the `sophia-gateway` binary as its
//!    own process, for its resident memory and CPU seconds per 10,000 calls.
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
use serde_json::{Value, json};
use sophia_proto::{Caller, ToolRequest, ToolResponse, subject};
use sophia_tests::bench::{
    Figures, IN_FLIGHT, Plan, measure, measure_each, print_table, raw_tools_call, raw_tools_call_in,
};
use sophia_tests::mesh::TEST_TOKEN;
use sophia_tests::raw::RawSession;
use sophia_tests::{Mesh, Recorder, eventually};

/// The services' allocator, as in their binaries (the gateway and worker
/// run in this process).
#[global_allocator]
static ALLOCATOR: sophia_kit::Allocator = sophia_kit::Allocator {};

const PAYLOAD: usize = 1024;
/// The large result's size.
const LARGE: usize = 100 * 1024;

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
    let args = json!({ "text": text });

    let mut mesh = Mesh::start().await;
    // The services' heartbeat (5 s), not the tests' 200 ms: 64 calls of
    // 100 KiB at once can keep this process, which hosts the worker, from
    // announcing for longer than three of those (then the gateway forgets
    // the worker mid-row).
    let mut worker = mesh.worker_config();
    worker.heartbeat_ms = 5_000;
    mesh.worker_with(echo_worker::echo_worker(), worker).await;
    let raw = raw_nats(&mesh, &plan, &text).await;
    let requester = mesh.nats_client().await;
    let bus = bus(&requester, &plan, &args).await;
    let http = plain_http(&plan, &args).await;
    if std::env::var_os(CORE).is_some() {
        core_rows(&mesh, &plan, &args, [raw, bus, http]).await;
        return;
    }

    // 4. MCP tools/call through the gateway over Streamable HTTP (rmcp client).
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
    let mcp = rmcp_call(&client, &plan, "echo", &args, "MCP tools/call, rmcp client").await;

    // 5. The minimal HTTP client (one reqwest POST per call, the body read
    // whole): the gateway's cost without rmcp's client.
    let echo = json!({"name": "echo", "arguments": args});
    let one = sessions(&mesh.mcp_url(), 1).await;
    let raw_call = raw_tools_call(one[0].clone(), echo.clone());
    let mcp_raw = measure(
        "MCP tools/call, minimal client, 1 session",
        &plan,
        raw_call.clone(),
    )
    .await;
    let many = Arc::new(sessions(&mesh.mcp_url(), IN_FLIGHT).await);
    let mcp_sessions = measure_each(
        "  same, 64 sessions (1 call in flight each)",
        &plan,
        raw_tools_call_in(many, echo.clone()),
    )
    .await;
    let large = json!({"name": "echo", "arguments": {"text": "x".repeat(LARGE)}});
    let mcp_large = measure(
        "  same, 100 KiB result (1 session)",
        &plan,
        raw_tools_call(one[0].clone(), large),
    )
    .await;
    let [off, off_sessions, off_memory] = fast_path_off(&mesh, &plan, &echo).await;
    let no_audit = audit_off(&mesh, &plan, &echo).await;
    let stateless = stateless(&mesh, &plan, &args).await;

    // 6. The seed's create_agent through the gateway: the agent made from a
    // template and its record written to JetStream KV (no task, so no model).
    let _agno = agno(&mesh).await;
    sophia_tests::tools::wait_for_tool(&client, "agno_create_agent").await;
    let agent = json!({"agent_type": "gong_agent"});
    let create = rmcp_call(
        &client,
        &plan,
        "agno_create_agent",
        &agent,
        "MCP agno_create_agent",
    )
    .await;

    // 7. The same raw tools/call with tracing on: an SDK tracer exporting
    // every span (gateway and worker, both in this process) over OTLP/HTTP
    // to a real receiver. Until here no tracer was installed (no-op spans).
    let otlp = sophia_tests::otlp::Receiver::start().await;
    let telemetry = sophia_kit::telemetry::init_exporting_to("bench", &otlp.endpoint);
    let traced = measure("MCP tools/call, traced (OTLP export)", &plan, raw_call).await;
    telemetry.shutdown();
    let exported = otlp.spans().len();
    assert!(exported > 0, "the traced calls exported spans");

    // 8. The gateway as its own process.
    let process = gateway_process(&mesh, &plan, &echo, PROCESS, &[]).await;

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
    let mut rows = vec![
        &raw,
        &bus,
        &http,
        &mcp,
        &mcp_raw,
        &mcp_sessions,
        &mcp_large,
        &off,
        &off_sessions,
        &off_memory,
        &no_audit,
        &stateless,
        &create,
        &traced,
    ];
    if let Some((figures, _)) = &process {
        rows.push(figures);
    }
    print_table(&rows);
    println!();
    done_when(&bus, &http, &mcp_raw);
    println!(
        "one session against 64 sessions (64 calls in flight): {:.2}x the throughput; \
         100 KiB result: {:.2}x the throughput of 1 KiB",
        mcp_raw.throughput / mcp_sessions.throughput,
        mcp_large.throughput / mcp_raw.throughput
    );
    print_process(&process);
    let ratio = |f: &Figures| f.p50.as_secs_f64() / raw.p50.as_secs_f64();
    println!(
        "p50 ratio to raw NATS: bus {:.2}x, plain HTTP {:.2}x, MCP via gateway {:.2}x \
         (rmcp client) / {:.2}x (minimal client)",
        ratio(&bus),
        ratio(&http),
        ratio(&mcp),
        ratio(&mcp_raw)
    );
    println!(
        "tracing on (every span exported over OTLP/HTTP, {exported} spans): p50 {:+.0} µs, \
         throughput {:.2}x of tracing off (minimal client)",
        micros(traced.p50) - micros(mcp_raw.p50),
        traced.throughput / mcp_raw.throughput
    );
    println!(
        "fast path off (rmcp's session worker): one session {:.2}x and 64 sessions {:.2}x the \
         fast path's throughput; SSE events on JetStream: p50 {:+.0} µs, throughput {:.2}x of \
         keeping them in memory",
        off.throughput / mcp_raw.throughput,
        off_sessions.throughput / mcp_sessions.throughput,
        micros(off.p50) - micros(off_memory.p50),
        off.throughput / off_memory.throughput
    );
    println!(
        "audit records on JetStream (one per call): p50 {:+.0} µs, throughput {:.2}x of no audit",
        micros(mcp_raw.p50) - micros(no_audit.p50),
        mcp_raw.throughput / no_audit.throughput
    );
    println!(
        "stateless (2026-07-28, rmcp without a session): p50 {:+.0} µs, throughput {:.2}x of \
         a session's fast path",
        micros(stateless.p50) - micros(mcp_raw.p50),
        stateless.throughput / mcp_raw.throughput
    );
    println!(
        "create_agent end to end: p50 {:.2} ms, p99 {:.2} ms (target: under 5 ms; the seed's: under 2 s)",
        create.p50.as_secs_f64() * 1e3,
        create.p99.as_secs_f64() * 1e3
    );
    // Close the MCP session before the mesh goes away.
    if let Ok(client) = Arc::try_unwrap(client) {
        let _ = client.cancel().await;
    }
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// Set (to anything) to measure only the rows the done-when ratios and the
/// gateway's CPU per call need: raw NATS, bus, plain HTTP, the minimal
/// client on one session, the same with no audit trail, and the gateway as
/// its own process. For quick A/B runs; the figures come from a
/// whole run.
const CORE: &str = "SOPHIA_BENCH_CORE";

/// The rows of a [`CORE`] run, after the first three.
async fn core_rows(mesh: &Mesh, plan: &Plan, args: &Value, [raw, bus, http]: [Figures; 3]) {
    let echo = json!({"name": "echo", "arguments": args});
    let one = sessions(&mesh.mcp_url(), 1).await;
    let mcp_raw = measure(
        "MCP tools/call, minimal client, 1 session",
        plan,
        raw_tools_call(one[0].clone(), echo.clone()),
    )
    .await;
    let no_audit = audit_off(mesh, plan, &echo).await;
    let process = gateway_process(mesh, plan, &echo, PROCESS, &[]).await;
    let process_no_audit = gateway_process(
        mesh,
        plan,
        &echo,
        "  gateway as a process, no audit records",
        &[("SOPHIA_AUDIT_RETENTION_S", "0")],
    )
    .await;
    let mut rows = vec![&raw, &bus, &http, &mcp_raw, &no_audit];
    for (figures, _) in process.iter().chain(&process_no_audit) {
        rows.push(figures);
    }
    println!();
    println!("core rows only ({CORE} is set)");
    print_table(&rows);
    println!();
    done_when(&bus, &http, &mcp_raw);
    print_process(&process);
    print_process(&process_no_audit);
    println!(
        "audit records on JetStream (one per call): p50 {:+.0} µs, throughput {:.2}x of no audit",
        micros(mcp_raw.p50) - micros(no_audit.p50),
        mcp_raw.throughput / no_audit.throughput
    );
}

/// The two done-when ratios.
fn done_when(bus: &Figures, http: &Figures, mcp_raw: &Figures) {
    println!(
        "DONE-WHEN throughput: gateway (minimal client, 1 session) / bus = {:.0} / {:.0} = {:.2}x \
         (target: at least 0.5x)",
        mcp_raw.throughput,
        bus.throughput,
        mcp_raw.throughput / bus.throughput
    );
    let floor = http.p50 + bus.p50;
    println!(
        "DONE-WHEN latency: gateway p50 / (plain HTTP p50 + bus p50) = {:.0} / ({:.0} + {:.0}) µs \
         = {:.2}x (target: at most 1.15x)",
        micros(mcp_raw.p50),
        micros(http.p50),
        micros(bus.p50),
        mcp_raw.p50.as_secs_f64() / floor.as_secs_f64()
    );
}

/// The gateway process's CPU per call and memory, if it was measured.
fn print_process(process: &Option<(Figures, Usage)>) {
    match process {
        Some((figures, use_)) => println!(
            "{}: {:.2} CPU seconds per 10,000 calls ({} calls, {:.0} req/s); \
             resident {} KiB after the run, peak {} KiB",
            figures.name.trim(),
            use_.cpu_s * 10_000.0 / use_.calls as f64,
            use_.calls,
            figures.throughput,
            use_.rss_kib,
            use_.peak_kib
        ),
        None => println!(
            "gateway process: not measured (build it first: cargo build --release -p sophia-gateway)"
        ),
    }
}

/// 1. Raw NATS: a plain responder echoing the payload.
async fn raw_nats(mesh: &Mesh, plan: &Plan, text: &str) -> Figures {
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
    let c = mesh.nats_client().await;
    let payload = bytes::Bytes::from(text.to_owned().into_bytes());
    eventually("the raw responder answers", Duration::from_secs(10), || {
        let (c, p) = (c.clone(), payload.clone());
        async move { c.request("bench.echo", p).await.ok().map(|_| ()) }
    })
    .await;
    measure("raw NATS request-reply", plan, move || {
        let (c, p) = (c.clone(), payload.clone());
        async move {
            c.request("bench.echo", p).await.expect("raw reply");
        }
    })
    .await
}

/// 2. The bus path to the kit's echo worker.
async fn bus(requester: &async_nats::Client, plan: &Plan, args: &Value) -> Figures {
    let c = requester.clone();
    let args = args.clone();
    measure("bus: ToolRequest -> kit echo worker", plan, move || {
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
}

/// 3. Plain HTTP: reqwest POSTing the same JSON to an axum echo handler.
async fn plain_http(plan: &Plan, args: &Value) -> Figures {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http_addr = listener.local_addr().unwrap();
    let app = axum::Router::new().route(
        "/echo",
        axum::routing::post(|body: axum::body::Bytes| async move { body }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    let client = reqwest::Client::new();
    let url = format!("http://{http_addr}/echo");
    let body = args.to_string();
    measure("plain HTTP round trip (reqwest -> axum)", plan, move || {
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
    })
    .await
}

/// A `tools/call` of `tool` with `args` from rmcp's client.
async fn rmcp_call(
    client: &Arc<sophia_tests::McpClient>,
    plan: &Plan,
    tool: &'static str,
    args: &Value,
    name: &'static str,
) -> Figures {
    let client = client.clone();
    let arguments = args.as_object().cloned().unwrap();
    measure(name, plan, move || {
        let (client, arguments) = (client.clone(), arguments.clone());
        async move {
            let r = client
                .call_tool(CallToolRequestParams::new(tool).with_arguments(arguments))
                .await
                .expect("MCP reply");
            assert_eq!(r.is_error, Some(false));
        }
    })
    .await
}

/// `n` initialized minimal-client sessions at `url`.
async fn sessions(url: &str, n: usize) -> Vec<Arc<RawSession>> {
    let mut all = Vec::with_capacity(n);
    for _ in 0..n {
        let mut session = RawSession::new(url, TEST_TOKEN);
        session.initialize().await;
        all.push(Arc::new(session));
    }
    all
}

/// A second gateway on the mesh, configured by `configure`, once it lists
/// echo; it stops when the token is dropped.
async fn second_gateway(
    mesh: &Mesh,
    configure: impl FnOnce(&mut sophia_gateway::GatewayConfig),
) -> (String, tokio_util::sync::DropGuard) {
    let mut config = mesh.gateway_config();
    configure(&mut config);
    let stop = tokio_util::sync::CancellationToken::new();
    let gateway = sophia_gateway::run(config, stop.clone())
        .await
        .expect("a second gateway starts");
    let probe = sophia_tests::connect_http(&gateway.mcp_url(), TEST_TOKEN).await;
    sophia_tests::tools::wait_for_tool(&probe, "echo").await;
    (gateway.mcp_url(), stop.drop_guard())
}

/// 5d. The minimal-client call with the fast path off (every request
/// through rmcp's session worker, each answered on its own SSE stream,
/// whose events are kept on JetStream): one session, 64 sessions, and one
/// session with SSE events kept in the gateway's memory only
/// (SOPHIA_SSE_REPLAY_S=0).
async fn fast_path_off(mesh: &Mesh, plan: &Plan, echo: &Value) -> [Figures; 3] {
    let (url, _stop) = second_gateway(mesh, |c| c.fast_calls = false).await;
    let one = sessions(&url, 1).await.remove(0);
    let single = measure(
        "  fast path off (rmcp session), 1 session",
        plan,
        raw_tools_call(one, echo.clone()),
    )
    .await;
    let many = Arc::new(sessions(&url, IN_FLIGHT).await);
    let spread = measure_each(
        "  fast path off, 64 sessions",
        plan,
        raw_tools_call_in(many, echo.clone()),
    )
    .await;
    let (url, _stop) = second_gateway(mesh, |c| {
        c.fast_calls = false;
        c.sse_replay_s = 0;
    })
    .await;
    let one = sessions(&url, 1).await.remove(0);
    let memory = measure(
        "  fast path off, SSE events in memory only",
        plan,
        raw_tools_call(one, echo.clone()),
    )
    .await;
    [single, spread, memory]
}

/// 5e. The minimal-client call (fast path on) through a gateway that keeps
/// no audit trail (SOPHIA_AUDIT_RETENTION_S=0): what appending a record per
/// call to the JetStream stream `sophia_audit` costs.
async fn audit_off(mesh: &Mesh, plan: &Plan, echo: &Value) -> Figures {
    let (url, _stop) = second_gateway(mesh, |c| c.audit_retention_s = 0).await;
    let one = sessions(&url, 1).await.remove(0);
    measure(
        "  same, no audit records (fast path on)",
        plan,
        raw_tools_call(one, echo.clone()),
    )
    .await
}

/// 5f. The same tools/call in the stateless revision (MCP 2026-07-28): no
/// session, the protocol version, client info and capabilities in each
/// request's `_meta`, and the headers the revision asks for. rmcp serves it
/// without a session (`serve_directly` per request), answering with JSON.
async fn stateless(mesh: &Mesh, plan: &Plan, args: &Value) -> Figures {
    let raw = Arc::new(RawSession::new(&mesh.mcp_url(), TEST_TOKEN));
    let ids = Arc::new(std::sync::atomic::AtomicU64::new(1));
    let args = args.clone();
    measure("MCP tools/call, stateless (2026-07-28)", plan, move || {
        let (raw, args) = (raw.clone(), args.clone());
        let id = ids.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        async move {
            let v = "2026-07-28";
            let call = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {
                "name": "echo", "arguments": args, "_meta": {
                    "io.modelcontextprotocol/protocolVersion": v,
                    "io.modelcontextprotocol/clientInfo": {"name": "bench", "version": "0"},
                    "io.modelcontextprotocol/clientCapabilities": {}}}});
            let headers = [
                ("MCP-Protocol-Version", v),
                ("Mcp-Method", "tools/call"),
                ("Mcp-Name", "echo"),
            ];
            let r = raw.post_raw(call.to_string(), &headers).await;
            assert_eq!(r.status, 200, "{}", r.body);
            assert_eq!(r.messages[0]["result"]["isError"], false, "{}", r.body);
        }
    })
    .await
}

/// The agno-worker, in this process.
async fn agno(mesh: &Mesh) -> (impl Sized, tokio_util::sync::DropGuard) {
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
}

/// The gateway process row's name.
const PROCESS: &str = "MCP tools/call, gateway as a process";

/// What the gateway process used over a measured run.
struct Usage {
    calls: usize,
    cpu_s: f64,
    rss_kib: u64,
    peak_kib: u64,
}

/// User plus system CPU seconds of process `pid` so far.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, s)| s).unwrap_or_default();
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let hz = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .unwrap_or(100.0);
    (ticks(11) + ticks(12)) as f64 / hz
}

/// A `/proc/<pid>/status` figure in KiB (`VmRSS`, `VmHWM`).
fn status_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Row 8: the minimal-client call through the `sophia-gateway` binary
/// (next to this program, as `cargo build --release -p sophia-gateway`
/// leaves it) as its own process on the same NATS, with its CPU and
/// memory; `None` if the binary is not built.
async fn gateway_process(
    mesh: &Mesh,
    plan: &Plan,
    echo: &Value,
    name: &'static str,
    extra: &[(&str, &str)],
) -> Option<(Figures, Usage)> {
    let exe = std::env::current_exe().ok()?;
    let built = exe.parent()?.parent()?.join("sophia-gateway").is_file();
    if !built {
        eprintln!("skipping the gateway process row: sophia-gateway is not built");
        return None;
    }
    let env = |pairs: &[(&str, &str)]| {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect::<Vec<_>>()
    };
    let nats = mesh.nats.url();
    let mut vars = env(&[
        ("NATS_URL", &nats),
        ("SOPHIA_GATEWAY_ADDR", sophia_tests::procs::ANY_PORT),
        ("SOPHIA_GATEWAY_TOKEN", TEST_TOKEN),
        ("RUST_LOG", "warn"),
    ]);
    vars.extend(env(extra));
    let mut process = sophia_tests::procs::Process::spawn("sophia-gateway", &vars);
    let base = process.ready_at("/ready").await;
    let url = format!("{base}/mcp");
    let probe = sophia_tests::connect_http(&url, TEST_TOKEN).await;
    sophia_tests::tools::wait_for_tool(&probe, "echo").await;
    let pid = process.pid()?;
    let session = sessions(&url, 1).await.remove(0);
    let op = raw_tools_call(session, echo.clone());
    let before = cpu_seconds(pid);
    let figures = measure(name, plan, op).await;
    let usage = Usage {
        calls: plan.warmup + plan.sequential + plan.concurrent / IN_FLIGHT * IN_FLIGHT,
        cpu_s: cpu_seconds(pid) - before,
        rss_kib: status_kib(pid, "VmRSS:"),
        peak_kib: status_kib(pid, "VmHWM:"),
    };
    drop(probe);
    Some((figures, usage))
}
