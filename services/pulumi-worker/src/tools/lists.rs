//! What a console polls: `pulumi_list_jobs` (the recent jobs) and
//! `pulumi_list_previews` (the saved previews still waiting for a person's
//! decision). Both are bounded by `limit`, read no plans, and skip (and
//! count) a record they cannot read rather than fail.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use async_nats::jetstream::object_store::ObjectInfo;
use futures::TryStreamExt;
use serde_json::{Value, json};
use sophia_kit::schema::ListLimit;
use sophia_kit::{Call, Category, ErrorCode, Tool, ToolOutput, ToolResult, WireError};

use super::changes::Kind;
use super::plans::{LISTING_KEY, read_preview};
use super::{Ctx, job_error};
use crate::events::describe_changes;
use crate::jobs::{Job, JobState};

/// The `{limit?}` every list here takes.
const LIMIT: ListLimit = ListLimit::STANDARD;

/// `pulumi_list_jobs`.
pub(super) fn list_jobs(ctx: &Arc<Ctx>) -> Tool {
    Tool::new(
        "pulumi_list_jobs",
        Category::Infrastructure,
        "Lists the recent Pulumi jobs (updates, destroys, refreshes, rejected previews), newest \
         first: state, latest progress, who previewed and confirmed each, and the result of \
         those that finished.",
    )
    .input_schema(LIMIT.schema())
    .read_only()
    .idempotent()
    .with_ctx(ctx, run_list_jobs)
}

async fn run_list_jobs(c: Arc<Ctx>, call: Call) -> ToolResult {
    let recent = c
        .jobs
        .recent(LIMIT.of(&call.args))
        .await
        .map_err(job_error)?;
    let lines: Vec<String> = recent
        .jobs
        .iter()
        .map(|j| {
            format!(
                "{} {} {}/{}: {}",
                j.id,
                j.operation,
                j.project,
                j.stack,
                state_name(j.state)
            )
        })
        .collect();
    let mut out = ToolOutput::text(match lines.is_empty() {
        true => "no Pulumi jobs yet".to_owned(),
        false => format!("{} recent jobs:\n{}", lines.len(), lines.join("\n")),
    });
    let jobs: Vec<Value> = recent.jobs.iter().map(job_item).collect();
    out.structured = Some(json!({"jobs": jobs, "skipped": recent.skipped}));
    Ok(out)
}

fn state_name(state: JobState) -> &'static str {
    match state {
        JobState::Running => "running",
        JobState::Succeeded => "succeeded",
        JobState::Failed => "failed",
        JobState::Cancelled => "cancelled",
    }
}

/// A job as the list shows it.
fn job_item(job: &Job) -> Value {
    let progress: Vec<&String> = match job.recent_progress.is_empty() {
        true => job.progress.iter().collect(),
        false => job.recent_progress.iter().collect(),
    };
    let finished = (job.state != JobState::Running).then_some(job.updated_ms);
    json!({"job_id": job.id, "operation": job.operation, "project": job.project,
        "stack": job.stack, "state": state_name(job.state), "message": job.message,
        "progress": progress, "started_ms": job.started_ms, "finished_ms": finished,
        "updated_ms": job.updated_ms, "cancel_requested": job.cancel_requested,
        "previewed_by": job.previewed_by, "confirmed_by": job.confirmed_by,
        "rejected_by": job.rejected_by, "summary": job.summary})
}

/// `pulumi_list_previews`.
pub(super) fn list_previews(ctx: &Arc<Ctx>) -> Tool {
    Tool::new(
        "pulumi_list_previews",
        Category::Infrastructure,
        "Lists the saved Pulumi previews still waiting for a person's decision (neither applied \
         nor rejected), newest first, with their changes and the tool that applies each \
         (pulumi_up or pulumi_destroy with the preview_id; pulumi_reject_preview turns one \
         down).",
    )
    .input_schema(LIMIT.schema())
    .read_only()
    .idempotent()
    .with_ctx(ctx, run_list_previews)
}

