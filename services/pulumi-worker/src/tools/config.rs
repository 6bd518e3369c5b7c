//! A stack's configuration: `pulumi_config_get` and `pulumi_config_set`.
//! Secret values go in, never out.

use std::sync::Arc;

use serde_json::json;
use sophia_kit::{Call, Category, Tool, ToolOutput, ToolResult, WireError};

use super::{Ctx, cli_error, name, optional_project};

/// Pulumi config keys: `[namespace:]name`, or a path with `path=true`
/// (`app:db.port`, `app:hosts[0]`). Never a leading `-`, so a key cannot be
/// taken for a CLI flag.
const CONFIG_KEY_PATTERN: &str = r"^[A-Za-z0-9_][A-Za-z0-9_.:\-\[\]]*$";

/// `pulumi_config_get`: a stack's configuration, or one key of it.
pub(super) fn config_get(ctx: &Arc<Ctx>) -> Tool {
    let mut schema = optional_project();
    schema["properties"]["key"] = json!({"type": "string",
        "description": "One key, e.g. aws:region or app:dbPassword (a bare name means the project's namespace); all keys when left out"});
    Tool::new(
        "pulumi_config_get",
        Category::Infrastructure,
        "A stack's configuration, or one key of it. Secret values are never returned: they show \
         as {\"secret\": true} with no value.",
    )
    .input_schema(schema)
    .read_only()
    .idempotent()
    .with_ctx(ctx, run_config_get)
}

async fn run_config_get(c: Arc<Ctx>, call: Call) -> ToolResult {
    let (project, stack, dir) = c.target(&call)?;
    let values = c.cli.config(&dir, &stack).await.map_err(cli_error)?;
    let Some(key) = call.args["key"].as_str() else {
        return Ok(ToolOutput::json(
            json!({"project": project, "stack": stack, "config": values}),
        ));
    };
    // `config --json` names keys with their namespace; a bare name is the
    // project's.
    let full = if key.contains(':') {
        key.to_owned()
    } else {
        format!("{project}:{key}")
    };
    match values.get(&full).or_else(|| values.get(key)) {
        Some(v) => Ok(ToolOutput::json(json!({"key": full, "value": v}))),
        None => Err(WireError::invalid_arguments(format!(
            "{project}/{stack} has no config key {full}; its keys are: {}",
            values.keys().cloned().collect::<Vec<_>>().join(", ")
        ))),
    }
}

/// `pulumi_config_set`: sets one value, optionally as a secret.
pub(super) fn config_set(ctx: &Arc<Ctx>) -> Tool {
    let mut schema = optional_project();
    schema["properties"]["key"] = json!({"type": "string", "pattern": CONFIG_KEY_PATTERN, "maxLength": 256,
        "description": "The key, e.g. aws:region, or a bare name for the project's namespace"});
    schema["properties"]["value"] = json!({"type": "string", "writeOnly": true,
        "description": "The value; with secret=true it is encrypted by the stack's secrets provider and never shown again"});
    schema["properties"]["secret"] = json!({"type": "boolean", "default": false});
    schema["properties"]["path"] = json!({"type": "boolean", "default": false,
        "description": "Treat the key as a path into a structured value, e.g. app:db.port"});
    schema["required"] = json!(["stack", "key", "value"]);
    Tool::new(
        "pulumi_config_set",
        Category::Infrastructure,
        "Sets one configuration value of a stack; secret=true encrypts it. Takes effect at the next \
         preview.",
    )
    .input_schema(schema)
    .idempotent()
    .with_ctx(ctx, run_config_set)
}

async fn run_config_set(c: Arc<Ctx>, call: Call) -> ToolResult {
    let (project, stack) = (c.project(&call)?, name(&call, "stack")?);
    let key = call.args["key"].as_str().unwrap_or_default();
    if key.is_empty() || key.starts_with('-') {
        return Err(WireError::invalid_arguments(
            "`key` must be a config key like aws:region",
        ));
    }
    let value = call.args["value"].as_str().ok_or_else(|| {
        WireError::invalid_arguments("`value` must be a string (JSON for structured values)")
    })?;
    let how = crate::cli::SetConfig {
        secret: call.args["secret"].as_bool().unwrap_or(false),
        path: call.args["path"].as_bool().unwrap_or(false),
    };
    c.cli
        .set_config(&c.project_dir(&project)?, &stack, key, value, how)
        .await
        .map_err(cli_error)?;
    Ok(ToolOutput::text(format!(
        "set {key} on {project}/{stack}{}",
        if how.secret { " (as a secret)" } else { "" }
    )))
}
