//! A new user's first hour: the mesh as `ops/scripts/up.sh` starts it, an
//! agent run that finishes with nothing configured but a model server, the
//! seed's own commands, stdio's first tool list, and start-up against a
//! NATS that is not there.
//!
//! The model server is the OpenAI-compatible stand-in (standing in for a
//! local Ollama, which `up.sh` does not install) and Pulumi is the stand-in
//! CLI; both live in the test tree.

use std::time::Duration;

use rmcp::ServiceExt;
use rmcp::transport::{ConfigureCommandExt, TokioChildProcess};
use serde_json::{Value, json};
use sophia_tests::openai::{Behavior, StandIn};
use sophia_tests::procs::{ANY_PORT, Process};
use sophia_tests::pulumi::Setup;
use sophia_tests::tools::{call, text_of, wait_for_tool};
use sophia_tests::{DeadPort, Mesh, NatsServer, nats_server};

const STANDIN_PULUMI: &str = env!("CARGO_BIN_EXE_pulumi");
const TOKEN: &str = "first-run-token";

/// The mesh as `up.sh` starts it: a plain `nats-server`, then each service
/// as a process with the same flags (on port 0 here) and no configuration
/// files: the intelligence-worker finds its model server as it would find a
/// local Ollama.
struct UpSh {
    /// `http://127.0.0.1:<port>` of each service, by binary name.
    bases: Vec<(String, String)>,
    procs: Vec<Process>,
}

impl UpSh {
    async fn start(nats: &NatsServer, model_server: &str, pulumi: &Setup) -> Self {
        let base = |extra: Vec<(String, String)>| {
            let mut env = vec![("NATS_URL".to_owned(), nats.url())];
            env.extend(extra);
            env
        };
        let services = [
            ("agno-worker", base(vec![])),
            (
                "pulumi-worker",
                base(pulumi.env(STANDIN_PULUMI, "first-run")),
            ),
            (
                "intelligence-worker",
                base(vec![("SOPHIA_OLLAMA_URL".into(), model_server.into())]),
            ),
            ("echo-worker", base(vec![])),
            (
                "sophia-gateway",
                base(vec![("SOPHIA_GATEWAY_TOKEN".into(), TOKEN.into())]),
            ),
        ];
        let mut procs = Vec::new();
        let mut bases = Vec::new();
        for (name, env) in services {
            let args = ["--http-addr".to_owned(), ANY_PORT.to_owned()];
            let mut p = Process::spawn_with_args(name, &args, &env);
            bases.push((name.to_owned(), p.ready_at("/ready").await));
            procs.push(p);
        }
        Self { bases, procs }
    }

    fn base(&self, name: &str) -> &str {
        &self.bases.iter().find(|(n, _)| n == name).unwrap().1
    }

    fn logs(&self) -> String {
        self.procs
            .iter()
            .map(|p| format!("--- {}\n{}", p.name(), p.log()))
            .collect()
    }
}

#[tokio::test]
async fn an_infrastructure_agent_finishes_on_a_first_run_with_no_alias_configured() {
    let nats = nats_server();
    let model = StandIn::start().await;
    let pulumi = Setup::new(1);
    let mesh = UpSh::start(&nats, &model.base_url, &pulumi).await;
    model.script([
        Behavior::call_tool("pulumi_preview", json!({"stack": "dev"})),
        Behavior::Say("The preview creates 1 resource.".into()),
    ]);
    let client =
        sophia_tests::connect_http(&format!("{}/mcp", mesh.base("sophia-gateway")), TOKEN).await;
    for tool in ["agno_create_agent", "pulumi_preview", "model_chat"] {
        wait_for_tool(&client, tool).await;
    }
    let r = call(
        &client,
        "agno_create_agent",
        json!({"agent_type": "pulumi_agent", "task": "what would change on dev?"}),
    )
    .await;
    let out = r.structured_content.clone().unwrap_or_default();
    assert_eq!(
        out["status"],
        "completed",
        "{}\n{}",
        text_of(&r),
        mesh.logs()
    );
    assert_eq!(out["answer"], "The preview creates 1 resource.");
    assert_eq!(out["steps"][0]["tool"], "pulumi_preview", "{out}");
    // `default` became the model server's first model.
    let chats: Vec<Value> = model
        .hits()
        .into_iter()
        .filter(|h| h.path == "/v1/chat/completions")
        .map(|h| h.body["model"].clone())
        .collect();
    assert_eq!(chats, [json!("standin-model"), json!("standin-model")]);

    // The gateway's health names what this mesh cannot do, and only that.
    let health: Value = reqwest::get(format!("{}/health", mesh.base("sophia-gateway")))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "degraded", "{health}");
    let problems: Vec<&str> = health["degraded"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["what"].as_str().unwrap())
        .collect();
    assert_eq!(
        problems,
        ["category business_intelligence"],
        "a model and the Pulumi CLI are there; no worker serves BI yet: {health}"
    );
}

