//! The agno-worker on the mesh, as Cursor drives it through the gateway:
//! agents whose model (the intelligence-worker in front of a scripted
//! stand-in for an OpenAI-compatible server) calls the pulumi-worker's
//! tools (in front of the stand-in `pulumi` CLI) over the bus.

use std::sync::Arc;

use agno_worker::{AgnoArgs, Cli};
use rmcp::model::{CallToolResult, ElicitResult, ElicitationAction};
use serde_json::{Value, json};
use sophia_kit::Category;
use sophia_tests::agno::{self, deploy_script};
use sophia_tests::intelligence::{self, replica_taking};
use sophia_tests::openai::{Behavior, StandIn};
use sophia_tests::pulumi::{self, Setup};
use sophia_tests::tools::{call, error_code, text_of, wait_for_tool};
use sophia_tests::{McpClient, Mesh};
use tokio_util::sync::CancellationToken;

const STANDIN: &str = env!("CARGO_BIN_EXE_pulumi");
const NO_OLLAMA: &str = "http://127.0.0.1:9/v1";

/// The mesh of the README: gateway, intelligence (model alias `default`),
/// pulumi and agno workers.
struct World {
    mesh: Mesh,
    model: StandIn,
    setup: Setup,
    _intelligence: intelligence::Replica,
    _pulumi: pulumi::Replica,
    _agno: Option<agno::Replica>,
}

impl World {
    async fn start() -> Self {
        Self::on(Mesh::start().await).await
    }

    async fn on(mesh: Mesh) -> Self {
        let model = StandIn::start().await;
        let intelligence =
            replica_taking(&mesh, Some((&model, "default")), NO_OLLAMA, 1 << 20).await;
        let setup = Setup::new(1);
        let pulumi = pulumi::replica(&mesh, setup.args(STANDIN, 30_000)).await;
        let agno = agno::replica(&mesh, &Category::AGENTS).await;
        Self {
            mesh,
            model,
            setup,
            _intelligence: intelligence,
            _pulumi: pulumi,
            _agno: Some(agno),
        }
    }

    async fn client(&self) -> McpClient {
        ready(self.mesh.client().await).await
    }

    /// Asks a new infrastructure agent to deploy dev; the model previews,
    /// then wants `pulumi_up` ([`deploy_script`]).
    async fn ask_to_deploy(&self, client: &McpClient) -> CallToolResult {
        self.model.script(deploy_script());
        call(
            client,
            "agno_create_agent",
            json!({"agent_type": "pulumi_agent", "task": "deploy dev"}),
        )
        .await
    }
}

/// Waits until the agents and the tools they use are on offer.
async fn ready(client: McpClient) -> McpClient {
    for tool in ["agno_create_agent", "pulumi_preview", "model_chat"] {
        wait_for_tool(&client, tool).await;
    }
    client
}

fn structured(r: &CallToolResult) -> Value {
    r.structured_content.clone().unwrap_or(Value::Null)
}

#[tokio::test]
async fn an_infrastructure_agent_previews_through_the_pulumi_worker_and_answers() {
    let w = World::start().await;
    let client = w.client().await;
    w.model.script([
        Behavior::call_tool("pulumi_preview", json!({"stack": "dev"})),
        Behavior::Say("The preview creates 1 resource and leaves 5 unchanged.".into()),
    ]);
    let r = call(
        &client,
        "agno_create_agent",
        json!({"agent_type": "pulumi_agent", "task": "what would change on dev?"}),
    )
    .await;
    let out = structured(&r);
    assert_eq!(out["status"], "completed", "{}", text_of(&r));
    assert_eq!(
        out["answer"],
        "The preview creates 1 resource and leaves 5 unchanged."
    );
    assert_eq!(out["steps"][0]["tool"], "pulumi_preview");
    assert_eq!(out["steps"][0]["is_error"], false);
    assert!(
        out["steps"][0]["result"]
            .as_str()
            .unwrap()
            .contains("preview_id"),
        "{out}"
    );
    assert!(out["usage"]["input_tokens"].as_u64().unwrap() > 0);

    // The model saw the pulumi-worker's own schema, and then the result.
    let hits = w.model.hits();
    let tools = hits[0].body["tools"].as_array().unwrap();
    let preview = tools
        .iter()
        .find(|t| t["function"]["name"] == "pulumi_preview")
        .expect("pulumi_preview offered to the model");
    assert_eq!(
        preview["function"]["parameters"]["required"],
        json!(["stack"])
    );
    let second = &hits[1].body["messages"];
    let tool_message = second
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["role"] == "tool")
        .unwrap();
    assert!(
        tool_message["content"]
            .as_str()
            .unwrap()
            .contains("1 create")
    );
}

