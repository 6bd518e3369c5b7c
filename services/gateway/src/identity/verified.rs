//! Tokens already verified: an RS256 signature check costs about 150 µs
//! (RustCrypto, 2 cores), and a client sends the same access token with
//! every request for its lifetime. A token seen before is accepted on a
//! SHA-256 lookup while it has not expired and the issuer's keys are the
//! ones it was verified with; any key rotation at the issuer (a new JWKS)
//! verifies it afresh, so a withdrawn key stops working at once.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use sha2::{Digest, Sha256};

use crate::mcp::Identity;

/// The most tokens remembered; past it the expired ones go, then all.
const MAX_ENTRIES: usize = 10_000;

struct Entry {
    identity: Identity,
    /// The token's `exp` plus the leeway, in Unix seconds.
    valid_until: u64,
    /// The JWKS generation it was verified against.
    generation: u64,
}

/// The cache, keyed by the SHA-256 of (resource, token).
#[derive(Default)]
pub struct Verified {
    entries: Mutex<HashMap<[u8; 32], Entry>>,
}

fn key(token: &str, resource: Option<&str>) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(resource.unwrap_or_default().as_bytes());
    h.update([0]);
    h.update(token.as_bytes());
    h.finalize().into()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

impl Verified {
    /// The identity `token` was verified as for `resource`, if it still
    /// holds with the issuer's keys of `generation`.
    pub fn get(&self, token: &str, resource: Option<&str>, generation: u64) -> Option<Identity> {
        let k = key(token, resource);
        let mut entries = self.entries.lock();
        let entry = entries.get(&k)?;
        if entry.generation == generation && now() <= entry.valid_until {
            return Some(entry.identity.clone());
        }
        entries.remove(&k);
        None
    }

    /// Remembers that `token` verified as `identity` for `resource`, until
    /// `valid_until` (Unix seconds), against keys of `generation`.
    pub fn put(
        &self,
        token: &str,
        resource: Option<&str>,
        identity: Identity,
        valid_until: u64,
        generation: u64,
    ) {
        let mut entries = self.entries.lock();
        if entries.len() >= MAX_ENTRIES {
            let t = now();
            entries.retain(|_, e| e.valid_until >= t);
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
        }
        entries.insert(
            key(token, resource),
            Entry {
                identity,
                valid_until,
                generation,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_holds_for_its_resource_until_it_expires_or_the_keys_change() {
        let v = Verified::default();
        let alice = Identity {
            principal: "alice".into(),
            roles: vec!["analyst".into()],
        };
        v.put("t", Some("/mcp"), alice.clone(), now() + 60, 1);
        assert_eq!(v.get("t", Some("/mcp"), 1), Some(alice.clone()));
        assert_eq!(v.get("t", Some("/mcp/ask"), 1), None);
        assert_eq!(v.get("u", Some("/mcp"), 1), None);
        assert_eq!(v.get("t", Some("/mcp"), 2), None, "new keys: verify again");
        assert_eq!(
            v.get("t", Some("/mcp"), 1),
            None,
            "and the old entry is gone"
        );
        v.put("t", None, alice, now().saturating_sub(1), 1);
        assert_eq!(v.get("t", None, 1), None, "expired");
    }
}
