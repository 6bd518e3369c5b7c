//! The live tool registry: which tools the workers on the bus offer now.
//!
//! Workers announce themselves (`sophia.v1.registry.announce`) on start, on
//! reconnect, when a gateway asks (`...discover`) and every heartbeat; they
//! say goodbye on drain (`...leave`). A replica silent for three heartbeats is
//! dropped. The merged, name-sorted tool list is rebuilt on every change, and
//! its version is published on a watch channel so MCP sessions can be sent
//! `notifications/tools/list_changed`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use parking_lot::RwLock;
use std::time::{Duration, Instant};

use futures::StreamExt;
use sophia_kit::nats::LinkState;
use sophia_proto::{Announce, Discover, Leave, PROTOCOL_VERSION, ToolSpec, subject};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

mod view;

use view::{build_view, same_tools};

/// A tool as the gateway offers it.
#[derive(Debug)]
pub struct ToolEntry {
    /// What the worker announced.
    pub spec: ToolSpec,
    /// The MCP form of the tool.
    pub mcp: rmcp::model::Tool,
    /// The compiled input schema.
    pub validator: Arc<jsonschema::Validator>,
    /// How many live replicas announce it.
    pub replicas: usize,
    /// Whether every one of them acknowledges requests (so an
    /// unacknowledged call went to a replica that is gone).
    pub acked: bool,
    /// The worker service whose announcement describes it.
    pub service: String,
}

/// The tools on offer at one moment, sorted by name, and the resources,
/// templates and prompts, each with the worker service that offers it.
#[derive(Debug, Default)]
pub struct ToolView {
    /// Tools by name.
    pub tools: BTreeMap<String, Arc<ToolEntry>>,
    /// Resources by URI: (service, MCP `Resource` JSON).
    pub resources: BTreeMap<String, (String, serde_json::Value)>,
    /// Resource templates by URI template: (service, MCP `ResourceTemplate`).
    pub templates: BTreeMap<String, (String, serde_json::Value)>,
    /// Prompts by name: (service, MCP `Prompt` JSON).
    pub prompts: BTreeMap<String, (String, serde_json::Value)>,
    /// Services that answer `completion/complete`.
    pub completers: std::collections::BTreeSet<String>,
    /// Tools announced with a schema other than the one served: name →
    /// the announcing service.
    pub conflicts: BTreeMap<String, String>,
}

impl ToolView {
    /// The service owning `uri`: a resource's, else a template's that
    /// matches it.
    pub fn resource_owner(&self, uri: &str) -> Option<&str> {
        if let Some((service, _)) = self.resources.get(uri) {
            return Some(service);
        }
        self.templates
            .iter()
            .find(|(t, _)| sophia_kit::offers::match_template(t, uri).is_some())
            .map(|(_, (service, _))| service.as_str())
    }

    fn same_offers(&self, other: &ToolView) -> bool {
        self.resources == other.resources
            && self.templates == other.templates
            && self.prompts == other.prompts
            && self.completers == other.completers
    }
}

struct Instance {
    service: String,
    version: String,
    tools: Vec<ToolSpec>,
    offers: sophia_proto::Offers,
    degraded: Vec<String>,
    acks: bool,
    host: String,
    started_at_ms: u64,
    /// What the announcement held that is not offered, and why.
    refused: Vec<sophia_kit::vetting::Refusal>,
    /// When this replica first announced (the earliest serves a contested
    /// tool's schema).
    since: Instant,
    last_seen: Instant,
    ttl: Duration,
}

/// One live replica as the console shows it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Replica {
    /// Its instance id on the bus.
    pub instance: String,
    /// Its worker service.
    pub service: String,
    /// The version it announced.
    pub version: String,
    /// The host it runs on (empty when it did not say).
    pub host: String,
    /// When its process started, ms since the Unix epoch (0: unknown).
    pub started_at_ms: u64,
    /// How long this gateway has known it.
    pub known_for_ms: u64,
    /// How long ago its last announcement or heartbeat arrived.
    pub last_heartbeat_ms: u64,
    /// How many tools it serves.
    pub tools: usize,
    /// The categories of those tools.
    pub categories: Vec<String>,
    /// What it cannot do right now.
    pub degraded: Vec<String>,
}

/// The registry. Cheap to clone; all clones share state.
#[derive(Clone)]
pub struct Registry {
    view: Arc<RwLock<Arc<ToolView>>>,
    instances: Arc<parking_lot::Mutex<HashMap<String, Instance>>>,
    changes: watch::Sender<u64>,
    offer_changes: watch::Sender<u64>,
    /// When the set of replicas last changed (or the registry was made).
    last_change: Arc<parking_lot::Mutex<Instant>>,
    /// Announcements that could not be decoded: how many, and the last cause.
    malformed: Arc<parking_lot::Mutex<(u64, String)>>,
}

