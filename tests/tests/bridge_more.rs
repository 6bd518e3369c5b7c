//! The MCP bridge in front of more real servers, reached by an rmcp client
//! through the gateway: Python servers (`mcp-server-time`, `mcp-server-git`
//! on a temporary repository), server-everything over Streamable HTTP with
//! a header taken from the environment, and bridge replicas: sharing calls,
//! and `replicas = "single"` served by one replica at a time, taken over
//! when its holder dies.

use std::collections::HashSet;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use mcp_bridge::{Replicas, ServerConfig, State};
use serde_json::{Value, json};
use sophia_kit::Category;
use sophia_tests::bridge::{RunningBridge, everything_bin, fixture, group_alive, python_server};
use sophia_tests::tools::{WAIT, call, text_of, wait_for_tool};
use sophia_tests::{Mesh, eventually};
use tokio::io::AsyncBufReadExt;

fn path_str(p: &Path) -> String {
    p.to_str().expect("a UTF-8 path").to_owned()
}

/// server-everything over stdio with what it receives copied to `log`.
fn teed_everything(log: &Path) -> ServerConfig {
    let mut s = fixture("everything", "tee-everything.sh");
    s.args.push(path_str(log));
    s.args.push(path_str(&everything_bin()));
    s.init_timeout_ms = None;
    s
}

/// How many `tools/call` requests the upstream server behind `log` got.
fn calls_in(log: &Path) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("\"tools/call\""))
        .count()
}

#[tokio::test]
async fn mcp_server_time_answers_get_current_time_through_the_bridge() {
    let mesh = Mesh::start().await;
    let bin = python_server("mcp-server-time");
    let time = ServerConfig::stdio("time", Category::CodeGeneration, &path_str(&bin), &[]);
    let mut bridge = RunningBridge::start(&mesh, vec![time]).await;
    let client = mesh.client().await;
    wait_for_tool(&client, "time_get_current_time").await;

    let result = call(
        &client,
        "time_get_current_time",
        json!({"timezone": "Europe/Paris"}),
    )
    .await;
    assert_ne!(result.is_error, Some(true), "{result:?}");
    let text = text_of(&result);
    let answer: serde_json::Value = serde_json::from_str(&text).expect("JSON from the server");
    assert_eq!(answer["timezone"], "Europe/Paris", "{text}");
    let year = chrono_year(answer["datetime"].as_str().unwrap_or_default());
    assert!(year >= 2025, "a current date-time: {text}");
    bridge.stop().await;
}

/// The year of an ISO 8601 date-time (`2026-11-30T12:00:00+01:00`).
fn chrono_year(datetime: &str) -> u32 {
    datetime.get(..4).and_then(|y| y.parse().ok()).unwrap_or(0)
}

/// A git repository with one commit and one untracked file.
fn temporary_repository() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let git = |args: &[&str]| {
        let out = std::process::Command::new("git")
            .args([
                "-c",
                "user.name=Sophia Test",
                "-c",
                "user.email=test@sophia.invalid",
            ])
            .args(args)
            .current_dir(dir.path())
            .output()
            .expect("git runs");
        assert!(out.status.success(), "git {args:?}: {out:?}");
    };
    git(&["init", "-q", "-b", "main"]);
    std::fs::write(dir.path().join("README.md"), "bridged\n").unwrap();
    git(&["add", "README.md"]);
    git(&["commit", "-q", "-m", "first commit through the mesh"]);
    std::fs::write(dir.path().join("untracked-notes.txt"), "new\n").unwrap();
    dir
}

#[tokio::test]
async fn mcp_server_git_reports_status_and_log_of_a_temporary_repository() {
    let mesh = Mesh::start().await;
    let repo = temporary_repository();
    let bin = python_server("mcp-server-git");
    let repo_path = path_str(repo.path());
    let mut git = ServerConfig::stdio(
        "git",
        Category::CodeGeneration,
        &path_str(&bin),
        &["--repository", &repo_path],
    );
    git.replicas = Replicas::Single;
    let mut bridge = RunningBridge::start(&mesh, vec![git]).await;
    let client = mesh.client().await;
    wait_for_tool(&client, "git_git_log").await;

    let status = call(&client, "git_git_status", json!({"repo_path": repo_path})).await;
    assert_ne!(status.is_error, Some(true), "{status:?}");
    assert!(
        text_of(&status).contains("untracked-notes.txt"),
        "{}",
        text_of(&status)
    );
    let log = call(&client, "git_git_log", json!({"repo_path": repo_path})).await;
    assert_ne!(log.is_error, Some(true), "{log:?}");
    assert!(
        text_of(&log).contains("first commit through the mesh"),
        "{}",
        text_of(&log)
    );
    bridge.stop().await;
}

