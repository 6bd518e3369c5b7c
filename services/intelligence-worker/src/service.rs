//! The worker on the bus.
//!
//! - **Bus API for agents**: for every model or alias this replica serves,
//!   `sophia.v1.infer.<model>.chat` and `.embeddings` (queue group `sophia`),
//!   taking the OpenAI request body as the `ToolRequest`'s `args`. Streamed
//!   text arrives as `Progress` messages when the caller asks for progress.
//!   Replicas subscribe only to their own models, so a call for `local`
//!   reaches only the replicas beside the GPU hosts that serve it.
//! - **MCP tools for Cursor** (category `inference`): `model_chat`,
//!   `model_embeddings` and `list_models`. The first two forward over the bus
//!   to the model's subject, so they reach the right replica wherever the
//!   tool call landed.
//! - **`sophia.v1.infer.models`**: every replica answers with its models and
//!   their health; `list_models` gathers the answers.

use opentelemetry::KeyValue;
use sophia_kit::telemetry::{Span, SpanKind, attr};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};
use sophia_kit::bus::{CallError, CallSpec};
use sophia_kit::{Call, Category, ErrorCode, Tool, ToolOutput, WireError, Worker};
use sophia_proto::subject;

use crate::chat::Delta;
use crate::metrics::{Accounted, InferenceMetrics};
use crate::router::{BreakerState, Operation, RouteError, Routed, Router};

/// Limits on what callers may send.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// The largest `messages` (or embeddings `input`), as JSON bytes.
    pub max_prompt_bytes: usize,
}

/// How long `list_models` waits for replicas to answer.
const GATHER_WINDOW: Duration = Duration::from_millis(300);

/// The worker: bus endpoints for `router`'s models, and the MCP tools.
pub fn worker(router: Arc<Router>, metrics: InferenceMetrics, limits: Limits) -> Worker {
    let registered = metrics.clone();
    let mut w = Worker::new("intelligence-worker", env!("CARGO_PKG_VERSION"))
        .description("Sophia Mesh model inference routing")
        .metrics(move |r| registered.register(r));
    for (i, model) in router.config().model_names().into_iter().enumerate() {
        for op in ["chat", "embeddings"] {
            w = w.tool(endpoint(
                i,
                &model,
                op,
                router.clone(),
                metrics.clone(),
                limits,
            ));
        }
    }
    w.tool(model_chat_tool(router.clone()))
        .tool(model_embeddings_tool(router.clone()))
        .tool(list_models_tool())
}

fn endpoint(
    i: usize,
    model: &str,
    op: &'static str,
    router: Arc<Router>,
    metrics: InferenceMetrics,
    limits: Limits,
) -> Tool {
    let model = model.to_owned();
    Tool::new(
        format!("infer-{i}-{op}"),
        Category::Inference,
        format!("{op} with {model}"),
    )
    .on_subject(subject::inference(&model, op))
    .unannounced()
    .handler(move |call| {
        let (router, metrics, model) = (router.clone(), metrics.clone(), model.clone());
        async move { serve(&call, &router, &metrics, &model, op, limits).await }
    })
}

fn check_prompt(args: &Value, op: &str, limits: Limits) -> Result<(), WireError> {
    let (key, what) = if op == "chat" {
        ("messages", "messages")
    } else {
        ("input", "input")
    };
    let part = args
        .get(key)
        .ok_or_else(|| WireError::invalid_arguments(format!("the request has no `{what}`")))?;
    if op == "chat" && part.as_array().is_none_or(|m| m.is_empty()) {
        return Err(WireError::invalid_arguments(
            "`messages` must be a non-empty array",
        ));
    }
    let size = serde_json::to_vec(part).map(|v| v.len()).unwrap_or(0);
    if size > limits.max_prompt_bytes {
        return Err(WireError::invalid_arguments(format!(
            "the prompt is {size} bytes, over this worker's limit of {} bytes \
             (SOPHIA_MAX_PROMPT_BYTES); shorten it",
            limits.max_prompt_bytes
        )));
    }
    Ok(())
}

