//! Who may call what: the mesh's policy (`SOPHIA_POLICY`) checked at the
//! gateway and again at every worker, Cursor-mode profiles at
//! `/mcp/<profile>` with a tool budget and `find_tools`, and the audit
//! stream `sophia_audit`. (Two principals with different roles, JWTs and
//! per-principal limits: `tests/tests/identity.rs` and `principals.rs`.)

use std::time::Duration;

use futures::StreamExt;
use rmcp::model::{ElicitResult, ElicitationAction};
use serde_json::{Value, json};
use sophia_kit::bus::{Bus, CallError, CallSpec, Target};
use sophia_kit::{Category, Tool, ToolOutput, Worker};
use sophia_proto::{Caller, ErrorCode, headers};
use sophia_tests::client::{Recorder, connect_http, connect_http_as, traceparent_headers};
use sophia_tests::mesh::TEST_TOKEN;
use sophia_tests::tools::{WAIT, call, error_code, text_of, wait_for_tool};
use sophia_tests::workers::asking_worker;
use sophia_tests::{Mesh, eventually};
use tokio_util::sync::CancellationToken;

/// Readers may look; operators may also wipe; everyone may echo.
const POLICY: &str = r#"
[roles.reader]
allow = [{ read_only = true }]

[roles.operator]
allow = [{ tools = ["*"] }]

[roles."*"]
allow = [{ tools = ["echo", "ask"] }, { read_only = true }]

[profiles.tiny]
description = "a profile with room for three tools"
budget = 3
"#;

/// Writes `text` as a policy file the mesh enforces.
fn with_policy(mesh: &mut Mesh, text: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policy.toml");
    std::fs::write(&path, text).unwrap();
    mesh.policy = Some(path);
    dir
}

fn tool(name: &str, hint: &str) -> Tool {
    let t = Tool::new(
        name,
        Category::Infrastructure,
        format!("{name}s the {hint} things"),
    );
    let t = match hint {
        "read-only" => t.read_only(),
        "destructive" => t.destructive(),
        _ => t,
    };
    let name = name.to_owned();
    t.handler(move |_| {
        let name = name.clone();
        async move { Ok(ToolOutput::text(format!("{name} done"))) }
    })
}

/// Six tools: three read-only (`look`, `list`, `count`), `wipe`
/// (destructive), `tag` and `echo` (neither).
fn infra_worker() -> Worker {
    Worker::new("infra-worker", "1.0.0")
        .tool(tool("look", "read-only"))
        .tool(tool("list", "read-only"))
        .tool(tool("count", "read-only"))
        .tool(tool("wipe", "destructive"))
        .tool(tool("tag", "plain"))
        .tool(tool("echo", "plain"))
}

