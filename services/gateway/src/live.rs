//! The MCP sessions this gateway holds in memory, by id: each one's handler
//! and peer, so that [`crate::fast`] answers a session's `tools/call`
//! without going through rmcp's session worker.
//!
//! [`Tracked`] is rmcp's [`LocalSessionManager`] with two additions:
//! - at `initialize` (a new session, or one restored from the session
//!   store) it hands the handler a [`LiveKey`], with which the handler
//!   registers itself and its peer ([`crate::mcp::McpGateway`]'s
//!   `initialize`); the entry goes when the session closes;
//! - it ends sessions idle for [`IDLE`] itself, counting the calls the fast
//!   path answered (rmcp's own idle timer, which only sees what passes
//!   through its session worker, is off).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use parking_lot::RwLock;
use rmcp::model::{ClientJsonRpcMessage, ServerJsonRpcMessage};
use rmcp::transport::streamable_http_server::session::local::{
    LocalSessionManager, LocalSessionManagerError,
};
use rmcp::transport::streamable_http_server::session::{
    EventStore, RestoreOutcome, ServerSseMessage, SessionId, SessionManager,
};
use rmcp::{Peer, RoleServer};
use tokio_util::sync::CancellationToken;

use crate::mcp::McpGateway;

/// A session is closed after this long without a request (rmcp's default).
pub const IDLE: Duration = Duration::from_secs(300);
/// How often idle sessions are looked for.
const SWEEP: Duration = Duration::from_secs(10);

/// One live session: what answers its calls.
pub struct LiveSession {
    /// The session's handler (its log level, profile, what it was shown).
    pub handler: McpGateway,
    /// The session's client.
    pub peer: Peer<RoleServer>,
    /// Whether the client said it answers questions (elicitation, sampling,
    /// roots).
    pub answers: bool,
    /// Its standalone (GET) streams open now: where questions go.
    listening: AtomicUsize,
    /// Milliseconds since [`LiveSessions`]' epoch at its last request.
    last_seen: AtomicU64,
}

impl LiveSession {
    /// Whether a question put to the client now reaches it: it answers none,
    /// or it has its standalone stream open. (rmcp sends questions that
    /// belong to no request's stream on that stream, and drops them when
    /// none is open.)
    pub fn reachable(&self) -> bool {
        !self.answers || self.listening.load(Ordering::Relaxed) > 0
    }
}

/// Counts one open standalone stream while it lives.
struct Listening(Arc<LiveSession>);

