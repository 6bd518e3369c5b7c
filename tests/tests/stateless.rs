//! MCP 2026-07-28, the stateless revision. Clients that speak it (rmcp's
//! client, and the official Python SDK in its default mode) list and call
//! tools and hear of list changes on `subscriptions/listen`. They need no
//! session affinity: a round-robin balancer sends their requests to two
//! gateway replicas in turn. Session-based clients (Cursor speaks
//! 2025-06-18) are served as before beside them.

use std::time::Duration;

use rmcp::model::{CallToolRequestParams, ProtocolVersion, ServerNotification, SubscriptionFilter};
use rmcp::service::{ClientLifecycleMode, ClientServiceExt};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use serde_json::{Value, json};
use sophia_tests::announce::{announce, spec};
use sophia_tests::balancer::RoundRobin;
use sophia_tests::mesh::TEST_TOKEN;
use sophia_tests::python::PythonSdk;
use sophia_tests::raw::RawSession;
use sophia_tests::tools::wait_for_tool;
use sophia_tests::{Mesh, Recorder};

/// A second gateway replica on the mesh's bus, and a balancer alternating
/// between the two.
struct Replicas {
    balancer: RoundRobin,
    _second: tokio_util::sync::DropGuard,
}

impl Replicas {
    async fn start(mesh: &Mesh) -> Replicas {
        let stop = tokio_util::sync::CancellationToken::new();
        let second = sophia_gateway::run(mesh.gateway_config(), stop.clone())
            .await
            .expect("a second gateway replica starts");
        // Both replicas know the worker's tools before the client comes.
        let probe = sophia_tests::connect_http(&second.mcp_url(), TEST_TOKEN).await;
        wait_for_tool(&probe, "echo").await;
        let balancer = RoundRobin::start(vec![
            mesh.http_base(),
            format!("http://{}", second.http_addr),
        ])
        .await;
        Replicas {
            balancer,
            _second: stop.drop_guard(),
        }
    }

    fn mcp_url(&self) -> String {
        format!("{}/mcp", self.balancer.base())
    }

    /// Every replica answered at least `n` requests.
    fn each_served(&self, n: usize) {
        let served = self.balancer.served();
        assert!(
            served.iter().all(|s| *s >= n),
            "each replica served at least {n} requests: {served:?}"
        );
    }
}

