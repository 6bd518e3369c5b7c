//! Changing stacks: `pulumi_preview`, then `pulumi_up` or `pulumi_destroy`
//! with the preview's id, and `pulumi_refresh`. Applying runs as a durable
//! job ([`super::runner`]); previews are saved plans ([`super::plans`]).

use std::sync::Arc;

use serde_json::{Value, json};
use sophia_kit::{Call, Category, Tool, ToolResult, WireError};

use super::plans::{confirmed_preview, load_preview, save_preview};
use super::reject::refused_as_rejected;
use super::runner::{JobSpec, run_as_job};
use super::{Ctx, OPERATION_TIMEOUT_MS, job_error, optional_project, project_stack};
use crate::cli::Operation;
use crate::jobs::{Attribution, update_message};

/// What a preview prepares: an update (`pulumi_up`) or a destroy
/// (`pulumi_destroy`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    Update,
    Destroy,
}

impl Kind {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Kind::Update => "update",
            Kind::Destroy => "destroy",
        }
    }

    /// The `operation` argument of `pulumi_preview` for this kind.
    pub(super) fn verb(self) -> &'static str {
        match self {
            Kind::Update => "up",
            Kind::Destroy => "destroy",
        }
    }

    /// The tool that applies a preview of this kind.
    pub(super) fn apply_tool(self) -> &'static str {
        match self {
            Kind::Update => "pulumi_up",
            Kind::Destroy => "pulumi_destroy",
        }
    }
}

/// `pulumi_preview`: previews a stack's changes and saves the plan.
pub(super) fn preview(ctx: &Arc<Ctx>) -> Tool {
    let mut schema = optional_project();
    schema["properties"]["operation"] = json!({"type": "string", "enum": ["up", "destroy"], "default": "up",
        "description": "What to preview: an update (confirm with pulumi_up) or a destroy (confirm with pulumi_destroy)"});
    Tool::new(
        "pulumi_preview",
        Category::Infrastructure,
        "Previews a stack's changes and saves Pulumi's update plan. Returns a preview_id: show the \
         changes to the person, and apply them only with pulumi_up and that preview_id.",
    )
    .input_schema(schema)
    .read_only()
    .timeout_ms(OPERATION_TIMEOUT_MS)
    .with_ctx(ctx, run_preview)
}

async fn run_preview(c: Arc<Ctx>, call: Call) -> ToolResult {
    let kind = match call.args["operation"].as_str() {
        None | Some("up") => Kind::Update,
        Some("destroy") => Kind::Destroy,
        Some(other) => {
            return Err(WireError::invalid_arguments(format!(
                "operation must be \"up\" or \"destroy\" (got {other:?})"
            )));
        }
    };
    Ok(save_preview(&c, &call, kind).await?.output())
}

/// The arguments of `pulumi_up`: a stack and the preview to apply.
fn up_schema() -> Value {
    let mut schema = project_stack();
    schema["properties"]["preview_id"] = json!({"type": "string", "description": "The id pulumi_preview returned; confirms the changes it showed. Without it, a client with MCP elicitation is shown a fresh preview and asked to confirm"});
    schema["required"] = json!(["stack"]);
    schema
}

/// `pulumi_up`: applies a confirmed preview.
pub(super) fn up(ctx: &Arc<Ctx>) -> Tool {
    Tool::new(
        "pulumi_up",
        Category::Infrastructure,
        "Applies exactly the changes of a preview the person has seen (its preview_id), as a durable \
         job; without a preview_id, a client with MCP elicitation is shown a fresh preview and \
         asked to confirm. Returns the result, or the job id if it is still running (see \
         pulumi_job).",
    )
    .input_schema(up_schema())
    .destructive()
    .open_world()
    .timeout_ms(OPERATION_TIMEOUT_MS)
    .runs_as_job("pulumi_job", "pulumi_cancel")
    .with_ctx(ctx, run_up)
}

async fn run_up(c: Arc<Ctx>, call: Call) -> ToolResult {
    run_confirmed(&c, &call, Kind::Update).await
}