#[tokio::test]
async fn with_no_model_provider_the_error_says_how_to_get_one() {
    let mesh = Mesh::start().await;
    let _agno = sophia_tests::agno::replica(&mesh, &sophia_kit::Category::AGENTS).await;
    let client = mesh.client().await;
    wait_for_tool(&client, "agno_create_agent").await;

    // No intelligence-worker at all: that is what the error names.
    let r = call(
        &client,
        "agno_create_agent",
        json!({"agent_type": "code_agent", "task": "write a haiku"}),
    )
    .await;
    assert_eq!(r.is_error, Some(true));
    assert!(
        text_of(&r).contains("no intelligence-worker is running"),
        "{}",
        text_of(&r)
    );

    // An intelligence-worker with no config and no Ollama: the missing piece
    // is the provider, never a worker.
    let nobody = DeadPort::new();
    let _intelligence =
        sophia_tests::intelligence::replica(&mesh, None, &format!("http://{}/v1", nobody.addr()))
            .await;
    wait_for_tool(&client, "model_chat").await;
    let r = call(
        &client,
        "agno_create_agent",
        json!({"agent_type": "code_agent", "task": "write a haiku"}),
    )
    .await;
    let text = text_of(&r);
    assert_eq!(r.is_error, Some(true));
    for needed in [
        "no model provider",
        "ollama serve",
        "SOPHIA_INTELLIGENCE_CONFIG",
        "docs/intelligence-worker.md",
    ] {
        assert!(text.contains(needed), "{needed:?} in {text}");
    }
    assert!(!text.contains("no intelligence-worker"), "{text}");

    // /health says the same, beside the overall status.
    let health = sophia_tests::eventually(
        "the gateway's health reports the missing provider",
        Duration::from_secs(10),
        || async {
            let h = mesh.health().await?;
            h["degraded"]
                .as_array()?
                .iter()
                .any(|d| d["what"] == "intelligence-worker")
                .then_some(h)
        },
    )
    .await;
    assert_eq!(health["status"], "degraded");
}

#[tokio::test]
async fn a_model_server_started_after_the_worker_is_found_without_a_restart() {
    let mesh = Mesh::start().await;
    let _agno = sophia_tests::agno::replica(&mesh, &sophia_kit::Category::AGENTS).await;
    // The worker starts first: its look at the model server gets no answer.
    let (model, serve) = StandIn::bound().await;
    let _intelligence = sophia_tests::intelligence::replica(&mesh, None, &model.base_url).await;
    let client = mesh.client().await;
    wait_for_tool(&client, "model_chat").await;
    let before = call(
        &client,
        "agno_create_agent",
        json!({"agent_type": "code_agent", "task": "write a haiku"}),
    )
    .await;
    assert!(
        text_of(&before).contains("no model provider"),
        "{}",
        text_of(&before)
    );

    // Then the model server comes up (as `ollama serve` would): the next
    // run finds its model and finishes, the worker untouched.
    serve();
    model.script([Behavior::Say("An old silent pond".into())]);
    let after = call(
        &client,
        "agno_create_agent",
        json!({"agent_type": "code_agent", "task": "write a haiku"}),
    )
    .await;
    let out = after.structured_content.clone().unwrap_or_default();
    assert_eq!(out["status"], "completed", "{}", text_of(&after));
    assert_eq!(out["answer"], "An old silent pond");
}

