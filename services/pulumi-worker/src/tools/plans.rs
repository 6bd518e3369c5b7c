//! Saved previews: a preview runs, its plan (or, for a destroy, the stack's
//! version) goes to the plans bucket under a fresh `preview_id` with who ran
//! it, and only that id, or the person's answer to a fresh preview, confirms
//! a change.

use async_nats::jetstream::object_store::ObjectMetadata;
use serde_json::{Value, json};
use sophia_kit::{Answer, Call, ErrorCode, ToolOutput, WireError};
use tokio::io::AsyncReadExt;

use super::changes::Kind;
use super::operation::relay_operation;
use super::{Ctx, cli_error, name, summary_json};
use crate::cli::Operation;
use crate::events::Summary;
use crate::jobs::recorded_principal;

/// A preview run and saved in the plans bucket.
pub(super) struct SavedPreview {
    id: String,
    project: String,
    stack: String,
    kind: Kind,
    summary: Summary,
    previewed_by: Option<String>,
}

impl SavedPreview {
    /// The `pulumi_preview` result: the changes, and how to apply them.
    pub(super) fn output(&self) -> ToolOutput {
        let (id, project, stack, kind) = (&self.id, &self.project, &self.stack, self.kind);
        let tool = kind.apply_tool();
        let mut out = ToolOutput::text(format!(
            "{} preview {id} of {project}/{stack}: {}. To apply exactly these changes, call {tool} with preview_id={id}.",
            kind.as_str(),
            self.summary.changes()
        ));
        out.structured = Some(
            json!({"preview_id": id, "operation": kind.as_str(), "project": project,
            "stack": stack, "summary": summary_json(&self.summary), "confirm_with": tool,
            "previewed_by": self.previewed_by}),
        );
        out
    }
}

/// Runs a preview of `kind`, relaying its progress, and saves it.
pub(super) async fn save_preview(
    c: &Ctx,
    call: &Call,
    kind: Kind,
) -> Result<SavedPreview, WireError> {
    let (project, stack, dir) = c.target(call)?;
    c.cli
        .select_or_create(&dir, &stack)
        .await
        .map_err(cli_error)?;
    let tmp = tempfile::tempdir().map_err(|e| WireError::internal(e.to_string()))?;
    let plan_path = tmp.path().join("plan.json");
    let (op, version) = match kind {
        Kind::Update => (
            Operation::Preview {
                save_plan: plan_path.clone(),
            },
            None,
        ),
        // Pulumi has no plans for destroys: bind the confirmation to the
        // stack's version, so a destroy runs only on the stack that was
        // previewed.
        Kind::Destroy => (
            Operation::DestroyPreview,
            Some(c.cli.version_of(&dir, &stack).await.map_err(cli_error)?),
        ),
    };
    let summary = relay_operation(c, call, &dir, &stack, &op).await?;
    let plan =
        match kind {
            Kind::Update => Some(tokio::fs::read_to_string(&plan_path).await.map_err(|e| {
                WireError::failed(format!("the preview saved no update plan: {e}"))
            })?),
            Kind::Destroy => None,
        };
    let id = uuid::Uuid::new_v4().simple().to_string();
    // Who previewed: the job that applies this preview records it.
    let previewed_by = recorded_principal(&call.caller.principal);
    let mut record = json!({"project": project, "stack": stack, "kind": kind.as_str(),
        "version": version, "summary": summary_json(&summary), "previewed_by": previewed_by,
        "created_ms": crate::jobs::now_ms()});
    // The record without its plan rides in the object's metadata too, so
    // listing previews reads no plans.
    let meta = ObjectMetadata {
        name: id.clone(),
        metadata: [(LISTING_KEY.to_owned(), record.to_string())].into(),
        ..Default::default()
    };
    record["plan"] = json!(plan);
    let bytes = serde_json::to_vec(&record).map_err(|e| WireError::internal(e.to_string()))?;
    c.plans
        .put(meta, &mut bytes.as_slice())
        .await
        .map_err(|e| {
            WireError::new(
                ErrorCode::Unavailable,
                format!("could not save the plan: {e}"),
            )
        })?;
    Ok(SavedPreview {
        id,
        project,
        stack,
        kind,
        summary,
        previewed_by,
    })
}

