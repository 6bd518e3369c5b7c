//! MCP over stdio, as Cursor's `command` entries run it: the real
//! `sophia-gateway --stdio` binary, a real NATS and a worker.

use std::process::Stdio;
use std::time::Duration;

use rmcp::ServiceExt;
use rmcp::model::CallToolRequestParams;
use rmcp::transport::{ConfigureCommandExt, TokioChildProcess};
use serde_json::{Value, json};
use sophia_tests::{Mesh, eventually};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

fn gateway_command(nats_url: &str) -> tokio::process::Command {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_sophia-gateway")).configure(|c| {
        c.arg("--stdio")
            .env("NATS_URL", nats_url)
            .env("RUST_LOG", "debug")
            .env_remove("SOPHIA_GATEWAY_TOKEN");
    })
}

#[tokio::test]
async fn cursor_style_stdio_session_lists_and_calls_tools() {
    let mut mesh = Mesh::without_gateway();
    mesh.worker(echo_worker::echo_worker()).await;

    let (transport, _stderr) = TokioChildProcess::builder(gateway_command(&mesh.nats.url()))
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn sophia-gateway --stdio");
    let client = ().serve(transport).await.expect("initialize over stdio");
    let info = client.peer_info().expect("server info");
    assert_eq!(info.server_info.as_ref().unwrap().name, "sophia-gateway");

    eventually(
        "echo is listed over stdio",
        Duration::from_secs(10),
        || async {
            let tools = client.list_all_tools().await.ok()?;
            tools.iter().any(|t| t.name == "echo").then_some(())
        },
    )
    .await;
    let result = client
        .call_tool(
            CallToolRequestParams::new("echo")
                .with_arguments(json!({"text": "over stdio"}).as_object().cloned().unwrap()),
        )
        .await
        .unwrap();
    assert_eq!(result.content[0].as_text().unwrap().text, "over stdio");
    client.cancel().await.unwrap();
}

/// Reads stdout lines until one is the response with `id`.
async fn response_to(
    lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    id: i64,
    all: &mut Vec<String>,
) -> Value {
    loop {
        let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
            .await
            .expect("a line within 10 s")
            .expect("stdout readable")
            .expect("stdout still open");
        all.push(line.clone());
        let v: Value = serde_json::from_str(&line).expect("stdout carries only JSON-RPC");
        if v["id"] == id {
            return v;
        }
    }
}

#[tokio::test]
async fn stdout_carries_only_protocol_and_garbage_input_does_not_kill_the_session() {
    let mut mesh = Mesh::without_gateway();
    mesh.worker(echo_worker::echo_worker()).await;
    let mut child = gateway_command(&mesh.nats.url())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();

    let send = |v: Value| format!("{v}\n");
    stdin
        .write_all(
            send(
                json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "raw", "version": "0"}}}),
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let init = response_to(&mut lines, 1, &mut seen).await;
    assert_eq!(init["result"]["protocolVersion"], "2025-06-18");
    stdin
        .write_all(
            send(json!({"jsonrpc": "2.0", "method": "notifications/initialized"})).as_bytes(),
        )
        .await
        .unwrap();

    // Not JSON at all; then calls until the worker is discovered: the
    // session survives the garbage.
    stdin.write_all(b"this is not json\n").await.unwrap();
    let mut answer = None;
    for id in 2..100 {
        let call = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
            "params": {"name": "echo", "arguments": {"text": "after garbage"}}});
        stdin.write_all(send(call).as_bytes()).await.unwrap();
        let reply = response_to(&mut lines, id, &mut seen).await;
        answer = reply["result"]["content"][0]["text"]
            .as_str()
            .map(str::to_owned);
        if answer.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(answer.as_deref(), Some("after garbage"));

    // Logs went to stderr (RUST_LOG=debug makes sure there are some).
    drop(stdin);
    let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
    let mut logged = 0;
    while let Ok(Ok(Some(_))) =
        tokio::time::timeout(Duration::from_secs(1), stderr.next_line()).await
    {
        logged += 1;
    }
    assert!(logged > 0, "logs are written to stderr");
    assert!(
        seen.iter()
            .all(|l| serde_json::from_str::<Value>(l).is_ok())
    );
}
