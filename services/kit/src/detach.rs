//! Tools that run detached, as jobs a caller follows by id (MCP's tasks
//! extension; `sophia_proto::JobTools`). The worker keeps the job where any
//! replica finds it, and names the tools that report and cancel it; the
//! gateway turns a detached start into an MCP task.

use sophia_proto::JobTools;

use crate::tool::{Call, Tool};

impl Tool {
    /// Announces that the tool can run detached: asked to
    /// ([`Call::detached`]), it starts its work as a job and answers at once
    /// with the job's `JobReport` as structured content; `status` reports
    /// that job and `cancel` stops it, both called with `{"job_id": ...}`.
    pub fn runs_as_job(mut self, status: &str, cancel: &str) -> Self {
        self.spec.jobs = Some(JobTools {
            status: status.to_owned(),
            cancel: cancel.to_owned(),
        });
        self
    }
}

impl Call {
    /// Whether the caller asked for a detached start: start the job, answer
    /// with its report at once, and let it run on.
    pub fn detached(&self) -> bool {
        self.detached
    }
}
