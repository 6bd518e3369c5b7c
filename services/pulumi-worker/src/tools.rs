//! The worker's MCP tools (category `infrastructure`).
//!
//! The confirmation flow: `pulumi_preview` runs a preview, saves Pulumi's
//! update plan to the object store and returns a `preview_id`. Only
//! `pulumi_up` with that id applies changes, constrained to that plan
//! (`up --plan`). The id is also the job's id, so one preview is applied at
//! most once. The update runs as a durable job: `pulumi_up` waits for it up
//! to `SOPHIA_PULUMI_WAIT_MS` and otherwise returns the job id;
//! `pulumi_job` fetches the result later, from any replica.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, object_store};
use opentelemetry::KeyValue;
use serde_json::{Value, json};
use sophia_kit::TraceContext;
use sophia_kit::telemetry::{Span, SpanKind};
use sophia_kit::{Answer, Call, Category, ErrorCode, Tool, ToolOutput, WireError, Worker};
use tokio::io::AsyncReadExt;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::cli::{CliError, Operation, PulumiCli};
use crate::events::Summary;
use crate::jobs::{Job, JobError, JobState, JobStore, RunningJob};

/// The object store bucket holding previews' update plans.
pub const PLANS_BUCKET: &str = "sophia_pulumi_plans";

/// Pulumi job outcomes, for `/metrics`:
/// `sophia_pulumi_jobs_total{operation, outcome}`.
#[derive(Clone, Debug, Default)]
pub struct JobMetrics {
    jobs: prometheus_client::metrics::family::Family<
        JobLabels,
        prometheus_client::metrics::counter::Counter,
    >,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct JobLabels {
    operation: String,
    outcome: String,
}

impl JobMetrics {
    fn record(&self, operation: &str, state: JobState) {
        let outcome = match state {
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        };
        self.jobs
            .get_or_create(&JobLabels {
                operation: operation.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }
}

/// What the tools share.
pub struct Ctx {
    /// The CLI driver.
    pub cli: PulumiCli,
    /// The root holding the Pulumi projects (one directory each).
    pub workspace: PathBuf,
    /// Jobs and locks.
    pub jobs: JobStore,
    /// Previews' plans.
    pub plans: object_store::ObjectStore,
    /// How often a running job renews its lock and checks for a cancel.
    pub heartbeat: Duration,
    /// How long `pulumi_up` waits for its job before returning its id.
    pub wait: Duration,
    /// Progress of jobs running on this replica.
    running: Mutex<HashMap<String, broadcast::Sender<String>>>,
    /// Job outcomes.
    pub metrics: JobMetrics,
    /// Why the Pulumi CLI cannot be used, as last checked (`None`: it can).
    cli_problem: std::sync::Mutex<Option<String>>,
}

impl Ctx {
    /// The shared context; opens the plans bucket.
    pub async fn new(
        cli: PulumiCli,
        workspace: PathBuf,
        jobs: JobStore,
        client: async_nats::Client,
        heartbeat: Duration,
        wait: Duration,
    ) -> Result<Self, String> {
        let js = jetstream::new(client);
        let plans = match js.get_object_store(PLANS_BUCKET).await {
            Ok(s) => s,
            Err(_) => js
                .create_object_store(object_store::Config {
                    bucket: PLANS_BUCKET.into(),
                    description: Some("Pulumi update plans from previews".into()),
                    max_age: Duration::from_secs(24 * 3600),
                    num_replicas: sophia_proto::payload::replicas(&js.client()),
                    ..Default::default()
                })
                .await
                .map_err(|e| e.to_string())?,
        };
        Ok(Self {
            cli,
            workspace,
            jobs,
            plans,
            heartbeat,
            wait,
            running: Mutex::new(HashMap::new()),
            metrics: JobMetrics::default(),
            cli_problem: std::sync::Mutex::new(None),
        })
    }

    /// Checks that the Pulumi CLI runs (`pulumi version`), remembers the
    /// answer for [`Ctx::degraded`], and returns it.
    pub async fn check_cli(&self) -> Result<String, CliError> {
        let checked = self.cli.version().await;
        *self.cli_problem.lock().unwrap_or_else(|p| p.into_inner()) =
            checked.as_ref().err().map(ToString::to_string);
        checked
    }

    /// What this worker cannot do now: the CLI's problem, if the last
    /// check found one.
    pub fn degraded(&self) -> Vec<String> {
        self.cli_problem
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect()
    }
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
    let code = match &e {
        JobError::Locked { .. } | JobError::LockLost(_) => ErrorCode::Conflict,
        JobError::AlreadyStarted(_) => ErrorCode::Conflict,
        JobError::InvalidName(_) => ErrorCode::InvalidArguments,
        JobError::Store(_) => ErrorCode::Unavailable,
    };
    WireError::new(code, e.to_string())
}

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

impl Ctx {
    /// `project` from the call, or the workspace's only project when the
    /// call names none (the seed's `{"stack", "operation"}` body has none).
    fn project(&self, call: &Call) -> Result<String, WireError> {
        if call.args.get("project").is_some_and(|p| !p.is_null()) {
            return name(call, "project");
        }
        match self.projects().as_slice() {
            [only] => Ok(only.clone()),
            [] => Err(WireError::invalid_arguments(
                "the workspace has no Pulumi projects",
            )),
            many => Err(WireError::invalid_arguments(format!(
                "name a `project`: the workspace has {}",
                many.join(", ")
            ))),
        }
    }

    fn project_dir(&self, project: &str) -> Result<PathBuf, WireError> {
        let dir = self.workspace.join(project);
        if dir.join("Pulumi.yaml").exists() || dir.join("Pulumi.yml").exists() {
            Ok(dir)
        } else {
            Err(WireError::invalid_arguments(format!(
                "no Pulumi project {project:?} in the workspace; call pulumi_list_stacks for the projects"
            )))
        }
    }

    fn projects(&self) -> Vec<String> {
        let mut out: Vec<String> = std::fs::read_dir(&self.workspace)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| {
                e.path().join("Pulumi.yaml").exists() || e.path().join("Pulumi.yml").exists()
            })
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        out.sort();
        out
    }
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

/// The worker with its tools.
pub fn worker(ctx: Arc<Ctx>) -> Worker {
    let project_stack = json!({
        "type": "object",
        "properties": {
            "project": {"type": "string", "description": "A project directory in the workspace"},
            "stack": {"type": "string", "description": "The stack, e.g. dev"}
        },
        "required": ["project", "stack"],
        "additionalProperties": false
    });
    let job_id = json!({
        "type": "object",
        "properties": {"job_id": {"type": "string"}},
        "required": ["job_id"],
        "additionalProperties": false
    });
    let c = ctx.clone();
    let list = Tool::new("pulumi_list_stacks", Category::Infrastructure, "Lists the Pulumi projects in the workspace and their stacks.")
        .input_schema(json!({"type": "object", "properties": {"project": {"type": "string"}}, "additionalProperties": false}))
        .read_only()
        .idempotent()
        .handler(move |call| {
            let c = c.clone();
            async move {
                // Without the CLI nothing here works: say so, even with no projects.
                c.check_cli().await.map_err(cli_error)?;
                let wanted = call.args["project"].as_str().map(str::to_owned);
                let mut projects = Vec::new();
                for p in c.projects().into_iter().filter(|p| wanted.as_ref().is_none_or(|w| w == p)) {
                    let stacks = c.cli.stacks(&c.workspace.join(&p)).await.map_err(cli_error)?;
                    projects.push(json!({"project": p, "stacks": stacks.iter().map(|s| json!({
                        "name": s.name, "current": s.current, "update_in_progress": s.update_in_progress})).collect::<Vec<_>>()}));
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
        });
    let c = ctx.clone();
    let select = Tool::new(
        "pulumi_select_stack",
        Category::Infrastructure,
        "Selects a stack, creating it if it does not exist.",
    )
    .input_schema(project_stack.clone())
    .idempotent()
    .handler(move |call| {
        let c = c.clone();
        async move {
            let (project, stack) = (name(&call, "project")?, name(&call, "stack")?);
            c.cli
                .select_or_create(&c.project_dir(&project)?, &stack)
                .await
                .map_err(cli_error)?;
            Ok(ToolOutput::text(format!(
                "stack {project}/{stack} is selected"
            )))
        }
    });
    let c = ctx.clone();
    let outputs = Tool::new(
        "pulumi_outputs",
        Category::Infrastructure,
        "A stack's outputs; secret values are shown as [secret].",
    )
    .input_schema(project_stack.clone())
    .read_only()
    .idempotent()
    .handler(move |call| {
        let c = c.clone();
        async move {
            let (project, stack) = (name(&call, "project")?, name(&call, "stack")?);
            let out = c
                .cli
                .outputs(&c.project_dir(&project)?, &stack, false)
                .await
                .map_err(cli_error)?;
            Ok(ToolOutput::json(out))
        }
    });
    let c = ctx.clone();
    let preview = Tool::new(
        "pulumi_preview",
        Category::Infrastructure,
        "Previews a stack's changes and saves Pulumi's update plan. Returns a preview_id: show the \
         changes to the person, and apply them only with pulumi_up and that preview_id.",
    )
    .input_schema({
        let mut schema = optional_project(project_stack.clone());
        schema["properties"]["operation"] = json!({"type": "string", "enum": ["up", "destroy"], "default": "up",
            "description": "What to preview: an update (confirm with pulumi_up) or a destroy (confirm with pulumi_destroy)"});
        schema
    })
    .read_only()
    .timeout_ms(15 * 60_000)
    .handler(move |call| {
        let c = c.clone();
        async move { run_preview(&c, &call).await }
    });
    let c = ctx.clone();
    let mut up_schema = project_stack.clone();
    up_schema["properties"]["preview_id"] = json!({"type": "string", "description": "The id pulumi_preview returned; confirms the changes it showed. Without it, a client with MCP elicitation is shown a fresh preview and asked to confirm"});
    up_schema["required"] = json!(["stack"]);
    let up = Tool::new(
        "pulumi_up",
        Category::Infrastructure,
        "Applies exactly the changes of a preview the person has seen (its preview_id), as a durable \
         job; without a preview_id, a client with MCP elicitation is shown a fresh preview and \
         asked to confirm. Returns the result, or the job id if it is still running (see \
         pulumi_job).",
    )
    .input_schema(up_schema.clone())
    .destructive()
    .open_world()
    .timeout_ms(15 * 60_000)
    .handler(move |call| {
        let c = c.clone();
        async move { run_confirmed(&c, &call, Kind::Update).await }
    });
    let c = ctx.clone();
    let mut destroy_schema = up_schema.clone();
    destroy_schema["properties"]["preview_id"] = json!({"type": "string",
        "description": "The id pulumi_preview (operation=destroy) returned; confirms the deletions it showed. Without it, a client with MCP elicitation is shown a fresh destroy preview and asked to confirm"});
    let destroy = Tool::new(
        "pulumi_destroy",
        Category::Infrastructure,
        "Deletes every resource of a stack, after a destroy preview the person has seen (pulumi_preview \
         with operation=destroy, then its preview_id here). Refused if the stack changed since that \
         preview. Runs as a durable job.",
    )
    .input_schema(destroy_schema)
    .destructive()
    .open_world()
    .timeout_ms(15 * 60_000)
    .handler(move |call| {
        let c = c.clone();
        async move { run_confirmed(&c, &call, Kind::Destroy).await }
    });
    let c = ctx.clone();
    let refresh = Tool::new(
        "pulumi_refresh",
        Category::Infrastructure,
        "Reconciles a stack's state with its cloud resources (reads the cloud, changes only Pulumi's \
         state). Runs as a durable job.",
    )
    .input_schema(optional_project(project_stack.clone()))
    .idempotent()
    .open_world()
    .timeout_ms(15 * 60_000)
    .handler(move |call| {
        let c = c.clone();
        async move { run_refresh(&c, &call).await }
    });
    let c = ctx.clone();
    let mut history_schema = optional_project(project_stack.clone());
    history_schema["properties"]["limit"] = json!({"type": "integer", "minimum": 1, "maximum": 100, "default": 10,
        "description": "How many updates, newest first"});
    let history = Tool::new(
        "pulumi_history",
        Category::Infrastructure,
        "A stack's past updates, newest first: kind, result, times, resource changes. Secret config \
         values are never shown.",
    )
    .input_schema(history_schema)
    .read_only()
    .idempotent()
    .handler(move |call| {
        let c = c.clone();
        async move {
            let (project, stack) = (c.project(&call)?, name(&call, "stack")?);
            let limit = call.args["limit"].as_u64().unwrap_or(10).clamp(1, 100) as u32;
            let updates = c
                .cli
                .history(&c.project_dir(&project)?, &stack, limit)
                .await
                .map_err(cli_error)?;
            Ok(ToolOutput::json(json!({"project": project, "stack": stack, "updates": updates})))
        }
    });
    let c = ctx.clone();
    let mut config_get_schema = optional_project(project_stack.clone());
    config_get_schema["properties"]["key"] = json!({"type": "string",
        "description": "One key, e.g. aws:region or app:dbPassword (a bare name means the project's namespace); all keys when left out"});
    let config_get = Tool::new(
        "pulumi_config_get",
        Category::Infrastructure,
        "A stack's configuration, or one key of it. Secret values are never returned: they show \
         as {\"secret\": true} with no value.",
    )
    .input_schema(config_get_schema)
    .read_only()
    .idempotent()
    .handler(move |call| {
        let c = c.clone();
        async move { config_get(&c, &call).await }
    });
    let c = ctx.clone();
    let mut config_set_schema = optional_project(project_stack.clone());
    config_set_schema["properties"]["key"] = json!({"type": "string", "pattern": CONFIG_KEY_PATTERN, "maxLength": 256,
        "description": "The key, e.g. aws:region, or a bare name for the project's namespace"});
    config_set_schema["properties"]["value"] = json!({"type": "string", "writeOnly": true,
        "description": "The value; with secret=true it is encrypted by the stack's secrets provider and never shown again"});
    config_set_schema["properties"]["secret"] = json!({"type": "boolean", "default": false});
    config_set_schema["properties"]["path"] = json!({"type": "boolean", "default": false,
        "description": "Treat the key as a path into a structured value, e.g. app:db.port"});
    config_set_schema["required"] = json!(["stack", "key", "value"]);
    let config_set = Tool::new(
        "pulumi_config_set",
        Category::Infrastructure,
        "Sets one configuration value of a stack; secret=true encrypts it. Takes effect at the next \
         preview.",
    )
    .input_schema(config_set_schema)
    .idempotent()
    .handler(move |call| {
        let c = c.clone();
        async move { config_set(&c, &call).await }
    });
    let c = ctx.clone();
    let job = Tool::new(
        "pulumi_job",
        Category::Infrastructure,
        "A Pulumi job's status and result, by job id.",
    )
    .input_schema(job_id.clone())
    .read_only()
    .idempotent()
    .handler(move |call| {
        let c = c.clone();
        async move {
            let id = name(&call, "job_id")?;
            match c.jobs.get(&id).await.map_err(job_error)? {
                Some(job) => Ok(job_output(&job)),
                None => Err(WireError::invalid_arguments(format!("no job {id}"))),
            }
        }
    });
    let c = ctx.clone();
    let cancel = Tool::new(
        "pulumi_cancel",
        Category::Infrastructure,
        "Asks a running Pulumi job to stop (a graceful cancel).",
    )
    .input_schema(job_id)
    .handler(move |call| {
        let c = c.clone();
        async move {
            let id = name(&call, "job_id")?;
            match c.jobs.request_cancel(&id).await.map_err(job_error)? {
                Some(job) => Ok(job_output(&job)),
                None => Err(WireError::invalid_arguments(format!("no job {id}"))),
            }
        }
    });
    let metrics = ctx.metrics.clone();
    Worker::new("pulumi-worker", env!("CARGO_PKG_VERSION"))
        .description("Sophia Mesh Pulumi stacks")
        .metrics(move |r| {
            r.register(
                "sophia_pulumi_jobs",
                "Pulumi jobs (up, destroy, refresh) finished on this replica, by outcome",
                metrics.jobs.clone(),
            )
        })
        .tool(list)
        .tool(select)
        .tool(outputs)
        .tool(preview)
        .tool(up)
        .tool(destroy)
        .tool(refresh)
        .tool(history)
        .tool(config_get)
        .tool(config_set)
        .tool(job)
        .tool(cancel)
}

/// Pulumi config keys: `[namespace:]name`, or a path with `path=true`
/// (`app:db.port`, `app:hosts[0]`). Never a leading `-`, so a key cannot be
/// taken for a CLI flag.
const CONFIG_KEY_PATTERN: &str = r"^[A-Za-z0-9_][A-Za-z0-9_.:\-\[\]]*$";

async fn config_get(c: &Ctx, call: &Call) -> Result<ToolOutput, WireError> {
    let (project, stack) = (c.project(call)?, name(call, "stack")?);
    let values = c
        .cli
        .config(&c.project_dir(&project)?, &stack)
        .await
        .map_err(cli_error)?;
    let Some(key) = call.args["key"].as_str() else {
        return Ok(ToolOutput::json(
            json!({"project": project, "stack": stack, "config": values}),
        ));
    };
    // `config --json` names keys with their namespace; a bare name is the
    // project's.
    let full = if key.contains(':') {
        key.to_owned()
    } else {
        format!("{project}:{key}")
    };
    match values.get(&full).or_else(|| values.get(key)) {
        Some(v) => Ok(ToolOutput::json(json!({"key": full, "value": v}))),
        None => Err(WireError::invalid_arguments(format!(
            "{project}/{stack} has no config key {full}; its keys are: {}",
            values.keys().cloned().collect::<Vec<_>>().join(", ")
        ))),
    }
}

async fn config_set(c: &Ctx, call: &Call) -> Result<ToolOutput, WireError> {
    let (project, stack) = (c.project(call)?, name(call, "stack")?);
    let key = call.args["key"].as_str().unwrap_or_default();
    if key.is_empty() || key.starts_with('-') {
        return Err(WireError::invalid_arguments(
            "`key` must be a config key like aws:region",
        ));
    }
    let value = call.args["value"].as_str().ok_or_else(|| {
        WireError::invalid_arguments("`value` must be a string (JSON for structured values)")
    })?;
    let how = crate::cli::SetConfig {
        secret: call.args["secret"].as_bool().unwrap_or(false),
        path: call.args["path"].as_bool().unwrap_or(false),
    };
    c.cli
        .set_config(&c.project_dir(&project)?, &stack, key, value, how)
        .await
        .map_err(cli_error)?;
    Ok(ToolOutput::text(format!(
        "set {key} on {project}/{stack}{}",
        if how.secret { " (as a secret)" } else { "" }
    )))
}

/// The schema with `project` optional (defaulting to the only project).
fn optional_project(mut schema: Value) -> Value {
    schema["required"] = json!(["stack"]);
    schema["properties"]["project"]["description"] =
        json!("A project directory in the workspace; may be left out when there is only one");
    schema
}

fn job_output(job: &Job) -> ToolOutput {
    let text = match job.state {
        JobState::Running => format!(
            "job {} is running ({} {}/{}); call pulumi_job later for its result",
            job.id, job.operation, job.project, job.stack
        ),
        other => format!(
            "job {} {:?}: {}",
            job.id,
            other,
            job.message.clone().unwrap_or_default()
        ),
    };
    let mut out = ToolOutput::text(text);
    out.structured = serde_json::to_value(job).ok();
    out
}

/// What a preview prepares: an update (`pulumi_up`) or a destroy
/// (`pulumi_destroy`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Update,
    Destroy,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Update => "update",
            Kind::Destroy => "destroy",
        }
    }

    /// The `operation` argument of `pulumi_preview` for this kind.
    fn verb(self) -> &'static str {
        match self {
            Kind::Update => "up",
            Kind::Destroy => "destroy",
        }
    }

