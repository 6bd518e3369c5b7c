//! The intelligence-worker on the mesh: per-model subjects reach only the
//! replicas that serve the model, MCP tools through the gateway stream and
//! account usage, and an unconfigured worker says what to set.

use std::time::Duration;

use serde_json::{Value, json};
use sophia_kit::bus::{Bus, CallSpec, Target};
use sophia_proto::{Caller, Category, headers, subject};
use sophia_tests::intelligence::replica;
use sophia_tests::openai::StandIn;
use sophia_tests::tools::{WAIT, call, call_with_progress, error_code, text_of, wait_for_tool};
use sophia_tests::{Mesh, eventually};
use tokio_util::sync::CancellationToken;

const NO_OLLAMA: &str = "http://127.0.0.1:9/v1";

async fn bus_chat(
    bus: &Bus,
    model: &str,
    text: &str,
) -> Result<sophia_kit::bus::Reply, sophia_kit::bus::CallError> {
    let spec = CallSpec {
        tool: "chat",
        target: Target::Subject {
            subject: subject::inference(model, "chat"),
            category: Category::Inference,
        },
        args: json!({"messages": [{"role": "user", "content": text}]}),
        timeout: Duration::from_secs(10),
        caller: Caller {
            principal: "agent-7".into(),
            session: None,
            via: "test".into(),
            ..Default::default()
        },
        trace: headers::Context::default(),
        liveness: Default::default(),
    };
    bus.call(spec, None, &CancellationToken::new()).await
}

#[tokio::test]
async fn each_model_is_served_only_by_the_replicas_that_have_it() {
    let mesh = Mesh::without_gateway();
    let (cloud, gpu) = (StandIn::start().await, StandIn::start().await);
    let _r1 = replica(&mesh, Some((&cloud, "claude")), NO_OLLAMA).await;
    let _r2 = replica(&mesh, Some((&gpu, "local")), NO_OLLAMA).await;
    let bus = Bus::start(mesh.nats_client().await, "test-agent".into(), 1 << 20)
        .await
        .unwrap();

    for _ in 0..5 {
        let local = bus_chat(&bus, "local", "on the GPU").await.unwrap();
        assert_eq!(text_of_output(&local.output), "echo: on the GPU");
        let claude = bus_chat(&bus, "claude", "in the cloud").await.unwrap();
        assert_eq!(
            claude.output.structured.as_ref().unwrap()["provider"],
            "p-claude"
        );
    }
    assert_eq!(
        gpu.hits().len(),
        5,
        "every `local` call reached the GPU replica's provider"
    );
    assert_eq!(cloud.hits().len(), 5);
    assert!(gpu.hits().iter().all(|h| h.body["model"] == "local-model"));

    // Nobody serves `gpt-9`: NATS says so at once.
    let err = bus_chat(&bus, "gpt-9", "x").await.unwrap_err();
    assert!(
        matches!(err, sophia_kit::bus::CallError::NoWorker { .. }),
        "{err}"
    );
}

fn text_of_output(o: &sophia_proto::ToolOutput) -> String {
    o.content
        .iter()
        .map(|c| match c {
            sophia_proto::Content::Text { text } => text.clone(),
            _ => String::new(),
        })
        .collect()
}

