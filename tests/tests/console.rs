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
use sophia_tests::openai::{Behavior, StandIn};
use sophia_tests::pulumi::{self, Setup};
use sophia_tests::raw::RawSession;
use sophia_tests::stateless::Stateless;
use sophia_tests::tools::{call, spawn_call, wait_for_tool};
use sophia_tests::{Mesh, eventually};
use sophia_tests::{agno, intelligence};

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

/// A worker whose one tool answers once `release` is notified.
fn held(release: std::sync::Arc<tokio::sync::Notify>) -> Worker {
    Worker::new("held-worker", "1.0.0").tool(
        Tool::new(
            "held_tool",
            Category::CodeGeneration,
            "Answers when released.",
        )
        .read_only()
        .handler(move |_| {
            let release = release.clone();
            async move {
                release.notified().await;
                Ok(ToolOutput::text("released"))
            }
        }),
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
    // A call in flight is listed with its age until it ends.
    let release = std::sync::Arc::new(tokio::sync::Notify::new());
    mesh.worker(held(release.clone())).await;
    wait_for_tool(&client, "held_tool").await;
    let pending = spawn_call(&client, "held_tool", json!({}));
    browser
        .wait_for_text("#in-flight", "held_tool")
        .await
        .unwrap();
    browser.screenshot("traffic").await.unwrap();
    release.notify_one();
    assert_eq!(pending.await.unwrap().is_error, Some(false));
    browser
        .wait_for_gone("#in-flight", "held_tool")
        .await
        .unwrap();

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
    // By keyboard, as the tabs pattern has it: Right on the Mesh tab opens Traffic.
    let mesh_tab = browser
        .client()
        .find(fantoccini::Locator::Css("#tab-mesh"))
        .await
        .unwrap();
    mesh_tab.send_keys("\u{E014}").await.unwrap();
    browser
        .wait_for_text("#errors", "<img src=x onerror=")
        .await
        .unwrap();
    let tabs = browser
        .execute("return [...document.querySelectorAll('[role=tab]')].map(t => [t.id, t.getAttribute('aria-selected'), t.tabIndex]);")
        .await
        .unwrap();
    assert_eq!(
        tabs,
        json!([
            ["tab-mesh", "false", -1],
            ["tab-traffic", "true", 0],
            ["tab-work", "false", -1]
        ])
    );
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

/// The stand-in `pulumi` CLI (`src/bin/pulumi.rs`).
const STANDIN: &str = env!("CARGO_BIN_EXE_pulumi");

/// Previews `stack` of project `app` over MCP; its preview id.
async fn preview(client: &sophia_tests::McpClient, stack: &str) -> String {
    let r = call(
        client,
        "pulumi_preview",
        json!({"project": "app", "stack": stack}),
    )
    .await;
    assert_eq!(
        r.is_error,
        Some(false),
        "{}",
        sophia_tests::tools::text_of(&r)
    );
    r.structured_content.unwrap()["preview_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// The stacks the stand-in CLI ran `pulumi up` on.
fn ups(setup: &Setup) -> Vec<String> {
    setup
        .command_lines()
        .lines()
        .filter(|l| l.starts_with("up --yes"))
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn a_person_approves_one_pulumi_preview_and_rejects_another() {
    let mesh = Mesh::start().await;
    let setup = Setup::new(1);
    let _pulumi = pulumi::replica(&mesh, setup.args(STANDIN, 30_000)).await;
    let client = mesh.client().await;
    wait_for_tool(&client, "pulumi_list_previews").await;
    let dev = preview(&client, "dev").await;
    let prod = preview(&client, "prod").await;

    let browser = signed_in(&mesh).await;
    browser.click("#tab-work").await.unwrap();
    browser.wait_for_text("#pending", "app/dev").await.unwrap();
    browser.wait_for_text("#pending", "app/prod").await.unwrap();
    browser.wait_for_text("#pending-count", "2").await.unwrap();
    browser.screenshot("work").await.unwrap();
    assert!(ups(&setup).is_empty(), "nothing applied before a decision");

    // Approve dev: its job runs and succeeds, confirmed by the person.
    browser
        .click(&format!("article[data-id=\"{dev}\"] button.approve"))
        .await
        .unwrap();
    browser.wait_for_gone("#pending", "app/dev").await.unwrap();
    browser.wait_for_text("#jobs", "succeeded").await.unwrap();
    browser.wait_for_text("#decisions", "done").await.unwrap();
    let job = browser
        .execute("const r = document.querySelector('#jobs tbody tr'); return [...r.cells].map(c => c.textContent);")
        .await
        .unwrap();
    assert_eq!(job[2], "app/dev", "{job}");
    assert_eq!(job[3], "succeeded", "{job}");
    assert_eq!(job[5], "local", "confirmed by the person signed in: {job}");
    browser.screenshot("work-approved").await.unwrap();

    // Reject prod: it leaves the list, and nothing is applied to it, now
    // or later.
    browser
        .click(&format!("article[data-id=\"{prod}\"] button.reject"))
        .await
        .unwrap();
    browser.wait_for_gone("#pending", "app/prod").await.unwrap();
    eventually("the rejection is done", sophia_tests::tools::WAIT, || async {
        let states = browser
            .execute("return [...document.querySelectorAll('#decisions tbody tr')].map(r => r.cells[3].textContent + ' ' + r.cells[4].textContent);")
            .await
            .unwrap();
        states
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s == "reject done")
            .then_some(())
    })
    .await;
    let applied = ups(&setup);
    assert_eq!(applied.len(), 1, "one up, for dev: {applied:?}");
    assert!(!applied[0].contains("prod"), "{applied:?}");
    let late = call(
        &client,
        "pulumi_up",
        json!({"project": "app", "stack": "prod", "preview_id": prod}),
    )
    .await;
    assert_eq!(
        late.is_error,
        Some(true),
        "a rejected preview is never applied"
    );
    assert_eq!(ups(&setup).len(), 1);
    // Both decisions are in the audit trail, as the person's, from the console.
    let records = mesh.audit_records(1).await;
    let decided: Vec<(String, String)> = records
        .iter()
        .filter(|r| r["kind"] == "confirmation" && r["via"] == "console")
        .map(|r| {
            assert_eq!(r["principal"], "local", "{r}");
            (
                r["tool"].as_str().unwrap().to_owned(),
                r["outcome"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        decided,
        [
            ("pulumi_up".to_owned(), "accepted".to_owned()),
            ("pulumi_reject_preview".to_owned(), "declined".to_owned())
        ],
        "{records:?}"
    );
    // The console's own polling left no record.
    assert!(
        !records.iter().any(|r| r["tool"] == "pulumi_list_previews"),
        "{records:?}"
    );
    browser.no_script_ran().await.unwrap();
}

#[tokio::test]
async fn an_agents_pending_action_is_approved_from_the_console_and_its_output_stays_text() {
    let mesh = Mesh::start().await;
    let model = StandIn::start().await;
    let _intelligence = intelligence::replica_taking(
        &mesh,
        Some((&model, "default")),
        "http://127.0.0.1:9/v1",
        1 << 20,
    )
    .await;
    let setup = Setup::new(1);
    let _pulumi = pulumi::replica(&mesh, setup.args(STANDIN, 30_000)).await;
    let _agno = agno::replica(&mesh, &Category::AGENTS).await;
    model.script([
        Behavior::call_tool("pulumi_preview", json!({"stack": "dev"})),
        Behavior::call_tool(
            "pulumi_up",
            json!({"stack": "dev", "preview_id": "$preview_id"}),
        ),
        Behavior::Say(format!("Deployed. {XSS}")),
    ]);
    // A person starts a run in the background (as an MCP task); it pauses
    // before pulumi_up.
    let person = Stateless::new(
        json!({"elicitation": {"form": {}}, "extensions": {"io.modelcontextprotocol/tasks": {}}}),
        TEST_TOKEN,
    );
    let url = mesh.mcp_url();
    eventually(
        "agno_run_agent is listed",
        sophia_tests::tools::WAIT,
        || async {
            let r = person.request(&url, "tools/list", json!({})).await;
            let tools = r["result"]["tools"].as_array().cloned().unwrap_or_default();
            tools
                .iter()
                .any(|t| t["name"] == "agno_run_agent")
                .then_some(())
        },
    )
    .await;
    let args = json!({"agent_type": "pulumi_agent", "message": "deploy dev"});
    let started = person.call(&url, "agno_run_agent", args, json!({})).await;
    assert_eq!(started["result"]["resultType"], "task", "{started}");

    let browser = signed_in(&mesh).await;
    browser.click("#tab-work").await.unwrap();
    browser
        .wait_for_text("#pending", "pulumi_agent wants to run pulumi_up")
        .await
        .unwrap();
    browser
        .wait_for_text("#runs", "input_required")
        .await
        .unwrap();
    assert!(ups(&setup).is_empty(), "nothing applied before a decision");
    browser
        .click("article.action button.approve")
        .await
        .unwrap();
    browser.wait_for_text("#runs", "succeeded").await.unwrap();
    browser
        .wait_for_text("#runs", "Deployed. <script>")
        .await
        .unwrap();
    assert_eq!(ups(&setup).len(), 1, "approved once, applied once");
    browser.no_script_ran().await.unwrap();
}