#[tokio::test]
async fn an_up_waits_for_a_person_and_resumes_once_confirmed() {
    let w = World::start().await;
    let client = w.client().await;
    let r = w.ask_to_deploy(&client).await;
    let out = structured(&r);
    assert_eq!(out["status"], "awaiting_confirmation", "{}", text_of(&r));
    let pending = &out["pending_action"];
    assert_eq!(pending["tool"], "pulumi_up");
    assert!(
        pending["plan"].as_str().unwrap().contains("1 create"),
        "the plan shows the preview: {pending}"
    );
    assert!(
        !w.setup.command_lines().contains("up --yes"),
        "nothing ran before the person confirmed"
    );

    let action = json!({"action_id": pending["action_id"], "approve": true});
    let r = call(&client, "agno_confirm", action.clone()).await;
    let out = structured(&r);
    assert_eq!(out["status"], "completed", "{}", text_of(&r));
    assert_eq!(out["answer"], "Deployed: 1 resource created.");
    let up = out["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["tool"] == "pulumi_up")
        .unwrap();
    assert!(
        up["result"].as_str().unwrap().contains("update done"),
        "{up}"
    );

    let again = call(&client, "agno_confirm", action).await;
    assert_eq!(error_code(&again).as_deref(), Some("conflict"));
    assert!(
        text_of(&again).contains("not run twice"),
        "{}",
        text_of(&again)
    );
    assert_eq!(w.setup.command_lines().matches("up --yes").count(), 1);
}

#[tokio::test]
async fn a_person_asked_through_elicitation_confirms_in_the_same_call() {
    let w = World::start().await;
    let client = ready(
        w.mesh
            .client_answering([
                ElicitResult::new(ElicitationAction::Accept).with_content(json!({"confirm": true}))
            ])
            .await,
    )
    .await;
    let r = w.ask_to_deploy(&client).await;
    assert_eq!(structured(&r)["status"], "completed", "{}", text_of(&r));
    let asked = client.service().asked.lock().unwrap().clone();
    assert_eq!(asked.len(), 1);
    assert!(
        asked[0].0.contains("wants to run pulumi_up") && asked[0].0.contains("1 create"),
        "{}",
        asked[0].0
    );
}

#[tokio::test]
async fn a_declined_action_is_not_run_and_the_agent_is_told() {
    let w = World::start().await;
    let client = w.client().await;
    let r = w.ask_to_deploy(&client).await;
    let id = structured(&r)["pending_action"]["action_id"].clone();
    let r = call(
        &client,
        "agno_confirm",
        json!({"action_id": id, "approve": false}),
    )
    .await;
    let out = structured(&r);
    assert_eq!(out["status"], "completed", "{}", text_of(&r));
    let up = &out["steps"][1];
    assert_eq!(
        (&up["tool"], &up["is_error"]),
        (&json!("pulumi_up"), &json!(true))
    );
    assert!(up["result"].as_str().unwrap().contains("did not allow"));
    assert!(!w.setup.command_lines().contains("up --yes"));
}

#[tokio::test]
async fn a_session_is_continued_on_another_replica() {
    let mut w = World::start().await;
    let client = w.client().await;
    w.model.default_behavior(Behavior::Ok);
    let r = call(
        &client,
        "agno_create_agent",
        json!({"agent_type": "code_agent", "task": "remember the word teapot"}),
    )
    .await;
    let agent_id = structured(&r)["agent_id"].clone();
    // The first replica goes away (and the gateway sees it go); a new one
    // takes over.
    w._agno.take().unwrap().stop().await;
    sophia_tests::eventually(
        "the first replica has left",
        sophia_tests::tools::WAIT,
        || async {
            let tools = client.list_all_tools().await.ok()?;
            (!tools.iter().any(|t| t.name == "agno_run_agent")).then_some(())
        },
    )
    .await;
    let _second = agno::replica(&w.mesh, &Category::AGENTS).await;
    wait_for_tool(&client, "agno_run_agent").await;
    let r = call(
        &client,
        "agno_run_agent",
        json!({"agent_id": agent_id, "message": "which word?"}),
    )
    .await;
    assert_eq!(structured(&r)["status"], "completed", "{}", text_of(&r));
    let last = w.model.hits().pop().unwrap();
    let contents: Vec<&str> = last.body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["content"].as_str())
        .collect();
    assert!(
        contents.contains(&"remember the word teapot")
            && contents.contains(&"echo: remember the word teapot"),
        "the second replica continued the session: {contents:?}"
    );
}