impl Drop for Listening {
    fn drop(&mut self) {
        self.0.listening.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The live sessions of one MCP endpoint.
#[derive(Clone)]
pub struct LiveSessions {
    map: Arc<RwLock<HashMap<SessionId, Arc<LiveSession>>>>,
    epoch: Instant,
}

impl Default for LiveSessions {
    fn default() -> Self {
        Self {
            map: Arc::default(),
            epoch: Instant::now(),
        }
    }
}

impl LiveSessions {
    fn now(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// The session `id`, if it is live here (and notes the request).
    pub fn get(&self, id: &str) -> Option<Arc<LiveSession>> {
        let session = self.map.read().get(id).cloned()?;
        if session.peer.is_transport_closed() {
            self.map.write().remove(id);
            return None;
        }
        session.last_seen.store(self.now(), Ordering::Relaxed);
        Some(session)
    }

    /// Notes a request to session `id`.
    pub fn touch(&self, id: &str) {
        if let Some(s) = self.map.read().get(id) {
            s.last_seen.store(self.now(), Ordering::Relaxed);
        }
    }

    fn insert(&self, id: SessionId, handler: McpGateway, peer: Peer<RoleServer>, answers: bool) {
        let session = LiveSession {
            handler,
            peer,
            answers,
            listening: AtomicUsize::new(0),
            last_seen: AtomicU64::new(self.now()),
        };
        self.map.write().insert(id, Arc::new(session));
    }

    fn remove(&self, id: &str) {
        self.map.write().remove(id);
    }

    /// The sessions without a request for `idle`.
    fn idle(&self, idle: Duration) -> Vec<SessionId> {
        let cutoff = self.now().saturating_sub(idle.as_millis() as u64);
        self.map
            .read()
            .iter()
            .filter(|(_, s)| s.last_seen.load(Ordering::Relaxed) < cutoff)
            .map(|(id, _)| id.clone())
            .collect()
    }
}

/// What the handler's `initialize` finds in its request's extensions: the
/// session's id, and where to register.
#[derive(Clone)]
pub struct LiveKey {
    id: SessionId,
    live: LiveSessions,
}

impl LiveKey {
    /// Registers the session's `handler` and `peer` (whose client
    /// `answers` questions, or not).
    pub fn register(&self, handler: McpGateway, peer: Peer<RoleServer>, answers: bool) {
        self.live.insert(self.id.clone(), handler, peer, answers);
    }
}

/// rmcp's [`LocalSessionManager`], keeping [`LiveSessions`].
pub struct Tracked {
    inner: Arc<LocalSessionManager>,
    live: LiveSessions,
}

impl Tracked {
    /// Sessions kept in memory (events in `events`, if any), swept for
    /// idle ones until `stop`.
    pub fn new(events: Option<Arc<dyn EventStore>>, stop: CancellationToken) -> Self {
        let mut inner = match events {
            Some(events) => LocalSessionManager::default().with_event_store(events),
            None => LocalSessionManager::default(),
        };
        inner.session_config.keep_alive = None;
        let tracked = Self {
            inner: Arc::new(inner),
            live: LiveSessions::default(),
        };
        tracked.sweep(stop);
        tracked
    }

    /// The live sessions.
    pub fn live(&self) -> LiveSessions {
        self.live.clone()
    }

    /// Closes idle sessions every [`SWEEP`], as rmcp's idle timer would.
    fn sweep(&self, stop: CancellationToken) {
        let manager = Arc::downgrade(&self.inner);
        let live = self.live.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(SWEEP);
            loop {
                tokio::select! {
                    _ = every.tick() => {}
                    _ = stop.cancelled() => break,
                }
                let Some(manager) = manager.upgrade() else {
                    break;
                };
                for id in live.idle(IDLE) {
                    tracing::debug!(session = %id, "closing an idle session");
                    live.remove(&id);
                    let _ = manager.close_session(&id).await;
                }
            }
        });
    }
}

impl SessionManager for Tracked {
    type Error = LocalSessionManagerError;
    type Transport = <LocalSessionManager as SessionManager>::Transport;

    async fn create_session(&self) -> Result<(SessionId, Self::Transport), Self::Error> {
        self.inner.create_session().await
    }

    async fn initialize_session(
        &self,
        id: &SessionId,
        mut message: ClientJsonRpcMessage,
    ) -> Result<ServerJsonRpcMessage, Self::Error> {
        message.insert_extension(LiveKey {
            id: id.clone(),
            live: self.live.clone(),
        });
        self.inner.initialize_session(id, message).await
    }

    async fn has_session(&self, id: &SessionId) -> Result<bool, Self::Error> {
        self.inner.has_session(id).await
    }

    async fn close_session(&self, id: &SessionId) -> Result<(), Self::Error> {
        self.live.remove(id);
        self.inner.close_session(id).await
    }

    async fn create_stream(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        self.live.touch(id);
        self.inner.create_stream(id, message).await
    }

    async fn accept_message(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<(), Self::Error> {
        self.live.touch(id);
        self.inner.accept_message(id, message).await
    }

    async fn create_standalone_stream(
        &self,
        id: &SessionId,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        self.live.touch(id);
        let stream = self.inner.create_standalone_stream(id).await?;
        let listening = self.live.map.read().get(id).cloned().map(|s| {
            s.listening.fetch_add(1, Ordering::Relaxed);
            Listening(s)
        });
        Ok(stream.map(move |event| {
            let _open = &listening;
            event
        }))
    }

    async fn resume(
        &self,
        id: &SessionId,
        last_event_id: String,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        self.live.touch(id);
        self.inner.resume(id, last_event_id).await
    }

    async fn restore_session(
        &self,
        id: SessionId,
    ) -> Result<RestoreOutcome<Self::Transport>, Self::Error> {
        self.inner.restore_session(id).await
    }

    fn event_store(&self) -> Option<Arc<dyn EventStore>> {
        self.inner.event_store()
    }
}
