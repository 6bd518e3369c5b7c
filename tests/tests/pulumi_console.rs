//! What a console shows and decides for Pulumi, through the gateway as a
//! person would: the previews waiting for a decision
//! (`pulumi_list_previews`), turning one down (`pulumi_reject_preview`),
//! approving another (`pulumi_up`), and the jobs that followed
//! (`pulumi_list_jobs`). A rejection and an apply of the same preview
//! race: exactly one wins. The stand-in `pulumi` records every command it
//! ran, so a test sees that a rejected preview was never applied.

use rmcp::model::CallToolResult;
use serde_json::{Value, json};
use sophia_tests::pulumi::{Setup, replica};
use sophia_tests::tools::{call, error_code, spawn_call, text_of, wait_for_tool};
use sophia_tests::{McpClient, Mesh};

const STANDIN: &str = env!("CARGO_BIN_EXE_pulumi");

fn structured(r: &CallToolResult) -> Value {
    r.structured_content.clone().unwrap_or(Value::Null)
}

async fn connected(mesh: &Mesh) -> McpClient {
    let client = mesh.client().await;
    wait_for_tool(&client, "pulumi_reject_preview").await;
    client
}

/// A preview of app/dev (an update unless `operation` says otherwise).
async fn preview(client: &McpClient, operation: &str) -> String {
    let args = json!({"project": "app", "stack": "dev", "operation": operation});
    let r = call(client, "pulumi_preview", args).await;
    assert_eq!(r.is_error, Some(false), "{}", text_of(&r));
    structured(&r)["preview_id"].as_str().unwrap().to_owned()
}

async fn up(client: &McpClient, preview_id: &str) -> CallToolResult {
    let args = json!({"project": "app", "stack": "dev", "preview_id": preview_id});
    call(client, "pulumi_up", args).await
}

async fn reject(client: &McpClient, preview_id: &str, reason: &str) -> CallToolResult {
    let args = json!({"preview_id": preview_id, "reason": reason});
    call(client, "pulumi_reject_preview", args).await
}

/// The previews waiting for a decision, by id.
async fn waiting(client: &McpClient) -> Vec<Value> {
    let r = call(client, "pulumi_list_previews", json!({})).await;
    assert_eq!(r.is_error, Some(false), "{}", text_of(&r));
    assert_eq!(structured(&r)["skipped"], 0, "{r:?}");
    structured(&r)["previews"].as_array().unwrap().clone()
}

async fn jobs(client: &McpClient) -> Vec<Value> {
    let r = call(client, "pulumi_list_jobs", json!({"limit": 10})).await;
    assert_eq!(r.is_error, Some(false), "{}", text_of(&r));
    structured(&r)["jobs"].as_array().unwrap().clone()
}

fn ups(setup: &Setup) -> usize {
    let lines = setup.command_lines();
    lines.lines().filter(|l| l.starts_with("up ")).count()
}

fn find<'a>(items: &'a [Value], key: &str, id: &str) -> Option<&'a Value> {
    items.iter().find(|i| i[key] == id)
}

#[tokio::test]
async fn a_rejected_preview_is_never_applied_and_an_approved_one_is_listed_as_done() {
    // The project's own least-privilege NATS users: the worker may list
    // its jobs and plans.
    let mesh = Mesh::least_privilege().await;
    let setup = Setup::new(1);
    let _worker = replica(&mesh, setup.args(STANDIN, 30_000)).await;
    let client = connected(&mesh).await;

    let no = preview(&client, "up").await;
    let listed = waiting(&client).await;
    let shown = find(&listed, "preview_id", &no).expect("the preview waits");
    assert_eq!(shown["operation"], "update");
    assert_eq!(
        (&shown["project"], &shown["stack"]),
        (&json!("app"), &json!("dev"))
    );
    assert_eq!(shown["changes"], "1 create, 5 same");
    assert_eq!(shown["summary"]["resource_changes"]["create"], 1);
    assert_eq!(shown["confirm_with"], "pulumi_up");
    assert!(shown["created_ms"].as_u64().is_some(), "{shown}");
    let person = shown["previewed_by"]
        .as_str()
        .expect("who previewed")
        .to_owned();

    let rejected = reject(&client, &no, "not on a Friday").await;
    assert_eq!(rejected.is_error, Some(false), "{}", text_of(&rejected));
    let record = structured(&rejected);
    assert_eq!(record["rejected_by"], person.as_str());
    assert_eq!(record["already_rejected"], false);
    assert!(find(&waiting(&client).await, "preview_id", &no).is_none());

    // Applying it now is refused, names who said no, and runs nothing.
    let refused = up(&client, &no).await;
    assert_eq!(refused.is_error, Some(true));
    assert_eq!(error_code(&refused).as_deref(), Some("conflict"));
    let why = text_of(&refused);
    assert!(why.contains(&format!("rejected by {person}")), "{why}");
    assert!(why.contains("not on a Friday"), "{why}");
    assert_eq!(ups(&setup), 0, "{}", setup.command_lines());
    // Saying no again is no error.
    let again = reject(&client, &no, "still no").await;
    assert_eq!(again.is_error, Some(false), "{}", text_of(&again));
    assert_eq!(structured(&again)["already_rejected"], true);

    let yes = preview(&client, "up").await;
    assert!(find(&waiting(&client).await, "preview_id", &yes).is_some());
    let applied = up(&client, &yes).await;
    assert_eq!(applied.is_error, Some(false), "{}", text_of(&applied));
    assert_eq!(ups(&setup), 1);
    assert!(waiting(&client).await.is_empty(), "both are decided");
    // An applied preview can no longer be rejected.
    let late = reject(&client, &yes, "too late").await;
    assert_eq!(error_code(&late).as_deref(), Some("conflict"));
    assert!(
        text_of(&late).contains("already applied"),
        "{}",
        text_of(&late)
    );

    let listed = jobs(&client).await;
    let done = find(&listed, "job_id", &yes).expect("the applied job is listed");
    assert_eq!(done["state"], "succeeded");
    assert_eq!(done["operation"], "up");
    assert_eq!(done["confirmed_by"], person.as_str());
    assert_eq!(done["previewed_by"], person.as_str());
    assert_eq!(done["summary"]["resource_changes"]["create"], 1);
    assert!(done["finished_ms"].as_u64() >= done["started_ms"].as_u64());
    let said_no = find(&listed, "job_id", &no).expect("the rejection is listed");
    assert_eq!(said_no["state"], "cancelled");
    assert_eq!(said_no["rejected_by"], person.as_str());
    assert_eq!(said_no["confirmed_by"], Value::Null);
    // Newest first.
    let order: Vec<&str> = listed.iter().filter_map(|j| j["job_id"].as_str()).collect();
    assert_eq!(order, [yes.as_str(), no.as_str()]);
}

