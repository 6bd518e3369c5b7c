//! Declaring tools and writing their handlers.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use futures::future::BoxFuture;
use serde::de::DeserializeOwned;
use serde_json::Value;
use sophia_proto::{Caller, Category, Hints, Progress, ToolOutput, ToolSpec, WireError, headers};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// What a handler returns: the tool's output or a typed error.
pub type ToolResult = Result<ToolOutput, WireError>;

pub(crate) type Handler = Arc<dyn Fn(Call) -> BoxFuture<'static, ToolResult> + Send + Sync>;

/// A tool: its announcement and its handler.
#[derive(Clone)]
pub struct Tool {
    pub(crate) spec: ToolSpec,
    pub(crate) handler: Handler,
    subject: Option<String>,
    announced: bool,
}

impl std::fmt::Debug for Tool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tool")
            .field("spec", &self.spec)
            .finish_non_exhaustive()
    }
}

impl Tool {
    /// A tool named `name` in `category`. It takes any object until
    /// [`Tool::input_schema`] says otherwise, and fails until it has a
    /// [`Tool::handler`].
    pub fn new(
        name: impl Into<String>,
        category: Category,
        description: impl Into<String>,
    ) -> Self {
        let name = name.into();
        let missing = name.clone();
        Self {
            spec: ToolSpec {
                name,
                title: None,
                description: description.into(),
                category,
                input_schema: serde_json::json!({"type": "object"}),
                output_schema: None,
                hints: Hints::default(),
                timeout_ms: None,
                jobs: None,
            },
            handler: Arc::new(move |_| {
                let msg = format!("tool {missing} has no handler");
                Box::pin(async move { Err(WireError::internal(msg)) })
            }),
            subject: None,
            announced: true,
        }
    }

    /// Serves the tool on `subject` instead of
    /// `sophia.v1.tools.<category>.<name>` (e.g. an inference subject from
    /// [`sophia_proto::subject::inference`]). Build the subject with `proto`.
    pub fn on_subject(mut self, subject: String) -> Self {
        self.subject = Some(subject);
        self
    }

    /// Keeps the tool off gateways' tool lists: a bus API for other workers
    /// and agents, not for MCP clients.
    pub fn unannounced(mut self) -> Self {
        self.announced = false;
        self
    }

    /// The subject the tool is served on.
    pub fn subject(&self) -> String {
        self.subject
            .clone()
            .unwrap_or_else(|| sophia_proto::subject::tool(self.spec.category, &self.spec.name))
    }

    /// Whether gateways are told about the tool.
    pub fn is_announced(&self) -> bool {
        self.announced
    }

    /// The JSON Schema of the arguments (must be an object schema).
    pub fn input_schema(mut self, schema: Value) -> Self {
        self.spec.input_schema = schema;
        self
    }

    /// The JSON Schema of the structured output.
    pub fn output_schema(mut self, schema: Value) -> Self {
        self.spec.output_schema = Some(schema);
        self
    }

    /// A human-friendly title.
    pub fn title(mut self, title: impl Into<String>) -> Self {
        self.spec.title = Some(title.into());
        self
    }

    /// Marks the tool read-only (it changes nothing).
    pub fn read_only(mut self) -> Self {
        self.spec.hints.read_only = true;
        self
    }

    /// Marks the tool destructive (it may delete or overwrite).
    pub fn destructive(mut self) -> Self {
        self.spec.hints.destructive = true;
        self
    }

    /// Marks the tool idempotent (repeating a call has no further effect).
    pub fn idempotent(mut self) -> Self {
        self.spec.hints.idempotent = true;
        self
    }

    /// Marks the tool as talking to systems outside the mesh.
    pub fn open_world(mut self) -> Self {
        self.spec.hints.open_world = true;
        self
    }

    /// How long callers should wait for this tool, in milliseconds.
    pub fn timeout_ms(mut self, ms: u64) -> Self {
        self.spec.timeout_ms = Some(ms);
        self
    }

