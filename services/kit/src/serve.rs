//! Serving one request, from its arrival to the reply: unpack (large
//! payloads) → decode the [`ToolRequest`] → find the tool by subject →
//! validate the arguments → run the handler racing cancellation and the
//! deadline → encode and pack the [`ToolResponse`] → reply. Every path ends in
//! a reply with a result or a typed error; nothing here panics on bad input.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::{Duration, Instant};

use async_nats::service;
use futures::FutureExt;
use sophia_proto::payload::PayloadStore;
use sophia_proto::{
    ErrorCode, PROTOCOL_VERSION, ToolRequest, ToolResponse, WireError, headers, subject,
};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::metrics::ToolCallMetrics;
use crate::telemetry::{Span, SpanKind, attr};
use crate::tool::{Call, ProgressSink};
use opentelemetry::KeyValue;

/// What each subject serves.
pub(crate) type ToolsBySubject = HashMap<String, Served>;
pub(crate) use crate::served::Served;

/// The longest deadline a request may ask for (one day).
const MAX_DEADLINE_MS: u64 = 24 * 60 * 60 * 1000;

pub(crate) struct Shared {
    pub(crate) client: async_nats::Client,
    pub(crate) payloads: PayloadStore,
    /// Tools by subject, with their compiled input schemas.
    pub(crate) tools: ToolsBySubject,
    /// Calls running here: their token, and how many times the id is being
    /// served (more than once when a call is forwarded within the process).
    pub(crate) in_flight: Mutex<HashMap<Uuid, (CancellationToken, usize)>>,
    /// Cancels that arrived before their request (NATS does not order
    /// messages across subjects); kept for a minute.
    pub(crate) early_cancels: Mutex<HashMap<Uuid, Instant>>,
    pub(crate) metrics: ToolCallMetrics,
    pub(crate) cancel_grace: Duration,
    pub(crate) bus: crate::bus::Bus,
    /// This replica's instance id (on spans: which worker handled a call).
    pub(crate) instance: String,
    /// The mesh's policy, checked against every request's caller.
    pub(crate) policy: Option<Arc<crate::policy::Policy>>,
    /// The worker service's name (what its offers belong to).
    pub(crate) service: String,
}

/// The error of a call whose deadline passed on replica `instance` (alive,
/// since it says so): it names the replica, in words and in `data`, so the
/// caller can tell which one is stuck.
fn stuck(instance: &str) -> WireError {
    WireError::new(
        ErrorCode::Timeout,
        format!(
            "the call's deadline passed before the tool finished on replica {instance}, which \
             cancelled it. Retry later; if it keeps happening, that replica may be stuck: read \
             its logs or restart it"
        ),
    )
    .with_data(serde_json::json!({ "replica": instance }))
}

impl Shared {
    pub(crate) fn cancel(&self, id: Uuid) {
        let token = self.in_flight.lock().get(&id).map(|(t, _)| t.clone());
        match token {
            Some(t) => t.cancel(),
            None => {
                let mut early = self.early_cancels.lock();
                early.retain(|_, at| at.elapsed() < Duration::from_secs(60));
                early.insert(id, Instant::now());
            }
        }
    }

    pub(crate) fn cancel_all(&self) {
        for (t, _) in self.in_flight.lock().values() {
            t.cancel();
        }
    }

    /// Tracks a call for cancellation. A call forwarded within this process
    /// (the same id served twice, see [`crate::Call::forward`]) shares one
    /// token, so a cancel stops both.
    fn track(&self, id: Uuid) -> CancellationToken {
        let mut in_flight = self.in_flight.lock();
        if let Some((token, count)) = in_flight.get_mut(&id) {
            *count += 1;
            return token.clone();
        }
        let token = CancellationToken::new();
        if self.early_cancels.lock().remove(&id).is_some() {
            token.cancel();
        }
        in_flight.insert(id, (token.clone(), 1));
        token
    }

    fn untrack(&self, id: Uuid) {
        let mut in_flight = self.in_flight.lock();
        if let Some((_, count)) = in_flight.get_mut(&id) {
            *count -= 1;
            if *count == 0 {
                in_flight.remove(&id);
            }
        }
    }
}

pub(crate) async fn dispatch(shared: &Arc<Shared>, limit: &Arc<Semaphore>, req: service::Request) {
    let received = Instant::now();
    acknowledge(shared, &req).await;
    let Ok(permit) = limit.clone().acquire_owned().await else {
        return;
    };
    let shared = shared.clone();
    tokio::spawn(async move {
        serve_request(&shared, req, received).await;
        drop(permit);
    });
}

