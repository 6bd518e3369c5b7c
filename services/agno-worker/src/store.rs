//! What outlives a request, on JetStream KV, shared by every replica:
//! agents, sessions (written with compare-and-swap, so two replicas never
//! clobber each other), actions waiting for a person's confirmation, and
//! the runs in progress.

use std::time::Duration;

use async_nats::jetstream::{self, kv};
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};
use sophia_proto::chat::Message;

use crate::agent::{AgentRecord, now_ms};
use crate::run::{ActionStatus, PendingAction};

/// Agents by id.
pub const AGENTS_BUCKET: &str = "sophia_agno_agents";
/// Sessions by id.
pub const SESSIONS_BUCKET: &str = "sophia_agno_sessions";
/// Actions waiting for confirmation, by id.
pub const PENDING_BUCKET: &str = "sophia_agno_pending";
/// Runs in progress, as `<category>.<request id>`.
pub const RUNS_BUCKET: &str = "sophia_agno_runs";

/// A conversation any replica can continue.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Session {
    /// Its id.
    pub id: String,
    /// The messages so far (OpenAI chat format), without the system prompt.
    pub messages: Vec<Message>,
    /// When it last changed (Unix ms).
    pub updated_ms: u64,
}

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another writer won too many times in a row.
    #[error("session {0} is being written by other runs right now; try again")]
    Contended(String),
    /// Already decided.
    #[error("action {0} was already {1}; it is not run twice")]
    AlreadyDecided(String, String),
    /// A key that cannot be stored.
    #[error("invalid id {0:?}: use letters, digits, '-' and '_'")]
    InvalidId(String),
    /// JetStream failed.
    #[error("agent store unavailable: {0}")]
    Unavailable(String),
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// Checks an id used as a key.
pub fn valid_id(id: &str) -> Result<(), StoreError> {
    if !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        Ok(())
    } else {
        Err(StoreError::InvalidId(id.to_owned()))
    }
}

/// The buckets.
#[derive(Clone)]
pub struct Store {
    agents: kv::Store,
    sessions: kv::Store,
    pending: kv::Store,
    runs: kv::Store,
}

async fn bucket(
    js: &jetstream::Context,
    name: &str,
    description: &str,
    max_age: Duration,
) -> Result<kv::Store, StoreError> {
    match js.get_key_value(name).await {
        Ok(s) => Ok(s),
        Err(_) => js
            .create_key_value(kv::Config {
                bucket: name.into(),
                description: description.into(),
                history: 1,
                max_age,
                num_replicas: sophia_proto::payload::replicas(&js.client()),
                ..Default::default()
            })
            .await
            .map_err(unavailable),
    }
}

impl Store {
    /// Opens (creating if needed) the buckets; agents, sessions and
    /// pending actions expire after `ttl` without a write.
    pub async fn open(client: async_nats::Client, ttl: Duration) -> Result<Self, StoreError> {
        let js = jetstream::new(client);
        Ok(Self {
            agents: bucket(&js, AGENTS_BUCKET, "Sophia Mesh agents", ttl).await?,
            sessions: bucket(&js, SESSIONS_BUCKET, "Sophia Mesh agent sessions", ttl).await?,
            pending: bucket(
                &js,
                PENDING_BUCKET,
                "Sophia Mesh actions awaiting confirmation",
                ttl,
            )
            .await?,
            runs: bucket(
                &js,
                RUNS_BUCKET,
                "Sophia Mesh agent runs in progress",
                Duration::from_secs(3600),
            )
            .await?,
        })
    }

    /// Stores an agent.
    pub async fn put_agent(&self, agent: &AgentRecord) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(agent).map_err(unavailable)?;
        self.agents
            .put(&agent.id, bytes.into())
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    /// An agent by id.
    pub async fn agent(&self, id: &str) -> Result<Option<AgentRecord>, StoreError> {
        valid_id(id)?;
        match self.agents.get(id).await.map_err(unavailable)? {
            Some(b) => Ok(serde_json::from_slice(&b).ok()),
            None => Ok(None),
        }
    }

