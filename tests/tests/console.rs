//! The mesh console in a real headless Chromium (Debian's, through
//! chromedriver): a person signs in, sees the replicas of a running mesh,
//! watches one disappear when it stops, sees a call's error appear, sees
//! the NATS link go and come back; approves one pending Pulumi preview and
//! sees its job finish, rejects another and nothing is applied. Markup
//! from the mesh shows as text and never runs, and a flood of events keeps
//! the page's event log to its window.
//!
//! Each test writes screenshots of the views it reaches to
//! `target/console-screenshots/` (`SOPHIA_SCREENSHOTS`), which
//! `docs/console.md` shows.

use serde_json::{Value, json};
use sophia_kit::{Category, Tool, ToolOutput, WireError, Worker};
use sophia_tests::announce::{announce, spec};
use sophia_tests::browser::Browser;
use sophia_tests::mesh::TEST_TOKEN;
use sophia_tests::raw::RawSession;
use sophia_tests::tools::{call, wait_for_tool};
use sophia_tests::{Mesh, eventually};

/// What a script that escaped its escaping would do.
const XSS: &str =
    "<script>window.__sophia_xss=1</script><img src=x onerror=\"window.__sophia_xss=2\">";

/// The trace a failing call is part of, as its client sent it.
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// A worker of service `service` with one tool that answers.
fn worker(service: &str, version: &str, tool: &str) -> Worker {
    Worker::new(service, version).tool(
        Tool::new(tool, Category::CodeGeneration, "Answers.")
            .read_only()
            .handler(|_| async move { Ok(ToolOutput::text("fine")) }),
    )
}

/// A worker whose one tool always fails with `message`.
fn failing(message: &'static str) -> Worker {
    Worker::new("failing-worker", "1.0.0").tool(
        Tool::new("always_fails", Category::CodeGeneration, "Fails.")
            .read_only()
            .handler(move |_| async move { Err::<ToolOutput, _>(WireError::failed(message)) }),
    )
}

/// Opens the console at `mesh` and signs in with the test token, through
/// the login form a person would use.
async fn signed_in(mesh: &Mesh) -> Browser {
    let browser = Browser::start().await.expect("headless Chromium starts");
    browser
        .goto(&format!("{}/console", mesh.http_base()))
        .await
        .unwrap();
    browser
        .wait_for_text("#why", "sign in")
        .await
        .expect("the login form");
    browser.fill("#credential", TEST_TOKEN).await.unwrap();
    browser.click("#sign-in").await.unwrap();
    browser
        .wait_for_text("#live", "Live")
        .await
        .expect("the live console");
    browser
}

/// How many rows of the replica table are of `service`.
async fn replicas_of(browser: &Browser, service: &str) -> u64 {
    let js = format!(
        "return [...document.querySelectorAll('#replicas tbody tr')]
            .filter(r => r.cells[0].textContent === {}).length;",
        json!(service)
    );
    browser.execute(&js).await.unwrap().as_u64().unwrap_or(0)
}

