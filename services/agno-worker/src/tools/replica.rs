//! A category's runs on this replica (`agno_run_<category>`, on the
//! category's run subject, forwarded here by the front door): start a run
//! with a new message or resume a paused one, drive the loop, and turn how
//! it ended into the tool's result. A call with a `job_id` (a detached
//! start or resume, an MCP task) is driven as that job (`detached.rs`).

use std::sync::Arc;

use serde_json::json;
use sophia_kit::{Call, Category, Tool, ToolOutput, ToolResult, WireError};
use sophia_proto::chat::{Message, Role, ToolCall};

use super::ctx::store_error;
use super::{Ctx, RUN_TIMEOUT_MS, run_subject};
use crate::run::{Decision, RunState};
use crate::runner::Outcome;
use crate::templates::Template;

/// `agno_run_<category>`: not announced; the front door forwards to it.
pub(super) fn category_run(ctx: &Arc<Ctx>, category: Category) -> Tool {
    Tool::new(
        format!("agno_run_{category}"),
        category,
        format!("Runs {category} agents (forwarded here by the agents front door)."),
    )
    .on_subject(run_subject(category))
    .unannounced()
    .timeout_ms(RUN_TIMEOUT_MS)
    .with_ctx(ctx, run_category_run)
}

/// A run on this replica: a new message, or a paused run resumed.
async fn run_category_run(ctx: Arc<Ctx>, call: Call) -> ToolResult {
    let resuming = call.args["action_id"].is_string();
    let (template, mut state) = if resuming {
        resumed(&ctx, &call)?
    } else {
        started(&ctx, &call).await?
    };
    // Checked again here: this replica's view of the mesh is what the run uses.
    let missing = if resuming {
        ctx.runner.missing_tools(&template)
    } else {
        ctx.tools_ready(&template, &call.args)?
    };
    if !missing.is_empty() {
        call.progress(
            0.0,
            None,
            Some(format!("not on the mesh right now: {}", missing.join(", "))),
        )
        .await;
    }
    if let Some(job_id) = call.args["job_id"].as_str() {
        let run = super::detached::Run {
            template,
            state,
            missing,
        };
        return super::detached::start(&ctx, &call, job_id, run).await;
    }
    let store = &ctx.runner.store;
    let category = template.category.as_str();
    let run_id = call.id.simple().to_string();
    store.run_started(category, &run_id).await;
    let outcome = ctx.runner.drive(&call, &template, &mut state).await;
    store.run_finished(category, &run_id).await;
    finish(&ctx, &template, &state, outcome?, &missing).await
}

/// A paused run, with the person's decision on its first queued call.
fn resumed(ctx: &Ctx, call: &Call) -> Result<(Arc<Template>, RunState), WireError> {
    let mut state: RunState = serde_json::from_value(call.args["run"].clone())
        .map_err(|e| WireError::invalid_arguments(format!("a malformed paused run: {e}")))?;
    let first = state.queued.first().map(ToolCall::id).unwrap_or_default();
    state.decided = Some(Decision {
        tool_call_id: first.to_owned(),
        approve: call.args["approve"].as_bool().unwrap_or(false),
    });
    tracing::info!(action = %call.args["action_id"].as_str().unwrap_or_default(), "resuming a paused run");
    Ok((ctx.template(&state.agent_type)?.clone(), state))
}

/// A new run: the template's instructions, the session so far, and the
/// caller's message.
async fn started(ctx: &Ctx, call: &Call) -> Result<(Arc<Template>, RunState), WireError> {
    let agent_id = call.args["agent_id"].as_str().unwrap_or_default();
    let record = ctx.agent(agent_id).await?;
    let template = ctx.template(&record.agent_type)?.clone();
    let session_id = call.args["session_id"]
        .as_str()
        .unwrap_or(&record.session_id)
        .to_owned();
    let (session, _) = ctx
        .runner
        .store
        .session(&session_id)
        .await
        .map_err(store_error)?;
    let mut messages = vec![Message::new(Role::System, template.instructions.clone())];
    messages.extend(session.messages);
    let new_from = messages.len();
    messages.push(Message::new(Role::User, call.args["message"].clone()));
    let state = RunState {
        agent_id: record.id,
        agent_type: record.agent_type,
        session_id,
        messages,
        new_from,
        ..RunState::default()
    };
    Ok((template, state))
}

/// The tool's result for how the run ended; an answer (or the step limit)
/// saves the run's messages to the session, a pause stores the pending
/// action.
pub(super) async fn finish(
    ctx: &Ctx,
    template: &Template,
    state: &RunState,
    outcome: Outcome,
    missing: &[String],
) -> ToolResult {
    let store = &ctx.runner.store;
    let mut result = json!({"agent_id": state.agent_id, "agent_type": state.agent_type,
        "session_id": state.session_id, "steps": state.steps, "turns": state.turns,
        "usage": state.usage, "missing_tools": missing});
    let text = match outcome {
        Outcome::Answered(answer) => {
            store
                .append(&state.session_id, state.new_messages())
                .await
                .map_err(store_error)?;
            result["status"] = json!("completed");
            result["answer"] = json!(answer);
            answer
        }
        Outcome::StepLimit => {
            store
                .append(&state.session_id, state.new_messages())
                .await
                .map_err(store_error)?;
            result["status"] = json!("step_limit");
            format!(
                "stopped after {} model turns (the {} template's max_steps) without a final answer; \
                 the steps so far are in the result",
                state.turns, template.agent_type
            )
        }
        Outcome::Paused(action) => {
            store.put_pending(&action).await.map_err(store_error)?;
            result["status"] = json!("awaiting_confirmation");
            result["pending_action"] = json!({"action_id": action.id, "tool": action.tool,
                "arguments": action.arguments, "plan": action.plan, "confirm_with": "agno_confirm"});
            format!(
                "the agent wants to run {} with {}; a person must confirm: call agno_confirm with \
                 action_id={} and approve=true (or false)",
                action.tool, action.arguments, action.id
            )
        }
    };
    let mut missing_note = String::new();
    if !missing.is_empty() {
        missing_note = format!(
            "\n\nnote: these tools of the {} are not on the mesh right now: {}",
            template.agent_type,
            missing.join(", ")
        );
    }
    let mut out = ToolOutput::text(format!("{text}{missing_note}"));
    out.structured = Some(result);
    Ok(out)
}
