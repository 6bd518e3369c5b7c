//! A stand-in OpenAI-compatible provider, for tests: `/v1/chat/completions`
//! (plain and streamed as SSE `chat.completion.chunk`s ending in
//! `data: [DONE]`, with a final usage chunk whose `choices` is `null`, as
//! some servers send), `/v1/embeddings` and `/v1/models`, following OpenAI's
//! published API reference. Each request takes the next scripted
//! [`Behavior`], or the default one, so tests can make it fail on cue.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

/// What the stand-in does with one request.
#[derive(Clone, Debug)]
pub enum Behavior {
    /// Answers normally: the reply is `echo: <last user message>`.
    Ok,
    /// 429 with `Retry-After: <seconds>`.
    RateLimited(f64),
    /// 500.
    ServerError,
    /// 400, as for an invalid request.
    Reject,
    /// Waits this long, then answers normally.
    Stall(Duration),
    /// Waits until the token is cancelled, then answers normally: the test
    /// lets the model answer once it has seen what it came to see.
    WaitFor(tokio_util::sync::CancellationToken),
    /// Streams: an event that is not JSON, before any output.
    MalformedSse,
    /// Streams two words, then closes without finishing.
    CutOff,
    /// Answers with two tool calls (streamed in interleaved fragments).
    ToolCalls,
    /// Answers with one call of tool `name`, its arguments as given (a JSON
    /// text, or anything else, to play a model that gets them wrong).
    /// `$preview_id` in the arguments becomes the `preview_id` found in the
    /// latest tool result, as a model would copy it.
    CallTool {
        /// The tool.
        name: String,
        /// The arguments text.
        arguments: String,
    },
    /// Answers with this text.
    Say(String),
}

impl Behavior {
    /// A call of `name` with `arguments` (serialized as the model would).
    pub fn call_tool(name: &str, arguments: serde_json::Value) -> Self {
        Behavior::CallTool {
            name: name.into(),
            arguments: arguments.to_string(),
        }
    }
}

/// One request the stand-in received.
#[derive(Clone, Debug)]
pub struct Hit {
    /// When it arrived.
    pub at: Instant,
    /// The path.
    pub path: String,
    /// The JSON body.
    pub body: Value,
    /// The `Authorization` header.
    pub authorization: Option<String>,
}

#[derive(Default)]
struct Inner {
    script: VecDeque<Behavior>,
    default: Option<Behavior>,
    hits: Vec<Hit>,
}

/// A running stand-in provider.
#[derive(Clone)]
pub struct StandIn {
    /// Base URL including `/v1`.
    pub base_url: String,
    inner: Arc<Mutex<Inner>>,
}

impl StandIn {
    /// Starts a stand-in on a free loopback port.
    pub async fn start() -> Self {
        let (standin, serve) = Self::bound().await;
        serve();
        standin
    }

    /// A stand-in whose port is bound (its URL known) but that answers
    /// nothing until `serve` is called: a model server that starts after
    /// whoever uses it (connections wait in the listen queue meanwhile).
    pub async fn bound() -> (Self, impl FnOnce()) {
        crate::install_crypto();
        let inner: Arc<Mutex<Inner>> = Default::default();
        let app = Router::new()
            .route("/v1/chat/completions", post(chat))
            .route("/v1/embeddings", post(embeddings))
            .route("/v1/models", get(models))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let serve = move || {
            tokio::spawn(async move { axum::serve(listener, app).await });
        };
        let standin = Self {
            base_url: format!("http://{addr}/v1"),
            inner,
        };
        (standin, serve)
    }

    /// Queues behaviours for the next requests, in order.
    pub fn script(&self, behaviors: impl IntoIterator<Item = Behavior>) {
        self.inner.lock().unwrap().script.extend(behaviors);
    }

    /// What to do once the script is used up (initially [`Behavior::Ok`]).
    pub fn default_behavior(&self, b: Behavior) {
        self.inner.lock().unwrap().default = Some(b);
    }

    /// Every request so far.
    pub fn hits(&self) -> Vec<Hit> {
        self.inner.lock().unwrap().hits.clone()
    }
}

fn next(inner: &Arc<Mutex<Inner>>, path: &str, headers: &HeaderMap, body: Value) -> Behavior {
    record(inner, path, headers, body);
    let mut i = inner.lock().unwrap();
    i.script
        .pop_front()
        .or_else(|| i.default.clone())
        .unwrap_or(Behavior::Ok)
}

