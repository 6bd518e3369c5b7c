//! What each upstream server is doing, for `/health`, the log and tests.

use std::collections::BTreeMap;
use std::sync::Arc;

use parking_lot::Mutex;
use serde::Serialize;

/// Where a server is in its life.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Being started (or restarted).
    Starting,
    /// Connected; its tools are on the mesh.
    Serving,
    /// Not serving: failed to start, or exited; retried with backoff.
    Down,
    /// Stopped by the bridge's shutdown.
    Stopped,
    /// `replicas = "single"`: another bridge replica holds the server's
    /// lease and serves it; this one takes over if that one dies.
    Standby,
}

/// One server's status.
#[derive(Clone, Debug, Serialize)]
pub struct ServerStatus {
    /// The server's name.
    pub name: String,
    /// Where it is.
    pub state: State,
    /// Its process id, while a stdio server runs.
    pub pid: Option<u32>,
    /// Its tools on the mesh.
    pub tools: Vec<String>,
    /// Why it is down (with its stderr tail), when it is.
    pub error: Option<String>,
    /// Upstream tools not offered, each with the reason.
    pub refused: Vec<String>,
    /// How many times it was (re)started after the first.
    pub restarts: u32,
}

/// Every server's status.
#[derive(Clone, Debug, Default)]
pub struct Status(Arc<Mutex<BTreeMap<String, ServerStatus>>>);

impl Status {
    /// A snapshot, by name.
    pub fn servers(&self) -> Vec<ServerStatus> {
        self.0.lock().values().cloned().collect()
    }

    /// One server's status.
    pub fn server(&self, name: &str) -> Option<ServerStatus> {
        self.0.lock().get(name).cloned()
    }

    /// Changes server `name`'s status with `f`.
    pub(crate) fn update(&self, name: &str, f: impl FnOnce(&mut ServerStatus)) {
        let mut all = self.0.lock();
        let entry = all.entry(name.to_owned()).or_insert_with(|| ServerStatus {
            name: name.to_owned(),
            state: State::Starting,
            pid: None,
            tools: Vec::new(),
            error: None,
            refused: Vec::new(),
            restarts: 0,
        });
        f(entry)
    }

    /// What the bridge cannot do right now, one line each, for `/health`.
    pub fn degraded(&self) -> Vec<String> {
        let mut lines = Vec::new();
        for s in self.0.lock().values() {
            match (&s.state, &s.error) {
                (State::Down, Some(e)) => lines.push(format!(
                    "MCP server {} is not serving (retried with backoff; fix its entry in \
                     the bridge configuration if this persists): {e}",
                    s.name
                )),
                (State::Down, None) => lines.push(format!("MCP server {} is not serving", s.name)),
                (State::Standby, Some(e)) => lines.push(format!(
                    "MCP server {} (replicas = \"single\") may be served by no replica; this \
                     one {e}",
                    s.name
                )),
                _ => {}
            }
            for r in &s.refused {
                lines.push(format!("MCP server {}: {r}", s.name));
            }
        }
        lines
    }
}
