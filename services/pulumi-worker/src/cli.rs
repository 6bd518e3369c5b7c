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

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
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
    /// `destroy --preview-only`: what a destroy would delete. Pulumi has no
    /// plans for destroys; the worker binds the confirmation to the stack's
    /// version instead (see `tools`).
    DestroyPreview,
    /// `up --yes --skip-preview`, constrained to a plan from a preview.
    Up {
        /// The plan file.
        plan: PathBuf,
    },
    /// `refresh --yes --skip-preview`: reconciles the state with the cloud.
    Refresh,
    /// `destroy --yes --skip-preview`.
    Destroy,
}

impl Operation {
    /// The operation's name: `preview`, `destroy-preview`, `up`, `refresh`
    /// or `destroy`.
    pub fn name(&self) -> &'static str {
        match self {
            Operation::Preview { .. } => "preview",
            Operation::DestroyPreview => "destroy-preview",
            Operation::Up { .. } => "up",
            Operation::Refresh => "refresh",
            Operation::Destroy => "destroy",
        }
    }

    /// The CLI words after the stack and event-log flags.
    fn args(&self) -> Vec<String> {
        let words: &[&str] = match self {
            Operation::Preview { save_plan } => {
                return vec![
                    "preview".into(),
                    "--diff".into(),
                    "--save-plan".into(),
                    save_plan.display().to_string(),
                ];
            }
            Operation::Up { plan } => {
                return vec![
                    "up".into(),
                    "--yes".into(),
                    "--skip-preview".into(),
                    "--plan".into(),
                    plan.display().to_string(),
                ];
            }
            Operation::DestroyPreview => &["destroy", "--preview-only"],
            Operation::Refresh => &["refresh", "--yes", "--skip-preview"],
            Operation::Destroy => &["destroy", "--yes", "--skip-preview"],
        };
        words.iter().map(|w| (*w).to_owned()).collect()
    }
}

/// One configuration value, as `config --json` prints it. Without
/// `--show-secrets` (which this driver never passes) a secret has no value.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
pub struct ConfigValue {
    /// The value; absent for secrets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// A structured value (set with `--path`); absent for secrets.
    #[serde(
        default,
        rename = "objectValue",
        skip_serializing_if = "Option::is_none"
    )]
    pub object_value: Option<Value>,
    /// Whether the value is a secret.
    #[serde(default)]
    pub secret: bool,
}

impl ConfigValue {
    /// The value with any secret blanked, whatever the CLI printed.
    pub fn blinded(mut self) -> Self {
        if self.secret {
            self.value = None;
            self.object_value = None;
        }
        self
    }
}

/// How to write a configuration value.
#[derive(Clone, Copy, Debug, Default)]
pub struct SetConfig {
    /// Encrypt it (`--secret`); otherwise `--plaintext`.
    pub secret: bool,
    /// The key is a path into a structured value (`--path`).
    pub path: bool,
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
        self.run_with_input(project, args, stack, None).await
    }

    /// Runs a quick command with `input` on its stdin (how values reach
    /// `config set`: never on the command line, where other processes on
    /// the host could read them).
    async fn run_with_input(
        &self,
        project: &Path,
        args: &[&str],
        stack: Option<&str>,
        input: Option<&[u8]>,
    ) -> Result<String, CliError> {
        use tokio::io::AsyncWriteExt;
        let mut cmd = self.command(project, args);
        if input.is_some() {
            cmd.stdin(Stdio::piped());
        }
        let mut child = cmd.spawn().map_err(|e| self.spawn_error(e))?;
        if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
            stdin
                .write_all(input)
                .await
                .map_err(|e| CliError::Io(e.to_string()))?;
        }
        let out = child
            .wait_with_output()
            .await
            .map_err(|e| CliError::Io(e.to_string()))?;
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

    /// The stack's configuration (`config --json`, without
    /// `--show-secrets`): secrets come back without their values.
    pub async fn config(
        &self,
        project: &Path,
        stack: &str,
    ) -> Result<BTreeMap<String, ConfigValue>, CliError> {
        let out = self
            .run(
                project,
                &["config", "--json", "--stack", stack],
                Some(stack),
            )
            .await?;
        let values: BTreeMap<String, ConfigValue> = serde_json::from_str(&out)
            .map_err(|e| CliError::Io(format!("`config --json` printed no JSON map: {e}")))?;
        Ok(values.into_iter().map(|(k, v)| (k, v.blinded())).collect())
    }

    /// Sets one configuration value. The value goes to the CLI's stdin,
    /// and is kept out of any error this returns.
    pub async fn set_config(
        &self,
        project: &Path,
        stack: &str,
        key: &str,
        value: &str,
        how: SetConfig,
    ) -> Result<(), CliError> {
        let mut args = vec![
            "config",
            "set",
            key,
            "--stack",
            stack,
            if how.secret {
                "--secret"
            } else {
                "--plaintext"
            },
        ];
        if how.path {
            args.push("--path");
        }
        let result = self
            .run_with_input(project, &args, Some(stack), Some(value.as_bytes()))
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(CliError::Failed {
                command,
                code,
                stderr,
            }) if !value.is_empty() => Err(CliError::Failed {
                command,
                code,
                stderr: stderr.replace(value, "[secret]"),
            }),
            Err(e) => Err(e),
        }
    }

    /// The stack's updates, newest first (`stack history --json`, without
    /// `--show-secrets`; secret config values are blanked again here).
    pub async fn history(
        &self,
        project: &Path,
        stack: &str,
        page_size: u32,
    ) -> Result<Vec<Value>, CliError> {
        let size = page_size.to_string();
        let out = self
            .run(
                project,
                &[
                    "stack",
                    "history",
                    "--json",
                    "--stack",
                    stack,
                    "--page-size",
                    &size,
                    "--page",
                    "1",
                ],
                Some(stack),
            )
            .await?;
        let mut updates: Vec<Value> = serde_json::from_str(&out).map_err(|e| {
            CliError::Io(format!("`stack history --json` printed no JSON list: {e}"))
        })?;
        for update in &mut updates {
            if let Some(config) = update.get_mut("config").and_then(Value::as_object_mut) {
                for v in config.values_mut() {
                    if v["secret"] == Value::Bool(true) {
                        *v = serde_json::json!({"secret": true});
                    }
                }
            }
        }
        Ok(updates)
    }

    /// The stack's current version: that of its newest update, 0 if none.
    pub async fn version_of(&self, project: &Path, stack: &str) -> Result<u64, CliError> {
        Ok(self
            .history(project, stack, 1)
            .await?
            .first()
            .and_then(|u| u["version"].as_u64())
            .unwrap_or(0))
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
        let op_args = op.args();
        let mut args: Vec<&str> = op_args.iter().map(String::as_str).collect();
        args.extend(["--stack", stack, "--event-log", &log_arg]);
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
