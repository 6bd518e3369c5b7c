//! `pulumi_reject_preview`: a person turns a saved preview down, so it is
//! never applied. The rejection claims the preview's job id
//! ([`crate::jobs::JobStore::reject`]), the same key `pulumi_up` and
//! `pulumi_destroy` claim to apply it: exactly one of the two wins.

use std::sync::Arc;

use serde_json::json;
use sophia_kit::{Call, Category, ErrorCode, Tool, ToolOutput, ToolResult, WireError};

use super::changes::Kind;
use super::plans::read_preview;
use super::{Ctx, job_error, name};
use crate::jobs::{Job, JobError, JobState, MAX_REASON_LEN, Rejected, Rejection};

/// `pulumi_reject_preview`.
pub(super) fn reject_preview(ctx: &Arc<Ctx>) -> Tool {
    Tool::new(
        "pulumi_reject_preview",
        Category::Infrastructure,
        "Turns down a saved preview (its preview_id) on a person's behalf, so it can never be \
         applied; records who rejected it and why. Rejecting twice is no error; a preview \
         already being applied or applied cannot be rejected.",
    )
    .input_schema(json!({"type": "object", "properties": {
        "preview_id": {"type": "string", "description": "The id pulumi_preview returned"},
        "reason": {"type": "string", "maxLength": MAX_REASON_LEN,
            "description": "Why, for the record"}},
        "required": ["preview_id"], "additionalProperties": false}))
    .idempotent()
    .with_ctx(ctx, run_reject_preview)
}

async fn run_reject_preview(c: Arc<Ctx>, call: Call) -> ToolResult {
    let id = name(&call, "preview_id")?;
    // Decided already? Then the preview itself need not exist any more.
    if let Some(job) = c.jobs.get(&id).await.map_err(job_error)? {
        return decided(job);
    }
    let record = read_preview(&c, &id).await?;
    let kind = match record["kind"].as_str() {
        Some("destroy") => Kind::Destroy,
        _ => Kind::Update,
    };
    let rejection = Rejection {
        id: id.clone(),
        project: record["project"].as_str().unwrap_or_default().to_owned(),
        stack: record["stack"].as_str().unwrap_or_default().to_owned(),
        operation: kind.verb().to_owned(),
        previewed_by: record["previewed_by"].as_str().map(str::to_owned),
        by: call.caller.principal.clone(),
        reason: call.args["reason"].as_str().map(str::to_owned),
    };
    match c.jobs.reject(&rejection).await {
        Ok(Rejected::Now(job)) => {
            tracing::info!(preview = %id, by = %call.caller.principal, "a preview was rejected");
            Ok(rejected_output(&job, false))
        }
        Ok(Rejected::Before(job)) => Ok(rejected_output(&job, true)),
        Err(JobError::AlreadyStarted(job)) => decided(*job),
        Err(e) => Err(job_error(e)),
    }
}

/// The answer for a preview a job record already decided: rejected before
/// (no error), or being applied or applied (a conflict).
fn decided(job: Job) -> ToolResult {
    if job.rejected_by.is_some() {
        return Ok(rejected_output(&job, true));
    }
    let state = match job.state {
        JobState::Running => "is being applied",
        _ => "was already applied",
    };
    Err(WireError::new(
        ErrorCode::Conflict,
        format!(
            "preview {} {state} (job {}, {}{}); it can no longer be rejected{}",
            job.id,
            job.id,
            serde_json::to_value(job.state)
                .ok()
                .and_then(|s| s.as_str().map(str::to_owned))
                .unwrap_or_default(),
            job.confirmed_by
                .as_deref()
                .map(|p| format!(", confirmed by {p}"))
                .unwrap_or_default(),
            match job.state {
                JobState::Running => "; pulumi_cancel stops it",
                _ => "",
            }
        ),
    ))
}

/// A rejection as a tool's result.
fn rejected_output(job: &Job, before: bool) -> ToolOutput {
    let message = job.message.clone().unwrap_or_default();
    let text = match before {
        false => format!(
            "preview {} of {}/{} {message}; it will not be applied",
            job.id, job.project, job.stack
        ),
        true => format!(
            "preview {} of {}/{} was already {message}",
            job.id, job.project, job.stack
        ),
    };
    let mut out = ToolOutput::text(text);
    out.structured = Some(json!({"preview_id": job.id, "project": job.project,
        "stack": job.stack, "operation": job.operation, "rejected_by": job.rejected_by,
        "message": job.message, "already_rejected": before}));
    out
}

/// The error `pulumi_up` and `pulumi_destroy` answer for a preview someone
/// rejected, if `job` is that rejection.
pub(super) fn refused_as_rejected(job: &Job) -> Option<WireError> {
    let by = job.rejected_by.as_deref()?;
    Some(WireError::new(
        ErrorCode::Conflict,
        format!(
            "preview {} was rejected by {by} ({}), so nothing was changed; run pulumi_preview \
             again for a new preview",
            job.id,
            job.message.as_deref().unwrap_or("rejected")
        ),
    ))
}
