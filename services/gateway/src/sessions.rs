//! MCP sessions kept on the bus (JetStream KV), not in one gateway's
//! memory: after a gateway restarts, or behind a load balancer that sends a
//! session's requests to another gateway replica, the session goes on.
//!
//! rmcp persists a session's `initialize` parameters through
//! [`SessionStore`] after the handshake, deletes them when the session ends
//! (DELETE), and on a request for a session it does not hold in memory,
//! loads them and replays the handshake locally: the client never notices.
//! What lives only in one gateway's memory (the logging level a client set,
//! SSE streams open on it) does not move; a client re-sends
//! `logging/setLevel` and re-opens its stream as usual.

use std::time::Duration;

use rmcp::transport::streamable_http_server::session::{
    SessionState, SessionStore, SessionStoreError,
};
use sophia_kit::kv::{Bucket, BucketConfig};

/// The bucket of sessions.
pub const SESSIONS_BUCKET: &str = "sophia_gateway_sessions";

/// Sessions on JetStream KV, shared by every gateway replica.
pub struct KvSessions {
    kv: Bucket,
}

impl KvSessions {
    /// Opens (creating if needed) the bucket; sessions expire `ttl` after
    /// they were created.
    pub async fn open(client: async_nats::Client, ttl: Duration) -> Result<Self, String> {
        let config = BucketConfig::new(
            SESSIONS_BUCKET,
            "Sophia Mesh MCP sessions (initialize parameters)",
        )
        .max_age(ttl);
        let kv = Bucket::open(&client, config)
            .await
            .map_err(|e| e.to_string())?;
        Ok(Self { kv })
    }
}

/// KV keys allow `[-/_=.a-zA-Z0-9]`; rmcp's session ids are UUIDs.
fn key(session_id: &str) -> Result<&str, SessionStoreError> {
    if !session_id.is_empty()
        && session_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        Ok(session_id)
    } else {
        Err(format!("not a session id: {session_id:?}").into())
    }
}

#[async_trait::async_trait]
impl SessionStore for KvSessions {
    async fn load(&self, session_id: &str) -> Result<Option<SessionState>, SessionStoreError> {
        Ok(self.kv.get(key(session_id)?).await?)
    }

    async fn store(&self, session_id: &str, state: &SessionState) -> Result<(), SessionStoreError> {
        self.kv.put(key(session_id)?, state).await?;
        Ok(())
    }

    async fn delete(&self, session_id: &str) -> Result<(), SessionStoreError> {
        self.kv.delete(key(session_id)?).await?;
        Ok(())
    }
}
