//! Running a change as a durable job under the stack's lock
//! ([`run_as_job`]): it heartbeats, stops on a cancel request, and always
//! records how it ended, panics included.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use serde_json::Value;
use sophia_kit::{Call, Content, ErrorCode, ToolResult, TraceContext, WireError};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use super::jobs::job_output;
use super::operation::{end_operation_span, operation_span};
use super::reject::refused_as_rejected;
use super::{Ctx, job_error, summary_json};
use crate::cli::{CliError, Operation};
use crate::events::Summary;
use crate::jobs::{Attribution, Job, JobError, JobState, RunningJob};

/// A job to run under the stack's lock.
pub(super) struct JobSpec {
    pub id: String,
    pub project: String,
    pub stack: String,
    /// `up`, `destroy` or `refresh`.
    pub label: &'static str,
    pub op: Operation,
    /// Who previewed and who confirmed it, for the job record.
    pub by: Attribution,
    /// Run only if the stack is still at this version (a confirmed destroy).
    pub expect_version: Option<u64>,
    /// Holds the plan file while the job runs.
    pub tmp: Option<tempfile::TempDir>,
    /// The trace of the call that started the job.
    pub trace: TraceContext,
}

/// How a job ended: its state, a message for people, and the operation's
/// summary.
#[derive(Debug, PartialEq)]
struct Outcome {
    state: JobState,
    message: String,
    summary: Option<Value>,
}

/// Starts `spec` as a durable job and waits for it, relaying its progress,
/// up to the wait budget; the job goes on without the request.
pub(super) async fn run_as_job(
    c: &Arc<Ctx>,
    call: &Call,
    dir: PathBuf,
    spec: JobSpec,
) -> ToolResult {
    let id = spec.id.clone();
    let job = match c
        .jobs
        .start(&id, &spec.project, &spec.stack, spec.label, &spec.by)
        .await
    {
        Ok(job) => job,
        Err(JobError::AlreadyStarted(existing)) => {
            if let Some(refused) = refused_as_rejected(&existing) {
                return Err(refused);
            }
            let mut out = job_output(&existing);
            out.content.insert(
                0,
                Content::text(format!(
                    "preview {id} was already applied (job {}); it is not run twice.",
                    existing.id
                )),
            );
            return Ok(out);
        }
        Err(e) => return Err(job_error(e)),
    };
    let (progress, rx) = broadcast::channel(256);
    let task = tokio::spawn(run_job(c.clone(), job, dir, spec, progress));
    // Detached (an MCP task): answer with the running job at once.
    let wait = match call.detached() {
        true => Duration::ZERO,
        false => c
            .wait
            .min(call.remaining().saturating_sub(Duration::from_secs(1))),
    };
    relay_job(call, task, rx, wait).await;
    let job = c
        .jobs
        .get(&id)
        .await
        .map_err(job_error)?
        .ok_or_else(|| WireError::internal("job record missing"))?;
    job_result(job)
}