    fn apply_tool(self) -> &'static str {
        match self {
            Kind::Update => "pulumi_up",
            Kind::Destroy => "pulumi_destroy",
        }
    }
}

/// The span of one Pulumi operation (the CLI run), a child of `trace`.
fn operation_span(
    dir: &std::path::Path,
    stack: &str,
    op: &Operation,
    trace: &TraceContext,
) -> Span {
    let project = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    Span::start(
        format!("pulumi {}", op.name()),
        SpanKind::Internal,
        trace,
        vec![
            KeyValue::new("pulumi.operation", op.name()),
            KeyValue::new("pulumi.project", project),
            KeyValue::new("pulumi.stack", stack.to_owned()),
        ],
    )
}

/// Records an operation's outcome on its span: the resource changes by
/// kind, or the failure's code.
fn end_operation_span(span: &Span, result: &Result<Summary, CliError>) {
    match result {
        Ok(summary) => {
            for (kind, n) in &summary.resource_changes {
                span.set(KeyValue::new(
                    format!("pulumi.resource_changes.{kind}"),
                    *n as i64,
                ));
            }
            if !summary.succeeded() {
                span.fail("failed", "the operation failed");
            }
        }
        Err(e) => {
            let code = cli_error_code(e);
            span.fail_code(code);
        }
    }
}