#[tokio::test]
async fn cursor_can_chat_through_the_gateway_with_streamed_progress_and_usage() {
    let mesh = Mesh::start().await;
    let cloud = StandIn::start().await;
    let r = replica(&mesh, Some((&cloud, "claude")), NO_OLLAMA).await;
    let client = mesh.client().await;
    wait_for_tool(&client, "model_chat").await;
    let names: Vec<String> = client
        .list_all_tools()
        .await
        .unwrap()
        .iter()
        .map(|t| t.name.to_string())
        .collect();
    assert_eq!(
        names,
        ["list_models", "model_chat", "model_embeddings"],
        "bus endpoints are not MCP tools"
    );

    let args = json!({"model": "claude", "messages": [{"role": "user", "content": "tell me three words"}]});
    let (result, progress) = call_with_progress(&client, "model_chat", args).await;
    assert_eq!(text_of(&result), "echo: tell me three words");
    let structured = result.structured_content.clone().unwrap();
    assert_eq!(structured["usage"]["input_tokens"], 4);
    assert_eq!(structured["usage"]["output_tokens"], 5);
    let cost = structured["usage"]["cost_usd"].as_f64().unwrap();
    assert!((cost - (4.0 * 1.0 + 5.0 * 2.0) / 1e6).abs() < 1e-12);

    // The words arrived as progress, in order, before the result.
    let words: String = progress.iter().filter_map(|p| p.message.clone()).collect();
    assert_eq!(words, "echo: tell me three words");

    // Usage is accounted per model and principal.
    let metrics = sophia_tests::metrics_text(r.handle.http_addr).await;
    assert!(
        metrics.contains(r#"sophia_inference_tokens_total{model="claude",principal="local",direction="output"} 5"#),
        "{metrics}"
    );
    assert!(metrics.contains(
        r#"sophia_inference_requests_total{model="claude",provider="p-claude",outcome="ok"} 1"#
    ));
    assert!(metrics.contains("sophia_inference_cost_usd_total"));

    let embedded = call(
        &client,
        "model_embeddings",
        json!({"model": "claude", "input": ["one two", "three"]}),
    )
    .await;
    assert_eq!(embedded.is_error, Some(false), "{}", text_of(&embedded));
    let data = &embedded.structured_content.unwrap()["response"]["data"];
    assert_eq!(data.as_array().unwrap().len(), 2);
    assert_eq!(cloud.hits().last().unwrap().path, "/v1/embeddings");
}

#[tokio::test]
async fn list_models_gathers_every_replica_with_health() {
    let mesh = Mesh::start().await;
    let (cloud, gpu) = (StandIn::start().await, StandIn::start().await);
    let _r1 = replica(&mesh, Some((&cloud, "claude")), NO_OLLAMA).await;
    let _r2 = replica(&mesh, Some((&gpu, "local")), NO_OLLAMA).await;
    let client = mesh.client().await;
    wait_for_tool(&client, "list_models").await;
    let models = eventually("both replicas answer", WAIT, || async {
        let r = call(&client, "list_models", json!({})).await;
        let models = r.structured_content?["models"].as_array()?.clone();
        (models.len() == 2).then_some(models)
    })
    .await;
    let names: Vec<&str> = models.iter().map(|m| m["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["claude", "local"]);
    assert_eq!(
        models[1]["served_by"][0]["providers"][0]["provider"],
        "p-local"
    );
    assert!(
        models
            .iter()
            .all(|m| m["healthy"] == true && m["replicas"] == 1),
        "{models:?}"
    );
}

#[tokio::test]
async fn without_a_provider_the_worker_starts_and_says_what_to_set() {
    let mesh = Mesh::start().await;
    let r = replica(&mesh, None, NO_OLLAMA).await;
    let client = mesh.client().await;
    wait_for_tool(&client, "model_chat").await;
    assert_eq!(
        reqwest::get(format!("http://{}/ready", r.handle.http_addr))
            .await
            .unwrap()
            .status(),
        200
    );
    let listed = call(&client, "list_models", json!({})).await;
    assert!(
        text_of(&listed).starts_with("no models"),
        "{}",
        text_of(&listed)
    );
    let chat = call(
        &client,
        "model_chat",
        json!({"model": "claude", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(chat.is_error, Some(true));
    assert!(
        text_of(&chat).contains("SOPHIA_INTELLIGENCE_CONFIG"),
        "{}",
        text_of(&chat)
    );
}

#[tokio::test]
async fn a_local_ollama_is_the_default_when_there_is_no_config() {
    let mesh = Mesh::without_gateway();
    let ollama = StandIn::start().await;
    let _r = replica(&mesh, None, &ollama.base_url).await;
    let bus = Bus::start(mesh.nats_client().await, "agent".into(), 1 << 20)
        .await
        .unwrap();
    let reply = bus_chat(&bus, "standin-model", "local please")
        .await
        .unwrap();
    assert_eq!(reply.output.structured.unwrap()["provider"], "ollama");
}

#[tokio::test]
async fn unknown_models_and_oversized_prompts_are_refused_clearly() {
    let mesh = Mesh::start().await;
    let cloud = StandIn::start().await;
    let _r = replica(&mesh, Some((&cloud, "claude")), NO_OLLAMA).await;
    let client = mesh.client().await;
    wait_for_tool(&client, "model_chat").await;

    let unknown = call(
        &client,
        "model_chat",
        json!({"model": "gpt-9", "messages": [{"role": "user", "content": "x"}]}),
    )
    .await;
    assert_eq!(error_code(&unknown).as_deref(), Some("invalid_arguments"));
    assert!(
        text_of(&unknown).contains("no intelligence replica serves model \"gpt-9\""),
        "{}",
        text_of(&unknown)
    );

    let huge: Value =
        json!({"model": "claude", "messages": [{"role": "user", "content": "x".repeat(10_000)}]});
    let oversized = call(&client, "model_chat", huge).await;
    assert_eq!(error_code(&oversized).as_deref(), Some("invalid_arguments"));
    assert!(
        text_of(&oversized).contains("SOPHIA_MAX_PROMPT_BYTES"),
        "{}",
        text_of(&oversized)
    );
    assert!(cloud.hits().is_empty(), "nothing reached the provider");
}

#[tokio::test]
async fn tools_go_to_the_provider_and_tool_calls_come_back_over_the_bus() {
    let mesh = Mesh::without_gateway();
    let cloud = StandIn::start().await;
    cloud.script([sophia_tests::openai::Behavior::ToolCalls]);
    let _r = replica(&mesh, Some((&cloud, "claude")), NO_OLLAMA).await;
    let bus = Bus::start(mesh.nats_client().await, "agent".into(), 1 << 20)
        .await
        .unwrap();
    let tools = json!([{"type": "function", "function": {"name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]);
    let spec = CallSpec {
        tool: "chat",
        target: Target::Subject {
            subject: subject::inference("claude", "chat"),
            category: Category::Inference,
        },
        args: json!({"messages": [{"role": "user", "content": "weather in Paris?"}], "tools": tools}),
        timeout: Duration::from_secs(10),
        caller: Caller::default(),
        trace: headers::Context::default(),
        liveness: Default::default(),
    };
    let reply = bus
        .call(spec, None, &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(
        cloud.hits()[0].body["tools"],
        tools,
        "the tool definitions reached the provider"
    );
    let structured = reply.output.structured.clone().unwrap();
    let calls = &structured["response"]["choices"][0]["message"]["tool_calls"];
    assert_eq!(calls[0]["function"]["name"], "get_weather");
    assert_eq!(calls[0]["function"]["arguments"], "{\"city\":\"Paris\"}");
    assert!(
        text_of_output(&reply.output).contains("get_weather"),
        "the content shows the tool calls"
    );
}
