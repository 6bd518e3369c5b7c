//! Agent runs as MCP tasks (SEP-2663), across two gateway replicas: a
//! client that declares the tasks extension gets `agno_run_agent` as a
//! task backed by the run's record on JetStream, so either replica reports
//! its progress and result; a run that reaches a destructive tool waits as
//! `input_required`, and `tasks/update` at either replica answers it, once;
//! `tasks/cancel` stops a run. A client without the extension waits for the
//! run's result, as before.
//!
//! The model is the scripted stand-in OpenAI-compatible server behind the
//! intelligence-worker; `pulumi` is the stand-in CLI; nothing is deployed.

use serde_json::{Value, json};
use sophia_gateway::GatewayHandle;
use sophia_kit::Category;
use sophia_tests::agno::{self, deploy_script};
use sophia_tests::intelligence::{self, replica_taking};
use sophia_tests::mesh::TEST_TOKEN;
use sophia_tests::openai::{Behavior, StandIn};
use sophia_tests::pulumi::{self, Setup};
use sophia_tests::stateless::Stateless;
use sophia_tests::tools::WAIT;
use sophia_tests::{Mesh, eventually};
use tokio_util::sync::CancellationToken;

const STANDIN: &str = env!("CARGO_BIN_EXE_pulumi");
const NO_OLLAMA: &str = "http://127.0.0.1:9/v1";

/// The mesh with agents, a model, Pulumi, and a second gateway replica.
struct World {
    _mesh: Mesh,
    model: StandIn,
    setup: Setup,
    /// Gateway replica A's and B's `/mcp` URLs.
    a: String,
    b: String,
    _b: (GatewayHandle, CancellationToken),
    _workers: (intelligence::Replica, pulumi::Replica, agno::Replica),
}

impl World {
    async fn start() -> Self {
        let mesh = Mesh::start().await;
        let model = StandIn::start().await;
        let intelligence =
            replica_taking(&mesh, Some((&model, "default")), NO_OLLAMA, 1 << 20).await;
        let setup = Setup::new(1);
        let pulumi = pulumi::replica(&mesh, setup.args(STANDIN, 30_000)).await;
        let agno = agno::replica(&mesh, &Category::AGENTS).await;
        let stop = CancellationToken::new();
        let handle = sophia_gateway::run(mesh.gateway_config(), stop.clone())
            .await
            .expect("a second gateway starts");
        let b = format!("http://{}/mcp", handle.http_addr);
        let world = Self {
            a: mesh.mcp_url(),
            b,
            _mesh: mesh,
            model,
            setup,
            _b: (handle, stop),
            _workers: (intelligence, pulumi, agno),
        };
        for url in [&world.a, &world.b] {
            for tool in ["agno_run_agent", "agno_get_run", "pulumi_up", "model_chat"] {
                listed(&with_tasks(), url, tool).await;
            }
        }
        world
    }

    /// Starts a run of a new `pulumi_agent` at `url` as a task; its id.
    async fn task(&self, client: &Stateless, url: &str, message: &str) -> String {
        let args = json!({"agent_type": "pulumi_agent", "message": message});
        let started = client.call(url, "agno_run_agent", args, json!({})).await;
        let created = &started["result"];
        assert_eq!(created["resultType"], "task", "{started}");
        assert_eq!(created["status"], "working", "{started}");
        created["taskId"].as_str().unwrap().to_owned()
    }

    /// How many times the stand-in CLI ran `pulumi up`.
    fn ups(&self) -> usize {
        let lines = self.setup.command_lines();
        lines.lines().filter(|l| l.starts_with("up --yes")).count()
    }
}

/// A client that answers questions and declares the tasks extension.
fn with_tasks() -> Stateless {
    Stateless::new(
        json!({"elicitation": {"form": {}},
            "extensions": {"io.modelcontextprotocol/tasks": {}}}),
        TEST_TOKEN,
    )
}

/// A person's answer to a `confirm` question.
fn confirm(yes: bool) -> Value {
    json!({"action": "accept", "content": {"confirm": yes}})
}

