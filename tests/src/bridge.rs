//! The MCP bridge in a [`Mesh`], in front of real MCP servers: the pinned
//! `@modelcontextprotocol/server-everything` (installed by
//! `ops/scripts/install-mcp-servers.sh`, found through `SOPHIA_MCP_SERVERS`)
//! and misbehaving stand-ins from `tests/fixtures/bridge/`.

use std::path::PathBuf;

use mcp_bridge::{BridgeConfig, BridgeHandle, ServerConfig, ServerStatus};
use sophia_kit::Category;
use tokio_util::sync::CancellationToken;

use crate::Mesh;

/// The server-everything executable, or a panic saying how to install it.
pub fn everything_bin() -> PathBuf {
    let dir = std::env::var_os("SOPHIA_MCP_SERVERS").unwrap_or_else(|| {
        panic!(
            "SOPHIA_MCP_SERVERS is not set: run ops/scripts/test.sh, or \
             export SOPHIA_MCP_SERVERS=$(ops/scripts/install-mcp-servers.sh)"
        )
    });
    let bin = PathBuf::from(dir).join("node_modules/.bin/mcp-server-everything");
    assert!(
        bin.exists(),
        "{} is missing: run ops/scripts/install-mcp-servers.sh (ops/scripts/test.sh does)",
        bin.display()
    );
    bin
}

/// The venv of the pinned Python MCP servers (mcp-server-git,
/// mcp-server-time; `ops/scripts/install-python-servers.sh`), or a panic
/// saying how to install it.
pub fn python_servers() -> PathBuf {
    let dir = std::env::var_os("SOPHIA_PYTHON_SERVERS").unwrap_or_else(|| {
        panic!(
            "SOPHIA_PYTHON_SERVERS is not set: run ops/scripts/test.sh, or \
             export SOPHIA_PYTHON_SERVERS=$(ops/scripts/install-python-servers.sh)"
        )
    });
    PathBuf::from(dir)
}

/// Program `program` of [`python_servers`].
pub fn python_server(program: &str) -> PathBuf {
    let bin = python_servers().join("bin").join(program);
    assert!(
        bin.exists(),
        "{} is missing: run ops/scripts/install-python-servers.sh",
        bin.display()
    );
    bin
}

/// server-everything over stdio, named `everything`, in code_generation.
pub fn everything() -> ServerConfig {
    let bin = everything_bin();
    ServerConfig::stdio(
        "everything",
        Category::CodeGeneration,
        bin.to_str().expect("a UTF-8 path"),
        &[],
    )
}

/// The conformance suite's fixtures as a plain MCP server over stdio
/// (`examples/conformance-server`, the workspace binary), named
/// `conformance`, with prefix `""`: its tools keep the names the suite
/// calls them by.
pub fn conformance_server() -> ServerConfig {
    let bin = crate::procs::binary("conformance-server");
    let mut s = ServerConfig::stdio(
        "conformance",
        Category::CodeGeneration,
        bin.to_str().expect("a UTF-8 path"),
        &[],
    );
    s.prefix = Some(String::new());
    s
}

/// A script from `tests/fixtures/bridge/`, run with `sh`, as server `name`,
/// giving up on `initialize` after two seconds.
pub fn fixture(name: &str, script: &str) -> ServerConfig {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/bridge")
        .join(script);
    let mut s = ServerConfig::stdio(
        name,
        Category::CodeGeneration,
        "sh",
        &[path.to_str().expect("a UTF-8 path")],
    );
    s.init_timeout_ms = Some(2_000);
    s
}

/// A bridge running in the test process.
pub struct RunningBridge {
    /// Its handle.
    pub handle: Option<BridgeHandle>,
    shutdown: CancellationToken,
}

impl RunningBridge {
    /// Starts a bridge for `servers` on `mesh`'s NATS.
    pub async fn start(mesh: &Mesh, servers: Vec<ServerConfig>) -> Self {
        Self::start_with(mesh.worker_config(), servers).await
    }

    /// Starts a bridge for `servers` with `worker` (its NATS user, ...).
    pub async fn start_with(worker: sophia_kit::WorkerConfig, servers: Vec<ServerConfig>) -> Self {
        let config = BridgeConfig { worker, servers };
        let shutdown = CancellationToken::new();
        let handle = mcp_bridge::run(config, shutdown.clone())
            .await
            .expect("the bridge starts");
        Self {
            handle: Some(handle),
            shutdown,
        }
    }

    /// Server `name`'s status.
    pub fn server(&self, name: &str) -> ServerStatus {
        self.handle
            .as_ref()
            .and_then(|h| h.status.server(name))
            .unwrap_or_else(|| panic!("no server {name}"))
    }

    /// Stops the bridge as SIGTERM would, and waits until it has.
    pub async fn stop(&mut self) {
        self.shutdown.cancel();
        if let Some(h) = self.handle.take() {
            h.stopped().await;
        }
    }
}

impl Drop for RunningBridge {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Whether any process is still in process group `pgid` (a stdio server
/// is the leader of its own group), zombies aside.
pub fn group_alive(pgid: u32) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return false;
    };
    entries.flatten().any(|e| {
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        // pid (comm) state ppid pgrp ...; comm may hold spaces: split after ')'.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            return false;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        fields.len() > 2 && fields[0] != "Z" && fields[2] == pgid.to_string()
    })
}