/// A preview's saved record, checked against the call.
pub(super) async fn load_preview(
    c: &Ctx,
    project: &str,
    stack: &str,
    preview_id: &str,
    kind: Kind,
) -> Result<Value, WireError> {
    let record = read_preview(c, preview_id).await?;
    if record["project"] != json!(project) || record["stack"] != json!(stack) {
        return Err(WireError::invalid_arguments(format!(
            "preview {preview_id} is for {}/{}, not {project}/{stack}",
            record["project"].as_str().unwrap_or("?"),
            record["stack"].as_str().unwrap_or("?")
        )));
    }
    let recorded = record["kind"].as_str().unwrap_or("update");
    if recorded != kind.as_str() {
        return Err(WireError::invalid_arguments(format!(
            "preview {preview_id} is a preview of an {recorded}, not of a {}; run pulumi_preview with \
             operation={:?}",
            kind.as_str(),
            kind.verb()
        )));
    }
    Ok(record)
}

/// The key of a preview object's metadata holding its record without the
/// plan (`{project, stack, kind, version, summary, previewed_by, created_ms}`).
pub(super) const LISTING_KEY: &str = "sophia_preview";

/// A saved preview's whole record, plan included.
pub(super) async fn read_preview(c: &Ctx, preview_id: &str) -> Result<Value, WireError> {
    let mut object = c.plans.get(preview_id).await.map_err(|_| {
        WireError::invalid_arguments(format!(
            "no preview {preview_id}: run pulumi_preview, show its changes, and pass the preview_id it returns"
        ))
    })?;
    let mut raw = Vec::new();
    object
        .read_to_end(&mut raw)
        .await
        .map_err(|e| WireError::new(ErrorCode::Unavailable, e.to_string()))?;
    serde_json::from_slice(&raw).map_err(|e| WireError::internal(e.to_string()))
}

/// The preview to apply: the caller's `preview_id`, or, when the caller
/// gave none and its client supports MCP elicitation, a fresh preview the
/// person is shown and confirms. A client that answers in rounds (MCP
/// 2026-07-28) gets the question as `input_required`; its retry comes back
/// with the preview id this kept, so it applies exactly the preview the
/// person saw and never makes a fresh one.
pub(super) async fn confirmed_preview(
    c: &Ctx,
    call: &Call,
    kind: Kind,
) -> Result<String, WireError> {
    if call.args.get("preview_id").is_some_and(|p| !p.is_null()) {
        return name(call, "preview_id");
    }
    if !call.can_elicit() {
        return Err(WireError::invalid_arguments(format!(
            "`preview_id` is required: run pulumi_preview with operation={:?}, show its changes \
             to the person, and pass the preview_id it returns (a client with MCP elicitation is \
             asked directly instead)",
            kind.verb()
        )));
    }
    let kept = call.round_state().and_then(|s| {
        let id = s["preview_id"].as_str()?;
        Some((
            id.to_owned(),
            s["question"].as_str().unwrap_or_default().to_owned(),
        ))
    });
    let (id, question) = match kept {
        Some(kept) => kept,
        None => {
            let shown = save_preview(c, call, kind).await?;
            let question = format!(
                "{} {}/{}? The preview shows: {}. Nothing else will be changed.",
                if kind == Kind::Destroy {
                    "Destroy every resource of"
                } else {
                    "Apply these changes to"
                },
                shown.project,
                shown.stack,
                shown.summary.changes()
            );
            call.keep(json!({"preview_id": shown.id, "question": question}));
            (shown.id, question)
        }
    };
    let schema = json!({"type": "object", "properties": {"confirm": {"type": "boolean",
        "title": if kind == Kind::Destroy { "Destroy" } else { "Apply" },
        "description": format!("Run {} with preview {id}", kind.apply_tool())}},
        "required": ["confirm"]});
    match call.elicit(question, schema).await? {
        Answer::Accepted(a) if a["confirm"] == json!(true) => Ok(id),
        Answer::Cancelled => Err(WireError::new(
            ErrorCode::Cancelled,
            format!("the question was dismissed, so nothing was changed (preview {id})"),
        )),
        _ => Err(WireError::new(
            ErrorCode::Cancelled,
            format!("the person did not confirm, so nothing was changed (preview {id})"),
        )),
    }
}
