//! The official MCP conformance suite (`@modelcontextprotocol/conformance`,
//! pinned in `ops/scripts/install-conformance.sh`) against the gateway: the
//! suite's server scenarios over Streamable HTTP, with the suite's fixtures
//! behind the gateway on the bus in two ways, each against the same
//! expected failures:
//! - the conformance worker (`examples/conformance-worker`), a kit worker;
//! - the MCP bridge (`mcp-bridge`, in-process) in front of
//!   `examples/conformance-server`, a plain rmcp server over stdio with the
//!   same fixtures: gateway → bus → bridge → upstream MCP server.
//!
//! Everything runs under the least-privilege NATS users. Scenarios the
//! gateway cannot pass yet would be listed in
//! `ops/conformance/expected-failures.yml`. The suite fails the run when a
//! scenario outside that list fails (a regression), and also when one in it
//! passes (so the list only shrinks).
//!
//! The suite sends no `Authorization` header, so it talks to the gateway
//! through a small proxy here that adds the test token and passes
//! everything else (the `Host` and `Origin` headers included) through.

use std::path::PathBuf;
use std::process::Stdio;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use futures::TryStreamExt;
use sophia_tests::Mesh;
use sophia_tests::bridge::{RunningBridge, conformance_server};
use sophia_tests::mesh::TEST_TOKEN;
use sophia_tests::tools::wait_for_tool;

#[derive(Clone)]
struct Upstream {
    http: reqwest::Client,
    base: String,
}

async fn forward(State(up): State<Upstream>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let url = format!(
        "{}{}",
        up.base,
        parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
    );
    let mut out = up.http.request(parts.method, url);
    for (name, value) in &parts.headers {
        if !matches!(
            name.as_str(),
            "connection" | "content-length" | "transfer-encoding"
        ) {
            out = out.header(name, value);
        }
    }
    let body = axum::body::to_bytes(body, 16 << 20)
        .await
        .unwrap_or_default();
    let reply = match out.bearer_auth(TEST_TOKEN).body(body).send().await {
        Ok(r) => r,
        Err(e) => {
            return Response::builder()
                .status(502)
                .body(Body::from(e.to_string()))
                .unwrap();
        }
    };
    let mut response = Response::builder().status(reply.status());
    for (name, value) in reply.headers() {
        if !matches!(
            name.as_str(),
            "connection" | "content-length" | "transfer-encoding"
        ) {
            response = response.header(name, value);
        }
    }
    let stream = reply.bytes_stream().map_err(std::io::Error::other);
    response.body(Body::from_stream(stream)).unwrap()
}

/// Serves the proxy in front of `base`; returns its address.
async fn proxy(base: String) -> std::net::SocketAddr {
    sophia_tests::install_crypto();
    let up = Upstream {
        http: reqwest::Client::new(),
        base,
    };
    let app = axum::Router::new().fallback(forward).with_state(up);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// The `conformance` command of suite `version`: under `SOPHIA_CONFORMANCE`
/// (set by `ops/scripts/test.sh`), else where the install script puts it.
fn suite(version: &str) -> PathBuf {
    let root = std::env::var_os("SOPHIA_CONFORMANCE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.sophia/conformance")
        });
    let path = root.join(version).join("node_modules/.bin/conformance");
    assert!(
        path.exists(),
        "the conformance suite {version} is not installed at {}: run \
         ./ops/scripts/install-conformance.sh (./ops/scripts/test.sh does)",
        path.display()
    );
    path
}

/// The checks that did not pass, from the suite's per-scenario
/// `checks.json` files under `results`, to say why a scenario failed.
fn failed_checks(results: &std::path::Path) -> String {
    let mut out = String::new();
    let Ok(dirs) = std::fs::read_dir(results) else {
        return out;
    };
    for dir in dirs.flatten() {
        let Ok(text) = std::fs::read_to_string(dir.path().join("checks.json")) else {
            continue;
        };
        let checks: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        for check in checks.as_array().into_iter().flatten() {
            if check["status"] != "SUCCESS" {
                out.push_str(&format!("{}: {check}\n", dir.file_name().to_string_lossy()));
            }
        }
    }
    out
}

