//! MCP 2026-07-28 clients (no session) through the gateway: a worker's or
//! the agent profile's question becomes `input_required` (SEP-2322), the
//! client answers in a retry that may reach another gateway replica, and the
//! sealed `requestState` brings back exactly what was asked about. A client
//! that declares the tasks extension (SEP-2663) gets a confirmed Pulumi
//! change as a task, backed by the worker's job on JetStream: any replica
//! reports it and cancels it.
//!
//! The `pulumi` here is the stand-in CLI (`tests/src/bin/pulumi.rs`), which
//! replays recorded engine-event logs of the real one; nothing is deployed.
//! Clients with a session (2025-06-18, 2025-11-25) keep being asked on their
//! session: `tests/tests/pulumi_worker.rs` and `tests/tests/policy.rs`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::{Value, json};
use sophia_gateway::GatewayHandle;
use sophia_kit::{Category, Tool, ToolOutput, Worker};
use sophia_tests::mesh::TEST_TOKEN;
use sophia_tests::pulumi::{Setup, replica};
use sophia_tests::stateless::Stateless;
use sophia_tests::tools::WAIT;
use sophia_tests::{Mesh, eventually};
use tokio_util::sync::CancellationToken;

const STANDIN: &str = env!("CARGO_BIN_EXE_pulumi");

/// A second gateway replica on the mesh's bus; its `/mcp` URL.
async fn second_gateway(mesh: &Mesh) -> (GatewayHandle, CancellationToken, String) {
    let stop = CancellationToken::new();
    let handle = sophia_gateway::run(mesh.gateway_config(), stop.clone())
        .await
        .expect("a second gateway starts");
    let url = format!("http://{}/mcp", handle.http_addr);
    (handle, stop, url)
}

/// A person's answer to a `confirm` question.
fn confirm(yes: bool) -> Value {
    json!({"action": "accept", "content": {"confirm": yes}})
}

fn asks_elicitation() -> Stateless {
    Stateless::new(json!({"elicitation": {"form": {}}}), TEST_TOKEN)
}

/// Waits until the gateway at `url` lists `tool` to a stateless client.
async fn listed(client: &Stateless, url: &str, tool: &str) {
    eventually(
        &format!("{tool} is listed at {url}"),
        std::time::Duration::from_secs(20),
        || async {
            let r = client.request(url, "tools/list", json!({})).await;
            let tools = r["result"]["tools"].as_array().cloned().unwrap_or_default();
            tools.iter().any(|t| t["name"] == tool).then_some(())
        },
    )
    .await
}

/// The `isError` result's code (`_meta["sophia/error"].code`).
fn error_code(response: &Value) -> &str {
    response["result"]["_meta"]["sophia/error"]["code"]
        .as_str()
        .unwrap_or("")
}