fn record(inner: &Arc<Mutex<Inner>>, path: &str, headers: &HeaderMap, body: Value) {
    inner.lock().unwrap().hits.push(Hit {
        at: Instant::now(),
        path: path.to_owned(),
        body,
        authorization: headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
    });
}

/// The `preview_id` in the latest tool message, if any.
fn latest_preview_id(body: &Value) -> Option<String> {
    let content = body["messages"]
        .as_array()?
        .iter()
        .rev()
        .find(|m| m["role"] == "tool")?["content"]
        .as_str()?
        .to_owned();
    let start = content.find("\"preview_id\":\"")? + "\"preview_id\":\"".len();
    let len = content[start..].find('"')?;
    Some(content[start..start + len].to_owned())
}

fn last_user_message(body: &Value) -> String {
    body["messages"]
        .as_array()
        .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
        .and_then(|m| m["content"].as_str())
        .unwrap_or("")
        .to_owned()
}

fn usage(prompt: &str, completion: &str) -> Value {
    let words = |s: &str| s.split_whitespace().count().max(1);
    json!({"prompt_tokens": words(prompt), "completion_tokens": words(completion),
           "total_tokens": words(prompt) + words(completion)})
}

fn sse(events: Vec<String>) -> Response {
    let body: String = events
        .into_iter()
        .map(|e| format!("data: {e}\n\n"))
        .collect();
    ([("content-type", "text/event-stream")], body).into_response()
}

fn chunk(model: &str, delta: Value, finish: Option<&str>) -> String {
    json!({"id": "chatcmpl-standin", "object": "chat.completion.chunk", "model": model,
           "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    .to_string()
}

async fn chat(
    State(inner): State<Arc<Mutex<Inner>>>,
    headers: HeaderMap,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    let behavior = next(&inner, "/v1/chat/completions", &headers, body.clone());
    let model = body["model"].as_str().unwrap_or("standin").to_owned();
    let stream = body["stream"].as_bool().unwrap_or(false);
    let prompt = last_user_message(&body);
    let reply = format!("echo: {prompt}");
    match behavior {
        Behavior::RateLimited(secs) => (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", secs.to_string())],
            "slow down",
        )
            .into_response(),
        Behavior::ServerError => {
            (StatusCode::INTERNAL_SERVER_ERROR, "upstream exploded").into_response()
        }
        Behavior::Reject => (
            StatusCode::BAD_REQUEST,
            r#"{"error":{"message":"invalid request"}}"#,
        )
            .into_response(),
        Behavior::Stall(d) => {
            tokio::time::sleep(d).await;
            answer(&model, stream, &prompt, &reply)
        }
        Behavior::WaitFor(go) => {
            go.cancelled().await;
            answer(&model, stream, &prompt, &reply)
        }
        Behavior::MalformedSse => sse(vec!["{this is not json".into()]),
        Behavior::CutOff => sse(vec![
            chunk(
                &model,
                json!({"role": "assistant", "content": "partial "}),
                None,
            ),
            chunk(&model, json!({"content": "answer"}), None),
        ]),
        Behavior::ToolCalls => tool_calls(&model, stream, &prompt),
        Behavior::CallTool { name, arguments } => {
            let arguments = match latest_preview_id(&body) {
                Some(id) => arguments.replace("$preview_id", &id),
                None => arguments,
            };
            one_tool_call(&model, stream, &prompt, &name, &arguments)
        }
        Behavior::Say(text) => answer(&model, stream, &prompt, &text),
        Behavior::Ok => answer(&model, stream, &prompt, &reply),
    }
}

fn answer(model: &str, stream: bool, prompt: &str, reply: &str) -> Response {
    if !stream {
        return axum::Json(json!({
            "id": "chatcmpl-standin", "object": "chat.completion", "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": reply}, "finish_reason": "stop"}],
            "usage": usage(prompt, reply),
        }))
        .into_response();
    }
    let mut events = vec![chunk(
        model,
        json!({"role": "assistant", "content": ""}),
        None,
    )];
    for (i, word) in reply.split(' ').enumerate() {
        let piece = if i == 0 {
            word.to_owned()
        } else {
            format!(" {word}")
        };
        events.push(chunk(model, json!({"content": piece}), None));
    }
    events.push(chunk(model, json!({}), Some("stop")));
    events.push(
        json!({"id": "chatcmpl-standin", "object": "chat.completion.chunk", "model": model,
        "choices": null, "usage": usage(prompt, reply)})
        .to_string(),
    );
    events.push("[DONE]".into());
    sse(events)
}

