//! The worker on the bus.
//!
//! - **Bus API for agents**: for every model or alias this replica serves,
//!   `sophia.v1.infer.<model>.chat` and `.embeddings` (queue group `sophia`),
//!   taking the OpenAI request body ([`ChatRequest`]) as the
//!   `ToolRequest`'s `args` and answering with a [`ChatReply`]. Streamed
//!   text arrives as `Progress` messages when the caller asks for progress.
//!   Replicas subscribe only to their own models, so a call for `local`
//!   reaches only the replicas beside the GPU hosts that serve it.
//! - **MCP tools for Cursor** (category `inference`): `model_chat`,
//!   `model_embeddings` and `list_models`. The first two forward over the bus
//!   to the model's subject, so they reach the right replica wherever the
//!   tool call landed.
//!
//! `list_models` and the model-list responder are in [`crate::models`].

use opentelemetry::KeyValue;
use sophia_kit::telemetry::{Span, SpanKind, attr};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};
use sophia_kit::bus::{CallError, CallSpec, Target};
use sophia_kit::{Call, Category, ErrorCode, Tool, ToolOutput, ToolResult, WireError, Worker};
use sophia_proto::chat::{ChatReply, ChatRequest, Message, ReplyUsage};
use sophia_proto::subject;

use crate::chat::Delta;
use crate::metrics::{Accounted, InferenceMetrics};
use crate::router::{Operation, RouteError, Routed, Router};

/// Limits on what callers may send.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// The largest `messages` (or embeddings `input`), as JSON bytes.
    pub max_prompt_bytes: usize,
}

/// The worker: bus endpoints for `router`'s models, and the MCP tools.
pub fn worker(router: Arc<Router>, metrics: InferenceMetrics, limits: Limits) -> Worker {
    let registered = metrics.clone();
    let mut w = Worker::new("intelligence-worker", env!("CARGO_PKG_VERSION"))
        .description("Sophia Mesh model inference routing")
        .metrics(move |r| registered.register(r));
    for (i, model) in router.config().model_names().into_iter().enumerate() {
        for op in ["chat", "embeddings"] {
            let endpoint = Endpoint {
                router: router.clone(),
                metrics: metrics.clone(),
                model: model.clone(),
                op,
                limits,
            };
            w = w.tool(endpoint.tool(i));
        }
    }
    w.tool(model_chat_tool(&router))
        .tool(model_embeddings_tool(&router))
        .tool(crate::models::list_models_tool())
}

/// One operation of one model on the bus (`sophia.v1.infer.<model>.<op>`).
struct Endpoint {
    router: Arc<Router>,
    metrics: InferenceMetrics,
    model: String,
    op: &'static str,
    limits: Limits,
}

impl Endpoint {
    /// The endpoint as an unannounced tool; `i` numbers the model.
    fn tool(self, i: usize) -> Tool {
        let (op, model) = (self.op, self.model.clone());
        Tool::new(
            format!("infer-{i}-{op}"),
            Category::Inference,
            format!("{op} with {model}"),
        )
        .on_subject(subject::inference(&model, op))
        .unannounced()
        .with_ctx(&Arc::new(self), serve)
    }
}

/// Checks a request against the limits and the contract: the chat request
/// (`None` for embeddings), or why it is refused.
fn check_prompt(args: &Value, op: &str, limits: Limits) -> Result<Option<ChatRequest>, WireError> {
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
    if op != "chat" {
        return Ok(None);
    }
    ChatRequest::deserialize(args)
        .map(Some)
        .map_err(|e| WireError::invalid_arguments(format!("not an OpenAI chat request: {e}")))
}

/// Serves one bus inference request with the local router.
async fn serve(e: Arc<Endpoint>, call: Call) -> ToolResult {
    let (model, op) = (e.model.as_str(), e.op);
    let request = check_prompt(&call.args, op, e.limits)?;
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
    let router = &e.router;
    let outcome = match request {
        None => {
            let embeddings = Operation::Embeddings(&call.args);
            router.call(model, embeddings, call.deadline).await
        }
        Some(r) if call.wants_progress() || r.stream == Some(true) => {
            stream(&call, router, model).await
        }
        Some(_) => {
            router
                .call(model, Operation::Chat(&call.args), call.deadline)
                .await
        }
    };
    account(&e, &call, &span, &outcome);
    match outcome {
        Ok(routed) => Ok(output(op, routed)),
        Err(e) => Err(WireError::new(route_code(&e), e.to_string())),
    }
}

/// Records a call on its span and in the metrics.
fn account(e: &Endpoint, call: &Call, span: &Span, outcome: &Result<Routed, RouteError>) {
    let (provider, code, usage, cost) = match outcome {
        Ok(r) => (r.provider.as_str(), "ok", r.usage, r.cost_usd),
        Err(e) => ("", route_code(e).as_str(), None, None),
    };
    match outcome {
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
    e.metrics.record(Accounted {
        model: &e.model,
        provider,
        outcome: code,
        principal: &call.caller.principal,
        usage,
        cost_usd: cost,
    });
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

/// The result: the assistant's text (or tool calls) as content, and the
/// [`ChatReply`] (the full response with provider, usage and cost) as
/// structured output.
fn output(op: &str, r: Routed) -> ToolOutput {
    let reply = ChatReply {
        response: r.response,
        provider: r.provider,
        model: r.model,
        usage: r.usage.map(|tokens| ReplyUsage {
            tokens,
            cost_usd: r.cost_usd,
        }),
        attempts: r.attempts,
    };
    let text = if op == "embeddings" {
        let data = reply.response["data"].as_array().map(Vec::len).unwrap_or(0);
        format!(
            "{data} embeddings from {} ({})",
            reply.model, reply.provider
        )
    } else {
        match reply.message() {
            Ok(Message {
                tool_calls: Some(calls),
                ..
            }) => serde_json::to_value(calls).unwrap_or_default().to_string(),
            Ok(message) => message.text().to_owned(),
            Err(_) => String::new(),
        }
    };
    let mut out = ToolOutput::text(text);
    out.structured = Some(serde_json::to_value(&reply).unwrap_or_default());
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

fn model_chat_tool(router: &Arc<Router>) -> Tool {
    Tool::new(
        "model_chat",
        Category::Inference,
        "Chat completion (OpenAI shape, tools supported) routed to the model's providers with fallbacks. \
         Streams text as progress; returns the answer, the provider, token usage and cost.",
    )
    .input_schema(chat_schema())
    .open_world()
    .timeout_ms(300_000)
    .with_ctx(router, run_model_chat)
}

async fn run_model_chat(router: Arc<Router>, call: Call) -> ToolResult {
    forward(&call, &router, "chat").await
}

fn model_embeddings_tool(router: &Arc<Router>) -> Tool {
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
        .with_ctx(router, run_model_embeddings)
}

async fn run_model_embeddings(router: Arc<Router>, call: Call) -> ToolResult {
    forward(&call, &router, "embeddings").await
}

/// An MCP tool call forwarded to the model's subject, so whichever replica
/// serves the model answers it; progress is relayed back.
async fn forward(call: &Call, router: &Router, op: &'static str) -> Result<ToolOutput, WireError> {
    let model = call.args["model"].as_str().unwrap_or_default().to_owned();
    let bus = call.bus();
    let mut route = call.wants_progress().then(|| bus.progress_route());
    let spec = CallSpec {
        tool: op,
        target: Target::Subject {
            subject: subject::inference(&model, op),
            category: Category::Inference,
        },
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
