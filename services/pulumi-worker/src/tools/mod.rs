//! The worker's MCP tools (category `infrastructure`), one file per family.
//!
//! The confirmation flow: `pulumi_preview` runs a preview, saves Pulumi's
//! update plan to the object store and returns a `preview_id`. Only
//! `pulumi_up` with that id applies changes, constrained to that plan
//! (`up --plan`). The id is also the job's id, so one preview is applied at
//! most once; `pulumi_reject_preview` claims the same id to turn a preview
//! down, so exactly one of apply and reject wins. The update runs as a durable job: `pulumi_up` waits for it up
//! to `SOPHIA_PULUMI_WAIT_MS` and otherwise returns the job id;
//! `pulumi_job` fetches the result later, from any replica. The preview
//! records who ran it, and the job who previewed and who confirmed it
//! ([`crate::jobs::Attribution`]), as does the Pulumi update's message.
//!
//! # Layout
//! - [`Ctx`] (`ctx.rs`): what the tools share, and the workspace's projects.
//! - `stacks.rs`: listing, selecting, outputs and history of stacks.
//! - `config.rs`: reading and setting a stack's configuration.
//! - `changes.rs`: preview, up, destroy and refresh.
//! - `plans.rs`: saved previews, and the person's confirmation of one.
//! - `runner.rs`: running a change as a durable job that always ends.
//! - `operation.rs`: a Pulumi operation in the request, with progress and
//!   its span.
//! - `jobs.rs`: a job's status, and cancelling it.
//! - `lists.rs`: the recent jobs and the previews waiting for a decision,
//!   for a console to poll.
//! - `reject.rs`: a person turning a preview down, atomically against its
//!   apply.
//!
//! Every tool has the same shape: a `fn` that declares it and a named
//! `async fn run_*(ctx, call)` that runs a call ([`sophia_kit::Tool::with_ctx`]).

mod changes;
mod config;
mod ctx;
mod jobs;
mod lists;
mod operation;
mod plans;
mod reject;
mod runner;
mod stacks;

use serde_json::{Value, json};
use sophia_kit::{Call, ErrorCode, WireError, Worker};
use std::sync::Arc;

use crate::cli::CliError;
use crate::events::Summary;
use crate::jobs::JobError;

pub use ctx::{Ctx, JobMetrics, PLANS_BUCKET};

/// The worker with its tools.
pub fn worker(ctx: Arc<Ctx>) -> Worker {
    let metrics = ctx.metrics.clone();
    Worker::new("pulumi-worker", env!("CARGO_PKG_VERSION"))
        .description("Sophia Mesh Pulumi stacks")
        .metrics(move |r| metrics.register(r))
        .tool(stacks::list_stacks(&ctx))
        .tool(stacks::select_stack(&ctx))
        .tool(stacks::outputs(&ctx))
        .tool(changes::preview(&ctx))
        .tool(changes::up(&ctx))
        .tool(changes::destroy(&ctx))
        .tool(changes::refresh(&ctx))
        .tool(stacks::history(&ctx))
        .tool(config::config_get(&ctx))
        .tool(config::config_set(&ctx))
        .tool(jobs::job(&ctx))
        .tool(jobs::cancel(&ctx))
        .tool(lists::list_jobs(&ctx))
        .tool(lists::list_previews(&ctx))
        .tool(reject::reject_preview(&ctx))
}

/// Tools that run a Pulumi operation wait up to this long.
const OPERATION_TIMEOUT_MS: u64 = 15 * 60_000;

/// The arguments `{project, stack}`, both required.
fn project_stack() -> Value {
    json!({
        "type": "object",
        "properties": {
            "project": {"type": "string", "description": "A project directory in the workspace"},
            "stack": {"type": "string", "description": "The stack, e.g. dev"}
        },
        "required": ["project", "stack"],
        "additionalProperties": false
    })
}

/// The arguments `{project, stack}` with `project` optional (defaulting to
/// the only project).
fn optional_project() -> Value {
    let mut schema = project_stack();
    schema["required"] = json!(["stack"]);
    schema["properties"]["project"]["description"] =
        json!("A project directory in the workspace; may be left out when there is only one");
    schema
}

fn cli_error_code(e: &CliError) -> ErrorCode {
    match e {
        CliError::NotInstalled { .. } | CliError::Io(_) => ErrorCode::Unavailable,
        CliError::Locked { .. } => ErrorCode::Conflict,
        CliError::StackNotFound { .. } => ErrorCode::InvalidArguments,
        CliError::Cancelled { .. } => ErrorCode::Cancelled,
        CliError::Failed { .. } => ErrorCode::Failed,
    }
}

fn cli_error(e: CliError) -> WireError {
    WireError::new(cli_error_code(&e), e.to_string())
}

fn job_error(e: JobError) -> WireError {
    use sophia_kit::kv::KvErrorKind;
    let code = match &e {
        JobError::Locked { .. } | JobError::LockLost(_) => ErrorCode::Conflict,
        JobError::AlreadyStarted(_) => ErrorCode::Conflict,
        JobError::InvalidName(_) => ErrorCode::InvalidArguments,
        JobError::Store(e) if e.kind() == KvErrorKind::Corrupt => ErrorCode::Internal,
        JobError::Store(_) => ErrorCode::Unavailable,
    };
    WireError::new(code, e.to_string())
}

/// The argument `key` as a name of letters, digits, `-`, `_` and `.`.
fn name(call: &Call, key: &str) -> Result<String, WireError> {
    let v = call.args[key].as_str().unwrap_or_default();
    if v.is_empty()
        || !v
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        return Err(WireError::invalid_arguments(format!(
            "`{key}` must be a name of letters, digits, '-', '_' and '.' (got {})",
            call.args
                .get(key)
                .map(|v| v.to_string())
                .unwrap_or_else(|| "nothing".into())
        )));
    }
    Ok(v.to_owned())
}

fn summary_json(s: &Summary) -> Value {
    json!({
        "resource_changes": s.resource_changes,
        "failed": s.failed,
        "errors": s.errors,
        "duration_seconds": s.duration_seconds,
        "complete": s.complete,
        "malformed_events": s.malformed,
    })
}