/// Relays a job's progress to the caller until the job ends, `wait`
/// passes, or the call is cancelled.
async fn relay_job(
    call: &Call,
    task: tokio::task::JoinHandle<()>,
    mut rx: broadcast::Receiver<String>,
    wait: Duration,
) {
    let deadline = tokio::time::sleep(wait);
    tokio::pin!(deadline, task);
    let mut step = 0.0;
    let mut open = true;
    loop {
        tokio::select! {
            _ = &mut task => break,
            _ = &mut deadline => break,
            _ = call.cancelled() => break,
            line = rx.recv(), if open => match line {
                Ok(line) => {
                    step += 1.0;
                    call.progress(step, None, Some(line)).await;
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                // The job let go of its progress: it is ending.
                Err(broadcast::error::RecvError::Closed) => open = false,
            },
        }
    }
}

/// The tool's result for a job as it is now.
fn job_result(job: Job) -> ToolResult {
    match job.state {
        JobState::Failed => Err(WireError::failed(
            job.message
                .unwrap_or_else(|| format!("the {} failed", job.operation)),
        )),
        JobState::Cancelled => Err(WireError::new(
            ErrorCode::Cancelled,
            job.message.unwrap_or_else(|| "cancelled".into()),
        )),
        _ => Ok(job_output(&job)),
    }
}

/// Runs an operation as a job: heartbeats the lock, stops on a cancel
/// request (or a lost lock), and records the outcome, whatever happens.
async fn run_job(
    c: Arc<Ctx>,
    mut job: RunningJob,
    dir: PathBuf,
    spec: JobSpec,
    progress: broadcast::Sender<String>,
) {
    let id = job.id.clone();
    let cancel = CancellationToken::new();
    let stop_beats = CancellationToken::new();
    let lines = progress.subscribe();
    let outcome = supervise(
        heartbeat(&c, &mut job, lines, &cancel, &stop_beats),
        operate(&c, &dir, &spec, &progress, &cancel),
        &cancel,
        &stop_beats,
    )
    .await;
    drop(spec.tmp);
    c.metrics.record(spec.label, outcome.state);
    let Outcome {
        state,
        message,
        summary,
    } = outcome;
    if let Err(e) = c.jobs.finish(job, state, Some(message), summary).await {
        tracing::error!(job = %id, cause = %e, "could not record the job's outcome");
    }
}

/// Runs a job's operation (`work`) beside its heartbeat (`beats`, which
/// runs until `stop`), and returns how the job ended. A panic in either
/// ends the job failed, with the reason, rather than leaving its record
/// running: a panicking heartbeat cancels the operation (the lock would go
/// stale under it), and a panicking operation is over.
///
/// Design note: both run in the job's own task, so the job still holds its
/// lock afterwards and can release it, whichever panicked; a spawned
/// heartbeat task would take the lock with it when it panicked.
async fn supervise(
    beats: impl Future<Output = ()>,
    work: impl Future<Output = Outcome>,
    cancel: &CancellationToken,
    stop: &CancellationToken,
) -> Outcome {
    let beats = async {
        let beaten = AssertUnwindSafe(beats).catch_unwind().await;
        if beaten.is_err() {
            cancel.cancel();
        }
        beaten
    };
    let work = async {
        let worked = AssertUnwindSafe(work).catch_unwind().await;
        stop.cancel();
        worked
    };
    match tokio::join!(beats, work) {
        (_, Err(panic)) => Outcome {
            state: JobState::Failed,
            message: format!(
                "the job stopped on an internal error ({}); the stack may need `pulumi refresh`",
                panic_message(&panic)
            ),
            summary: None,
        },
        (Err(panic), Ok(outcome)) => Outcome {
            state: JobState::Failed,
            message: format!(
                "the job was stopped: its heartbeat failed on an internal error ({}); {}; the \
                 stack may need `pulumi refresh`",
                panic_message(&panic),
                outcome.message
            ),
            summary: outcome.summary,
        },
        (Ok(()), Ok(outcome)) => outcome,
    }
}

/// What a panic said.
fn panic_message(panic: &Box<dyn Any + Send>) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("a panic")
}

/// Renews the job's lock every heartbeat until `stop`, and records the
/// latest of the operation's `lines` on the job; cancels the operation
/// when the lock is lost or someone asked for a cancel.
async fn heartbeat(
    c: &Ctx,
    job: &mut RunningJob,
    mut lines: broadcast::Receiver<String>,
    cancel: &CancellationToken,
    stop: &CancellationToken,
) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(c.heartbeat) => {
                if let Err(e) = c.jobs.heartbeat(job).await {
                    tracing::error!(job = %job.id, cause = %e, "stopping the job");
                    cancel.cancel();
                }
                if let Some(line) = latest(&mut lines)
                    && let Err(e) = c.jobs.note_progress(&job.id, &line).await
                {
                    tracing::debug!(job = %job.id, cause = %e, "could not record progress");
                }
                if let Ok(Some(record)) = c.jobs.get(&job.id).await && record.cancel_requested {
                    cancel.cancel();
                }
            }
        }
    }
}

/// The newest line waiting in `lines`, if any.
fn latest(lines: &mut broadcast::Receiver<String>) -> Option<String> {
    let mut newest = None;
    loop {
        match lines.try_recv() {
            Ok(line) => newest = Some(line),
            Err(broadcast::error::TryRecvError::Lagged(_)) => continue,
            Err(_) => return newest,
        }
    }
}