/// Tells the caller at once which replica took the request (if it asked,
/// with [`headers::ACK_TO`]), before any queueing, so that it can watch this
/// replica's liveness while it waits. A subject that is not a caller's reply
/// subject is ignored.
async fn acknowledge(shared: &Shared, req: &service::Request) {
    let Some(h) = req.message.headers.as_ref() else {
        return;
    };
    let Some(to) = h.get(headers::ACK_TO).map(|v| v.as_str()) else {
        return;
    };
    if !subject::is_reply_subject(to) {
        tracing::debug!(
            len = to.len(),
            "ignoring an invalid acknowledgement subject"
        );
        return;
    }
    let mut ack = async_nats::HeaderMap::new();
    ack.insert(headers::ACCEPTED_BY, shared.instance.as_str());
    if let Some(id) = h.get(headers::REQUEST_ID) {
        ack.insert(headers::REQUEST_ID, id.as_str());
    }
    if let Err(e) = shared
        .client
        .publish_with_headers(to.to_owned(), ack, bytes::Bytes::new())
        .await
    {
        tracing::debug!(cause = %e, "could not acknowledge a request");
    }
}

/// Answers [`subject::alive`] for this replica until dropped (at the end of
/// its drain, or when its serving task is aborted).
pub(crate) struct AliveResponder(tokio::task::JoinHandle<()>);

impl AliveResponder {
    pub(crate) async fn start(
        client: &async_nats::Client,
        instance: &str,
    ) -> Result<Self, async_nats::SubscribeError> {
        use futures::StreamExt;
        let mut asks = client.subscribe(subject::alive(instance)).await?;
        let client = client.clone();
        Ok(Self(tokio::spawn(async move {
            while let Some(ask) = asks.next().await {
                if let Some(reply) = ask.reply {
                    let _ = client.publish(reply, bytes::Bytes::new()).await;
                }
            }
        })))
    }
}

