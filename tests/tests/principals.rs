//! Two people on one gateway: API keys with different roles see different
//! tools, a call outside one's policy is refused at the gateway (and, forged
//! straight onto the bus with that principal, at the worker), and one
//! principal over its rate gets `busy` while the other's calls go through.

use std::time::Duration;

use serde_json::json;
use sha2::{Digest, Sha256};
use sophia_kit::bus::{Bus, CallError, CallSpec, Target};
use sophia_kit::{Category, Tool, ToolOutput, Worker};
use sophia_proto::{Caller, ErrorCode, headers};
use sophia_tests::client::connect_http;
use sophia_tests::tools::{call, error_code, text_of, wait_for_tool};
use sophia_tests::{McpClient, Mesh};
use tokio_util::sync::CancellationToken;

const ALICE: &str = "sk_sophia_alice-is-an-analyst-000000000000000000000";
const BOB: &str = "sk_sophia_bob-is-an-operator-0000000000000000000000";

const POLICY: &str = r#"
[roles.analyst]
allow = [{ read_only = true }]

[roles.operator]
allow = [{ tools = ["*"] }]
"#;

fn sha256(key: &str) -> String {
    Sha256::digest(key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A worker with a read-only `report` and a destructive `drop_table`.
fn warehouse() -> Worker {
    Worker::new("warehouse-worker", "1.0.0")
        .tool(
            Tool::new(
                "report",
                Category::BusinessIntelligence,
                "Reads the numbers.",
            )
            .read_only()
            .handler(|call| async move {
                Ok(ToolOutput::text(format!(
                    "report for {}",
                    call.caller.principal
                )))
            }),
        )
        .tool(
            Tool::new(
                "drop_table",
                Category::BusinessIntelligence,
                "Drops a table.",
            )
            .destructive()
            .handler(|_| async { Ok(ToolOutput::text("dropped")) }),
        )
}

struct Team {
    mesh: Mesh,
    _dir: tempfile::TempDir,
}

/// A mesh whose gateway knows alice (analyst) and bob (operator) by API
/// key, with `rate_per_min` calls a minute each (0: no limit).
async fn team(rate_per_min: u32) -> Team {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys.toml");
    std::fs::write(
        &keys,
        format!(
            "[[keys]]\nprincipal = \"alice\"\nroles = [\"analyst\"]\nsha256 = \"{}\"\n\n\
             [[keys]]\nprincipal = \"bob\"\nroles = [\"operator\"]\nsha256 = \"{}\"\n",
            sha256(ALICE),
            sha256(BOB)
        ),
    )
    .unwrap();
    let policy = dir.path().join("policy.toml");
    std::fs::write(&policy, POLICY).unwrap();
    let mut mesh = Mesh::without_gateway();
    mesh.policy = Some(policy);
    let mut config = mesh.gateway_config();
    config.identity.keys_file = Some(keys);
    config.principal_rate_per_min = rate_per_min;
    config.principal_burst = 2;
    mesh.start_gateway_with(config).await;
    mesh.worker(warehouse()).await;
    Team { mesh, _dir: dir }
}

async fn names(client: &McpClient) -> Vec<String> {
    let mut names: Vec<String> = client
        .list_all_tools()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name.to_string())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn two_principals_see_different_tools_and_the_policy_holds_at_gateway_and_worker() {
    let t = team(0).await;
    let bob = connect_http(&t.mesh.mcp_url(), BOB).await;
    wait_for_tool(&bob, "drop_table").await;
    let alice = connect_http(&t.mesh.mcp_url(), ALICE).await;

    assert_eq!(names(&bob).await, ["drop_table", "report"]);
    assert_eq!(names(&alice).await, ["report"]);
    assert_eq!(
        text_of(&call(&alice, "report", json!({})).await),
        "report for alice"
    );

    let refused = call(&alice, "drop_table", json!({})).await;
    assert_eq!(error_code(&refused).as_deref(), Some("permission_denied"));
    assert!(
        text_of(&refused).contains("alice (roles: analyst) may not call `drop_table`"),
        "{}",
        text_of(&refused)
    );
    // A tool that does not exist reads the same: refusals reveal nothing.
    let nothing = call(&alice, "drop_everything", json!({})).await;
    assert_eq!(
        text_of(&nothing).replace("drop_everything", "drop_table"),
        text_of(&refused)
    );
    assert_eq!(
        text_of(&call(&bob, "drop_table", json!({})).await),
        "dropped"
    );

    // Alice's call forged straight onto the bus: the worker refuses it too.
    let bus = Bus::start(t.mesh.nats_client().await, "forger".into(), 1 << 20)
        .await
        .unwrap();
    let forged = CallSpec {
        tool: "drop_table",
        target: Target::Tool(Category::BusinessIntelligence),
        args: json!({}),
        timeout: Duration::from_secs(10),
        caller: Caller {
            principal: "alice".into(),
            roles: vec!["analyst".into()],
            via: "forged".into(),
            ..Default::default()
        },
        trace: headers::Context::default(),
        liveness: Default::default(),
    };
    match bus.call(forged, None, &CancellationToken::new()).await {
        Err(CallError::Worker(e)) => {
            assert_eq!(e.code, ErrorCode::PermissionDenied);
            assert!(
                e.message.contains("alice (roles: analyst)"),
                "{}",
                e.message
            );
        }
        other => panic!("the worker must refuse alice's forged drop_table: {other:?}"),
    }
}

#[tokio::test]
async fn a_principal_over_its_rate_gets_busy_with_a_retry_time_and_others_go_on() {
    // One call a minute, bursts of two.
    let t = team(1).await;
    let bob = connect_http(&t.mesh.mcp_url(), BOB).await;
    wait_for_tool(&bob, "report").await;
    let alice = connect_http(&t.mesh.mcp_url(), ALICE).await;

    for _ in 0..2 {
        assert_eq!(
            text_of(&call(&alice, "report", json!({})).await),
            "report for alice"
        );
    }
    let busy = call(&alice, "report", json!({})).await;
    assert_eq!(
        error_code(&busy).as_deref(),
        Some("busy"),
        "{}",
        text_of(&busy)
    );
    assert!(text_of(&busy).contains("retry in"), "{}", text_of(&busy));
    // Machine-readable too: `_meta["sophia/error"]`.
    let error = &busy.meta.as_ref().unwrap().0["sophia/error"];
    assert_eq!(error["retryable"], true, "{error}");
    assert!(
        error["data"]["retry_after_ms"].as_u64().unwrap() > 0,
        "{error}"
    );
    // Bob is not held up by alice.
    assert_eq!(
        text_of(&call(&bob, "report", json!({})).await),
        "report for bob"
    );
}

#[tokio::test]
async fn resources_and_prompts_follow_the_same_rules() {
    use rmcp::model::ReadResourceRequestParams;
    let mut t = team(0).await;
    t.mesh
        .worker(
            Worker::new("handbook-worker", "1.0.0")
                .resource(
                    json!({"uri": "handbook://intro", "name": "intro", "mimeType": "text/plain"}),
                    |_| async { Ok(sophia_kit::offers::Contents::text("Welcome")) },
                )
                .prompt(json!({"name": "onboard", "description": "Onboard someone"}), |_| async {
                    Ok(json!({"messages": [{"role": "user", "content": {"type": "text", "text": "hi"}}]}))
                }),
        )
        .await;
    // Resources are read-only: the analyst's `read_only = true` rule covers
    // them; the operator's `tools = ["*"]` rule is about tools only.
    let alice = connect_http(&t.mesh.mcp_url(), ALICE).await;
    let listed = sophia_tests::eventually(
        "the handbook is listed",
        sophia_tests::tools::WAIT,
        || async {
            let r = alice.list_all_resources().await.ok()?;
            (!r.is_empty()).then_some(r)
        },
    )
    .await;
    assert_eq!(listed[0].uri, "handbook://intro");
    let read = alice
        .read_resource(ReadResourceRequestParams::new("handbook://intro"))
        .await
        .unwrap();
    assert!(format!("{read:?}").contains("Welcome"));
    assert_eq!(alice.list_all_prompts().await.unwrap().len(), 1);

    let bob = connect_http(&t.mesh.mcp_url(), BOB).await;
    assert!(bob.list_all_resources().await.unwrap().is_empty());
    assert!(bob.list_all_prompts().await.unwrap().is_empty());
    let refused = bob
        .read_resource(ReadResourceRequestParams::new("handbook://intro"))
        .await
        .expect_err("bob may not read it");
    assert!(
        refused.to_string().contains(
            "bob (roles: operator) may not use the resources and prompts of `handbook-worker`"
        ),
        "{refused}"
    );
}
