//! Soak: `tools/call` through the gateway at a fixed rate for ten minutes
//! (`SOAK_SECS`, `SOAK_RATE`), with the gateway and two echo-worker
//! replicas as processes (the real binaries, as `up.sh` runs them) on a
//! real nats-server. Prints each process's resident memory (VmRSS) and
//! open file descriptors after warm-up and at the end, and their growth.
//!
//! The binaries are the workspace's own, next to this program:
//! `cargo build --release --bins && cargo bench -p sophia-tests --bench soak`.
//! Without `--bench` (as under `cargo test --all-targets`) it runs a
//! three-second smoke pass on the debug binaries.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rmcp::model::CallToolRequestParams;
use serde_json::json;
use sophia_tests::procs::{ANY_PORT, Process};
use sophia_tests::tools::wait_for_tool;

const TOKEN: &str = "soak-token";

/// VmRSS in KiB and the number of open descriptors of process `pid`.
fn footprint(pid: u32) -> (u64, usize) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0);
    (rss, fds)
}

fn env_or(key: &str, default: u64) -> u64 {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let secs = if full { env_or("SOAK_SECS", 600) } else { 3 };
    let rate = env_or("SOAK_RATE", 200);
    let nats = sophia_tests::nats_server();
    let common = |extra: &[(&str, &str)]| {
        let mut env = vec![
            ("NATS_URL".to_owned(), nats.url()),
            ("RUST_LOG".to_owned(), "warn".to_owned()),
        ];
        env.extend(
            extra
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        env
    };
    let mut procs = vec![
        Process::spawn("echo-worker", &common(&[("SOPHIA_HTTP_ADDR", ANY_PORT)])),
        Process::spawn("echo-worker", &common(&[("SOPHIA_HTTP_ADDR", ANY_PORT)])),
        Process::spawn(
            "sophia-gateway",
            &common(&[
                ("SOPHIA_GATEWAY_ADDR", ANY_PORT),
                ("SOPHIA_GATEWAY_TOKEN", TOKEN),
            ]),
        ),
    ];
    let mut gateway = String::new();
    for p in &mut procs {
        gateway = p.ready_at("/ready").await;
    }
    let client = Arc::new(sophia_tests::connect_http(&format!("{gateway}/mcp"), TOKEN).await);
    wait_for_tool(&client, "echo").await;

    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let run = |duration: Duration| {
        let (client, ok, failed) = (client.clone(), ok.clone(), failed.clone());
        async move {
            let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let end = Instant::now() + duration;
            let mut calls = Vec::new();
            while Instant::now() < end {
                tick.tick().await;
                let (client, ok, failed) = (client.clone(), ok.clone(), failed.clone());
                calls.push(tokio::spawn(async move {
                    let r =
                        client
                            .call_tool(CallToolRequestParams::new("echo").with_arguments(
                                json!({"text": "soak"}).as_object().cloned().unwrap(),
                            ))
                            .await;
                    match r {
                        Ok(r) if r.is_error != Some(true) => ok.fetch_add(1, Ordering::Relaxed),
                        _ => failed.fetch_add(1, Ordering::Relaxed),
                    };
                }));
                calls.retain(|c| !c.is_finished());
            }
            for c in calls {
                let _ = c.await;
            }
        }
    };
    // Warm up (allocators, pools, caches), then measure from a steady state.
    run(Duration::from_secs(secs.min(30) / 3 + 1)).await;
    let pids: Vec<(String, u32)> = procs
        .iter()
        .map(|p| (p.name().to_owned(), p.pid().unwrap()))
        .chain([("nats-server".to_owned(), nats.pid())])
        .collect();
    let start: Vec<(u64, usize)> = pids.iter().map(|(_, pid)| footprint(*pid)).collect();
    let (ok0, failed0) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    let started = Instant::now();
    run(Duration::from_secs(secs)).await;
    let elapsed = started.elapsed().as_secs_f64();
    let done = ok.load(Ordering::Relaxed) - ok0;
    let errors = failed.load(Ordering::Relaxed) - failed0;
    println!(
        "soak: {secs} s at {rate} calls/s target: {done} calls ok ({:.0}/s), {errors} failed",
        done as f64 / elapsed
    );
    println!(
        "{:<16} {:>12} {:>12} {:>8} {:>6} {:>6}",
        "process", "RSS start", "RSS end", "growth", "fds", "fds"
    );
    for ((name, pid), (rss0, fd0)) in pids.iter().zip(&start) {
        let (rss1, fd1) = footprint(*pid);
        println!(
            "{:<16} {:>9} KiB {:>9} KiB {:>7.1}% {:>6} {:>6}",
            format!("{name}:{pid}"),
            rss0,
            rss1,
            (rss1 as f64 - *rss0 as f64) * 100.0 / (*rss0).max(1) as f64,
            fd0,
            fd1
        );
    }
}
