//! Agents: a shared template plus a few words of state. Creating one costs
//! an `Arc` increment and a counter bump, no system call and no allocation
//! beyond the agent itself (see `benches/instantiate.rs`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::templates::Template;

/// An agent's id: this process's random 64-bit prefix and a counter, so ids
/// are unique across replicas without a random draw per agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AgentId(pub Uuid);

static PREFIX: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
static COUNTER: AtomicU64 = AtomicU64::new(1);

impl AgentId {
    /// A fresh id.
    pub fn next() -> Self {
        let prefix = *PREFIX.get_or_init(|| Uuid::new_v4().as_u64_pair().0);
        AgentId(Uuid::from_u64_pair(
            prefix,
            COUNTER.fetch_add(1, Ordering::Relaxed),
        ))
    }
}

impl std::fmt::Display for AgentId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0.simple())
    }
}

/// A live agent.
#[derive(Clone, Debug)]
pub struct Agent {
    /// Its id.
    pub id: AgentId,
    /// What it is.
    pub template: Arc<Template>,
    /// When it was made (Unix ms).
    pub created_ms: u64,
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Agent {
    /// An agent of `template`'s type, made at `created_ms`.
    #[inline]
    pub fn new(template: &Arc<Template>, created_ms: u64) -> Self {
        Self {
            id: AgentId::next(),
            template: Arc::clone(template),
            created_ms,
        }
    }

    /// The record kept in the agents bucket, so any replica can find it.
    pub fn record(&self, session_id: &str) -> AgentRecord {
        AgentRecord {
            id: self.id.to_string(),
            agent_type: self.template.agent_type.clone(),
            category: self.template.category,
            session_id: session_id.to_owned(),
            created_ms: self.created_ms,
        }
    }
}

/// An agent as stored (JetStream KV `sophia_agno_agents`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AgentRecord {
    /// Its id.
    pub id: String,
    /// Its template's type.
    pub agent_type: String,
    /// Its category.
    pub category: sophia_kit::Category,
    /// The session holding its conversation.
    pub session_id: String,
    /// When it was made (Unix ms).
    pub created_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::templates::Templates;

    #[test]
    fn agents_share_their_template_and_get_distinct_ids() {
        let t = Templates::builtin();
        let tpl = t.get("pulumi_agent").unwrap();
        let (a, b) = (Agent::new(tpl, 1), Agent::new(tpl, 2));
        assert_ne!(a.id, b.id);
        assert!(Arc::ptr_eq(&a.template, &b.template));
        assert_eq!(Arc::strong_count(tpl), 3);
        assert_eq!(a.record("s").agent_type, "pulumi_agent");
    }
}
