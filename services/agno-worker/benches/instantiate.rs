//! Agent instantiation: an agent from a template with one tool, 100,000
//! times. Prints the median and p95 nanoseconds per agent (timed in batches
//! of 1,000) and the heap bytes per agent (a counting global allocator),
//! beside Agno's published figures (about 3 µs and 6.6 KiB per agent,
//! object construction only).
//!
//! `cargo bench -p agno-worker --bench instantiate` for the numbers;
//! without `--bench` (as `cargo test --all-targets` runs it) it makes a
//! small smoke pass.

use std::alloc::System;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use agno_worker::agent::Agent;
use agno_worker::templates::Template;
use sophia_kit::Category;
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const AGNO_NS: f64 = 3_000.0;
const AGNO_BYTES: f64 = 6.6 * 1024.0;

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (agents, batch) = if full { (100_000, 1_000) } else { (2_000, 100) };
    let template = Arc::new(Template {
        agent_type: "pulumi_agent".into(),
        category: Category::Infrastructure,
        description: "Inspects, previews and deploys Pulumi stacks.".into(),
        instructions: "Preview before you change anything.".into(),
        model: "default".into(),
        tools: vec!["pulumi_preview".into()],
        max_steps: 8,
        output_schema: None,
    });
    // Warm up (the id prefix, the allocator, the caches).
    for _ in 0..batch {
        black_box(Box::new(Agent::new(&template, 1)));
    }

    // Time: batches of `batch` agents, each kept alive (boxed, as a
    // registry would hold it) until the batch ends.
    let mut per_agent_ns = Vec::with_capacity(agents / batch);
    let mut kept: Vec<Box<Agent>> = Vec::with_capacity(batch);
    for _ in 0..agents / batch {
        let start = Instant::now();
        for i in 0..batch {
            kept.push(Box::new(Agent::new(black_box(&template), i as u64)));
        }
        per_agent_ns.push(start.elapsed().as_nanos() as f64 / batch as f64);
        black_box(&kept);
        kept.clear();
    }
    per_agent_ns.sort_by(|a, b| a.total_cmp(b));
    let median = per_agent_ns[per_agent_ns.len() / 2];
    let p95 = per_agent_ns[per_agent_ns.len() * 95 / 100];

    // Heap: bytes allocated while making `agents` agents, the holding
    // vector's own allocation excluded (reserved before counting).
    let mut held: Vec<Box<Agent>> = Vec::with_capacity(agents);
    let region = Region::new(GLOBAL);
    for i in 0..agents {
        held.push(Box::new(Agent::new(&template, i as u64)));
    }
    let change = region.change();
    black_box(&held);
    let bytes = change.bytes_allocated as f64 / agents as f64;

    println!("agent instantiation ({agents} agents, template with one tool)");
    println!("{:<34}{:>12}{:>12}", "", "ns/agent", "heap B");
    println!(
        "{:<34}{:>12.1}{:>12.0}",
        "sophia (median of batches)", median, bytes
    );
    println!("{:<34}{:>12.1}", "sophia (p95 of batches)", p95);
    println!(
        "{:<34}{:>12.0}{:>12.0}",
        "Agno, published", AGNO_NS, AGNO_BYTES
    );
    println!(
        "ratio vs Agno: {:.0}x faster, {:.0}x less memory (targets: <= 300 ns, <= 1024 B)",
        AGNO_NS / median,
        AGNO_BYTES / bytes
    );
    assert!(bytes > 0.0, "the counting allocator saw the agents");
}
