//! What travels to the client while a call runs: the worker's progress,
//! its log records (at or above the level the session set), and its
//! questions (elicitation, sampling, roots), answered on the side.

use super::*;

pub(super) async fn next_question(
    questions: &mut Option<mpsc::Receiver<ClientQuestion>>,
) -> Option<ClientQuestion> {
    match questions {
        Some(q) => q.recv().await,
        None => std::future::pending().await,
    }
}

/// What the session's client can answer mid-call.
pub(super) fn client_can(peer: &Peer<RoleServer>) -> ClientCan {
    let capabilities = peer.peer_info().map(|i| i.capabilities.clone());
    ClientCan {
        elicit: peer
            .supported_elicitation_modes()
            .contains(&ElicitationMode::Form),
        sample: capabilities.as_ref().is_some_and(|c| c.sampling.is_some()),
        roots: capabilities.as_ref().is_some_and(|c| c.roots.is_some()),
        rounds: false,
    }
}

/// Puts a worker's question to the MCP client (elicitation, sampling or
/// roots) and sends the client's answer back to the worker. A person's
/// answer to an elicitation is audited as a confirmation.
pub(super) async fn ask(
    peer: Peer<RoleServer>,
    question: ClientQuestion,
    timeout: Duration,
    audit: Option<Audited>,
) {
    let elicit = matches!(question.ask.question, Question::Elicit { .. });
    let answer = relay_question(&peer, &question.ask.question, timeout).await;
    if let (true, Some(audited)) = (elicit, audit) {
        let outcome = match &answer {
            Ok(result) => match result.get("action").and_then(Value::as_str) {
                Some("accept") => "accepted",
                Some("decline") => "declined",
                _ => "cancelled",
            },
            Err(e) => e.code.as_str(),
        };
        audited.gateway.audit(
            sophia_proto::audit::AuditKind::Confirmation,
            &audited.caller,
            &audited.tool,
            outcome,
            super::guard::AuditDetail::default(),
        );
    }
    match answer {
        Ok(result) => question.answer(result).await,
        Err(e) => question.fail(e).await,
    }
}

/// Whose call a question belongs to, for the audit trail.
#[derive(Clone)]
pub(super) struct Audited {
    gateway: McpGateway,
    caller: Caller,
    tool: String,
}

// Sampling and roots are deprecated by SEP-2577 in rmcp, but clients speaking
// the 2025 revisions (Cursor among them) use them.
#[allow(deprecated)]
pub(super) async fn relay_question(
    peer: &Peer<RoleServer>,
    question: &Question,
    timeout: Duration,
) -> Result<Value, WireError> {
    let unanswered = |e: &dyn std::fmt::Display| {
        WireError::new(
            ErrorCode::Unavailable,
            format!("the client did not answer: {e}"),
        )
    };
    let to_json =
        |v: Result<Value, serde_json::Error>| v.map_err(|e| WireError::internal(e.to_string()));
    match question {
        Question::Elicit { message, schema } => {
            let schema = elicitation_schema(schema)?;
            let params = ElicitRequestParams::FormElicitationParams {
                meta: None,
                message: message.clone(),
                requested_schema: schema,
            };
            let result = peer
                .create_elicitation_with_timeout(params, Some(timeout))
                .await
                .map_err(|e| unanswered(&e))?;
            to_json(serde_json::to_value(result))
        }
        Question::Sample { params } => {
            let params: CreateMessageRequestParams = serde_json::from_value(params.clone())
                .map_err(|e| {
                    WireError::invalid_arguments(format!(
                        "not MCP sampling parameters (messages, maxTokens, ...): {e}"
                    ))
                })?;
            let result = answered_within(timeout, peer.create_message(params)).await?;
            to_json(serde_json::to_value(result))
        }
        Question::Roots => {
            let result = answered_within(timeout, peer.list_roots()).await?;
            to_json(serde_json::to_value(result))
        }
    }
}

/// The client's answer to a request, if it comes within `timeout`.
async fn answered_within<T>(
    timeout: Duration,
    answer: impl std::future::Future<Output = Result<T, rmcp::service::ServiceError>>,
) -> Result<T, WireError> {
    tokio::time::timeout(timeout, answer)
        .await
        .map_err(|_| WireError::new(ErrorCode::Timeout, "the client did not answer in time"))?
        .map_err(|e| {
            WireError::new(
                ErrorCode::Unavailable,
                format!("the client did not answer: {e}"),
            )
        })
}

pub(super) async fn next_progress(route: &mut Option<ProgressRoute>) -> Option<Progress> {
    match route {
        Some(r) => r.next().await,
        None => std::future::pending().await,
    }
}

/// Relays a worker's progress step (if the client sent a progress token) or
/// log record (if it is at or above the level the client set).
pub(super) async fn relay(
    peer: &Peer<RoleServer>,
    token: Option<&rmcp::model::ProgressToken>,
    log_threshold: Option<u8>,
    p: Progress,
) {
    if let Some(record) = p.log {
        if let (Some(rank), Some(threshold)) = (log_rank(&record.level), log_threshold)
            && rank >= threshold
        {
            relay_log(peer, record).await;
        }
        return;
    }
    let Some(token) = token else { return };
    let mut param = ProgressNotificationParam::new(token.clone(), p.progress);
    if let Some(total) = p.total {
        param = param.with_total(total);
    }
    if let Some(message) = p.message {
        param = param.with_message(message);
    }
    if let Err(e) = peer.notify_progress(param).await {
        tracing::debug!(cause = %e, "could not relay progress");
    }
}

