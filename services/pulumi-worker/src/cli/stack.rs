//! Stacks: listing, selecting (or creating), outputs and history.

use std::path::Path;

use serde::Deserialize;
use serde_json::Value;

use super::{CliError, PulumiCli};

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

impl PulumiCli {
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
}
