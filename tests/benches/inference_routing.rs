//! The intelligence-worker's routing overhead, at a fixed 1,000 requests per
//! second (open loop: requests are sent on schedule, not when the previous
//! one returns), measured in one run against one stand-in provider:
//!
//! 1. a chat call made directly to the stand-in over HTTP;
//! 2. raw NATS request-reply of the same body (the bus hop, which the
//!    foundation bench already measures);
//! 3. the same chat call through the bus to the intelligence-worker and on
//!    to the stand-in.
//!
//! The worker's own cost is roughly (3) − (1) − (2). Run with
//! `cargo bench -p sophia-tests --bench inference_routing`; without
//! `--bench` it runs a short smoke pass.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use intelligence_worker::{Cli, InferenceArgs};
use serde_json::json;
use sophia_kit::bus::{Bus, CallSpec, Target};
use sophia_proto::{Caller, Category, headers, subject};
use sophia_tests::Mesh;
use sophia_tests::openai::StandIn;
use tokio_util::sync::CancellationToken;

const RATE: u64 = 1_000;

struct Figures {
    name: &'static str,
    p50: Duration,
    p99: Duration,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Sends `n` requests at `RATE` per second, each in its own task.
async fn open_loop<F, Fut>(name: &'static str, n: usize, op: F) -> Figures
where
    F: Fn() -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send,
{
    for _ in 0..50 {
        op().await;
    }
    let samples = Arc::new(Mutex::new(Vec::with_capacity(n)));
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / RATE));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut tasks = Vec::with_capacity(n);
    for _ in 0..n {
        tick.tick().await;
        let (op, samples) = (op.clone(), samples.clone());
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            op().await;
            samples.lock().unwrap().push(t.elapsed());
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let mut s = samples.lock().unwrap().clone();
    s.sort();
    Figures {
        name,
        p50: percentile(&s, 0.5),
        p99: percentile(&s, 0.99),
    }
}

#[tokio::main]
async fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let n = if full { 5_000 } else { 50 };
    let mesh = Mesh::without_gateway();
    let standin = StandIn::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bench.toml");
    std::fs::write(
        &config,
        format!(
            "[[providers]]\nname = \"standin\"\nbase_url = \"{}\"\n[aliases.bench]\ntargets = [{{ provider = \"standin\", model = \"m\" }}]\n",
            standin.base_url
        ),
    )
    .unwrap();
    let stop = CancellationToken::new();
    let _worker = intelligence_worker::run(
        Cli {
            worker: mesh.worker_config(),
            inference: InferenceArgs {
                config: Some(config),
                ollama_url: "http://127.0.0.1:9/v1".into(),
                max_prompt_bytes: 1 << 20,
            },
        },
        stop.clone(),
    )
    .await
    .unwrap();
    let body = json!({"model": "m", "messages": [{"role": "user", "content": "x ".repeat(256)}]});

    let direct = {
        let http = reqwest::Client::new();
        let url = format!("{}/chat/completions", standin.base_url);
        let body = body.to_string();
        open_loop("direct to the stand-in (HTTP)", n, move || {
            let (http, url, body) = (http.clone(), url.clone(), body.clone());
            async move {
                let r = http
                    .post(url)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                r.bytes().await.unwrap();
            }
        })
        .await
    };

    let nats = {
        let responder = mesh.nats_client().await;
        let mut sub = responder.subscribe("bench.echo").await.unwrap();
        let r = responder.clone();
        tokio::spawn(async move {
            while let Some(m) = sub.next().await {
                if let Some(reply) = m.reply {
                    let _ = r.publish(reply, m.payload).await;
                }
            }
        });
        responder.flush().await.unwrap();
        let client = mesh.nats_client().await;
        let payload = bytes::Bytes::from(body.to_string());
        open_loop("raw NATS request-reply (bus hop)", n, move || {
            let (c, p) = (client.clone(), payload.clone());
            async move {
                c.request("bench.echo", p).await.unwrap();
            }
        })
        .await
    };

    let routed = {
        let bus = Bus::start(mesh.nats_client().await, "bench".into(), 1 << 20)
            .await
            .unwrap();
        open_loop("bus -> intelligence-worker -> stand-in", n, move || {
            let (bus, body) = (bus.clone(), body.clone());
            async move {
                let spec = CallSpec {
                    tool: "chat",
                    target: Target::Subject {
                        subject: subject::inference("bench", "chat"),
                        category: Category::Inference,
                    },
                    args: body,
                    timeout: Duration::from_secs(10),
                    caller: Caller::default(),
                    trace: headers::Context::default(),
                    liveness: Default::default(),
                };
                bus.call(spec, None, &CancellationToken::new())
                    .await
                    .expect("routed chat");
            }
        })
        .await
    };

    println!();
    println!(
        "{n} chat calls at {RATE}/s (open loop){}",
        if full {
            ""
        } else {
            " (smoke run: pass --bench for real figures)"
        }
    );
    println!("{:<42} {:>10} {:>10}", "path", "p50", "p99");
    for f in [&direct, &nats, &routed] {
        println!(
            "{:<42} {:>8.0}µs {:>8.0}µs",
            f.name,
            f.p50.as_secs_f64() * 1e6,
            f.p99.as_secs_f64() * 1e6
        );
    }
    let added = |f: fn(&Figures) -> Duration| {
        (f(&routed).as_secs_f64() - f(&direct).as_secs_f64() - f(&nats).as_secs_f64()) * 1e6
    };
    println!();
    println!(
        "added by the worker (routed − direct − bus hop): p50 {:.0}µs, p99 {:.0}µs (target: p99 ≤ 500µs)",
        added(|f| f.p50),
        added(|f| f.p99)
    );
    stop.cancel();
}
