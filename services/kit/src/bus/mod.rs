//! Calling tools over the bus, for the gateway and for workers (agents) alike:
//! one call becomes one NATS request.
//!
//! [`Bus::call`] encodes a [`ToolRequest`] (offloading it if large), sends it
//! to the tool's subject with a deadline and trace headers, relays progress
//! from the gateway's progress inbox, forwards cancellation to where the
//! call went ([`Target`]: a tool's category, or one service's MCP offers),
//! and maps every failure to a [`CallError`] that says what to do.
//!
//! - [`error`]: how a call failed; [`routes`]: progress and questions coming
//!   back; [`liveness`]: whether the replica running a call is still there;
//!   [`target`]: where a call and its cancel go.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::Duration;

use async_nats::{RequestErrorKind, connection::State};
use futures::StreamExt;
use serde_json::Value;
use sophia_proto::payload::PayloadStore;
use sophia_proto::{
    Ask, AskReply, AskRoute, Caller, Cancel, ErrorCode, PROTOCOL_VERSION, Progress, Question,
    ToolOutput, ToolRequest, ToolResponse, WireError, headers, subject,
};
use tokio::sync::mpsc;

use crate::telemetry::{Span, SpanKind, attr};
use opentelemetry::KeyValue;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

mod error;
mod liveness;
mod routes;
mod target;

pub use error::{CallError, Loss};
pub use liveness::Liveness;
use liveness::{AckGuard, AckWaiters, Watcher, watch_link};
pub use routes::{ClientCan, ClientQuestion, ProgressRoute, RouteTarget};
use routes::{ProgressRoutes, QuestionRoutes};
pub use target::Target;

/// A successful call: the output, and how many progress messages the worker
/// published (see [`ProgressRoute::drain`]).
#[derive(Debug)]
pub struct Reply {
    /// The tool's output.
    pub output: ToolOutput,
    /// Progress messages the worker sent for this call.
    pub progress_sent: u64,
}

/// A caller's connection to the bus, shared by all its calls.
#[derive(Clone)]
pub struct Bus {
    client: async_nats::Client,
    payloads: PayloadStore,
    instance: String,
    routes: ProgressRoutes,
    questions: QuestionRoutes,
    acks: AckWaiters,
    watchers: Arc<Mutex<HashMap<String, std::sync::Weak<Watcher>>>>,
    /// True once the link has been down for [`LINK_GRACE`].
    link_lost: tokio::sync::watch::Receiver<bool>,
}

/// One call to make.
#[derive(Debug)]
pub struct CallSpec<'a> {
    /// Tool name (or inference operation, or MCP method).
    pub tool: &'a str,
    /// Where it goes, and where its cancel goes.
    pub target: Target,
    /// Validated arguments.
    pub args: Value,
    /// Deadline budget.
    pub timeout: Duration,
    /// Who calls.
    pub caller: Caller,
    /// Trace context to propagate.
    pub trace: headers::Context,
    /// What to do if the replica running the call is lost.
    pub liveness: Liveness,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bus")
            .field("instance", &self.instance)
            .finish_non_exhaustive()
    }
}

/// What one attempt of a call adds to its request.
#[derive(Clone, Debug, Default)]
pub struct Attempt {
    /// The client's answers to the questions a previous attempt ended with
    /// (MCP 2026-07-28 multi-round-trip).
    pub round: Option<sophia_proto::Round>,
    /// Start the tool's work as a job and answer at once (MCP tasks).
    pub detached: bool,
}

impl Bus {
    /// Connects the call path: subscribes to this gateway's progress inbox.
    pub async fn start(
        client: async_nats::Client,
        instance: String,
        max_payload_bytes: usize,
    ) -> Result<Self, async_nats::SubscribeError> {
        let routes: ProgressRoutes = Default::default();
        let acks: AckWaiters = Default::default();
        let inbox = client.subscribe(subject::progress_inbox(&instance)).await?;
        routes::spawn_progress_inbox(inbox, routes.clone(), acks.clone());
        let questions: QuestionRoutes = Default::default();
        let asked = client.subscribe(subject::ask_inbox(&instance)).await?;
        routes::spawn_ask_inbox(asked, questions.clone(), client.clone());
        Ok(Self {
            payloads: PayloadStore::new(client.clone()).with_max_bytes(max_payload_bytes),
            link_lost: watch_link(client.clone()),
            client,
            instance,
            routes,
            questions,
            acks,
            watchers: Default::default(),
        })
    }

    /// The NATS client underneath.
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    /// Whether the bus is connected.
    pub fn is_up(&self) -> bool {
        self.client.connection_state() == State::Connected
    }