#[tokio::test]
async fn concurrent_runs_on_one_session_keep_both_turns() {
    let w = World::start().await;
    let client = Arc::new(w.client().await);
    w.model
        .default_behavior(Behavior::Stall(std::time::Duration::from_millis(200)));
    let r = call(
        &client,
        "agno_create_agent",
        json!({"agent_type": "code_agent"}),
    )
    .await;
    let agent_id = structured(&r)["agent_id"].clone();
    let runs: Vec<_> = ["first", "second"]
        .into_iter()
        .map(|m| {
            let (client, agent_id) = (client.clone(), agent_id.clone());
            tokio::spawn(async move {
                call(
                    &client,
                    "agno_run_agent",
                    json!({"agent_id": agent_id, "message": m}),
                )
                .await
            })
        })
        .collect();
    for run in runs {
        let r = run.await.unwrap();
        assert_eq!(structured(&r)["status"], "completed", "{}", text_of(&r));
    }
    let agent = call(&client, "agno_get_agent", json!({"agent_id": agent_id})).await;
    assert_eq!(
        structured(&agent)["session_messages"],
        4,
        "both runs' user and assistant messages are kept"
    );
}

#[tokio::test]
async fn a_run_that_never_answers_stops_at_the_step_limit() {
    let w = World::start().await;
    let client = w.client().await;
    w.model
        .default_behavior(Behavior::call_tool("pulumi_list_stacks", json!({})));
    let r = call(
        &client,
        "agno_run_agent",
        json!({"agent_type": "pulumi_agent", "message": "loop forever"}),
    )
    .await;
    let out = structured(&r);
    assert_eq!(out["status"], "step_limit", "{}", text_of(&r));
    assert_eq!(out["turns"], 8);
    assert_eq!(out["steps"].as_array().unwrap().len(), 8);
    assert!(text_of(&r).contains("max_steps"), "{}", text_of(&r));
}

#[tokio::test]
async fn invalid_tool_arguments_go_back_to_the_model() {
    let w = World::start().await;
    let client = w.client().await;
    w.model.script([
        Behavior::CallTool {
            name: "pulumi_preview".into(),
            arguments: "{not json".into(),
        },
        Behavior::call_tool("pulumi_preview", json!({"stak": "dev"})),
        Behavior::call_tool("pulumi_destroy_everything", json!({})),
        Behavior::Say("I could not run it.".into()),
    ]);
    let r = call(
        &client,
        "agno_run_agent",
        json!({"agent_type": "pulumi_agent", "message": "preview"}),
    )
    .await;
    let out = structured(&r);
    assert_eq!(out["status"], "completed", "{}", text_of(&r));
    let results: Vec<&str> = out["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["result"].as_str().unwrap())
        .collect();
    assert!(results[0].contains("not a JSON object"), "{results:?}");
    assert!(
        results[1].contains("invalid arguments for pulumi_preview"),
        "{results:?}"
    );
    assert!(
        results[2].contains("not one of this agent's tools"),
        "{results:?}"
    );
    let last = w.model.hits().pop().unwrap();
    let errors = last.body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "tool" && m["content"].as_str().unwrap().starts_with("error:"))
        .count();
    assert_eq!(errors, 3, "the model was told each time");
}

