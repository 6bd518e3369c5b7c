//! Detached runs (MCP tasks): a run's durable record on JetStream KV
//! ([`crate::store::JOBS_BUCKET`]), shared by every replica, in the shape of
//! [`sophia_proto::JobReport`] (with the run's own fields beside it).
//!
//! - **Who runs it.** The replica driving the run is its `owner` and renews
//!   `heartbeat_ms` every [`HEARTBEAT`] (with compare-and-swap, as every
//!   write here is). A running record whose heartbeat is older than
//!   [`STALE_AFTER`] belongs to a replica that died: whoever reads it (the
//!   status tool, on any replica) ends it `failed`, so no run reports
//!   `running` forever. (Pulumi's jobs lease a stack lock instead; a run
//!   locks nothing, so its lease lives in its own record.)
//! - **Cancel from anywhere.** A cancel sets `cancel_requested`; the owner
//!   reads it at its next heartbeat and cancels the run's token, which the
//!   loop checks between steps and which ends its model and tool calls.
//! - **Waiting for a person.** A run that reaches a destructive tool call
//!   pauses (a [`crate::run::PendingAction`], as for `agno_confirm`); its
//!   record becomes `input_required` with the question, and has no owner
//!   until the answer resumes it on some replica.
//!
//! Design note: the lease and heartbeat are constants rather than settings:
//! a minute of silence is far beyond a replica's pauses, and a cancel is
//! seen within a second.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sophia_kit::kv::KvErrorKind;
use sophia_proto::{JobPhase, JobQuestion};

use crate::agent::now_ms;
use crate::store::{Store, StoreError, valid_id};

/// How often a run's owner renews its lease and reads cancel requests.
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// After how long without a heartbeat a run's owner counts as dead.
pub const STALE_AFTER: Duration = Duration::from_secs(60);

/// What a run whose replica stopped ends with.
const DEAD_OWNER: &str = "the agno-worker replica running this run stopped (its lease expired); \
     the steps it took are in the record; run the agent again to go on";

/// A detached run's record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunJob {
    /// The job id.
    pub id: String,
    /// Where it is.
    pub state: JobPhase,
    /// The agent.
    pub agent_id: String,
    /// Its type.
    pub agent_type: String,
    /// Who started it (the caller's principal); only they follow it.
    pub started_by: String,
    /// The replica driving it; none while it waits for a person.
    #[serde(default)]
    pub owner: Option<String>,
    /// The owner's latest heartbeat (Unix ms).
    #[serde(default)]
    pub heartbeat_ms: u64,
    /// The latest step, e.g. `step 3: pulumi_preview done`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<String>,
    /// How it ended, for people (the answer, once it succeeded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The run's result once over (answer, steps, usage, ...), as
    /// `agno_run_agent` returns it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// What it asks while it waits (`input_required`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub question: Option<JobQuestion>,
    /// Who answered its latest question, and how.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<String>,
    /// Someone asked to cancel it; its owner stops it at the next heartbeat.
    #[serde(default)]
    pub cancel_requested: bool,
    /// When it started (Unix ms).
    pub started_ms: u64,
    /// When the record last changed (Unix ms).
    pub updated_ms: u64,
}

impl RunJob {
    /// A run of `agent_id` started by `principal`, owned by `owner`.
    pub fn new(id: &str, agent_id: &str, agent_type: &str, principal: &str, owner: &str) -> Self {
        let now = now_ms();
        Self {
            id: id.to_owned(),
            state: JobPhase::Running,
            agent_id: agent_id.to_owned(),
            agent_type: agent_type.to_owned(),
            started_by: principal.to_owned(),
            owner: Some(owner.to_owned()),
            heartbeat_ms: now,
            progress: None,
            message: None,
            result: None,
            question: None,
            decided_by: None,
            cancel_requested: false,
            started_ms: now,
            updated_ms: now,
        }
    }

    /// Whether it is running on an owner that stopped heartbeating.
    pub fn is_stale(&self, now: u64) -> bool {
        self.state == JobPhase::Running
            && now.saturating_sub(self.heartbeat_ms) >= STALE_AFTER.as_millis() as u64
    }

    /// As a reader should see it at `now`: a run whose owner stopped
    /// heartbeating is failed (as [`Store::job`] records it).
    pub fn as_seen(mut self, now: u64) -> Self {
        if self.is_stale(now) {
            self.end(JobPhase::Failed, DEAD_OWNER.into(), None);
        }
        self
    }

    /// Ends it in `state` with `message` (and the run's `result`).
    pub fn end(&mut self, state: JobPhase, message: String, result: Option<Value>) {
        self.state = state;
        self.message = Some(message);
        self.result = result;
        self.owner = None;
        self.question = None;
    }
}

impl Store {
    /// Stores a new run record; fails if the id is taken.
    pub async fn create_job(&self, job: &RunJob) -> Result<(), StoreError> {
        valid_id(&job.id)?;
        self.jobs.create(&job.id, job).await?;
        Ok(())
    }

    /// A run record; one that is running on a dead replica is ended
    /// `failed` first.
    pub async fn job(&self, id: &str) -> Result<Option<RunJob>, StoreError> {
        valid_id(id)?;
        let Some(job) = self.jobs.get::<RunJob>(id).await? else {
            return Ok(None);
        };
        if !job.is_stale(now_ms()) {
            return Ok(Some(job));
        }
        tracing::warn!(job = %id, owner = ?job.owner, "ending a run whose replica stopped");
        self.change_job(id, |j| {
            let stale = j.is_stale(now_ms());
            if stale {
                j.end(JobPhase::Failed, DEAD_OWNER.into(), None);
            }
            stale
        })
        .await
    }

    /// Changes a run record with `change` (which says whether it changed
    /// anything) and a compare-and-swap on the revision read, again on a
    /// conflict. Returns the record as it is now.
    pub async fn change_job(
        &self,
        id: &str,
        mut change: impl FnMut(&mut RunJob) -> bool,
    ) -> Result<Option<RunJob>, StoreError> {
        valid_id(id)?;
        for _ in 0..16 {
            let Some((mut job, revision)) = self.jobs.entry::<RunJob>(id).await? else {
                return Ok(None);
            };
            if !change(&mut job) {
                return Ok(Some(job));
            }
            job.updated_ms = now_ms();
            match self.jobs.update(id, &job, revision).await {
                Ok(_) => return Ok(Some(job)),
                Err(e) if e.kind() == KvErrorKind::Conflict => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(StoreError::Contended(id.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_reads_as_a_job_report_and_goes_stale_without_heartbeats() {
        let mut job = RunJob::new("j1", "g1", "pulumi_agent", "alice", "replica-a");
        job.progress = Some("step 1: asking default".into());
        let report: sophia_proto::JobReport =
            serde_json::from_value(serde_json::to_value(&job).unwrap()).unwrap();
        assert_eq!(report.state, JobPhase::Running);
        assert_eq!(report.progress.as_deref(), Some("step 1: asking default"));
        let later = job.heartbeat_ms + STALE_AFTER.as_millis() as u64;
        assert!(!job.is_stale(job.heartbeat_ms + 1));
        assert!(job.is_stale(later));
        job.end(JobPhase::Succeeded, "done".into(), None);
        assert!(!job.is_stale(later), "a run that is over is never stale");
        assert_eq!(job.owner, None);
    }
}