// Logging is deprecated by SEP-2577 in rmcp; clients speaking the 2025
// revisions use it.
#[allow(deprecated)]
pub(super) async fn relay_log(peer: &Peer<RoleServer>, record: sophia_proto::LogRecord) {
    let param = serde_json::from_value::<rmcp::model::LoggingMessageNotificationParam>(json!({
        "level": record.level, "logger": record.logger, "data": record.data}));
    match param {
        Ok(param) => {
            if let Err(e) = peer.notify_logging_message(param).await {
                tracing::debug!(cause = %e, "could not relay a log record");
            }
        }
        Err(e) => tracing::debug!(cause = %e, "dropping a malformed log record"),
    }
}

/// One call's relay to its client: progress (if the client sent a progress
/// token), log records (at or above the session's level) and questions (of
/// the kinds the client answers).
pub(super) struct Relay {
    route: Option<ProgressRoute>,
    questions: Option<mpsc::Receiver<ClientQuestion>>,
    token: Option<rmcp::model::ProgressToken>,
    logs: Option<u8>,
    audit: Option<Audited>,
}

impl Relay {
    /// The relay a call from `context`'s client needs (none if it asked for
    /// nothing and answers nothing); `can` is what the client answers.
    pub(super) fn open(
        gateway: &McpGateway,
        context: &RequestContext<RoleServer>,
        can: ClientCan,
    ) -> Self {
        let token = context.meta.get_progress_token();
        let logs = gateway.log_threshold(context);
        let bus = &gateway.inner.bus;
        let mut route = if can.any() {
            Some(bus.route_with_questions(can))
        } else {
            (token.is_some() || logs.is_some()).then(|| bus.progress_route())
        };
        let questions = route.as_mut().and_then(ProgressRoute::take_questions);
        Self {
            route,
            questions,
            token,
            logs,
            audit: None,
        }
    }

    /// Audits the person's answers to this call's questions as `caller`'s
    /// confirmations of `tool`.
    pub(super) fn audited(mut self, gateway: &McpGateway, caller: &Caller, tool: &str) -> Self {
        if gateway.inner.access.audit.enabled() && self.questions.is_some() {
            self.audit = Some(Audited {
                gateway: gateway.clone(),
                caller: caller.clone(),
                tool: tool.to_owned(),
            });
        }
        self
    }

    /// Where the worker sends progress and questions, if anywhere.
    pub(super) fn target(&self) -> Option<sophia_kit::bus::RouteTarget> {
        self.route.as_ref().map(ProgressRoute::target)
    }

    /// Relays to `peer` until `call` ends, then the progress still in
    /// transit; questions are answered on the side (a person may take
    /// until `timeout`, and progress and cancellation go on meanwhile).
    pub(super) async fn run_until(
        mut self,
        call: impl std::future::Future<Output = Result<sophia_kit::bus::Reply, CallError>>,
        peer: &Peer<RoleServer>,
        timeout: Duration,
    ) -> Result<sophia_kit::bus::Reply, CallError> {
        tokio::pin!(call);
        let outcome = loop {
            tokio::select! {
                outcome = &mut call => break outcome,
                Some(p) = next_progress(&mut self.route) => {
                    relay(peer, self.token.as_ref(), self.logs, p).await
                }
                Some(q) = next_question(&mut self.questions) => {
                    tokio::spawn(ask(peer.clone(), q, timeout, self.audit.clone()));
                }
            }
        };
        if let (Ok(reply), Some(r)) = (&outcome, self.route.as_mut()) {
            for p in r.drain(reply.progress_sent, PROGRESS_PATIENCE).await {
                relay(peer, self.token.as_ref(), self.logs, p).await;
            }
        }
        outcome
    }
}

/// A worker's question schema as MCP elicitation's, or an error saying why
/// it is not one.
pub(super) fn elicitation_schema(schema: &Value) -> Result<ElicitationSchema, WireError> {
    schema
        .as_object()
        .cloned()
        .ok_or_else(|| "the schema is not a JSON object".to_owned())
        .and_then(|o| ElicitationSchema::from_json_schema(o).map_err(|e| e.to_string()))
        .map_err(|why| {
            WireError::invalid_arguments(format!(
                "the question's schema is not one MCP elicitation allows (a flat object of \
                 primitive properties): {why}"
            ))
        })
}

/// MCP's log levels, least severe first.
const LOG_LEVELS: [&str; 8] = [
    "debug",
    "info",
    "notice",
    "warning",
    "error",
    "critical",
    "alert",
    "emergency",
];

pub(super) fn log_rank(level: &str) -> Option<u8> {
    LOG_LEVELS.iter().position(|l| *l == level).map(|i| i as u8)
}
