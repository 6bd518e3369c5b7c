//! The mesh's tools as workers announce them: an agent's tool definitions
//! (name, description, input schema, hints) come from here, so the model
//! sees exactly what the owning worker accepts.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use sophia_proto::{Announce, Discover, Leave, PROTOCOL_VERSION, ToolSpec, subject};

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
                            d.state.lock().expect("directory lock").replicas.remove(&l.instance);
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
        // Bounded: a garbage interval must not overflow the clock.
        let alive = Instant::now() + Duration::from_millis(a.heartbeat_ms.clamp(1, 3_600_000) * 3);
        self.state
            .lock()
            .expect("directory lock")
            .replicas
            .insert(a.instance, (a.tools, alive));
    }

    /// The compiled input schema of `spec`; `None` if it does not compile.
    pub fn validator(&self, spec: &ToolSpec) -> Option<Arc<jsonschema::Validator>> {
        let mut state = self.state.lock().expect("directory lock");
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
        let state = self.state.lock().expect("directory lock");
        state
            .replicas
            .values()
            .filter(|(_, alive)| *alive > now)
            .flat_map(|(tools, _)| tools.iter())
            .find(|t| t.name == name)
            .cloned()
    }
}
