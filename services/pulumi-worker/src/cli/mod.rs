//! Driving the Pulumi CLI the way Pulumi's Automation API does: every
//! command with `--non-interactive` and `PULUMI_AUTOMATION_API=true`;
//! operation results from the engine event log (`--event-log FILE`, which
//! needs `PULUMI_DEBUG_COMMANDS=true`), never from human-readable output;
//! stacks from `stack ls --json`, outputs from `stack output --json`.
//! Cancelling an operation sends SIGINT, which the CLI turns into a graceful
//! cancel.
//!
//! # Layout
//! - this file: the driver ([`PulumiCli`]), running one quick command, and
//!   its errors ([`CliError`]).
//! - `stack.rs`: stacks, outputs and history.
//! - `config.rs`: a stack's configuration.
//! - `operation.rs`: previews, updates, refreshes and destroys, followed
//!   through the engine event log.

mod config;
mod operation;
mod stack;

use std::path::{Path, PathBuf};
use std::process::Stdio;

use crate::events::Summary;

pub use config::{ConfigValue, SetConfig};
pub use operation::Operation;
pub use stack::StackInfo;

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
}
