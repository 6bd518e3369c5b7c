//! An agent never has more than the person who started it: a read-only
//! principal's agent cannot make the pulumi-worker apply anything, whatever
//! the model asks for. The agno-worker offers the model only what the
//! principal may call and refuses the rest; and should an agno-worker run
//! without the policy, the pulumi-worker refuses on the roles the call
//! carries.

use agno_worker::{AgnoArgs, Cli};
use serde_json::{Value, json};
use sophia_kit::Category;
use sophia_tests::agno::deploy_script;
use sophia_tests::intelligence::replica_taking;
use sophia_tests::openai::StandIn;
use sophia_tests::pulumi::{self, Setup};
use sophia_tests::tools::{call, text_of, wait_for_tool};
use sophia_tests::{McpClient, Mesh};
use tokio_util::sync::CancellationToken;

const STANDIN: &str = env!("CARGO_BIN_EXE_pulumi");
const NO_OLLAMA: &str = "http://127.0.0.1:9/v1";

/// Everyone (the test token's principal has no roles of its own) may read,
/// use the agents and the models; nobody may change infrastructure.
const READ_ONLY: &str = r#"
[roles."*"]
allow = [{ read_only = true }, { tools = ["agno_*"] }, { categories = ["inference"] }]
"#;

struct World {
    mesh: Mesh,
    model: StandIn,
    setup: Setup,
    _dir: tempfile::TempDir,
    _keep: Vec<Box<dyn std::any::Any>>,
}

/// The mesh with the read-only policy everywhere, except on the
/// agno-worker when `agno_enforces` is false.
async fn world(agno_enforces: bool) -> World {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.toml");
    std::fs::write(&policy, READ_ONLY).unwrap();
    let mut mesh = Mesh::without_gateway();
    mesh.policy = Some(policy);
    mesh.start_gateway().await;
    let model = StandIn::start().await;
    let intelligence = replica_taking(&mesh, Some((&model, "default")), NO_OLLAMA, 1 << 20).await;
    let setup = Setup::new(1);
    let pulumi = pulumi::replica(&mesh, setup.args(STANDIN, 30_000)).await;
    let mut agno_config = mesh.worker_config_as("agno");
    if !agno_enforces {
        agno_config.policy = None;
    }
    let stop = CancellationToken::new();
    let agno = agno_worker::run(
        Cli {
            worker: agno_config,
            agno: AgnoArgs {
                categories: Category::AGENTS.to_vec(),
                templates: None,
                session_ttl_s: 3600,
            },
        },
        stop.clone(),
    )
    .await
    .expect("agno-worker starts");
    World {
        mesh,
        model,
        setup,
        _dir: dir,
        _keep: vec![
            Box::new(intelligence),
            Box::new(pulumi),
            Box::new(agno),
            Box::new(stop.drop_guard()),
        ],
    }
}

/// Asks a new infrastructure agent to deploy dev; the model previews, then
/// wants `pulumi_up` whatever it is told. The run's structured result.
async fn ask_to_deploy(w: &World, client: &McpClient) -> Value {
    w.model.script(deploy_script());
    let r = call(
        client,
        "agno_create_agent",
        json!({"agent_type": "pulumi_agent", "task": "deploy dev"}),
    )
    .await;
    r.structured_content
        .clone()
        .unwrap_or_else(|| json!({"text": text_of(&r)}))
}

async fn client(w: &World) -> McpClient {
    let client = w.mesh.client().await;
    for tool in ["agno_create_agent", "pulumi_preview"] {
        wait_for_tool(&client, tool).await;
    }
    client
}

fn step<'a>(out: &'a Value, tool: &str) -> &'a Value {
    out["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["tool"] == tool)
        .unwrap_or_else(|| panic!("no {tool} step in {out}"))
}

#[tokio::test]
async fn a_read_only_principals_agent_is_not_offered_and_cannot_call_pulumi_up() {
    let w = world(true).await;
    let client = client(&w).await;
    // The person's own list has no pulumi_up either.
    let listed = client.list_all_tools().await.unwrap();
    assert!(!listed.iter().any(|t| t.name == "pulumi_up"));

    let out = ask_to_deploy(&w, &client).await;
    assert_eq!(out["status"], "completed", "{out}");
    let up = step(&out, "pulumi_up");
    assert!(
        up["result"]
            .as_str()
            .unwrap()
            .contains("local (no roles) may not call `pulumi_up`"),
        "{up}"
    );
    // The model was never offered it.
    let offered: Vec<Value> = w.model.hits()[0].body["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["function"]["name"].clone())
        .collect();
    assert!(offered.contains(&json!("pulumi_preview")), "{offered:?}");
    assert!(!offered.contains(&json!("pulumi_up")), "{offered:?}");
    assert!(!w.setup.command_lines().contains("up --yes"));
}

#[tokio::test]
async fn without_the_policy_at_the_agno_worker_the_pulumi_worker_still_refuses() {
    let w = world(false).await;
    let client = client(&w).await;
    let out = ask_to_deploy(&w, &client).await;
    // This agno-worker lets the model ask; the person is asked first.
    assert_eq!(out["status"], "awaiting_confirmation", "{out}");
    let action = json!({"action_id": out["pending_action"]["action_id"], "approve": true});
    let r = call(&client, "agno_confirm", action).await;
    let out = r.structured_content.clone().unwrap_or_default();
    let up = step(&out, "pulumi_up");
    assert!(
        up["result"].as_str().unwrap().contains("permission denied"),
        "the pulumi-worker refuses the agent's call on its starter's roles: {up}"
    );
    assert!(!w.setup.command_lines().contains("up --yes"));
}
