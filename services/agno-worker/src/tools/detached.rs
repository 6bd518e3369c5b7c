//! A category's runs as jobs (MCP tasks) on this replica: a detached start
//! creates the run's record, a resume after a person's answer claims it
//! back; either way the run goes on in its own task after the call is
//! answered with the record. Beside the loop, a heartbeat renews the
//! replica's lease, writes the latest step as progress, and stops the run
//! when someone asked to cancel it (see [`crate::jobs`]).

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use serde_json::Value;
use sophia_kit::{Call, ErrorCode, ToolResult, WireError};
use sophia_proto::JobPhase;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::ctx::store_error;
use super::jobs::job_output;
use super::replica::finish;
use super::{Ctx, RUN_TIMEOUT_MS};
use crate::agent::now_ms;
use crate::confirm::question;
use crate::jobs::{HEARTBEAT, RunJob};
use crate::run::RunState;
use crate::runner::Outcome;
use crate::templates::Template;

/// A run ready to drive.
pub(super) struct Run {
    pub template: Arc<Template>,
    pub state: RunState,
    /// The template's tools not on the mesh (allowed by the caller).
    pub missing: Vec<String>,
}

/// Starts (or, with an `action_id`, resumes) job `job_id` on this replica
/// and answers at once with its record.
pub(super) async fn start(ctx: &Arc<Ctx>, call: &Call, job_id: &str, run: Run) -> ToolResult {
    let store = &ctx.runner.store;
    let job = match call.args["action_id"].as_str() {
        Some(action) => claim(ctx, call, job_id, action).await?,
        None => {
            let job = RunJob::new(
                job_id,
                &run.state.agent_id,
                &run.state.agent_type,
                &call.caller.principal,
                &ctx.instance,
            );
            store.create_job(&job).await.map_err(store_error)?;
            job
        }
    };
    let (job_call, lines) = call.for_job(Duration::from_millis(RUN_TIMEOUT_MS));
    tokio::spawn(drive(ctx.clone(), job_call, lines, job.id.clone(), run));
    Ok(job_output(&job))
}

/// Takes a paused job back for this replica, once, for the answer to
/// `action`.
async fn claim(ctx: &Ctx, call: &Call, job_id: &str, action: &str) -> Result<RunJob, WireError> {
    let approve = call.args["approve"].as_bool() == Some(true);
    let mut claimed = false;
    let job = ctx
        .runner
        .store
        .change_job(job_id, |j| {
            claimed = j.state == JobPhase::InputRequired
                && j.question.as_ref().is_some_and(|q| q.key == action);
            if claimed {
                let verdict = if approve { "approved" } else { "rejected" };
                j.state = JobPhase::Running;
                j.owner = Some(ctx.instance.clone());
                j.heartbeat_ms = now_ms();
                j.question = None;
                j.decided_by = Some(format!("{} ({verdict})", call.caller.principal));
                j.progress = Some(format!("resuming: {verdict} by {}", call.caller.principal));
            }
            claimed
        })
        .await
        .map_err(store_error)?;
    match job {
        Some(job) if claimed => Ok(job),
        _ => Err(WireError::new(
            ErrorCode::Conflict,
            format!("run {job_id} is not waiting for the answer to {action}; it is not resumed"),
        )),
    }
}

/// Drives the run beside its heartbeat, then records how it ended.
async fn drive(
    ctx: Arc<Ctx>,
    call: Call,
    mut lines: watch::Receiver<Option<String>>,
    id: String,
    mut run: Run,
) {
    let store = &ctx.runner.store;
    let category = run.template.category.as_str();
    store.run_started(category, &id).await;
    let cancel = call.cancellation();
    let stop = CancellationToken::new();
    let beats = heartbeat(&ctx, &id, &mut lines, &cancel, &stop);
    let work = async {
        let driven = AssertUnwindSafe(ctx.runner.drive(&call, &run.template, &mut run.state))
            .catch_unwind()
            .await;
        stop.cancel();
        driven
    };
    let ((), driven) = tokio::join!(beats, work);
    store.run_finished(category, &id).await;
    let ending = match driven {
        Err(_) => Ending::over(JobPhase::Failed, "the run stopped on an internal error"),
        Ok(Err(e)) if cancel.is_cancelled() => Ending::over(
            JobPhase::Cancelled,
            &format!("the run was cancelled ({})", e.message),
        ),
        Ok(Err(e)) => Ending::over(JobPhase::Failed, &e.message),
        Ok(Ok(outcome)) => ended(&ctx, &id, &run, outcome).await,
    };
    let written = store
        .change_job(&id, |j| {
            ending.apply(j);
            true
        })
        .await;
    if let Err(e) = written {
        tracing::error!(job = %id, cause = %e, "could not record how a run ended");
    }
}

/// How a driven run's record ends up.
struct Ending {
    state: JobPhase,
    message: String,
    result: Option<Value>,
    question: Option<sophia_proto::JobQuestion>,
}

impl Ending {
    fn over(state: JobPhase, message: &str) -> Self {
        Self {
            state,
            message: message.to_owned(),
            result: None,
            question: None,
        }
    }

    fn apply(&self, job: &mut RunJob) {
        job.end(self.state, self.message.clone(), self.result.clone());
        if let Some(q) = &self.question {
            job.progress = Some(format!("waiting for a person: {}", q.message));
            job.question = Some(q.clone());
        }
    }
}

/// The record of a run that answered, hit its step limit or paused: the
/// same result as a waited-for run's (a pause stores its pending action,
/// tied to this job, and asks its question).
async fn ended(ctx: &Ctx, id: &str, run: &Run, outcome: Outcome) -> Ending {
    let (outcome, asked) = match outcome {
        Outcome::Paused(mut action) => {
            action.job = Some(id.to_owned());
            let asked = question(&action);
            (Outcome::Paused(action), Some(asked))
        }
        other => (other, None),
    };
    let state = match asked {
        Some(_) => JobPhase::InputRequired,
        None => JobPhase::Succeeded,
    };
    match finish(ctx, &run.template, &run.state, outcome, &run.missing).await {
        Ok(out) => Ending {
            state,
            message: super::text_of(&out),
            result: out.structured,
            question: asked,
        },
        Err(e) => Ending::over(JobPhase::Failed, &e.message),
    }
}

/// Renews the lease every [`HEARTBEAT`] and whenever the run reports a
/// step (writing it as progress), until `stop`; cancels the run when
/// someone asked to, or when the record is no longer this replica's.
async fn heartbeat(
    ctx: &Ctx,
    id: &str,
    lines: &mut watch::Receiver<Option<String>>,
    cancel: &CancellationToken,
    stop: &CancellationToken,
) {
    let mut open = true;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(HEARTBEAT) => {}
            changed = lines.changed(), if open => open = changed.is_ok(),
        }
        let line = lines.borrow_and_update().clone();
        let (mut lost, mut asked) = (false, false);
        let renewed = ctx.runner.store.change_job(id, |j| {
            lost = j.state != JobPhase::Running || j.owner.as_deref() != Some(&ctx.instance);
            asked = j.cancel_requested;
            if !lost {
                j.heartbeat_ms = now_ms();
                j.progress = line.clone().or(j.progress.take());
            }
            !lost
        });
        match renewed.await {
            Ok(Some(_)) => {}
            Ok(None) => lost = true,
            Err(e) => tracing::debug!(job = %id, cause = %e, "could not renew a run's lease"),
        }
        if lost || asked {
            tracing::info!(job = %id, lost, "stopping a run");
            cancel.cancel();
        }
    }
}
