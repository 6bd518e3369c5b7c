//! Calling tools over the bus, for the gateway and for workers (agents) alike:
//! one call becomes one NATS request.
//!
//! [`Bus::call`] encodes a [`ToolRequest`] (offloading it if large), sends it
//! to the tool's subject with a deadline and trace headers, relays progress
//! from the gateway's progress inbox, forwards cancellation to the worker's
//! category, and maps every failure to a [`CallError`] that says what to do.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::{RequestErrorKind, connection::State};
use futures::StreamExt;
use serde_json::Value;
use sophia_proto::payload::PayloadStore;
use sophia_proto::{
    Ask, AskReply, AskRoute, Caller, Cancel, Category, ErrorCode, PROTOCOL_VERSION, Progress,
    Question, ToolOutput, ToolRequest, ToolResponse, WireError, headers, subject,
};
use tokio::sync::mpsc;

use crate::telemetry::{Span, SpanKind, attr};
use opentelemetry::KeyValue;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// How a tool call failed, from the gateway's point of view.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// No worker subscribes to the tool's subject (NATS "no responders").
    #[error(
        "no worker is serving `{tool}` (category {category}) right now; start a worker \
         for it or retry once one has joined"
    )]
    NoWorker {
        /// The tool.
        tool: String,
        /// Its category.
        category: Category,
    },
    /// The worker did not answer in time.
    #[error(
        "tool `{tool}` did not answer within {timeout:?}; the worker may be overloaded or stuck. \
         The call was cancelled on the worker; retry later"
    )]
    Timeout {
        /// The tool.
        tool: String,
        /// How long the gateway waited.
        timeout: Duration,
    },
    /// The bus is not reachable.
    #[error(
        "the message bus (NATS) is unreachable ({0}); the gateway is reconnecting, retry shortly"
    )]
    BusDown(String),
    /// The worker answered with something that is not a valid reply.
    #[error(
        "the worker serving `{tool}` sent a malformed reply ({cause}); this is a bug in that worker"
    )]
    BadReply {
        /// The tool.
        tool: String,
        /// What was wrong.
        cause: String,
    },
    /// The payload could not be carried.
    #[error("{0}")]
    Payload(#[from] sophia_proto::payload::PayloadError),
    /// The worker ran the call and returned a typed error.
    #[error("{0}")]
    Worker(WireError),
    /// The caller cancelled.
    #[error("the call was cancelled")]
    Cancelled,
}

impl CallError {
    /// The wire error code that best describes this failure.
    pub fn code(&self) -> ErrorCode {
        match self {
            CallError::NoWorker { .. } | CallError::BusDown(_) => ErrorCode::Unavailable,
            CallError::Timeout { .. } => ErrorCode::Timeout,
            CallError::BadReply { .. } => ErrorCode::BadEnvelope,
            CallError::Payload(_) => ErrorCode::TooLarge,
            CallError::Worker(e) => e.code,
            CallError::Cancelled => ErrorCode::Cancelled,
        }
    }
}

/// A successful call: the output, and how many progress messages the worker
/// published (see [`ProgressRoute::drain`]).
#[derive(Debug)]
pub struct Reply {
    /// The tool's output.
    pub output: ToolOutput,
    /// Progress messages the worker sent for this call.
    pub progress_sent: u64,
}

type ProgressRoutes = Arc<Mutex<HashMap<Uuid, mpsc::Sender<Progress>>>>;
type QuestionRoutes = Arc<Mutex<HashMap<Uuid, mpsc::Sender<ClientQuestion>>>>;

/// A worker's question for the caller's client (elicitation, sampling,
/// roots), waiting for the client's answer.
#[derive(Debug)]
pub struct ClientQuestion {
    /// What the worker asks.
    pub ask: Ask,
    reply: Option<async_nats::Subject>,
    client: async_nats::Client,
}

impl ClientQuestion {
    async fn send(self, reply: AskReply) {
        let Some(to) = self.reply else { return };
        match sophia_proto::encode(&reply) {
            Ok(bytes) => {
                if let Err(e) = self.client.publish(to, bytes.into()).await {
                    tracing::debug!(cause = %e, "could not send an answer to the worker");
                }
            }
            Err(e) => tracing::warn!(cause = %e, "could not encode an answer"),
        }
    }

    /// Sends the client's MCP result (as JSON) back to the worker.
    pub async fn answer(self, result: Value) {
        self.send(AskReply {
            v: PROTOCOL_VERSION,
            result: Some(result),
            error: None,
        })
        .await
    }

    /// Answers with an error: the client could not be asked.
    pub async fn fail(self, error: WireError) {
        self.send(AskReply {
            v: PROTOCOL_VERSION,
            result: None,
            error: Some(error),
        })
        .await
    }
}

/// What a caller's client can answer, for [`Bus::route_with_questions`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClientCan {
    /// Elicitation, form mode.
    pub elicit: bool,
    /// Sampling.
    pub sample: bool,
    /// Roots.
    pub roots: bool,
}

