//! Jobs, by id, from any replica: `pulumi_job` and `pulumi_cancel`.

use std::sync::Arc;

use serde_json::{Value, json};
use sophia_kit::{Call, Category, Tool, ToolOutput, ToolResult, WireError};

use super::{Ctx, job_error, name};
use crate::jobs::{Job, JobState};

/// The arguments `{job_id}`.
fn job_id() -> Value {
    json!({
        "type": "object",
        "properties": {"job_id": {"type": "string"}},
        "required": ["job_id"],
        "additionalProperties": false
    })
}

/// `pulumi_job`: a job's status and result.
pub(super) fn job(ctx: &Arc<Ctx>) -> Tool {
    Tool::new(
        "pulumi_job",
        Category::Infrastructure,
        "A Pulumi job's status and result, by job id.",
    )
    .input_schema(job_id())
    .read_only()
    .idempotent()
    .with_ctx(ctx, run_job)
}

async fn run_job(c: Arc<Ctx>, call: Call) -> ToolResult {
    let id = name(&call, "job_id")?;
    let job = c.jobs.get(&id).await.map_err(job_error)?;
    found(job, &id)
}

/// `pulumi_cancel`: asks a running job to stop.
pub(super) fn cancel(ctx: &Arc<Ctx>) -> Tool {
    Tool::new(
        "pulumi_cancel",
        Category::Infrastructure,
        "Asks a running Pulumi job to stop (a graceful cancel).",
    )
    .input_schema(job_id())
    .with_ctx(ctx, run_cancel)
}

async fn run_cancel(c: Arc<Ctx>, call: Call) -> ToolResult {
    let id = name(&call, "job_id")?;
    let job = c.jobs.request_cancel(&id).await.map_err(job_error)?;
    found(job, &id)
}

/// The job as a tool's result, or "no job" when there is none.
fn found(job: Option<Job>, id: &str) -> ToolResult {
    match job {
        Some(job) => Ok(job_output(&job)),
        None => Err(WireError::invalid_arguments(format!("no job {id}"))),
    }
}

/// A job's record as a tool's result: a line for people (with who
/// previewed and confirmed it), the record as structured content.
pub(super) fn job_output(job: &Job) -> ToolOutput {
    let text = match job.state {
        JobState::Running => format!(
            "job {} is running ({} {}/{}{}); call pulumi_job later for its result",
            job.id,
            job.operation,
            job.project,
            job.stack,
            attribution(job)
        ),
        other => format!(
            "job {} {:?}: {}{}",
            job.id,
            other,
            job.message.clone().unwrap_or_default(),
            attribution(job)
        ),
    };
    let mut out = ToolOutput::text(text);
    out.structured = serde_json::to_value(job).ok();
    out
}

/// `, previewed by alice, confirmed by bob`, as far as the record knows.
fn attribution(job: &Job) -> String {
    let mut out = String::new();
    if let Some(p) = &job.previewed_by {
        out.push_str(&format!(", previewed by {p}"));
    }
    if let Some(p) = &job.confirmed_by {
        out.push_str(&format!(", confirmed by {p}"));
    }
    out
}