/// Runs an operation in the request, relaying its engine events as
/// progress; returns its summary.
async fn relay_operation(
    c: &Ctx,
    call: &Call,
    dir: &std::path::Path,
    stack: &str,
    op: &Operation,
) -> Result<Summary, WireError> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let cancel = call.cancellation();
    let span = operation_span(dir, stack, op, &call.trace);
    let run = c.cli.operation(
        dir,
        stack,
        op,
        move |e| {
            if let Some(l) = e.describe() {
                let _ = tx.send(l);
            }
        },
        &cancel,
    );
    tokio::pin!(run);
    let mut step = 0.0;
    let summary = loop {
        tokio::select! {
            r = &mut run => {
                end_operation_span(&span, &r);
                break r.map_err(cli_error)?
            }
            Some(line) = rx.recv() => { step += 1.0; call.progress(step, None, Some(line)).await; }
        }
    };
    while let Ok(line) = rx.try_recv() {
        step += 1.0;
        call.progress(step, None, Some(line)).await;
    }
    Ok(summary)
}

async fn run_preview(c: &Ctx, call: &Call) -> Result<ToolOutput, WireError> {
    let kind = match call.args["operation"].as_str() {
        None | Some("up") => Kind::Update,
        Some("destroy") => Kind::Destroy,
        Some(other) => {
            return Err(WireError::invalid_arguments(format!(
                "operation must be \"up\" or \"destroy\" (got {other:?})"
            )));
        }
    };
    Ok(preview(c, call, kind).await?.output())
}

