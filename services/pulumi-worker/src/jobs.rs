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
//! - **Jobs say who.** The record keeps the principal who ran the preview a
//!   change applies and the one who confirmed it ([`Attribution`]); the
//!   change's Pulumi update carries both in its message
//!   ([`update_message`]), so the stack's own history says who, too.
//!
//! - **A preview can be turned down.** A rejection ([`JobStore::reject`])
//!   claims the preview's job id with the same `create`, as a record that
//!   is already over (`cancelled`, with `rejected_by`): whichever of the
//!   rejection and the apply writes first wins, and the other finds it.
//!
//! Heartbeats compare wall clocks across hosts; keep `stale_after` well
//! above the expected clock skew (the default is a minute).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sophia_kit::kv::{Bucket, BucketConfig, KvError, KvErrorKind};

mod record;
mod review;

pub use review::{MAX_REASON_LEN, Recent, Rejected, Rejection};

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
    /// The latest engine event while it runs (for `tasks/get`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<String>,
    /// The last few engine events recorded, oldest first (at most
    /// [`PROGRESS_KEPT`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recent_progress: Vec<String>,
    /// When it started (Unix ms).
    pub started_ms: u64,
    /// When the record last changed (Unix ms).
    pub updated_ms: u64,
    /// Someone asked to cancel it; its owner stops it at the next heartbeat.
    #[serde(default)]
    pub cancel_requested: bool,
    /// Who ran the preview this job applies (none for a refresh, which has
    /// no preview).
    #[serde(default)]
    pub previewed_by: Option<String>,
    /// Who confirmed the change (for a refresh: who started it).
    #[serde(default)]
    pub confirmed_by: Option<String>,
    /// Who turned the preview down (`pulumi_reject_preview`): such a job
    /// never ran, and its state is `cancelled`.
    ///
    /// Design note: a field rather than a new [`JobState`], so a replica of
    /// the version before reads a rejection as a cancelled job (and refuses
    /// to apply it) instead of failing on a state it does not know.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejected_by: Option<String>,
}

/// How many recent engine events a job's record keeps.
pub const PROGRESS_KEPT: usize = 5;

/// Who a job is on behalf of: the callers' principals, as the gateway
/// authenticated them (`Caller::principal`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Attribution {
    /// Who ran the preview the job applies.
    pub previewed_by: Option<String>,
    /// Who confirmed (or started) the job.
    pub confirmed_by: Option<String>,
}

impl Attribution {
    /// The attribution of a job confirmed by `principal`.
    pub fn confirmed_by(principal: &str) -> Self {
        Self {
            previewed_by: None,
            confirmed_by: recorded_principal(principal),
        }
    }

    /// The same, with the preview's author.
    pub fn previewed_by(mut self, principal: Option<&str>) -> Self {
        self.previewed_by = principal.and_then(recorded_principal);
        self
    }
}

/// A principal as jobs and previews record it: printable, at most
/// [`MAX_PRINCIPAL_LEN`] characters; none if empty.
pub fn recorded_principal(principal: &str) -> Option<String> {
    let clean: String = principal
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_PRINCIPAL_LEN)
        .collect();
    (!clean.is_empty()).then_some(clean)
}

/// The longest principal a job records.
pub const MAX_PRINCIPAL_LEN: usize = 128;

/// How a Pulumi update's message starts when a job ran it.
const MESSAGE_PREFIX: &str = "sophia job ";

/// The message of job `id`'s Pulumi update (`up --message`, shown by
/// `stack history`): the job, the operation, and who previewed and
/// confirmed it, e.g. `sophia job 3f2a...: update previewed by alice,
/// confirmed by bob`.
pub fn update_message(id: &str, operation: &str, by: &Attribution) -> String {
    let confirmed = by.confirmed_by.as_deref().unwrap_or("unknown");
    match by.previewed_by.as_deref() {
        Some(previewed) => format!(
            "{MESSAGE_PREFIX}{id}: {operation} previewed by {previewed}, confirmed by {confirmed}"
        ),
        None => format!("{MESSAGE_PREFIX}{id}: {operation} by {confirmed}"),
    }
}

