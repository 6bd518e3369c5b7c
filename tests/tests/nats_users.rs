//! Each service's own NATS user of `ops/nats/nats.conf`, on a real
//! `nats-server` running that file: what a user may not do, the server
//! refuses (`-ERR 'Permissions Violation for Subscription to "..."'`, which
//! async-nats reports as a `ServerError` event); what it needs reaches it.
//! Then the services themselves serve calls through the gateway, each
//! logged in as its own user, with no violation in the server's log.

use std::time::Duration;

use async_nats::{ConnectOptions, Event, ServerError};
use futures::StreamExt;
use rmcp::model::ReadResourceRequestParams;
use serde_json::{Value, json};
use sophia_kit::Category;
use sophia_tests::bridge::{RunningBridge, conformance_server};
use sophia_tests::nats::{NatsServer, password, secured, users};
use sophia_tests::pulumi::Setup;
use sophia_tests::tools::{call, text_of, wait_for_tool};
use sophia_tests::{Mesh, agno, gong, intelligence, openai, pulumi};
use tokio::sync::mpsc;

/// How long the server has to refuse, or to deliver.
const WAIT: Duration = Duration::from_secs(5);
const PULUMI_STANDIN: &str = env!("CARGO_BIN_EXE_pulumi");
/// A model URL where nothing answers: the intelligence-worker uses only the
/// stand-in provider it is given.
const NO_OLLAMA: &str = "http://127.0.0.1:9/v1";

fn tool(category: &str, name: &str) -> String {
    format!("sophia.v1.tools.{category}.{name}")
}

/// A client logged in as one user of `nats.conf`, and what the server
/// refused it.
struct LoggedIn {
    user: String,
    client: async_nats::Client,
    refusals: mpsc::UnboundedReceiver<String>,
}

async fn login(nats: &NatsServer, user: &str) -> LoggedIn {
    let (tx, refusals) = mpsc::unbounded_channel();
    let client = ConnectOptions::with_user_and_password(user.into(), password(user))
        .event_callback(move |event| {
            let tx = tx.clone();
            async move {
                if let Event::ServerError(ServerError::Other(message)) = event {
                    let _ = tx.send(message);
                }
            }
        })
        .connect(nats.url())
        .await
        .unwrap_or_else(|e| panic!("{user} logs in: {e}"));
    LoggedIn {
        user: user.to_owned(),
        client,
        refusals,
    }
}

impl LoggedIn {
    /// Returns once the server has processed everything this client sent
    /// before. `flush` only writes the client's buffer; a request the server
    /// itself answers (JetStream's account info, which every user may ask
    /// for) is a round trip on this connection.
    async fn synced(&self) {
        self.client
            .request("$JS.API.INFO", "".into())
            .await
            .unwrap_or_else(|e| panic!("{}: the server answers: {e}", self.user));
    }

    /// Waits for the server to refuse `what` on `subject`, or panics.
    async fn refused(&mut self, what: &str, subject: &str) {
        let expected = format!("{what} to \"{subject}\"");
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.refusals.recv()).await {
                Ok(Some(m)) if m.to_lowercase().contains(&expected.to_lowercase()) => return,
                Ok(Some(_)) => continue,
                _ => panic!("{} was not refused a {expected}", self.user),
            }
        }
    }

    /// Subscribes to `subject` and waits for the server to refuse it.
    async fn cannot_subscribe(&mut self, subject: &str) {
        let _sub = self.client.subscribe(subject.to_owned()).await.unwrap();
        self.synced().await;
        self.refused("Subscription", subject).await;
    }

    /// Publishes to `subject` and waits for the server to refuse it.
    async fn cannot_publish(&mut self, subject: &str) {
        self.client
            .publish(subject.to_owned(), "x".into())
            .await
            .unwrap();
        self.synced().await;
        self.refused("Publish", subject).await;
    }

    /// Serves `subject` as a worker would (queue group `sophia`), and shows
    /// that a request `caller` publishes there reaches it.
    async fn serves_from(&mut self, caller: &LoggedIn, subject: &str, request: &str) {
        let mut sub = self
            .client
            .queue_subscribe(subject.to_owned(), "sophia".into())
            .await
            .unwrap();
        self.synced().await;
        caller
            .client
            .publish(request.to_owned(), "x".into())
            .await
            .unwrap();
        caller.synced().await;
        let got = tokio::time::timeout(WAIT, sub.next()).await;
        assert!(
            matches!(got, Ok(Some(_))),
            "{} → {}: {request} did not reach {subject}; refused: {:?}",
            caller.user,
            self.user,
            self.refusals.try_recv().ok()
        );
    }
}