    /// The function that runs a call.
    pub fn handler<F, Fut>(mut self, f: F) -> Self
    where
        F: Fn(Call) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ToolResult> + Send + 'static,
    {
        self.handler = Arc::new(move |call| Box::pin(f(call)));
        self
    }

    /// The function that runs a call, with shared state: `run(ctx, call)`
    /// gets its own `Arc` of `ctx` per call. A tool is then a named
    /// `async fn run(ctx: Arc<Ctx>, call: Call) -> ToolResult`, with no
    /// clones around a closure.
    pub fn with_ctx<C, F, Fut>(self, ctx: &Arc<C>, run: F) -> Self
    where
        C: Send + Sync + 'static,
        F: Fn(Arc<C>, Call) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ToolResult> + Send + 'static,
    {
        let ctx = ctx.clone();
        self.handler(move |call| run(ctx.clone(), call))
    }

    /// The announcement of this tool.
    pub fn spec(&self) -> &ToolSpec {
        &self.spec
    }
}

/// Publishes progress for one call.
#[derive(Clone, Debug)]
pub(crate) struct ProgressSink {
    pub client: async_nats::Client,
    pub subject: String,
}

/// One tool call, as a handler sees it.
#[derive(Debug)]
pub struct Call {
    /// The request id.
    pub id: Uuid,
    /// The tool called.
    pub tool: String,
    /// The arguments, already validated against the input schema by the gateway.
    pub args: Value,
    /// Who is calling.
    pub caller: Caller,
    /// When the caller stops waiting.
    pub deadline: Instant,
    /// Trace context of the call.
    pub trace: headers::Context,
    pub(crate) cancel: CancellationToken,
    pub(crate) progress: Option<ProgressSink>,
    pub(crate) progress_sent: std::sync::Arc<std::sync::atomic::AtomicU64>,
    pub(crate) bus: crate::bus::Bus,
    pub(crate) ask: Option<sophia_proto::AskRoute>,
    pub(crate) policy: Option<std::sync::Arc<crate::policy::Policy>>,
    /// Answers from the client to a previous attempt's questions (rounds).
    pub(crate) round: Option<sophia_proto::Round>,
    /// What the handler keeps for a retry, and its questions so far.
    pub(crate) asking: crate::rounds::Asking,
    /// Start as a job and answer at once, or be one (`detach.rs`).
    pub(crate) job: crate::detach::JobSide,
}

/// The person's answer to [`Call::elicit`].
#[derive(Clone, Debug, PartialEq)]
pub enum Answer {
    /// They answered; the content fits the requested schema.
    Accepted(Value),
    /// They said no.
    Declined,
    /// They dismissed the question.
    Cancelled,
}

impl Call {
    /// Whether the mesh's policy (`SOPHIA_POLICY`) lets this call's caller
    /// call `spec`; always, without a policy. An agent checks it before it
    /// offers or calls a tool on its starter's behalf (the tool's worker
    /// checks again). `Err` is the refusal, for the model or the person.
    pub fn caller_may_call(&self, spec: &sophia_proto::ToolSpec) -> Result<(), String> {
        let Some(policy) = &self.policy else {
            return Ok(());
        };
        let item = crate::policy::Item::tool(&spec.name, spec.category, spec.hints);
        policy.decide(&self.caller.roles, &item).map_err(|why| {
            crate::policy::refusal(&self.caller.principal, &self.caller.roles, &item, &why)
        })
    }

    /// The arguments as a typed value; a mismatch is an `invalid_arguments` error.
    pub fn args<T: DeserializeOwned>(&self) -> Result<T, WireError> {
        serde_json::from_value(self.args.clone())
            .map_err(|e| WireError::invalid_arguments(format!("arguments of {}: {e}", self.tool)))
    }

