//! Tools that run detached, as jobs a caller follows by id (MCP's tasks
//! extension; `sophia_proto::JobTools`). The worker keeps the job where any
//! replica finds it, and names the tools that report and cancel it (and,
//! for jobs that may wait for a person, answer it); the gateway turns a
//! detached start into an MCP task.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sophia_proto::{JobTools, Progress};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::tool::{Call, Tool};

/// A call's side of jobs: whether it asks for a detached start, and, for a
/// job's own call ([`Call::for_job`]), where its latest progress line goes.
#[derive(Debug, Default)]
pub(crate) struct JobSide {
    detached: bool,
    lines: Option<watch::Sender<Option<String>>>,
}

impl JobSide {
    /// A request's: detached if it asked to be.
    pub(crate) fn asked(detached: bool) -> Self {
        Self {
            detached,
            lines: None,
        }
    }
}

impl Tool {
    /// Announces that the tool can run detached: asked to
    /// ([`Call::detached`]), it starts its work as a job and answers at once
    /// with the job's `JobReport` as structured content; `status` reports
    /// that job and `cancel` stops it, both called with `{"job_id": ...}`.
    pub fn runs_as_job(mut self, status: &str, cancel: &str) -> Self {
        self.spec.jobs = Some(JobTools {
            status: status.to_owned(),
            cancel: cancel.to_owned(),
            answer: None,
        });
        self
    }

    /// Adds to [`Tool::runs_as_job`] the tool that answers a job waiting for
    /// a person (`JobPhase::InputRequired`), called with `{"job_id": ...,
    /// "responses": {<question key>: <MCP ElicitResult>}}`. Without
    /// `runs_as_job` first, it does nothing.
    pub fn job_answered_by(mut self, answer: &str) -> Self {
        if let Some(jobs) = &mut self.spec.jobs {
            jobs.answer = Some(answer.to_owned());
        }
        self
    }
}

impl Call {
    /// Whether the caller asked for a detached start: start the job, answer
    /// with its report at once, and let it run on.
    pub fn detached(&self) -> bool {
        self.job.detached
    }

    /// This call as the job it starts sees it, for work that outlives the
    /// request: the same id, tool, arguments, caller, trace, bus and policy;
    /// a deadline `budget` from now; its own cancellation (the job's, not
    /// the request's, which ends with the answer). Nothing reaches the
    /// caller's client any more: no questions (a job that needs a person
    /// waits for its answer tool instead), and progress goes to the
    /// returned receiver, which holds the latest line, for the job's record.
    pub fn for_job(&self, budget: Duration) -> (Call, watch::Receiver<Option<String>>) {
        let (lines, latest) = watch::channel(None);
        let call = Call {
            id: self.id,
            tool: self.tool.clone(),
            args: self.args.clone(),
            caller: self.caller.clone(),
            deadline: Instant::now() + budget,
            trace: self.trace.clone(),
            cancel: CancellationToken::new(),
            progress: None,
            progress_sent: Arc::default(),
            bus: self.bus.clone(),
            ask: None,
            policy: self.policy.clone(),
            round: None,
            asking: Default::default(),
            job: JobSide {
                detached: false,
                lines: Some(lines),
            },
        };
        (call, latest)
    }

    /// Keeps a progress message as a job's latest line (see
    /// [`Call::for_job`]).
    pub(crate) fn note_job_line(&self, msg: &Progress) {
        if let (Some(lines), Some(line)) = (&self.job.lines, &msg.message) {
            lines.send_replace(Some(line.clone()));
        }
    }
}