/// Serves one bus inference request with the local router.
async fn serve(
    call: &Call,
    router: &Router,
    metrics: &InferenceMetrics,
    model: &str,
    op: &str,
    limits: Limits,
) -> Result<ToolOutput, WireError> {
    check_prompt(&call.args, op, limits)?;
    // The model call, by the gen_ai conventions: operation, model, provider,
    // tokens. Never the prompt or the answer.
    let span = Span::start(
        format!("{op} {model}"),
        SpanKind::Client,
        &call.trace,
        vec![
            KeyValue::new(attr::GEN_AI_OPERATION, op.to_owned()),
            KeyValue::new(attr::GEN_AI_REQUEST_MODEL, model.to_owned()),
        ],
    );
    let deadline = call.deadline;
    let outcome = if op == "embeddings" {
        router
            .call(model, Operation::Embeddings(&call.args), deadline)
            .await
    } else if call.wants_progress() || call.args["stream"] == true {
        stream(call, router, model).await
    } else {
        router
            .call(model, Operation::Chat(&call.args), deadline)
            .await
    };
    let (provider, code, usage, cost) = match &outcome {
        Ok(r) => (r.provider.as_str(), "ok", r.usage, r.cost_usd),
        Err(e) => ("", route_code(e).as_str(), None, None),
    };
    match &outcome {
        Ok(r) => {
            span.set(KeyValue::new(attr::GEN_AI_PROVIDER, r.provider.clone()));
            span.set(KeyValue::new(attr::GEN_AI_RESPONSE_MODEL, r.model.clone()));
            if let Some(u) = r.usage {
                span.set(KeyValue::new(
                    attr::GEN_AI_INPUT_TOKENS,
                    u.input_tokens as i64,
                ));
                span.set(KeyValue::new(
                    attr::GEN_AI_OUTPUT_TOKENS,
                    u.output_tokens as i64,
                ));
            }
        }
        Err(_) => span.fail(code, "no provider answered"),
    }
    metrics.record(Accounted {
        model,
        provider,
        outcome: code,
        principal: &call.caller.principal,
        usage,
        cost_usd: cost,
    });
    match outcome {
        Ok(routed) => Ok(output(op, routed)),
        Err(e) => Err(WireError::new(route_code(&e), e.to_string())),
    }
}

/// A streamed chat: deltas go out as progress while the router works.
async fn stream(call: &Call, router: &Router, model: &str) -> Result<Routed, RouteError> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Delta>();
    let mut sink = move |d: Delta| {
        let _ = tx.send(d);
    };
    let routed = router.call(
        model,
        Operation::ChatStream(&call.args, &mut sink),
        call.deadline,
    );
    tokio::pin!(routed);
    let mut relayed = 0u64;
    let mut relay = async |d: Delta| {
        relayed += 1;
        let text = match d {
            Delta::Text(t) => t,
            Delta::ToolCall {
                index,
                name,
                arguments,
            } => match name {
                Some(n) => format!("[tool call {index}: {n}] {arguments}"),
                None => arguments,
            },
        };
        call.progress(relayed as f64, None, Some(text)).await;
    };
    let result = loop {
        tokio::select! {
            r = &mut routed => break r,
            Some(d) = rx.recv() => relay(d).await,
        }
    };
    while let Ok(d) = rx.try_recv() {
        relay(d).await;
    }
    result
}

fn route_code(e: &RouteError) -> ErrorCode {
    match e {
        RouteError::NoProviders | RouteError::NoModel { .. } | RouteError::Exhausted { .. } => {
            ErrorCode::Unavailable
        }
        RouteError::UnknownModel { .. } | RouteError::Rejected(_) => ErrorCode::InvalidArguments,
        RouteError::FailedMidStream(_) => ErrorCode::Failed,
    }
}

/// The result: the assistant's text (or tool calls) as content, and the full
/// response with provider, usage and cost as structured output.
fn output(op: &str, r: Routed) -> ToolOutput {
    let text = if op == "embeddings" {
        let data = r.response["data"].as_array().map(Vec::len).unwrap_or(0);
        format!("{data} embeddings from {} ({})", r.model, r.provider)
    } else {
        let message = &r.response["choices"][0]["message"];
        match message.get("tool_calls").filter(|t| t.is_array()) {
            Some(calls) => calls.to_string(),
            None => message["content"].as_str().unwrap_or("").to_owned(),
        }
    };
    let usage = r.usage.map(|u| {
        json!({"input_tokens": u.input_tokens, "output_tokens": u.output_tokens, "cost_usd": r.cost_usd})
    });
    let mut out = ToolOutput::text(text);
    out.structured = Some(json!({
        "response": r.response,
        "provider": r.provider,
        "model": r.model,
        "usage": usage,
        "attempts": r.attempts,
    }));
    out
}

