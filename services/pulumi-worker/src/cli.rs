//! Driving the Pulumi CLI the way Pulumi's Automation API does: every
//! command with `--non-interactive` and `PULUMI_AUTOMATION_API=true`;
//! operation results from the engine event log (`--event-log FILE`, which
//! needs `PULUMI_DEBUG_COMMANDS=true`), never from human-readable output;
//! stacks from `stack ls --json`, outputs from `stack output --json`.
//! Cancelling an operation sends SIGINT, which the CLI turns into a graceful
//! cancel.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use serde::Deserialize;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::events::{EngineEvent, EventLogTail, Summary};

/// Where the CLI is and how it reaches state.
#[derive(Clone, Debug)]
pub struct CliConfig {
    /// The `pulumi` executable (a name on `PATH`, or a path).
    pub binary: PathBuf,
    /// `PULUMI_BACKEND_URL`, e.g. `s3://bucket` or `file:///var/pulumi`.
    pub backend_url: Option<String>,
    /// `PULUMI_CONFIG_PASSPHRASE` for the passphrase secrets provider.
    pub passphrase: Option<String>,
}

/// Why a CLI command failed, by what the caller can do about it.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The executable is not there.
    #[error(
        "the Pulumi CLI was not found ({binary}): install it (https://www.pulumi.com/docs/install/) \
         or set PULUMI_BINARY to its path"
    )]
    NotInstalled {
        /// What was tried.
        binary: String,
    },
    /// Another update holds the stack's lock.
    #[error("stack {stack} is locked by another update: {message}")]
    Locked {
        /// The stack.
        stack: String,
        /// The CLI's words.
        message: String,
    },
    /// The stack does not exist.
    #[error("no stack named {stack}")]
    StackNotFound {
        /// The stack.
        stack: String,
    },
    /// The operation was cancelled; what had happened is in the summary.
    #[error("the operation was cancelled")]
    Cancelled {
        /// What the engine reported before stopping.
        summary: Summary,
    },
    /// The command failed.
    #[error("`pulumi {command}` failed (exit {code}): {stderr}")]
    Failed {
        /// The command's words.
        command: String,
        /// Its exit code.
        code: i32,
        /// The end of its stderr.
        stderr: String,
    },
    /// Running it went wrong locally.
    #[error("could not run pulumi: {0}")]
    Io(String),
}

/// One stack, as `stack ls --json` lists it.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct StackInfo {
    /// Name.
    pub name: String,
    /// Whether it is selected.
    #[serde(default)]
    pub current: bool,
    /// Whether an update is running.
    #[serde(default, rename = "updateInProgress")]
    pub update_in_progress: bool,
}

/// An operation that changes or previews a stack.
#[derive(Clone, Debug)]
pub enum Operation {
    /// `preview --diff`, saving an update plan to this file.
    Preview {
        /// Where to save the plan.
        save_plan: PathBuf,
    },
    /// `up --yes --skip-preview`, constrained to a plan from a preview.
    Up {
        /// The plan file.
        plan: PathBuf,
    },
}

/// The CLI driver.
#[derive(Clone, Debug)]
pub struct PulumiCli {
    config: CliConfig,
}

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(5)..].join(" | ")
}

impl PulumiCli {
    /// A driver for `config`.
    pub fn new(config: CliConfig) -> Self {
        Self { config }
    }