/// server-everything as a Streamable HTTP server on a port it picked
/// itself (port 0), with every request's `header` recorded.
struct HttpEverything {
    port: u16,
    stderr: Arc<Mutex<Vec<String>>>,
    _child: tokio::process::Child,
}

impl HttpEverything {
    async fn start(header: &str) -> Self {
        let preload = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/bridge/report-port.cjs");
        let mut child = tokio::process::Command::new("node")
            .arg("--require")
            .arg(&preload)
            .arg(everything_bin())
            .arg("streamableHttp")
            .env("PORT", "0")
            .env("SOPHIA_RECORD_HEADER", header)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("node runs (server-everything needs Node.js 18+)");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
        let sink = stderr.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                sink.lock().unwrap().push(line);
            }
        });
        let seen = stderr.clone();
        let port = eventually("server-everything reports the port it bound", WAIT, || {
            let lines = seen.lock().unwrap().clone();
            async move {
                lines.iter().find_map(|l| {
                    l.strip_prefix("sophia-test: listening on port ")?
                        .parse()
                        .ok()
                })
            }
        })
        .await;
        Self {
            port,
            stderr,
            _child: child,
        }
    }

    /// The JSON-RPC messages the server received (one per body chunk that
    /// parses; the bridge's bodies are small).
    fn received(&self) -> Vec<Value> {
        let lines = self.stderr.lock().unwrap();
        lines
            .iter()
            .filter_map(|l| l.strip_prefix("sophia-test: body "))
            .filter_map(|b| serde_json::from_str(b).ok())
            .collect()
    }

    /// The values of the recorded header, one per request.
    fn header_values(&self, header: &str) -> Vec<String> {
        let prefix = format!("sophia-test: header {header}: ");
        let lines = self.stderr.lock().unwrap();
        lines
            .iter()
            .filter_map(|l| l.strip_prefix(&prefix).map(str::to_owned))
            .collect()
    }
}

#[tokio::test]
async fn server_everything_over_streamable_http_gets_its_header_and_relays_progress_sampling_and_cancels()
 {
    let mesh = Mesh::start().await;
    let upstream = HttpEverything::start("X-Sophia-Team").await;
    let url = format!("http://127.0.0.1:{}/mcp", upstream.port);
    let mut http = ServerConfig::http("everything", Category::CodeGeneration, &url);
    // Any variable of the bridge's environment; the tests always have this one.
    http.headers
        .insert("X-Sophia-Team".into(), "env:SOPHIA_MCP_SERVERS".into());
    let mut bridge = RunningBridge::start(&mesh, vec![http]).await;
    let client = mesh.client().await;
    wait_for_tool(&client, "everything_echo").await;

    let tools = client.list_all_tools().await.unwrap();
    assert!(tools.iter().any(|t| t.name == "everything_get-sum"));
    let result = call(&client, "everything_echo", json!({"message": "over HTTP"})).await;
    assert_ne!(result.is_error, Some(true), "{result:?}");
    assert!(
        text_of(&result).contains("over HTTP"),
        "{}",
        text_of(&result)
    );
    let sum = call(&client, "everything_get-sum", json!({"a": 20, "b": 22})).await;
    assert!(text_of(&sum).contains("42"), "{}", text_of(&sum));

    // Progress and the server's own requests travel over HTTP too.
    let (done, progress) = sophia_tests::tools::call_with_progress(
        &client,
        "everything_trigger-long-running-operation",
        json!({"duration": 1, "steps": 3}),
    )
    .await;
    assert!(text_of(&done).contains("completed"), "{done:?}");
    let steps: Vec<f64> = progress.iter().map(|p| p.progress).collect();
    assert_eq!(steps, [1.0, 2.0, 3.0]);
    let sampling = mesh
        .client_as(sophia_tests::Recorder {
            sample_reply: Some("sampled over HTTP".into()),
            ..Default::default()
        })
        .await;
    let sampled = call(
        &sampling,
        "everything_trigger-sampling-request",
        json!({"prompt": "say hi", "maxTokens": 20}),
    )
    .await;
    assert!(
        text_of(&sampled).contains("sampled over HTTP"),
        "{sampled:?}"
    );

    // A cancelled call reaches the HTTP server as notifications/cancelled
    // for that call's request id.
    let args = json!({"duration": 30, "steps": 30});
    let params =
        rmcp::model::CallToolRequestParams::new("everything_trigger-long-running-operation")
            .with_arguments(sophia_tests::tools::object(args));
    let handle = client
        .send_cancellable_request(
            rmcp::model::ClientRequest::CallToolRequest(rmcp::model::CallToolRequest::new(params)),
            rmcp::service::PeerRequestOptions::no_options(),
        )
        .await
        .unwrap();
    let long_call = |m: &Value| {
        m["method"] == "tools/call"
            && m["params"]["name"] == "trigger-long-running-operation"
            && m["params"]["arguments"]["duration"] == 30
    };
    let id = eventually("the long call reaches the server", WAIT, || async {
        upstream
            .received()
            .iter()
            .find(|m| long_call(m))
            .map(|m| m["id"].clone())
    })
    .await;
    handle.cancel(Some("changed my mind".into())).await.unwrap();
    eventually(
        "notifications/cancelled reaches the HTTP server",
        WAIT,
        || async {
            upstream.received().into_iter().find(|m| {
                m["method"] == "notifications/cancelled" && m["params"]["requestId"] == id
            })
        },
    )
    .await;

    let expected = std::env::var("SOPHIA_MCP_SERVERS").unwrap();
    let values = upstream.header_values("X-Sophia-Team");
    assert!(values.len() >= 3, "initialize, list and calls: {values:?}");
    assert!(
        values.iter().all(|v| *v == expected),
        "every request carries the header's value from the environment: {values:?}"
    );
    bridge.stop().await;
}

