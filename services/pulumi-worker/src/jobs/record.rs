//! How a job record begins: claimed for a run ([`super::JobStore::start`])
//! or for a rejection ([`super::JobStore::reject`]).

use super::{Job, JobState, now_ms};

impl Job {
    /// A record claiming job `id` on `project`/`stack` for `owner`, in
    /// `state`, begun now: nothing has run, been recorded or been
    /// attributed yet.
    pub(super) fn claimed(
        id: &str,
        project: &str,
        stack: &str,
        operation: &str,
        owner: &str,
        state: JobState,
    ) -> Self {
        let now = now_ms();
        Self {
            id: id.to_owned(),
            project: project.to_owned(),
            stack: stack.to_owned(),
            operation: operation.to_owned(),
            state,
            owner: owner.to_owned(),
            message: None,
            summary: None,
            progress: None,
            recent_progress: Vec::new(),
            started_ms: now,
            updated_ms: now,
            cancel_requested: false,
            previewed_by: None,
            confirmed_by: None,
            rejected_by: None,
        }
    }
}