fn echo_text(result: &rmcp::model::CallToolResult) -> String {
    result
        .content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_rmcp_client_speaking_2026_07_28_needs_no_session_affinity() {
    let mut mesh = Mesh::start().await;
    mesh.worker(echo_worker::echo_worker()).await;
    let replicas = Replicas::start(&mesh).await;
    let transport = StreamableHttpClientTransport::from_config(
        StreamableHttpClientTransportConfig::with_uri(replicas.mcp_url())
            .auth_header(TEST_TOKEN.to_owned()),
    );
    let client = Recorder::default()
        .serve_with_lifecycle(
            transport,
            ClientLifecycleMode::Discover {
                preferred_versions: vec![ProtocolVersion::V_2026_07_28],
            },
        )
        .await
        .expect("server/discover succeeds through the balancer");
    let server = client.peer_info().expect("the discover result");
    assert_eq!(server.protocol_version, ProtocolVersion::V_2026_07_28);

    let tools = client.list_all_tools().await.expect("tools/list");
    assert!(tools.iter().any(|t| t.name == "echo"), "{tools:?}");
    for i in 0..4 {
        let text = format!("stateless call {i}");
        let result = client
            .call_tool(
                CallToolRequestParams::new("echo")
                    .with_arguments(json!({ "text": text }).as_object().cloned().unwrap()),
            )
            .await
            .expect("tools/call");
        assert_eq!(result.is_error, Some(false), "{result:?}");
        assert!(echo_text(&result).contains(&text), "{result:?}");
    }
    replicas.each_served(3);

    // A worker joins: the listen stream (on one replica) says so, whichever
    // replica's registry saw it first.
    let mut subscription = client
        .listen({
            let mut filter = SubscriptionFilter::new();
            filter.tools_list_changed = Some(true);
            filter
        })
        .await
        .expect("subscriptions/listen is acknowledged");
    assert_eq!(subscription.acknowledged().tools_list_changed, Some(true));
    announce(
        &mesh,
        "joiner-1",
        vec![spec("joined_later", json!({"type": "object"}))],
        json!({}),
    )
    .await;
    let change = tokio::time::timeout(Duration::from_secs(30), subscription.next())
        .await
        .expect("a notification within 30 s")
        .expect("the stream is open")
        .expect("a notification, not the end");
    assert!(
        matches!(change, ServerNotification::ToolListChangedNotification(_)),
        "{change:?}"
    );
    let tools = client.list_all_tools().await.expect("tools/list again");
    assert!(tools.iter().any(|t| t.name == "joined_later"), "{tools:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_sdk_in_its_default_mode_speaks_2026_07_28_through_two_replicas() {
    let sdk = PythonSdk::find();
    let mut mesh = Mesh::start().await;
    mesh.worker(echo_worker::echo_worker()).await;
    let replicas = Replicas::start(&mesh).await;
    let mut probe = sdk.spawn(
        &replicas.mcp_url(),
        TEST_TOKEN,
        &["modern", "echo", r#"{"text": "from python"}"#],
    );
    let first = probe.next().await;
    assert_eq!(first["protocol"], "2026-07-28", "{first}");
    assert!(
        first["names"]
            .as_array()
            .is_some_and(|n| n.contains(&json!("echo"))),
        "{first}"
    );
    assert_eq!(first["call"]["isError"], false, "{first}");
    assert!(
        first["call"]["texts"].to_string().contains("from python"),
        "{first}"
    );
    assert_eq!(probe.next().await, json!({"listening": true}));
    replicas.each_served(2);
    announce(
        &mesh,
        "joiner-2",
        vec![spec("joined_for_python", json!({"type": "object"}))],
        json!({}),
    )
    .await;
    let last = probe.next().await;
    assert_eq!(last["changed"], true, "{last}");
    assert!(
        last["names"]
            .as_array()
            .is_some_and(|n| n.contains(&json!("joined_for_python"))),
        "{last}"
    );
}

/// A stateless `tools/call` as raw JSON-RPC, with `version` in the header
/// and `meta_version` in `_meta` (either may be absent).
fn stateless_call(meta_version: Option<&str>) -> Value {
    let mut meta = json!({
        "io.modelcontextprotocol/clientInfo": {"name": "raw", "version": "0"},
        "io.modelcontextprotocol/clientCapabilities": {},
    });
    if let Some(v) = meta_version {
        meta["io.modelcontextprotocol/protocolVersion"] = json!(v);
    }
    json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
        "params": {"name": "echo", "arguments": {"text": "hi"}, "_meta": meta}})
}

/// The headers a 2026-07-28 client sends with [`stateless_call`], naming
/// `version`.
fn headers(version: &str) -> [(&str, &str); 3] {
    [
        ("MCP-Protocol-Version", version),
        ("Mcp-Method", "tools/call"),
        ("Mcp-Name", "echo"),
    ]
}

/// The first JSON-RPC error's message in a response, lowercased.
fn error_message(r: &sophia_tests::raw::RawResponse) -> String {
    r.messages
        .iter()
        .find_map(|m| m["error"]["message"].as_str())
        .unwrap_or_else(|| panic!("a JSON-RPC error: {} {}", r.status, r.body))
        .to_lowercase()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stateless_requests_with_a_missing_unknown_or_mixed_version_get_a_clear_error() {
    let mut mesh = Mesh::start().await;
    mesh.worker(echo_worker::echo_worker()).await;
    let client = mesh.client().await;
    wait_for_tool(&client, "echo").await;
    let raw = RawSession::new(&mesh.mcp_url(), TEST_TOKEN);
    let v = "2026-07-28";

    // Well formed: served, with no session.
    let ok = raw
        .post_raw(stateless_call(Some(v)).to_string(), &headers(v))
        .await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(ok.messages[0]["result"]["isError"], false, "{}", ok.body);

    // Without the headers 2026-07-28 requires (middleboxes route on them).
    let bare = raw
        .post_raw(
            stateless_call(Some(v)).to_string(),
            &[("MCP-Protocol-Version", v)],
        )
        .await;
    assert_eq!(bare.status, 400, "{}", bare.body);
    assert!(error_message(&bare).contains("mcp-method"), "{}", bare.body);

    // The header names 2026-07-28, the request's _meta names no version.
    let missing = raw
        .post_raw(stateless_call(None).to_string(), &headers(v))
        .await;
    assert_eq!(missing.status, 400, "{}", missing.body);
    assert!(
        error_message(&missing).contains("protocolversion"),
        "{}",
        missing.body
    );

    // A version no one knows, in both places.
    let unknown = raw
        .post_raw(
            stateless_call(Some("2099-01-01")).to_string(),
            &headers("2099-01-01"),
        )
        .await;
    assert_eq!(unknown.status, 400, "{}", unknown.body);
    // The error names the version asked for and those the gateway speaks.
    assert!(
        error_message(&unknown).contains("unsupported protocol version"),
        "{}",
        unknown.body
    );
    let data = &unknown.messages[0]["error"]["data"];
    assert_eq!(data["requested"], "2099-01-01", "{}", unknown.body);
    assert!(
        data["supported"]
            .as_array()
            .is_some_and(|s| s.contains(&json!("2026-07-28")) && s.contains(&json!("2025-06-18"))),
        "{}",
        unknown.body
    );

    // Mixed revisions: a session-era header on a stateless request.
    let mixed = raw
        .post_raw(stateless_call(Some(v)).to_string(), &headers("2025-06-18"))
        .await;
    assert_eq!(mixed.status, 400, "{}", mixed.body);
    assert!(
        error_message(&mixed).contains("2025-06-18"),
        "{}",
        mixed.body
    );

    // Mixed revisions: a 2025-06-18 session sending a 2026-07-28 request.
    let mut session = RawSession::new(&mesh.mcp_url(), TEST_TOKEN);
    session.initialize().await;
    let in_session = session
        .post_raw(stateless_call(Some(v)).to_string(), &headers(v))
        .await;
    println!(
        "a 2026-07-28 request on a 2025-06-18 session: {} {}",
        in_session.status, in_session.body
    );
    assert!(
        in_session.status == 400 || in_session.messages[0]["result"]["isError"] == false,
        "served or refused clearly: {} {}",
        in_session.status,
        in_session.body
    );

    // The session-based client beside them is unaffected.
    let still = client
        .call_tool(
            CallToolRequestParams::new("echo")
                .with_arguments(json!({"text": "legacy"}).as_object().cloned().unwrap()),
        )
        .await
        .expect("the 2025 session still works");
    assert_eq!(still.is_error, Some(false));
}