/// Waits until the gateway at `url` lists `tool`.
async fn listed(client: &Stateless, url: &str, tool: &str) {
    eventually(&format!("{tool} is listed at {url}"), WAIT, || async {
        let r = client.request(url, "tools/list", json!({})).await;
        let tools = r["result"]["tools"].as_array().cloned().unwrap_or_default();
        tools.iter().any(|t| t["name"] == tool).then_some(())
    })
    .await
}

/// `tasks/update` of `id` at `url` with `responses`.
async fn update(client: &Stateless, url: &str, id: &str, responses: Value) -> Value {
    client
        .request(
            url,
            "tasks/update",
            json!({"taskId": id, "inputResponses": responses}),
        )
        .await
}

/// The JSON-RPC error code and message of a refused request.
fn refused(response: &Value) -> (i64, String) {
    let error = &response["error"];
    let message = error["message"].as_str().unwrap_or_default().to_owned();
    (error["code"].as_i64().unwrap_or_default(), message)
}

/// Waits for the task to ask its question; the question's key.
async fn asked(client: &Stateless, url: &str, id: &str) -> String {
    let waiting = client
        .task_when(url, id, "the run asks", |t| t["status"] == "input_required")
        .await;
    let requests = waiting["inputRequests"].as_object().expect("inputRequests");
    assert_eq!(requests.len(), 1, "{waiting}");
    let (key, question) = requests.iter().next().unwrap();
    assert_eq!(question["method"], "elicitation/create", "{question}");
    let message = question["params"]["message"].as_str().unwrap();
    assert!(message.contains("wants to run pulumi_up"), "{message}");
    let schema = &question["params"]["requestedSchema"]["properties"]["confirm"];
    assert_eq!(schema["type"], "boolean", "{question}");
    key.clone()
}

#[tokio::test]
async fn an_agent_run_is_a_task_that_the_other_replica_follows_to_its_result() {
    let world = World::start().await;
    let person = with_tasks();
    // The model previews, then thinks until the test has seen the run work.
    let answer = CancellationToken::new();
    world.model.script([
        Behavior::call_tool("pulumi_preview", json!({"stack": "dev"})),
        Behavior::WaitFor(answer.clone()),
    ]);
    let id = world
        .task(&person, &world.a, "what would change in dev?")
        .await;

    // Replica B, which did not start it, reports the latest step.
    let working = person
        .task_when(&world.b, &id, "a step as progress", |t| {
            t["status"] == "working"
                && t["statusMessage"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("step"))
        })
        .await;
    assert!(working["pollIntervalMs"].as_u64().is_some(), "{working}");
    // A working run asks nothing: an update has nothing to answer.
    let early = update(&person, &world.b, &id, json!({"x": confirm(true)})).await;
    assert_eq!(refused(&early).0, -32602, "{early}");
    answer.cancel();

    let done = person
        .task_when(&world.b, &id, "the run's result", |t| {
            t["status"] == "completed"
        })
        .await;
    let record = &done["result"]["structuredContent"];
    assert_eq!(record["state"], "succeeded", "{done}");
    assert_eq!(done["result"]["isError"], false, "{done}");
    let result = &record["result"];
    assert_eq!(result["status"], "completed", "{done}");
    assert_eq!(
        result["answer"], "echo: what would change in dev?",
        "{done}"
    );
    assert_eq!(result["steps"][0]["tool"], "pulumi_preview", "{done}");
    let answer = done["result"]["content"][0]["text"].as_str().unwrap();
    assert_eq!(answer, "echo: what would change in dev?");

    // A client without the tasks extension waits for the answer, as before.
    world
        .model
        .script([Behavior::Say("dev is up to date".into())]);
    let plain = Stateless::new(json!({}), TEST_TOKEN);
    let args = json!({"agent_type": "pulumi_agent", "message": "status?"});
    let waited = plain
        .call(&world.a, "agno_run_agent", args, json!({}))
        .await;
    let result = &waited["result"];
    assert!(result.get("taskId").is_none(), "{waited}");
    assert_eq!(
        result["structuredContent"]["status"], "completed",
        "{waited}"
    );
    assert_eq!(result["structuredContent"]["answer"], "dev is up to date");
}