/// What holds the suite's fixtures behind the gateway.
#[derive(Clone, Copy, Debug)]
enum Fixtures {
    /// The conformance worker, on the bus.
    Worker,
    /// The bridge, on the bus, in front of the conformance server (stdio).
    Bridge,
}

impl Fixtures {
    /// Puts the fixtures on `mesh`; the bridge, to keep while the suite
    /// runs.
    async fn start(self, mesh: &mut Mesh) -> Option<RunningBridge> {
        match self {
            Fixtures::Worker => {
                mesh.worker(conformance_worker::worker()).await;
                None
            }
            Fixtures::Bridge => Some(RunningBridge::start(mesh, vec![conformance_server()]).await),
        }
    }
}

/// The file of expected failures for suite `version` run with `args`:
/// `ops/conformance/expected-failures-<version>[-<requirements>].yml`,
/// the requirement set named only when it is the stateless 2026-07-28.
fn baseline(version: &str, args: &[&str]) -> String {
    let stateless = args
        .windows(2)
        .any(|a| a == ["--requirements", "2026-07-28"]);
    let set = if stateless { "-2026-07-28" } else { "" };
    format!("ops/conformance/expected-failures-{version}{set}.yml")
}

/// Runs suite `version`'s server scenarios (with `args`) against the
/// gateway, `fixtures` behind it, with that version's baseline of expected
/// failures; the suite's output.
async fn run_suite(version: &str, args: &[&str], fixtures: Fixtures) -> String {
    // One suite at a time: each runs some thirty scenarios with their own
    // clients and timeouts, and four at once on two cores measure the
    // machine, not the mesh.
    static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _turn = ONE_AT_A_TIME.lock().await;
    let suite = suite(version);
    // Under the least-privilege NATS users of ops/nats/nats.conf, so that
    // the suite also proves every relayed feature is permitted.
    let mut mesh = Mesh::least_privilege().await;
    let bridge = fixtures.start(&mut mesh).await;
    let client = mesh.client().await;
    wait_for_tool(&client, "test_simple_text").await;
    drop(client);
    let addr = proxy(mesh.http_base()).await;
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let results = tempfile::tempdir().unwrap();
    let bin_dir = suite.parent().unwrap().to_owned();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let run = tokio::process::Command::new(&suite)
        .args(["server", "--url", &format!("http://{addr}/mcp")])
        .args(args)
        .arg("--expected-failures")
        .arg(root.join(baseline(version, args)))
        .arg("-o")
        .arg(results.path())
        .env("PATH", path)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(std::time::Duration::from_secs(300), run)
        .await
        .expect("the suite finishes within 5 minutes")
        .expect("the suite runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    let violations = mesh.nats.violations();
    assert!(violations.is_empty(), "{violations:#?}");
    assert!(
        out.status.success(),
        "conformance {version} with {fixtures:?} found a regression (or a fixed scenario \
         still listed as expected to fail):\n{stdout}\n{stderr}\nfailed checks:\n{}",
        failed_checks(results.path())
    );
    if let Some(mut bridge) = bridge {
        bridge.stop().await;
    }
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_conformance_suite_0_1_16_passes_through_the_gateway_and_the_bus() {
    run_suite("0.1.16", &[], Fixtures::Worker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_conformance_suite_0_2_passes_the_2025_11_25_requirements() {
    run_suite(
        "0.2.0-alpha.12",
        &["--requirements", "2025-11-25"],
        Fixtures::Worker,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_conformance_suite_0_2_passes_the_stateless_2026_07_28_requirements() {
    run_suite(
        "0.2.0-alpha.12",
        &["--requirements", "2026-07-28"],
        Fixtures::Worker,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_conformance_suite_0_1_16_passes_through_the_bridge_to_a_stdio_server() {
    run_suite("0.1.16", &[], Fixtures::Bridge).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_conformance_suite_0_2_passes_the_2025_11_25_requirements_through_the_bridge() {
    run_suite(
        "0.2.0-alpha.12",
        &["--requirements", "2025-11-25"],
        Fixtures::Bridge,
    )
    .await;
}
