//! Durable jobs and stack locks on JetStream KV, shared by every replica.
//!
//! - **One operation per stack.** Before running, a replica takes the stack's
//!   lock with a KV `create` (only one can succeed), then keeps it alive with
//!   compare-and-swap heartbeats. A lock whose heartbeat is older than
//!   `stale_after` belongs to a replica that died: any replica may take it
//!   over (CAS on the revision it read), marking that job failed.
//! - **A job never runs twice.** The job record is created with a KV
//!   `create` keyed by the job id (for an `up`, the id of the preview it
//!   applies), so a second start of the same job, on any replica, finds the
//!   first one instead.
//! - **Jobs outlive requests.** The record holds the state, message and
//!   summary, so a caller can fetch the result by job id later, from any
//!   gateway or replica.
//!
//! Heartbeats compare wall clocks across hosts; keep `stale_after` well
//! above the expected clock skew (the default is a minute).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::{self, kv};
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The bucket of job records.
pub const JOBS_BUCKET: &str = "sophia_pulumi_jobs";
/// The bucket of stack locks.
pub const LOCKS_BUCKET: &str = "sophia_pulumi_locks";

/// Where a job is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Running on its owner.
    Running,
    /// Finished successfully.
    Succeeded,
    /// Finished with an error, or its worker died.
    Failed,
    /// Stopped by a cancel.
    Cancelled,
}

/// A job's record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// Its id.
    pub id: String,
    /// The Pulumi project.
    pub project: String,
    /// The stack.
    pub stack: String,
    /// `up`, `destroy`, ...
    pub operation: String,
    /// Where it is.
    pub state: JobState,
    /// The replica running it.
    pub owner: String,
    /// What happened, for people.
    #[serde(default)]
    pub message: Option<String>,
    /// The operation's summary, when finished.
    #[serde(default)]
    pub summary: Option<Value>,
    /// When it started (Unix ms).
    pub started_ms: u64,
    /// When the record last changed (Unix ms).
    pub updated_ms: u64,
    /// Someone asked to cancel it; its owner stops it at the next heartbeat.
    #[serde(default)]
    pub cancel_requested: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Lock {
    job: String,
    owner: String,
    heartbeat_ms: u64,
}

/// Why a job could not start or continue.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// Another job holds the stack.
    #[error(
        "stack {stack} is busy: job {job} is running on it (started by {owner}); wait for it, \
         or cancel it, then try again"
    )]
    Locked {
        /// The stack key.
        stack: String,
        /// The running job.
        job: String,
        /// Its replica.
        owner: String,
    },
    /// This job was started before; it is not run again.
    #[error("job {} was already started ({:?}); it is not run twice", .0.id, .0.state)]
    AlreadyStarted(Box<Job>),
    /// The lock was taken over (this replica was thought dead).
    #[error("the lock on stack {0} was taken over by another replica; stopping")]
    LockLost(String),
    /// A project or stack name that cannot be a key.
    #[error("invalid name {0:?}: use letters, digits, '-', '_' and '.'")]
    InvalidName(String),
    /// JetStream failed.
    #[error("job store unavailable: {0}")]
    Store(String),
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn store_err(e: impl std::fmt::Display) -> JobError {
    JobError::Store(e.to_string())
}

fn valid(name: &str) -> Result<(), JobError> {
    if !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        Ok(())
    } else {
        Err(JobError::InvalidName(name.to_owned()))
    }
}

/// A job this replica started and holds the lock for.
#[derive(Debug)]
pub struct RunningJob {
    /// The job id.
    pub id: String,
    lock_key: String,
    lock_revision: u64,
}

/// The job and lock store.
#[derive(Clone)]
pub struct JobStore {
    jobs: kv::Store,
    locks: kv::Store,
    instance: String,
    stale_after: Duration,
}

