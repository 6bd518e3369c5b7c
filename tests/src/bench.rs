//! What the bench programs (`tests/benches/`) share: a plan, one path's
//! figures (p50 and p99 of sequential calls, throughput with many in
//! flight), and the table they print.

use std::future::Future;
use std::time::{Duration, Instant};

/// Calls in flight when throughput is measured.
pub const IN_FLIGHT: usize = 64;

/// How many calls each path gets.
pub struct Plan {
    /// Calls before measuring.
    pub warmup: usize,
    /// Calls one after another, for latency.
    pub sequential: usize,
    /// Calls with [`IN_FLIGHT`] at a time, for throughput.
    pub concurrent: usize,
}

/// One path's figures.
pub struct Figures {
    /// The path.
    pub name: &'static str,
    /// Median latency of the sequential calls.
    pub p50: Duration,
    /// 99th percentile of the sequential calls.
    pub p99: Duration,
    /// Calls per second with [`IN_FLIGHT`] at a time.
    pub throughput: f64,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Measures `op` (one call of the path `name`) as `plan` says.
pub async fn measure<F, Fut>(name: &'static str, plan: &Plan, op: F) -> Figures
where
    F: Fn() -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send,
{
    measure_each(name, plan, move |_| op()).await
}

/// [`measure`] for an op told which of the [`IN_FLIGHT`] callers makes the
/// call (0 for the sequential calls), e.g. to give each caller its own
/// session.
pub async fn measure_each<F, Fut>(name: &'static str, plan: &Plan, op: F) -> Figures
where
    F: Fn(usize) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send,
{
    eprintln!("measuring {name}");
    for _ in 0..plan.warmup {
        op(0).await;
    }
    let mut samples = Vec::with_capacity(plan.sequential);
    for _ in 0..plan.sequential {
        let t = Instant::now();
        op(0).await;
        samples.push(t.elapsed());
    }
    samples.sort();
    let per_task = plan.concurrent / IN_FLIGHT;
    let started = Instant::now();
    let tasks: Vec<_> = (0..IN_FLIGHT)
        .map(|caller| {
            let op = op.clone();
            tokio::spawn(async move {
                for _ in 0..per_task {
                    op(caller).await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("bench task");
    }
    Figures {
        name,
        p50: percentile(&samples, 0.50),
        p99: percentile(&samples, 0.99),
        throughput: (per_task * IN_FLIGHT) as f64 / started.elapsed().as_secs_f64(),
    }
}

/// Prints `rows` as a table: path, p50, p99, req/s.
pub fn print_table(rows: &[&Figures]) {
    println!("{:<48} {:>10} {:>10} {:>14}", "path", "p50", "p99", "req/s");
    for f in rows {
        println!(
            "{:<48} {:>8.0}µs {:>8.0}µs {:>14.0}",
            f.name,
            f.p50.as_secs_f64() * 1e6,
            f.p99.as_secs_f64() * 1e6,
            f.throughput
        );
    }
}

/// An op for [`measure`]: one `tools/call` with `params` (`{"name", "arguments"}`)
/// POSTed in `session` by a minimal HTTP client, each with its own JSON-RPC
/// id (ids must be unique among requests in flight); it checks the call
/// succeeded.
pub fn raw_tools_call(
    session: std::sync::Arc<crate::raw::RawSession>,
    params: serde_json::Value,
) -> impl Fn() -> futures::future::BoxFuture<'static, ()> + Clone + Send + Sync + 'static {
    let call = raw_tools_call_in(std::sync::Arc::new(vec![session]), params);
    move || call(0)
}

/// An op for [`measure_each`]: [`raw_tools_call`] in caller `i`'s session,
/// `sessions[i % sessions.len()]`.
pub fn raw_tools_call_in(
    sessions: std::sync::Arc<Vec<std::sync::Arc<crate::raw::RawSession>>>,
    params: serde_json::Value,
) -> impl Fn(usize) -> futures::future::BoxFuture<'static, ()> + Clone + Send + Sync + 'static {
    let ids = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(1));
    move |caller| {
        let session = sessions[caller % sessions.len()].clone();
        let params = params.clone();
        let id = ids.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Box::pin(async move {
            let call = serde_json::json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": params});
            let r = session.post(call).await;
            assert_eq!(r.status, 200);
            assert!(
                r.messages.iter().any(|m| m["result"]["isError"] == false),
                "{:?}",
                r.messages
            );
        })
    }
}