#[tokio::test]
async fn an_unknown_agent_type_is_refused_with_the_known_ones() {
    let w = World::start().await;
    let client = w.client().await;
    let r = call(
        &client,
        "agno_create_agent",
        json!({"agent_type": "astrology_agent"}),
    )
    .await;
    assert_eq!(error_code(&r).as_deref(), Some("invalid_arguments"));
    assert!(
        text_of(&r).contains("unknown agent type \"astrology_agent\"")
            && text_of(&r).contains("pulumi_agent"),
        "{}",
        text_of(&r)
    );
}

#[tokio::test]
async fn a_run_whose_tools_are_missing_is_refused_unless_allowed() {
    let w = World::start().await;
    let client = w.client().await;
    let types = call(&client, "agno_list_agent_types", json!({})).await;
    let gong = structured(&types)["agent_types"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["agent_type"] == "gong_agent")
        .cloned()
        .unwrap();
    assert_eq!(
        gong["missing_tools"],
        json!(["gong_list_calls", "gong_get_transcript"])
    );

    // Refused before anything runs: no model call, no agent left behind.
    let refused = call(
        &client,
        "agno_create_agent",
        json!({"agent_type": "gong_agent", "task": "analyze recent calls"}),
    )
    .await;
    assert_eq!(error_code(&refused).as_deref(), Some("unavailable"));
    for needed in [
        "gong_list_calls, gong_get_transcript",
        "allow_missing_tools",
    ] {
        assert!(
            text_of(&refused).contains(needed),
            "{needed:?} in {}",
            text_of(&refused)
        );
    }
    assert!(w.model.hits().is_empty(), "no model call for a refused run");
    let list = call(&client, "agno_list_agents", json!({})).await;
    assert_eq!(structured(&list)["agents"], json!([]), "no orphan");

    // Allowed: it runs, and says what it ran without.
    w.model.script([
        Behavior::call_tool("gong_list_calls", json!({})),
        Behavior::Say("No call data is available.".into()),
    ]);
    let r = call(
        &client,
        "agno_create_agent",
        json!({"agent_type": "gong_agent", "task": "analyze recent calls",
               "allow_missing_tools": true}),
    )
    .await;
    let out = structured(&r);
    assert_eq!(out["status"], "completed", "{}", text_of(&r));
    assert!(
        out["steps"][0]["result"]
            .as_str()
            .unwrap()
            .contains("gong_list_calls is not on the mesh right now"),
        "{out}"
    );
    assert!(
        text_of(&r).contains("not on the mesh right now: gong_list_calls, gong_get_transcript"),
        "{}",
        text_of(&r)
    );
}

#[tokio::test]
async fn a_failed_run_leaves_no_agent_behind() {
    let w = World::start().await;
    let client = w.client().await;
    // The model refuses every request: the run cannot finish.
    w.model.default_behavior(Behavior::Reject);
    for (tool, args) in [
        (
            "agno_create_agent",
            json!({"agent_type": "code_agent", "task": "write a haiku"}),
        ),
        (
            "agno_run_agent",
            json!({"agent_type": "code_agent", "message": "write a haiku"}),
        ),
    ] {
        let r = call(&client, tool, args).await;
        assert_eq!(r.is_error, Some(true), "{tool}: {}", text_of(&r));
        assert!(
            text_of(&r).contains("the agent this call created was removed"),
            "{tool}: {}",
            text_of(&r)
        );
    }
    let list = call(&client, "agno_list_agents", json!({})).await;
    assert_eq!(structured(&list)["agents"], json!([]), "no orphans");
}

#[tokio::test]
async fn agents_are_listed_counted_and_deleted() {
    let w = World::start().await;
    let client = w.client().await;
    for ty in ["gong_agent", "pulumi_agent", "pulumi_agent"] {
        call(&client, "agno_create_agent", json!({"agent_type": ty})).await;
    }
    let stats = call(&client, "agno_agent_stats", json!({})).await;
    let categories = &structured(&stats)["categories"];
    assert_eq!(categories["infrastructure"]["agents"], 2);
    assert_eq!(categories["business_intelligence"]["agents"], 1);
    assert_eq!(categories["code_generation"]["agents"], 0);
    let list = call(&client, "agno_list_agents", json!({})).await;
    let agents = structured(&list)["agents"].as_array().unwrap().clone();
    assert_eq!(agents.len(), 3);
    let id = agents[0]["id"].clone();
    let deleted = call(&client, "agno_delete_agent", json!({"agent_id": id})).await;
    assert_eq!(structured(&deleted)["deleted"], true);
    let gone = call(&client, "agno_get_agent", json!({"agent_id": id})).await;
    assert_eq!(error_code(&gone).as_deref(), Some("invalid_arguments"));
}