#[tokio::test]
async fn only_the_intelligence_user_may_serve_or_read_model_inference() {
    let nats = secured();
    let all = users();
    assert!(all.len() >= 12, "a user per service: {all:?}");
    for user in all.iter().filter(|u| *u != "intelligence") {
        let mut them = login(&nats, user).await;
        them.cannot_subscribe("sophia.v1.infer.>").await;
        them.cannot_subscribe("sophia.v1.infer.default.chat").await;
        them.cannot_subscribe(&tool("inference", "model_chat"))
            .await;
    }
    let mut intelligence = login(&nats, "intelligence").await;
    let agno = login(&nats, "agno").await;
    intelligence
        .serves_from(&agno, "sophia.v1.infer.>", "sophia.v1.infer.default.chat")
        .await;
}

#[tokio::test]
async fn the_pulumi_user_serves_its_own_tools_and_calls_nothing() {
    let nats = secured();
    let mut pulumi = login(&nats, "pulumi").await;
    for subject in [
        tool("business_intelligence", "gong_list_calls"),
        tool("code_generation", "echo"),
        // Another service's tool in its own category, and the agents' runs.
        tool("infrastructure", "docker_list_containers"),
        tool("infrastructure", "agno_run"),
        "sophia.v1.tools.infrastructure.>".into(),
        "sophia.v1.tools.>".into(),
    ] {
        pulumi.cannot_subscribe(&subject).await;
    }
    pulumi
        .cannot_publish(&tool("business_intelligence", "gong_list_calls"))
        .await;
    pulumi.cannot_publish("sophia.v1.infer.default.chat").await;
    let gateway = login(&nats, "gateway").await;
    let up = tool("infrastructure", "pulumi_up");
    pulumi.serves_from(&gateway, &up, &up).await;
}

#[tokio::test]
async fn the_intelligence_user_cannot_serve_infrastructure_tools() {
    let nats = secured();
    let mut intelligence = login(&nats, "intelligence").await;
    intelligence
        .cannot_subscribe(&tool("infrastructure", "pulumi_up"))
        .await;
    intelligence
        .cannot_subscribe("sophia.v1.tools.infrastructure.>")
        .await;
    let gateway = login(&nats, "gateway").await;
    let list = tool("inference", "list_models");
    intelligence.serves_from(&gateway, &list, &list).await;
}

#[tokio::test]
async fn the_gateway_calls_tools_but_cannot_pose_as_a_worker() {
    let nats = secured();
    let mut gateway = login(&nats, "gateway").await;
    gateway.cannot_subscribe("sophia.v1.tools.>").await;
    gateway
        .cannot_subscribe(&tool("infrastructure", "pulumi_up"))
        .await;
    gateway.cannot_subscribe("sophia.v1.mcp.bridge-git.>").await;
    gateway.cannot_subscribe("$SRV.PING").await;
    // It calls models through the inference tools, never their subjects.
    gateway.cannot_publish("sophia.v1.infer.default.chat").await;
    let mut gong = login(&nats, "gong").await;
    let calls = tool("business_intelligence", "gong_list_calls");
    gong.serves_from(&gateway, &calls, &calls).await;
}

#[tokio::test]
async fn bridges_serve_their_category_but_not_the_native_workers_tools() {
    let nats = secured();
    let gateway = login(&nats, "gateway").await;
    let mut bi = login(&nats, "bridge_bi").await;
    for subject in [
        tool("business_intelligence", "gong_get_transcript"),
        tool("business_intelligence", "agno_run"),
        tool("infrastructure", "docker_list_containers"),
        "sophia.v1.mcp.bridge-git.>".into(),
    ] {
        bi.cannot_subscribe(&subject).await;
    }
    bi.cannot_publish(&tool("infrastructure", "pulumi_up"))
        .await;
    let search = tool("business_intelligence", "hubspot-search-objects");
    bi.serves_from(&gateway, &search, &search).await;
    let read = "sophia.v1.mcp.bridge-hubspot.resources_read";
    bi.serves_from(&gateway, read, read).await;

    let mut infra = login(&nats, "bridge_infra").await;
    infra
        .cannot_subscribe(&tool("infrastructure", "pulumi_up"))
        .await;
    let mut code = login(&nats, "bridge_code").await;
    code.cannot_subscribe(&tool("infrastructure", "docker_list_containers"))
        .await;
    let logs = tool("infrastructure", "docker_container_logs");
    infra.serves_from(&gateway, &logs, &logs).await;
}