/// The job's operation, under the stack's lock: checks the stack's
/// version if the spec expects one, then runs the CLI.
async fn operate(
    c: &Ctx,
    dir: &Path,
    spec: &JobSpec,
    progress: &broadcast::Sender<String>,
    cancel: &CancellationToken,
) -> Outcome {
    // The job record keeps the CLI's verb; messages say what it does.
    let label = match spec.label {
        "up" => "update",
        other => other,
    };
    // Checked under the stack's lock, so nothing can change the stack
    // between the check and the operation.
    if let Some(expected) = spec.expect_version {
        let why = match c.cli.version_of(dir, &spec.stack).await {
            Ok(now) if now == expected => None,
            Ok(now) => Some(format!(
                "{label} refused: the stack changed since the preview (version {expected}, now {now}); \
                 run pulumi_preview with operation=\"destroy\" again and confirm the new preview"
            )),
            Err(e) => Some(format!(
                "{label} refused: could not check the stack's version: {e}"
            )),
        };
        if let Some(message) = why {
            return Outcome {
                state: JobState::Failed,
                message,
                summary: None,
            };
        }
    }
    let span = operation_span(dir, &spec.stack, &spec.op, &spec.trace);
    let on_event = |e: &crate::events::EngineEvent| {
        if let Some(l) = e.describe() {
            let _ = progress.send(l);
        }
    };
    let result = c
        .cli
        .operation(dir, &spec.stack, &spec.op, on_event, cancel)
        .await;
    end_operation_span(&span, &result);
    outcome(label, result)
}

/// A finished operation as a job's outcome.
fn outcome(label: &str, result: Result<Summary, CliError>) -> Outcome {
    let (state, message, summary) = match result {
        Ok(s) if s.succeeded() => (
            JobState::Succeeded,
            format!("{label} done: {}", s.changes()),
            Some(summary_json(&s)),
        ),
        Ok(s) => (
            JobState::Failed,
            format!("{label} failed: {}", s.errors.join("; ")),
            Some(summary_json(&s)),
        ),
        Err(CliError::Cancelled { summary }) => (
            JobState::Cancelled,
            format!("{label} cancelled"),
            Some(summary_json(&summary)),
        ),
        Err(e) => (JobState::Failed, e.to_string(), None),
    };
    Outcome {
        state,
        message,
        summary,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn done() -> Outcome {
        Outcome {
            state: JobState::Succeeded,
            message: "update done: 1 create".into(),
            summary: None,
        }
    }

    async fn exploding_heartbeat() {
        panic!("heartbeat exploded")
    }

    async fn exploding_operation() -> Outcome {
        panic!("{}", String::from("operation exploded"))
    }

    #[tokio::test]
    async fn a_job_without_panics_ends_as_its_operation_did() {
        let (cancel, stop) = (CancellationToken::new(), CancellationToken::new());
        let beats = async { stop.cancelled().await };
        let outcome = supervise(beats, async { done() }, &cancel, &stop).await;
        assert_eq!(outcome, done());
        assert!(!cancel.is_cancelled());
    }

    #[tokio::test]
    async fn a_panicking_heartbeat_stops_the_operation_and_fails_the_job() {
        let (cancel, stop) = (CancellationToken::new(), CancellationToken::new());
        let beats = exploding_heartbeat();
        // The operation runs until it is cancelled, as the CLI does.
        let work = async {
            cancel.cancelled().await;
            Outcome {
                state: JobState::Cancelled,
                message: "update cancelled".into(),
                summary: Some(serde_json::json!({"complete": false})),
            }
        };
        let outcome = supervise(beats, work, &cancel, &stop).await;
        assert_eq!(outcome.state, JobState::Failed);
        assert!(
            outcome.message.contains("heartbeat exploded"),
            "{}",
            outcome.message
        );
        assert!(
            outcome.message.contains("update cancelled"),
            "{}",
            outcome.message
        );
        assert_eq!(
            outcome.summary,
            Some(serde_json::json!({"complete": false}))
        );
    }

    #[tokio::test]
    async fn a_panicking_operation_fails_the_job_and_stops_the_heartbeat() {
        let (cancel, stop) = (CancellationToken::new(), CancellationToken::new());
        let beats = async { stop.cancelled().await };
        let outcome = supervise(beats, exploding_operation(), &cancel, &stop).await;
        assert_eq!(outcome.state, JobState::Failed);
        assert!(
            outcome.message.contains("operation exploded"),
            "{}",
            outcome.message
        );
        assert!(stop.is_cancelled());
    }
}
