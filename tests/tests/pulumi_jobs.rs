//! Pulumi jobs and stack locks on JetStream KV, across replicas (two job
//! stores on one real nats-server stand for two pulumi-worker replicas).

use std::time::Duration;

use pulumi_worker::jobs::{Attribution, JobError, JobState, JobStore, Rejected, Rejection};
use sophia_tests::{NatsServer, eventually, nats_server};

async fn replica(nats: &NatsServer, name: &str, stale_after: Duration) -> JobStore {
    let client = async_nats::connect(nats.url()).await.unwrap();
    JobStore::open(client, name.to_owned(), stale_after)
        .await
        .unwrap()
}

const LONG: Duration = Duration::from_secs(60);

/// Jobs previewed by alice and confirmed by bob.
fn by() -> Attribution {
    Attribution::confirmed_by("bob").previewed_by(Some("alice"))
}

#[tokio::test]
async fn only_one_replica_runs_an_operation_on_a_stack() {
    let nats = nats_server();
    let (a, b) = (
        replica(&nats, "replica-a", LONG).await,
        replica(&nats, "replica-b", LONG).await,
    );

    let running = a.start("job-1", "app", "dev", "up", &by()).await.unwrap();
    match b.start("job-2", "app", "dev", "up", &by()).await {
        Err(JobError::Locked { job, owner, .. }) => {
            assert_eq!((job.as_str(), owner.as_str()), ("job-1", "replica-a"))
        }
        other => panic!("expected Locked, got {other:?}"),
    }
    // Another stack is free.
    let other = b.start("job-3", "app", "prod", "up", &by()).await.unwrap();
    b.finish(other, JobState::Succeeded, None, None)
        .await
        .unwrap();

    a.finish(
        running,
        JobState::Succeeded,
        Some("1 create".into()),
        Some(serde_json::json!({"create": 1})),
    )
    .await
    .unwrap();
    let job = b.get("job-1").await.unwrap().unwrap();
    assert_eq!(job.state, JobState::Succeeded);
    assert_eq!(job.summary.unwrap()["create"], 1);
    // Who asked for it stays on the record, whichever replica reads it.
    assert_eq!(job.previewed_by.as_deref(), Some("alice"));
    assert_eq!(job.confirmed_by.as_deref(), Some("bob"));
    // Released: the next job on the stack may run.
    let next = b.start("job-2", "app", "dev", "up", &by()).await.unwrap();
    b.finish(next, JobState::Succeeded, None, None)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_job_never_runs_twice_on_any_replica() {
    let nats = nats_server();
    let (a, b) = (
        replica(&nats, "replica-a", LONG).await,
        replica(&nats, "replica-b", LONG).await,
    );
    let running = a
        .start("preview-42", "app", "dev", "up", &by())
        .await
        .unwrap();
    a.finish(running, JobState::Succeeded, None, None)
        .await
        .unwrap();
    for store in [&a, &b] {
        match store.start("preview-42", "app", "dev", "up", &by()).await {
            Err(JobError::AlreadyStarted(job)) => assert_eq!(job.state, JobState::Succeeded),
            other => panic!("expected AlreadyStarted, got {other:?}"),
        }
    }
    // Refusing the duplicate did not leave the stack locked.
    let other = b
        .start("preview-43", "app", "dev", "up", &by())
        .await
        .unwrap();
    b.finish(other, JobState::Succeeded, None, None)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_dead_replicas_job_is_failed_and_its_stack_freed() {
    let nats = nats_server();
    let stale = Duration::from_millis(300);
    let (a, b) = (
        replica(&nats, "replica-a", stale).await,
        replica(&nats, "replica-b", stale).await,
    );
    let mut orphan = a.start("job-1", "app", "dev", "up", &by()).await.unwrap();
    // replica-a stops heartbeating (it "died"); replica-b's reaper notices.
    let reaped = eventually(
        "the stale lock is reaped",
        Duration::from_secs(10),
        || async {
            let r = b.reap().await.unwrap();
            (!r.is_empty()).then_some(r)
        },
    )
    .await;
    assert_eq!(reaped, ["job-1"]);
    let job = b.get("job-1").await.unwrap().unwrap();
    assert_eq!(job.state, JobState::Failed);
    assert!(
        job.message
            .unwrap()
            .contains("worker running this job stopped")
    );
    // The stack is free again, and a zombie replica-a cannot carry on.
    let next = b.start("job-2", "app", "dev", "up", &by()).await.unwrap();
    assert!(matches!(
        a.heartbeat(&mut orphan).await,
        Err(JobError::LockLost(_))
    ));
    b.finish(next, JobState::Succeeded, None, None)
        .await
        .unwrap();
}

#[tokio::test]
async fn heartbeats_keep_a_long_job_alive() {
    let nats = nats_server();
    let stale = Duration::from_millis(400);
    let (a, b) = (
        replica(&nats, "replica-a", stale).await,
        replica(&nats, "replica-b", stale).await,
    );
    let mut running = a.start("job-1", "app", "dev", "up", &by()).await.unwrap();
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        a.heartbeat(&mut running).await.unwrap();
        assert!(
            b.reap().await.unwrap().is_empty(),
            "a live job is never reaped"
        );
    }
    assert!(matches!(
        b.start("job-2", "app", "dev", "up", &by()).await,
        Err(JobError::Locked { .. })
    ));
    a.finish(running, JobState::Succeeded, None, None)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_stale_lock_is_taken_over_by_the_next_start() {
    let nats = nats_server();
    let stale = Duration::from_millis(200);
    let (a, b) = (
        replica(&nats, "replica-a", stale).await,
        replica(&nats, "replica-b", stale).await,
    );
    let _orphan = a.start("job-1", "app", "dev", "up", &by()).await.unwrap();
    let next = eventually("the lock goes stale", Duration::from_secs(10), || async {
        b.start("job-2", "app", "dev", "up", &by()).await.ok()
    })
    .await;
    assert_eq!(
        b.get("job-1").await.unwrap().unwrap().state,
        JobState::Failed
    );
    b.finish(next, JobState::Succeeded, None, None)
        .await
        .unwrap();
}

#[tokio::test]
async fn names_that_cannot_be_keys_are_refused() {
    let nats = nats_server();
    let a = replica(&nats, "replica-a", LONG).await;
    assert!(matches!(
        a.start("job 1", "app", "dev", "up", &by()).await,
        Err(JobError::InvalidName(_))
    ));
    assert!(matches!(
        a.start("job-1", "app", "dev/*", "up", &by()).await,
        Err(JobError::InvalidName(_))
    ));
}

fn rejection(id: &str) -> Rejection {
    Rejection {
        id: id.to_owned(),
        project: "app".into(),
        stack: "dev".into(),
        operation: "up".into(),
        previewed_by: Some("alice".into()),
        by: "carol".into(),
        reason: Some("not now".into()),
    }
}

#[tokio::test]
async fn a_rejection_and_an_apply_of_one_preview_on_two_replicas_never_both_win() {
    let nats = nats_server();
    let (a, b) = (
        replica(&nats, "replica-a", LONG).await,
        replica(&nats, "replica-b", LONG).await,
    );
    for round in 0..10 {
        let id = format!("preview-{round}");
        let (no, yes) = (rejection(&id), by());
        let (rejected, started) =
            tokio::join!(a.reject(&no), b.start(&id, "app", "dev", "up", &yes));
        match (rejected, started) {
            (Ok(Rejected::Now(job)), Err(JobError::AlreadyStarted(seen))) => {
                assert_eq!(job, *seen, "the apply finds the rejection");
                assert_eq!(job.rejected_by.as_deref(), Some("carol"));
            }
            (Err(JobError::AlreadyStarted(running)), Ok(job)) => {
                assert_eq!(running.state, JobState::Running);
                b.finish(job, JobState::Succeeded, None, None)
                    .await
                    .unwrap();
            }
            other => panic!("round {round}: exactly one wins, got {other:?}"),
        }
    }
    // Rejecting twice: the first rejection stands.
    let before = a.reject(&rejection("preview-again")).await.unwrap();
    let mut other = rejection("preview-again");
    other.by = "dave".into();
    match b.reject(&other).await.unwrap() {
        Rejected::Before(job) => assert_eq!(job.rejected_by.as_deref(), Some("carol")),
        Rejected::Now(_) => panic!("rejected twice: {before:?}"),
    }
}

#[tokio::test]
async fn the_most_recent_jobs_are_listed_newest_first_within_the_limit() {
    let nats = nats_server();
    let a = replica(&nats, "replica-a", LONG).await;
    for i in 0..8 {
        let job = a
            .start(&format!("job-{i}"), "app", "dev", "up", &by())
            .await
            .unwrap();
        a.finish(job, JobState::Succeeded, None, None)
            .await
            .unwrap();
    }
    // A record this version cannot read is skipped and counted.
    let client = async_nats::connect(nats.url()).await.unwrap();
    let kv = async_nats::jetstream::new(client)
        .get_key_value(pulumi_worker::jobs::JOBS_BUCKET)
        .await
        .unwrap();
    kv.put("job-garbled", "not json".into()).await.unwrap();

    let recent = a.recent(4).await.unwrap();
    let ids: Vec<&str> = recent.jobs.iter().map(|j| j.id.as_str()).collect();
    assert_eq!(ids, ["job-7", "job-6", "job-5"]);
    assert_eq!(recent.skipped, 1);
    assert_eq!(a.recent(100).await.unwrap().jobs.len(), 8);
}
