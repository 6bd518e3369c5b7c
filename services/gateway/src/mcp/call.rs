//! `tools/call`: one [`CallPlan`] for MCP calls and the REST shortcuts (the
//! tool, its checked arguments, deadline and liveness), then the bus, with
//! the same span, metrics and fault records either way.

use super::*;
use crate::registry::ToolEntry;
use sophia_proto::audit::AuditKind;

/// Why a call was refused before it reached the bus.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// No live worker offers the tool.
    #[error(
        "unknown tool `{0}`: no live worker offers it. Call tools/list for the tools on offer now"
    )]
    UnknownTool(String),
    /// The bus is down.
    #[error("{0}")]
    BusDown(String),
    /// The arguments do not fit the tool's schema.
    #[error(
        "invalid arguments for `{tool}`: {}. Fix them to match the tool's input schema and call again",
        problems.join("; ")
    )]
    InvalidArguments {
        /// The tool.
        tool: String,
        /// What is wrong.
        problems: Vec<String>,
    },
    /// The policy or the endpoint's profile does not let the caller call
    /// the tool.
    #[error("{0}")]
    Forbidden(String),
}

impl Refusal {
    /// The machine-readable code of the refusal.
    pub fn code(&self) -> ErrorCode {
        match self {
            Refusal::UnknownTool(_) => ErrorCode::UnknownTool,
            Refusal::BusDown(_) => ErrorCode::Unavailable,
            Refusal::InvalidArguments { .. } => ErrorCode::InvalidArguments,
            Refusal::Forbidden(_) => ErrorCode::PermissionDenied,
        }
    }
}

/// How a tool call made outside MCP (the REST shortcuts) failed.
#[derive(Debug, thiserror::Error)]
pub enum DirectCallError {
    /// Refused before the bus.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// The call itself failed.
    #[error(transparent)]
    Call(#[from] CallError),
}

/// A call ready for the bus: the tool as the registry has it, arguments
/// checked against its schema, and its deadline.
pub(crate) struct CallPlan {
    entry: Arc<ToolEntry>,
    args: Value,
    timeout: Duration,
    /// A stateless client's answers to the previous attempt's questions,
    /// or a detached start.
    attempt: sophia_kit::bus::Attempt,
}

/// Where a call comes from: its caller, trace and cancellation.
struct Origin<'a> {
    caller: Caller,
    span: &'a Span,
    cancel: &'a tokio_util::sync::CancellationToken,
    /// Whether the call counts in the console's traffic and the audit
    /// trail: every call does but the console's own periodic reads.
    noted: bool,
}

/// Tools whose call is a person's decision on a change: recorded as
/// confirmations too. `agno_confirm` decides an agent's pending action; a
/// destructive tool given a `preview_id` applies the preview a person saw;
/// `pulumi_reject_preview` is a person's no to one.
fn confirmation(entry: &ToolEntry, args: &Value) -> Option<&'static str> {
    if entry.spec.name == "pulumi_reject_preview" {
        return Some("declined");
    }
    if entry.spec.name == "agno_confirm" {
        return Some(match args.get("approve").and_then(Value::as_bool) {
            Some(true) => "accepted",
            _ => "declined",
        });
    }
    (entry.spec.hints.destructive && args.get("preview_id").is_some()).then_some("accepted")
}

impl McpGateway {
    /// Checks a call of `name` with `args` by `caller`: the policy and
    /// profile allow it, the bus is up, a live worker offers the tool, the
    /// arguments fit its schema. Refusals are audited.
    pub(crate) fn prepare(
        &self,
        caller: &Caller,
        name: &str,
        args: Value,
    ) -> Result<CallPlan, Refusal> {
        self.plan(caller, name, args).inspect_err(|refusal| {
            self.audit(
                AuditKind::Refusal,
                caller,
                name,
                refusal.code().as_str(),
                guard::AuditDetail::default(),
            );
        })
    }

