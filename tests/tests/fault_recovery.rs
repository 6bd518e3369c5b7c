//! The gateway comes back from faults whole. Each test runs the gateway as
//! a process (so its `/metrics` show its own memory and tasks) with replicas
//! of `src/bin/slow-worker.rs`, puts it under load, injects one fault, and
//! checks that:
//! - every call ends, with an error that says what to do (none hangs);
//! - the fault shows on the gateway's `/health`;
//! - afterwards calls succeed again, and the gateway's tokio tasks and
//!   resident memory return to where they were before the fault.
//!
//! The faults: the NATS server away for 30 s; a replica stuck on its calls
//! while alive (it answers liveness checks and other calls); a replica that
//! answers some calls and drops others.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};
use sophia_tests::mesh::TEST_TOKEN;
use sophia_tests::procs::{ANY_PORT, Process};
use sophia_tests::tools::{WAIT, call, error_code, text_of, wait_for_tool};
use sophia_tests::{McpClient, NatsServer, connect_http, eventually, nats_server};

/// How long the NATS server stays away.
const OUTAGE: Duration = Duration::from_secs(30);
/// The longest any one call may take here before it counts as hung.
const HANG: Duration = Duration::from_secs(15);
/// Calls made before the baseline is read, and again after the fault.
const WARM_CALLS: usize = 300;

struct Gateway {
    process: Process,
    base: String,
    http: reqwest::Client,
}

impl Gateway {
    async fn start(nats: &NatsServer, extra: &[(&str, &str)]) -> Self {
        let mut env = vec![
            ("NATS_URL".to_owned(), nats.url()),
            ("SOPHIA_GATEWAY_ADDR".to_owned(), ANY_PORT.to_owned()),
            ("SOPHIA_GATEWAY_TOKEN".to_owned(), TEST_TOKEN.to_owned()),
        ];
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let mut process = Process::spawn("sophia-gateway", &env);
        let base = process.ready_at("/ready").await;
        Self {
            process,
            base,
            http: reqwest::Client::new(),
        }
    }

    async fn client(&self) -> McpClient {
        connect_http(&format!("{}/mcp", self.base), TEST_TOKEN).await
    }

    /// The body of `GET <path>` on the gateway's HTTP port.
    async fn get(&self, path: &str) -> String {
        self.http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{path} answers: {e}"))
            .text()
            .await
            .unwrap_or_default()
    }

    async fn health(&self) -> Value {
        serde_json::from_str(&self.get("/health").await).expect("/health is JSON")
    }

