//! A stack's configuration: read without secrets, written with values on
//! stdin.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{CliError, PulumiCli};

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

impl PulumiCli {
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
}
