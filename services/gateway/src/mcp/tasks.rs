//! MCP tasks (the `io.modelcontextprotocol/tasks` extension, SEP-2663),
//! backed by workers' jobs, with no task state in the gateway (docs/mcp.md,
//! "Tasks").
//!
//! A worker announces that a tool can run detached and which of its tools
//! report and cancel such a job (`ToolSpec::jobs`). For a client that
//! declares the extension, `tools/call` of such a tool asks the worker for
//! a detached start, and the job's report becomes a `CreateTaskResult`. The
//! task id is an opaque, sealed reference to (tool, job id), bound to the
//! caller: `tasks/get` and `tasks/cancel` open it and call the worker's
//! status or cancel tool as that caller, so any gateway replica answers,
//! and a gateway restart loses nothing (the job lives where the worker
//! keeps it, e.g. JetStream KV). A job waiting for a person
//! (`JobPhase::InputRequired`) is an `input_required` task whose
//! `inputRequests` hold its question; `tasks/update` hands the client's
//! `inputResponses` to the worker's answer tool, which applies an answer
//! once.

use chrono::{DateTime, SecondsFormat, Utc};
use rmcp::model::{
    CancelTaskParams, CreateTaskResult, DetailedTask, GetTaskParams, GetTaskResult, InputRequest,
    InputRequests, JsonObject, Task, TaskPayload, TaskStatus, UpdateTaskParams,
};
use sophia_proto::{JobPhase, JobQuestion, JobReport};

use super::*;

/// How often a client should poll `tasks/get`, in milliseconds.
const POLL_INTERVAL_MS: u64 = 500;

/// What a task id refers to: a job a tool started.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct TaskRef {
    /// The tool that started the job (its announcement names the job tools).
    tool: String,
    /// The worker's job id.
    job: String,
}

/// Whether the request's client declared the tasks extension.
pub(super) fn wants_tasks(context: &RequestContext<RoleServer>) -> bool {
    context
        .client_capabilities()
        .is_some_and(|c| c.supports_tasks())
}

/// What a sealed task id is bound to: its caller.
fn binding(caller: &Caller) -> Vec<u8> {
    format!("task\u{0}{}", caller.principal).into_bytes()
}

fn unknown_task() -> McpError {
    McpError::invalid_params(
        "unknown task: this mesh did not create it for you (the id is altered, forged, another \
         caller's, or its job is gone). Call the tool again for a new task",
        None,
    )
}

fn iso(ms: u64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms as i64)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

impl McpGateway {
    /// The task for a detached start's `output`, if it reports a job.
    pub(super) fn task_of(
        &self,
        tool: &str,
        caller: &Caller,
        output: &ToolOutput,
    ) -> Option<CreateTaskResult> {
        if output.is_error {
            return None;
        }
        let report: JobReport = serde_json::from_value(output.structured.clone()?).ok()?;
        let reference = TaskRef {
            tool: tool.to_owned(),
            job: report.id.clone(),
        };
        let id = self
            .states
            .as_ref()?
            .seal_for(&reference, &binding(caller))?;
        Some(CreateTaskResult::new(task(id, &report)))
    }

    /// The job a task id names, and its report now.
    async fn job_of(
        &self,
        task_id: &str,
        caller: &Caller,
    ) -> Result<(TaskRef, ToolOutput, JobReport), McpError> {
        let states = self.states.as_ref().ok_or_else(unknown_task)?;
        let reference: TaskRef = states
            .open_for(task_id, &binding(caller))
            .ok_or_else(unknown_task)?;
        let output = self
            .job_tool(&reference, caller, |j| Some(&j.status), JsonObject::new())
            .await?;
        let report = output
            .structured
            .clone()
            .and_then(|s| serde_json::from_value::<JobReport>(s).ok())
            .filter(|_| !output.is_error)
            .ok_or_else(unknown_task)?;
        Ok((reference, output, report))
    }

    /// Calls the status, cancel or answer tool of `reference`'s job as
    /// `caller`, with `extra` arguments besides the job id.
    async fn job_tool(
        &self,
        reference: &TaskRef,
        caller: &Caller,
        which: impl Fn(&sophia_proto::JobTools) -> Option<&String>,
        extra: JsonObject,
    ) -> Result<ToolOutput, McpError> {
        let entry = self.inner.registry.get(&reference.tool);
        let tools = entry
            .as_ref()
            .and_then(|e| e.spec.jobs.clone())
            .ok_or_else(|| {
                McpError::internal_error(
                    format!(
                        "no live worker follows the jobs of `{}` now; ask again later",
                        reference.tool
                    ),
                    None,
                )
            })?;
        let tool = which(&tools).ok_or_else(not_waiting)?;
        let mut args = extra;
        args.insert("job_id".into(), json!(reference.job));
        self.call_for_task(caller, tool, Value::Object(args)).await
    }