/// `pulumi_destroy`: deletes a stack's resources after a confirmed destroy
/// preview.
pub(super) fn destroy(ctx: &Arc<Ctx>) -> Tool {
    let mut schema = up_schema();
    schema["properties"]["preview_id"] = json!({"type": "string",
        "description": "The id pulumi_preview (operation=destroy) returned; confirms the deletions it showed. Without it, a client with MCP elicitation is shown a fresh destroy preview and asked to confirm"});
    Tool::new(
        "pulumi_destroy",
        Category::Infrastructure,
        "Deletes every resource of a stack, after a destroy preview the person has seen (pulumi_preview \
         with operation=destroy, then its preview_id here). Refused if the stack changed since that \
         preview. Runs as a durable job.",
    )
    .input_schema(schema)
    .destructive()
    .open_world()
    .timeout_ms(OPERATION_TIMEOUT_MS)
    .runs_as_job("pulumi_job", "pulumi_cancel")
    .with_ctx(ctx, run_destroy)
}

async fn run_destroy(c: Arc<Ctx>, call: Call) -> ToolResult {
    run_confirmed(&c, &call, Kind::Destroy).await
}

/// `pulumi_up` or `pulumi_destroy`: applies a confirmed preview of `kind`
/// as a job (the preview id is the job id, so it runs at most once), on
/// behalf of whoever previewed it and the caller, who confirms it.
async fn run_confirmed(c: &Arc<Ctx>, call: &Call, kind: Kind) -> ToolResult {
    let (project, stack, dir) = c.target(call)?;
    let preview_id = confirmed_preview(c, call, kind).await?;
    // Rejected? Say so, before the stack's lock (`run_as_job` checks
    // again, atomically, should a rejection land in between).
    if let Some(job) = c.jobs.get(&preview_id).await.map_err(job_error)?
        && let Some(refused) = refused_as_rejected(&job)
    {
        return Err(refused);
    }
    let record = load_preview(c, &project, &stack, &preview_id, kind).await?;
    let by = Attribution::confirmed_by(&call.caller.principal)
        .previewed_by(record["previewed_by"].as_str());
    let message = Some(update_message(&preview_id, kind.as_str(), &by));
    let (op, expect_version, tmp) = match kind {
        Kind::Update => {
            let tmp = tempfile::tempdir().map_err(|e| WireError::internal(e.to_string()))?;
            let plan = tmp.path().join("plan.json");
            tokio::fs::write(&plan, record["plan"].as_str().unwrap_or_default())
                .await
                .map_err(|e| WireError::internal(e.to_string()))?;
            (Operation::Up { plan, message }, None, Some(tmp))
        }
        Kind::Destroy => (
            Operation::Destroy { message },
            Some(record["version"].as_u64().unwrap_or(0)),
            None,
        ),
    };
    let spec = JobSpec {
        id: preview_id,
        project,
        stack,
        label: kind.verb(),
        op,
        by,
        expect_version,
        tmp,
        trace: call.trace.clone(),
    };
    run_as_job(c, call, dir, spec).await
}

/// `pulumi_refresh`: reconciles a stack's state with the cloud, as a job.
pub(super) fn refresh(ctx: &Arc<Ctx>) -> Tool {
    Tool::new(
        "pulumi_refresh",
        Category::Infrastructure,
        "Reconciles a stack's state with its cloud resources (reads the cloud, changes only Pulumi's \
         state). Runs as a durable job.",
    )
    .input_schema(optional_project())
    .idempotent()
    .open_world()
    .timeout_ms(OPERATION_TIMEOUT_MS)
    .runs_as_job("pulumi_job", "pulumi_cancel")
    .with_ctx(ctx, run_refresh)
}

async fn run_refresh(c: Arc<Ctx>, call: Call) -> ToolResult {
    let (project, stack, dir) = c.target(&call)?;
    let id = uuid::Uuid::new_v4().simple().to_string();
    // No preview: the caller starts it, and is recorded as confirming it.
    let by = Attribution::confirmed_by(&call.caller.principal);
    let message = Some(update_message(&id, "refresh", &by));
    let spec = JobSpec {
        id,
        project,
        stack,
        label: "refresh",
        op: Operation::Refresh { message },
        by,
        expect_version: None,
        tmp: None,
        trace: call.trace.clone(),
    };
    run_as_job(&c, &call, dir, spec).await
}