async fn forged(bus: &Bus, tool: &str, roles: &[&str]) -> Result<String, CallError> {
    let spec = CallSpec {
        tool,
        target: Target::Tool(Category::Infrastructure),
        args: json!({}),
        timeout: Duration::from_secs(10),
        caller: Caller {
            principal: "mallory".into(),
            via: "straight onto the bus".into(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            ..Default::default()
        },
        trace: headers::Context::default(),
        liveness: Default::default(),
    };
    let reply = bus.call(spec, None, &CancellationToken::new()).await?;
    Ok(format!("{:?}", reply.output.content))
}

#[tokio::test]
async fn a_call_forged_onto_the_bus_meets_the_policy_at_the_worker() {
    let mut mesh = Mesh::without_gateway();
    let _policy = with_policy(&mut mesh, POLICY);
    mesh.worker(infra_worker()).await;
    let bus = Bus::start(mesh.nats_client().await, "forger".into(), 1 << 20)
        .await
        .unwrap();

    let refused = eventually("the worker is serving", WAIT, || async {
        match forged(&bus, "wipe", &["reader"]).await {
            Err(CallError::NoWorker { .. }) => None,
            other => Some(other),
        }
    })
    .await;
    let Err(CallError::Worker(e)) = refused else {
        panic!("a reader's wipe must be refused by the worker: {refused:?}");
    };
    assert_eq!(e.code, ErrorCode::PermissionDenied);
    assert!(
        e.message
            .contains("mallory (roles: reader) may not call `wipe`"),
        "{}",
        e.message
    );
    // What the roles do allow runs.
    assert!(
        forged(&bus, "look", &["reader"])
            .await
            .unwrap()
            .contains("look done")
    );
    assert!(
        forged(&bus, "wipe", &["operator"])
            .await
            .unwrap()
            .contains("wipe done")
    );
    // No roles: only what everyone may.
    assert!(forged(&bus, "echo", &[]).await.is_ok());
    assert!(matches!(
        forged(&bus, "tag", &[]).await,
        Err(CallError::Worker(e)) if e.code == ErrorCode::PermissionDenied
    ));
}

#[tokio::test]
async fn the_ask_profile_lists_only_read_only_tools_and_refuses_the_rest() {
    let mut mesh = Mesh::without_gateway();
    // Everyone may call everything: the profile is what narrows.
    let _policy = with_policy(&mut mesh, "[roles.\"*\"]\nallow = [{ tools = [\"*\"] }]\n");
    mesh.start_gateway().await;
    mesh.worker(infra_worker()).await;
    let everything = mesh.client().await;
    wait_for_tool(&everything, "wipe").await;
    assert_eq!(everything.list_all_tools().await.unwrap().len(), 6);

    let ask = connect_http(&format!("{}/ask", mesh.mcp_url()), TEST_TOKEN).await;
    let tools = ask.list_all_tools().await.unwrap();
    let mut names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    names.sort();
    assert_eq!(names, ["count", "list", "look"]);
    assert!(tools.iter().all(|t| {
        t.annotations
            .as_ref()
            .and_then(|a| a.read_only_hint)
            .unwrap_or(false)
    }));
    let r = call(&ask, "wipe", json!({})).await;
    assert_eq!(r.is_error, Some(true));
    assert_eq!(error_code(&r).as_deref(), Some("permission_denied"));
    assert!(
        text_of(&r).contains("`ask` profile does not offer `wipe`"),
        "{}",
        text_of(&r)
    );
    assert_eq!(text_of(&call(&ask, "look", json!({})).await), "look done");
}

#[tokio::test]
async fn past_its_budget_a_profile_offers_find_tools_and_what_it_finds_becomes_callable() {
    let mut mesh = Mesh::without_gateway();
    let _policy = with_policy(
        &mut mesh,
        &format!("[roles.\"*\"]\nallow = [{{ tools = [\"*\"] }}]\n{POLICY_PROFILES}"),
    );
    mesh.start_gateway().await;
    mesh.worker(infra_worker()).await;
    wait_for_tool(&mesh.client().await, "wipe").await;

    let recorder = Recorder::default();
    let mut changed = recorder.list_changed.subscribe();
    let tiny = connect_http_as(
        &format!("{}/tiny", mesh.mcp_url()),
        TEST_TOKEN,
        Default::default(),
        recorder,
    )
    .await;
    let listed = names(&tiny).await;
    assert_eq!(listed.len(), 3, "{listed:?}");
    assert!(listed.contains(&"find_tools".to_owned()), "{listed:?}");
    // Not listed, so not callable yet.
    let hidden = ["look", "list", "count", "wipe", "tag", "echo"]
        .into_iter()
        .find(|t| !listed.contains(&t.to_string()) && *t != "wipe")
        .unwrap();
    let r = call(&tiny, hidden, json!({})).await;
    assert_eq!(error_code(&r).as_deref(), Some("permission_denied"));
    assert!(text_of(&r).contains("find_tools"), "{}", text_of(&r));

    let found = call(&tiny, "find_tools", json!({"query": hidden})).await;
    let found_names: Vec<Value> = found.structured_content.unwrap()["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].clone())
        .collect();
    assert!(found_names.contains(&json!(hidden)), "{found_names:?}");
    tokio::time::timeout(WAIT, changed.wait_for(|n| *n > 0))
        .await
        .expect("list_changed arrives")
        .unwrap();
    assert!(names(&tiny).await.contains(&hidden.to_owned()));
    assert_eq!(
        text_of(&call(&tiny, hidden, json!({})).await),
        format!("{hidden} done")
    );
}

const POLICY_PROFILES: &str = "[profiles.tiny]\nbudget = 3\n";

async fn names(client: &sophia_tests::McpClient) -> Vec<String> {
    client
        .list_all_tools()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name.to_string())
        .collect()
}

#[tokio::test]
async fn a_policy_file_with_a_typo_stops_the_gateway_with_one_line_naming_the_place() {
    let mut mesh = Mesh::without_gateway();
    let _policy = with_policy(
        &mut mesh,
        "[roles.reader]\nallow = [{ read_olny = true }]\n",
    );
    let e = sophia_gateway::run(mesh.gateway_config(), CancellationToken::new())
        .await
        .expect_err("the gateway refuses to start")
        .to_string();
    assert!(e.contains("policy.toml:2:"), "{e}");
    assert!(e.contains("read_olny"), "{e}");
    assert!(!e.contains('\n'), "{e}");
}

#[tokio::test]
async fn the_audit_stream_holds_one_record_per_call_refusal_and_confirmation_without_values() {
    let mut mesh = Mesh::without_gateway();
    let _policy = with_policy(&mut mesh, POLICY);
    mesh.start_gateway().await;
    mesh.worker(infra_worker()).await;
    mesh.worker(asking_worker()).await;
    let recorder = Recorder::answering([
        ElicitResult::new(ElicitationAction::Accept).with_content(json!({"confirm": true}))
    ]);
    // Cursor's trace, so the records can be found next to it.
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let traced = traceparent_headers(&format!("00-{trace_id}-00f067aa0ba902b7-01"));
    let client = connect_http_as(&mesh.mcp_url(), TEST_TOKEN, traced, recorder).await;
    wait_for_tool(&client, "ask").await;

    let secret = "hunter2-do-not-record";
    // A call, a refusal (the token's principal has no roles: `tag` is not
    // everyone's), and a question answered by the person.
    assert_eq!(
        text_of(&call(&client, "echo", json!({"text": secret})).await),
        "echo done"
    );
    let refused = call(&client, "tag", json!({"label": secret})).await;
    assert_eq!(error_code(&refused).as_deref(), Some("permission_denied"));
    let asked = call(
        &client,
        "ask",
        json!({"question": "Apply?", "schema": {"type": "object", "properties": {"confirm": {"type": "boolean"}}}}),
    )
    .await;
    assert_ne!(asked.is_error, Some(true), "{}", text_of(&asked));

    let records = mesh.audit_records(4).await;
    let kinds: Vec<(&str, &str, &str)> = records
        .iter()
        .map(|r| {
            (
                r["kind"].as_str().unwrap(),
                r["tool"].as_str().unwrap(),
                r["outcome"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("call", "echo", "ok"),
            ("refusal", "tag", "permission_denied"),
            ("confirmation", "ask", "accepted"),
            ("call", "ask", "ok"),
        ],
        "{records:#?}"
    );
    for r in &records {
        assert_eq!(r["principal"], "local");
        assert_eq!(
            r["subject"],
            format!("sophia.v1.audit.{}", r["kind"].as_str().unwrap())
        );
        let text = r.to_string();
        assert!(
            !text.contains(secret) && !text.contains(TEST_TOKEN),
            "{text}"
        );
    }
    assert_eq!(records[0]["args_sha256"].as_str().unwrap().len(), 64);
    assert_eq!(records[0]["trace_id"], trace_id, "{}", records[0]);
}

#[tokio::test]
async fn the_agent_profile_asks_the_person_before_a_destructive_tool_runs() {
    let mut mesh = Mesh::without_gateway();
    let _policy = with_policy(&mut mesh, "[roles.\"*\"]\nallow = [{ tools = [\"*\"] }]\n");
    mesh.start_gateway().await;
    mesh.worker(infra_worker()).await;
    let agent_url = format!("{}/agent", mesh.mcp_url());
    let yes = ElicitResult::new(ElicitationAction::Accept).with_content(json!({"confirm": true}));
    let recorder = Recorder::answering([yes, ElicitResult::new(ElicitationAction::Decline)]);
    let person =
        connect_http_as(&agent_url, TEST_TOKEN, Default::default(), recorder.clone()).await;
    wait_for_tool(&person, "wipe").await;

    assert_eq!(
        text_of(&call(&person, "wipe", json!({})).await),
        "wipe done"
    );
    let asked = recorder.asked.lock().unwrap().clone();
    assert_eq!(asked.len(), 1);
    assert!(asked[0].0.contains("Run `wipe`?"), "{asked:?}");
    // Not destructive: no question.
    assert_eq!(text_of(&call(&person, "tag", json!({})).await), "tag done");
    assert_eq!(recorder.asked.lock().unwrap().len(), 1);
    // Declined: nothing runs.
    let declined = call(&person, "wipe", json!({})).await;
    assert_eq!(error_code(&declined).as_deref(), Some("cancelled"));
    assert!(text_of(&declined).contains("Nothing was changed"));

    // A client that cannot be asked is told what to do instead.
    let mute = connect_http(&agent_url, TEST_TOKEN).await;
    let refused = call(&mute, "wipe", json!({})).await;
    assert_eq!(error_code(&refused).as_deref(), Some("permission_denied"));
    assert!(
        text_of(&refused).contains("cannot be asked"),
        "{}",
        text_of(&refused)
    );
}

#[tokio::test]
async fn an_audit_record_the_stream_could_not_take_is_stored_once_the_stream_is_back() {
    let mut mesh = Mesh::without_gateway();
    let _policy = with_policy(&mut mesh, POLICY);
    mesh.start_gateway().await;
    mesh.worker(infra_worker()).await;
    let client = connect_http(&mesh.mcp_url(), TEST_TOKEN).await;
    // `tag` is not this principal's (not listed), so calling it is refused.
    wait_for_tool(&client, "echo").await;
    let nats = mesh.nats_client().await;
    let js = async_nats::jetstream::new(nats.clone());
    let mut published = nats.subscribe("sophia.v1.audit.>").await.unwrap();

    // The stream goes away (as while its leader is elected, or deleted by
    // mistake); its settings are kept to put it back.
    let config = js
        .get_stream("sophia_audit")
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .config
        .clone();
    js.delete_stream("sophia_audit").await.unwrap();
    let refused = call(&client, "tag", json!({"label": "x"})).await;
    assert_eq!(error_code(&refused).as_deref(), Some("permission_denied"));
    // The gateway has published the refusal's record, with no stream to
    // take it.
    let sent = tokio::time::timeout(WAIT, published.next())
        .await
        .expect("the record is published")
        .unwrap();
    assert_eq!(sent.subject.as_str(), "sophia.v1.audit.refusal");

    js.create_stream(config).await.unwrap();
    let records = mesh.audit_records(1).await;
    let kinds: Vec<_> = records
        .iter()
        .map(|r| (r["kind"].as_str().unwrap(), r["tool"].as_str().unwrap()))
        .collect();
    assert_eq!(kinds, [("refusal", "tag")], "stored once: {records:#?}");
}