#[tokio::test]
async fn an_agent_user_of_one_category_calls_only_that_categorys_tools() {
    let nats = secured();
    let mut agno_bi = login(&nats, "agno_bi").await;
    agno_bi
        .cannot_publish(&tool("infrastructure", "pulumi_up"))
        .await;
    agno_bi
        .cannot_subscribe(&tool("infrastructure", "agno_run"))
        .await;
    let mut gong = login(&nats, "gong").await;
    let calls = tool("business_intelligence", "gong_list_calls");
    gong.serves_from(&agno_bi, &calls, &calls).await;
    // Any replica's front door forwards a run to the agent's category.
    let agno_infra = login(&nats, "agno_infra").await;
    let run = tool("business_intelligence", "agno_run");
    agno_bi.serves_from(&agno_infra, &run, &run).await;
}

fn structured(r: &rmcp::model::CallToolResult) -> Value {
    r.structured_content.clone().unwrap_or(Value::Null)
}

#[tokio::test]
async fn the_services_serve_calls_through_the_gateway_each_as_its_own_user() {
    // The gateway as `gateway`, and each worker as its own user
    // (`Mesh::worker_config_as`, through the harness's replicas).
    let mut mesh = Mesh::least_privilege().await;
    let setup = Setup::new(0);
    let _pulumi = pulumi::replica(&mesh, setup.args(PULUMI_STANDIN, 30_000)).await;
    let model = openai::StandIn::start().await;
    let _intelligence = intelligence::replica(&mesh, Some((&model, "default")), NO_OLLAMA).await;
    let gong_api = gong::StandIn::start().await;
    let credentials = Some((gong::ACCESS_KEY, gong::ACCESS_KEY_SECRET));
    let _gong = gong::replica(&mesh, &gong_api.base_url, credentials).await;
    let _agents = agno::replica(&mesh, &[Category::CodeGeneration]).await;
    // A server of the code catalog's name, so bridge_code may offer it.
    let mut memory = conformance_server();
    memory.name = "memory".into();
    let _bridge =
        RunningBridge::start_with(mesh.worker_config_as("bridge_code"), vec![memory]).await;
    let echo = mesh.worker_config_as("worker");
    mesh.worker_with(echo_worker::echo_worker(), echo).await;
    let client = mesh.client().await;
    for name in [
        "pulumi_up",
        "model_chat",
        "gong_list_calls",
        "agno_create_agent",
        "test_simple_text",
        "echo",
    ] {
        wait_for_tool(&client, name).await;
    }

    let preview = call(&client, "pulumi_preview", json!({"stack": "dev"})).await;
    let id = structured(&preview)["preview_id"].clone();
    assert!(id.is_string(), "{}", text_of(&preview));
    let up = call(
        &client,
        "pulumi_up",
        json!({"stack": "dev", "preview_id": id}),
    )
    .await;
    assert_eq!(structured(&up)["state"], "succeeded", "{}", text_of(&up));

    let chat = call(
        &client,
        "model_chat",
        json!({"model": "default", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(
        structured(&chat)["response"]["choices"][0]["message"]["content"],
        "echo: hi",
        "{}",
        text_of(&chat)
    );

    let march = json!({"from": "2025-03-01T00:00:00Z", "to": "2025-04-01T00:00:00Z"});
    let calls = call(&client, "gong_list_calls", march).await;
    assert_eq!(calls.is_error, Some(false), "{}", text_of(&calls));

    let agent = call(
        &client,
        "agno_create_agent",
        json!({"agent_type": "code_agent", "task": "hello"}),
    )
    .await;
    assert_eq!(
        structured(&agent)["answer"],
        "echo: hello",
        "{}",
        text_of(&agent)
    );

    let simple = call(&client, "test_simple_text", json!({})).await;
    assert_ne!(simple.is_error, Some(true), "{}", text_of(&simple));
    let read = client
        .read_resource(ReadResourceRequestParams::new("test://static-text"))
        .await
        .expect("the bridge serves its server's resource");
    assert!(!read.contents.is_empty());

    let echoed = call(&client, "echo", json!({"text": "as worker"})).await;
    assert_eq!(text_of(&echoed), "as worker");

    assert_eq!(
        mesh.nats.violations(),
        Vec::<String>::new(),
        "every service stays within its user"
    );
}
