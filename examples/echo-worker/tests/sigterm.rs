//! The example binary joins the mesh, and on SIGTERM says goodbye and exits
//! cleanly.

use std::process::Stdio;
use std::time::Duration;

use futures::StreamExt;
use sophia_proto::{Announce, Leave, subject};

#[tokio::test]
async fn the_echo_worker_binary_announces_itself_and_drains_on_sigterm() {
    let nats = sophia_tests::nats_server();
    let client = async_nats::connect(nats.url()).await.unwrap();
    let mut announces = client.subscribe(subject::REGISTRY_ANNOUNCE).await.unwrap();
    let mut leaves = client.subscribe(subject::REGISTRY_LEAVE).await.unwrap();
    client.flush().await.unwrap();

    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_echo-worker"))
        .env("NATS_URL", nats.url())
        .env("SOPHIA_HTTP_ADDR", "127.0.0.1:0")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();

    let msg = tokio::time::timeout(Duration::from_secs(20), announces.next())
        .await
        .expect("the worker announces itself")
        .unwrap();
    let announce: Announce = sophia_proto::decode(&msg.payload).unwrap();
    assert_eq!(announce.service, "echo-worker");
    assert_eq!(announce.tools[0].name, "echo");

    let pid = child.id().unwrap().to_string();
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(sent.success());

    let msg = tokio::time::timeout(Duration::from_secs(20), leaves.next())
        .await
        .expect("the worker says goodbye on SIGTERM")
        .unwrap();
    let leave: Leave = sophia_proto::decode(&msg.payload).unwrap();
    assert_eq!(leave.instance, announce.instance);
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("the worker exits after draining")
        .unwrap();
    assert!(status.success(), "clean exit: {status}");
}
