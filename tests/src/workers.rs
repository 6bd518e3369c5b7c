//! Workers for tests, built with the kit, plus raw NATS responders that
//! misbehave in ways the kit never would.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::StreamExt;
use serde_json::json;
use sophia_kit::{Category, Tool, ToolOutput, WireError, Worker};
use sophia_proto::{Announce, Hints, PROTOCOL_VERSION, ToolSpec, subject};
use tokio::sync::watch;

/// A worker whose `whoami` tool answers with a replica label, to see which
/// replica served a call.
pub fn whoami_worker(label: &str) -> Worker {
    let label = label.to_owned();
    Worker::new("whoami-worker", "1.0.0").tool(
        Tool::new(
            "whoami",
            Category::BusinessIntelligence,
            "Names the replica that served the call.",
        )
        .read_only()
        .handler(move |_| {
            let label = label.clone();
            async move { Ok(ToolOutput::text(label)) }
        }),
    )
}

/// A worker whose `ask` tool asks the person `question` with the schema
/// given in its arguments, and answers with what they said.
pub fn asking_worker() -> Worker {
    Worker::new("asking-worker", "1.0.0").tool(
        Tool::new(
            "ask",
            Category::CodeGeneration,
            "Asks the person a question and returns the answer.",
        )
        .input_schema(json!({
            "type": "object",
            "properties": {"question": {"type": "string"}, "schema": {"type": "object"}},
            "required": ["question", "schema"]
        }))
        .handler(|call| async move {
            let question = call.args["question"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let answer = call.elicit(question, call.args["schema"].clone()).await?;
            Ok(ToolOutput::json(match answer {
                sophia_kit::Answer::Accepted(content) => json!({"accepted": content}),
                sophia_kit::Answer::Declined => json!({"declined": true}),
                sophia_kit::Answer::Cancelled => json!({"cancelled": true}),
            }))
        }),
    )
}

/// A worker whose `sample` tool asks the client's model `prompt`, whose
/// `roots` tool lists the client's roots, and whose `chatty` tool logs at
/// levels debug, info and error.
pub fn client_asking_worker() -> Worker {
    Worker::new("client-asking-worker", "1.0.0")
        .tool(
            Tool::new(
                "sample",
                Category::CodeGeneration,
                "Asks the client's model.",
            )
            .input_schema(json!({"type": "object",
                    "properties": {"prompt": {"type": "string"}}, "required": ["prompt"]}))
            .handler(|call| async move {
                let result = call
                    .sample(json!({"messages": [{"role": "user", "content":
                            {"type": "text", "text": call.args["prompt"]}}], "maxTokens": 50}))
                    .await?;
                Ok(ToolOutput::json(result))
            }),
        )
        .tool(
            Tool::new("chatty", Category::CodeGeneration, "Logs at three levels.").handler(
                |call| async move {
                    for level in ["debug", "info", "error"] {
                        call.log(level, json!({"said": level})).await;
                    }
                    Ok(ToolOutput::text("done"))
                },
            ),
        )
        .tool(
            Tool::new(
                "roots",
                Category::CodeGeneration,
                "Lists the client's roots.",
            )
            .handler(|call| async move { Ok(ToolOutput::json(call.list_roots().await?)) }),
        )
}

/// A worker whose `trace` tool answers with the W3C trace context its call
/// arrived with.
pub fn trace_worker() -> Worker {
    Worker::new("trace-worker", "1.0.0").tool(
        Tool::new(
            "trace",
            Category::CodeGeneration,
            "Says which trace the call belongs to.",
        )
        .read_only()
        .handler(|call| async move {
            Ok(ToolOutput::json(json!({
                "traceparent": call.trace.traceparent,
                "tracestate": call.trace.tracestate,
            })))
        }),
    )
}

/// A worker with `count_steps`: reports `steps` progress messages, then answers.
pub fn progress_worker() -> Worker {
    Worker::new("progress-worker", "1.0.0").tool(
        Tool::new(
            "count_steps",
            Category::Infrastructure,
            "Counts to `steps`, reporting progress.",
        )
        .input_schema(json!({
            "type": "object",
            "properties": {"steps": {"type": "integer", "minimum": 1, "maximum": 100}},
            "required": ["steps"]
        }))
        .handler(|call| async move {
            let steps = call.args["steps"].as_u64().unwrap_or(1);
            for i in 1..=steps {
                call.progress(
                    i as f64,
                    Some(steps as f64),
                    Some(format!("step {i} of {steps}")),
                )
                .await;
            }
            Ok(ToolOutput::text(format!("counted {steps} steps")))
        }),
    )
}

/// What the `wait_for_cancel` tool saw.
#[derive(Clone)]
pub struct CancelProbe {
    /// Set once the handler started.
    pub started: watch::Sender<bool>,
    /// Set once the handler saw its cancellation.
    pub cancelled: watch::Sender<bool>,
}

impl Default for CancelProbe {
    fn default() -> Self {
        Self {
            started: watch::channel(false).0,
            cancelled: watch::channel(false).0,
        }
    }
}

/// A worker whose `wait_for_cancel` runs until cancelled and records that.
pub fn cancellable_worker(probe: CancelProbe) -> Worker {
    Worker::new("cancel-worker", "1.0.0").tool(
        Tool::new(
            "wait_for_cancel",
            Category::CodeGeneration,
            "Waits until cancelled.",
        )
        .timeout_ms(60_000)
        .handler(move |call| {
            let probe = probe.clone();
            async move {
                probe.started.send_replace(true);
                call.cancelled().await;
                probe.cancelled.send_replace(true);
                Err(WireError::new(
                    sophia_proto::ErrorCode::Cancelled,
                    "stopped as asked",
                ))
            }
        }),
    )
}

/// A worker whose `big_result` returns `bytes` bytes of deterministic text.
pub fn big_result_worker() -> Worker {
    Worker::new("big-worker", "1.0.0").tool(
        Tool::new(
            "big_result",
            Category::CodeGeneration,
            "Returns a large text.",
        )
        .input_schema(json!({
            "type": "object",
            "properties": {
                "bytes": {"type": "integer", "minimum": 0},
                "echo": {"type": "string"}
            },
            "required": ["bytes"]
        }))
        .handler(|call| async move {
            let n = call.args["bytes"].as_u64().unwrap_or(0) as usize;
            let echo_len = call.args["echo"].as_str().map(str::len).unwrap_or(0);
            Ok(ToolOutput::text(format!("{echo_len}:{}", pattern(n))))
        }),
    )
}

/// `n` bytes of a repeating but position-dependent pattern, so truncation,
/// reordering or corruption shows.
pub fn pattern(n: usize) -> String {
    (0..n)
        .map(|i| (b'a' + ((i * 7 + i / 26) % 26) as u8) as char)
        .collect()
}

/// How a raw responder misbehaves.
#[derive(Clone, Copy, Debug)]
pub enum Misbehaviour {
    /// Replies with bytes that are not MessagePack.
    Garbage,
    /// Never replies.
    Silent,
    /// Announces the tool but nobody serves its subject.
    NobodyHome,
}

/// Announces `tool` in `category` on the bus (heartbeating) and serves it
/// badly. Returns the number of requests it received, and stops with the
/// returned token.
pub async fn misbehaving_worker(
    client: async_nats::Client,
    tool: &str,
    timeout_ms: u64,
    how: Misbehaviour,
) -> (Arc<AtomicUsize>, tokio_util::sync::CancellationToken) {
    let seen = Arc::new(AtomicUsize::new(0));
    let stop = tokio_util::sync::CancellationToken::new();
    let spec = ToolSpec {
        name: tool.to_owned(),
        title: None,
        description: format!("misbehaves: {how:?}"),
        category: Category::CodeGeneration,
        input_schema: json!({"type": "object"}),
        output_schema: None,
        hints: Hints::default(),
        timeout_ms: Some(timeout_ms),
        jobs: None,
    };
    let subj = subject::tool(spec.category, tool);
    let announce = Announce {
        v: PROTOCOL_VERSION,
        instance: uuid::Uuid::new_v4().to_string(),
        service: "misbehaving".into(),
        version: "0.0.1".into(),
        tools: vec![spec],
        heartbeat_ms: 200,
        offers: Default::default(),
        degraded: vec![],
        // It never acknowledges: callers wait for its answer until the deadline.
        acks: false,
        host: String::new(),
        started_at_ms: 0,
    };
    let announce = bytes::Bytes::from(sophia_proto::encode(&announce).unwrap());
    let mut sub = match how {
        Misbehaviour::NobodyHome => None,
        _ => Some(
            client
                .queue_subscribe(subj, subject::QUEUE_GROUP.to_owned())
                .await
                .unwrap(),
        ),
    };
    client.flush().await.unwrap();
    let (s, st) = (seen.clone(), stop.clone());
    tokio::spawn(async move {
        let mut beat = tokio::time::interval(Duration::from_millis(200));
        loop {
            tokio::select! {
                _ = st.cancelled() => break,
                _ = beat.tick() => {
                    let _ = client.publish(subject::REGISTRY_ANNOUNCE, announce.clone()).await;
                }
                Some(msg) = async { match sub.as_mut() { Some(s) => s.next().await, None => std::future::pending().await } } => {
                    s.fetch_add(1, Ordering::SeqCst);
                    if let (Misbehaviour::Garbage, Some(reply)) = (how, msg.reply) {
                        let _ = client.publish(reply, bytes::Bytes::from_static(b"\xc1 this is not msgpack")).await;
                    }
                }
            }
        }
    });
    (seen, stop)
}

/// A worker whose `slow` tool sleeps `ms` milliseconds, then answers `done`.
pub fn slow_worker(ms: u64) -> Worker {
    Worker::new("slow-worker", "1.0.0").tool(
        Tool::new("slow", Category::Infrastructure, "Takes its time.").handler(
            move |_| async move {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                Ok(ToolOutput::text("done"))
            },
        ),
    )
}
