//! The pulumi-worker on the mesh, driven through the gateway by an MCP client,
//! with the stand-in `pulumi` (`tests/src/bin/pulumi.rs`) replaying real
//! engine logs: preview then up with its plan, confirmation, one apply per
//! preview, racing replicas, cancel, a missing CLI, a dead worker's job, and
//! a result fetched after the call that started the job returned.

use std::time::Duration;

use pulumi_worker::Cli;
use pulumi_worker::jobs::JobStore;
use rmcp::model::{CallToolResult, ElicitResult, ElicitationAction};
use serde_json::{Value, json};
use sophia_tests::pulumi::{Setup, replica};
use sophia_tests::tools::{WAIT, call, error_code, text_of, wait_for_tool};
use sophia_tests::{McpClient, Mesh, eventually};

const STANDIN: &str = env!("CARGO_BIN_EXE_pulumi");
use tokio_util::sync::CancellationToken;

async fn connected(mesh: &Mesh) -> McpClient {
    let client = mesh.client().await;
    wait_for_tool(&client, "pulumi_up").await;
    client
}

fn structured(r: &CallToolResult) -> Value {
    r.structured_content.clone().unwrap_or(Value::Null)
}

async fn preview(client: &McpClient) -> String {
    let r = call(
        client,
        "pulumi_preview",
        json!({"project": "app", "stack": "dev"}),
    )
    .await;
    assert_eq!(r.is_error, Some(false), "{}", text_of(&r));
    structured(&r)["preview_id"].as_str().unwrap().to_owned()
}

/// `pulumi_up` on app/dev with a preview id.
async fn up(client: &McpClient, preview_id: &str) -> CallToolResult {
    call(
        client,
        "pulumi_up",
        json!({"project": "app", "stack": "dev", "preview_id": preview_id}),
    )
    .await
}

async fn job_state(client: &McpClient, id: &str) -> String {
    let r = call(client, "pulumi_job", json!({"job_id": id})).await;
    structured(&r)["state"].as_str().unwrap_or("").to_owned()
}