#[tokio::test]
async fn cancelling_a_run_stops_the_loop_and_its_model_call() {
    use rmcp::model::{CallToolRequest, CallToolRequestParams, ClientRequest};
    use rmcp::service::PeerRequestOptions;
    let w = World::start().await;
    let client = w.client().await;
    w.model
        .default_behavior(Behavior::Stall(std::time::Duration::from_secs(60)));
    let args = json!({"agent_type": "code_agent", "message": "think for a long time"});
    let handle = client
        .send_request_with_option(
            ClientRequest::CallToolRequest(CallToolRequest::new(
                CallToolRequestParams::new("agno_run_agent")
                    .with_arguments(args.as_object().unwrap().clone()),
            )),
            PeerRequestOptions::no_options(),
        )
        .await
        .unwrap();
    sophia_tests::eventually(
        "the run is waiting on the model",
        sophia_tests::tools::WAIT,
        || async { (w.model.hits().len() == 1 && code_runs(&client).await == 1).then_some(()) },
    )
    .await;
    handle.cancel(Some("changed my mind".into())).await.unwrap();
    sophia_tests::eventually("the run stops", sophia_tests::tools::WAIT, || async {
        (code_runs(&client).await == 0).then_some(())
    })
    .await;
    assert_eq!(
        w.model.hits().len(),
        1,
        "no further model turn after the cancel"
    );
}

async fn code_runs(client: &McpClient) -> u64 {
    let stats = call(client, "agno_agent_stats", json!({})).await;
    structured(&stats)["categories"]["code_generation"]["runs_in_progress"]
        .as_u64()
        .unwrap_or(0)
}