    fn plan(&self, caller: &Caller, name: &str, args: Value) -> Result<CallPlan, Refusal> {
        let entry = self.inner.registry.get(name);
        self.authorize(caller, name, entry.as_ref())?;
        if let Some(down) = self.inner.link.down_message() {
            return Err(Refusal::BusDown(down));
        }
        let entry = entry.ok_or_else(|| Refusal::UnknownTool(sophia_kit::vetting::shown(name)))?;
        let problems = sophia_kit::schema::problems(&entry.validator, &args);
        if !problems.is_empty() {
            self.inner
                .metrics
                .record(&entry.spec, "invalid_arguments", Instant::now());
            return Err(Refusal::InvalidArguments {
                tool: entry.spec.name.clone(),
                problems,
            });
        }
        let timeout = entry
            .spec
            .timeout_ms
            .map(Duration::from_millis)
            .unwrap_or(self.inner.limits.default_timeout)
            .min(self.inner.limits.max_timeout);
        Ok(CallPlan {
            entry,
            args,
            timeout,
            attempt: Default::default(),
        })
    }

    /// Sends `plan` on the bus, with `route` for progress and questions;
    /// records the outcome (metrics, span, faults).
    async fn send(
        &self,
        plan: CallPlan,
        origin: Origin<'_>,
        route: Option<sophia_kit::bus::RouteTarget>,
    ) -> Result<sophia_kit::bus::Reply, CallError> {
        let started = Instant::now();
        let spec = &plan.entry.spec;
        origin
            .span
            .set(KeyValue::new(attr::CATEGORY, spec.category.to_string()));
        let _permit = self
            .inner
            .access
            .limits
            .admit(&origin.caller.principal)
            .map_err(|busy| {
                self.audit(
                    AuditKind::Refusal,
                    &origin.caller,
                    &spec.name,
                    ErrorCode::Busy.as_str(),
                    guard::AuditDetail::default(),
                );
                origin.span.fail_code(ErrorCode::Busy);
                CallError::Worker(
                    WireError::new(ErrorCode::Busy, busy.message.clone()).with_data(json!({
                        "retry_after_ms": busy.retry_after.as_millis() as u64,
                    })),
                )
            })?;
        self.inner.access.used(&spec.name);
        let flight = origin.noted.then(|| {
            self.inner
                .traffic
                .begin(&spec.name, spec.category.as_str(), &origin.caller.principal)
        });
        let audited = (origin.noted && self.inner.access.audit.enabled()).then(|| {
            (
                origin.caller.clone(),
                crate::access::audit::args_hash(&plan.args),
                confirmation(&plan.entry, &plan.args),
            )
        });
        let call = CallSpec {
            tool: &spec.name,
            target: Target::Tool(spec.category),
            args: plan.args,
            timeout: plan.timeout,
            caller: origin.caller,
            trace: origin.span.trace(),
            liveness: liveness(&plan.entry),
        };
        let _in_flight = self.inner.metrics.in_flight(spec);
        let outcome = self
            .inner
            .bus
            .call_with(call, route, plan.attempt, origin.cancel)
            .await;
        let label = self.label(&outcome, &plan.entry, origin.span);
        self.inner.metrics.record(spec, label, started);
        if let Some(flight) = flight {
            flight.end(crate::console::Ending {
                label,
                message: crate::console::traffic::failure_message(&outcome),
                trace_id: origin.span.trace_id(),
            });
        }
        if let Some(audited) = audited {
            self.audit_call(audited, &spec.name, label, started, origin.span);
        }
        outcome
    }

