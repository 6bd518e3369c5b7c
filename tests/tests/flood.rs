//! A flood on one session: 10,000 `tools/call` requests sent at once on a
//! single Streamable HTTP session. Each is answered, served or refused with
//! an error that says what to do, and the gateway's memory stays bounded.
//! The gateway runs as a process, so its `/metrics` show its memory alone.

use futures::future::join_all;
use serde_json::{Value, json};
use sophia_tests::Mesh;
use sophia_tests::mesh::TEST_TOKEN;
use sophia_tests::procs::{ANY_PORT, Process};
use sophia_tests::raw::RawSession;

const FLOOD: usize = 10_000;

/// The gateway's resident memory, from its `/metrics`.
async fn resident_bytes(base: &str) -> f64 {
    let text = reqwest::get(format!("{base}/metrics"))
        .await
        .expect("/metrics answers")
        .text()
        .await
        .unwrap_or_default();
    text.lines()
        .find_map(|l| {
            l.strip_prefix("process_resident_memory_bytes ")?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("process_resident_memory_bytes in /metrics:\n{text}"))
}

/// How one answer of the flood went.
#[derive(Debug, PartialEq, Eq, Hash, Clone)]
enum Answer {
    Served,
    /// Refused; the text says why and what to do.
    Refused(String),
}

fn answer(status: u16, messages: &[Value], body: &str) -> Answer {
    let Some(message) = messages.first() else {
        return Answer::Refused(format!("HTTP {status} without a JSON-RPC message: {body}"));
    };
    if message["result"]["isError"] == false {
        return Answer::Served;
    }
    let text = message["error"]["message"]
        .as_str()
        .map(str::to_owned)
        .or_else(|| {
            message["result"]["content"][0]["text"]
                .as_str()
                .map(str::to_owned)
        })
        .unwrap_or_else(|| format!("HTTP {status}: {body}"));
    Answer::Refused(text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_requests_at_once_on_one_session_are_each_answered_in_bounded_memory() {
    let mut mesh = Mesh::without_gateway();
    // The worker runs in this process, which the flood's 10,000 client
    // requests starve: with the tests' 200 ms heartbeat, the gateway would
    // drop it mid-flood (600 ms of silence) and answer "unknown tool". The
    // services' own heartbeat (5 s) keeps this test about the gateway.
    let mut config = mesh.worker_config();
    config.heartbeat_ms = 5_000;
    mesh.worker_with(echo_worker::echo_worker(), config).await;
    let env = [
        ("NATS_URL", mesh.nats.url()),
        ("SOPHIA_GATEWAY_ADDR", ANY_PORT.to_owned()),
        ("SOPHIA_GATEWAY_TOKEN", TEST_TOKEN.to_owned()),
    ]
    .map(|(k, v)| (k.to_owned(), v));
    let mut gateway = Process::spawn("sophia-gateway", &env);
    let base = gateway.ready_at("/ready").await;
    let mut session = RawSession::new(&format!("{base}/mcp"), TEST_TOKEN);
    session.initialize().await;
    // The echo tool is on offer before the flood.
    let probe = json!({"jsonrpc": "2.0", "id": 0, "method": "tools/call",
        "params": {"name": "echo", "arguments": {"text": "ready?"}}});
    sophia_tests::eventually("echo is callable", sophia_tests::tools::WAIT, || async {
        let r = session.post(probe.clone()).await;
        (answer(r.status, &r.messages, &r.body) == Answer::Served).then_some(())
    })
    .await;
    let before = resident_bytes(&base).await;

    let text = "x".repeat(1024);
    let calls = (1..=FLOOD).map(|id| {
        let call = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
            "params": {"name": "echo", "arguments": {"text": text}}});
        let session = &session;
        async move {
            let r = session.post(call).await;
            answer(r.status, &r.messages, &r.body)
        }
    });
    let answers = join_all(calls).await;
    let after = resident_bytes(&base).await;
    // The flood came on 10,000 connections, which the client keeps open
    // (idle, pooled) until it goes. Once they have closed, the memory the
    // gateway held for them comes back.
    drop(session);
    let mut settled = after;
    let back = tokio::time::timeout(std::time::Duration::from_secs(60), async {
        loop {
            settled = resident_bytes(&base).await;
            if settled < before + 64.0 * 1048576.0 {
                break;
            }
            tokio::task::yield_now().await;
        }
    })
    .await;

    let served = answers.iter().filter(|a| **a == Answer::Served).count();
    let mut refusals = std::collections::BTreeMap::<String, usize>::new();
    for a in &answers {
        if let Answer::Refused(why) = a {
            *refusals.entry(why.chars().take(160).collect()).or_default() += 1;
        }
    }
    println!(
        "{FLOOD} requests on one session: {served} served, {} refused; gateway resident \
         memory {:.1} MiB before, {:.1} MiB with the flood's connections open, {:.1} MiB \
         once they closed",
        FLOOD - served,
        before / 1048576.0,
        after / 1048576.0,
        settled / 1048576.0
    );
    for (why, n) in &refusals {
        println!("  {n} x {why}");
    }
    assert_eq!(answers.len(), FLOOD, "every request has its answer");
    assert!(served > 0, "some are served: {refusals:#?}");
    for why in refusals.keys() {
        let why = why.to_lowercase();
        assert!(
            why.contains("retry") || why.contains("try again") || why.contains("later"),
            "a refusal says what to do: {why}"
        );
    }
    // Bounded: the flood's requests past the session's limit were refused,
    // not queued, so what the gateway held at the peak is its connections'
    // (well under 128 KiB each), and it gives that back once they close.
    let per_connection = (after - before) / FLOOD as f64;
    println!(
        "  {:.1} KiB per open connection at the peak",
        per_connection / 1024.0
    );
    assert!(
        per_connection < 128.0 * 1024.0,
        "resident memory grew from {before} to {after} bytes"
    );
    assert!(
        back.is_ok(),
        "resident memory came back near {before} bytes once the connections closed \
         (it stayed at {settled})"
    );
    assert!(gateway.stop(), "the gateway stops cleanly after the flood");
}