#[tokio::test]
async fn a_person_signs_in_sees_the_replicas_watches_one_go_and_sees_a_call_fail() {
    let mut mesh = Mesh::without_gateway();
    let mut config = mesh.gateway_config();
    config.trace_url_template = Some("http://jaeger.test/trace/{trace_id}".into());
    mesh.start_gateway_with(config).await;
    mesh.worker(worker("search-worker", "3.1.0", "search"))
        .await;
    let second = mesh
        .worker(worker("search-worker", "3.1.0", "search"))
        .await;
    mesh.worker(failing("the index is rebuilding; retry in a minute"))
        .await;
    let browser = signed_in(&mesh).await;

    browser
        .wait_for_text("#replicas", "failing-worker")
        .await
        .unwrap();
    eventually(
        "two search-worker replicas shown",
        sophia_tests::tools::WAIT,
        || async { (replicas_of(&browser, "search-worker").await == 2).then_some(()) },
    )
    .await;
    browser.wait_for_text("#replicas", "3.1.0").await.unwrap();
    browser
        .wait_for_text("#categories", "search")
        .await
        .unwrap();
    browser.wait_for_text("#bus", "connected").await.unwrap();
    browser.screenshot("mesh").await.unwrap();

    // One replica stops: the page shows one, and says so in its events.
    mesh.stop_worker(second).await;
    eventually(
        "one search-worker replica left",
        sophia_tests::tools::WAIT,
        || async { (replicas_of(&browser, "search-worker").await == 1).then_some(()) },
    )
    .await;
    browser
        .wait_for_text("#events", "of search-worker left")
        .await
        .unwrap();

    // A call fails: its error appears in Traffic, linked to its trace.
    let client = mesh.client().await;
    wait_for_tool(&client, "always_fails").await;
    let mut raw = RawSession::new(&mesh.mcp_url(), TEST_TOKEN);
    raw.initialize().await;
    let call = json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
        "params": {"name": "always_fails", "arguments": {}}});
    let failed = raw
        .post_raw(call.to_string(), &[("traceparent", TRACEPARENT)])
        .await;
    assert_eq!(
        failed.messages[0]["result"]["isError"], true,
        "{}",
        failed.body
    );
    browser.click("#tab-traffic").await.unwrap();
    browser
        .wait_for_text("#errors", "the index is rebuilding")
        .await
        .unwrap();
    browser
        .wait_for_text("#tools", "always_fails")
        .await
        .unwrap();
    let link = browser
        .execute("const a = document.querySelector('#errors tbody tr a'); return a && [a.textContent, a.href];")
        .await
        .unwrap();
    assert_eq!(
        link,
        json!([
            &TRACE_ID[..8],
            format!("http://jaeger.test/trace/{TRACE_ID}")
        ]),
        "the error links to its trace"
    );
    browser.screenshot("traffic").await.unwrap();

    // NATS restarts: the page shows the link down, then back.
    mesh.nats.stop();
    browser.click("#tab-mesh").await.unwrap();
    browser.wait_for_text("#bus", "down").await.unwrap();
    mesh.nats.restart();
    browser.wait_for_text("#bus", "connected").await.unwrap();
    browser
        .wait_for_text("#events", "NATS link is back")
        .await
        .unwrap();
    browser
        .wait_for_text("#replicas", "failing-worker")
        .await
        .unwrap();
    browser.no_script_ran().await.unwrap();
}

#[tokio::test]
async fn markup_from_the_mesh_is_shown_as_text_and_a_flood_keeps_a_window() {
    let mut mesh = Mesh::start().await;
    // Markup in a version, in a tool name (refused by the gateway, and
    // listed as not offered), and in an error message.
    // Markup in a service name, and in a tool name (refused by the
    // gateway, and listed as not offered).
    let plain = spec("plain_tool", json!({"type": "object"}));
    announce(&mesh, XSS, vec![plain], json!({})).await;
    let named = spec(
        "x<script>window.__sophia_xss=4</script>",
        json!({"type": "object"}),
    );
    announce(&mesh, "named", vec![named], json!({})).await;
    mesh.worker(failing(
        "<script>window.__sophia_xss=1</script><img src=x onerror=\"window.__sophia_xss=2\">",
    ))
    .await;
    let browser = signed_in(&mesh).await;
    browser
        .wait_for_text("#replicas", "fake-<script>window.__sophia_xss=1")
        .await
        .unwrap();
    browser
        .wait_for_text("#refused", "<script>window.__sophia_xss=4")
        .await
        .unwrap();

    let client = mesh.client().await;
    wait_for_tool(&client, "always_fails").await;
    call(&client, "always_fails", json!({})).await;
    browser.click("#tab-traffic").await.unwrap();
    browser
        .wait_for_text("#errors", "<img src=x onerror=")
        .await
        .unwrap();
    browser.no_script_ran().await.unwrap();
    let injected = browser
        .execute("return document.querySelectorAll('main script, main img').length;")
        .await
        .unwrap();
    assert_eq!(injected, json!(0), "markup became elements");

    // A flood: errors until the page has logged far more events than its
    // window; it keeps only the window, in memory and in the document.
    let flood = {
        let client = mesh.client().await;
        tokio::spawn(async move {
            loop {
                call(&client, "always_fails", json!({})).await;
            }
        })
    };
    let window: Value = browser.execute("return 200;").await.unwrap();
    eventually(
        "the page has seen 3 windows of events",
        std::time::Duration::from_secs(90),
        || async {
            let seen = browser
                .execute("return window.sophiaConsole.seen;")
                .await
                .unwrap();
            (seen.as_u64().unwrap_or(0) > 3 * window.as_u64().unwrap()).then_some(())
        },
    )
    .await;
    flood.abort();
    let kept = browser
        .execute(
            "return [window.sophiaConsole.events.length,
                     document.querySelectorAll('#events li').length];",
        )
        .await
        .unwrap();
    assert_eq!(kept, json!([200, 200]), "the event log keeps its window");
    browser.no_script_ran().await.unwrap();
}
