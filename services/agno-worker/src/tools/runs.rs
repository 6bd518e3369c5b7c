//! The front door to runs: send a message to an agent, or answer a paused
//! run's pending action. Either way the run itself is forwarded to a replica
//! of the agent's category (`replica.rs`).

use std::sync::Arc;

use serde_json::json;
use sophia_kit::{Call, Category, Tool, ToolResult, WireError};

use super::ctx::{forward, store_error};
use super::{ALLOW_MISSING_TOOLS, Ctx, RUN_TIMEOUT_MS};
use crate::run::{ActionStatus, PendingAction};

/// `agno_run_agent`.
pub(super) fn run_agent(ctx: &Arc<Ctx>) -> Tool {
    Tool::new(
        "agno_run_agent",
        Category::Agents,
        "Sends a message to an agent (by agent_id, or a new one of agent_type) and runs it to \
         an answer. Returns the answer, the steps taken (tool calls and results) and token \
         usage; or, before a destructive tool, a pending action to confirm with agno_confirm. \
         Detached (an MCP task), it answers at once with the run's record (agno_get_run).",
    )
    .input_schema(json!({"type": "object", "properties": {
        "agent_id": {"type": "string"},
        "agent_type": {"type": "string"},
        "message": {"type": "string"},
        "session_id": {"type": "string"},
        "allow_missing_tools": ALLOW_MISSING_TOOLS.clone()},
        "required": ["message"], "additionalProperties": false}))
    .timeout_ms(RUN_TIMEOUT_MS)
    .runs_as_job("agno_get_run", "agno_cancel_run")
    .job_answered_by("agno_answer_run")
    .with_ctx(ctx, run_run_agent)
}

async fn run_run_agent(ctx: Arc<Ctx>, call: Call) -> ToolResult {
    let message = &call.args["message"];
    let record = match (
        call.args["agent_id"].as_str(),
        call.args["agent_type"].as_str(),
    ) {
        (Some(id), _) => ctx.agent(id).await?,
        (None, Some(ty)) => return ctx.create_and_run(&call, ty, message).await,
        (None, None) => {
            return Err(WireError::invalid_arguments(
                "give an agent_id, or an agent_type to create a new agent",
            ));
        }
    };
    ctx.tools_ready(ctx.template(&record.agent_type)?, &call.args)?;
    ctx.forward_run(&call, &record, message).await
}

/// `agno_confirm`.
pub(super) fn confirm(ctx: &Arc<Ctx>) -> Tool {
    Tool::new(
        "agno_confirm",
        Category::Agents,
        "Answers an agent's pending action (a destructive tool call waiting for a person): \
         approve=true runs it and resumes the agent, approve=false tells the agent no. Each \
         action is decided once.",
    )
    .input_schema(json!({"type": "object", "properties": {
        "action_id": {"type": "string"}, "approve": {"type": "boolean"}},
        "required": ["action_id", "approve"], "additionalProperties": false}))
    .destructive()
    .timeout_ms(RUN_TIMEOUT_MS)
    .with_ctx(ctx, run_confirm)
}

async fn run_confirm(ctx: Arc<Ctx>, call: Call) -> ToolResult {
    let id = call.args["action_id"].as_str().unwrap_or_default();
    let approve = call.args["approve"].as_bool().unwrap_or(false);
    let action = ctx
        .runner
        .store
        .decide(id, ActionStatus::decided(approve), &call.caller.principal)
        .await
        .map_err(store_error)?
        .ok_or_else(|| WireError::invalid_arguments(format!("no pending action {id}")))?;
    resume(&ctx, &call, action, approve).await
}

/// Resumes a paused run with a person's decision (already taken, once), on
/// a replica of its category: a detached run's (an MCP task's) as its job,
/// answered at once with the job's record; any other waited for.
pub(super) async fn resume(
    ctx: &Ctx,
    call: &Call,
    action: PendingAction,
    approve: bool,
) -> ToolResult {
    tracing::info!(action = %action.id, approve, by = %call.caller.principal, "a person decided");
    let template = ctx.template(&action.run.agent_type)?;
    let mut args = json!({"action_id": action.id, "approve": approve,
        "run": serde_json::to_value(&action.run).unwrap_or_default()});
    let Some(job) = &action.job else {
        return forward(call, template.category, args).await;
    };
    args["job_id"] = json!(job);
    let resumed = forward(call, template.category, args).await;
    if let Err(e) = &resumed {
        let why = format!("the run could not be resumed: {}", e.message);
        let ended = ctx.runner.store.change_job(job, |j| {
            let waiting = j.state == sophia_proto::JobPhase::InputRequired;
            if waiting {
                j.end(sophia_proto::JobPhase::Failed, why.clone(), None);
            }
            waiting
        });
        if let Err(e) = ended.await {
            tracing::warn!(job = %job, cause = %e, "could not record a failed resume");
        }
    }
    resumed
}
