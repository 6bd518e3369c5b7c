//! Detached runs (MCP tasks), by job id, from any replica: `agno_get_run`
//! reports one, `agno_cancel_run` stops it, `agno_answer_run` carries a
//! person's answer to the question a paused one asks. Only the principal
//! who started a run follows it.

use std::sync::Arc;

use serde_json::{Value, json};
use sophia_kit::{Call, Category, ErrorCode, Tool, ToolOutput, ToolResult, WireError};
use sophia_proto::JobPhase;

use super::Ctx;
use super::ctx::store_error;
use super::runs::resume;
use crate::jobs::RunJob;
use crate::run::ActionStatus;

/// The arguments `{job_id}`.
fn job_id_schema() -> Value {
    json!({"type": "object", "properties": {"job_id": {"type": "string"}},
        "required": ["job_id"], "additionalProperties": false})
}

/// `agno_get_run`: a detached run's state, latest step and result.
pub(super) fn get_run(ctx: &Arc<Ctx>) -> Tool {
    Tool::new(
        "agno_get_run",
        Category::Agents,
        "A detached agent run's state (running, input_required, succeeded, failed, \
         cancelled), its latest step, the question it waits on, and once over its result.",
    )
    .input_schema(job_id_schema())
    .read_only()
    .idempotent()
    .with_ctx(ctx, run_get_run)
}

async fn run_get_run(ctx: Arc<Ctx>, call: Call) -> ToolResult {
    let job = own_job(&ctx, &call).await?;
    Ok(job_output(&job))
}

/// `agno_cancel_run`: stops a detached run, whichever replica runs it.
pub(super) fn cancel_run(ctx: &Arc<Ctx>) -> Tool {
    Tool::new(
        "agno_cancel_run",
        Category::Agents,
        "Stops a detached agent run: a running one at its next step (its current model or \
         tool call is cancelled), a waiting one at once (its pending action is rejected).",
    )
    .input_schema(job_id_schema())
    .idempotent()
    .with_ctx(ctx, run_cancel_run)
}

async fn run_cancel_run(ctx: Arc<Ctx>, call: Call) -> ToolResult {
    let job = own_job(&ctx, &call).await?;
    let who = call.caller.principal.clone();
    let store = &ctx.runner.store;
    let mut waiting_on = None;
    let job = store
        .change_job(&job.id, |j| match j.state {
            JobPhase::Running if !j.cancel_requested => {
                j.cancel_requested = true;
                j.progress = Some(format!("cancel requested by {who}"));
                true
            }
            JobPhase::InputRequired => {
                waiting_on = j.question.as_ref().map(|q| q.key.clone());
                j.end(JobPhase::Cancelled, format!("cancelled by {who}"), None);
                true
            }
            _ => false,
        })
        .await
        .map_err(store_error)?
        .ok_or_else(|| no_run(&job.id))?;
    // A waiting run's action can no longer be confirmed (agno_confirm).
    if let Some(action) = waiting_on {
        let _ = store.decide(&action, ActionStatus::Rejected, &who).await;
    }
    Ok(job_output(&job))
}

/// `agno_answer_run`: a person's answer to a waiting run's question.
pub(super) fn answer_run(ctx: &Arc<Ctx>) -> Tool {
    Tool::new(
        "agno_answer_run",
        Category::Agents,
        "Answers the question a detached agent run waits on (input_required): responses maps \
         the question's key to an MCP elicitation result; accept with confirm=true runs the \
         pending tool call and resumes the run, anything else tells the agent no. Each \
         question is answered once.",
    )
    .input_schema(json!({"type": "object", "properties": {
        "job_id": {"type": "string"}, "responses": {"type": "object"}},
        "required": ["job_id", "responses"], "additionalProperties": false}))
    .destructive()
    .with_ctx(ctx, run_answer_run)
}

async fn run_answer_run(ctx: Arc<Ctx>, call: Call) -> ToolResult {
    let job = own_job(&ctx, &call).await?;
    let question = match (&job.state, &job.question) {
        (JobPhase::InputRequired, Some(q)) => q,
        _ => {
            return Err(WireError::new(
                ErrorCode::Conflict,
                format!(
                    "run {} is not waiting for an answer (it is {}); nothing to answer",
                    job.id,
                    phase_name(job.state)
                ),
            ));
        }
    };
    let response = call.args["responses"].get(&question.key).ok_or_else(|| {
        WireError::invalid_arguments(format!(
            "no answer to the question the run asks (key {}); answer under that key",
            question.key
        ))
    })?;
    let approve = response["action"] == "accept" && response["content"]["confirm"] == true;
    let action = ctx
        .runner
        .store
        .decide(
            &question.key,
            ActionStatus::decided(approve),
            &call.caller.principal,
        )
        .await
        .map_err(store_error)?
        .ok_or_else(|| no_run(&job.id))?;
    resume(&ctx, &call, action, approve).await
}

/// The run of the `job_id` argument, if the caller started it.
async fn own_job(ctx: &Ctx, call: &Call) -> Result<RunJob, WireError> {
    let id = call.args["job_id"].as_str().unwrap_or_default();
    match ctx.runner.store.job(id).await.map_err(store_error)? {
        Some(job) if job.started_by == call.caller.principal => Ok(job),
        _ => Err(no_run(id)),
    }
}

fn no_run(id: &str) -> WireError {
    WireError::invalid_arguments(format!(
        "no detached run {id} of yours (records expire with sessions); run the agent again"
    ))
}

pub(super) fn phase_name(state: JobPhase) -> String {
    serde_json::to_value(state)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// A run's record as a tool's result: a line for people, the record as
/// structured content (a `JobReport`, with the run's own fields).
pub(super) fn job_output(job: &RunJob) -> ToolOutput {
    let text = match job.state {
        JobPhase::Running => format!(
            "run {} of the {} is running ({}); follow it with agno_get_run",
            job.id,
            job.agent_type,
            job.progress.as_deref().unwrap_or("starting")
        ),
        JobPhase::InputRequired => format!(
            "run {} waits for a person: {}",
            job.id,
            job.question
                .as_ref()
                .map(|q| q.message.as_str())
                .unwrap_or("")
        ),
        JobPhase::Succeeded => job.message.clone().unwrap_or_default(),
        other => format!(
            "run {} {}: {}",
            job.id,
            phase_name(other),
            job.message.as_deref().unwrap_or("")
        ),
    };
    let mut out = ToolOutput::text(text);
    out.structured = serde_json::to_value(job).ok();
    out
}