    /// Reports progress to the caller, if it asked for progress. `progress`
    /// should increase with every report. Best effort: a lost progress
    /// message never fails the call.
    pub async fn progress(&self, progress: f64, total: Option<f64>, message: Option<String>) {
        self.notify(Progress {
            v: sophia_proto::PROTOCOL_VERSION,
            id: self.id,
            progress,
            total,
            message,
            log: None,
        })
        .await
    }

    /// Sends a log record to the caller's client (MCP
    /// `notifications/message`; the gateway drops records below the level
    /// the client set). `level` is an MCP level name (`debug`, `info`,
    /// `warning`, `error`, ...). Best effort, like progress.
    pub async fn log(&self, level: &str, data: Value) {
        self.notify(Progress {
            v: sophia_proto::PROTOCOL_VERSION,
            id: self.id,
            progress: 0.0,
            total: None,
            message: None,
            log: Some(sophia_proto::LogRecord {
                level: level.to_owned(),
                logger: Some(self.tool.clone()),
                data,
            }),
        })
        .await
    }

    async fn notify(&self, msg: Progress) {
        self.note_job_line(&msg);
        let Some(sink) = &self.progress else { return };
        match sophia_proto::encode(&msg) {
            Ok(bytes) => {
                match sink
                    .client
                    .publish(sink.subject.clone(), bytes.into())
                    .await
                {
                    Ok(()) => {
                        self.progress_sent
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    Err(e) => tracing::debug!(cause = %e, "could not publish progress"),
                }
            }
            Err(e) => tracing::warn!(cause = %e, "could not encode progress"),
        }
    }

    /// Whether the caller asked for progress.
    pub fn wants_progress(&self) -> bool {
        self.progress.is_some()
    }

    /// Resolves when the call is cancelled (by the caller, or at drain).
    pub async fn cancelled(&self) {
        self.cancel.cancelled().await
    }

    /// Whether the call has been cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// The call's cancellation token, to hand to sub-tasks.
    pub fn cancellation(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// The bus, to call other workers' tools and models from this call,
    /// with progress, cancellation and large payloads handled.
    pub fn bus(&self) -> &crate::bus::Bus {
        &self.bus
    }

    /// Whether the person behind the call can be asked questions (their MCP
    /// client supports elicitation in form mode).
    pub fn can_elicit(&self) -> bool {
        self.ask.as_ref().is_some_and(|a| a.elicit)
    }

    /// Whether the caller's client can sample its model for this call.
    pub fn can_sample(&self) -> bool {
        self.ask.as_ref().is_some_and(|a| a.sample)
    }

    /// Whether the caller's client can list its roots.
    pub fn can_list_roots(&self) -> bool {
        self.ask.as_ref().is_some_and(|a| a.roots)
    }

    /// Sends `question` to the caller's client and waits for its MCP result,
    /// at most until the call's deadline. Errors: `missing_capability` when
    /// the client cannot answer this kind of question, `timeout` when no
    /// answer came in time, `cancelled` when the call was cancelled.
    pub(crate) async fn ask(&self, question: sophia_proto::Question) -> Result<Value, WireError> {
        use sophia_proto::{AskReply, ErrorCode};
        let what = question.capability();
        let Some(route) = self.ask.as_ref().filter(|_| self.can_answer(&question)) else {
            return Err(WireError::missing_capability(&question));
        };
        if route.rounds {
            return self.answer_in_round(question);
        }
        let ask = sophia_proto::Ask {
            v: sophia_proto::PROTOCOL_VERSION,
            id: self.id,
            question,
        };
        let bytes = sophia_proto::encode(&ask).map_err(|e| WireError::internal(e.to_string()))?;
        let request = self.bus.client().send_request(
            route.to.clone(),
            async_nats::Request::new()
                .payload(bytes.into())
                .timeout(Some(self.remaining())),
        );
        let reply = tokio::select! {
            r = request => r,
            _ = self.cancelled() => {
                return Err(WireError::new(ErrorCode::Cancelled, "the call was cancelled while waiting for the client"));
            }
        };
        let msg = reply.map_err(|e| match e.kind() {
            async_nats::RequestErrorKind::TimedOut => WireError::new(
                ErrorCode::Timeout,
                format!("the client did not answer ({what}) before the call's deadline"),
            ),
            _ => WireError::new(
                ErrorCode::Unavailable,
                format!("could not reach the caller's client: {e}"),
            ),
        })?;
        let reply: AskReply = sophia_proto::decode(&msg.payload).map_err(|e| {
            WireError::new(ErrorCode::Unavailable, format!("a malformed answer: {e}"))
        })?;
        match (reply.error, reply.result) {
            (Some(e), _) => Err(e),
            (None, Some(result)) => Ok(result),
            (None, None) => Err(WireError::new(ErrorCode::Unavailable, "an empty answer")),
        }
    }

    /// Asks the person behind the call a question (MCP elicitation, form
    /// mode) and waits for the answer, at most until the call's deadline.
    /// `schema` is a flat JSON Schema object of primitive properties.
    /// Errors: `missing_capability` when the client cannot be asked (it did
    /// not declare elicitation), `timeout` when no answer came in time, `cancelled` when the call was cancelled.
    pub async fn elicit(
        &self,
        message: impl Into<String>,
        schema: Value,
    ) -> Result<Answer, WireError> {
        let question = sophia_proto::Question::Elicit {
            message: message.into(),
            schema,
        };
        let result = self.ask(question).await?;
        Ok(match result["action"].as_str() {
            Some("accept") => {
                Answer::Accepted(result.get("content").cloned().unwrap_or(Value::Null))
            }
            Some("decline") => Answer::Declined,
            _ => Answer::Cancelled,
        })
    }

    /// Asks the caller's client to sample its model (MCP
    /// `sampling/createMessage`); `params` are MCP's
    /// `CreateMessageRequestParams` as JSON. Returns the client's
    /// `CreateMessageResult` as JSON (`role`, `content`, `model`, ...).
    pub async fn sample(&self, params: Value) -> Result<Value, WireError> {
        self.ask(sophia_proto::Question::Sample { params }).await
    }

    /// The caller's client's roots (MCP `roots/list`), as its
    /// `ListRootsResult` JSON (`{"roots": [{"uri", "name"?}]}`).
    pub async fn list_roots(&self) -> Result<Value, WireError> {
        self.ask(sophia_proto::Question::Roots).await
    }

    /// Hands this call to another subject (for instance a category's own
    /// workers), on behalf of the original caller: same request id, caller,
    /// deadline and trace, and progress and questions go straight to the
    /// caller. A cancel of this call cancels the forwarded one.
    pub async fn forward(
        &self,
        target: crate::bus::Target,
        args: Value,
    ) -> Result<ToolOutput, crate::bus::CallError> {
        let mut request = sophia_proto::ToolRequest::new(
            self.tool.clone(),
            args.clone(),
            self.remaining().as_millis() as u64,
            self.caller.clone(),
        );
        request.id = self.id;
        request.progress_to = self.progress.as_ref().map(|p| p.subject.clone());
        request.ask = self.ask.clone();
        request.round = self.round.clone();
        let spec = crate::bus::CallSpec {
            tool: &self.tool,
            target,
            args,
            timeout: self.remaining(),
            caller: self.caller.clone(),
            trace: self.trace.clone(),
            // A forwarded agent run is not run twice.
            liveness: crate::bus::Liveness {
                acked: true,
                retry: false,
            },
        };
        let reply = self.bus.send(request, spec, &self.cancel).await?;
        // The caller counts progress per request id: what the forwarded
        // call sent is ours too.
        self.progress_sent
            .fetch_add(reply.progress_sent, std::sync::atomic::Ordering::Relaxed);
        Ok(reply.output)
    }

    /// Time left before the deadline.
    pub fn remaining(&self) -> std::time::Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }
}