/// The job id in a Pulumi update's message, if a job ran the update.
pub fn job_of_message(message: &str) -> Option<&str> {
    let (id, _) = message.strip_prefix(MESSAGE_PREFIX)?.split_once(':')?;
    valid(id).ok().map(|()| id)
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
    /// The job store (JetStream KV) failed; its kind says whether it was
    /// unreachable or holds a record this version cannot read.
    #[error("job store: {0}")]
    Store(#[from] KvError),
}

/// What a replica that stopped heartbeating leaves its job with.
const DEAD_OWNER: &str = "the worker running this job stopped; the stack may need `pulumi refresh`";

/// Now, in Unix milliseconds.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
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
    jobs: Bucket,
    locks: Bucket,
    instance: String,
    stale_after: Duration,
}

impl JobStore {
    /// Opens (creating if needed) the buckets, as replica `instance`.
    pub async fn open(
        client: async_nats::Client,
        instance: String,
        stale_after: Duration,
    ) -> Result<Self, JobError> {
        let jobs = BucketConfig::new(JOBS_BUCKET, "Sophia Mesh Pulumi jobs");
        let locks = BucketConfig::new(LOCKS_BUCKET, "Sophia Mesh Pulumi stack locks");
        Ok(Self {
            jobs: Bucket::open(&client, jobs).await?,
            locks: Bucket::open(&client, locks).await?,
            instance,
            stale_after,
        })
    }

    /// A job's record.
    pub async fn get(&self, id: &str) -> Result<Option<Job>, JobError> {
        valid(id)?;
        Ok(self.jobs.get(id).await?)
    }

    async fn fail_job(&self, id: &str, message: &str) -> Result<(), JobError> {
        if let Some(mut job) = self.get(id).await?
            && job.state == JobState::Running
        {
            job.state = JobState::Failed;
            job.message = Some(message.to_owned());
            job.updated_ms = now_ms();
            self.jobs.put(&job.id, &job).await?;
        }
        Ok(())
    }

    /// This replica's lock on `job_id`, as of now.
    fn lock_for(&self, job_id: &str) -> Lock {
        Lock {
            job: job_id.to_owned(),
            owner: self.instance.clone(),
            heartbeat_ms: now_ms(),
        }
    }

    /// Whether a lock's holder stopped heartbeating.
    fn is_stale(&self, lock: &Lock) -> bool {
        now_ms().saturating_sub(lock.heartbeat_ms) >= self.stale_after.as_millis() as u64
    }

    /// Takes the stack's lock for `job_id` (taking over a stale one).
    async fn lock(&self, key: &str, job_id: &str) -> Result<u64, JobError> {
        let mine = self.lock_for(job_id);
        match self.locks.create(key, &mine).await {
            Ok(rev) => return Ok(rev),
            Err(e) if e.kind() == KvErrorKind::Conflict => {}
            Err(e) => return Err(e.into()),
        }
        let Some((held, revision)) = self.locks.entry::<Lock>(key).await? else {
            // Released between the create and the read.
            return Err(KvError::new(KvErrorKind::Conflict, self.locks.name(), Some(key)).into());
        };
        let busy = || JobError::Locked {
            stack: key.to_owned(),
            job: held.job.clone(),
            owner: held.owner.clone(),
        };
        if !self.is_stale(&held) {
            return Err(busy());
        }
        // The holder stopped heartbeating: take over, on the revision we read.
        let rev = self
            .locks
            .update(key, &mine, revision)
            .await
            .map_err(|_| busy())?;
        self.fail_job(&held.job, DEAD_OWNER).await?;
        Ok(rev)
    }

    /// Starts job `id` on `project`/`stack` on behalf of `by`: takes the
    /// stack's lock, then creates the job record. Fails if the stack is
    /// busy or the job exists.
    pub async fn start(
        &self,
        id: &str,
        project: &str,
        stack: &str,
        operation: &str,
        by: &Attribution,
    ) -> Result<RunningJob, JobError> {
        for name in [id, project, stack] {
            valid(name)?;
        }
        let key = format!("{project}.{stack}");
        let rev = self.lock(&key, id).await?;
        let job = Job {
            previewed_by: by.previewed_by.clone(),
            confirmed_by: by.confirmed_by.clone(),
            ..Job::claimed(
                id,
                project,
                stack,
                operation,
                &self.instance,
                JobState::Running,
            )
        };
        match self.jobs.create(id, &job).await {
            Ok(_) => Ok(RunningJob {
                id: id.to_owned(),
                lock_key: key,
                lock_revision: rev,
            }),
            Err(e) => {
                let _ = self.locks.delete_at(&key, rev).await;
                if e.kind() != KvErrorKind::Conflict {
                    return Err(e.into());
                }
                let existing = self.get(id).await?.ok_or(e)?;
                Err(JobError::AlreadyStarted(Box::new(existing)))
            }
        }
    }