fn chat_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "model": {"type": "string", "description": "A model alias or name; see list_models"},
            "messages": {"type": "array", "minItems": 1, "items": {"type": "object",
                "properties": {"role": {"type": "string"}, "content": {}}, "required": ["role"]}},
            "tools": {"type": "array", "items": {"type": "object"}},
            "tool_choice": {},
            "temperature": {"type": "number", "minimum": 0, "maximum": 2},
            "max_tokens": {"type": "integer", "minimum": 1}
        },
        "required": ["model", "messages"]
    })
}

fn model_chat_tool(router: Arc<Router>) -> Tool {
    Tool::new(
        "model_chat",
        Category::Inference,
        "Chat completion (OpenAI shape, tools supported) routed to the model's providers with fallbacks. \
         Streams text as progress; returns the answer, the provider, token usage and cost.",
    )
    .input_schema(chat_schema())
    .open_world()
    .timeout_ms(300_000)
    .handler(move |call| {
        let router = router.clone();
        async move { forward(&call, &router, "chat").await }
    })
}

fn model_embeddings_tool(router: Arc<Router>) -> Tool {
    Tool::new("model_embeddings", Category::Inference, "Embeddings for a text or a list of texts.")
        .input_schema(json!({
            "type": "object",
            "properties": {
                "model": {"type": "string"},
                "input": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}, "minItems": 1}]}
            },
            "required": ["model", "input"]
        }))
        .read_only()
        .open_world()
        .handler(move |call| {
            let router = router.clone();
            async move { forward(&call, &router, "embeddings").await }
        })
}

/// An MCP tool call forwarded to the model's subject, so whichever replica
/// serves the model answers it; progress is relayed back.
async fn forward(call: &Call, router: &Router, op: &'static str) -> Result<ToolOutput, WireError> {
    let model = call.args["model"].as_str().unwrap_or_default().to_owned();
    let bus = call.bus();
    let mut route = call.wants_progress().then(|| bus.progress_route());
    let spec = CallSpec {
        tool: op,
        category: Category::Inference,
        subject: Some(subject::inference(&model, op)),
        args: call.args.clone(),
        timeout: call.remaining(),
        caller: call.caller.clone(),
        trace: call.trace.clone(),
        // Kit replicas acknowledge; a model call has no side effect to repeat.
        liveness: sophia_kit::bus::Liveness {
            acked: true,
            retry: true,
        },
    };
    let cancel = call.cancellation();
    let pending = bus.call(
        spec,
        route.as_ref().map(sophia_kit::bus::ProgressRoute::target),
        &cancel,
    );
    tokio::pin!(pending);
    let outcome = loop {
        tokio::select! {
            r = &mut pending => break r,
            Some(p) = async { match route.as_mut() { Some(r) => r.next().await, None => std::future::pending().await } } => {
                call.progress(p.progress, p.total, p.message).await;
            }
        }
    };
    if let (Ok(reply), Some(r)) = (&outcome, route.as_mut()) {
        for p in r
            .drain(reply.progress_sent, Duration::from_millis(250))
            .await
        {
            call.progress(p.progress, p.total, p.message).await;
        }
    }
    match outcome {
        Ok(reply) => Ok(reply.output),
        Err(CallError::Worker(e)) => Err(e),
        Err(CallError::NoWorker { .. }) if !router.degraded().is_empty() => Err(WireError::new(
            ErrorCode::Unavailable,
            format!(
                "no intelligence replica serves model {model:?}, and this one cannot reach a \
                 model: {}",
                router.degraded().join("; ")
            ),
        )),
        Err(CallError::NoWorker { .. }) => Err(WireError::invalid_arguments(format!(
            "no intelligence replica serves model {model:?}; call list_models for the models on offer"
        ))),
        Err(e) => Err(WireError::new(e.code(), e.to_string())),
    }
}