async fn run_list_previews(c: Arc<Ctx>, call: Call) -> ToolResult {
    let unavailable = |e: String| WireError::new(ErrorCode::Unavailable, e);
    let infos: Vec<ObjectInfo> = c
        .plans
        .list()
        .await
        .map_err(|e| unavailable(format!("could not list the saved previews: {e}")))?
        .try_collect()
        .await
        .map_err(|e| unavailable(format!("could not list the saved previews: {e}")))?;
    // One key listing says which previews a job (or rejection) decided.
    let decided = c.jobs.ids().await.map_err(job_error)?;
    let (mut previews, mut skipped) = (Vec::new(), 0);
    for info in infos.iter().filter(|i| !i.deleted) {
        match pending_preview(&c, info, &decided).await {
            Ok(Some(p)) => previews.push(p),
            Ok(None) => {}
            Err(()) => skipped += 1,
        }
    }
    previews.sort_by_key(|p| std::cmp::Reverse(p["created_ms"].as_u64().unwrap_or(0)));
    previews.truncate(LIMIT.of(&call.args));
    let lines: Vec<String> = previews
        .iter()
        .map(|p| {
            format!(
                "{} {} {}/{}: {} (confirm with {})",
                p["preview_id"].as_str().unwrap_or(""),
                p["operation"].as_str().unwrap_or(""),
                p["project"].as_str().unwrap_or(""),
                p["stack"].as_str().unwrap_or(""),
                p["changes"].as_str().unwrap_or(""),
                p["confirm_with"].as_str().unwrap_or("")
            )
        })
        .collect();
    let mut out = ToolOutput::text(match lines.is_empty() {
        true => "no previews wait for a decision".to_owned(),
        false => format!(
            "{} previews wait for a decision:\n{}",
            lines.len(),
            lines.join("\n")
        ),
    });
    out.structured = Some(json!({"previews": previews, "skipped": skipped}));
    Ok(out)
}

/// A saved preview as the list shows it, if no job decided it yet; `Err`
/// for one that cannot be read.
async fn pending_preview(
    c: &Ctx,
    info: &ObjectInfo,
    decided: &HashSet<String>,
) -> Result<Option<Value>, ()> {
    if decided.contains(&info.name) {
        return Ok(None);
    }
    let record = match info.metadata.get(LISTING_KEY) {
        Some(listing) => serde_json::from_str(listing).map_err(|_| ())?,
        // Saved by the version before, without the listing: read it.
        None => read_preview(c, &info.name).await.map_err(|_| ())?,
    };
    preview_item(&info.name, &record).map(Some).ok_or(())
}

/// A preview's record as the list shows it; `None` if it is malformed.
fn preview_item(id: &str, record: &Value) -> Option<Value> {
    let kind = match record["kind"].as_str()? {
        "update" => Kind::Update,
        "destroy" => Kind::Destroy,
        _ => return None,
    };
    let (project, stack) = (record["project"].as_str()?, record["stack"].as_str()?);
    let changes: BTreeMap<String, u64> =
        serde_json::from_value(record["summary"]["resource_changes"].clone()).ok()?;
    Some(
        json!({"preview_id": id, "operation": kind.as_str(), "project": project,
        "stack": stack, "summary": record["summary"], "changes": describe_changes(&changes),
        "previewed_by": record["previewed_by"], "created_ms": record["created_ms"],
        "confirm_with": kind.apply_tool()}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_preview_shows_its_changes_and_how_to_confirm_it() {
        let record = json!({"project": "app", "stack": "dev", "kind": "destroy",
            "summary": {"resource_changes": {"delete": 3}}, "previewed_by": "alice",
            "created_ms": 7});
        let item = preview_item("p1", &record).unwrap();
        assert_eq!(item["changes"], "3 delete");
        assert_eq!(item["operation"], "destroy");
        assert_eq!(item["confirm_with"], "pulumi_destroy");
        assert_eq!(item["created_ms"], 7);
    }

    #[test]
    fn a_malformed_preview_is_none() {
        for record in [
            json!({}),
            json!({"project": "app", "stack": "dev", "kind": "sideways", "summary": {}}),
            json!({"project": "app", "stack": "dev", "kind": "update",
                "summary": {"resource_changes": "lots"}}),
        ] {
            assert_eq!(preview_item("p1", &record), None, "{record}");
        }
    }
}
