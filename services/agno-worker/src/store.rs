//! What outlives a request, on JetStream KV, shared by every replica:
//! agents, sessions (written with compare-and-swap, so two replicas never
//! clobber each other), actions waiting for a person's confirmation, the
//! runs in progress, and detached runs' records (`crate::jobs`).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use sophia_kit::kv::{Bucket, BucketConfig, KvError, KvErrorKind};
use sophia_proto::chat::Message;

use crate::agent::{AgentRecord, now_ms};
use crate::run::{ActionStatus, PendingAction};

mod listing;

pub use listing::{Listed, MAX_SCAN};

/// Agents by id.
pub const AGENTS_BUCKET: &str = "sophia_agno_agents";
/// Sessions by id.
pub const SESSIONS_BUCKET: &str = "sophia_agno_sessions";
/// Actions waiting for confirmation, by id.
pub const PENDING_BUCKET: &str = "sophia_agno_pending";
/// Runs in progress, as `<category>.<request id>`.
pub const RUNS_BUCKET: &str = "sophia_agno_runs";
/// Detached runs (MCP tasks), by job id (`crate::jobs`).
pub const JOBS_BUCKET: &str = "sophia_agno_jobs";

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
    agents: Bucket,
    sessions: Bucket,
    pub(crate) pending: Bucket,
    runs: Bucket,
    pub(crate) jobs: Bucket,
}

impl From<KvError> for StoreError {
    fn from(e: KvError) -> Self {
        StoreError::Unavailable(e.to_string())
    }
}

impl Store {
    /// Opens (creating if needed) the buckets; agents, sessions and
    /// pending actions expire after `ttl` without a write.
    pub async fn open(client: async_nats::Client, ttl: Duration) -> Result<Self, StoreError> {
        let open = |name: &str, description: &str, max_age: Duration| {
            Bucket::open(
                &client,
                BucketConfig::new(name, description).max_age(max_age),
            )
        };
        Ok(Self {
            agents: open(AGENTS_BUCKET, "Sophia Mesh agents", ttl).await?,
            sessions: open(SESSIONS_BUCKET, "Sophia Mesh agent sessions", ttl).await?,
            pending: open(
                PENDING_BUCKET,
                "Sophia Mesh actions awaiting confirmation",
                ttl,
            )
            .await?,
            runs: open(
                RUNS_BUCKET,
                "Sophia Mesh agent runs in progress",
                Duration::from_secs(3600),
            )
            .await?,
            jobs: open(JOBS_BUCKET, "Sophia Mesh detached agent runs", ttl).await?,
        })
    }

    /// Stores an agent.
    pub async fn put_agent(&self, agent: &AgentRecord) -> Result<(), StoreError> {
        self.agents.put(&agent.id, agent).await?;
        Ok(())
    }

    /// An agent by id. A record this version cannot read is no agent (and
    /// is logged), so one bad record does not hide the others.
    pub async fn agent(&self, id: &str) -> Result<Option<AgentRecord>, StoreError> {
        valid_id(id)?;
        match self.agents.get(id).await {
            Ok(agent) => Ok(agent),
            Err(e) if e.kind() == KvErrorKind::Corrupt => {
                tracing::warn!(cause = %e, "skipping an agent record this version cannot read");
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes an agent; whether it existed.
    pub async fn delete_agent(&self, id: &str) -> Result<bool, StoreError> {
        let existed = self.agent(id).await?.is_some();
        if existed {
            self.agents.delete(id).await?;
        }
        Ok(existed)
    }

    /// Every agent (up to `limit`).
    pub async fn agents(&self, limit: usize) -> Result<Vec<AgentRecord>, StoreError> {
        let mut out = Vec::new();
        for key in self.agents.keys().await?.into_iter().take(limit) {
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
        Ok(match self.sessions.entry(id).await? {
            Some((session, revision)) => (session, Some(revision)),
            None => (
                Session {
                    id: id.to_owned(),
                    ..Session::default()
                },
                None,
            ),
        })
    }

    /// Appends a run's new messages to a session with a compare-and-swap
    /// on the revision read: if another run wrote in between, re-reads and
    /// appends after its messages instead of overwriting them.
    pub async fn append(&self, id: &str, new_messages: &[Message]) -> Result<(), StoreError> {
        for _ in 0..16 {
            let (mut session, revision) = self.session(id).await?;
            session.messages.extend_from_slice(new_messages);
            session.updated_ms = now_ms();
            let written = match revision {
                Some(rev) => self.sessions.update(id, &session, rev).await,
                None => self.sessions.create(id, &session).await,
            };
            match written {
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == KvErrorKind::Conflict => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(StoreError::Contended(id.to_owned()))
    }

    /// Stores a new pending action.
    pub async fn put_pending(&self, action: &PendingAction) -> Result<(), StoreError> {
        self.pending.create(&action.id, action).await?;
        Ok(())
    }

    /// Takes a pending action for a decision: marks it `status`, decided by
    /// principal `by`, with a compare-and-swap, so it is decided (and run)
    /// at most once.
    pub async fn decide(
        &self,
        id: &str,
        status: ActionStatus,
        by: &str,
    ) -> Result<Option<PendingAction>, StoreError> {
        valid_id(id)?;
        let Some((mut action, revision)) = self.pending.entry::<PendingAction>(id).await? else {
            return Ok(None);
        };
        if action.status != ActionStatus::Pending {
            return Err(StoreError::AlreadyDecided(
                id.to_owned(),
                action.status.to_string(),
            ));
        }
        action.status = status;
        action.decided_by = Some(by.to_owned());
        match self.pending.update(id, &action, revision).await {
            Ok(_) => Ok(Some(action)),
            Err(e) if e.kind() == KvErrorKind::Conflict => {
                Err(StoreError::AlreadyDecided(id.to_owned(), "decided".into()))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Marks a run in progress; the guard's `finish` removes the mark.
    pub async fn run_started(&self, category: &str, id: &str) {
        if let Err(e) = self.runs.put(&format!("{category}.{id}"), &1).await {
            tracing::warn!(cause = %e, "could not mark a run in progress");
        }
    }

    /// Removes a run's in-progress mark.
    pub async fn run_finished(&self, category: &str, id: &str) {
        if let Err(e) = self.runs.delete(&format!("{category}.{id}")).await {
            tracing::warn!(cause = %e, "could not clear a run's in-progress mark");
        }
    }

    /// Runs in progress, per category.
    pub async fn runs_in_progress(&self) -> Result<Vec<String>, StoreError> {
        Ok(self.runs.keys().await?)
    }
}