#[tokio::test]
async fn the_seeds_commands_answer_where_the_seed_sends_them() {
    let nats = nats_server();
    let model = StandIn::start().await;
    let pulumi = Setup::new(1);
    let mesh = UpSh::start(&nats, &model.base_url, &pulumi).await;
    sophia_tests::install_crypto();
    let http = reqwest::Client::new();
    let gateway = mesh.base("sophia-gateway");

    // curl -X POST http://localhost:8090/mcp/agno/create_agent ... (the
    // agno-worker's port) and :8091/mcp/pulumi/deploy (the pulumi-worker's):
    // each points at the same path on the gateway, and the header to send.
    for (worker, path, body) in [
        (
            "agno-worker",
            "/mcp/agno/create_agent",
            json!({"agent_type": "gong_agent", "task": "analyze recent calls"}),
        ),
        (
            "pulumi-worker",
            "/mcp/pulumi/deploy",
            json!({"stack": "dev", "operation": "up"}),
        ),
    ] {
        let r = http
            .post(format!("{}{path}", mesh.base(worker)))
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 404, "{worker}{path}");
        let pointer: Value = r.json().await.unwrap();
        assert_eq!(
            pointer["gateway"],
            format!("http://127.0.0.1:8000{path}"),
            "{pointer}"
        );
        assert_eq!(
            pointer["header"],
            "Authorization: Bearer <SOPHIA_GATEWAY_TOKEN>"
        );

        // Where it points, the same command answers.
        let r = http
            .post(format!("{gateway}{path}"))
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let answer: Value = r.json().await.unwrap();
        match worker {
            // No worker serves Gong's tools: refused, and said why.
            "agno-worker" => {
                assert_eq!(status, 503, "{answer}");
                assert!(answer.to_string().contains("gong_list_calls"), "{answer}");
            }
            _ => {
                assert_eq!(status, 200, "{answer}");
                assert_eq!(answer["status"], "confirmation_required", "{answer}");
            }
        }
    }
    // curl http://localhost:8000/api/v1/agents/status
    let status: Value = http
        .get(format!("{gateway}/api/v1/agents/status"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        status["categories"]["business_intelligence"],
        json!({"agents": 0, "runs_in_progress": 0}),
        "the refused run left no agent behind: {status}"
    );
}

#[tokio::test]
async fn stdios_first_tool_list_has_every_worker_that_joined_while_it_was_asked() {
    let mut mesh = Mesh::without_gateway();
    let command = tokio::process::Command::new(sophia_tests::procs::binary("sophia-gateway"))
        .configure(|c| {
            c.arg("--stdio")
                .env("NATS_URL", mesh.nats.url())
                .env_remove("SOPHIA_GATEWAY_TOKEN");
        });
    let (transport, _stderr) = TokioChildProcess::builder(command)
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn sophia-gateway --stdio");
    let client = ().serve(transport).await.expect("initialize over stdio");

    // The first worker joins; the client asks for the tools at once, while
    // the other two are still starting, one after the other.
    mesh.worker(echo_worker::echo_worker()).await;
    let listing = tokio::spawn({
        let peer = client.peer().clone();
        async move { peer.list_all_tools().await }
    });
    let pulumi = Setup::new(1);
    let _pulumi = sophia_tests::pulumi::replica(&mesh, pulumi.args(STANDIN_PULUMI, 30_000)).await;
    let _intelligence =
        sophia_tests::intelligence::replica(&mesh, None, "http://127.0.0.1:9/v1").await;

    let tools = listing.await.unwrap().expect("tools/list");
    let names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    for (worker, tool) in [
        ("echo-worker", "echo"),
        ("pulumi-worker", "pulumi_preview"),
        ("intelligence-worker", "model_chat"),
    ] {
        assert!(
            names.contains(&tool),
            "the first tools/list lacks {worker}'s {tool}: {names:?}"
        );
    }
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn ending_a_session_answers_204() {
    let mut mesh = Mesh::start().await;
    mesh.worker(echo_worker::echo_worker()).await;
    let mut session =
        sophia_tests::raw::RawSession::new(&mesh.mcp_url(), sophia_tests::mesh::TEST_TOKEN);
    session.initialize().await;
    assert_eq!(session.delete().await, 204);
}

#[tokio::test]
async fn starting_against_a_dead_nats_names_the_url_and_stops_at_once_on_a_signal() {
    let nobody = DeadPort::new();
    let url = format!("nats://{}", nobody.addr());
    for service in ["agno-worker", "sophia-gateway"] {
        let env = [
            ("NATS_URL".to_owned(), url.clone()),
            ("SOPHIA_GATEWAY_TOKEN".to_owned(), TOKEN.to_owned()),
        ];
        let args = ["--http-addr".to_owned(), ANY_PORT.to_owned()];
        let mut p = Process::spawn_with_args(service, &args, &env);
        let line = sophia_tests::eventually(
            "a warning naming the URL",
            Duration::from_secs(20),
            || async {
                p.log()
                    .lines()
                    .find(|l| l.contains("cannot reach NATS"))
                    .map(str::to_owned)
            },
        )
        .await;
        assert!(line.contains("WARN"), "{service}: {line}");
        assert!(line.contains(&url), "{service}: {line}");
        assert!(
            !p.log().contains('\x1b'),
            "{service}: no colour codes in a log file:\n{}",
            p.log()
        );
        assert!(
            !p.log().contains("IO error"),
            "{service}: the client library's own retry noise stays out:\n{}",
            p.log()
        );
        assert!(
            p.stop(),
            "{service} exits by itself on SIGINT while waiting for NATS:\n{}",
            p.log()
        );
    }
}