impl Default for Registry {
    fn default() -> Self {
        Self::new()
    }
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self {
            view: Default::default(),
            instances: Default::default(),
            changes: watch::channel(0).0,
            offer_changes: watch::channel(0).0,
            last_change: Arc::new(parking_lot::Mutex::new(Instant::now())),
            malformed: Default::default(),
        }
    }

    /// Counts an announcement that could not be decoded (logged the first
    /// time and every hundredth, not at every heartbeat of its sender).
    pub fn malformed(&self, cause: String) {
        let mut m = self.malformed.lock();
        m.0 += 1;
        if m.0 % 100 == 1 {
            tracing::warn!(count = m.0, cause = %cause, "ignoring an announcement that is not a valid envelope");
        }
        m.1 = cause;
    }

    /// Waits until no replica has joined or left for `quiet` (replicas that
    /// start together join one after another), but no longer than `cap`.
    /// A registry made less than `quiet` ago has not settled either: the
    /// workers' answers to its first discovery request are still coming.
    pub async fn settled(&self, quiet: Duration, cap: Duration) {
        let give_up = tokio::time::Instant::now() + cap;
        let mut changes = self.subscribe();
        loop {
            let since = self.last_change.lock().elapsed();
            let Some(left) = quiet.checked_sub(since).filter(|d| !d.is_zero()) else {
                return;
            };
            let wake = (tokio::time::Instant::now() + left).min(give_up);
            tokio::select! {
                _ = tokio::time::sleep_until(wake) => {}
                _ = changes.changed() => {}
            }
            if tokio::time::Instant::now() >= give_up {
                return;
            }
        }
    }

    /// What live replicas say they cannot do right now, by service.
    pub fn degraded(&self) -> BTreeMap<String, std::collections::BTreeSet<String>> {
        let mut out: BTreeMap<String, std::collections::BTreeSet<String>> = BTreeMap::new();
        for i in self.instances.lock().values() {
            if !i.degraded.is_empty() {
                out.entry(i.service.clone())
                    .or_default()
                    .extend(i.degraded.iter().cloned());
            }
        }
        out
    }

    /// The current tools.
    pub fn view(&self) -> Arc<ToolView> {
        self.view.read().clone()
    }

    /// The tool called `name`, if a live worker offers it.
    pub fn get(&self, name: &str) -> Option<Arc<ToolEntry>> {
        self.view().tools.get(name).cloned()
    }

    /// A receiver that changes whenever the tool list does.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// A receiver that changes whenever the resources, templates or prompts
    /// on offer do.
    pub fn subscribe_offers(&self) -> watch::Receiver<u64> {
        self.offer_changes.subscribe()
    }

    /// Live replicas per worker service.
    pub fn replicas(&self) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for i in self.instances.lock().values() {
            *out.entry(i.service.clone()).or_default() += 1;
        }
        out
    }

    /// Every live replica, for the console: sorted by service, then id.
    pub fn replica_list(&self) -> Vec<Replica> {
        let mut out: Vec<Replica> = self
            .instances
            .lock()
            .iter()
            .map(|(id, i)| {
                let mut categories: Vec<String> =
                    i.tools.iter().map(|t| t.category.to_string()).collect();
                categories.sort();
                categories.dedup();
                Replica {
                    instance: id.clone(),
                    service: i.service.clone(),
                    version: i.version.clone(),
                    host: i.host.clone(),
                    started_at_ms: i.started_at_ms,
                    known_for_ms: i.since.elapsed().as_millis() as u64,
                    last_heartbeat_ms: i.last_seen.elapsed().as_millis() as u64,
                    tools: i.tools.len(),
                    categories,
                    degraded: i.degraded.clone(),
                }
            })
            .collect();
        out.sort_by(|a, b| (&a.service, &a.instance).cmp(&(&b.service, &b.instance)));
        out
    }

    fn apply(&self, f: impl FnOnce(&mut HashMap<String, Instance>) -> bool) {
        let mut instances = self.instances.lock();
        if !f(&mut instances) {
            return;
        }
        *self.last_change.lock() = Instant::now();
        let previous = self.view.read().clone();
        let view = build_view(&instances, &previous);
        let mut current = self.view.write();
        let changed = !same_tools(&current, &view);
        let offers_changed = !current.same_offers(&view);
        *current = Arc::new(view);
        drop(current);
        drop(instances);
        if changed {
            self.changes.send_modify(|v| *v += 1);
        }
        if offers_changed {
            self.offer_changes.send_modify(|v| *v += 1);
        }
    }

    /// Records an announcement. Returns nothing; the change (if any) is seen
    /// through [`Registry::subscribe`].
    pub fn announce(&self, mut a: Announce) {
        let ttl = silence_allowed(a.heartbeat_ms);
        let refused = sophia_kit::vetting::vet(&mut a);
        self.apply(|instances| {
            let now = Instant::now();
            let fresh = Instance {
                service: a.service,
                version: a.version,
                tools: a.tools,
                offers: a.offers,
                degraded: a.degraded,
                acks: a.acks,
                host: a.host,
                started_at_ms: a.started_at_ms,
                refused,
                since: now,
                last_seen: now,
                ttl,
            };
            match instances.get_mut(&a.instance) {
                Some(existing) if existing.tools == fresh.tools && existing.version == fresh.version && existing.offers == fresh.offers => {
                    existing.last_seen = fresh.last_seen;
                    existing.ttl = fresh.ttl;
                    existing.degraded = fresh.degraded;
                    false
                }
                existing => {
                    let since = existing.map_or(now, |e| e.since);
                    // Logged once per change of the announcement, not per heartbeat.
                    for r in &fresh.refused {
                        tracing::warn!(service = %fresh.service, instance = %a.instance, refused = %r.what, why = %r.why, "not offering part of an announcement");
                    }
                    tracing::info!(instance = %a.instance, service = %fresh.service, tools = fresh.tools.len(), "worker joined");
                    instances.insert(a.instance, Instance { since, ..fresh });
                    true
                }
            }
        });
    }

    /// What live replicas announced that is not offered, and why: refused
    /// entries, and tools whose schema conflicts with the one already
    /// served. For `/health`.
    pub fn refused(&self) -> Vec<serde_json::Value> {
        let mut out: Vec<serde_json::Value> = Vec::new();
        for i in self.instances.lock().values() {
            for r in &i.refused {
                out.push(serde_json::json!({"service": i.service, "what": r.what, "why": r.why}));
            }
        }
        for (name, service) in &self.view().conflicts {
            out.push(
                serde_json::json!({"service": service, "what": format!("tool {name}"),
                "why": "another replica already serves this tool with a different schema; \
                        it keeps it until that replica leaves"}),
            );
        }
        let (count, cause) = self.malformed.lock().clone();
        if count > 0 {
            out.push(serde_json::json!({"service": null, "what": "announcements that are not valid envelopes",
                "count": count, "why": cause}));
        }
        out.sort_by_key(|v| v.to_string());
        out.dedup();
        out
    }

    /// Forgets a replica that said it is leaving.
    pub fn leave(&self, instance: &str) {
        self.apply(|instances| {
            let gone = instances.remove(instance).is_some();
            if gone {
                tracing::info!(instance, "worker left");
            }
            gone
        });
    }

    /// Restarts every replica's clock, after this gateway was itself cut off
    /// from the bus: their silence was not theirs, so they get three fresh
    /// heartbeats to re-announce.
    pub fn forgive_silence(&self) {
        let now = Instant::now();
        for i in self.instances.lock().values_mut() {
            i.last_seen = now;
        }
    }

    /// Forgets replicas silent for longer than three heartbeats.
    pub fn expire(&self) {
        self.apply(|instances| {
            let before = instances.len();
            instances.retain(|id, i| {
                let alive = i.last_seen.elapsed() <= i.ttl;
                if !alive {
                    tracing::warn!(instance = %id, service = %i.service, "worker stopped heartbeating; dropping its tools");
                }
                alive
            });
            before != instances.len()
        });
    }

    /// Keeps the registry current from the bus until `stop` fires: listens to
    /// announcements and leaves, asks workers to announce on every (re)connect,
    /// and expires silent replicas.
    pub async fn follow(
        &self,
        conn: &sophia_kit::nats::Connection,
        gateway_instance: String,
        stop: CancellationToken,
    ) -> Result<(), async_nats::SubscribeError> {
        let client = &conn.client;
        let mut announces = client.subscribe(subject::REGISTRY_ANNOUNCE).await?;
        let mut leaves = client.subscribe(subject::REGISTRY_LEAVE).await?;
        let registry = self.clone();
        let client = client.clone();
        let mut connects = conn.connects.clone();
        let link = conn.state.clone();
        let discover: bytes::Bytes = sophia_proto::encode(&Discover {
            v: PROTOCOL_VERSION,
            requester: gateway_instance,
        })
        .expect("a Discover always encodes")
        .into();
        tokio::spawn(async move {
            let mut sweep = tokio::time::interval(Duration::from_millis(100));
            let _ = client
                .publish(subject::REGISTRY_DISCOVER, discover.clone())
                .await;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    Some(msg) = announces.next() => match sophia_proto::decode::<Announce>(&msg.payload) {
                        Ok(a) if a.v == PROTOCOL_VERSION => registry.announce(a),
                        Ok(a) => tracing::warn!(instance = %a.instance, v = a.v, "ignoring a worker speaking another protocol version"),
                        Err(e) => registry.malformed(e.to_string()),
                    },
                    Some(msg) = leaves.next() => match sophia_proto::decode::<Leave>(&msg.payload) {
                        Ok(l) => registry.leave(&l.instance),
                        Err(e) => tracing::warn!(cause = %e, "ignoring a malformed leave message"),
                    },
                    changed = connects.changed() => {
                        if changed.is_err() { break }
                        registry.forgive_silence();
                        let _ = client.publish(subject::REGISTRY_DISCOVER, discover.clone()).await;
                    }
                    // While cut off from the bus, heartbeats cannot arrive: expire nothing.
                    _ = sweep.tick() => if *link.borrow() == LinkState::Up { registry.expire() },
                }
            }
        });
        Ok(())
    }
}