    /// Opens a route for one call's progress. Pass its id to [`Bus::call`],
    /// read progress from it while the call runs, and drop it afterwards.
    pub fn progress_route(&self) -> ProgressRoute {
        let id = Uuid::new_v4();
        let (tx, rx) = mpsc::channel(256);
        self.routes.lock().insert(id, tx);
        ProgressRoute {
            id,
            rx,
            received: 0,
            routes: self.routes.clone(),
            question_routes: None,
            question_rx: None,
            can: ClientCan::default(),
        }
    }

    /// A route that also carries the worker's questions for the caller's
    /// client (take them with [`ProgressRoute::take_questions`]), of the
    /// kinds `can` says the client answers.
    pub fn route_with_questions(&self, can: ClientCan) -> ProgressRoute {
        let mut route = self.progress_route();
        let (tx, rx) = mpsc::channel(4);
        self.questions.lock().insert(route.id, tx);
        route.question_routes = Some(self.questions.clone());
        route.question_rx = Some(rx);
        route.can = can;
        route
    }

    /// Makes one call. With a `route`, the worker publishes progress to it
    /// (and may ask questions through it); `cancel` stops the call here and
    /// on the worker.
    pub async fn call(
        &self,
        spec: CallSpec<'_>,
        route: Option<RouteTarget>,
        cancel: &CancellationToken,
    ) -> Result<Reply, CallError> {
        self.call_with(spec, route, Attempt::default(), cancel)
            .await
    }

    /// [`Bus::call`] with what this attempt adds: the client's answers to a
    /// previous attempt's questions, or a detached start (see [`Attempt`]).
    pub async fn call_with(
        &self,
        spec: CallSpec<'_>,
        route: Option<RouteTarget>,
        attempt: Attempt,
        cancel: &CancellationToken,
    ) -> Result<Reply, CallError> {
        let mut request = ToolRequest::new(
            spec.tool,
            spec.args.clone(),
            spec.timeout.as_millis() as u64,
            spec.caller.clone(),
        );
        if let Some(route) = route {
            request.id = route.id;
            request.progress_to = Some(subject::progress(&self.instance, route.id));
            if route.questions.any() {
                request.ask = Some(AskRoute {
                    to: subject::ask(&self.instance, route.id),
                    elicit: route.questions.elicit,
                    sample: route.questions.sample,
                    roots: route.questions.roots,
                    rounds: route.questions.rounds,
                });
            }
        }
        request.round = attempt.round;
        request.detached = attempt.detached;
        self.send(request, spec, cancel).await
    }

    /// Sends a prepared request: `spec` gives the subject, deadline and
    /// trace; the request's own id, caller, progress and question routes are
    /// kept (this is how a call is forwarded on behalf of its caller).
    pub async fn send(
        &self,
        request: ToolRequest,
        spec: CallSpec<'_>,
        cancel: &CancellationToken,
    ) -> Result<Reply, CallError> {
        let destination = spec.target.subject(spec.tool);
        let mut attributes = vec![
            KeyValue::new(attr::MESSAGING_SYSTEM, "nats"),
            KeyValue::new(attr::MESSAGING_DESTINATION, destination.clone()),
            KeyValue::new(attr::MESSAGING_OPERATION_TYPE, "send"),
            KeyValue::new(attr::MESSAGING_OPERATION_NAME, "request"),
            KeyValue::new(attr::MESSAGING_MESSAGE_ID, request.id.to_string()),
            KeyValue::new(attr::TOOL_NAME, spec.tool.to_owned()),
        ];
        if let Some(category) = spec.target.category() {
            attributes.push(KeyValue::new(attr::CATEGORY, category.to_string()));
        }
        let span = Span::start(
            format!("send {destination}"),
            SpanKind::Producer,
            &spec.trace,
            attributes,
        );
        // The worker's spans are children of this one.
        let spec = CallSpec {
            trace: span.trace(),
            ..spec
        };
        let mut result = self.send_traced(&request, &spec, cancel).await;
        if spec.liveness.retry
            && let Err(CallError::WorkerLost { loss, .. }) = &result
        {
            tracing::info!(tool = %spec.tool, request_id = %request.id, cause = %loss,
                "the replica running a read-only or idempotent call was lost; running it once more");
            result = self.send_traced(&request, &spec, cancel).await;
        }
        if let Err(e) = &result {
            // The code only: a worker's message is not vetted for spans.
            span.fail_code(e.code());
        }
        result
    }