fn list_models_tool() -> Tool {
    Tool::new(
        "list_models",
        Category::Inference,
        "Lists the models and aliases the mesh can serve, with the replicas serving each and \
         their providers' health (circuit breaker state).",
    )
    .read_only()
    .idempotent()
    .handler(|call| async move {
        let replicas = gather(call.bus().client()).await?;
        let mut models: std::collections::BTreeMap<String, Vec<Value>> = Default::default();
        for replica in &replicas {
            for m in replica["models"].as_array().into_iter().flatten() {
                let name = m["name"].as_str().unwrap_or_default().to_owned();
                models.entry(name).or_default().push(json!({
                    "instance": replica["instance"], "providers": m["providers"], "healthy": m["healthy"]}));
            }
        }
        let list: Vec<Value> = models
            .into_iter()
            .map(|(name, served_by)| {
                let healthy = served_by.iter().any(|s| s["healthy"] == true);
                json!({"name": name, "healthy": healthy, "replicas": served_by.len(), "served_by": served_by})
            })
            .collect();
        let text = if list.is_empty() {
            "no models: no intelligence replica has a provider configured (set SOPHIA_INTELLIGENCE_CONFIG)".to_owned()
        } else {
            list.iter()
                .map(|m| format!("{} ({}, {} replicas)", m["name"].as_str().unwrap_or(""),
                    if m["healthy"] == true { "healthy" } else { "unhealthy" }, m["replicas"]))
                .collect::<Vec<_>>()
                .join("\n")
        };
        let mut out = ToolOutput::text(text);
        out.structured = Some(json!({ "models": list }));
        Ok(out)
    })
}

/// Asks every replica for its models; gathers answers for a short window.
async fn gather(client: &async_nats::Client) -> Result<Vec<Value>, WireError> {
    let inbox = client.new_inbox();
    let unavailable = |e: String| {
        WireError::new(
            ErrorCode::Unavailable,
            format!("cannot ask replicas for models: {e}"),
        )
    };
    let mut replies = client
        .subscribe(inbox.clone())
        .await
        .map_err(|e| unavailable(e.to_string()))?;
    client
        .publish_with_reply(subject::INFERENCE_MODELS, inbox, bytes::Bytes::new())
        .await
        .map_err(|e| unavailable(e.to_string()))?;
    let mut out = Vec::new();
    let window = tokio::time::sleep(GATHER_WINDOW);
    tokio::pin!(window);
    loop {
        tokio::select! {
            _ = &mut window => break,
            Some(msg) = replies.next() => match sophia_proto::decode::<Value>(&msg.payload) {
                Ok(v) => out.push(v),
                Err(e) => tracing::debug!(cause = %e, "ignoring a malformed models reply"),
            },
        }
    }
    Ok(out)
}

/// This replica's models and their health, as `sophia.v1.infer.models` answers.
pub fn models_report(router: &Router, instance: &str) -> Value {
    let models: Vec<Value> = router
        .config()
        .model_names()
        .into_iter()
        .filter_map(|name| {
            let providers: Vec<Value> = router
                .targets_now(&name)
                .into_iter()
                .map(|t| {
                    let state = router.breaker(&t.provider);
                    json!({"provider": t.provider, "model": t.model,
                        "breaker": format!("{state:?}").to_lowercase(),
                        "healthy": state != Some(BreakerState::Open)})
                })
                .collect();
            let healthy = providers.iter().any(|p| p["healthy"] == true);
            (!providers.is_empty())
                .then(|| json!({"name": name, "providers": providers, "healthy": healthy}))
        })
        .collect();
    json!({"instance": instance, "models": models})
}

/// Answers `sophia.v1.infer.models` until the client closes.
pub async fn answer_model_queries(
    client: async_nats::Client,
    router: Arc<Router>,
    instance: String,
) -> Result<(), async_nats::SubscribeError> {
    let mut sub = client.subscribe(subject::INFERENCE_MODELS).await?;
    tokio::spawn(async move {
        while let Some(msg) = sub.next().await {
            let Some(reply) = msg.reply else { continue };
            if let Ok(bytes) = sophia_proto::encode(&models_report(&router, &instance)) {
                let _ = client.publish(reply, bytes.into()).await;
            }
        }
    });
    Ok(())
}
