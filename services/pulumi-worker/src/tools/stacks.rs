//! Stacks: `pulumi_list_stacks`, `pulumi_select_stack`, `pulumi_outputs`
//! and `pulumi_history`.

use std::sync::Arc;

use serde_json::{Value, json};
use sophia_kit::{Call, Category, Tool, ToolOutput, ToolResult};

use super::{Ctx, cli_error, name, optional_project, project_stack};
use crate::jobs::job_of_message;

/// `pulumi_list_stacks`: the workspace's projects and their stacks.
pub(super) fn list_stacks(ctx: &Arc<Ctx>) -> Tool {
    Tool::new(
        "pulumi_list_stacks",
        Category::Infrastructure,
        "Lists the Pulumi projects in the workspace and their stacks.",
    )
    .input_schema(json!({"type": "object", "properties": {"project": {"type": "string"}}, "additionalProperties": false}))
    .read_only()
    .idempotent()
    .with_ctx(ctx, run_list_stacks)
}

async fn run_list_stacks(c: Arc<Ctx>, call: Call) -> ToolResult {
    // Without the CLI nothing here works: say so, even with no projects.
    c.check_cli().await.map_err(cli_error)?;
    let wanted = call.args["project"].as_str().map(str::to_owned);
    let mut projects = Vec::new();
    for p in c
        .projects()
        .into_iter()
        .filter(|p| wanted.as_ref().is_none_or(|w| w == p))
    {
        let stacks = c
            .cli
            .stacks(&c.workspace.join(&p))
            .await
            .map_err(cli_error)?;
        let stacks: Vec<_> = stacks
            .iter()
            .map(|s| json!({"name": s.name, "current": s.current, "update_in_progress": s.update_in_progress}))
            .collect();
        projects.push(json!({"project": p, "stacks": stacks}));
    }
    if projects.is_empty() {
        let note = format!(
            "no Pulumi project{} in the workspace {}: add a directory with a \
             Pulumi.yaml there (SOPHIA_PULUMI_WORKSPACE; the repository's pulumi/ \
             has a sample)",
            wanted.map(|w| format!(" {w:?}")).unwrap_or_default(),
            c.workspace.display()
        );
        let mut out = ToolOutput::text(note.clone());
        out.structured = Some(json!({"projects": projects, "note": note}));
        return Ok(out);
    }
    Ok(ToolOutput::json(json!({"projects": projects})))
}

/// `pulumi_select_stack`: selects a stack, creating it if needed.
pub(super) fn select_stack(ctx: &Arc<Ctx>) -> Tool {
    Tool::new(
        "pulumi_select_stack",
        Category::Infrastructure,
        "Selects a stack, creating it if it does not exist.",
    )
    .input_schema(project_stack())
    .idempotent()
    .with_ctx(ctx, run_select_stack)
}

async fn run_select_stack(c: Arc<Ctx>, call: Call) -> ToolResult {
    let (project, stack) = (name(&call, "project")?, name(&call, "stack")?);
    c.cli
        .select_or_create(&c.project_dir(&project)?, &stack)
        .await
        .map_err(cli_error)?;
    Ok(ToolOutput::text(format!(
        "stack {project}/{stack} is selected"
    )))
}

/// `pulumi_outputs`: a stack's outputs, secrets blanked.
pub(super) fn outputs(ctx: &Arc<Ctx>) -> Tool {
    Tool::new(
        "pulumi_outputs",
        Category::Infrastructure,
        "A stack's outputs; secret values are shown as [secret].",
    )
    .input_schema(project_stack())
    .read_only()
    .idempotent()
    .with_ctx(ctx, run_outputs)
}

async fn run_outputs(c: Arc<Ctx>, call: Call) -> ToolResult {
    let (project, stack) = (name(&call, "project")?, name(&call, "stack")?);
    let out = c
        .cli
        .outputs(&c.project_dir(&project)?, &stack, false)
        .await
        .map_err(cli_error)?;
    Ok(ToolOutput::json(out))
}

/// `pulumi_history`: a stack's past updates, newest first.
pub(super) fn history(ctx: &Arc<Ctx>) -> Tool {
    let mut schema = optional_project();
    schema["properties"]["limit"] = json!({"type": "integer", "minimum": 1, "maximum": 100, "default": 10,
        "description": "How many updates, newest first"});
    Tool::new(
        "pulumi_history",
        Category::Infrastructure,
        "A stack's past updates, newest first: kind, result, times, resource changes, and for \
         changes made through the mesh the job, who previewed and who confirmed them. Secret \
         config values are never shown.",
    )
    .input_schema(schema)
    .read_only()
    .idempotent()
    .with_ctx(ctx, run_history)
}

async fn run_history(c: Arc<Ctx>, call: Call) -> ToolResult {
    let (project, stack, dir) = c.target(&call)?;
    let limit = call.args["limit"].as_u64().unwrap_or(10).clamp(1, 100) as u32;
    let mut updates = c
        .cli
        .history(&dir, &stack, limit)
        .await
        .map_err(cli_error)?;
    for update in &mut updates {
        update["job"] = job_of_update(&c, &project, &stack, update).await;
    }
    Ok(ToolOutput::json(
        json!({"project": project, "stack": stack, "updates": updates}),
    ))
}

/// The job that made `update` (named in its message by the job that ran
/// it), with who previewed and who confirmed it, from the job's record:
/// `null` for updates made outside the mesh, or whose record is gone.
async fn job_of_update(c: &Ctx, project: &str, stack: &str, update: &Value) -> Value {
    let Some(id) = update["message"].as_str().and_then(job_of_message) else {
        return Value::Null;
    };
    match c.jobs.get(id).await {
        Ok(Some(job)) if job.project == project && job.stack == stack => json!({
            "id": job.id, "operation": job.operation,
            "previewed_by": job.previewed_by, "confirmed_by": job.confirmed_by,
        }),
        _ => Value::Null,
    }
}