    async fn send_traced(
        &self,
        request: &ToolRequest,
        spec: &CallSpec<'_>,
        cancel: &CancellationToken,
    ) -> Result<Reply, CallError> {
        if !self.is_up() {
            return Err(CallError::BusDown("not connected".into()));
        }
        let id = request.id;
        let (body, hdrs) = self.pack(request, spec).await?;
        let (ack_tx, ack_rx) = tokio::sync::oneshot::channel();
        self.acks.lock().insert(id, ack_tx);
        let _forget = AckGuard(&self.acks, id);
        // The worker enforces the deadline and says so; wait a little longer so
        // its answer, not ours, is what the caller sees.
        let wait = spec.timeout + Duration::from_secs(1);
        let send = self.client.send_request(
            spec.target.subject(spec.tool),
            async_nats::Request::new()
                .payload(body)
                .headers(hdrs)
                .timeout(Some(wait)),
        );
        let acked_by = Mutex::new(None);
        let reply = tokio::select! {
            r = send => r,
            _ = cancel.cancelled() => {
                self.cancel_on_worker(&spec.target, id, "cancelled by the client").await;
                return Err(CallError::Cancelled);
            }
            loss = self.lost(ack_rx, spec.liveness, &acked_by) => {
                // A retry takes the same id; a cancel now would stop it.
                if !spec.liveness.retry {
                    self.cancel_on_worker(&spec.target, id, "its caller stopped waiting").await;
                }
                return Err(CallError::WorkerLost {
                    tool: spec.tool.to_owned(),
                    loss,
                    pulumi: spec.tool.starts_with("pulumi_"),
                });
            }
        };
        match reply {
            Ok(msg) => self.read_reply(msg, spec, id).await,
            Err(e) => Err(self.request_failed(e, spec, id, wait, &acked_by).await),
        }
    }

    /// The request as it goes on the wire: its body (offloaded if large)
    /// and headers (trace, request id, where to acknowledge it: the replica
    /// that takes it says so at once, then is watched until it answers).
    async fn pack(
        &self,
        request: &ToolRequest,
        spec: &CallSpec<'_>,
    ) -> Result<(bytes::Bytes, async_nats::HeaderMap), CallError> {
        let mut hdrs = headers::Context {
            request_id: Some(request.id),
            ..spec.trace.clone()
        }
        .to_headers();
        let encoded = sophia_proto::encode(request).map_err(|e| CallError::Encode {
            tool: spec.tool.to_owned(),
            cause: e.to_string(),
        })?;
        let body = self.payloads.pack(encoded, &mut hdrs).await?;
        hdrs.insert(
            headers::ACK_TO,
            subject::progress(&self.instance, request.id).as_str(),
        );
        Ok((body, hdrs))
    }

    /// What a failed NATS request means for the call.
    async fn request_failed(
        &self,
        e: async_nats::RequestError,
        spec: &CallSpec<'_>,
        id: Uuid,
        wait: Duration,
        acked_by: &Mutex<Option<String>>,
    ) -> CallError {
        match e.kind() {
            RequestErrorKind::NoResponders => CallError::NoWorker {
                tool: spec.tool.to_owned(),
                target: spec.target.clone(),
            },
            RequestErrorKind::TimedOut => {
                self.cancel_on_worker(&spec.target, id, "the gateway stopped waiting")
                    .await;
                if self.is_up() {
                    CallError::Timeout {
                        tool: spec.tool.to_owned(),
                        timeout: wait,
                        replica: acked_by.lock().take(),
                    }
                } else {
                    CallError::BusDown("the connection was lost during the call".into())
                }
            }
            _ => CallError::BusDown(e.to_string()),
        }
    }

    /// The call's outcome from the worker's reply: a worker's error comes
    /// as a NATS service error, its envelope in a header; anything else in
    /// the body (offloaded if large).
    async fn read_reply(
        &self,
        msg: async_nats::Message,
        spec: &CallSpec<'_>,
        id: Uuid,
    ) -> Result<Reply, CallError> {
        let bad = |cause: String| CallError::BadReply {
            tool: spec.tool.to_owned(),
            cause,
        };
        let body = match sophia_proto::headers::read_error_envelope(msg.headers.as_ref()) {
            Some(envelope) => envelope.map_err(bad)?.into(),
            None => {
                self.payloads
                    .unpack(msg.headers.as_ref(), msg.payload)
                    .await?
            }
        };
        let response: ToolResponse = sophia_proto::decode(&body).map_err(|e| bad(e.to_string()))?;
        if response.id != id && !response.id.is_nil() {
            return Err(bad(format!(
                "it answers request {} instead of {id}",
                response.id
            )));
        }
        let progress_sent = response.progress_sent;
        let output = response.into_outcome().map_err(CallError::Worker)?;
        Ok(Reply {
            output,
            progress_sent,
        })
    }

    async fn cancel_on_worker(&self, target: &Target, id: Uuid, reason: &str) {
        let msg = Cancel {
            v: PROTOCOL_VERSION,
            id,
            reason: Some(reason.to_owned()),
        };
        if let Ok(bytes) = sophia_proto::encode(&msg)
            && let Err(e) = self
                .client
                .publish(target.cancel_subject(), bytes.into())
                .await
        {
            tracing::warn!(cause = %e, request_id = %id, "could not forward a cancel to the worker");
        }
    }
}