    /// Records `line` as a running job's latest progress. Best effort: a
    /// record changed meanwhile (a cancel request, the outcome) wins.
    pub async fn note_progress(&self, id: &str, line: &str) -> Result<(), JobError> {
        valid(id)?;
        let Some((mut job, revision)) = self.jobs.entry::<Job>(id).await? else {
            return Ok(());
        };
        if job.state != JobState::Running {
            return Ok(());
        }
        job.progress = Some(line.to_owned());
        job.recent_progress.push(line.to_owned());
        let over = job.recent_progress.len().saturating_sub(PROGRESS_KEPT);
        job.recent_progress.drain(..over);
        job.updated_ms = now_ms();
        match self.jobs.update(id, &job, revision).await {
            Err(e) if e.kind() != KvErrorKind::Conflict => Err(e.into()),
            _ => Ok(()),
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
            self.jobs.put(&job.id, &job).await?;
        }
        Ok(Some(job))
    }

    /// Renews the lock; fails with [`JobError::LockLost`] if another replica
    /// took it over.
    pub async fn heartbeat(&self, job: &mut RunningJob) -> Result<(), JobError> {
        let mine = self.lock_for(&job.id);
        job.lock_revision = self
            .locks
            .update(&job.lock_key, &mine, job.lock_revision)
            .await
            .map_err(|e| match e.kind() {
                KvErrorKind::Conflict => JobError::LockLost(job.lock_key.clone()),
                _ => e.into(),
            })?;
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
            self.jobs.put(&record.id, &record).await?;
        }
        self.locks
            .delete_at(&job.lock_key, job.lock_revision)
            .await?;
        Ok(())
    }

    /// Marks the jobs of replicas that stopped heartbeating as failed and
    /// frees their stacks. Returns the jobs it failed.
    pub async fn reap(&self) -> Result<Vec<String>, JobError> {
        let mut reaped = Vec::new();
        for key in self.locks.keys().await? {
            let (held, revision) = match self.locks.entry::<Lock>(&key).await {
                Ok(Some(entry)) => entry,
                // Released meanwhile, or not a lock this version reads.
                Ok(None) => continue,
                Err(e) if e.kind() == KvErrorKind::Corrupt => continue,
                Err(e) => return Err(e.into()),
            };
            // Only if it is stale and nobody renewed it since we read it.
            if !self.is_stale(&held) || self.locks.delete_at(&key, revision).await.is_err() {
                continue;
            }
            self.fail_job(&held.job, DEAD_OWNER).await?;
            tracing::warn!(job = %held.job, stack = %key, owner = %held.owner, "reaped a job whose worker stopped");
            reaped.push(held.job);
        }
        Ok(reaped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_update_message_names_the_job_and_both_principals() {
        let by = Attribution::confirmed_by("bob").previewed_by(Some("alice"));
        let m = update_message("3f2a", "update", &by);
        assert_eq!(
            m,
            "sophia job 3f2a: update previewed by alice, confirmed by bob"
        );
        assert_eq!(job_of_message(&m), Some("3f2a"));
        let refresh = update_message("r1", "refresh", &Attribution::confirmed_by("carol"));
        assert_eq!(refresh, "sophia job r1: refresh by carol");
    }

    #[test]
    fn only_a_jobs_own_message_names_a_job() {
        assert_eq!(job_of_message(""), None);
        assert_eq!(job_of_message("deploying v2"), None);
        assert_eq!(job_of_message("sophia job a b: x"), None, "not a job id");
        assert_eq!(job_of_message("sophia job ../x: x"), None, "not a key");
    }

    #[test]
    fn principals_are_recorded_printable_and_bounded() {
        let by = Attribution::confirmed_by("bob\n\u{7}").previewed_by(Some(""));
        assert_eq!(by.confirmed_by.as_deref(), Some("bob"));
        assert_eq!(by.previewed_by, None, "an empty principal is none");
        let long = "x".repeat(1000);
        let by = Attribution::confirmed_by(&long);
        assert_eq!(by.confirmed_by.map(|p| p.len()), Some(MAX_PRINCIPAL_LEN));
    }
}