#[tokio::test]
async fn two_bridge_replicas_share_calls_each_to_its_own_server() {
    let mesh = Mesh::start().await;
    let (log_a, log_b) = (
        tempfile::NamedTempFile::new().unwrap(),
        tempfile::NamedTempFile::new().unwrap(),
    );
    let mut a = RunningBridge::start(&mesh, vec![teed_everything(log_a.path())]).await;
    let mut b = RunningBridge::start(&mesh, vec![teed_everything(log_b.path())]).await;
    let client = mesh.client().await;
    wait_for_tool(&client, "everything_echo").await;
    eventually("both replicas serve", WAIT, || async {
        (a.server("everything").state == State::Serving
            && b.server("everything").state == State::Serving)
            .then_some(())
    })
    .await;

    for i in 0..40 {
        let text = format!("call {i}");
        let result = call(&client, "everything_echo", json!({"message": text})).await;
        assert!(text_of(&result).contains(&text), "{result:?}");
    }
    let (served_a, served_b) = (calls_in(log_a.path()), calls_in(log_b.path()));
    assert_eq!(served_a + served_b, 40, "each call reached one server once");
    assert!(
        served_a > 0 && served_b > 0,
        "both replicas served calls: {served_a} and {served_b}"
    );
    a.stop().await;
    b.stop().await;
}

/// The instances announcing `service` among the next `count` of its
/// announcements on the bus.
async fn announcing(mesh: &Mesh, service: &str, count: usize) -> HashSet<String> {
    let nats = mesh.nats_client().await;
    let mut sub = nats
        .subscribe(sophia_proto::subject::REGISTRY_ANNOUNCE)
        .await
        .unwrap();
    let mut instances = HashSet::new();
    let mut seen = 0;
    while seen < count {
        let msg = tokio::time::timeout(WAIT, sub.next())
            .await
            .expect("announcements keep coming")
            .expect("the subscription lives");
        let Ok(announce) = sophia_proto::decode::<sophia_proto::Announce>(&msg.payload) else {
            continue;
        };
        if announce.service == service {
            instances.insert(announce.instance);
            seen += 1;
        }
    }
    instances
}