impl ClientCan {
    /// Whether the client can answer anything at all.
    pub fn any(self) -> bool {
        self.elicit || self.sample || self.roots
    }
}

/// What [`Bus::call`] needs of a route: where progress and questions go.
#[derive(Clone, Copy, Debug)]
pub struct RouteTarget {
    /// The request id.
    pub id: Uuid,
    /// What the route's client can answer (nothing: no questions).
    pub questions: ClientCan,
}

/// A caller's connection to the bus, shared by all its calls.
#[derive(Clone)]
pub struct Bus {
    client: async_nats::Client,
    payloads: PayloadStore,
    instance: String,
    routes: ProgressRoutes,
    questions: QuestionRoutes,
}

/// One call to make.
#[derive(Debug)]
pub struct CallSpec<'a> {
    /// Tool name (or inference operation).
    pub tool: &'a str,
    /// Its category (where cancels go).
    pub category: Category,
    /// The subject to send to; `None` for the tool's own
    /// `sophia.v1.tools.<category>.<tool>`.
    pub subject: Option<String>,
    /// Validated arguments.
    pub args: Value,
    /// Deadline budget.
    pub timeout: Duration,
    /// Who calls.
    pub caller: Caller,
    /// Trace context to propagate.
    pub trace: headers::Context,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bus")
            .field("instance", &self.instance)
            .finish_non_exhaustive()
    }
}

impl Bus {
    /// Connects the call path: subscribes to this gateway's progress inbox.
    pub async fn start(
        client: async_nats::Client,
        instance: String,
        max_payload_bytes: usize,
    ) -> Result<Self, async_nats::SubscribeError> {
        let routes: ProgressRoutes = Default::default();
        let mut inbox = client.subscribe(subject::progress_inbox(&instance)).await?;
        let r = routes.clone();
        tokio::spawn(async move {
            while let Some(msg) = inbox.next().await {
                let Ok(p) = sophia_proto::decode::<Progress>(&msg.payload) else {
                    tracing::debug!(subject = %msg.subject, "ignoring malformed progress");
                    continue;
                };
                let tx = r.lock().expect("progress routes").get(&p.id).cloned();
                if let Some(tx) = tx {
                    // Progress is best effort: a slow client loses updates, never the call.
                    let _ = tx.try_send(p);
                }
            }
        });
        let questions: QuestionRoutes = Default::default();
        let mut asked = client.subscribe(subject::ask_inbox(&instance)).await?;
        let (q, c) = (questions.clone(), client.clone());
        tokio::spawn(async move {
            while let Some(msg) = asked.next().await {
                let ask = match sophia_proto::decode::<Ask>(&msg.payload) {
                    Ok(a) => a,
                    Err(e) => {
                        let question = ClientQuestion {
                            ask: Ask {
                                v: PROTOCOL_VERSION,
                                id: Uuid::nil(),
                                question: Question::Roots,
                            },
                            reply: msg.reply,
                            client: c.clone(),
                        };
                        question
                            .fail(WireError::invalid_arguments(format!(
                                "a malformed question: {e}"
                            )))
                            .await;
                        continue;
                    }
                };
                let tx = q.lock().expect("question routes").get(&ask.id).cloned();
                let question = ClientQuestion {
                    ask,
                    reply: msg.reply,
                    client: c.clone(),
                };
                let refused = match tx {
                    Some(tx) => tx.try_send(question).err().map(|e| e.into_inner()),
                    None => Some(question),
                };
                if let Some(question) = refused {
                    question
                        .fail(WireError::new(
                            ErrorCode::Unavailable,
                            "the call is over, or its client cannot answer questions",
                        ))
                        .await;
                }
            }
        });
        Ok(Self {
            payloads: PayloadStore::new(client.clone()).with_max_bytes(max_payload_bytes),
            client,
            instance,
            routes,
            questions,
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
        self.routes.lock().expect("progress routes").insert(id, tx);
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
        self.questions
            .lock()
            .expect("question routes")
            .insert(route.id, tx);
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
                });
            }
        }
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
        let target = spec
            .subject
            .clone()
            .unwrap_or_else(|| subject::tool(spec.category, spec.tool));
        let span = Span::start(
            format!("send {target}"),
            SpanKind::Producer,
            &spec.trace,
            vec![
                KeyValue::new(attr::MESSAGING_SYSTEM, "nats"),
                KeyValue::new(attr::MESSAGING_DESTINATION, target),
                KeyValue::new(attr::MESSAGING_OPERATION_TYPE, "send"),
                KeyValue::new(attr::MESSAGING_OPERATION_NAME, "request"),
                KeyValue::new(attr::MESSAGING_MESSAGE_ID, request.id.to_string()),
                KeyValue::new(attr::TOOL_NAME, spec.tool.to_owned()),
                KeyValue::new(attr::CATEGORY, spec.category.to_string()),
            ],
        );
        // The worker's spans are children of this one.
        let spec = CallSpec {
            trace: span.trace(),
            ..spec
        };
        let result = self.send_traced(request, spec, cancel).await;
        if let Err(e) = &result {
            // The code only: a worker's message is not vetted for spans.
            span.fail_code(e.code());
        }
        result
    }

    async fn send_traced(
        &self,
        request: ToolRequest,
        spec: CallSpec<'_>,
        cancel: &CancellationToken,
    ) -> Result<Reply, CallError> {
        if !self.is_up() {
            return Err(CallError::BusDown("not connected".into()));
        }
        let id = request.id;
        let mut hdrs = headers::Context {
            request_id: Some(id),
            ..spec.trace
        }
        .to_headers();
        let encoded = sophia_proto::encode(&request).map_err(|e| CallError::BadReply {
            tool: spec.tool.to_owned(),
            cause: e.to_string(),
        })?;
        let body = self.payloads.pack(encoded, &mut hdrs).await?;
        // The worker enforces the deadline and says so; wait a little longer so
        // its answer, not ours, is what the caller sees.
        let wait = spec.timeout + Duration::from_secs(1);
        let target = spec
            .subject
            .clone()
            .unwrap_or_else(|| subject::tool(spec.category, spec.tool));
        let send = self.client.send_request(
            target,
            async_nats::Request::new()
                .payload(body)
                .headers(hdrs)
                .timeout(Some(wait)),
        );
        let reply = tokio::select! {
            r = send => r,
            _ = cancel.cancelled() => {
                self.cancel_on_worker(spec.category, id, "cancelled by the client").await;
                return Err(CallError::Cancelled);
            }
        };
        let msg = match reply {
            Ok(msg) => msg,
            Err(e) => {
                return Err(match e.kind() {
                    RequestErrorKind::NoResponders => CallError::NoWorker {
                        tool: spec.tool.to_owned(),
                        category: spec.category,
                    },
                    RequestErrorKind::TimedOut => {
                        self.cancel_on_worker(spec.category, id, "the gateway stopped waiting")
                            .await;
                        if self.is_up() {
                            CallError::Timeout {
                                tool: spec.tool.to_owned(),
                                timeout: wait,
                            }
                        } else {
                            CallError::BusDown("the connection was lost during the call".into())
                        }
                    }
                    _ => CallError::BusDown(e.to_string()),
                });
            }
        };
        let bad = |cause: String| CallError::BadReply {
            tool: spec.tool.to_owned(),
            cause,
        };
        let body = self
            .payloads
            .unpack(msg.headers.as_ref(), msg.payload)
            .await?;
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

    async fn cancel_on_worker(&self, category: Category, id: Uuid, reason: &str) {
        let msg = Cancel {
            v: PROTOCOL_VERSION,
            id,
            reason: Some(reason.to_owned()),
        };
        if let Ok(bytes) = sophia_proto::encode(&msg)
            && let Err(e) = self
                .client
                .publish(subject::cancel(category), bytes.into())
                .await
        {
            tracing::warn!(cause = %e, request_id = %id, "could not forward a cancel to the worker");
        }
    }
}