/// The preview to apply: the caller's `preview_id`, or, when the caller
/// gave none and its client supports MCP elicitation, a fresh preview the
/// person is shown and confirms.
async fn confirmed_preview(c: &Ctx, call: &Call, kind: Kind) -> Result<String, WireError> {
    if call.args.get("preview_id").is_some_and(|p| !p.is_null()) {
        return name(call, "preview_id");
    }
    if !call.can_elicit() {
        return Err(WireError::invalid_arguments(format!(
            "`preview_id` is required: run pulumi_preview with operation={:?}, show its changes \
             to the person, and pass the preview_id it returns (a client with MCP elicitation is \
             asked directly instead)",
            kind.verb()
        )));
    }
    let shown = preview(c, call, kind).await?;
    let id = shown.id;
    let question = format!(
        "{} {}/{}? The preview shows: {}. Nothing else will be changed.",
        if kind == Kind::Destroy {
            "Destroy every resource of"
        } else {
            "Apply these changes to"
        },
        shown.project,
        shown.stack,
        shown.summary.changes()
    );
    let schema = json!({"type": "object", "properties": {"confirm": {"type": "boolean",
        "title": if kind == Kind::Destroy { "Destroy" } else { "Apply" },
        "description": format!("Run {} with preview {id}", kind.apply_tool())}},
        "required": ["confirm"]});
    match call.elicit(question, schema).await? {
        Answer::Accepted(a) if a["confirm"] == json!(true) => Ok(id),
        Answer::Cancelled => Err(WireError::new(
            ErrorCode::Cancelled,
            format!("the question was dismissed, so nothing was changed (preview {id})"),
        )),
        _ => Err(WireError::new(
            ErrorCode::Cancelled,
            format!("the person did not confirm, so nothing was changed (preview {id})"),
        )),
    }
}