#[tokio::test]
async fn the_seeds_rest_shortcuts_create_an_agent_and_report_status() {
    let w = World::start().await;
    let client = w.client().await;
    drop(client);
    sophia_tests::install_crypto();
    let http = reqwest::Client::new();
    let base = w.mesh.http_base();
    let token = sophia_tests::mesh::TEST_TOKEN;
    w.model
        .default_behavior(Behavior::Say("3 calls mention pricing.".into()));

    let unauthenticated = http
        .post(format!("{base}/mcp/agno/create_agent"))
        .json(&json!({"agent_type": "gong_agent"}))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthenticated.status().as_u16(), 401);

    // The seed's body: refused, as no worker offers Gong's tools here.
    let r = http
        .post(format!("{base}/mcp/agno/create_agent"))
        .bearer_auth(token)
        .json(&json!({"agent_type": "gong_agent", "task": "analyze recent calls"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 503);
    let r = http
        .post(format!("{base}/mcp/agno/create_agent"))
        .bearer_auth(token)
        .json(
            &json!({"agent_type": "gong_agent", "task": "analyze recent calls",
            "allow_missing_tools": true}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["answer"], "3 calls mention pricing.", "{body}");
    assert_eq!(body["agent_type"], "gong_agent");

    let r = http
        .post(format!("{base}/mcp/agno/create_agent"))
        .bearer_auth(token)
        .json(&json!({"agent_type": "astrology_agent"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);

    let status: Value = http
        .get(format!("{base}/api/v1/agents/status"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        status["categories"]["business_intelligence"],
        json!({"agents": 1, "runs_in_progress": 0})
    );
}

#[tokio::test]
async fn the_whole_deploy_runs_with_least_privilege_nats_users() {
    let w = World::on(Mesh::least_privilege().await).await;
    let client = w.client().await;
    let r = w.ask_to_deploy(&client).await;
    let id = structured(&r)["pending_action"]["action_id"].clone();
    assert!(id.is_string(), "{}", text_of(&r));
    let r = call(
        &client,
        "agno_confirm",
        json!({"action_id": id, "approve": true}),
    )
    .await;
    assert_eq!(structured(&r)["status"], "completed", "{}", text_of(&r));
    let violations = w.mesh.nats.violations();
    assert!(violations.is_empty(), "{violations:#?}");
}

#[tokio::test]
async fn runs_go_only_to_replicas_serving_the_agents_category() {
    let mesh = Mesh::start().await;
    let model = StandIn::start().await;
    let _intelligence = replica_taking(&mesh, Some((&model, "default")), NO_OLLAMA, 1 << 20).await;
    let _code_only = agno::replica(&mesh, &[Category::CodeGeneration]).await;
    let client = mesh.client().await;
    wait_for_tool(&client, "agno_create_agent").await;
    let r = call(
        &client,
        "agno_create_agent",
        // No pulumi-worker here: allowed, so that the category is what stops it.
        json!({"agent_type": "pulumi_agent", "task": "preview dev", "allow_missing_tools": true}),
    )
    .await;
    assert_eq!(error_code(&r).as_deref(), Some("unavailable"));
    assert!(
        text_of(&r).contains("AGNO_CATEGORIES including infrastructure"),
        "{}",
        text_of(&r)
    );
    let r = call(
        &client,
        "agno_create_agent",
        json!({"agent_type": "code_agent", "task": "hello"}),
    )
    .await;
    assert_eq!(structured(&r)["answer"], "echo: hello", "{}", text_of(&r));
    assert!(
        model.hits().len() == 1,
        "only the code agent reached the model"
    );
}

#[tokio::test]
async fn a_templates_file_adds_an_agent_whose_tool_calls_carry_the_callers_identity() {
    use sophia_kit::{Tool, ToolOutput, Worker};
    let mut mesh = Mesh::start().await;
    let model = StandIn::start().await;
    let _intelligence = replica_taking(&mesh, Some((&model, "default")), NO_OLLAMA, 1 << 20).await;
    mesh.worker(
        Worker::new("caller-info-worker", "1.0.0").tool(
            Tool::new(
                "caller_info",
                Category::CodeGeneration,
                "Says who called and how long it has.",
            )
            .read_only()
            .handler(|call| async move {
                Ok(ToolOutput::json(json!({"principal": call.caller.principal,
                    "via": call.caller.via, "deadline_ms": call.remaining().as_millis() as u64})))
            }),
        ),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let templates = dir.path().join("templates.toml");
    std::fs::write(
        &templates,
        r#"
[[agent]]
type = "auditor_agent"
category = "code_generation"
description = "Checks who is asking"
instructions = "Call caller_info, then answer."
tools = ["caller_info"]
max_steps = 3
"#,
    )
    .unwrap();
    let stop = CancellationToken::new();
    let _agno = agno_worker::run(
        Cli {
            worker: mesh.worker_config(),
            agno: AgnoArgs {
                categories: Category::AGENTS.to_vec(),
                templates: Some(templates),
                session_ttl_s: 3600,
            },
        },
        stop.clone(),
    )
    .await
    .expect("agno-worker starts with the templates file");
    let _stop = stop.drop_guard();
    let client = mesh.client().await;
    wait_for_tool(&client, "caller_info").await;
    wait_for_tool(&client, "agno_run_agent").await;
    model.script([
        Behavior::call_tool("caller_info", json!({})),
        Behavior::Say("checked".into()),
    ]);
    let r = call(
        &client,
        "agno_run_agent",
        json!({"agent_type": "auditor_agent", "message": "who am I?"}),
    )
    .await;
    let out = structured(&r);
    assert_eq!(out["status"], "completed", "{}", text_of(&r));
    let seen: Value = serde_json::from_str(
        out["steps"][0]["result"]
            .as_str()
            .unwrap()
            .lines()
            .last()
            .unwrap(),
    )
    .unwrap();
    let principal = gateway_principal(&mesh);
    assert_eq!(seen["principal"], principal, "{seen}");
    let deadline = seen["deadline_ms"].as_u64().unwrap();
    assert!(
        deadline > 0 && deadline <= 10 * 60_000,
        "the remaining deadline travels with the tool call: {deadline}"
    );
}

/// The principal the test gateway gives its HTTP clients.
fn gateway_principal(mesh: &Mesh) -> String {
    mesh.gateway_config().principal
}