impl Drop for AliveResponder {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Serves one request from start to reply. Never panics on bad input: every
/// path ends in a reply with a result or a typed error.
async fn serve_request(shared: &Shared, req: service::Request, received: Instant) {
    let started = Instant::now();
    let trace = headers::Context::from_headers(req.message.headers.as_ref());
    let fallback_id = trace.request_id.unwrap_or(Uuid::nil());
    let served = shared.tools.get(req.message.subject.as_str()).cloned();
    if let Some(served) = &served {
        shared.metrics.queue_wait(served, started - received);
    }
    let destination = req.message.subject.as_str();
    let mut attributes = vec![
        KeyValue::new(attr::MESSAGING_SYSTEM, "nats"),
        KeyValue::new(attr::MESSAGING_DESTINATION, destination.to_owned()),
        KeyValue::new(attr::MESSAGING_OPERATION_TYPE, "process"),
        KeyValue::new(attr::MESSAGING_OPERATION_NAME, "process"),
        KeyValue::new(attr::MESSAGING_CONSUMER_GROUP, subject::QUEUE_GROUP),
        KeyValue::new(attr::MESSAGING_MESSAGE_ID, fallback_id.to_string()),
        KeyValue::new(attr::MESSAGING_BODY_SIZE, req.message.payload.len() as i64),
        KeyValue::new(attr::INSTANCE, shared.instance.clone()),
    ];
    if let Some(served) = &served {
        attributes.extend(served.attributes());
    }
    let process = Span::start(
        format!("process {destination}"),
        SpanKind::Consumer,
        &trace,
        attributes,
    );

    let (id, outcome, progress_sent) = match decode_request(shared, &req).await {
        Err(e) => (fallback_id, Err(e), 0),
        Ok(request) => {
            let id = request.id;
            match &served {
                None => (
                    id,
                    Err(WireError::new(
                        ErrorCode::UnknownTool,
                        format!("this worker does not serve {}", req.message.subject),
                    )),
                    0,
                ),
                Some(served) => match permitted(shared, served, &request)
                    .and_then(|()| check_args(served.validator.as_deref(), &request))
                {
                    Err(e) => (id, Err(e), 0),
                    Ok(()) => {
                        let (outcome, sent) =
                            run_tool(shared, served, request, process.trace()).await;
                        (id, outcome, sent)
                    }
                },
            }
        }
    };
    let outcome_label = match &outcome {
        Ok(_) => "ok",
        Err(e) => e.code.as_str(),
    };
    process.outcome(&outcome);
    if let Some(served) = &served {
        shared.metrics.record(served, outcome_label, started);
    }
    let mut response = ToolResponse::new(id, outcome);
    response.progress_sent = progress_sent;
    reply(shared, &req, id, &response).await;
}

/// Validates the arguments here too: agents may call workers on the bus
/// directly, without a gateway in front.
fn check_args(
    validator: Option<&jsonschema::Validator>,
    request: &ToolRequest,
) -> Result<(), WireError> {
    let Some(validator) = validator else {
        return Ok(());
    };
    let problems = crate::schema::problems(validator, &request.args);
    if problems.is_empty() {
        return Ok(());
    }
    Err(WireError::invalid_arguments(format!(
        "invalid arguments for `{}`: {}",
        request.tool,
        problems.join("; ")
    ))
    .with_data(serde_json::json!({ "errors": problems })))
}

async fn decode_request(shared: &Shared, req: &service::Request) -> Result<ToolRequest, WireError> {
    let body = shared
        .payloads
        .unpack(req.message.headers.as_ref(), req.message.payload.clone())
        .await
        .map_err(|e| WireError::new(ErrorCode::TooLarge, e.to_string()))?;
    let request: ToolRequest = sophia_proto::decode(&body)
        .map_err(|e| WireError::new(ErrorCode::BadEnvelope, e.to_string()))?;
    if request.v != PROTOCOL_VERSION {
        return Err(WireError::new(
            ErrorCode::UnsupportedVersion,
            format!(
                "request uses protocol version {}, this worker speaks {PROTOCOL_VERSION}",
                request.v
            ),
        ));
    }
    Ok(request)
}

/// Whether the policy (if any) lets the request's caller use `served`: the
/// gateway checked already, but a request forged straight onto the bus
/// meets the same rules here.
fn permitted(shared: &Shared, served: &Served, request: &ToolRequest) -> Result<(), WireError> {
    let Some(policy) = &shared.policy else {
        return Ok(());
    };
    let item = match served.category {
        Some(category) => crate::policy::Item::tool(&served.name, category, served.hints),
        None => crate::policy::Item::offer(&shared.service),
    };
    let caller = &request.caller;
    policy.decide(&caller.roles, &item).map_err(|why| {
        tracing::warn!(
            tool = %served.name,
            principal = %caller.principal,
            "refused a call the policy does not allow"
        );
        WireError::new(
            ErrorCode::PermissionDenied,
            crate::policy::refusal(&caller.principal, &caller.roles, &item, &why),
        )
    })
}

/// Runs a tool call inside its `tool_call` span (entered only while the
/// call's future is polled, never held across an await).
async fn run_tool(
    shared: &Shared,
    served: &Served,
    request: ToolRequest,
    trace: headers::Context,
) -> (Result<sophia_proto::ToolOutput, WireError>, u64) {
    use tracing::Instrument;
    // Named for the tool served here (a forwarded call keeps its caller's
    // tool name in the request).
    let mut attributes = served.attributes();
    attributes.extend([
        KeyValue::new(attr::GEN_AI_OPERATION, "execute_tool"),
        KeyValue::new(attr::PRINCIPAL, request.caller.principal.clone()),
    ]);
    let execute = Span::start(
        format!("execute_tool {}", served.name),
        SpanKind::Internal,
        &trace,
        attributes,
    );
    // The handler's own calls are children of this span.
    let trace = execute.trace();
    let span = tracing::info_span!(
        "tool_call",
        tool = %request.tool,
        request_id = %request.id,
        principal = %request.caller.principal,
        trace_id = execute.trace_id().unwrap_or_default(),
    );
    let result = async move {
        let id = request.id;
        let token = shared.track(id);
        // Clamped: a garbage deadline must not overflow the clock.
        let deadline =
            Instant::now() + Duration::from_millis(request.timeout_ms.min(MAX_DEADLINE_MS));
        let progress_sent = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let call = call_for(shared, request, deadline, trace, &token, &progress_sent);
        let in_flight = shared.metrics.in_flight(served);
        let outcome = supervise((served.handler)(call), shared, &token, deadline).await;
        drop(in_flight);
        shared.untrack(id);
        let outcome = match outcome {
            Ok(result) => result,
            Err(_) => {
                tracing::error!("tool handler panicked");
                Err(WireError::internal(
                    "the tool failed unexpectedly (handler panicked); see the worker's logs",
                ))
            }
        };
        // What the handler returned is the truth, even after a cancel: a call
        // that completed must not be reported as cancelled and then retried.
        (
            outcome,
            progress_sent.load(std::sync::atomic::Ordering::Relaxed),
        )
    }
    .instrument(span)
    .await;
    execute.outcome(&result.0);
    result
}

/// The handler's view of `request`: its arguments, deadline, trace, and
/// where its progress and questions go (only to a caller's reply subjects,
/// see `subject::is_reply_subject`).
fn call_for(
    shared: &Shared,
    request: ToolRequest,
    deadline: Instant,
    trace: headers::Context,
    token: &CancellationToken,
    progress_sent: &Arc<std::sync::atomic::AtomicU64>,
) -> Call {
    Call {
        id: request.id,
        tool: request.tool,
        args: request.args,
        caller: request.caller,
        deadline,
        trace,
        cancel: token.clone(),
        progress: request
            .progress_to
            .filter(|s| subject::is_reply_subject(s))
            .map(|subject| ProgressSink {
                client: shared.client.clone(),
                subject,
            }),
        progress_sent: progress_sent.clone(),
        bus: shared.bus.clone(),
        ask: request.ask.filter(|a| subject::is_reply_subject(&a.to)),
        policy: shared.policy.clone(),
        round: request.round,
        job: crate::detach::JobSide::asked(request.detached),
        asking: Default::default(),
    }
}

/// Runs a handler until it finishes, is cancelled (with a grace period to
/// stop on its own) or passes `deadline`; a panic is caught (`Err`).
async fn supervise(
    work: impl std::future::Future<Output = crate::tool::ToolResult>,
    shared: &Shared,
    token: &CancellationToken,
    deadline: Instant,
) -> Result<crate::tool::ToolResult, Box<dyn std::any::Any + Send>> {
    let work = std::panic::AssertUnwindSafe(work).catch_unwind();
    tokio::pin!(work);
    tokio::select! {
        done = &mut work => done,
        _ = token.cancelled() => {
            // Give the handler a moment to stop on its own (and clean up).
            match tokio::time::timeout(shared.cancel_grace, &mut work).await {
                Ok(done) => done,
                Err(_) => Ok(Err(WireError::new(ErrorCode::Cancelled, "the call was cancelled"))),
            }
        }
        _ = tokio::time::sleep_until(deadline.into()) => {
            token.cancel();
            Ok(Err(stuck(&shared.instance)))
        }
    }
}

/// Whether a reply's body is a reference to the object store.
fn offloaded(reply_headers: &async_nats::HeaderMap) -> bool {
    reply_headers.get(headers::PAYLOAD).map(|v| v.as_str()) == Some(headers::OFFLOADED)
}

async fn reply(shared: &Shared, req: &service::Request, id: Uuid, response: &ToolResponse) {
    let mut reply_headers = headers::Context {
        request_id: Some(id),
        ..Default::default()
    }
    .to_headers();
    let encoded = match sophia_proto::encode(response) {
        Ok(b) => b,
        Err(e) => {
            let fallback = ToolResponse::new(id, Err(WireError::internal(e.to_string())));
            sophia_proto::encode(&fallback).unwrap_or_default()
        }
    };
    let body = match shared.payloads.pack(encoded, &mut reply_headers).await {
        Ok(body) => body,
        Err(e) => {
            tracing::warn!(cause = %e, request_id = %id, "result too large to deliver");
            let fallback =
                ToolResponse::new(id, Err(WireError::new(ErrorCode::TooLarge, e.to_string())));
            sophia_proto::encode(&fallback).unwrap_or_default().into()
        }
    };
    // An error goes as a NATS service error, so `$SRV.STATS` counts it; its
    // envelope rides in a header (the body of a service error is empty).
    let outcome = match (
        &response.error,
        sophia_proto::headers::error_envelope(&body),
    ) {
        (Some(error), Some(envelope)) if !offloaded(&reply_headers) => {
            reply_headers.insert(sophia_proto::headers::ERROR_ENVELOPE, envelope.as_str());
            Err(service::error::Error {
                status: crate::vetting::shown(&error.message).replace(['\r', '\n'], " "),
                code: error.code.service_code(),
            })
        }
        _ => Ok(body),
    };
    if let Err(e) = req.respond_with_headers(outcome, reply_headers).await {
        tracing::warn!(cause = %e, request_id = %id, "could not send the reply");
    }
}
