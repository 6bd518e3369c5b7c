//! What is on offer: the agent types, and per category how many agents
//! exist and how many runs are in progress.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Value, json};
use sophia_kit::{Call, Category, Tool, ToolOutput, ToolResult};

use super::ctx::store_error;
use super::{Ctx, no_arguments};

/// `agno_list_agent_types`.
pub(super) fn list_agent_types(ctx: &Arc<Ctx>) -> Tool {
    Tool::new(
        "agno_list_agent_types",
        Category::Agents,
        "The kinds of agent on offer: category, description, model, tools, and which of \
         those tools are not on the mesh right now.",
    )
    .input_schema(no_arguments())
    .read_only()
    .idempotent()
    .with_ctx(ctx, run_list_agent_types)
}

async fn run_list_agent_types(ctx: Arc<Ctx>, _call: Call) -> ToolResult {
    let types: Vec<Value> = ctx
        .templates
        .iter()
        .map(|t| {
            json!({"agent_type": t.agent_type, "category": t.category,
            "description": t.description, "model": t.model, "tools": t.tools,
            "max_steps": t.max_steps, "missing_tools": ctx.runner.missing_tools(t)})
        })
        .collect();
    Ok(ToolOutput::json(json!({"agent_types": types})))
}

/// `agno_agent_stats`.
pub(super) fn agent_stats(ctx: &Arc<Ctx>) -> Tool {
    Tool::new(
        "agno_agent_stats",
        Category::Agents,
        "Per agent category: how many agents exist and how many runs are in progress.",
    )
    .input_schema(no_arguments())
    .read_only()
    .with_ctx(ctx, run_agent_stats)
}

async fn run_agent_stats(ctx: Arc<Ctx>, _call: Call) -> ToolResult {
    let store = &ctx.runner.store;
    let mut per: BTreeMap<String, (u64, u64)> = Category::AGENTS
        .iter()
        .map(|c| (c.as_str().to_owned(), (0, 0)))
        .collect();
    for a in store.agents(100_000).await.map_err(store_error)? {
        per.entry(a.category.as_str().to_owned()).or_default().0 += 1;
    }
    for key in store.runs_in_progress().await.map_err(store_error)? {
        if let Some((cat, _)) = key.split_once('.') {
            per.entry(cat.to_owned()).or_default().1 += 1;
        }
    }
    let categories: serde_json::Map<String, Value> = per
        .into_iter()
        .map(|(k, (agents, runs))| (k, json!({"agents": agents, "runs_in_progress": runs})))
        .collect();
    Ok(ToolOutput::json(json!({"categories": categories})))
}
