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
        "tool `{tool}` did not answer within {timeout:?}{}. The call was cancelled on the \
         worker; retry later{}",
        match replica {
            Some(r) => format!(
                "; replica {r} took it and still answers liveness checks, so it is stuck on it"
            ),
            None => "; the worker may be overloaded or stuck".to_owned(),
        },
        if replica.is_some() {
            ", and if it keeps happening read that replica's logs or restart it \
             (the gateway's /health lists stuck replicas)"
        } else {
            ""
        }
    )]
    Timeout {
        /// The tool.
        tool: String,
        /// How long the gateway waited.
        timeout: Duration,
        /// The replica that acknowledged the call and stayed alive, if any.
        replica: Option<String>,
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
    /// The replica running the call died, froze, or the bus went away,
    /// before it answered.
    #[error(
        "the worker running `{tool}` was lost before it answered: {loss}. The call may or may \
         not have run; check its effect before retrying{}",
        if *.pulumi { " (for Pulumi, see pulumi_job or pulumi_history)" } else { "" }
    )]
    WorkerLost {
        /// The tool.
        tool: String,
        /// What happened to the replica.
        loss: Loss,
        /// Whether the tool is Pulumi's (the message says where to check).
        pulumi: bool,
    },
}

/// How the replica running a call was lost.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Loss {
    /// The caller's own bus link went down.
    #[error("the connection to the bus (NATS) was lost while it ran")]
    Link,
    /// No replica acknowledged the request: the one the queue group chose
    /// is gone, or takes requests and drops them.
    #[error("no replica acknowledged the request within {0:?}")]
    Unacknowledged(Duration),
    /// The replica that acknowledged it died or froze.
    #[error("replica {replica}: {why}")]
    Replica {
        /// Its instance id.
        replica: String,
        /// What happened to it.
        why: String,
    },
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
            CallError::WorkerLost { .. } => ErrorCode::WorkerLost,
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

/// How often a caller asks a replica running its call whether it is alive.
const ALIVE_EVERY: Duration = Duration::from_secs(1);
/// Unanswered asks in a row after which that replica counts as stuck.
const ALIVE_MISSES: u32 = 3;
/// How long a replica that acknowledges requests may take to do so.
const ACK_WITHIN: Duration = Duration::from_secs(5);
/// How long the bus link may be down before the calls in flight end (their
/// replies, if any, would be lost with it).
const LINK_GRACE: Duration = Duration::from_secs(1);

/// What a call does about the replica running it: it always watches the
/// replica that acknowledged it (see [`headers::ACK_TO`]) and ends with
/// [`CallError::WorkerLost`] once that replica is gone or stuck, or once the
/// bus link has been down for a second.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Liveness {
    /// Every replica serving the subject acknowledges requests: one not
    /// acknowledged within five seconds went to a replica that is gone.
    pub acked: bool,
    /// Run the call once more if its replica is lost (the queue group picks
    /// another): only for read-only or idempotent tools.
    pub retry: bool,
}

type AckWaiters = Arc<Mutex<HashMap<Uuid, tokio::sync::oneshot::Sender<String>>>>;