    fn command(&self, project: &Path, args: &[&str]) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(&self.config.binary);
        cmd.args(args)
            .arg("--non-interactive")
            .current_dir(project)
            .env("PULUMI_AUTOMATION_API", "true")
            .env("PULUMI_DEBUG_COMMANDS", "true")
            .env("PULUMI_SKIP_UPDATE_CHECK", "true")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(url) = &self.config.backend_url {
            cmd.env("PULUMI_BACKEND_URL", url);
        }
        if let Some(p) = &self.config.passphrase {
            cmd.env("PULUMI_CONFIG_PASSPHRASE", p);
        }
        cmd
    }

    fn spawn_error(&self, e: std::io::Error) -> CliError {
        if e.kind() == std::io::ErrorKind::NotFound {
            CliError::NotInstalled {
                binary: self.config.binary.display().to_string(),
            }
        } else {
            CliError::Io(e.to_string())
        }
    }

    fn failure(args: &[&str], stack: Option<&str>, code: i32, stderr: &str) -> CliError {
        let stack = stack.unwrap_or("").to_owned();
        if stderr.contains("the stack is currently locked") || stderr.contains("409") {
            let message = stderr
                .lines()
                .find(|l| l.contains("locked") || l.contains("409"))
                .unwrap_or(stderr)
                .trim_start_matches("error: ")
                .to_owned();
            return CliError::Locked { stack, message };
        }
        if stderr.contains("no stack named") {
            return CliError::StackNotFound { stack };
        }
        CliError::Failed {
            command: args.join(" "),
            code,
            stderr: tail(stderr),
        }
    }

    /// Runs a quick command and returns its stdout.
    async fn run(
        &self,
        project: &Path,
        args: &[&str],
        stack: Option<&str>,
    ) -> Result<String, CliError> {
        let out = self
            .command(project, args)
            .output()
            .await
            .map_err(|e| self.spawn_error(e))?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            return Err(Self::failure(
                args,
                stack,
                out.status.code().unwrap_or(-1),
                &stderr,
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The CLI's version (also a check that it is installed).
    pub async fn version(&self) -> Result<String, CliError> {
        Ok(self
            .run(Path::new("."), &["version"], None)
            .await?
            .trim()
            .to_owned())
    }

    /// The project's stacks.
    pub async fn stacks(&self, project: &Path) -> Result<Vec<StackInfo>, CliError> {
        let out = self.run(project, &["stack", "ls", "--json"], None).await?;
        serde_json::from_str(&out)
            .map_err(|e| CliError::Io(format!("`stack ls --json` printed no JSON list: {e}")))
    }

    /// Selects `stack`, creating it if it does not exist (select, then init
    /// if not found), as the Automation API's create-or-select does.
    pub async fn select_or_create(&self, project: &Path, stack: &str) -> Result<(), CliError> {
        match self
            .run(project, &["stack", "select", stack], Some(stack))
            .await
        {
            Err(CliError::StackNotFound { .. }) => self
                .run(project, &["stack", "init", stack], Some(stack))
                .await
                .map(|_| ()),
            other => other.map(|_| ()),
        }
    }

    /// The stack's outputs; secret values in clear only with `show_secrets`.
    pub async fn outputs(
        &self,
        project: &Path,
        stack: &str,
        show_secrets: bool,
    ) -> Result<Value, CliError> {
        let mut args = vec!["stack", "output", "--json", "--stack", stack];
        if show_secrets {
            args.push("--show-secrets");
        }
        let out = self.run(project, &args, Some(stack)).await?;
        serde_json::from_str(&out)
            .map_err(|e| CliError::Io(format!("`stack output --json` printed no JSON: {e}")))
    }

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
        let (verb, plan_flag, plan) = match op {
            Operation::Preview { save_plan } => {
                ("preview", "--save-plan", save_plan.display().to_string())
            }
            Operation::Up { plan } => ("up", "--plan", plan.display().to_string()),
        };
        let mut args = vec![
            verb,
            "--stack",
            stack,
            "--event-log",
            &log_arg,
            plan_flag,
            &plan,
        ];
        match op {
            Operation::Preview { .. } => args.push("--diff"),
            Operation::Up { .. } => args.extend(["--yes", "--skip-preview"]),
        }
        let mut cmd = self.command(project, &args);
        // The human-readable output is not used (results come from the event
        // log); an unread pipe would block the CLI once full.
        cmd.stdout(Stdio::null());
        let mut child = cmd.spawn().map_err(|e| self.spawn_error(e))?;
        let pid = child.id();
        let stderr_task = child.stderr.take().map(|mut s| {
            tokio::spawn(async move {
                use tokio::io::AsyncReadExt;
                let mut text = String::new();
                let _ = s.read_to_string(&mut text).await;
                text
            })
        });
        let status: Arc<Mutex<Option<std::io::Result<std::process::ExitStatus>>>> =
            Default::default();
        let interrupted = std::sync::atomic::AtomicBool::new(false);
        let done = async {
            let s = tokio::select! {
                s = child.wait() => s,
                _ = cancel.cancelled() => {
                    interrupted.store(true, std::sync::atomic::Ordering::SeqCst);
                    if let Some(pid) = pid {
                        let _ = nix::sys::signal::kill(
                            nix::unistd::Pid::from_raw(pid as i32),
                            nix::sys::signal::Signal::SIGINT,
                        );
                    }
                    child.wait().await
                }
            };
            *status.lock().expect("status lock") = Some(s);
        };
        let mut summary = Summary::default();
        EventLogTail::new(&log)
            .follow(done, |e| {
                summary.add(&e);
                if let Ok(e) = &e {
                    on_event(e);
                }
            })
            .await;
        let err_text = match stderr_task {
            Some(t) => t.await.unwrap_or_default(),
            None => String::new(),
        };
        let status = status
            .lock()
            .expect("status lock")
            .take()
            .unwrap_or_else(|| Err(std::io::Error::other("no exit status")))
            .map_err(|e| CliError::Io(e.to_string()))?;
        if interrupted.load(std::sync::atomic::Ordering::SeqCst) {
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