#[tokio::test]
async fn a_confirmation_asked_as_input_required_is_answered_once_at_the_other_replica() {
    let world = World::start().await;
    let person = with_tasks();
    world.model.script(deploy_script());
    let id = world.task(&person, &world.a, "deploy dev").await;
    let key = asked(&person, &world.b, &id).await;
    assert_eq!(world.ups(), 0, "nothing applied before the answer");

    // An answer under another key is not one.
    let stray = update(&person, &world.b, &id, json!({"other": confirm(true)})).await;
    assert_eq!(refused(&stray).0, -32602, "{stray}");

    let approved = update(&person, &world.b, &id, json!({&key: confirm(true)})).await;
    assert!(approved.get("error").is_none(), "{approved}");
    // The same answer again, at either replica, applies nothing more.
    for url in [&world.a, &world.b] {
        let replayed = update(&person, url, &id, json!({&key: confirm(true)})).await;
        assert_eq!(refused(&replayed).0, -32602, "{replayed}");
    }

    let done = person
        .task_when(&world.a, &id, "the deploy is done", |t| {
            t["status"] == "completed"
        })
        .await;
    let record = &done["result"]["structuredContent"];
    assert_eq!(record["state"], "succeeded", "{done}");
    assert_eq!(record["result"]["answer"], "Deployed: 1 resource created.");
    assert!(
        record["decided_by"]
            .as_str()
            .is_some_and(|d| d.ends_with("(approved)")),
        "{done}"
    );
    let up = &record["result"]["steps"][1];
    assert_eq!(up["tool"], "pulumi_up", "{done}");
    assert_eq!(up["is_error"], false, "{done}");
    assert_eq!(world.ups(), 1, "the confirmed pulumi_up ran exactly once");
    let late = update(&person, &world.a, &id, json!({&key: confirm(true)})).await;
    assert!(refused(&late).1.contains("already over"), "{late}");
    assert_eq!(world.ups(), 1);
}

#[tokio::test]
async fn a_rejected_confirmation_applies_nothing_and_forged_tasks_are_unknown() {
    let world = World::start().await;
    let person = with_tasks();
    world.model.script(deploy_script());
    let id = world.task(&person, &world.a, "deploy dev").await;
    let key = asked(&person, &world.a, &id).await;

    let rejected = update(&person, &world.b, &id, json!({&key: confirm(false)})).await;
    assert!(rejected.get("error").is_none(), "{rejected}");
    let done = person
        .task_when(&world.b, &id, "the run goes on without it", |t| {
            t["status"] == "completed"
        })
        .await;
    let steps = &done["result"]["structuredContent"]["result"]["steps"];
    assert_eq!(steps[1]["tool"], "pulumi_up", "{done}");
    assert_eq!(steps[1]["is_error"], true, "{done}");
    assert!(
        steps[1]["result"]
            .as_str()
            .unwrap()
            .contains("did not allow"),
        "{done}"
    );
    assert_eq!(world.ups(), 0, "nothing applied");

    // A forged or altered id names no task, at either replica.
    for forged in [format!("{id}x"), "rs1.e30.AAAA".to_owned()] {
        for url in [&world.a, &world.b] {
            let r = update(&person, url, &forged, json!({&key: confirm(true)})).await;
            let (code, message) = refused(&r);
            assert_eq!(code, -32602, "{r}");
            assert!(message.contains("unknown task"), "{r}");
        }
    }
    assert_eq!(world.ups(), 0);
}