#[tokio::test]
async fn a_destroy_preview_waits_for_pulumi_destroy_and_limits_are_kept() {
    let mesh = Mesh::start().await;
    let setup = Setup::new(1);
    let _worker = replica(&mesh, setup.args(STANDIN, 30_000)).await;
    let client = connected(&mesh).await;

    let ids = [
        preview(&client, "up").await,
        preview(&client, "destroy").await,
    ];
    let listed = waiting(&client).await;
    let order: Vec<&str> = listed
        .iter()
        .filter_map(|p| p["preview_id"].as_str())
        .collect();
    assert_eq!(order, [ids[1].as_str(), ids[0].as_str()], "newest first");
    assert_eq!(listed[0]["operation"], "destroy");
    assert_eq!(listed[0]["confirm_with"], "pulumi_destroy");
    let one = call(&client, "pulumi_list_previews", json!({"limit": 1})).await;
    assert_eq!(structured(&one)["previews"].as_array().unwrap().len(), 1);
    let too_many = call(&client, "pulumi_list_previews", json!({"limit": 1000})).await;
    assert_eq!(too_many.is_error, Some(true), "the schema bounds the limit");
    let unknown = reject(&client, "made-up", "no").await;
    assert_eq!(error_code(&unknown).as_deref(), Some("invalid_arguments"));
}

#[tokio::test]
async fn a_rejection_racing_an_apply_of_the_same_preview_lets_exactly_one_win() {
    let mesh = Mesh::start().await;
    let setup = Setup::new(1);
    let _worker = replica(&mesh, setup.args(STANDIN, 30_000)).await;
    let client = connected(&mesh).await;

    let mut wins = (0, 0);
    for round in 0..4 {
        let id = preview(&client, "up").await;
        let ups_before = ups(&setup);
        let args = json!({"project": "app", "stack": "dev", "preview_id": id});
        let applying = spawn_call(&client, "pulumi_up", args);
        let rejecting = spawn_call(
            &client,
            "pulumi_reject_preview",
            json!({"preview_id": id, "reason": "race"}),
        );
        let (applied, rejected) = (applying.await.unwrap(), rejecting.await.unwrap());
        let (up_won, reject_won) = (
            applied.is_error == Some(false),
            rejected.is_error == Some(false),
        );
        assert!(
            up_won != reject_won,
            "round {round}: exactly one wins: up {} / reject {}",
            text_of(&applied),
            text_of(&rejected)
        );
        let loser = if up_won { &rejected } else { &applied };
        assert_eq!(
            error_code(loser).as_deref(),
            Some("conflict"),
            "{}",
            text_of(loser)
        );
        assert_eq!(
            ups(&setup) - ups_before,
            usize::from(up_won),
            "round {round}"
        );
        let job = find(&jobs(&client).await, "job_id", &id)
            .cloned()
            .expect("listed");
        let expected = if up_won { "succeeded" } else { "cancelled" };
        assert_eq!(job["state"], expected, "{job}");
        wins.0 += usize::from(up_won);
        wins.1 += usize::from(reject_won);
    }
    assert_eq!(wins.0 + wins.1, 4);
}