/// Asks one replica whether it is alive, for as long as calls wait on it;
/// `lost` says why once it is not.
struct Watcher {
    lost: tokio::sync::watch::Receiver<Option<String>>,
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

impl Bus {
    /// Connects the call path: subscribes to this gateway's progress inbox.
    pub async fn start(
        client: async_nats::Client,
        instance: String,
        max_payload_bytes: usize,
    ) -> Result<Self, async_nats::SubscribeError> {
        let routes: ProgressRoutes = Default::default();
        let acks: AckWaiters = Default::default();
        let mut inbox = client.subscribe(subject::progress_inbox(&instance)).await?;
        let (r, a) = (routes.clone(), acks.clone());
        tokio::spawn(async move {
            while let Some(msg) = inbox.next().await {
                if let Some(by) = msg
                    .headers
                    .as_ref()
                    .and_then(|h| h.get(headers::ACCEPTED_BY))
                {
                    let id = headers::Context::from_headers(msg.headers.as_ref()).request_id;
                    let waiter = id.and_then(|id| a.lock().expect("ack waiters").remove(&id));
                    if let Some(tx) = waiter {
                        let _ = tx.send(by.as_str().to_owned());
                    }
                    continue;
                }
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
            link_lost: watch_link(client.clone()),
            client,
            instance,
            routes,
            questions,
            acks,
            watchers: Default::default(),
        })
    }

    /// The watcher of replica `instance`, shared by every call waiting on it.
    fn watcher(&self, instance: &str) -> Arc<Watcher> {
        let mut watchers = self.watchers.lock().expect("watchers");
        if let Some(w) = watchers.get(instance).and_then(std::sync::Weak::upgrade) {
            return w;
        }
        watchers.retain(|_, w| w.strong_count() > 0);
        let (tx, rx) = tokio::sync::watch::channel(None);
        let watcher = Arc::new(Watcher { lost: rx });
        watchers.insert(instance.to_owned(), Arc::downgrade(&watcher));
        let (client, target, weak) = (
            self.client.clone(),
            subject::alive(instance),
            Arc::downgrade(&watcher),
        );
        tokio::spawn(async move {
            let mut misses = 0;
            // The first ask a second after the ack: calls shorter than that
            // (most) never cost one.
            let mut tick =
                tokio::time::interval_at(tokio::time::Instant::now() + ALIVE_EVERY, ALIVE_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if weak.strong_count() == 0 {
                    return; // no call waits on this replica any more
                }
                let ask = async_nats::Request::new().timeout(Some(ALIVE_EVERY));
                match client.send_request(target.clone(), ask).await {
                    Ok(_) => misses = 0,
                    Err(e) if e.kind() == RequestErrorKind::NoResponders => {
                        let _ = tx.send(Some("its process is gone (it left NATS)".into()));
                        return;
                    }
                    Err(e) if e.kind() == RequestErrorKind::TimedOut => {
                        misses += 1;
                        if misses >= ALIVE_MISSES {
                            let _ = tx.send(Some(format!(
                                "it stopped answering ({misses} liveness checks missed, \
                                 {ALIVE_EVERY:?} apart)"
                            )));
                            return;
                        }
                    }
                    // The link is down: that is watched on its own.
                    Err(_) => {}
                }
            }
        });
        watcher
    }

    /// Resolves with why the call with request id `id` can no longer be
    /// answered; pending while all is well.
    async fn lost(
        &self,
        ack: tokio::sync::oneshot::Receiver<String>,
        liveness: Liveness,
        acked_by: &Mutex<Option<String>>,
    ) -> Loss {
        let mut link = self.link_lost.clone();
        let link_lost = async move {
            let _ = link.wait_for(|lost| *lost).await;
            Loss::Link
        };
        let replica = async {
            let by = if liveness.acked {
                match tokio::time::timeout(ACK_WITHIN, ack).await {
                    Ok(Ok(by)) => by,
                    Ok(Err(_)) => return std::future::pending().await,
                    Err(_) => return Loss::Unacknowledged(ACK_WITHIN),
                }
            } else {
                match ack.await {
                    Ok(by) => by,
                    // A replica that does not acknowledge: wait for its answer.
                    Err(_) => return std::future::pending().await,
                }
            };
            *acked_by.lock().expect("acked by") = Some(by.clone());
            let watcher = self.watcher(&by);
            let mut lost = watcher.lost.clone();
            let why = lost
                .wait_for(Option::is_some)
                .await
                .map(|why| why.clone().unwrap_or_default());
            let Ok(why) = why else {
                return std::future::pending().await;
            };
            Loss::Replica { replica: by, why }
        };
        tokio::select! {
            why = link_lost => why,
            why = replica => why,
        }
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
        let mut hdrs = headers::Context {
            request_id: Some(id),
            ..spec.trace.clone()
        }
        .to_headers();
        let encoded = sophia_proto::encode(request).map_err(|e| CallError::BadReply {
            tool: spec.tool.to_owned(),
            cause: e.to_string(),
        })?;
        let body = self.payloads.pack(encoded, &mut hdrs).await?;
        // The replica that takes the request says so at once; then it is
        // watched until it answers.
        hdrs.insert(
            headers::ACK_TO,
            subject::progress(&self.instance, id).as_str(),
        );
        let (ack_tx, ack_rx) = tokio::sync::oneshot::channel();
        self.acks.lock().expect("ack waiters").insert(id, ack_tx);
        let _forget = AckGuard(&self.acks, id);
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
        let acked_by = Mutex::new(None);
        let reply = tokio::select! {
            r = send => r,
            _ = cancel.cancelled() => {
                self.cancel_on_worker(spec.category, id, "cancelled by the client").await;
                return Err(CallError::Cancelled);
            }
            loss = self.lost(ack_rx, spec.liveness, &acked_by) => {
                // A retry takes the same id; a cancel now would stop it.
                if !spec.liveness.retry {
                    self.cancel_on_worker(spec.category, id, "its caller stopped waiting").await;
                }
                return Err(CallError::WorkerLost {
                    tool: spec.tool.to_owned(),
                    loss,
                    pulumi: spec.tool.starts_with("pulumi_"),
                });
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
                                replica: acked_by.lock().expect("acked by").take(),
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
        // A worker's error comes as a NATS service error, its envelope in a
        // header; anything else in the body (offloaded if large).
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

/// Forgets a call's acknowledgement waiter when the call is over.
struct AckGuard<'a>(&'a AckWaiters, Uuid);

impl Drop for AckGuard<'_> {
    fn drop(&mut self) {
        self.0.lock().expect("ack waiters").remove(&self.1);
    }
}

/// Watches `client`'s link: true once it has been down for [`LINK_GRACE`],
/// false again once it is up. The task ends with the last receiver.
fn watch_link(client: async_nats::Client) -> tokio::sync::watch::Receiver<bool> {
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let mut down_since: Option<tokio::time::Instant> = None;
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        while !tx.is_closed() {
            tick.tick().await;
            if client.connection_state() == State::Connected {
                down_since = None;
            } else {
                down_since.get_or_insert_with(tokio::time::Instant::now);
            }
            let lost = down_since.is_some_and(|t| t.elapsed() >= LINK_GRACE);
            tx.send_if_modified(|v| std::mem::replace(v, lost) != lost);
        }
    });
    rx
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