#[tokio::test]
async fn tasks_cancel_at_the_other_replica_stops_a_running_agent() {
    let world = World::start().await;
    let person = with_tasks();
    // The model takes its time: the run is stopped while it waits.
    world.model.script([
        Behavior::call_tool("pulumi_preview", json!({"stack": "dev"})),
        Behavior::Stall(std::time::Duration::from_secs(120)),
    ]);
    let id = world.task(&person, &world.a, "what would change?").await;
    person
        .task_when(&world.b, &id, "the model's second turn", |t| {
            t["statusMessage"]
                .as_str()
                .is_some_and(|m| m.starts_with("step 2"))
        })
        .await;

    let ack = person
        .request(&world.b, "tasks/cancel", json!({"taskId": id}))
        .await;
    assert!(ack.get("error").is_none(), "{ack}");
    let cancelled = person
        .task_when(&world.a, &id, "the run stops", |t| t["status"] != "working")
        .await;
    assert_eq!(cancelled["status"], "cancelled", "{cancelled}");
    let again = person
        .request(&world.a, "tasks/cancel", json!({"taskId": id}))
        .await;
    assert!(refused(&again).1.contains("already over"), "{again}");
    // The model was asked twice: no turn after the cancel.
    let chats = world
        .model
        .hits()
        .iter()
        .filter(|h| h.path.ends_with("/chat/completions"))
        .count();
    assert_eq!(chats, 2, "no model turn after the cancel");
}

/// A tool's structured result, called at `url` (not as a task).
async fn listing(client: &Stateless, url: &str, tool: &str) -> Value {
    let r = client.call(url, tool, json!({}), json!({})).await;
    assert_eq!(r["result"]["isError"], false, "{r}");
    r["result"]["structuredContent"].clone()
}

#[tokio::test]
async fn a_console_lists_a_paused_run_and_its_pending_action_and_approves_it() {
    let world = World::start().await;
    let person = with_tasks();
    world.model.script(deploy_script());
    let id = world.task(&person, &world.a, "deploy dev").await;
    asked(&person, &world.a, &id).await;

    // The other replica lists what waits: the action, with the preview it
    // applies, and the run that waits on it.
    let pending = listing(&person, &world.b, "agno_list_pending").await;
    assert_eq!(pending["skipped"], 0, "{pending}");
    let actions = pending["pending"].as_array().unwrap();
    assert_eq!(actions.len(), 1, "{pending}");
    let action = &actions[0];
    assert_eq!(action["tool"], "pulumi_up", "{action}");
    assert_eq!(action["agent_type"], "pulumi_agent", "{action}");
    assert_eq!(action["arguments"]["stack"], "dev", "{action}");
    let preview_id = action["arguments"]["preview_id"].as_str().unwrap();
    let plan = action["plan"].as_str().expect("the plan it applies");
    assert!(plan.contains(preview_id), "{plan}");
    assert_eq!(action["confirm_with"], "agno_confirm");
    assert!(action["created_ms"].as_u64().is_some(), "{action}");
    let action_id = action["action_id"].as_str().unwrap().to_owned();

    let runs = listing(&person, &world.b, "agno_list_runs").await;
    let run = &runs["runs"][0];
    assert_eq!(runs["runs"].as_array().unwrap().len(), 1, "{runs}");
    assert_eq!(run["run_id"], action["run_id"], "{runs}");
    assert_eq!(run["state"], "input_required", "{run}");
    assert_eq!(run["agent_type"], "pulumi_agent", "{run}");
    assert_eq!(run["steps"][0]["tool"], "pulumi_preview", "{run}");
    assert_eq!(run["steps"][0]["ok"], true, "{run}");
    assert_eq!(run["question"]["action_id"], action_id.as_str(), "{run}");
    assert_eq!(world.ups(), 0, "nothing applied before the answer");

    // The console's Approve: agno_confirm with the listed action_id.
    let args = json!({"action_id": action_id, "approve": true});
    let approved = person.call(&world.b, "agno_confirm", args, json!({})).await;
    assert!(approved.get("error").is_none(), "{approved}");
    let done = eventually("the run is listed as done", WAIT, || async {
        let runs = listing(&person, &world.a, "agno_list_runs").await;
        let run = runs["runs"][0].clone();
        (run["state"] == "succeeded").then_some(run)
    })
    .await;
    assert_eq!(done["steps"][1]["tool"], "pulumi_up", "{done}");
    assert_eq!(done["steps"][1]["ok"], true, "{done}");
    assert_eq!(done["question"], Value::Null, "{done}");
    assert_eq!(world.ups(), 1);
    let pending = listing(&person, &world.a, "agno_list_pending").await;
    assert_eq!(pending["pending"], json!([]), "{pending}");
}