    /// `(tokio tasks alive, resident bytes)` from `/metrics`.
    async fn footprint(&self) -> (f64, f64) {
        let text = self.get("/metrics").await;
        let gauge = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse::<f64>().ok())
                .unwrap_or_else(|| panic!("{name} in /metrics:\n{text}"))
        };
        (
            gauge("sophia_runtime_alive_tasks"),
            gauge("process_resident_memory_bytes"),
        )
    }

    /// Waits until the gateway's tasks and memory are back near `before`:
    /// tasks within a few (connections closing, timers), memory within 10%
    /// or 8 MiB, whichever is more. An outage under load leaves the NATS
    /// client's write buffer at its high-water mark once (SSE events and
    /// audit records queued while the bus was away): about 5 MB, measured
    /// with auditing on and off alike. A leak would grow past that.
    async fn settles_back_to(&self, before: (f64, f64)) {
        let mut last = (0.0, 0.0);
        let settled = tokio::time::timeout(WAIT, async {
            loop {
                last = self.footprint().await;
                let slack = (before.1 * 0.10).max(8.0 * 1024.0 * 1024.0);
                if last.0 <= before.0 + 4.0 && last.1 <= before.1 + slack {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
        .await;
        eprintln!("gateway (tasks, resident bytes): before {before:?}, after {last:?}");
        assert!(
            settled.is_ok(),
            "the gateway's tasks and memory come back: before {before:?}, after {last:?}\n{}",
            self.process.log()
        );
    }
}

fn slow_worker(nats: &NatsServer, log: &std::path::Path) -> Process {
    Process::spawn(
        "slow-worker",
        &[
            ("NATS_URL".to_owned(), nats.url()),
            ("SOPHIA_HTTP_ADDR".to_owned(), ANY_PORT.to_owned()),
            ("SLOW_WORKER_LOG".to_owned(), log.display().to_string()),
            ("SOPHIA_HEARTBEAT_MS".to_owned(), "500".to_owned()),
        ],
    )
}

/// `n` quick calls, 8 at a time; all must succeed.
async fn warm(client: &McpClient, tool: &str, n: usize) {
    futures::stream::iter(0..n)
        .for_each_concurrent(8, |_| async {
            let r = call(client, tool, json!({"ms": 0})).await;
            assert_eq!(r.is_error, Some(false), "{}", text_of(&r));
        })
        .await;
}

/// `n` calls of `tool` at once; every one must end (within [`HANG`]).
async fn at_once(
    client: &McpClient,
    n: usize,
    tool: &str,
    args: Value,
) -> Vec<rmcp::model::CallToolResult> {
    futures::future::join_all((0..n).map(|_| async {
        tokio::time::timeout(HANG, call(client, tool, args.clone()))
            .await
            .unwrap_or_else(|_| panic!("a call of {tool} ends"))
    }))
    .await
}

/// What the load saw.
#[derive(Default)]
struct Tally {
    ok: AtomicUsize,
    failed: AtomicUsize,
    hung: AtomicUsize,
    /// Error texts that do not say what to do.
    mute: std::sync::Mutex<Vec<String>>,
}

/// Calls `tool` from 8 clients, each every 20 ms, until `stop` fires.
fn load(
    client: Arc<McpClient>,
    tool: &'static str,
    stop: tokio_util::sync::CancellationToken,
) -> (Arc<Tally>, tokio::task::JoinHandle<()>) {
    let tally = Arc::new(Tally::default());
    let t = tally.clone();
    let task = tokio::spawn(async move {
        let loops = (0..8).map(|_| {
            let (client, t, stop) = (client.clone(), t.clone(), stop.clone());
            async move {
                let mut tick = tokio::time::interval(Duration::from_millis(20));
                while !stop.is_cancelled() {
                    tick.tick().await;
                    let params = rmcp::model::CallToolRequestParams::new(tool)
                        .with_arguments(json!({"ms": 0}).as_object().cloned().unwrap());
                    match tokio::time::timeout(HANG, client.call_tool(params)).await {
                        Err(_) => {
                            t.hung.fetch_add(1, Ordering::SeqCst);
                        }
                        Ok(Ok(r)) if r.is_error != Some(true) => {
                            t.ok.fetch_add(1, Ordering::SeqCst);
                        }
                        Ok(outcome) => {
                            t.failed.fetch_add(1, Ordering::SeqCst);
                            let text = match outcome {
                                Ok(r) => text_of(&r),
                                Err(e) => e.to_string(),
                            };
                            if !says_what_to_do(&text) {
                                t.mute.lock().unwrap().push(text);
                            }
                        }
                    }
                }
            }
        });
        futures::future::join_all(loops).await;
    });
    (tally, task)
}

/// Whether an error tells the reader what to do next.
fn says_what_to_do(text: &str) -> bool {
    ["retry", "Retry", "restart", "check", "Check", "tools/list"]
        .iter()
        .any(|w| text.contains(w))
}

#[tokio::test]
async fn the_gateway_comes_back_whole_after_nats_is_away_for_30_s() {
    let mut nats = nats_server();
    let dir = tempfile::tempdir().unwrap();
    let gateway = Gateway::start(&nats, &[]).await;
    let mut worker = slow_worker(&nats, &dir.path().join("runs.log"));
    worker.ready_at("/ready").await;
    let client = Arc::new(gateway.client().await);
    wait_for_tool(&client, "slow_read").await;
    warm(&client, "slow_read", WARM_CALLS).await;
    let before = gateway.footprint().await;

    let stop = tokio_util::sync::CancellationToken::new();
    let (tally, task) = load(client.clone(), "slow_read", stop.clone());
    eventually("the load is under way", WAIT, || async {
        (tally.ok.load(Ordering::SeqCst) > 50).then_some(())
    })
    .await;
    nats.stop();
    // During the outage the gateway says so, and calls fail fast.
    let health = eventually("/health reports the bus down", WAIT, || async {
        let h = gateway.health().await;
        (h["bus"] == "disconnected").then_some(h)
    })
    .await;
    assert!(health["degraded"].to_string().contains("NATS"), "{health}");
    tokio::time::sleep(OUTAGE).await; // the outage itself, under load
    let failed_in_outage = tally.failed.load(Ordering::SeqCst);
    nats.start_again();
    let ok_at_return = tally.ok.load(Ordering::SeqCst);
    eventually("calls succeed again", WAIT, || async {
        (tally.ok.load(Ordering::SeqCst) > ok_at_return + 50).then_some(())
    })
    .await;
    stop.cancel();
    task.await.unwrap();

    assert_eq!(tally.hung.load(Ordering::SeqCst), 0, "no call hangs");
    assert!(
        failed_in_outage > 100,
        "the load ran through the outage: {failed_in_outage} calls failed"
    );
    let mute = tally.mute.lock().unwrap().clone();
    assert!(mute.is_empty(), "errors that say what to do: {mute:?}");
    assert_eq!(gateway.health().await["bus"], "connected");
    warm(&client, "slow_read", WARM_CALLS).await;
    gateway.settles_back_to(before).await;
}

#[tokio::test]
async fn a_replica_stuck_on_its_calls_is_named_and_the_gateway_comes_back() {
    let nats = nats_server();
    let dir = tempfile::tempdir().unwrap();
    // Deadlines of 1.5 s, so a stuck call ends soon.
    let gateway = Gateway::start(&nats, &[("SOPHIA_MAX_CALL_TIMEOUT_MS", "1500")]).await;
    let mut worker = slow_worker(&nats, &dir.path().join("runs.log"));
    worker.ready_at("/ready").await;
    let client = Arc::new(gateway.client().await);
    wait_for_tool(&client, "slow_read").await;
    warm(&client, "slow_read", WARM_CALLS).await;
    let before = gateway.footprint().await;

    // Sixteen calls the replica takes and never finishes; it stays alive.
    let stuck = at_once(&client, 16, "slow_read", json!({"ms": 600_000})).await;
    // The replica still serves quick calls.
    warm(&client, "slow_read", 20).await;
    let health = gateway.health().await;
    let faults = health["faults"].as_array().cloned().unwrap_or_default();
    let fault = faults
        .iter()
        .find(|f| f["fault"] == "stuck")
        .unwrap_or_else(|| panic!("a stuck replica on /health: {health}"));
    assert_eq!(fault["service"], "slow-worker");
    assert_eq!(fault["calls"], 16);
    let replica = fault["replica"].as_str().expect("the replica is named");
    for r in &stuck {
        assert_eq!(error_code(r).as_deref(), Some("timeout"), "{}", text_of(r));
        let text = text_of(r);
        assert!(
            text.contains(replica) && text.contains("restart"),
            "names the replica and what to do: {text}"
        );
    }
    assert!(fault["problem"].as_str().unwrap().contains("restart"));

    warm(&client, "slow_read", WARM_CALLS).await;
    gateway.settles_back_to(before).await;
}

/// A rogue subscriber in the tool's queue group: it answers `slow_read`
/// (like the real replica) and drops every `slow_write`, unacknowledged.
/// Returns how many it dropped.
async fn dropping_replica(nats: &NatsServer) -> (Arc<AtomicUsize>, tokio::task::JoinHandle<()>) {
    use sophia_proto::{Category, ToolOutput, ToolRequest, ToolResponse, subject};
    let client = async_nats::connect(nats.url()).await.unwrap();
    let mut subs = Vec::new();
    for tool in ["slow_read", "slow_write"] {
        subs.push(
            client
                .queue_subscribe(
                    subject::tool(Category::CodeGeneration, tool),
                    subject::QUEUE_GROUP.to_owned(),
                )
                .await
                .unwrap(),
        );
    }
    let mut sub = futures::stream::select_all(subs);
    client.flush().await.unwrap();
    let dropped = Arc::new(AtomicUsize::new(0));
    let d = dropped.clone();
    let task = tokio::spawn(async move {
        while let Some(msg) = sub.next().await {
            let Ok(request) = sophia_proto::decode::<ToolRequest>(&msg.payload) else {
                continue;
            };
            if request.tool == "slow_write" {
                d.fetch_add(1, Ordering::SeqCst);
                continue;
            }
            let response =
                ToolResponse::new(request.id, Ok(ToolOutput::text("done by the dropper")));
            if let Some(reply) = msg.reply {
                let bytes = sophia_proto::encode(&response).unwrap();
                let _ = client.publish(reply, bytes.into()).await;
            }
        }
    });
    (dropped, task)
}

#[tokio::test]
async fn a_replica_that_drops_calls_is_detected_and_nothing_runs_twice() {
    let nats = nats_server();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("runs.log");
    let gateway = Gateway::start(&nats, &[]).await;
    let mut worker = slow_worker(&nats, &log);
    worker.ready_at("/ready").await;
    let client = Arc::new(gateway.client().await);
    wait_for_tool(&client, "slow_write").await;
    warm(&client, "slow_read", WARM_CALLS).await;
    let before = gateway.footprint().await;

    let (dropped, rogue) = dropping_replica(&nats).await;
    // Writes, 8 at a time, until the dropper has dropped three.
    let mut outcomes = Vec::new();
    while dropped.load(Ordering::SeqCst) < 3 {
        let batch = at_once(&client, 8, "slow_write", json!({"ms": 0})).await;
        outcomes.extend(batch);
        assert!(outcomes.len() < 200, "the dropper gets some calls");
    }
    rogue.abort();
    let lost: Vec<_> = outcomes
        .iter()
        .filter(|r| error_code(r).as_deref() == Some("worker_lost"))
        .collect();
    let ok = outcomes
        .iter()
        .filter(|r| r.is_error == Some(false))
        .count();
    assert_eq!(
        lost.len(),
        dropped.load(Ordering::SeqCst),
        "each dropped call ends with worker_lost"
    );
    assert_eq!(ok + lost.len(), outcomes.len(), "every other call succeeds");
    for r in &lost {
        let text = text_of(r);
        assert!(
            text.contains("no replica acknowledged") && text.contains("may or may not have run"),
            "{text}"
        );
    }
    // Nothing ran twice: the real replica ran exactly the calls that
    // succeeded (the dropper answers no write).
    let runs = std::fs::read_to_string(&log).unwrap_or_default();
    let writes = runs.lines().filter(|l| l.ends_with(" slow_write")).count();
    assert_eq!(
        writes, ok,
        "each successful write ran once, the lost ones never"
    );

    let health = gateway.health().await;
    let fault = health["faults"]
        .as_array()
        .and_then(|f| f.iter().find(|f| f["fault"] == "unacknowledged").cloned())
        .unwrap_or_else(|| panic!("dropped calls on /health: {health}"));
    assert_eq!(fault["service"], "slow-worker");
    assert_eq!(fault["calls"].as_u64(), Some(lost.len() as u64));

    warm(&client, "slow_read", WARM_CALLS).await;
    gateway.settles_back_to(before).await;
}