/// One call's progress, routed from the gateway's progress inbox. The route
/// is removed when this is dropped.
pub struct ProgressRoute {
    /// The request id the progress is for.
    pub id: Uuid,
    rx: mpsc::Receiver<Progress>,
    received: u64,
    routes: ProgressRoutes,
    question_routes: Option<QuestionRoutes>,
    question_rx: Option<mpsc::Receiver<ClientQuestion>>,
    can: ClientCan,
}

impl ProgressRoute {
    /// What to pass to [`Bus::call`].
    pub fn target(&self) -> RouteTarget {
        RouteTarget {
            id: self.id,
            questions: self.can,
        }
    }

    /// The worker's questions, to read alongside progress; `None` on a
    /// route without questions (or once taken).
    pub fn take_questions(&mut self) -> Option<mpsc::Receiver<ClientQuestion>> {
        self.question_rx.take()
    }

    /// The next progress message.
    pub async fn next(&mut self) -> Option<Progress> {
        let p = self.rx.recv().await;
        self.received += p.is_some() as u64;
        p
    }

    /// Progress messages still in transit after the reply: the worker sent
    /// `sent` in all. Waits at most `patience` for them, since progress may
    /// also be lost (it is best effort).
    pub async fn drain(&mut self, sent: u64, patience: Duration) -> Vec<Progress> {
        let mut late = Vec::new();
        let deadline = tokio::time::Instant::now() + patience;
        while self.received < sent {
            match tokio::time::timeout_at(deadline, self.next()).await {
                Ok(Some(p)) => late.push(p),
                _ => break,
            }
        }
        late
    }
}

impl Drop for ProgressRoute {
    fn drop(&mut self) {
        self.routes
            .lock()
            .expect("progress routes")
            .remove(&self.id);
        if let Some(routes) = &self.question_routes {
            routes.lock().expect("question routes").remove(&self.id);
        }
    }
}
