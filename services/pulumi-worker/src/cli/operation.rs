//! Operations that preview or change a stack, followed through the
//! engine event log as the CLI writes it.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio_util::sync::CancellationToken;

use super::{CliError, PulumiCli};
use crate::events::{EngineEvent, EventLogTail, Summary};

/// An operation that changes or previews a stack.
#[derive(Clone, Debug)]
pub enum Operation {
    /// `preview --diff`, saving an update plan to this file.
    Preview {
        /// Where to save the plan.
        save_plan: PathBuf,
    },
    /// `destroy --preview-only`: what a destroy would delete. Pulumi has no
    /// plans for destroys; the worker binds the confirmation to the stack's
    /// version instead (see `tools`).
    DestroyPreview,
    /// `up --yes --skip-preview`, constrained to a plan from a preview.
    Up {
        /// The plan file.
        plan: PathBuf,
        /// The update's message (`--message`), kept in the stack's history.
        message: Option<String>,
    },
    /// `refresh --yes --skip-preview`: reconciles the state with the cloud.
    Refresh {
        /// The update's message (`--message`).
        message: Option<String>,
    },
    /// `destroy --yes --skip-preview`.
    Destroy {
        /// The update's message (`--message`).
        message: Option<String>,
    },
}

impl Operation {
    /// The operation's name: `preview`, `destroy-preview`, `up`, `refresh`
    /// or `destroy`.
    pub fn name(&self) -> &'static str {
        match self {
            Operation::Preview { .. } => "preview",
            Operation::DestroyPreview => "destroy-preview",
            Operation::Up { .. } => "up",
            Operation::Refresh { .. } => "refresh",
            Operation::Destroy { .. } => "destroy",
        }
    }

    /// The CLI words after the stack and event-log flags.
    fn args(&self) -> Vec<String> {
        let owned = |w: &[&str]| w.iter().map(|w| (*w).to_owned()).collect::<Vec<_>>();
        let (mut words, message) = match self {
            Operation::Preview { save_plan } => {
                let mut w = owned(&["preview", "--diff", "--save-plan"]);
                w.push(save_plan.display().to_string());
                (w, None)
            }
            Operation::Up { plan, message } => {
                let mut w = owned(&["up", "--yes", "--skip-preview", "--plan"]);
                w.push(plan.display().to_string());
                (w, message.as_ref())
            }
            Operation::DestroyPreview => (owned(&["destroy", "--preview-only"]), None),
            Operation::Refresh { message } => (
                owned(&["refresh", "--yes", "--skip-preview"]),
                message.as_ref(),
            ),
            Operation::Destroy { message } => (
                owned(&["destroy", "--yes", "--skip-preview"]),
                message.as_ref(),
            ),
        };
        if let Some(m) = message {
            words.extend(["--message".to_owned(), m.clone()]);
        }
        words
    }
}

impl PulumiCli {
    /// Runs a preview or an update, calling `on_event` for each engine event
    /// as the CLI writes it. `cancel` sends SIGINT (a graceful cancel).
    pub async fn operation(
        &self,
        project: &Path,
        stack: &str,
        op: &Operation,
        mut on_event: impl FnMut(&EngineEvent),
        cancel: &CancellationToken,
    ) -> Result<Summary, CliError> {
        let dir = tempfile::tempdir().map_err(|e| CliError::Io(e.to_string()))?;
        let log = dir.path().join("events.json");
        let log_arg = log.display().to_string();
        let op_args = op.args();
        let mut args: Vec<&str> = op_args.iter().map(String::as_str).collect();
        args.extend(["--stack", stack, "--event-log", &log_arg]);
        let mut cmd = self.command(project, &args);
        // The human-readable output is not used (results come from the event
        // log); an unread pipe would block the CLI once full.
        cmd.stdout(Stdio::null());
        let mut child = cmd.spawn().map_err(|e| self.spawn_error(e))?;
        let stderr = child.stderr.take().map(|mut s| {
            tokio::spawn(async move {
                use tokio::io::AsyncReadExt;
                let mut text = String::new();
                let _ = s.read_to_string(&mut text).await;
                text
            })
        });
        let mut summary = Summary::default();
        let (status, interrupted) = EventLogTail::new(&log)
            .follow(exit(&mut child, cancel), |e| {
                summary.add(&e);
                if let Ok(e) = &e {
                    on_event(e);
                }
            })
            .await;
        let err_text = match stderr {
            Some(t) => t.await.unwrap_or_default(),
            None => String::new(),
        };
        let status = status.map_err(|e| CliError::Io(e.to_string()))?;
        if interrupted {
            return Err(CliError::Cancelled { summary });
        }
        if !status.success() {
            return Err(Self::failure(
                &args,
                Some(stack),
                status.code().unwrap_or(-1),
                &err_text,
            ));
        }
        Ok(summary)
    }
}

/// Waits for the CLI to exit; on `cancel`, interrupts it first (SIGINT, a
/// graceful cancel). Returns its exit status and whether it was
/// interrupted.
async fn exit(
    child: &mut tokio::process::Child,
    cancel: &CancellationToken,
) -> (std::io::Result<std::process::ExitStatus>, bool) {
    tokio::select! {
        status = child.wait() => (status, false),
        _ = cancel.cancelled() => {
            if let Some(pid) = child.id() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGINT,
                );
            }
            (child.wait().await, true)
        }
    }
}