/// Announced heartbeat intervals are taken within these bounds.
const HEARTBEAT_BOUNDS_MS: (u64, u64) = (10, 3_600_000);
/// Heartbeats a replica may miss before it is dropped.
const MISSED_HEARTBEATS: u32 = 3;

/// How long a replica announcing `heartbeat_ms` may stay silent: three
/// intervals, the interval bounded so that a peer's garbage (0, or near
/// `u64::MAX`) neither drops it at once nor overflows the clock.
fn silence_allowed(heartbeat_ms: u64) -> Duration {
    let (min, max) = HEARTBEAT_BOUNDS_MS;
    Duration::from_millis(heartbeat_ms.clamp(min, max)) * MISSED_HEARTBEATS
}

#[cfg(test)]
mod tests {
    use super::*;
    use sophia_proto::{Category, Hints};

    fn spec(name: &str, description: &str) -> ToolSpec {
        ToolSpec {
            name: name.into(),
            title: None,
            description: description.into(),
            category: Category::CodeGeneration,
            input_schema: serde_json::json!({"type": "object"}),
            output_schema: None,
            hints: Hints::default(),
            timeout_ms: None,
            jobs: None,
        }
    }

    fn announce(instance: &str, version: &str, tools: Vec<ToolSpec>) -> Announce {
        Announce {
            v: 1,
            instance: instance.into(),
            service: "w".into(),
            version: version.into(),
            tools,
            heartbeat_ms: 1000,
            offers: Default::default(),
            degraded: vec![],
            acks: true,
            host: String::new(),
            started_at_ms: 0,
        }
    }