    /// The outcome label of a call (metrics, traffic, audit), marking its
    /// span failed and noting the replica's fault when it failed.
    fn label(
        &self,
        outcome: &Result<sophia_kit::bus::Reply, CallError>,
        entry: &ToolEntry,
        span: &Span,
    ) -> &'static str {
        match outcome {
            // Not a failure: the client answers, then calls again.
            Err(e) if e.code() == ErrorCode::InputRequired => "input_required",
            Ok(reply) if reply.output.is_error => {
                span.fail("tool_error", "the tool reported an error");
                "tool_error"
            }
            Ok(_) => "ok",
            Err(e) => {
                span.fail_code(e.code());
                self.inner.faults.note(&entry.service, e);
                tracing::info!(tool = %entry.spec.name, code = %e.code(), cause = %e, "tool call failed");
                e.code().as_str()
            }
        }
    }

    /// Records a call (and, if it was one, a confirmation) in the audit
    /// trail: (caller, hash of the arguments, confirmation outcome).
    fn audit_call(
        &self,
        (caller, hash, confirmed): (Caller, String, Option<&str>),
        tool: &str,
        label: &str,
        started: Instant,
        span: &Span,
    ) {
        let trace_id = span.trace_id();
        for (kind, outcome) in [
            (AuditKind::Call, Some(label)),
            (AuditKind::Confirmation, confirmed),
        ] {
            let Some(outcome) = outcome else { continue };
            let detail = guard::AuditDetail {
                started: Some(started),
                trace_id: trace_id.clone(),
                args_sha256: Some(hash.clone()),
            };
            self.audit(kind, &caller, tool, outcome, detail);
        }
    }

    /// Calls `name` as `tools/call` would (schema check, deadline, bus), for
    /// callers that are not MCP clients, such as the REST shortcuts.
    pub async fn call_direct(
        &self,
        name: &str,
        args: Value,
        identity: &Identity,
    ) -> Result<ToolOutput, DirectCallError> {
        self.call_as(name, args, identity, "rest", true).await
    }

    /// Calls `name` for the console as `identity`: its decisions (`noted`,
    /// counted and audited like any call) and its periodic reads of the
    /// work lists (not noted, or each open console would fill the audit
    /// trail and the traffic figures with its own polling).
    pub async fn call_for_console(
        &self,
        name: &str,
        args: Value,
        identity: &Identity,
        noted: bool,
    ) -> Result<ToolOutput, DirectCallError> {
        self.call_as(name, args, identity, "console", noted).await
    }

    async fn call_as(
        &self,
        name: &str,
        args: Value,
        identity: &Identity,
        via: &'static str,
        noted: bool,
    ) -> Result<ToolOutput, DirectCallError> {
        let span = Span::start(
            format!("tools/call {}", sophia_kit::vetting::shown(name)),
            SpanKind::Server,
            &headers::Context::default(),
            vec![
                KeyValue::new(attr::TOOL_NAME, sophia_kit::vetting::shown(name)),
                KeyValue::new(attr::GEN_AI_OPERATION, "execute_tool"),
                KeyValue::new(attr::NETWORK_TRANSPORT, "tcp"),
                KeyValue::new("sophia.via", via),
            ],
        );
        let caller = Caller {
            principal: identity.principal.clone(),
            session: None,
            via: format!(
                "sophia-gateway ({})",
                if via == "rest" { "REST" } else { via }
            ),
            roles: identity.roles.clone(),
        };
        // A console's polling is not audited, its refusals (no worker for a
        // list yet) neither.
        let plan = match noted {
            true => self.prepare(&caller, name, args),
            false => self.plan(&caller, name, args),
        }
        .inspect_err(|r| span.fail(r.code().as_str(), "refused"))?;
        let origin = Origin {
            caller,
            span: &span,
            cancel: &tokio_util::sync::CancellationToken::new(),
            noted,
        };
        Ok(self.send(plan, origin, None).await?.output)
    }

    /// `tools/call` from an MCP client: the plan, the call with progress,
    /// logs and questions relayed, and the result in the form HTTP clients
    /// accept (large ones in parts). A stateless client's questions end the
    /// call as `input_required` (`rounds.rs`).
    pub(super) async fn call_mcp(
        &self,
        mut request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let shown = sophia_kit::vetting::shown(&request.name);
        let span = server_span(
            "tools/call",
            Some(&shown),
            &context,
            vec![
                KeyValue::new(attr::TOOL_NAME, shown.clone()),
                KeyValue::new(attr::GEN_AI_OPERATION, "execute_tool"),
            ],
        );
        let args = Value::Object(request.arguments.take().unwrap_or_default());
        let caller = self.caller(&context);
        let mut rounds = self
            .rounds_of(&mut request, &args, &caller, &context)
            .inspect_err(|_| span.fail(ErrorCode::InvalidArguments.as_str(), "requestState"))?;
        let mut plan = match self.prepare(&caller, &request.name, args) {
            Ok(plan) => plan,
            Err(refusal) => {
                span.fail(refusal.code().as_str(), "refused");
                return refusal.into_mcp().map(Into::into);
            }
        };
        if let Some(declined) = self
            .confirm_destructive(&plan.entry, &plan.args, &caller, &context, rounds.as_mut())
            .await
        {
            span.fail(ErrorCode::Cancelled.as_str(), "not confirmed");
            return Ok(declined);
        }
        if let Some(rounds) = &rounds {
            self.audit_answers(rounds, &caller, &request.name);
        }
        plan.attempt.round = rounds.as_ref().and_then(rounds::Rounds::round);
        plan.attempt.detached = plan.entry.spec.jobs.is_some() && tasks::wants_tasks(&context);
        let can = rounds
            .as_ref()
            .map_or_else(|| relay::client_can(&context.peer), |r| r.can);
        let (timeout, detached) = (plan.timeout, plan.attempt.detached);
        let relay = Relay::open(self, &context, can).audited(self, &caller, &request.name);
        let origin = Origin {
            caller: caller.clone(),
            span: &span,
            cancel: &context.ct,
            noted: true,
        };
        let target = relay.target();
        let call = self.send(plan, origin, target);
        let outcome = relay.run_until(call, &context.peer, timeout).await;
        if let (Err(CallError::Worker(w)), Some(rounds)) = (&outcome, &rounds)
            && let Some(answer) = self.stateless_answer(rounds, w)
        {
            return answer;
        }
        if let (Ok(reply), true) = (&outcome, detached)
            && let Some(task) = self.task_of(&request.name, &caller, &reply.output)
        {
            return Ok(task.into());
        }
        let result = match outcome {
            Ok(reply) => to_mcp(reply.output),
            Err(e) => {
                let data = match &e {
                    CallError::Worker(w) => w.data.clone(),
                    _ => None,
                };
                error_result(e.code(), e.to_string(), data)
            }
        };
        let result = match &self.results {
            Some(results) => results.fit(result, &caller.principal).await,
            None => result,
        };
        Ok(result.into())
    }
}

