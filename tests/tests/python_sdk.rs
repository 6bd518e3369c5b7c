//! The official MCP Python SDK (PyPI `mcp`, pinned in
//! `ops/python-sdk/requirements.txt`) as a client of the gateway over
//! Streamable HTTP: it parses every tool it lists, follows `nextCursor`,
//! and calls tools, as Python agents in the wild do.

use std::time::Duration;

use serde_json::{Value, json};
use sophia_tests::announce::{announce, spec};
use sophia_tests::mesh::TEST_TOKEN;
use sophia_tests::python::PythonSdk;
use sophia_tests::tools::wait_for_tool;
use sophia_tests::{Mesh, eventually};

/// The tool names in a `list-tools` probe's output.
fn names(listed: &Value) -> Vec<&str> {
    listed["names"]
        .as_array()
        .unwrap_or_else(|| panic!("a list of tools: {listed}"))
        .iter()
        .map(|n| n.as_str().expect("a tool name"))
        .collect()
}

/// The SDK takes any object as an input schema, but its JSON parser refuses
/// a message nested deeper than about 200 levels: one deep schema listed
/// would fail the whole `tools/list`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_sdk_lists_good_tools_beside_bad_announcements() {
    let sdk = PythonSdk::find();
    let mut mesh = Mesh::start().await;
    mesh.worker(echo_worker::echo_worker()).await;
    sophia_tests::announce::announce_junk_beside_fine(&mesh).await;
    let client = mesh.client().await;
    wait_for_tool(&client, "echo").await;
    wait_for_tool(&client, "fine").await;
    // The abyss and the four bad tools are refused, not just late.
    eventually(
        "the refusals are on /health",
        Duration::from_secs(10),
        || async {
            let refused = mesh.health().await?["refused"].as_array()?.len();
            (refused >= 5).then_some(())
        },
    )
    .await;
    let listed = sdk
        .probe(&mesh.mcp_url(), TEST_TOKEN, &["list-tools"])
        .await;
    assert_eq!(names(&listed), ["echo", "fine"], "{listed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_sdk_follows_next_cursor_through_15000_tools() {
    let sdk = PythonSdk::find();
    let mut mesh = Mesh::start().await;
    mesh.worker(echo_worker::echo_worker()).await;
    // Five fake replicas of 3,000 tools each (one announcement must fit in
    // a NATS message).
    for part in 0..5 {
        let tools = (0..3_000)
            .map(|i| spec(&format!("t{part}_{i:04}"), json!({"type": "object"})))
            .collect();
        announce(&mesh, &format!("many{part}"), tools, json!({})).await;
    }
    let client = mesh.client().await;
    for part in 0..5 {
        wait_for_tool(&client, &format!("t{part}_2999")).await;
    }
    let listed = sdk
        .probe(&mesh.mcp_url(), TEST_TOKEN, &["list-tools"])
        .await;
    let pages = listed["pages"].as_u64().expect("a page count");
    let min_pages = 15_001_u64.div_ceil(sophia_gateway::paging::PAGE_ITEMS as u64);
    assert!(pages >= min_pages, "{pages} pages for 15,001 tools");
    let mut names = names(&listed);
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), 15_001, "every tool, none twice");
    assert!(names.contains(&"echo"));
    for part in 0..5 {
        for i in [0, 1_500, 2_999] {
            let name = format!("t{part}_{i:04}");
            assert!(names.contains(&name.as_str()), "{name} is listed");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_sdk_calls_a_tool() {
    let sdk = PythonSdk::find();
    let mut mesh = Mesh::start().await;
    mesh.worker(echo_worker::echo_worker()).await;
    wait_for_tool(&mesh.client().await, "echo").await;
    let text = "Grüße from the Python SDK";
    let args = json!({ "text": text }).to_string();
    let called = sdk
        .probe(&mesh.mcp_url(), TEST_TOKEN, &["call", "echo", &args])
        .await;
    assert_eq!(
        called,
        json!({
            "isError": false,
            "blocks": [{"type": "text", "len": 25}],
            "texts": 1,
            // Characters, not bytes; the SHA-256 of the text's UTF-8.
            "reassembled": [{
                "len": 25,
                "sha256": "f6ea07ee7c4802b08e243f5709ba3750f8dcb11bda85f15cf9bd6ee5e4a2e18d"
            }]
        })
    );
}

/// The probe reports what the SDK raised as `{"error": ...}` (exit status
/// 2), which the tests of failures assert on: here, a wrong token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_sdk_reports_what_the_gateway_refuses() {
    let sdk = PythonSdk::find();
    let mesh = Mesh::start().await;
    let refused = sdk
        .probe(&mesh.mcp_url(), "not-the-token", &["list-tools"])
        .await;
    assert_eq!(
        refused,
        json!({"error": "MCPError: Server returned an error response"})
    );
}

/// The SHA-256 of `text`, in hex (as the probe reports it).
fn sha256(text: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// 5 MiB through the official Python SDK, which refuses any SSE event over
/// 1 MiB: the gateway sends the result as resource links to parts under
/// that, and the SDK reads and joins them into the worker's exact text.
/// The same result sent whole (the limit raised past it) is refused by the
/// SDK, which is what the parts are for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_sdk_receives_a_5_mib_result_in_parts() {
    use sophia_tests::workers::{big_result_worker, pattern};
    let sdk = PythonSdk::find();
    let mut mesh = Mesh::start().await;
    mesh.worker(big_result_worker()).await;
    wait_for_tool(&mesh.client().await, "big_result").await;
    let size = 5 * 1024 * 1024;
    let args = json!({ "bytes": size }).to_string();
    let expected = format!("0:{}", pattern(size));

    let called = sdk
        .probe(&mesh.mcp_url(), TEST_TOKEN, &["call", "big_result", &args])
        .await;
    assert_eq!(called["isError"], false, "{called}");
    let links = called["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["type"] == "resource_link")
        .count();
    assert!(links >= 10, "{called}");
    let joined = called["reassembled"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["len"].as_u64() == Some(expected.len() as u64))
        .unwrap_or_else(|| panic!("the parts join to the whole text: {called}"));
    assert_eq!(joined["sha256"], sha256(&expected));

    // The same result in one event: the SDK refuses it.
    let mut whole = mesh.gateway_config();
    whole.inline_result_bytes = 64 * 1024 * 1024;
    // As an SSE event: a plain call answered as JSON (the fast path) has no
    // event to cap, but a call with progress is answered on a stream.
    whole.fast_calls = false;
    let stop = tokio_util::sync::CancellationToken::new();
    let unsplit = sophia_gateway::run(whole, stop.clone()).await.unwrap();
    wait_for_tool(
        &sophia_tests::connect_http(&unsplit.mcp_url(), TEST_TOKEN).await,
        "big_result",
    )
    .await;
    let refused = sdk
        .probe(
            &unsplit.mcp_url(),
            TEST_TOKEN,
            &["call", "big_result", &args],
        )
        .await;
    assert!(
        refused["error"]
            .as_str()
            .is_some_and(|e| e.contains("exceeded the 1048576 byte limit")),
        "{refused}"
    );
    stop.cancel();
}