    /// `tasks/get`: the job's state, latest progress and, once it is over,
    /// its result.
    pub(super) async fn task_get(
        &self,
        request: GetTaskParams,
        context: RequestContext<RoleServer>,
    ) -> Result<GetTaskResult, McpError> {
        let caller = self.caller(&context);
        let (_, output, report) = self.job_of(&request.task_id, &caller).await?;
        let payload = match report.state {
            JobPhase::Succeeded => TaskPayload::Completed {
                result: as_object(to_mcp(output)),
            },
            // A tool's failure is a result with isError, as a call's is.
            JobPhase::Failed => TaskPayload::Completed {
                result: as_object(error_result(
                    ErrorCode::Failed,
                    report
                        .message
                        .clone()
                        .unwrap_or_else(|| "the job failed".into()),
                    None,
                )),
            },
            JobPhase::Cancelled => TaskPayload::Cancelled,
            JobPhase::InputRequired => TaskPayload::InputRequired {
                input_requests: input_requests(report.question.as_ref())?,
            },
            JobPhase::Running | JobPhase::Unknown => TaskPayload::Working,
        };
        let task = task(request.task_id, &report);
        Ok(GetTaskResult::new(DetailedTask::new(task, payload)))
    }

    /// `tasks/cancel`: asks the job to stop; refused once it is over.
    pub(super) async fn task_cancel(
        &self,
        request: CancelTaskParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        let caller = self.caller(&context);
        let (reference, _, report) = self.job_of(&request.task_id, &caller).await?;
        if report.state.is_over() {
            return Err(over(&report, "cancel"));
        }
        self.job_tool(&reference, &caller, |j| Some(&j.cancel), JsonObject::new())
            .await?;
        Ok(())
    }

    /// `tasks/update`: the client's answers to a waiting job's question go
    /// to the worker's answer tool (which takes an answer once); a task
    /// that is not waiting takes none.
    pub(super) async fn task_update(
        &self,
        request: UpdateTaskParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        let caller = self.caller(&context);
        let (reference, _, report) = self.job_of(&request.task_id, &caller).await?;
        if report.state.is_over() {
            return Err(over(&report, "update"));
        }
        if report.state != JobPhase::InputRequired {
            return Err(not_waiting());
        }
        if let Some(q) = &report.question
            && !request.input_responses.contains_key(&q.key)
        {
            return Err(McpError::invalid_params(
                format!(
                    "no answer to the task's question (key {}): answer under that key",
                    q.key
                ),
                None,
            ));
        }
        let mut extra = JsonObject::new();
        extra.insert("responses".into(), json!(request.input_responses));
        let answered = self
            .job_tool(&reference, &caller, |j| j.answer.as_ref(), extra)
            .await?;
        if answered.is_error {
            return Err(McpError::invalid_params(
                format!("the answer was not taken: {}", output_text(&answered)),
                None,
            ));
        }
        Ok(())
    }
}

fn not_waiting() -> McpError {
    McpError::invalid_params(
        "the task is not waiting for input (its status is not input_required): nothing to \
         update",
        None,
    )
}

/// A waiting job's question as the task's `inputRequests` (an elicitation
/// under the question's key).
fn input_requests(question: Option<&JobQuestion>) -> Result<InputRequests, McpError> {
    let question = question.ok_or_else(|| {
        McpError::internal_error("the job waits for input but asks nothing", None)
    })?;
    let schema = super::relay::elicitation_schema(&question.schema)
        .map_err(|e| McpError::internal_error(e.message, None))?;
    let request: InputRequest = serde_json::from_value(json!({
        "method": "elicitation/create",
        "params": {"mode": "form", "message": question.message, "requestedSchema": schema}}))
    .map_err(|e| McpError::internal_error(format!("not an MCP input request: {e}"), None))?;
    Ok([(question.key.clone(), request)].into())
}

/// The text blocks of a tool's output.
fn output_text(output: &ToolOutput) -> String {
    output
        .content
        .iter()
        .filter_map(|c| match c {
            sophia_proto::Content::Text { text } => Some(text.as_str()),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The refusal of `what` on a task that is over.
fn over(report: &JobReport, what: &str) -> McpError {
    let state = serde_json::to_value(report.state)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    McpError::invalid_params(
        format!("cannot {what} the task: its job is already over ({state})"),
        None,
    )
}

/// A task's base fields from its job's report.
fn task(id: String, report: &JobReport) -> Task {
    let status = match report.state {
        JobPhase::Succeeded | JobPhase::Failed => TaskStatus::Completed,
        JobPhase::Cancelled => TaskStatus::Cancelled,
        JobPhase::InputRequired => TaskStatus::InputRequired,
        JobPhase::Running | JobPhase::Unknown => TaskStatus::Working,
    };
    let mut task = Task::new(id, status, iso(report.started_ms), iso(report.updated_ms))
        .with_poll_interval_ms(POLL_INTERVAL_MS);
    let message = match report.state {
        JobPhase::Running | JobPhase::InputRequired => {
            report.progress.clone().or(report.message.clone())
        }
        _ => report.message.clone(),
    };
    if let Some(message) = message {
        task = task.with_status_message(message);
    }
    task
}

fn as_object(result: CallToolResult) -> JsonObject {
    match serde_json::to_value(result) {
        Ok(Value::Object(o)) => o,
        _ => JsonObject::new(),
    }
}