fn text(response: &Value) -> String {
    response["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// The retry's round: the answer to `key` and the echoed state.
fn answer(key: &str, answer: Value, state: &str) -> Value {
    json!({"inputResponses": {key: answer}, "requestState": state})
}

/// How many of the stand-in CLI's command lines start with `command`.
fn count(lines: &str, command: &str) -> usize {
    lines.lines().filter(|l| l.starts_with(command)).count()
}

#[tokio::test]
async fn a_stateless_client_confirms_pulumi_up_in_rounds_across_gateway_replicas() {
    let (mesh, _policy) = audited_mesh().await;
    let setup = Setup::new(1);
    let _pulumi = replica(&mesh, setup.args(STANDIN, 30_000)).await;
    let (_b, _stop_b, b) = second_gateway(&mesh).await;
    let a = mesh.mcp_url();
    let person = asks_elicitation();
    listed(&person, &a, "pulumi_up").await;
    listed(&person, &b, "pulumi_up").await;
    let args = json!({"stack": "dev"});

    // Round 1 at replica A: a fresh preview, and the question about it.
    let first = person.call(&a, "pulumi_up", args.clone(), json!({})).await;
    let asked = &first["result"];
    assert_eq!(asked["resultType"], "input_required", "{first}");
    let question = &asked["inputRequests"]["q0"];
    assert_eq!(question["method"], "elicitation/create", "{question}");
    let message = question["params"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("Apply these changes to app/dev? The preview shows: 1 create, 5 same"),
        "{message}"
    );
    let described = question["params"]["requestedSchema"]["properties"]["confirm"]["description"]
        .as_str()
        .unwrap();
    let preview_id = described.rsplit(' ').next().unwrap().to_owned();
    let state = asked["requestState"].as_str().unwrap().to_owned();
    assert_eq!(
        count(&setup.command_lines(), "up --yes"),
        0,
        "nothing applied yet"
    );

    // Round 2 at replica B: the answer applies exactly the preview shown.
    let done = person
        .call(
            &b,
            "pulumi_up",
            args.clone(),
            answer("q0", confirm(true), &state),
        )
        .await;
    let job = &done["result"]["structuredContent"];
    assert_eq!(job["message"], "update done: 1 create, 5 same", "{done}");
    assert_eq!(job["id"], preview_id.as_str(), "the preview the person saw");
    assert_eq!(
        job["confirmed_by"],
        mesh.gateway_config().principal.as_str()
    );
    let lines = setup.command_lines();
    assert_eq!(count(&lines, "preview "), 1, "no fresh preview: {lines}");
    assert_eq!(count(&lines, "up --yes"), 1, "{lines}");

    // The same answer again (a client retrying, or a replay) never runs
    // the update twice.
    let again = person
        .call(
            &a,
            "pulumi_up",
            args.clone(),
            answer("q0", confirm(true), &state),
        )
        .await;
    assert!(text(&again).contains("was already applied"), "{again}");
    assert!(text(&again).contains("not run twice"), "{again}");
    assert_eq!(count(&setup.command_lines(), "up --yes"), 1);
    // The person's answers are audited as confirmations, as on a session.
    audited(&mesh, ("pulumi_up", "accepted"), 2).await;
}

#[tokio::test]
async fn a_declined_forged_or_misused_round_changes_nothing() {
    let mesh = Mesh::start().await;
    let setup = Setup::new(1);
    let _pulumi = replica(&mesh, setup.args(STANDIN, 30_000)).await;
    let a = mesh.mcp_url();
    let person = asks_elicitation();
    listed(&person, &a, "pulumi_destroy").await;
    let args = json!({"stack": "dev"});

    let first = person
        .call(&a, "pulumi_destroy", args.clone(), json!({}))
        .await;
    let state = first["result"]["requestState"].as_str().unwrap().to_owned();
    let question = first["result"]["inputRequests"]["q0"]["params"]["message"].clone();
    assert!(
        question
            .as_str()
            .unwrap()
            .starts_with("Destroy every resource of app/dev?"),
        "{first}"
    );

    // Tampered with, for other arguments, or from another mesh: refused
    // as invalid params, with what to do instead.
    let mut tampered = state.clone();
    tampered.insert(state.len() / 2, 'A');
    for (args, state) in [
        (args.clone(), tampered.as_str()),
        (json!({"stack": "prod"}), state.as_str()),
        (args.clone(), "rs1.bm90LWEtc3RhdGU.bm8"),
    ] {
        let refused = person
            .call(
                &a,
                "pulumi_destroy",
                args,
                answer("q0", confirm(true), state),
            )
            .await;
        assert_eq!(refused["error"]["code"], -32602, "{refused}");
        let why = refused["error"]["message"].as_str().unwrap();
        assert!(why.contains("requestState refused"), "{why}");
        assert!(why.contains("without requestState"), "{why}");
    }

    // No answer to the question: asked again, about the same preview.
    let unanswered = person
        .call(
            &a,
            "pulumi_destroy",
            args.clone(),
            json!({"requestState": state}),
        )
        .await;
    assert_eq!(unanswered["result"]["resultType"], "input_required");
    assert_eq!(
        unanswered["result"]["inputRequests"]["q0"]["params"]["message"],
        question
    );

    // Declined or dismissed: nothing runs.
    for (said, expected) in [
        (confirm(false), "did not confirm"),
        (json!({"action": "decline"}), "did not confirm"),
        (json!({"action": "cancel"}), "dismissed"),
    ] {
        let r = person
            .call(
                &a,
                "pulumi_destroy",
                args.clone(),
                answer("q0", said, &state),
            )
            .await;
        assert_eq!(error_code(&r), "cancelled", "{r}");
        assert!(text(&r).contains(expected), "{r}");
    }
    assert_eq!(count(&setup.command_lines(), "destroy --yes"), 0);
    let lines = setup.command_lines();
    assert_eq!(
        count(&lines, "destroy --preview-only"),
        1,
        "one preview: {lines}"
    );

    // A client that cannot be asked is told to pass a preview_id.
    let mute = Stateless::new(json!({}), TEST_TOKEN);
    let r = mute.call(&a, "pulumi_up", args.clone(), json!({})).await;
    assert_eq!(error_code(&r), "invalid_arguments", "{r}");
    assert!(text(&r).contains("`preview_id` is required"), "{r}");
}

/// A mesh whose gateway enforces an allow-all policy, so it audits; the
/// policy file lives as long as the guard.
async fn audited_mesh() -> (Mesh, tempfile::TempDir) {
    let mut mesh = Mesh::without_gateway();
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.toml");
    std::fs::write(&policy, "[roles.\"*\"]\nallow = [{ tools = [\"*\"] }]\n").unwrap();
    mesh.policy = Some(policy);
    mesh.start_gateway().await;
    (mesh, dir)
}

/// Waits until the audit stream holds `times` confirmations of
/// `(tool, outcome)`.
async fn audited(mesh: &Mesh, (tool, outcome): (&str, &str), times: usize) {
    eventually(
        &format!("{times} confirmation(s) {tool} {outcome}"),
        WAIT,
        || async {
            let records = mesh.audit_now().await?;
            let seen = records
                .iter()
                .filter(|r| {
                    r["kind"] == "confirmation" && r["tool"] == tool && r["outcome"] == outcome
                })
                .count();
            (seen == times).then_some(())
        },
    )
    .await
}

/// A worker with a destructive `wipe` that counts its runs.
fn wiper(runs: Arc<AtomicUsize>) -> Worker {
    let wipe = Tool::new("wipe", Category::Infrastructure, "wipes the disk")
        .destructive()
        .handler(move |_| {
            let runs = runs.clone();
            async move {
                runs.fetch_add(1, Ordering::SeqCst);
                Ok(ToolOutput::text("wipe done"))
            }
        });
    Worker::new("wiper", "0.0.1").tool(wipe)
}

#[tokio::test]
async fn the_agent_profile_asks_a_stateless_client_in_rounds() {
    let (mut mesh, _policy) = audited_mesh().await;
    let runs = Arc::new(AtomicUsize::new(0));
    mesh.worker(wiper(runs.clone())).await;
    let (_b, _stop_b, b) = second_gateway(&mesh).await;
    let agent = format!("{}/agent", mesh.mcp_url());
    let agent_b = format!("{b}/agent");
    let person = asks_elicitation();
    listed(&person, &agent, "wipe").await;
    listed(&person, &agent_b, "wipe").await;

    let first = person.call(&agent, "wipe", json!({}), json!({})).await;
    let asked = &first["result"]["inputRequests"]["sophia_confirm"];
    assert!(
        asked["params"]["message"]
            .as_str()
            .unwrap()
            .contains("Run `wipe`?"),
        "{first}"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 0, "not before the answer");
    let state = first["result"]["requestState"].as_str().unwrap().to_owned();

    let no = person
        .call(
            &agent_b,
            "wipe",
            json!({}),
            answer("sophia_confirm", confirm(false), &state),
        )
        .await;
    assert_eq!(error_code(&no), "cancelled", "{no}");
    assert!(text(&no).contains("Nothing was changed"), "{no}");
    assert_eq!(runs.load(Ordering::SeqCst), 0);

    let yes = person
        .call(
            &agent_b,
            "wipe",
            json!({}),
            answer("sophia_confirm", confirm(true), &state),
        )
        .await;
    assert_eq!(text(&yes), "wipe done", "{yes}");
    assert_eq!(runs.load(Ordering::SeqCst), 1);

    audited(&mesh, ("wipe", "declined"), 1).await;
    audited(&mesh, ("wipe", "accepted"), 1).await;

    // Without elicitation: refused as for a session client.
    let mute = Stateless::new(json!({}), TEST_TOKEN);
    let refused = mute.call(&agent, "wipe", json!({}), json!({})).await;
    assert_eq!(error_code(&refused), "permission_denied", "{refused}");
    assert!(text(&refused).contains("cannot be asked"), "{refused}");
}

/// A client that answers questions and declares the tasks extension.
fn with_tasks() -> Stateless {
    Stateless::new(
        json!({"elicitation": {"form": {}},
            "extensions": {"io.modelcontextprotocol/tasks": {}}}),
        TEST_TOKEN,
    )
}

#[tokio::test]
async fn a_confirmed_pulumi_up_runs_as_a_task_that_any_replica_reports_and_cancels() {
    let mesh = Mesh::start().await;
    // Seen running: the update holds before its summary until cancelled.
    let setup = Setup::new(10);
    setup.hold();
    let _pulumi = replica(&mesh, setup.args(STANDIN, 30_000)).await;
    let (_b, stop_b, b) = second_gateway(&mesh).await;
    let a = mesh.mcp_url();
    let person = with_tasks();
    listed(&person, &a, "pulumi_up").await;
    listed(&person, &b, "pulumi_up").await;
    let args = json!({"stack": "dev"});

    let first = person.call(&a, "pulumi_up", args.clone(), json!({})).await;
    assert_eq!(first["result"]["resultType"], "input_required", "{first}");
    let state = first["result"]["requestState"].as_str().unwrap().to_owned();
    let started = person
        .call(
            &b,
            "pulumi_up",
            args.clone(),
            answer("q0", confirm(true), &state),
        )
        .await;
    let created = &started["result"];
    assert_eq!(created["resultType"], "task", "{started}");
    assert_eq!(created["status"], "working", "{started}");
    let id = created["taskId"].as_str().unwrap().to_owned();

    // The replica that started it goes away: nothing of the task was in it.
    stop_b.cancel();
    // Replica A, which did not start it, reports its progress.
    let working = person
        .task_when(&a, &id, "a progress line", |t| {
            t["status"] == "working" && t["statusMessage"].as_str().is_some_and(|m| !m.is_empty())
        })
        .await;
    assert!(working["pollIntervalMs"].as_u64().is_some(), "{working}");

    let ack = person
        .request(&a, "tasks/cancel", json!({"taskId": id}))
        .await;
    assert_eq!(ack["result"]["resultType"], "complete", "{ack}");
    let cancelled = person
        .task_when(&a, &id, "the task is cancelled", |t| {
            t["status"] != "working"
        })
        .await;
    assert_eq!(cancelled["status"], "cancelled", "{cancelled}");

    // Once over, the task takes no cancel or update.
    let twice = person
        .request(&a, "tasks/cancel", json!({"taskId": id}))
        .await;
    assert_eq!(twice["error"]["code"], -32602, "{twice}");
    assert!(
        twice["error"]["message"]
            .as_str()
            .unwrap()
            .contains("already over")
    );
    let update = person
        .request(
            &a,
            "tasks/update",
            json!({"taskId": id, "inputResponses": {}}),
        )
        .await;
    assert_eq!(update["error"]["code"], -32602, "{update}");
    // A forged or altered id names no task.
    for forged in [format!("{id}x"), "rs1.e30.AAAA".to_owned()] {
        let r = person
            .request(&a, "tasks/get", json!({"taskId": forged}))
            .await;
        assert_eq!(r["error"]["code"], -32602, "{r}");
        assert!(
            r["error"]["message"]
                .as_str()
                .unwrap()
                .contains("unknown task"),
            "{r}"
        );
    }
    assert_eq!(count(&setup.command_lines(), "up --yes"), 1, "run once");
}

/// Starts `pulumi_refresh` of `stack` as a task; its id.
async fn refresh_task(client: &Stateless, url: &str, stack: &str) -> String {
    let started = client
        .call(url, "pulumi_refresh", json!({"stack": stack}), json!({}))
        .await;
    assert_eq!(started["result"]["resultType"], "task", "{started}");
    started["result"]["taskId"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_task_completes_with_the_tools_result_and_clients_without_tasks_wait_as_before() {
    let mesh = Mesh::start().await;
    let setup = Setup::new(1);
    let _pulumi = replica(&mesh, setup.args(STANDIN, 30_000)).await;
    let a = mesh.mcp_url();
    let person = with_tasks();
    listed(&person, &a, "pulumi_refresh").await;

    // A job that fails completes with an isError result, as the call would.
    let id = refresh_task(&person, &a, "prod").await;
    let failed = person
        .task_when(&a, &id, "the refresh of prod ends", |t| {
            t["status"] == "completed"
        })
        .await;
    assert_eq!(failed["result"]["isError"], true, "{failed}");
    assert_eq!(failed["result"]["_meta"]["sophia/error"]["code"], "failed");
    assert!(text(&json!({"result": failed["result"]})).contains("no stack named prod"));

    // A preview makes the stack; its refresh completes with the job.
    let preview = person
        .call(&a, "pulumi_preview", json!({"stack": "dev"}), json!({}))
        .await;
    assert!(
        preview["result"]["structuredContent"]["preview_id"].is_string(),
        "{preview}"
    );
    let id = refresh_task(&person, &a, "dev").await;
    let done = person
        .task_when(&a, &id, "the refresh is done", |t| {
            t["status"] == "completed"
        })
        .await;
    let job = &done["result"]["structuredContent"];
    assert_eq!(job["state"], "succeeded", "{done}");
    assert_eq!(job["operation"], "refresh", "{done}");
    assert_eq!(done["result"]["isError"], false, "{done}");
    let update = person
        .request(
            &a,
            "tasks/update",
            json!({"taskId": id, "inputResponses": {}}),
        )
        .await;
    assert!(
        update["error"]["message"]
            .as_str()
            .unwrap()
            .contains("already over"),
        "{update}"
    );

    // A client without the tasks extension waits for the result, as before.
    let plain = Stateless::new(json!({}), TEST_TOKEN);
    let waited = plain
        .call(&a, "pulumi_refresh", json!({"stack": "dev"}), json!({}))
        .await;
    assert_eq!(
        waited["result"]["structuredContent"]["state"], "succeeded",
        "{waited}"
    );
    assert!(
        waited["result"]
            .get("resultType")
            .is_none_or(|t| t == "complete")
    );
}
