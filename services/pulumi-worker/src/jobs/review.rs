//! Jobs for people to follow and decide on: the most recent jobs
//! ([`JobStore::recent`]) and a preview turned down ([`JobStore::reject`]).

use std::collections::HashSet;

use sophia_kit::kv::KvErrorKind;

use super::{Job, JobError, JobState, JobStore, recorded_principal, valid};

/// The longest reason a rejection records, in characters.
pub const MAX_REASON_LEN: usize = 500;

/// A preview someone turns down.
#[derive(Clone, Debug)]
pub struct Rejection {
    /// The preview's id, which is the id of the job that would apply it.
    pub id: String,
    /// The Pulumi project.
    pub project: String,
    /// The stack.
    pub stack: String,
    /// The job's operation had it run: `up` or `destroy`.
    pub operation: String,
    /// Who ran the preview.
    pub previewed_by: Option<String>,
    /// Who turns it down (the caller's principal).
    pub by: String,
    /// Why, if they said.
    pub reason: Option<String>,
}

/// What a rejection found.
#[derive(Clone, Debug, PartialEq)]
pub enum Rejected {
    /// Rejected now: the new record.
    Now(Job),
    /// Rejected before (by whoever the record names): nothing changed.
    Before(Job),
}

/// The most recent jobs, and how many records could not be read.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Recent {
    /// Newest first.
    pub jobs: Vec<Job>,
    /// Records this version cannot read (left out).
    pub skipped: usize,
}

impl Rejection {
    /// The record of the rejection: a job that is over before it ran.
    fn record(&self, owner: &str) -> Job {
        let by = recorded_principal(&self.by);
        let who = by.as_deref().unwrap_or("unknown");
        let reason: String = (self.reason.as_deref().unwrap_or_default().chars())
            .filter(|c| !c.is_control() || *c == '\n')
            .take(MAX_REASON_LEN)
            .collect();
        let message = match reason.trim() {
            "" => format!("rejected by {who}"),
            reason => format!("rejected by {who}: {reason}"),
        };
        Job {
            message: Some(message),
            previewed_by: self.previewed_by.as_deref().and_then(recorded_principal),
            rejected_by: Some(who.to_owned()),
            ..Job::claimed(
                &self.id,
                &self.project,
                &self.stack,
                &self.operation,
                owner,
                JobState::Cancelled,
            )
        }
    }
}

impl JobStore {
    /// Turns a preview down: claims its job id with a record that is
    /// already over, so it is never applied. Atomic against an apply of the
    /// same preview on any replica (both `create` the same key): if the
    /// apply wrote first, this fails with [`JobError::AlreadyStarted`]. A
    /// preview rejected before is [`Rejected::Before`].
    pub async fn reject(&self, rejection: &Rejection) -> Result<Rejected, JobError> {
        for name in [&rejection.id, &rejection.project, &rejection.stack] {
            valid(name)?;
        }
        let record = rejection.record(&self.instance);
        match self.jobs.create(&record.id, &record).await {
            Ok(_) => Ok(Rejected::Now(record)),
            Err(e) if e.kind() == KvErrorKind::Conflict => {
                let existing = self.get(&record.id).await?.ok_or(e)?;
                if existing.rejected_by.is_some() {
                    Ok(Rejected::Before(existing))
                } else {
                    Err(JobError::AlreadyStarted(Box::new(existing)))
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The id of every job (and rejection) there is: one key listing.
    pub async fn ids(&self) -> Result<HashSet<String>, JobError> {
        Ok(self.jobs.keys().await?.into_iter().collect())
    }

    /// The `limit` most recently changed jobs, newest (by start) first. A
    /// record this version cannot read is counted in `skipped`, not failed
    /// on.
    ///
    /// Design note: the bucket lists its keys in the order their latest
    /// revision was stored, so the tail of the list is the most recently
    /// changed jobs, and only those are read (a poll costs one key listing
    /// and at most `limit` reads, however many jobs the bucket holds).
    pub async fn recent(&self, limit: usize) -> Result<Recent, JobError> {
        let keys = self.jobs.keys().await?;
        let tail = &keys[keys.len().saturating_sub(limit)..];
        let mut out = Recent::default();
        for key in tail {
            match self.jobs.get::<Job>(key).await {
                Ok(Some(job)) => out.jobs.push(job),
                Ok(None) => {} // deleted since the listing
                Err(e) if e.kind() == KvErrorKind::Corrupt => out.skipped += 1,
                Err(e) => return Err(e.into()),
            }
        }
        out.jobs
            .sort_by(|a, b| (b.started_ms, &b.id).cmp(&(a.started_ms, &a.id)));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rejection(by: &str, reason: Option<&str>) -> Rejection {
        Rejection {
            id: "p1".into(),
            project: "app".into(),
            stack: "dev".into(),
            operation: "up".into(),
            previewed_by: Some("alice".into()),
            by: by.into(),
            reason: reason.map(str::to_owned),
        }
    }

    #[test]
    fn a_rejection_is_a_cancelled_job_that_says_who_and_why() {
        let job = rejection("bob", Some("not on a Friday")).record("replica-a");
        assert_eq!(job.state, JobState::Cancelled);
        assert_eq!(job.rejected_by.as_deref(), Some("bob"));
        assert_eq!(job.previewed_by.as_deref(), Some("alice"));
        assert_eq!(job.confirmed_by, None);
        assert_eq!(
            job.message.as_deref(),
            Some("rejected by bob: not on a Friday")
        );
        let bare = rejection("", Some("  ")).record("replica-a");
        assert_eq!(bare.message.as_deref(), Some("rejected by unknown"));
        let long = rejection("bob", Some(&"x".repeat(2000))).record("r");
        assert!(long.message.unwrap().len() < MAX_REASON_LEN + 20);
    }

    #[test]
    fn a_record_of_the_version_before_reads_as_never_rejected() {
        let before = serde_json::json!({"id": "j1", "project": "app", "stack": "dev",
            "operation": "up", "state": "succeeded", "owner": "r", "message": "done",
            "summary": null, "started_ms": 1, "updated_ms": 2, "cancel_requested": false,
            "previewed_by": "alice", "confirmed_by": "bob"});
        let job: Job = serde_json::from_value(before.clone()).unwrap();
        assert_eq!(job.rejected_by, None);
        assert!(job.recent_progress.is_empty());
        assert_eq!(serde_json::to_value(&job).unwrap(), before);
    }
}