#[tokio::test]
async fn preview_then_up_with_the_saved_plan() {
    let mesh = Mesh::start().await;
    let setup = Setup::new(1);
    let worker = replica(&mesh, setup.args(STANDIN, 30_000)).await;
    let client = connected(&mesh).await;

    let id = preview(&client).await;
    let up = up(&client, &id).await;
    assert_eq!(up.is_error, Some(false), "{}", text_of(&up));
    let job = structured(&up);
    assert_eq!(job["state"], "succeeded");
    assert_eq!(job["message"], "update done: 1 create, 5 same");
    assert_eq!(job["summary"]["resource_changes"]["create"], 1);

    let outputs = call(
        &client,
        "pulumi_outputs",
        json!({"project": "app", "stack": "dev"}),
    )
    .await;
    assert_eq!(
        structured(&outputs),
        json!({"url": "http://example.test", "dbPassword": "[secret]"})
    );
    let stacks = call(&client, "pulumi_list_stacks", json!({})).await;
    assert_eq!(
        structured(&stacks)["projects"][0]["stacks"][0]["name"],
        "dev"
    );
    let metrics = sophia_tests::metrics_text(worker.http_addr()).await;
    assert!(
        metrics.contains(r#"sophia_pulumi_jobs_total{operation="up",outcome="succeeded"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn up_without_a_seen_preview_is_refused() {
    let mesh = Mesh::start().await;
    let setup = Setup::new(1);
    let _r = replica(&mesh, setup.args(STANDIN, 30_000)).await;
    let client = connected(&mesh).await;

    let missing = call(
        &client,
        "pulumi_up",
        json!({"project": "app", "stack": "dev"}),
    )
    .await;
    assert_eq!(error_code(&missing).as_deref(), Some("invalid_arguments"));
    assert!(
        text_of(&missing).contains("preview_id"),
        "{}",
        text_of(&missing)
    );

    let bogus = call(
        &client,
        "pulumi_up",
        json!({"project": "app", "stack": "dev", "preview_id": "made-up"}),
    )
    .await;
    assert_eq!(bogus.is_error, Some(true));
    assert!(
        text_of(&bogus).contains("run pulumi_preview"),
        "{}",
        text_of(&bogus)
    );

    let id = preview(&client).await;
    let other_stack = call(
        &client,
        "pulumi_up",
        json!({"project": "app", "stack": "prod", "preview_id": id}),
    )
    .await;
    assert!(
        text_of(&other_stack).contains("is for app/dev, not app/prod"),
        "{}",
        text_of(&other_stack)
    );
}

#[tokio::test]
async fn a_preview_is_applied_at_most_once() {
    let mesh = Mesh::start().await;
    let setup = Setup::new(1);
    let _r = replica(&mesh, setup.args(STANDIN, 30_000)).await;
    let client = connected(&mesh).await;
    let id = preview(&client).await;
    let args = json!({"project": "app", "stack": "dev", "preview_id": id});
    let first = call(&client, "pulumi_up", args.clone()).await;
    let again = call(&client, "pulumi_up", args).await;
    assert!(
        text_of(&again).contains("was already applied"),
        "{}",
        text_of(&again)
    );
    assert_eq!(
        structured(&again)["started_ms"],
        structured(&first)["started_ms"],
        "the same job, not a new one"
    );
}

#[tokio::test]
async fn racing_updates_on_one_stack_from_two_replicas_are_told_the_stack_is_busy() {
    let mesh = Mesh::start().await;
    let setup = Setup::new(150);
    let _a = replica(&mesh, setup.args(STANDIN, 30_000)).await;
    let _b = replica(&mesh, setup.args(STANDIN, 30_000)).await;
    let client = std::sync::Arc::new(connected(&mesh).await);
    let (p1, p2) = (preview(&client).await, preview(&client).await);

    let first = {
        let client = client.clone();
        let p1 = p1.clone();
        tokio::spawn(async move { up(&client, &p1).await })
    };
    eventually("the first update is running", WAIT, || async {
        (job_state(&client, &p1).await == "running").then_some(())
    })
    .await;
    let second = up(&client, &p2).await;
    assert_eq!(error_code(&second).as_deref(), Some("conflict"));
    assert!(
        text_of(&second).contains(&format!("job {p1} is running")),
        "{}",
        text_of(&second)
    );
    assert_eq!(structured(&first.await.unwrap())["state"], "succeeded");
}

#[tokio::test]
async fn an_update_can_be_cancelled_mid_way() {
    let mesh = Mesh::start().await;
    let setup = Setup::new(200);
    let _r = replica(&mesh, setup.args(STANDIN, 30_000)).await;
    let client = std::sync::Arc::new(connected(&mesh).await);
    let id = preview(&client).await;
    let running = {
        let (client, id) = (client.clone(), id.clone());
        tokio::spawn(async move { up(&client, &id).await })
    };
    eventually("the update is running", WAIT, || async {
        (job_state(&client, &id).await == "running").then_some(())
    })
    .await;
    call(&client, "pulumi_cancel", json!({"job_id": id})).await;
    let result = running.await.unwrap();
    assert_eq!(
        error_code(&result).as_deref(),
        Some("cancelled"),
        "{}",
        text_of(&result)
    );
    assert_eq!(job_state(&client, &id).await, "cancelled");
    // The stack is free again.
    let next = preview(&client).await;
    let again = up(&client, &next).await;
    assert_eq!(
        structured(&again)["state"],
        "succeeded",
        "{}",
        text_of(&again)
    );
}

#[tokio::test]
async fn without_the_cli_the_worker_starts_and_calls_say_what_to_install() {
    let mesh = Mesh::start().await;
    let setup = Setup::new(1);
    let _r = replica(&mesh, setup.args("/nonexistent/pulumi", 30_000)).await;
    let client = connected(&mesh).await;
    let r = call(&client, "pulumi_list_stacks", json!({})).await;
    assert_eq!(error_code(&r).as_deref(), Some("unavailable"));
    assert!(text_of(&r).contains("PULUMI_BINARY"), "{}", text_of(&r));
}

#[tokio::test]
async fn a_dead_workers_job_is_failed_and_its_stack_freed() {
    let mesh = Mesh::start().await;
    let setup = Setup::new(1);
    let _r = replica(&mesh, setup.args(STANDIN, 30_000)).await;
    let client = connected(&mesh).await;
    // What a killed replica leaves behind: a running job and a lock nobody renews.
    let dead = JobStore::open(
        mesh.nats_client().await,
        "dead-replica".into(),
        Duration::from_millis(600),
    )
    .await
    .unwrap();
    let _orphan = dead
        .start("orphaned-job", "app", "dev", "up", &Default::default())
        .await
        .unwrap();
    drop(dead);

    eventually(
        "the live replica fails the dead one's job",
        WAIT,
        || async { (job_state(&client, "orphaned-job").await == "failed").then_some(()) },
    )
    .await;
    let r = call(&client, "pulumi_job", json!({"job_id": "orphaned-job"})).await;
    assert!(
        text_of(&r).contains("worker running this job stopped"),
        "{}",
        text_of(&r)
    );
    let id = preview(&client).await;
    let up = up(&client, &id).await;
    assert_eq!(structured(&up)["state"], "succeeded", "{}", text_of(&up));
}

#[tokio::test]
async fn a_jobs_result_is_fetched_after_the_call_that_started_it_returned() {
    let mesh = Mesh::start().await;
    let setup = Setup::new(100);
    // pulumi_up waits at most 200 ms, then hands back the job id.
    let _r = replica(&mesh, setup.args(STANDIN, 200)).await;
    let client = connected(&mesh).await;
    let id = preview(&client).await;
    let up = up(&client, &id).await;
    assert_eq!(up.is_error, Some(false));
    assert_eq!(structured(&up)["state"], "running");
    assert!(
        text_of(&up).contains("call pulumi_job later"),
        "{}",
        text_of(&up)
    );
    eventually("the job finishes on its own", WAIT, || async {
        (job_state(&client, &id).await == "succeeded").then_some(())
    })
    .await;
}

/// An MCP client of a gateway of its own on `mesh`'s NATS, whose HTTP
/// clients are `principal` (stopped when the token is dropped).
async fn client_as(mesh: &Mesh, principal: &str) -> (McpClient, tokio_util::sync::DropGuard) {
    let mut config = mesh.gateway_config();
    config.principal = principal.into();
    let stop = CancellationToken::new();
    let gateway = sophia_gateway::run(config, stop.clone()).await.unwrap();
    let client =
        sophia_tests::connect_http(&gateway.mcp_url(), sophia_tests::mesh::TEST_TOKEN).await;
    wait_for_tool(&client, "pulumi_up").await;
    (client, stop.drop_guard())
}

#[tokio::test]
async fn the_job_and_the_stacks_history_say_who_previewed_and_who_confirmed() {
    let mesh = Mesh::without_gateway();
    let setup = Setup::new(1);
    let _r = replica(&mesh, setup.args(STANDIN, 30_000)).await;
    let (alice, _a) = client_as(&mesh, "alice").await;
    let (bob, _b) = client_as(&mesh, "bob").await;

    // Alice previews; the preview says so.
    let shown = call(&alice, "pulumi_preview", json!({"stack": "dev"})).await;
    assert_eq!(structured(&shown)["previewed_by"], "alice");
    let id = structured(&shown)["preview_id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Bob confirms it.
    let applied = up(&bob, &id).await;
    let job = structured(&applied);
    assert_eq!(job["state"], "succeeded", "{}", text_of(&applied));
    assert_eq!(
        (&job["previewed_by"], &job["confirmed_by"]),
        (&json!("alice"), &json!("bob"))
    );
    assert!(
        text_of(&applied).contains("previewed by alice, confirmed by bob"),
        "{}",
        text_of(&applied)
    );
    // The record says so to anyone, later.
    let later = call(&alice, "pulumi_job", json!({"job_id": id})).await;
    assert_eq!(structured(&later)["previewed_by"], "alice");
    assert_eq!(structured(&later)["confirmed_by"], "bob");

    // A refresh has no preview: whoever starts it confirms it.
    let refreshed = call(&alice, "pulumi_refresh", json!({"stack": "dev"})).await;
    assert_eq!(structured(&refreshed)["previewed_by"], Value::Null);
    assert_eq!(structured(&refreshed)["confirmed_by"], "alice");

    // Pulumi's own history carries both in the update's message, and
    // pulumi_history joins each update to its job.
    let message = format!("sophia job {id}: update previewed by alice, confirmed by bob");
    assert!(
        setup
            .command_lines()
            .contains(&format!("--message {message}")),
        "{}",
        setup.command_lines()
    );
    let history = call(&bob, "pulumi_history", json!({"stack": "dev"})).await;
    let updates = structured(&history)["updates"].clone();
    assert_eq!(updates[1]["message"], message.as_str(), "{updates}");
    assert_eq!(
        updates[1]["job"],
        json!({"id": id, "operation": "up", "previewed_by": "alice", "confirmed_by": "bob"})
    );
    assert_eq!(updates[0]["kind"], "refresh");
    assert_eq!(updates[0]["job"]["confirmed_by"], "alice");
    assert_eq!(updates[0]["job"]["previewed_by"], Value::Null);
}

#[tokio::test]
async fn the_pulumi_worker_runs_with_least_privilege_nats_users() {
    use sophia_tests::nats::{GATEWAY_PASSWORD, password, secured};
    let mut mesh = Mesh::on(secured());
    let mut gateway = mesh.gateway_config();
    gateway.nats.user = Some("gateway".into());
    gateway.nats.password = Some(GATEWAY_PASSWORD.into());
    mesh.start_gateway_with(gateway).await;
    let setup = Setup::new(1);
    let mut worker = mesh.worker_config();
    worker.nats.user = Some("pulumi".into());
    worker.nats.password = Some(password("pulumi"));
    let stop = CancellationToken::new();
    let started = pulumi_worker::run(
        Cli {
            worker,
            pulumi: setup.args(STANDIN, 30_000),
        },
        stop.clone(),
    )
    .await;
    let _handle = started.unwrap_or_else(|e| {
        let violations = mesh.nats.violations();
        panic!(
            "starts with the pulumi user's permissions: {e}\n{}",
            violations.join("\n")
        )
    });
    let _guard = stop.drop_guard();
    let client = mesh.client_answering([accept(true)]).await;
    wait_for_tool(&client, "pulumi_up").await;
    let id = preview(&client).await;
    let up = up(&client, &id).await;
    assert_eq!(structured(&up)["state"], "succeeded", "{}", text_of(&up));
    let job = call(&client, "pulumi_job", json!({"job_id": id})).await;
    assert_eq!(structured(&job)["state"], "succeeded");
    // A question to the person and its answer cross the bus too.
    let destroyed = call(&client, "pulumi_destroy", json!({"stack": "dev"})).await;
    assert_eq!(
        structured(&destroyed)["state"],
        "succeeded",
        "{}",
        text_of(&destroyed)
    );
}

#[tokio::test]
async fn the_seeds_rest_shortcut_previews_then_applies_on_confirmation() {
    let mesh = Mesh::start().await;
    let setup = Setup::new(1);
    let _r = replica(&mesh, setup.args(STANDIN, 30_000)).await;
    let client = connected(&mesh).await;
    drop(client);
    sophia_tests::install_crypto();
    let http = reqwest::Client::new();
    let url = format!("{}/mcp/pulumi/deploy", mesh.http_base());
    let post = |body: Value, token: &'static str| {
        let (http, url) = (http.clone(), url.clone());
        async move {
            let r = http
                .post(url)
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let token = sophia_tests::mesh::TEST_TOKEN;

    assert_eq!(
        post(json!({"stack": "dev", "operation": "up"}), "wrong")
            .await
            .0,
        401
    );
    let (status, body) = post(json!({"stack": "dev", "operation": "nuke"}), token).await;
    assert_eq!(status, 400, "{body}");

    // The seed's body: a preview that must be confirmed.
    let (status, body) = post(json!({"stack": "dev", "operation": "up"}), token).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "confirmation_required");
    assert_eq!(body["preview"]["summary"]["resource_changes"]["create"], 1);
    let confirm = body["confirm"]["body"].clone();
    assert!(confirm["preview_id"].is_string());

    let (status, body) = post(confirm.clone(), token).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "succeeded");
    // Confirming twice does not apply twice.
    let (_, again) = post(confirm, token).await;
    assert_eq!(again["job"]["started_ms"], body["job"]["started_ms"]);

    // A refresh needs no confirmation; a destroy does, like an up.
    let (status, body) = post(json!({"stack": "dev", "operation": "refresh"}), token).await;
    assert_eq!(
        (status, &body["status"]),
        (200, &json!("succeeded")),
        "{body}"
    );
    let (status, body) = post(json!({"stack": "dev", "operation": "destroy"}), token).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "confirmation_required");
    assert_eq!(body["preview"]["summary"]["resource_changes"]["delete"], 3);
    let confirm = body["confirm"]["body"].clone();
    assert_eq!(confirm["operation"], "destroy");
    let (status, body) = post(confirm, token).await;
    assert_eq!(
        (status, &body["status"]),
        (200, &json!("succeeded")),
        "{body}"
    );
}

async fn destroy_preview(client: &McpClient) -> String {
    let r = call(
        client,
        "pulumi_preview",
        json!({"stack": "dev", "operation": "destroy"}),
    )
    .await;
    assert_eq!(r.is_error, Some(false), "{}", text_of(&r));
    assert_eq!(structured(&r)["confirm_with"], "pulumi_destroy");
    structured(&r)["preview_id"].as_str().unwrap().to_owned()
}

async fn destroy(client: &McpClient, preview_id: &str) -> CallToolResult {
    call(
        client,
        "pulumi_destroy",
        json!({"stack": "dev", "preview_id": preview_id}),
    )
    .await
}

#[tokio::test]
async fn destroy_runs_only_on_a_seen_destroy_preview_of_the_unchanged_stack() {
    let mesh = Mesh::start().await;
    let setup = Setup::new(1);
    let _r = replica(&mesh, setup.args(STANDIN, 30_000)).await;
    let client = connected(&mesh).await;
    let update = preview(&client).await;
    assert_eq!(
        structured(&up(&client, &update).await)["state"],
        "succeeded"
    );

    let unconfirmed = call(&client, "pulumi_destroy", json!({"stack": "dev"})).await;
    assert_eq!(
        error_code(&unconfirmed).as_deref(),
        Some("invalid_arguments")
    );
    let wrong_kind = destroy(&client, &update).await;
    assert!(
        text_of(&wrong_kind).contains("is a preview of an update, not of a destroy"),
        "{}",
        text_of(&wrong_kind)
    );

    // A destroy previewed, then the stack changes: the old preview is stale.
    let stale = destroy_preview(&client).await;
    let refresh = call(&client, "pulumi_refresh", json!({"stack": "dev"})).await;
    assert_eq!(
        structured(&refresh)["state"],
        "succeeded",
        "{}",
        text_of(&refresh)
    );
    let refused = destroy(&client, &stale).await;
    assert_eq!(error_code(&refused).as_deref(), Some("failed"));
    assert!(
        text_of(&refused).contains("the stack changed since the preview (version 1, now 2)"),
        "{}",
        text_of(&refused)
    );

    let fresh = destroy_preview(&client).await;
    let done = destroy(&client, &fresh).await;
    assert_eq!(
        structured(&done)["message"],
        "destroy done: 3 delete, 1 same",
        "{}",
        text_of(&done)
    );
    let outputs = call(
        &client,
        "pulumi_outputs",
        json!({"project": "app", "stack": "dev"}),
    )
    .await;
    assert_eq!(structured(&outputs), json!({}));

    let history = call(
        &client,
        "pulumi_history",
        json!({"stack": "dev", "limit": 5}),
    )
    .await;
    let history = structured(&history);
    let kinds: Vec<&str> = history["updates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["destroy", "refresh", "update"]);
    let latest = call(
        &client,
        "pulumi_history",
        json!({"stack": "dev", "limit": 1}),
    )
    .await;
    assert_eq!(structured(&latest)["updates"][0]["version"], 3);
}

#[tokio::test]
async fn config_is_set_and_read_back_and_secrets_stay_secret() {
    let mesh = Mesh::start().await;
    let setup = Setup::new(1);
    let _r = replica(&mesh, setup.args(STANDIN, 30_000)).await;
    let client = connected(&mesh).await;
    call(
        &client,
        "pulumi_select_stack",
        json!({"project": "app", "stack": "dev"}),
    )
    .await;
    let set = |args: Value| call(&client, "pulumi_config_set", args);
    let r = set(json!({"stack": "dev", "key": "aws:region", "value": "eu-west-1"})).await;
    assert_eq!(r.is_error, Some(false), "{}", text_of(&r));
    let r = set(
        json!({"stack": "dev", "key": "dbPassword", "value": "hunter2-s3cret", "secret": true}),
    )
    .await;
    assert_eq!(r.is_error, Some(false), "{}", text_of(&r));

    let all = call(&client, "pulumi_config_get", json!({"stack": "dev"})).await;
    assert_eq!(
        structured(&all)["config"],
        json!({"aws:region": {"value": "eu-west-1", "secret": false},
               "app:dbPassword": {"secret": true}})
    );
    let one = call(
        &client,
        "pulumi_config_get",
        json!({"stack": "dev", "key": "dbPassword"}),
    )
    .await;
    assert_eq!(
        structured(&one),
        json!({"key": "app:dbPassword", "value": {"secret": true}})
    );
    let missing = call(
        &client,
        "pulumi_config_get",
        json!({"stack": "dev", "key": "nope"}),
    )
    .await;
    assert_eq!(error_code(&missing).as_deref(), Some("invalid_arguments"));
    assert!(
        text_of(&missing).contains("aws:region"),
        "{}",
        text_of(&missing)
    );

    // Bad keys and values are refused without echoing the value back.
    let flag = set(json!({"stack": "dev", "key": "--show-secrets", "value": "x"})).await;
    assert_eq!(error_code(&flag).as_deref(), Some("invalid_arguments"));
    let number = set(json!({"stack": "dev", "key": "pin", "value": 8675309})).await;
    assert_eq!(error_code(&number).as_deref(), Some("invalid_arguments"));
    assert!(
        !text_of(&number).contains("8675309"),
        "{}",
        text_of(&number)
    );

    // The secret is in no update's history, nor on any command line.
    let id = preview(&client).await;
    up(&client, &id).await;
    let history = call(&client, "pulumi_history", json!({"stack": "dev"})).await;
    assert_eq!(
        structured(&history)["updates"][0]["config"]["app:dbPassword"],
        json!({"secret": true})
    );
    for text in [
        text_of(&all),
        text_of(&one),
        text_of(&history),
        setup.command_lines(),
    ] {
        assert!(!text.contains("hunter2"), "a secret leaked: {text}");
    }
    assert!(
        setup
            .command_lines()
            .contains("config set dbPassword --stack dev --secret")
    );
}

#[tokio::test]
async fn engine_events_reach_the_client_as_mcp_progress() {
    let mesh = Mesh::start().await;
    let setup = Setup::new(5);
    let _r = replica(&mesh, setup.args(STANDIN, 30_000)).await;
    let client = connected(&mesh).await;
    let id = preview(&client).await;
    let args = json!({"project": "app", "stack": "dev", "preview_id": id});
    let (result, progress) =
        sophia_tests::tools::call_with_progress(&client, "pulumi_up", args).await;
    assert_eq!(structured(&result)["state"], "succeeded");
    let lines: Vec<String> = progress.iter().filter_map(|p| p.message.clone()).collect();
    assert!(
        lines.iter().any(|l| l.starts_with("creating ")),
        "{lines:?}"
    );
    assert!(lines.iter().any(|l| l.starts_with("created ")), "{lines:?}");
    assert!(
        lines.iter().all(|l| !l.contains("hunter2")),
        "no secrets in progress"
    );
}

fn accept(confirm: bool) -> ElicitResult {
    ElicitResult::new(ElicitationAction::Accept).with_content(json!({ "confirm": confirm }))
}

#[tokio::test]
async fn a_client_with_elicitation_is_asked_to_confirm_instead_of_passing_a_preview_id() {
    let mesh = Mesh::start().await;
    let setup = Setup::new(1);
    let _r = replica(&mesh, setup.args(STANDIN, 30_000)).await;
    let client = mesh.client_answering([accept(true), accept(true)]).await;
    wait_for_tool(&client, "pulumi_up").await;

    let r = call(&client, "pulumi_up", json!({"stack": "dev"})).await;
    assert_eq!(
        structured(&r)["message"],
        "update done: 1 create, 5 same",
        "{}",
        text_of(&r)
    );
    // The person who confirmed is also the one the preview was shown to.
    let principal = mesh.gateway_config().principal;
    assert_eq!(structured(&r)["previewed_by"], principal.as_str());
    assert_eq!(structured(&r)["confirmed_by"], principal.as_str());
    let asked = client.service().asked.lock().unwrap().clone();
    assert_eq!(asked.len(), 1, "{asked:?}");
    assert!(
        asked[0]
            .0
            .starts_with("Apply these changes to app/dev? The preview shows: 1 create, 5 same"),
        "{}",
        asked[0].0
    );
    assert_eq!(asked[0].1["properties"]["confirm"]["type"], "boolean");

    let r = call(&client, "pulumi_destroy", json!({"stack": "dev"})).await;
    assert_eq!(
        structured(&r)["message"],
        "destroy done: 3 delete, 1 same",
        "{}",
        text_of(&r)
    );
    let asked = client.service().asked.lock().unwrap().clone();
    assert!(
        asked[1].0.starts_with("Destroy every resource of app/dev?"),
        "{}",
        asked[1].0
    );
}

#[tokio::test]
async fn a_person_who_does_not_confirm_changes_nothing() {
    let mesh = Mesh::start().await;
    let setup = Setup::new(1);
    let _r = replica(&mesh, setup.args(STANDIN, 30_000)).await;
    let client = mesh
        .client_answering([
            ElicitResult::new(ElicitationAction::Decline),
            accept(false),
            ElicitResult::new(ElicitationAction::Cancel),
        ])
        .await;
    wait_for_tool(&client, "pulumi_up").await;
    for expected in ["did not confirm", "did not confirm", "dismissed"] {
        let r = call(&client, "pulumi_up", json!({"stack": "dev"})).await;
        assert_eq!(
            error_code(&r).as_deref(),
            Some("cancelled"),
            "{}",
            text_of(&r)
        );
        assert!(text_of(&r).contains(expected), "{}", text_of(&r));
    }
    assert_eq!(client.service().asked.lock().unwrap().len(), 3);
    let history = call(&client, "pulumi_history", json!({"stack": "dev"})).await;
    assert_eq!(structured(&history)["updates"], json!([]), "no update ran");
    assert!(!setup.command_lines().contains("up --yes"));
}

#[tokio::test]
async fn an_empty_workspace_without_the_cli_says_the_cli_is_missing() {
    let mesh = Mesh::start().await;
    let setup = Setup::new(1);
    let empty = tempfile::tempdir().unwrap();
    let mut args = setup.args("/nonexistent/pulumi", 30_000);
    args.workspace = empty.path().to_owned();
    let _r = replica(&mesh, args).await;
    let client = connected(&mesh).await;
    // Not `{"projects": []}`: the missing CLI is what to fix first.
    let r = call(&client, "pulumi_list_stacks", json!({})).await;
    assert_eq!(error_code(&r).as_deref(), Some("unavailable"));
    assert!(text_of(&r).contains("PULUMI_BINARY"), "{}", text_of(&r));
    // The gateway's /health names it too.
    eventually("the gateway reports the missing CLI", WAIT, || async {
        let h = mesh.health().await?;
        h["degraded"]
            .as_array()?
            .iter()
            .any(|d| {
                d["what"] == "pulumi-worker" && d["problem"].to_string().contains("PULUMI_BINARY")
            })
            .then_some(())
    })
    .await;

    // With the CLI and no project, the answer says where projects go.
    let mut args = setup.args(STANDIN, 30_000);
    args.workspace = empty.path().to_owned();
    let _r2 = replica(&mesh, args).await;
    let r = eventually("a replica with the CLI answers", WAIT, || async {
        let r = call(&client, "pulumi_list_stacks", json!({})).await;
        (r.is_error != Some(true)).then_some(r)
    })
    .await;
    assert!(text_of(&r).contains("no Pulumi project"), "{}", text_of(&r));
}
