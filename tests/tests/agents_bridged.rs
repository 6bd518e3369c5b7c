//! An agent whose tools come from everywhere at once: the reference memory
//! MCP server (npm, pinned) through the bridge, and the native gong-worker
//! (in front of the Gong stand-in), run by the agno-worker with its model
//! behind the intelligence-worker (a scripted OpenAI-compatible stand-in).

use serde_json::{Value, json};
use sophia_kit::Category;
use sophia_tests::bridge::{RunningBridge, everything_bin};
use sophia_tests::gong::{ACCESS_KEY, ACCESS_KEY_SECRET, StandIn as Gong};
use sophia_tests::intelligence::replica_taking;
use sophia_tests::openai::{Behavior, StandIn as Model};
use sophia_tests::tools::{call, text_of, wait_for_tool};
use sophia_tests::{Mesh, agno};

const NO_OLLAMA: &str = "http://127.0.0.1:9/v1";

/// The memory server, installed beside server-everything, on the mesh as
/// `memory_*`, its graph in `file`.
fn memory_server(file: &std::path::Path) -> mcp_bridge::ServerConfig {
    let bin = everything_bin()
        .parent()
        .expect("node_modules/.bin")
        .join("mcp-server-memory");
    let mut server = mcp_bridge::ServerConfig::stdio(
        "memory",
        Category::CodeGeneration,
        bin.to_str().expect("a UTF-8 path"),
        &[],
    );
    server.env.insert(
        "MEMORY_FILE_PATH".into(),
        file.to_string_lossy().into_owned(),
    );
    server
}

const TEMPLATE: &str = r#"
[[agent]]
type = "account_agent"
category = "business_intelligence"
description = "Prepares account reviews from Gong calls and the team's notes."
instructions = "Keep notes in memory, read them back, and cite the Gong calls."
tools = ["memory_create_entities", "memory_search_nodes", "gong_list_calls"]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_calls_a_bridged_memory_server_and_gong_and_answers_from_their_results() {
    let mesh = Mesh::start().await;
    let scratch = tempfile::tempdir().unwrap();
    let _bridge = RunningBridge::start(
        &mesh,
        vec![memory_server(&scratch.path().join("graph.jsonl"))],
    )
    .await;
    let gong = Gong::start().await;
    let _gong =
        sophia_tests::gong::replica(&mesh, &gong.base_url, Some((ACCESS_KEY, ACCESS_KEY_SECRET)))
            .await;
    let model = Model::start().await;
    let _intelligence = replica_taking(&mesh, Some((&model, "default")), NO_OLLAMA, 1 << 20).await;
    let templates = scratch.path().join("templates.toml");
    std::fs::write(&templates, TEMPLATE).unwrap();
    let _agno = agno::replica_with(&mesh, &Category::AGENTS, Some(templates)).await;
    let client = mesh.client().await;
    for tool in [
        "agno_create_agent",
        "memory_search_nodes",
        "gong_list_calls",
        "model_chat",
    ] {
        wait_for_tool(&client, tool).await;
    }

    model.script([
        Behavior::call_tool(
            "memory_create_entities",
            json!({"entities": [{"name": "Acme", "entityType": "customer",
                "observations": ["renewal due in April"]}]}),
        ),
        Behavior::call_tool("memory_search_nodes", json!({"query": "Acme"})),
        Behavior::call_tool(
            "gong_list_calls",
            json!({"from": "2025-03-01T00:00:00Z", "to": "2025-04-01T00:00:00Z"}),
        ),
        Behavior::Say("Acme renews in April; five discovery calls in March.".into()),
    ]);
    let r = call(
        &client,
        "agno_create_agent",
        json!({"agent_type": "account_agent", "task": "prepare the Acme review"}),
    )
    .await;
    let out = r.structured_content.clone().unwrap_or(Value::Null);
    assert_eq!(out["status"], "completed", "{}", text_of(&r));
    let steps = out["steps"].as_array().unwrap();
    let tools: Vec<&str> = steps.iter().filter_map(|s| s["tool"].as_str()).collect();
    assert_eq!(
        tools,
        [
            "memory_create_entities",
            "memory_search_nodes",
            "gong_list_calls"
        ]
    );
    assert!(steps.iter().all(|s| s["is_error"] == false), "{steps:#?}");
    // The memory server gave back what the agent stored a step earlier, and
    // the Gong stand-in its calls.
    let result = |i: usize| steps[i]["result"].as_str().unwrap_or_default().to_owned();
    assert!(result(1).contains("renewal due in April"), "{}", result(1));
    assert!(result(2).contains("Acme discovery #1"), "{}", result(2));
    // The model answered having read both results.
    let last = model.hits().last().cloned().expect("the model was asked");
    let asked = serde_json::to_string(&last.body).unwrap();
    assert!(asked.contains("renewal due in April"), "{asked}");
    assert!(asked.contains("Acme discovery #1"), "{asked}");
    assert_eq!(
        out["answer"],
        "Acme renews in April; five discovery calls in March."
    );
}