async fn bucket(
    js: &jetstream::Context,
    name: &str,
    description: &str,
) -> Result<kv::Store, JobError> {
    match js.get_key_value(name).await {
        Ok(store) => Ok(store),
        Err(_) => js
            .create_key_value(kv::Config {
                bucket: name.to_owned(),
                description: description.to_owned(),
                history: 1,
                num_replicas: sophia_proto::payload::replicas(&js.client()),
                ..Default::default()
            })
            .await
            .map_err(store_err),
    }
}

impl JobStore {
    /// Opens (creating if needed) the buckets, as replica `instance`.
    pub async fn open(
        client: async_nats::Client,
        instance: String,
        stale_after: Duration,
    ) -> Result<Self, JobError> {
        let js = jetstream::new(client);
        Ok(Self {
            jobs: bucket(&js, JOBS_BUCKET, "Sophia Mesh Pulumi jobs").await?,
            locks: bucket(&js, LOCKS_BUCKET, "Sophia Mesh Pulumi stack locks").await?,
            instance,
            stale_after,
        })
    }

    async fn put_job(&self, job: &Job) -> Result<(), JobError> {
        let bytes = serde_json::to_vec(job).map_err(store_err)?;
        self.jobs
            .put(&job.id, bytes.into())
            .await
            .map_err(store_err)?;
        Ok(())
    }

    /// A job's record.
    pub async fn get(&self, id: &str) -> Result<Option<Job>, JobError> {
        valid(id)?;
        let raw = self.jobs.get(id).await.map_err(store_err)?;
        Ok(raw.and_then(|b| serde_json::from_slice(&b).ok()))
    }

    async fn fail_job(&self, id: &str, message: &str) -> Result<(), JobError> {
        if let Some(mut job) = self.get(id).await?
            && job.state == JobState::Running
        {
            job.state = JobState::Failed;
            job.message = Some(message.to_owned());
            job.updated_ms = now_ms();
            self.put_job(&job).await?;
        }
        Ok(())
    }

    /// Takes the stack's lock for `job_id` (taking over a stale one).
    async fn lock(&self, key: &str, job_id: &str) -> Result<u64, JobError> {
        let mine = serde_json::to_vec(&Lock {
            job: job_id.to_owned(),
            owner: self.instance.clone(),
            heartbeat_ms: now_ms(),
        })
        .map_err(store_err)?;
        match self.locks.create(key, mine.clone().into()).await {
            Ok(rev) => return Ok(rev),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {}
            Err(e) => return Err(store_err(e)),
        }
        let entry = self.locks.entry(key).await.map_err(store_err)?;
        let Some(entry) = entry else {
            return Err(JobError::Store(
                "the lock vanished while being read; try again".into(),
            ));
        };
        let held: Lock = serde_json::from_slice(&entry.value).map_err(store_err)?;
        if now_ms().saturating_sub(held.heartbeat_ms) < self.stale_after.as_millis() as u64 {
            return Err(JobError::Locked {
                stack: key.to_owned(),
                job: held.job,
                owner: held.owner,
            });
        }
        // The holder stopped heartbeating: take over, on the revision we read.
        let rev = self
            .locks
            .update(key, mine.into(), entry.revision)
            .await
            .map_err(|_| JobError::Locked {
                stack: key.to_owned(),
                job: held.job.clone(),
                owner: held.owner.clone(),
            })?;
        self.fail_job(
            &held.job,
            "the worker running this job stopped; the stack may need `pulumi refresh`",
        )
        .await?;
        Ok(rev)
    }

