//! The bridge catalog (`ops/bridge/catalog/`) against the agent templates:
//! every tool a built-in template names is on the mesh once the catalog is
//! enabled, checked against the pinned MCP servers themselves, so that a
//! server that renames a tool fails this test instead of failing a user.
//!
//! The catalog's files are read as they are; only how each server is
//! started changes: `npx -y <package>@<version>` and `uvx <package>==<version>`
//! become the copies `ops/scripts/install-mcp-servers.sh` installed, after
//! checking that they are the very versions the catalog pins. Secrets a
//! server insists on get placeholders (HubSpot's server needs a token to
//! start, not to list its tools).
//!
//! Snowflake's server cannot start here: it connects to the account before
//! it answers `tools/list` (see the catalog's comment). For it, the test
//! checks the template against the tools the catalog allows, and
//! `docs/bridge.md` says what it needs.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use agno_worker::templates::Templates;
use mcp_bridge::{BridgeConfig, ServerConfig};
use serde_json::Value;
use sophia_tests::bridge::RunningBridge;
use sophia_tests::tools::WAIT;
use sophia_tests::{Mesh, eventually};

const STANDIN_PULUMI: &str = env!("CARGO_BIN_EXE_pulumi");
/// The one server that cannot start without its service (see the docs).
const NEEDS_ITS_ACCOUNT: &str = "snowflake";

fn catalog_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../ops/bridge/catalog")
}

/// Every server of every catalog file, as the bridge reads them.
fn catalog(mesh: &Mesh) -> Vec<ServerConfig> {
    let mut servers = Vec::new();
    for category in ["business_intelligence", "infrastructure", "code_generation"] {
        let path = catalog_dir().join(format!("{category}.toml"));
        let config = BridgeConfig::load(&path, mesh.worker_config())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        servers.extend(config.servers);
    }
    servers
}

fn installed_npm() -> PathBuf {
    sophia_tests::bridge::everything_bin()
        .ancestors()
        .nth(3)
        .expect("<dir>/node_modules/.bin/<bin>")
        .to_owned()
}

/// `npx -y <package>@<version>` as the installed copy of that version.
fn from_npm(server: &mut ServerConfig) {
    let spec = server
        .args
        .iter()
        .find(|a| !a.starts_with('-'))
        .cloned()
        .expect("npx names a package");
    let (package, version) = spec.rsplit_once('@').expect("a pinned package@version");
    let dir = installed_npm().join("node_modules").join(package);
    let manifest: Value = serde_json::from_slice(
        &std::fs::read(dir.join("package.json"))
            .unwrap_or_else(|e| panic!("{package} is not in ops/bridge/servers/package.json: {e}")),
    )
    .unwrap();
    assert_eq!(
        manifest["version"], version,
        "the catalog pins {package}@{version}; ops/bridge/servers/package.json must pin the same"
    );
    let bin = match &manifest["bin"] {
        Value::String(b) => b.clone(),
        Value::Object(m) => m
            .values()
            .next()
            .and_then(Value::as_str)
            .unwrap()
            .to_owned(),
        other => panic!("{package} has no bin: {other}"),
    };
    server.command = Some("node".into());
    server.args = vec![dir.join(bin).to_string_lossy().into_owned()];
}

/// `uvx <package>==<version>` as the installed copy of that version.
fn from_pypi(server: &mut ServerConfig) {
    let spec = server
        .args
        .iter()
        .find(|a| a.contains("=="))
        .cloned()
        .expect("uvx names a pinned package");
    let (package, version) = spec.split_once("==").unwrap();
    let venv = sophia_tests::bridge::python_servers();
    let lock = std::fs::read_to_string(venv.join("requirements.txt")).unwrap_or_default();
    assert!(
        lock.lines().any(|l| l.trim() == spec),
        "the catalog pins {package}=={version}; ops/bridge/servers/requirements.txt must pin the same"
    );
    server.command = Some(
        venv.join("bin")
            .join(package)
            .to_string_lossy()
            .into_owned(),
    );
    server.args.clear();
}

/// The catalog's servers, started from the installed copies, with
/// placeholders for what they need to start offline.
fn runnable(mesh: &Mesh, scratch: &Path) -> Vec<ServerConfig> {
    let mut servers = catalog(mesh);
    servers.retain(|s| s.name != NEEDS_ITS_ACCOUNT);
    for server in &mut servers {
        match server.command.as_deref() {
            Some("npx") => from_npm(server),
            Some("uvx") => from_pypi(server),
            other => panic!("server {}: unexpected command {other:?}", server.name),
        }
        server.init_timeout_ms = Some(60_000);
        for value in server.env.values_mut() {
            *value = match value.as_str() {
                "env:SOPHIA_MEMORY_FILE" => scratch.join("memory.jsonl").to_string_lossy().into(),
                // HubSpot's server wants a token to start; listing needs none.
                _ => "offline-placeholder".into(),
            };
        }
    }
    servers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_builtin_templates_tools_are_on_the_mesh_once_the_catalog_is_enabled() {
    let mesh = Mesh::start().await;
    let scratch = tempfile::tempdir().unwrap();
    let bridge = RunningBridge::start(&mesh, runnable(&mesh, scratch.path())).await;
    // The native workers: Gong (no credentials needed to list its tools) and
    // Pulumi (the stand-in CLI).
    let _gong = sophia_tests::gong::replica(&mesh, "http://127.0.0.1:9", None).await;
    let setup = sophia_tests::pulumi::Setup::new(0);
    let _pulumi = sophia_tests::pulumi::replica(&mesh, setup.args(STANDIN_PULUMI, 30_000)).await;
    let client = mesh.client().await;

    // Everything the catalog's servers and the native workers serve is on
    // the gateway; then each template is checked against that list.
    let mut served: BTreeSet<String> = ["gong_list_calls", "pulumi_preview"]
        .map(str::to_owned)
        .into();
    for server in runnable(&mesh, scratch.path()) {
        let tools = eventually(&format!("{} serves", server.name), WAIT * 6, || async {
            let status = bridge.server(&server.name);
            (status.state == mcp_bridge::State::Serving).then_some(status.tools)
        })
        .await;
        served.extend(tools);
    }
    let on_mesh = eventually("their tools are on the gateway", WAIT, || async {
        let listed: BTreeSet<String> = client
            .list_all_tools()
            .await
            .ok()?
            .into_iter()
            .map(|t| t.name.to_string())
            .collect();
        served.is_subset(&listed).then_some(listed)
    })
    .await;
    let templates = Templates::builtin();
    for template in templates
        .iter()
        .filter(|t| t.agent_type != "snowflake_agent")
    {
        let missing: Vec<_> = template
            .tools
            .iter()
            .filter(|t| !on_mesh.contains(*t))
            .collect();
        assert!(
            missing.is_empty(),
            "{} names tools no server of the catalog offers: {missing:?}",
            template.agent_type
        );
    }

    // Snowflake's server needs its account to start: its template names
    // tools the catalog lets through, under the catalog's prefix.
    let snowflake = catalog(&mesh)
        .into_iter()
        .find(|s| s.name == NEEDS_ITS_ACCOUNT)
        .unwrap();
    let allowed: BTreeSet<String> = snowflake
        .allow
        .iter()
        .map(|t| snowflake.mesh_name(t))
        .collect();
    let template = templates.get("snowflake_agent").unwrap();
    for tool in &template.tools {
        assert!(
            allowed.contains(tool),
            "snowflake_agent names {tool}, not among {allowed:?}"
        );
    }
}
