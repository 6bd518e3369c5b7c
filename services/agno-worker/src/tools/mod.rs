//! The agent runtime's MCP tools, one file per family.
//!
//! The front door (category `agents`, served by every replica): create, run,
//! confirm, list, get and delete agents, and the category stats. Runs are
//! forwarded ([`sophia_kit::Call::forward`]) to
//! `sophia.v1.tools.<category>.agno_run`, served only by the replicas whose
//! `AGNO_CATEGORIES` include the agent's category, so each category scales
//! on its own. The forwarded call keeps the caller's request id, deadline,
//! progress and questions.
//!
//! # Layout
//! - [`Ctx`] (`ctx.rs`): what the tools share; finding, creating and
//!   forwarding to agents.
//! - `catalog.rs`: the agent types on offer, and the per-category stats.
//! - `agents.rs`: creating, listing, getting and deleting agents.
//! - `runs.rs`: the front door to runs (run an agent, confirm a paused run).
//! - `replica.rs`: a category's runs on this replica (start or resume, the
//!   loop, the result).
//! - `jobs.rs`: detached runs (MCP tasks) by job id: status, cancel, answer.
//! - `detached.rs`: a detached run on this replica, beside its heartbeat.
//! - `work.rs`: the runs and the pending actions, listed for a console.
//!
//! Every tool has the same shape: a `fn` that declares it and a named
//! `async fn run_*(ctx, call)` that runs a call ([`Tool::with_ctx`]).

mod agents;
mod catalog;
mod ctx;
mod detached;
mod jobs;
mod replica;
mod runs;
mod work;

use std::sync::Arc;

use serde_json::{Value, json};
use sophia_kit::{Category, Tool, Worker};
use sophia_proto::subject;

pub use ctx::Ctx;

/// The subject where a category's agent runs are served.
pub fn run_subject(category: Category) -> String {
    subject::tool(category, "agno_run")
}

/// How long the tools that run agents may take.
const RUN_TIMEOUT_MS: u64 = 10 * 60_000;

/// The `allow_missing_tools` argument of the tools that start runs.
static ALLOW_MISSING_TOOLS: std::sync::LazyLock<Value> = std::sync::LazyLock::new(|| {
    json!({"type": "boolean", "default": false,
        "description": "Run even if some of the agent's tools are not on the mesh \
            (by default such a run is refused, with the missing tools named)"})
});

/// The text of a tool's output (its text blocks, one per line).
fn text_of(out: &sophia_kit::ToolOutput) -> String {
    out.content
        .iter()
        .filter_map(|c| match c {
            sophia_kit::Content::Text { text } => Some(text.as_str()),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// No arguments.
fn no_arguments() -> Value {
    json!({"type": "object", "properties": {}, "additionalProperties": false})
}

/// The arguments `{agent_id}`, required.
fn agent_id_schema() -> Value {
    json!({"type": "object", "properties": {"agent_id": {"type": "string"}},
        "required": ["agent_id"], "additionalProperties": false})
}

/// The worker with its tools: the front door, plus the runs of
/// `ctx.categories`.
pub fn worker(ctx: Arc<Ctx>) -> Worker {
    let front_door: [fn(&Arc<Ctx>) -> Tool; 13] = [
        catalog::list_agent_types,
        agents::create_agent,
        runs::run_agent,
        runs::confirm,
        agents::list_agents,
        agents::get_agent,
        agents::delete_agent,
        catalog::agent_stats,
        jobs::get_run,
        jobs::cancel_run,
        jobs::answer_run,
        work::list_runs,
        work::list_pending,
    ];
    let mut w = Worker::new("agno-worker", env!("CARGO_PKG_VERSION"))
        .description("Sophia Mesh agent runtime");
    for tool in front_door {
        w = w.tool(tool(&ctx));
    }
    for &category in &ctx.categories {
        w = w.tool(replica::category_run(&ctx, category));
    }
    w
}