    /// Starts job `id` on `project`/`stack`: takes the stack's lock, then
    /// creates the job record. Fails if the stack is busy or the job exists.
    pub async fn start(
        &self,
        id: &str,
        project: &str,
        stack: &str,
        operation: &str,
    ) -> Result<RunningJob, JobError> {
        for name in [id, project, stack] {
            valid(name)?;
        }
        let key = format!("{project}.{stack}");
        let rev = self.lock(&key, id).await?;
        let now = now_ms();
        let job = Job {
            id: id.to_owned(),
            project: project.to_owned(),
            stack: stack.to_owned(),
            operation: operation.to_owned(),
            state: JobState::Running,
            owner: self.instance.clone(),
            message: None,
            summary: None,
            started_ms: now,
            updated_ms: now,
            cancel_requested: false,
        };
        let bytes = serde_json::to_vec(&job).map_err(store_err)?;
        match self.jobs.create(id, bytes.into()).await {
            Ok(_) => Ok(RunningJob {
                id: id.to_owned(),
                lock_key: key,
                lock_revision: rev,
            }),
            Err(e) => {
                let _ = self.locks.delete_expect_revision(&key, Some(rev)).await;
                if e.kind() == kv::CreateErrorKind::AlreadyExists {
                    let existing = self
                        .get(id)
                        .await?
                        .ok_or_else(|| store_err("job record unreadable"))?;
                    Err(JobError::AlreadyStarted(Box::new(existing)))
                } else {
                    Err(store_err(e))
                }
            }
        }
    }

    /// Asks for a running job to be cancelled, whichever replica runs it.
    /// Returns the job as it is now.
    pub async fn request_cancel(&self, id: &str) -> Result<Option<Job>, JobError> {
        let Some(mut job) = self.get(id).await? else {
            return Ok(None);
        };
        if job.state == JobState::Running && !job.cancel_requested {
            job.cancel_requested = true;
            job.updated_ms = now_ms();
            self.put_job(&job).await?;
        }
        Ok(Some(job))
    }

    /// Renews the lock; fails with [`JobError::LockLost`] if another replica
    /// took it over.
    pub async fn heartbeat(&self, job: &mut RunningJob) -> Result<(), JobError> {
        let mine = serde_json::to_vec(&Lock {
            job: job.id.clone(),
            owner: self.instance.clone(),
            heartbeat_ms: now_ms(),
        })
        .map_err(store_err)?;
        job.lock_revision = self
            .locks
            .update(&job.lock_key, mine.into(), job.lock_revision)
            .await
            .map_err(|_| JobError::LockLost(job.lock_key.clone()))?;
        Ok(())
    }

    /// Records the outcome and releases the lock.
    pub async fn finish(
        &self,
        job: RunningJob,
        state: JobState,
        message: Option<String>,
        summary: Option<Value>,
    ) -> Result<(), JobError> {
        if let Some(mut record) = self.get(&job.id).await? {
            record.state = state;
            record.message = message;
            record.summary = summary;
            record.updated_ms = now_ms();
            self.put_job(&record).await?;
        }
        self.locks
            .delete_expect_revision(&job.lock_key, Some(job.lock_revision))
            .await
            .map_err(store_err)?;
        Ok(())
    }

    /// Marks the jobs of replicas that stopped heartbeating as failed and
    /// frees their stacks. Returns the jobs it failed.
    pub async fn reap(&self) -> Result<Vec<String>, JobError> {
        let keys: Vec<String> = self
            .locks
            .keys()
            .await
            .map_err(store_err)?
            .try_collect()
            .await
            .map_err(store_err)?;
        let mut reaped = Vec::new();
        for key in keys {
            let Some(entry) = self.locks.entry(&key).await.map_err(store_err)? else {
                continue;
            };
            if entry.operation != kv::Operation::Put {
                continue;
            }
            let Ok(held) = serde_json::from_slice::<Lock>(&entry.value) else {
                continue;
            };
            if now_ms().saturating_sub(held.heartbeat_ms) < self.stale_after.as_millis() as u64 {
                continue;
            }
            // Only if nobody renewed it since we read it.
            if self
                .locks
                .delete_expect_revision(&key, Some(entry.revision))
                .await
                .is_ok()
            {
                self.fail_job(
                    &held.job,
                    "the worker running this job stopped; the stack may need `pulumi refresh`",
                )
                .await?;
                tracing::warn!(job = %held.job, stack = %key, owner = %held.owner, "reaped a job whose worker stopped");
                reaped.push(held.job);
            }
        }
        Ok(reaped)
    }
}