/// A preview run and saved in the plans bucket.
struct SavedPreview {
    id: String,
    project: String,
    stack: String,
    kind: Kind,
    summary: Summary,
}

impl SavedPreview {
    /// The `pulumi_preview` result: the changes, and how to apply them.
    fn output(&self) -> ToolOutput {
        let (id, project, stack, kind) = (&self.id, &self.project, &self.stack, self.kind);
        let tool = kind.apply_tool();
        let mut out = ToolOutput::text(format!(
            "{} preview {id} of {project}/{stack}: {}. To apply exactly these changes, call {tool} with preview_id={id}.",
            kind.as_str(),
            self.summary.changes()
        ));
        out.structured = Some(
            json!({"preview_id": id, "operation": kind.as_str(), "project": project,
            "stack": stack, "summary": summary_json(&self.summary), "confirm_with": tool}),
        );
        out
    }
}

async fn preview(c: &Ctx, call: &Call, kind: Kind) -> Result<SavedPreview, WireError> {
    let (project, stack) = (c.project(call)?, name(call, "stack")?);
    let dir = c.project_dir(&project)?;
    c.cli
        .select_or_create(&dir, &stack)
        .await
        .map_err(cli_error)?;
    let tmp = tempfile::tempdir().map_err(|e| WireError::internal(e.to_string()))?;
    let plan_path = tmp.path().join("plan.json");
    let (op, version) = match kind {
        Kind::Update => (
            Operation::Preview {
                save_plan: plan_path.clone(),
            },
            None,
        ),
        // Pulumi has no plans for destroys: bind the confirmation to the
        // stack's version, so a destroy runs only on the stack that was
        // previewed.
        Kind::Destroy => (
            Operation::DestroyPreview,
            Some(c.cli.version_of(&dir, &stack).await.map_err(cli_error)?),
        ),
    };
    let summary = relay_operation(c, call, &dir, &stack, &op).await?;
    let plan =
        match kind {
            Kind::Update => Some(tokio::fs::read_to_string(&plan_path).await.map_err(|e| {
                WireError::failed(format!("the preview saved no update plan: {e}"))
            })?),
            Kind::Destroy => None,
        };
    let id = uuid::Uuid::new_v4().simple().to_string();
    let record = json!({"project": project, "stack": stack, "kind": kind.as_str(),
        "version": version, "summary": summary_json(&summary), "plan": plan});
    let bytes = serde_json::to_vec(&record).map_err(|e| WireError::internal(e.to_string()))?;
    c.plans
        .put(id.as_str(), &mut bytes.as_slice())
        .await
        .map_err(|e| {
            WireError::new(
                ErrorCode::Unavailable,
                format!("could not save the plan: {e}"),
            )
        })?;
    Ok(SavedPreview {
        id,
        project,
        stack,
        kind,
        summary,
    })
}