    /// Deletes an agent; whether it existed.
    pub async fn delete_agent(&self, id: &str) -> Result<bool, StoreError> {
        let existed = self.agent(id).await?.is_some();
        if existed {
            self.agents.purge(id).await.map_err(unavailable)?;
        }
        Ok(existed)
    }

    /// Every agent (up to `limit`).
    pub async fn agents(&self, limit: usize) -> Result<Vec<AgentRecord>, StoreError> {
        let keys: Vec<String> = match self.agents.keys().await {
            Ok(k) => k.try_collect().await.map_err(unavailable)?,
            Err(e) => return Err(unavailable(e)),
        };
        let mut out = Vec::new();
        for key in keys.into_iter().take(limit) {
            if let Some(a) = self.agent(&key).await? {
                out.push(a);
            }
        }
        out.sort_by_key(|a| a.created_ms);
        Ok(out)
    }

    /// A session and its revision (`None` if it does not exist yet).
    pub async fn session(&self, id: &str) -> Result<(Session, Option<u64>), StoreError> {
        valid_id(id)?;
        match self.sessions.entry(id).await.map_err(unavailable)? {
            Some(e) if e.operation == kv::Operation::Put => Ok((
                serde_json::from_slice(&e.value).map_err(unavailable)?,
                Some(e.revision),
            )),
            _ => Ok((
                Session {
                    id: id.to_owned(),
                    ..Session::default()
                },
                None,
            )),
        }
    }

    /// Appends a run's new messages to a session with a compare-and-swap
    /// on the revision read: if another run wrote in between, re-reads and
    /// appends after its messages instead of overwriting them.
    pub async fn append(&self, id: &str, new_messages: &[Message]) -> Result<(), StoreError> {
        for _ in 0..16 {
            let (mut session, revision) = self.session(id).await?;
            session.messages.extend_from_slice(new_messages);
            session.updated_ms = now_ms();
            let bytes: bytes::Bytes = serde_json::to_vec(&session).map_err(unavailable)?.into();
            let written = match revision {
                Some(rev) => self.sessions.update(id, bytes, rev).await.is_ok(),
                None => self.sessions.create(id, bytes).await.is_ok(),
            };
            if written {
                return Ok(());
            }
        }
        Err(StoreError::Contended(id.to_owned()))
    }

    /// Stores a new pending action.
    pub async fn put_pending(&self, action: &PendingAction) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(action).map_err(unavailable)?;
        self.pending
            .create(&action.id, bytes.into())
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    /// Takes a pending action for a decision: marks it `status` with a
    /// compare-and-swap, so it is decided (and run) at most once.
    pub async fn decide(
        &self,
        id: &str,
        status: ActionStatus,
    ) -> Result<Option<PendingAction>, StoreError> {
        valid_id(id)?;
        let Some(entry) = self.pending.entry(id).await.map_err(unavailable)? else {
            return Ok(None);
        };
        if entry.operation != kv::Operation::Put {
            return Ok(None);
        }
        let mut action: PendingAction =
            serde_json::from_slice(&entry.value).map_err(unavailable)?;
        if action.status != ActionStatus::Pending {
            return Err(StoreError::AlreadyDecided(
                id.to_owned(),
                action.status.to_string(),
            ));
        }
        action.status = status;
        let bytes = serde_json::to_vec(&action).map_err(unavailable)?;
        match self.pending.update(id, bytes.into(), entry.revision).await {
            Ok(_) => Ok(Some(action)),
            Err(_) => Err(StoreError::AlreadyDecided(id.to_owned(), "decided".into())),
        }
    }

    /// Marks a run in progress; the guard's `finish` removes the mark.
    pub async fn run_started(&self, category: &str, id: &str) {
        let _ = self
            .runs
            .put(format!("{category}.{id}"), bytes::Bytes::from_static(b"1"))
            .await;
    }

    /// Removes a run's in-progress mark.
    pub async fn run_finished(&self, category: &str, id: &str) {
        let _ = self.runs.purge(format!("{category}.{id}")).await;
    }

    /// Runs in progress, per category.
    pub async fn runs_in_progress(&self) -> Result<Vec<String>, StoreError> {
        match self.runs.keys().await {
            Ok(k) => k.try_collect().await.map_err(unavailable),
            Err(e) => Err(unavailable(e)),
        }
    }
}
