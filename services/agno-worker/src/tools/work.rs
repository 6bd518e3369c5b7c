//! What a console polls: `agno_list_runs` (the caller's detached runs,
//! running and recent) and `agno_list_pending` (the actions waiting for a
//! person's `agno_confirm`). Bounded by `limit`; a record that cannot be
//! read is skipped and counted.

use std::sync::Arc;

use serde_json::{Value, json};
use sophia_kit::schema::ListLimit;
use sophia_kit::{Call, Category, Tool, ToolOutput, ToolResult};

use super::Ctx;
use super::ctx::store_error;
use super::jobs::phase_name;
use crate::agent::now_ms;
use crate::jobs::RunJob;
use crate::run::PendingAction;

/// How much of a step's result the list shows, in characters.
const OUTCOME_CHARS: usize = 200;

/// The `{limit?}` every list here takes.
const LIMIT: ListLimit = ListLimit::STANDARD;

/// `agno_list_runs`.
pub(super) fn list_runs(ctx: &Arc<Ctx>) -> Tool {
    Tool::new(
        "agno_list_runs",
        Category::Agents,
        "Lists your detached agent runs, running and recent, newest first: state, the tool \
         calls made so far, the question a waiting run asks (answer it with agno_confirm and \
         its action_id, or agno_answer_run), and how it ended.",
    )
    .input_schema(LIMIT.schema())
    .read_only()
    .idempotent()
    .with_ctx(ctx, run_list_runs)
}

async fn run_list_runs(ctx: Arc<Ctx>, call: Call) -> ToolResult {
    // Only the principal who started a run follows it (as agno_get_run).
    let me = call.caller.principal.clone();
    let listed = ctx
        .runner
        .store
        .recent_jobs(LIMIT.of(&call.args), |j| j.started_by == me)
        .await
        .map_err(store_error)?;
    let now = now_ms();
    let runs: Vec<Value> = listed
        .items
        .into_iter()
        .map(|j| run_item(j.as_seen(now)))
        .collect();
    let lines: Vec<String> = runs
        .iter()
        .map(|r| {
            format!(
                "{} {}: {}",
                r["run_id"].as_str().unwrap_or(""),
                r["agent_type"].as_str().unwrap_or(""),
                r["state"].as_str().unwrap_or("")
            )
        })
        .collect();
    let mut out = ToolOutput::text(match lines.is_empty() {
        true => "no detached agent runs of yours".to_owned(),
        false => format!("{} runs:\n{}", lines.len(), lines.join("\n")),
    });
    out.structured = Some(json!({"runs": runs, "skipped": listed.skipped}));
    Ok(out)
}

/// A run as the list shows it: its steps are those of its latest result
/// (a run that paused, or ended), with a short outcome each.
fn run_item(job: RunJob) -> Value {
    let steps: Vec<Value> = job
        .result
        .as_ref()
        .and_then(|r| r["steps"].as_array())
        .map(|steps| steps.iter().map(step_item).collect())
        .unwrap_or_default();
    let question = job
        .question
        .as_ref()
        .map(|q| json!({"action_id": q.key, "message": q.message, "confirm_with": "agno_confirm"}));
    json!({"run_id": job.id, "agent_id": job.agent_id, "agent_type": job.agent_type,
        "state": phase_name(job.state), "started_by": job.started_by,
        "progress": job.progress, "message": job.message, "steps": steps,
        "question": question, "decided_by": job.decided_by,
        "cancel_requested": job.cancel_requested, "started_ms": job.started_ms,
        "updated_ms": job.updated_ms})
}

/// A step as `{tool, ok, outcome}`, its result cut short.
fn step_item(step: &Value) -> Value {
    let result = step["result"].as_str().unwrap_or_default();
    let mut outcome: String = result.chars().take(OUTCOME_CHARS).collect();
    if outcome.len() < result.len() {
        outcome.push('…');
    }
    json!({"tool": step["tool"], "ok": step["is_error"] != json!(true), "outcome": outcome})
}

/// `agno_list_pending`.
pub(super) fn list_pending(ctx: &Arc<Ctx>) -> Tool {
    Tool::new(
        "agno_list_pending",
        Category::Agents,
        "Lists the agents' pending actions (destructive tool calls waiting for a person), \
         newest first: the tool, its arguments and the plan it applies. Decide each with \
         agno_confirm {action_id, approve}.",
    )
    .input_schema(LIMIT.schema())
    .read_only()
    .idempotent()
    .with_ctx(ctx, run_list_pending)
}

async fn run_list_pending(ctx: Arc<Ctx>, call: Call) -> ToolResult {
    let listed = ctx
        .runner
        .store
        .pending_actions(LIMIT.of(&call.args))
        .await
        .map_err(store_error)?;
    let pending: Vec<Value> = listed.items.iter().map(pending_item).collect();
    let lines: Vec<String> = listed
        .items
        .iter()
        .map(|a| {
            format!(
                "{}: {} wants {} with {}",
                a.id, a.run.agent_type, a.tool, a.arguments
            )
        })
        .collect();
    let mut out = ToolOutput::text(match lines.is_empty() {
        true => "no actions wait for a person".to_owned(),
        false => format!(
            "{} actions wait for a person (agno_confirm with action_id and approve):\n{}",
            lines.len(),
            lines.join("\n")
        ),
    });
    out.structured = Some(json!({"pending": pending, "skipped": listed.skipped}));
    Ok(out)
}

/// A pending action as the list shows it.
fn pending_item(a: &PendingAction) -> Value {
    json!({"action_id": a.id, "agent_id": a.agent_id, "agent_type": a.run.agent_type,
        "tool": a.tool, "arguments": a.arguments, "plan": a.plan, "run_id": a.job,
        "created_ms": a.created_ms, "confirm_with": "agno_confirm"})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_shows_its_tool_and_a_short_outcome() {
        let long = "x".repeat(1000);
        let step = step_item(&json!({"tool": "pulumi_preview", "arguments": {},
            "result": long, "is_error": false}));
        assert_eq!(step["tool"], "pulumi_preview");
        assert_eq!(step["ok"], true);
        assert_eq!(
            step["outcome"].as_str().unwrap().chars().count(),
            OUTCOME_CHARS + 1
        );
        let failed = step_item(&json!({"tool": "t", "result": "error: no", "is_error": true}));
        assert_eq!(failed["ok"], false);
        assert_eq!(failed["outcome"], "error: no");
    }
}