/// A preview's saved record, checked against the call.
async fn load_preview(
    c: &Ctx,
    project: &str,
    stack: &str,
    preview_id: &str,
    kind: Kind,
) -> Result<Value, WireError> {
    let mut object = c.plans.get(preview_id).await.map_err(|_| {
        WireError::invalid_arguments(format!(
            "no preview {preview_id}: run pulumi_preview, show its changes, and pass the preview_id it returns"
        ))
    })?;
    let mut raw = Vec::new();
    object
        .read_to_end(&mut raw)
        .await
        .map_err(|e| WireError::new(ErrorCode::Unavailable, e.to_string()))?;
    let record: Value =
        serde_json::from_slice(&raw).map_err(|e| WireError::internal(e.to_string()))?;
    if record["project"] != json!(project) || record["stack"] != json!(stack) {
        return Err(WireError::invalid_arguments(format!(
            "preview {preview_id} is for {}/{}, not {project}/{stack}",
            record["project"].as_str().unwrap_or("?"),
            record["stack"].as_str().unwrap_or("?")
        )));
    }
    let recorded = record["kind"].as_str().unwrap_or("update");
    if recorded != kind.as_str() {
        return Err(WireError::invalid_arguments(format!(
            "preview {preview_id} is a preview of an {recorded}, not of a {}; run pulumi_preview with \
             operation={:?}",
            kind.as_str(),
            if kind == Kind::Destroy {
                "destroy"
            } else {
                "up"
            }
        )));
    }
    Ok(record)
}

