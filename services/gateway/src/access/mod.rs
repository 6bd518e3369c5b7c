//! Who may call what through this gateway: the mesh's policy (roles to
//! tools), the profile an endpoint serves, per-principal limits, and the
//! audit trail. `docs/security.md` describes them for people.

pub mod audit;
pub mod limits;

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use sophia_kit::policy::{Item, Policy, Profile};

pub use audit::{Audit, Who};
pub use limits::{Busy, Permit, PrincipalLimits};

/// The policy, limits and audit of one gateway, shared by its sessions.
#[derive(Clone)]
pub struct Access {
    /// The mesh's policy; `None`: every authenticated caller may call
    /// everything.
    pub policy: Option<Arc<Policy>>,
    /// Per-principal limits.
    pub limits: PrincipalLimits,
    /// The audit trail.
    pub audit: Audit,
    /// Who a session without HTTP authentication (stdio) is.
    pub local: crate::mcp::Identity,
    /// Calls per tool on this gateway: what "most relevant" means when a
    /// profile has more tools than its budget.
    usage: Arc<Mutex<HashMap<String, u64>>>,
}

impl Access {
    /// Access with `policy`, `limits` and `audit`.
    pub fn new(
        policy: Option<Arc<Policy>>,
        limits: PrincipalLimits,
        audit: Audit,
        local: crate::mcp::Identity,
    ) -> Self {
        Access {
            policy,
            limits,
            audit,
            local,
            usage: Arc::default(),
        }
    }

    /// Whether `roles` may use `item` (always, without a policy).
    pub fn allows(&self, roles: &[String], item: &Item<'_>) -> bool {
        self.policy
            .as_ref()
            .is_none_or(|p| p.decide(roles, item).is_ok())
    }

    /// The profile called `name`: the policy's, or a built-in one.
    pub fn profile(&self, name: &str) -> Option<Profile> {
        match &self.policy {
            Some(p) => p.profile(name).cloned(),
            None => Policy::default_profiles()
                .into_iter()
                .find(|p| p.name == name),
        }
    }

    /// Every profile (the policy's and the built-in ones).
    pub fn profiles(&self) -> Vec<Profile> {
        match &self.policy {
            Some(p) => p.profiles().cloned().collect(),
            None => Policy::default_profiles(),
        }
    }

    /// Counts a call of `tool`.
    pub fn used(&self, tool: &str) {
        *self.usage.lock().entry(tool.to_owned()).or_default() += 1;
    }

    /// How often `tool` was called here.
    pub fn usage(&self, tool: &str) -> u64 {
        self.usage.lock().get(tool).copied().unwrap_or_default()
    }
}
