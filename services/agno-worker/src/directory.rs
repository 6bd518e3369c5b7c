//! The mesh's tools as workers announce them: an agent's tool definitions
//! (name, description, input schema, hints) come from here, so the model
//! sees exactly what the owning worker accepts.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use parking_lot::Mutex;
use sophia_proto::{Announce, Discover, Leave, PROTOCOL_VERSION, ToolSpec, subject};

/// The longest heartbeat interval believed: an announced `heartbeat_ms`
/// is a peer's number, and a huge one must neither overflow the clock nor
/// keep a silent replica alive for ages.
const MAX_HEARTBEAT: Duration = Duration::from_secs(3600);

/// A replica counts as alive for three heartbeats after it announces.
fn alive_until(now: Instant, heartbeat_ms: u64) -> Instant {
    let heartbeat = Duration::from_millis(heartbeat_ms.max(1)).min(MAX_HEARTBEAT);
    now + heartbeat * 3
}

#[derive(Default)]
struct State {
    /// Per replica: its tools and when it stops counting as alive.
    replicas: HashMap<String, (Vec<ToolSpec>, Instant)>,
    /// Compiled input schemas by tool name, with the schema they were
    /// compiled from (recompiled only when a worker announces a new one).
    validators: HashMap<String, (serde_json::Value, Arc<jsonschema::Validator>)>,
}

/// Live tool specs, kept current from announcements.
#[derive(Clone, Default)]
pub struct Directory {
    state: Arc<Mutex<State>>,
}

impl Directory {
    /// Follows announcements and leaves on `client`, and asks every worker
    /// to announce now.
    pub async fn follow(client: async_nats::Client, requester: &str) -> Result<Self, String> {
        let dir = Self::default();
        let mut announces = client
            .subscribe(subject::REGISTRY_ANNOUNCE)
            .await
            .map_err(|e| e.to_string())?;
        let mut leaves = client
            .subscribe(subject::REGISTRY_LEAVE)
            .await
            .map_err(|e| e.to_string())?;
        let d = dir.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    Some(msg) = announces.next() => {
                        if let Ok(a) = sophia_proto::decode::<Announce>(&msg.payload) && a.v == PROTOCOL_VERSION {
                            d.add(a);
                        }
                    }
                    Some(msg) = leaves.next() => {
                        if let Ok(l) = sophia_proto::decode::<Leave>(&msg.payload) {
                            d.state.lock().replicas.remove(&l.instance);
                        }
                    }
                    else => break,
                }
            }
        });
        let ask = Discover {
            v: PROTOCOL_VERSION,
            requester: requester.to_owned(),
        };
        if let Ok(bytes) = sophia_proto::encode(&ask) {
            let _ = client
                .publish(subject::REGISTRY_DISCOVER, bytes.into())
                .await;
        }
        Ok(dir)
    }

    fn add(&self, mut a: Announce) {
        // Tools whose schemas could not be used (or compiled safely) are left out.
        sophia_kit::vetting::vet(&mut a);
        let alive = alive_until(Instant::now(), a.heartbeat_ms);
        self.state
            .lock()
            .replicas
            .insert(a.instance, (a.tools, alive));
    }

    /// The compiled input schema of `spec`; `None` if it does not compile.
    pub fn validator(&self, spec: &ToolSpec) -> Option<Arc<jsonschema::Validator>> {
        let mut state = self.state.lock();
        if let Some((schema, v)) = state.validators.get(&spec.name)
            && *schema == spec.input_schema
        {
            return Some(v.clone());
        }
        let v = Arc::new(jsonschema::validator_for(&spec.input_schema).ok()?);
        state
            .validators
            .insert(spec.name.clone(), (spec.input_schema.clone(), v.clone()));
        Some(v)
    }

    /// The spec of a tool some live replica serves.
    pub fn get(&self, name: &str) -> Option<ToolSpec> {
        let now = Instant::now();
        let state = self.state.lock();
        state
            .replicas
            .values()
            .filter(|(_, alive)| *alive > now)
            .flat_map(|(tools, _)| tools.iter())
            .find(|t| t.name == name)
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_announced_heartbeat_is_bounded() {
        let now = Instant::now();
        assert_eq!(
            alive_until(now, 2_000),
            now + Duration::from_secs(6),
            "three heartbeats"
        );
        for huge in [u64::MAX, u64::MAX / 3 + 1, 3_600_001] {
            assert_eq!(alive_until(now, huge), now + MAX_HEARTBEAT * 3, "{huge}");
        }
        assert_eq!(alive_until(now, 0), now + Duration::from_millis(3));
    }
}
