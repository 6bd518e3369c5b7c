//! An agent's life: created (and perhaps run at once), listed, looked at,
//! deleted.

use std::sync::Arc;

use serde_json::json;
use sophia_kit::{Call, Category, Tool, ToolOutput, ToolResult};

use super::ctx::store_error;
use super::{ALLOW_MISSING_TOOLS, Ctx, RUN_TIMEOUT_MS, agent_id_schema};

/// `agno_create_agent`.
pub(super) fn create_agent(ctx: &Arc<Ctx>) -> Tool {
    Tool::new(
        "agno_create_agent",
        Category::Agents,
        "Creates an agent of a type (see agno_list_agent_types). With a task, runs it at once \
         and returns the answer, the steps taken and the token usage.",
    )
    .input_schema(json!({"type": "object", "properties": {
        "agent_type": {"type": "string", "description": "e.g. gong_agent, pulumi_agent"},
        "task": {"type": "string", "description": "Work to start on straight away"},
        "session_id": {"type": "string", "description": "Continue this session instead of starting one"},
        "allow_missing_tools": ALLOW_MISSING_TOOLS.clone()},
        "required": ["agent_type"], "additionalProperties": false}))
    .timeout_ms(RUN_TIMEOUT_MS)
    .with_ctx(ctx, run_create_agent)
}

async fn run_create_agent(ctx: Arc<Ctx>, call: Call) -> ToolResult {
    let agent_type = call.args["agent_type"].as_str().unwrap_or_default();
    if call.args["task"].is_string() {
        return ctx
            .create_and_run(&call, agent_type, &call.args["task"])
            .await;
    }
    let record = ctx
        .create(agent_type, call.args["session_id"].as_str())
        .await?;
    let template = ctx.template(&record.agent_type)?;
    let mut out = ToolOutput::text(format!(
        "created {} {} (session {})",
        record.agent_type, record.id, record.session_id
    ));
    out.structured = Some(
        json!({"agent_id": record.id, "agent_type": record.agent_type,
        "category": record.category, "session_id": record.session_id,
        "missing_tools": ctx.runner.missing_tools(template)}),
    );
    Ok(out)
}

/// `agno_list_agents`.
pub(super) fn list_agents(ctx: &Arc<Ctx>) -> Tool {
    Tool::new(
        "agno_list_agents",
        Category::Agents,
        "The agents that exist, oldest first.",
    )
    .input_schema(json!({"type": "object", "properties": {
        "limit": {"type": "integer", "minimum": 1, "maximum": 1000}}, "additionalProperties": false}))
    .read_only()
    .with_ctx(ctx, run_list_agents)
}

async fn run_list_agents(ctx: Arc<Ctx>, call: Call) -> ToolResult {
    let limit = call.args["limit"].as_u64().unwrap_or(100) as usize;
    let agents = ctx.runner.store.agents(limit).await.map_err(store_error)?;
    Ok(ToolOutput::json(json!({"agents": agents})))
}

/// `agno_get_agent`.
pub(super) fn get_agent(ctx: &Arc<Ctx>) -> Tool {
    Tool::new(
        "agno_get_agent",
        Category::Agents,
        "One agent, with the length of its session.",
    )
    .input_schema(agent_id_schema())
    .read_only()
    .idempotent()
    .with_ctx(ctx, run_get_agent)
}

async fn run_get_agent(ctx: Arc<Ctx>, call: Call) -> ToolResult {
    let record = ctx
        .agent(call.args["agent_id"].as_str().unwrap_or_default())
        .await?;
    let (session, _) = ctx
        .runner
        .store
        .session(&record.session_id)
        .await
        .map_err(store_error)?;
    let mut v = serde_json::to_value(&record).unwrap_or_default();
    v["session_messages"] = json!(session.messages.len());
    Ok(ToolOutput::json(v))
}

/// `agno_delete_agent`.
pub(super) fn delete_agent(ctx: &Arc<Ctx>) -> Tool {
    Tool::new(
        "agno_delete_agent",
        Category::Agents,
        "Deletes an agent (its session stays until it expires).",
    )
    .input_schema(agent_id_schema())
    .destructive()
    .idempotent()
    .with_ctx(ctx, run_delete_agent)
}

async fn run_delete_agent(ctx: Arc<Ctx>, call: Call) -> ToolResult {
    let id = call.args["agent_id"].as_str().unwrap_or_default();
    let existed = ctx
        .runner
        .store
        .delete_agent(id)
        .await
        .map_err(store_error)?;
    Ok(ToolOutput::json(
        json!({"agent_id": id, "deleted": existed}),
    ))
}
