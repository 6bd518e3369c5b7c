//! No call outlives its worker. Replicas of a slow worker run as processes
//! (`src/bin/slow-worker.rs`, which logs every execution) behind an
//! in-process gateway; the test kills or freezes the replica running a call
//! and checks how the call ends, and how often the tool ran.
//!
//! Every tool here has a 60 s deadline: a call that ends with `worker_lost`
//! (rather than `timeout`) ended because the loss was noticed.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::json;
use sophia_tests::procs::{ANY_PORT, Process};
use sophia_tests::tools::{call, error_code, spawn_call, text_of, wait_for_tool};
use sophia_tests::{Mesh, eventually};

/// `n` slow-worker replicas, logging their executions to one file.
struct Replicas {
    procs: Vec<Process>,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Replicas {
    async fn start(mesh: &Mesh, n: usize) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("executions.log");
        let mut procs = Vec::new();
        for _ in 0..n {
            let env = [
                ("NATS_URL".to_owned(), mesh.nats.url()),
                ("SOPHIA_HTTP_ADDR".to_owned(), ANY_PORT.to_owned()),
                ("SLOW_WORKER_LOG".to_owned(), log.display().to_string()),
                ("SOPHIA_HEARTBEAT_MS".to_owned(), "500".to_owned()),
            ];
            let mut p = Process::spawn("slow-worker", &env);
            p.ready_at("/ready").await;
            procs.push(p);
        }
        Self {
            procs,
            log,
            _dir: dir,
        }
    }

    /// Every execution so far: `(pid, tool)`.
    fn executions(&self) -> Vec<(u32, String)> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let (pid, tool) = l.split_once(' ')?;
                Some((pid.parse().ok()?, tool.to_owned()))
            })
            .collect()
    }

    /// Waits until `count` executions have started; returns the replica
    /// running the last one.
    async fn running(&self, count: usize) -> &Process {
        let pid = eventually(
            "the call starts on a replica",
            Duration::from_secs(20),
            || async {
                let runs = self.executions();
                (runs.len() >= count).then(|| runs[count - 1].0)
            },
        )
        .await;
        self.procs
            .iter()
            .find(|p| p.pid() == Some(pid))
            .expect("a replica of this test")
    }
}

async fn mesh_with(n: usize) -> (Mesh, Replicas, sophia_tests::McpClient) {
    let mesh = Mesh::start().await;
    let replicas = Replicas::start(&mesh, n).await;
    let client = mesh.client().await;
    wait_for_tool(&client, "slow_write").await;
    (mesh, replicas, client)
}

#[tokio::test]
async fn a_read_only_call_whose_replica_is_killed_is_answered_by_another() {
    let (_mesh, replicas, client) = mesh_with(2).await;
    let pending = spawn_call(&client, "slow_read", json!({"ms": 1500}));
    let victim = replicas.running(1).await;
    let victim_pid = victim.pid().unwrap();
    victim.signal("KILL");
    let r = pending.await.unwrap();
    assert_ne!(r.is_error, Some(true), "{}", text_of(&r));
    let survivor = replicas
        .procs
        .iter()
        .find(|p| p.pid() != Some(victim_pid))
        .unwrap();
    assert_eq!(
        text_of(&r),
        format!("done by {}", survivor.pid().unwrap()),
        "the other replica answered"
    );
    let runs = replicas.executions();
    assert_eq!(runs.len(), 2, "once on each replica: {runs:?}");
}

#[tokio::test]
async fn a_call_that_is_not_idempotent_is_never_run_twice_when_its_replica_dies() {
    let (_mesh, replicas, client) = mesh_with(2).await;
    let pending = spawn_call(&client, "slow_write", json!({"ms": 30_000}));
    replicas.running(1).await.signal("KILL");
    let r = pending.await.unwrap();
    assert_eq!(
        error_code(&r).as_deref(),
        Some("worker_lost"),
        "{}",
        text_of(&r)
    );
    let text = text_of(&r);
    assert!(text.contains("may or may not have run"), "{text}");
    assert!(text.contains("its process is gone"), "{text}");
    let runs = replicas.executions();
    assert_eq!(runs.len(), 1, "run once, never again: {runs:?}");
}

#[tokio::test]
async fn a_frozen_replica_is_given_up_on_after_three_missed_checks() {
    let (_mesh, replicas, client) = mesh_with(1).await;
    let pending = spawn_call(&client, "slow_write", json!({"ms": 30_000}));
    let frozen = replicas.running(1).await;
    frozen.signal("STOP");
    let r = pending.await.unwrap();
    frozen.signal("CONT");
    assert_eq!(
        error_code(&r).as_deref(),
        Some("worker_lost"),
        "{}",
        text_of(&r)
    );
    assert!(
        text_of(&r).contains("stopped answering (3 liveness checks missed"),
        "{}",
        text_of(&r)
    );
    assert_eq!(replicas.executions().len(), 1);
}

#[tokio::test]
async fn calls_in_flight_when_nats_dies_end_with_worker_lost() {
    let (mut mesh, replicas, client) = mesh_with(1).await;
    let pending = spawn_call(&client, "slow_write", json!({"ms": 30_000}));
    replicas.running(1).await;
    mesh.nats.stop();
    let r = pending.await.unwrap();
    assert_eq!(
        error_code(&r).as_deref(),
        Some("worker_lost"),
        "{}",
        text_of(&r)
    );
    assert!(
        text_of(&r).contains("connection to the bus (NATS) was lost"),
        "{}",
        text_of(&r)
    );
    mesh.nats.restart();
}

#[tokio::test]
async fn a_draining_replica_still_finishes_its_calls() {
    let (_mesh, replicas, client) = mesh_with(1).await;
    let pending = spawn_call(&client, "slow_write", json!({"ms": 2_500}));
    let draining = replicas.running(1).await;
    let pid = draining.pid().unwrap();
    draining.signal("TERM");
    let r = pending.await.unwrap();
    assert_eq!(text_of(&r), format!("done by {pid}"), "drained, not lost");
    assert_eq!(replicas.executions().len(), 1);
}

#[tokio::test]
async fn the_fault_workers_calls_run_normally() {
    let (_mesh, replicas, client) = mesh_with(1).await;
    let r = call(&client, "slow_write", json!({"ms": 10})).await;
    assert_eq!(
        text_of(&r),
        format!("done by {}", replicas.procs[0].pid().unwrap())
    );
}