fn one_tool_call(model: &str, stream: bool, prompt: &str, name: &str, arguments: &str) -> Response {
    // Ids differ per response, as a model's do.
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let id = format!(
        "call_{}",
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    if !stream {
        return axum::Json(json!({
            "id": "chatcmpl-standin", "object": "chat.completion", "model": model,
            "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {"role": "assistant", "content": null,
                "tool_calls": [{"id": id, "type": "function", "function": {"name": name, "arguments": arguments}}]}}],
            "usage": usage(prompt, "x x x"),
        }))
        .into_response();
    }
    sse(vec![
        chunk(
            model,
            json!({"role": "assistant", "tool_calls": [{"index": 0, "id": id, "type": "function",
                "function": {"name": name, "arguments": arguments}}]}),
            None,
        ),
        chunk(model, json!({}), Some("tool_calls")),
        json!({"id": "chatcmpl-standin", "object": "chat.completion.chunk", "model": model,
            "choices": [], "usage": usage(prompt, "x x x")})
        .to_string(),
        "[DONE]".into(),
    ])
}

fn tool_calls(model: &str, stream: bool, prompt: &str) -> Response {
    if !stream {
        return axum::Json(json!({
            "id": "chatcmpl-standin", "object": "chat.completion", "model": model,
            "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {"role": "assistant", "content": null,
                "tool_calls": [
                    {"id": "call_0", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                    {"id": "call_1", "type": "function", "function": {"name": "get_time", "arguments": "{\"tz\":\"UTC\"}"}}]}}],
            "usage": usage(prompt, "x x x x"),
        }))
        .into_response();
    }
    let frag =
        |index: u64, extra: Value| json!({"tool_calls": [{"index": index, "function": extra}]});
    let events = vec![
        chunk(
            model,
            json!({"role": "assistant", "tool_calls": [
            {"index": 0, "id": "call_0", "type": "function", "function": {"name": "get_weather", "arguments": ""}}]}),
            None,
        ),
        chunk(
            model,
            json!({"tool_calls": [
            {"index": 1, "id": "call_1", "type": "function", "function": {"name": "get_time", "arguments": "{\"tz\""}}]}),
            None,
        ),
        chunk(model, frag(0, json!({"arguments": "{\"city\""})), None),
        chunk(model, frag(1, json!({"arguments": ":\"UTC\"}"})), None),
        chunk(model, frag(0, json!({"arguments": ":\"Paris\"}"})), None),
        chunk(model, json!({}), Some("tool_calls")),
        json!({"id": "chatcmpl-standin", "object": "chat.completion.chunk", "model": model,
            "choices": [], "usage": usage(prompt, "x x x x")})
        .to_string(),
        "[DONE]".into(),
    ];
    sse(events)
}

async fn embeddings(
    State(inner): State<Arc<Mutex<Inner>>>,
    headers: HeaderMap,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    let behavior = next(&inner, "/v1/embeddings", &headers, body.clone());
    if let Behavior::ServerError = behavior {
        return (StatusCode::INTERNAL_SERVER_ERROR, "no").into_response();
    }
    let inputs: Vec<String> = match &body["input"] {
        Value::String(s) => vec![s.clone()],
        Value::Array(a) => a
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        _ => vec![],
    };
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(i, s)| {
            json!({"object": "embedding", "index": i,
            "embedding": [s.len() as f64, s.split_whitespace().count() as f64, 0.5]})
        })
        .collect();
    let tokens: usize = inputs.iter().map(|s| s.split_whitespace().count()).sum();
    axum::Json(
        json!({"object": "list", "data": data, "model": body["model"],
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}),
    )
    .into_response()
}

async fn models(State(inner): State<Arc<Mutex<Inner>>>, headers: HeaderMap) -> Response {
    // Recorded, but not scripted: workers ask for the model list whenever
    // they like, and that must not use up a chat's scripted behaviour.
    record(&inner, "/v1/models", &headers, Value::Null);
    axum::Json(json!({"object": "list", "data": [{"id": "standin-model", "object": "model"}]}))
        .into_response()
}