/// A job to run under the stack's lock.
struct JobSpec {
    id: String,
    project: String,
    stack: String,
    /// `up`, `destroy` or `refresh`.
    label: &'static str,
    op: Operation,
    /// Run only if the stack is still at this version (a confirmed destroy).
    expect_version: Option<u64>,
    /// Holds the plan file while the job runs.
    tmp: Option<tempfile::TempDir>,
    /// The trace of the call that started the job.
    trace: TraceContext,
}

/// `pulumi_up` or `pulumi_destroy`: applies a confirmed preview of `kind`
/// as a job (the preview id is the job id, so it runs at most once).
async fn run_confirmed(c: &Arc<Ctx>, call: &Call, kind: Kind) -> Result<ToolOutput, WireError> {
    let (project, stack) = (c.project(call)?, name(call, "stack")?);
    let dir = c.project_dir(&project)?;
    let preview_id = confirmed_preview(c, call, kind).await?;
    let record = load_preview(c, &project, &stack, &preview_id, kind).await?;
    let (op, expect_version, tmp) = match kind {
        Kind::Update => {
            let tmp = tempfile::tempdir().map_err(|e| WireError::internal(e.to_string()))?;
            let plan = tmp.path().join("plan.json");
            tokio::fs::write(&plan, record["plan"].as_str().unwrap_or_default())
                .await
                .map_err(|e| WireError::internal(e.to_string()))?;
            (Operation::Up { plan }, None, Some(tmp))
        }
        Kind::Destroy => (
            Operation::Destroy,
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
        expect_version,
        tmp,
        trace: call.trace.clone(),
    };
    run_as_job(c, call, dir, spec).await
}

async fn run_refresh(c: &Arc<Ctx>, call: &Call) -> Result<ToolOutput, WireError> {
    let (project, stack) = (c.project(call)?, name(call, "stack")?);
    let dir = c.project_dir(&project)?;
    let spec = JobSpec {
        id: uuid::Uuid::new_v4().simple().to_string(),
        project,
        stack,
        label: "refresh",
        op: Operation::Refresh,
        expect_version: None,
        tmp: None,
        trace: call.trace.clone(),
    };
    run_as_job(c, call, dir, spec).await
}

/// Starts `spec` as a durable job and waits for it, relaying its progress,
/// up to the wait budget; the job goes on without the request.
async fn run_as_job(
    c: &Arc<Ctx>,
    call: &Call,
    dir: PathBuf,
    spec: JobSpec,
) -> Result<ToolOutput, WireError> {
    let id = spec.id.clone();
    let job = match c
        .jobs
        .start(&id, &spec.project, &spec.stack, spec.label)
        .await
    {
        Ok(job) => job,
        Err(JobError::AlreadyStarted(existing)) => {
            let mut out = job_output(&existing);
            out.content.insert(
                0,
                sophia_kit::Content::text(format!(
                    "preview {id} was already applied (job {}); it is not run twice.",
                    existing.id
                )),
            );
            return Ok(out);
        }
        Err(e) => return Err(job_error(e)),
    };
    let (progress, mut rx) = broadcast::channel(256);
    c.running
        .lock()
        .expect("running lock")
        .insert(id.clone(), progress.clone());
    let task = tokio::spawn(run_job(c.clone(), job, dir, spec, progress));
    let wait = c
        .wait
        .min(call.remaining().saturating_sub(Duration::from_secs(1)));
    let deadline = tokio::time::sleep(wait);
    tokio::pin!(deadline, task);
    let mut step = 0.0;
    loop {
        tokio::select! {
            _ = &mut task => break,
            _ = &mut deadline => break,
            _ = call.cancelled() => break,
            line = rx.recv() => if let Ok(line) = line {
                step += 1.0;
                call.progress(step, None, Some(line)).await;
            },
        }
    }
    let job = c
        .jobs
        .get(&id)
        .await
        .map_err(job_error)?
        .ok_or_else(|| WireError::internal("job record missing"))?;
    match job.state {
        JobState::Failed => Err(WireError::failed(
            job.message
                .unwrap_or_else(|| format!("the {} failed", job.operation)),
        )),
        JobState::Cancelled => Err(WireError::new(
            ErrorCode::Cancelled,
            job.message.unwrap_or_else(|| "cancelled".into()),
        )),
        _ => Ok(job_output(&job)),
    }
}

/// Runs an operation as a job: heartbeats the lock, stops on a cancel
/// request (or a lost lock), and records the outcome.
async fn run_job(
    c: Arc<Ctx>,
    job: RunningJob,
    dir: PathBuf,
    spec: JobSpec,
    progress: broadcast::Sender<String>,
) {
    let id = job.id.clone();
    let spec_label = spec.label;
    // The job record keeps the CLI's verb; messages say what it does.
    let label = match spec.label {
        "up" => "update",
        other => other,
    };
    let cancel = CancellationToken::new();
    let stop_beats = CancellationToken::new();
    let beats = {
        let (c, cancel, stop, id) = (c.clone(), cancel.clone(), stop_beats.clone(), id.clone());
        let mut job = job;
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return job,
                    _ = tokio::time::sleep(c.heartbeat) => {
                        if let Err(e) = c.jobs.heartbeat(&mut job).await {
                            tracing::error!(job = %id, cause = %e, "stopping the job");
                            cancel.cancel();
                        }
                        if let Ok(Some(record)) = c.jobs.get(&id).await && record.cancel_requested {
                            cancel.cancel();
                        }
                    }
                }
            }
        })
    };
    // Checked under the stack's lock, so nothing can change the stack
    // between the check and the operation.
    let changed = match spec.expect_version {
        None => None,
        Some(expected) => match c.cli.version_of(&dir, &spec.stack).await {
            Ok(now) if now == expected => None,
            Ok(now) => Some(format!(
                "{label} refused: the stack changed since the preview (version {expected}, now {now}); \
                 run pulumi_preview with operation=\"destroy\" again and confirm the new preview"
            )),
            Err(e) => Some(format!(
                "{label} refused: could not check the stack's version: {e}"
            )),
        },
    };
    let (state, message, summary) = match changed {
        Some(why) => (JobState::Failed, why, None),
        None => {
            let span = operation_span(&dir, &spec.stack, &spec.op, &spec.trace);
            let result = c
                .cli
                .operation(
                    &dir,
                    &spec.stack,
                    &spec.op,
                    |e| {
                        if let Some(l) = e.describe() {
                            let _ = progress.send(l);
                        }
                    },
                    &cancel,
                )
                .await;
            end_operation_span(&span, &result);
            outcome(label, result)
        }
    };
    drop(spec.tmp);
    stop_beats.cancel();
    let job = beats.await.expect("heartbeat task");
    c.metrics.record(spec_label, state);
    if let Err(e) = c.jobs.finish(job, state, Some(message), summary).await {
        tracing::error!(job = %id, cause = %e, "could not record the job's outcome");
    }
    c.running.lock().expect("running lock").remove(&id);
}

/// A finished operation as a job's state, message and summary.
fn outcome(label: &str, result: Result<Summary, CliError>) -> (JobState, String, Option<Value>) {
    match result {
        Ok(s) if s.succeeded() => (
            JobState::Succeeded,
            format!("{label} done: {}", s.changes()),
            Some(summary_json(&s)),
        ),
        Ok(s) => (
            JobState::Failed,
            format!("{label} failed: {}", s.errors.join("; ")),
            Some(summary_json(&s)),
        ),
        Err(CliError::Cancelled { summary }) => (
            JobState::Cancelled,
            format!("{label} cancelled"),
            Some(summary_json(&summary)),
        ),
        Err(e) => (JobState::Failed, e.to_string(), None),
    }
}