#[tokio::test]
async fn a_single_replica_server_is_served_by_one_bridge_and_taken_over_when_it_dies() {
    let mesh = Mesh::start().await;
    let logs = [
        tempfile::NamedTempFile::new().unwrap(),
        tempfile::NamedTempFile::new().unwrap(),
    ];
    let mut bridges = Vec::new();
    for log in &logs {
        let mut single = teed_everything(log.path());
        single.replicas = Replicas::Single;
        bridges.push(RunningBridge::start(&mesh, vec![single]).await);
    }
    let client = mesh.client().await;
    wait_for_tool(&client, "everything_echo").await;
    let (holder, standby) = holder_of(&bridges).await;

    // Only the holder's worker is on the bus; the other never started the server.
    let instances = announcing(&mesh, "bridge-everything", 10).await;
    assert_eq!(instances.len(), 1, "one replica announces: {instances:?}");
    for i in 0..10 {
        let result = call(
            &client,
            "everything_echo",
            json!({"message": format!("{i}")}),
        )
        .await;
        assert_ne!(result.is_error, Some(true), "{result:?}");
    }
    assert_eq!(calls_in(logs[holder].path()), 10);
    let standby_log = std::fs::read_to_string(logs[standby].path()).unwrap();
    assert!(
        standby_log.is_empty(),
        "the standby ran no server: {standby_log}"
    );
    assert!(bridges[standby].server("everything").tools.is_empty());

    // The holder dies: no drain, no lease given back.
    let pid = bridges[holder].server("everything").pid.expect("its pid");
    let died = Instant::now();
    bridges[holder].handle.as_ref().unwrap().abort();
    eventually("the standby takes over and serves", WAIT, || async {
        echoed(&client, "after").await
    })
    .await;
    let takeover = died.elapsed();
    assert!(
        takeover < Duration::from_secs(10),
        "taken over within a few seconds, not {takeover:?}"
    );
    assert_eq!(state_of(&bridges[standby]), Some(State::Serving));
    assert!(calls_in(logs[standby].path()) >= 1);
    eventually("the dead holder's server is gone", WAIT, || async {
        (!group_alive(pid)).then_some(())
    })
    .await;
    bridges[standby].stop().await;
}

/// `everything_echo` of `message`, if it is on offer and answers with it
/// (while a replica takes over, the tool may be briefly unknown).
async fn echoed(client: &sophia_tests::McpClient, message: &str) -> Option<()> {
    let params = rmcp::model::CallToolRequestParams::new("everything_echo")
        .with_arguments(sophia_tests::tools::object(json!({"message": message})));
    let result = client.call_tool(params).await.ok()?;
    (result.is_error != Some(true) && text_of(&result).contains(message)).then_some(())
}

/// Server `everything`'s state in `bridge` (none once it was stopped).
fn state_of(bridge: &RunningBridge) -> Option<State> {
    let status = &bridge.handle.as_ref()?.status;
    status.server("everything").map(|s| s.state)
}

/// Which of two bridges serves server `everything` while the other stands
/// by: (holder, standby).
async fn holder_of(bridges: &[RunningBridge]) -> (usize, usize) {
    eventually("one replica serves, the other stands by", WAIT, || {
        let states = (state_of(&bridges[0]), state_of(&bridges[1]));
        async move {
            match states {
                (Some(State::Serving), Some(State::Standby)) => Some((0, 1)),
                (Some(State::Standby), Some(State::Serving)) => Some((1, 0)),
                _ => None,
            }
        }
    })
    .await
}

#[tokio::test]
async fn a_single_replica_server_is_leased_as_the_worker_user_and_handed_over_on_stop() {
    let mesh = Mesh::least_privilege().await;
    let mut bridges = Vec::new();
    for _ in 0..2 {
        let mut single = ServerConfig::stdio(
            "everything",
            Category::CodeGeneration,
            &path_str(&everything_bin()),
            &[],
        );
        single.replicas = Replicas::Single;
        bridges.push(RunningBridge::start(&mesh, vec![single]).await);
    }
    let client = mesh.client().await;
    wait_for_tool(&client, "everything_echo").await;
    let (holder, other) = holder_of(&bridges).await;
    let result = call(&client, "everything_echo", json!({"message": "as worker"})).await;
    assert_ne!(result.is_error, Some(true), "{result:?}");

    // A clean stop gives the lease back; the other replica serves.
    bridges[holder].stop().await;
    eventually("the other replica serves", WAIT, || async {
        (state_of(&bridges[other]) == Some(State::Serving)).then_some(())
    })
    .await;
    eventually("a call is served by the other replica", WAIT, || async {
        echoed(&client, "handed over").await
    })
    .await;
    bridges[other].stop().await;
}
