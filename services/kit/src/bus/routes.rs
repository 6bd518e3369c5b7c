//! Where a call's progress and questions come back: a route per call,
//! looked up by request id when the worker publishes.

use super::*;

pub(super) type ProgressRoutes = Arc<Mutex<HashMap<Uuid, mpsc::Sender<Progress>>>>;

pub(super) type QuestionRoutes = Arc<Mutex<HashMap<Uuid, mpsc::Sender<ClientQuestion>>>>;

/// A worker's question for the caller's client (elicitation, sampling,
/// roots), waiting for the client's answer.
#[derive(Debug)]
pub struct ClientQuestion {
    /// What the worker asks.
    pub ask: Ask,
    pub(super) reply: Option<async_nats::Subject>,
    pub(super) client: async_nats::Client,
}

impl ClientQuestion {
    pub(super) async fn send(self, reply: AskReply) {
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
    /// The client answers in rounds (MCP 2026-07-28): the worker ends the
    /// call with `input_required` instead of asking on the route.
    pub rounds: bool,
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

/// One call's progress, routed from the gateway's progress inbox. The route
/// is removed when this is dropped.
pub struct ProgressRoute {
    /// The request id the progress is for.
    pub id: Uuid,
    pub(super) rx: mpsc::Receiver<Progress>,
    pub(super) received: u64,
    pub(super) routes: ProgressRoutes,
    pub(super) question_routes: Option<QuestionRoutes>,
    pub(super) question_rx: Option<mpsc::Receiver<ClientQuestion>>,
    pub(super) can: ClientCan,
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
        self.routes.lock().remove(&self.id);
        if let Some(routes) = &self.question_routes {
            routes.lock().remove(&self.id);
        }
    }
}

/// Routes what arrives on the caller's progress inbox: acknowledgements
/// (to the call waiting for one) and progress (to its call's route).
pub(super) fn spawn_progress_inbox(
    mut inbox: async_nats::Subscriber,
    routes: ProgressRoutes,
    acks: AckWaiters,
) {
    tokio::spawn(async move {
        while let Some(msg) = inbox.next().await {
            if let Some(by) = msg
                .headers
                .as_ref()
                .and_then(|h| h.get(headers::ACCEPTED_BY))
            {
                let id = headers::Context::from_headers(msg.headers.as_ref()).request_id;
                let waiter = id.and_then(|id| acks.lock().remove(&id));
                if let Some(tx) = waiter {
                    let _ = tx.send(by.as_str().to_owned());
                }
                continue;
            }
            let Ok(p) = sophia_proto::decode::<Progress>(&msg.payload) else {
                tracing::debug!(subject = %msg.subject, "ignoring malformed progress");
                continue;
            };
            let tx = routes.lock().get(&p.id).cloned();
            if let Some(tx) = tx {
                // Progress is best effort: a slow client loses updates, never the call.
                let _ = tx.try_send(p);
            }
        }
    });
}

/// Routes workers' questions to the call that can put them to its client,
/// and refuses those no call can answer.
pub(super) fn spawn_ask_inbox(
    mut asked: async_nats::Subscriber,
    questions: QuestionRoutes,
    client: async_nats::Client,
) {
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
                        client: client.clone(),
                    };
                    question
                        .fail(WireError::invalid_arguments(format!(
                            "a malformed question: {e}"
                        )))
                        .await;
                    continue;
                }
            };
            let tx = questions.lock().get(&ask.id).cloned();
            let question = ClientQuestion {
                ask,
                reply: msg.reply,
                client: client.clone(),
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
}