    #[test]
    fn a_peers_heartbeat_interval_is_bounded() {
        assert_eq!(silence_allowed(u64::MAX), Duration::from_secs(3 * 3600));
        assert_eq!(silence_allowed(0), Duration::from_millis(30));
        assert_eq!(silence_allowed(5_000), Duration::from_secs(15));
        // And an announcement carrying it is taken without a panic.
        let r = Registry::new();
        let mut a = announce("i1", "1.0.0", vec![spec("t", "x")]);
        a.heartbeat_ms = u64::MAX;
        r.announce(a);
        assert_eq!(r.replicas().get("w"), Some(&1));
    }

    #[test]
    fn merges_sorts_and_counts_replicas() {
        let r = Registry::new();
        let mut changes = r.subscribe();
        r.announce(announce(
            "a",
            "1.0.0",
            vec![spec("zeta", "z"), spec("alpha", "a")],
        ));
        assert!(changes.has_changed().unwrap());
        changes.mark_unchanged();
        r.announce(announce("b", "1.0.0", vec![spec("alpha", "a")]));
        // Same tools, one more replica: the list did not change.
        assert!(!changes.has_changed().unwrap());
        let view = r.view();
        let names: Vec<_> = view.tools.keys().cloned().collect();
        assert_eq!(names, ["alpha", "zeta"]);
        assert_eq!(view.tools["alpha"].replicas, 2);
        r.leave("a");
        assert!(changes.has_changed().unwrap());
        assert_eq!(r.view().tools.keys().collect::<Vec<_>>(), ["alpha"]);
    }

    #[test]
    fn newest_version_describes_a_tool() {
        let r = Registry::new();
        r.announce(announce("old", "1.9.0", vec![spec("t", "old")]));
        r.announce(announce("new", "1.10.0", vec![spec("t", "new")]));
        assert_eq!(r.get("t").unwrap().spec.description, "new");
    }

    #[test]
    fn tools_with_bad_names_or_schemas_are_not_offered() {
        let r = Registry::new();
        let mut bad_schema = spec("bad_schema", "x");
        bad_schema.input_schema = serde_json::json!({"type": 12});
        r.announce(announce(
            "a",
            "1.0.0",
            vec![spec("bad.name", "x"), bad_schema, spec("ok", "x")],
        ));
        assert_eq!(r.view().tools.keys().collect::<Vec<_>>(), ["ok"]);
    }
}