impl McpGateway {
    /// Calls `tool` with `args` as `caller` for a task (a job's status or
    /// cancel tool): refusals and failures are JSON-RPC errors, since the
    /// task request itself cannot be answered.
    pub(super) async fn call_for_task(
        &self,
        caller: &Caller,
        tool: &str,
        args: Value,
    ) -> Result<ToolOutput, McpError> {
        let plan = self
            .prepare(caller, tool, args)
            .map_err(|refusal| McpError::internal_error(refusal.to_string(), None))?;
        let span = Span::start(
            format!("tasks {}", sophia_kit::vetting::shown(tool)),
            SpanKind::Server,
            &headers::Context::default(),
            vec![KeyValue::new(
                attr::TOOL_NAME,
                sophia_kit::vetting::shown(tool),
            )],
        );
        let origin = Origin {
            caller: caller.clone(),
            span: &span,
            cancel: &tokio_util::sync::CancellationToken::new(),
            noted: true,
        };
        match self.send(plan, origin, None).await {
            Ok(reply) => Ok(reply.output),
            // The worker knows no such job (its record expired).
            Err(CallError::Worker(w)) if w.code == ErrorCode::InvalidArguments => Err(
                McpError::invalid_params(format!("unknown task: {}", w.message), None),
            ),
            // The job is not in a state to take this (e.g. an answer replayed).
            Err(CallError::Worker(w)) if w.code == ErrorCode::Conflict => {
                Err(McpError::invalid_params(w.message, None))
            }
            Err(e) => Err(McpError::internal_error(
                format!("could not reach the job's worker: {e}"),
                None,
            )),
        }
    }
}

/// What a call of `entry` does if its replica is lost: read-only and
/// idempotent tools run once more elsewhere; others end with `worker_lost`.
fn liveness(entry: &ToolEntry) -> sophia_kit::bus::Liveness {
    sophia_kit::bus::Liveness {
        acked: entry.acked,
        retry: entry.spec.hints.read_only || entry.spec.hints.idempotent,
    }
}
