//! The Work view: what the workers are doing and what waits for a person,
//! read from the workers' own listing tools as the person looking; and the
//! person's decisions, made by calling the same tools a client would:
//!
//! | decision | Pulumi preview | agent's pending action |
//! |---|---|---|
//! | approve | `pulumi_up` / `pulumi_destroy` with the `preview_id` | `agno_confirm` `approve: true` |
//! | reject | `pulumi_reject_preview` | `agno_confirm` `approve: false` |
//!
//! So the confirmation rules, the policy, the audit trail and the job's
//! `confirmed_by` are the same as over MCP. A decision runs in the
//! background (applying a stack can take minutes); the page follows it in
//! the decisions list, and the job in the job list.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::Console;
use crate::mcp::{DirectCallError, Identity, McpGateway, Refusal};

/// The most decisions the page lists.
const DECISION_WINDOW: usize = 50;
/// The longest a listing tool is waited for.
const LIST_DEADLINE: Duration = Duration::from_secs(5);

/// The lists, each read with one tool: (key in the view, tool, key of the
/// list in its structured result).
const LISTS: [(&str, &str, &str); 4] = [
    ("previews", "pulumi_list_previews", "previews"),
    ("pulumi_jobs", "pulumi_list_jobs", "jobs"),
    ("agent_pending", "agno_list_pending", "pending"),
    ("agent_runs", "agno_list_runs", "runs"),
];

/// The Work lists as `who` may see them: each `{"items": [...]}`, or
/// `{"problem": "..."}` saying why it could not be read (no worker serves
/// it, the policy does not allow it, the bus is down).
pub(super) async fn lists(gateway: &McpGateway, who: &Identity) -> Value {
    let reads = LISTS.map(|(_, tool, key)| read_list(gateway, who, tool, key));
    let lists = futures::future::join_all(reads).await;
    let names = LISTS.iter().map(|(name, _, _)| (*name).to_owned());
    Value::Object(names.zip(lists).collect())
}

async fn read_list(gateway: &McpGateway, who: &Identity, tool: &str, key: &str) -> Value {
    let call = gateway.call_for_console(tool, json!({}), who, false);
    match tokio::time::timeout(LIST_DEADLINE, call).await {
        Err(_) => {
            json!({"problem": format!("{tool} did not answer within {}s", LIST_DEADLINE.as_secs())})
        }
        Ok(Err(DirectCallError::Refused(Refusal::UnknownTool(_)))) => json!({"problem": format!(
            "no live worker offers {tool}, so this list is empty here; start the worker that \
             serves it ({})",
            if tool.starts_with("pulumi") { "pulumi-worker" } else { "agno-worker" }
        )}),
        Ok(Err(e)) => json!({"problem": e.to_string()}),
        Ok(Ok(out)) if out.is_error => json!({"problem": text_of(&out)}),
        Ok(Ok(out)) => {
            let items = out
                .structured
                .as_ref()
                .and_then(|s| s.get(key))
                .cloned()
                .unwrap_or_else(|| json!([]));
            json!({ "items": items })
        }
    }
}

/// The first text of a tool's output.
fn text_of(out: &sophia_proto::ToolOutput) -> String {
    out.content
        .iter()
        .find_map(|c| match c {
            sophia_proto::Content::Text { text } => Some(text.clone()),
            _ => None,
        })
        .unwrap_or_default()
}

/// A decision the page asks for.
#[derive(Debug, Deserialize)]
pub(super) struct Decide {
    /// `preview` (a Pulumi preview) or `action` (an agent's pending action).
    kind: Kind,
    /// The preview's or the action's id.
    id: String,
    /// `approve` or `reject`.
    decision: Verdict,
    /// Why, for a rejection (optional).
    #[serde(default)]
    reason: Option<String>,
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum Kind {
    Preview,
    Action,
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum Verdict {
    Approve,
    Reject,
}

/// A decision as the page lists it.
#[derive(Clone, Debug, Serialize)]
pub(super) struct Decision {
    seq: u64,
    at_ms: u64,
    by: String,
    kind: Kind,
    id: String,
    decision: Verdict,
    /// What it calls.
    tool: String,
    /// `running`, `done` or `failed`.
    state: &'static str,
    /// What the tool answered.
    outcome: String,
}

/// The recent decisions, newest first. Cheap to clone.
#[derive(Clone, Default)]
pub(super) struct Decisions(Arc<parking_lot::Mutex<(u64, VecDeque<Decision>)>>);

impl Decisions {
    pub(super) fn list(&self) -> Vec<Decision> {
        self.0.lock().1.iter().cloned().collect()
    }

    fn start(&self, mut d: Decision) -> Decision {
        let mut guard = self.0.lock();
        guard.0 += 1;
        d.seq = guard.0;
        guard.1.push_front(d.clone());
        guard.1.truncate(DECISION_WINDOW);
        d
    }

    fn end(&self, seq: u64, state: &'static str, outcome: String) {
        if let Some(d) = self.0.lock().1.iter_mut().find(|d| d.seq == seq) {
            d.state = state;
            d.outcome = outcome;
        }
    }
}

/// `POST /console/api/decide` `{kind, id, decision, reason?}`: 202 with the
/// decision, which goes on in the background; 400 for a malformed body,
/// 409 when the preview no longer waits for a decision.
pub(super) async fn decide(
    State(console): State<Console>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let viewer = match console.actor(&headers, "/console/api/decide").await {
        Ok(v) => v,
        Err(refused) => return refused,
    };
    let ask: Decide = match serde_json::from_slice(&body) {
        Ok(ask) => ask,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!(
                    "the body must be {{\"kind\": \"preview\"|\"action\", \"id\": \"...\", \
                     \"decision\": \"approve\"|\"reject\"}}: {e}"
                ),
            );
        }
    };
    let gateway = &console.0.gateway;
    let (tool, args) = match call_for(gateway, &viewer.identity, &ask).await {
        Ok(call) => call,
        Err(refused) => return refused,
    };
    let decision = console.0.decisions.start(Decision {
        seq: 0,
        at_ms: sophia_kit::process::now_ms(),
        by: viewer.identity.principal.clone(),
        kind: ask.kind,
        id: ask.id.clone(),
        decision: ask.decision,
        tool: tool.clone(),
        state: "running",
        outcome: String::new(),
    });
    tracing::info!(by = %viewer.identity.principal, tool = %tool, id = %ask.id, "a decision from the console");
    let (gateway, decisions, who, seq) = (
        gateway.clone(),
        console.0.decisions.clone(),
        viewer.identity,
        decision.seq,
    );
    tokio::spawn(async move {
        let (state, outcome) = match gateway.call_for_console(&tool, args, &who, true).await {
            Ok(out) if out.is_error => ("failed", text_of(&out)),
            Ok(out) => ("done", text_of(&out)),
            Err(e) => ("failed", e.to_string()),
        };
        decisions.end(seq, state, outcome);
    });
    (StatusCode::ACCEPTED, Json(json!({ "decision": decision }))).into_response()
}

/// The tool and arguments that carry out `ask`. A preview is looked up in
/// the pending list first: the worker's record, not the page, says which
/// stack it changes and which tool applies it.
async fn call_for(
    gateway: &McpGateway,
    who: &Identity,
    ask: &Decide,
) -> Result<(String, Value), Response> {
    match (ask.kind, ask.decision) {
        (Kind::Action, verdict) => Ok((
            "agno_confirm".into(),
            json!({"action_id": ask.id, "approve": verdict == Verdict::Approve}),
        )),
        (Kind::Preview, Verdict::Reject) => {
            let mut args = json!({"preview_id": ask.id});
            if let Some(reason) = ask.reason.as_deref().filter(|r| !r.trim().is_empty()) {
                args["reason"] = json!(reason);
            }
            Ok(("pulumi_reject_preview".into(), args))
        }
        (Kind::Preview, Verdict::Approve) => {
            let listed = gateway
                // The most the list gives, so an older preview is found too.
                .call_for_console("pulumi_list_previews", json!({"limit": 100}), who, false)
                .await
                .map_err(|e| error(refusal_status(&e), e.to_string()))?;
            let preview = listed
                .structured
                .as_ref()
                .and_then(|s| s["previews"].as_array())
                .and_then(|all| all.iter().find(|p| p["preview_id"] == json!(ask.id)))
                .ok_or_else(|| {
                    error(
                        StatusCode::CONFLICT,
                        format!(
                            "preview {} no longer waits for a decision (applied, rejected or \
                             gone); see the job list",
                            ask.id
                        ),
                    )
                })?;
            let tool = preview["confirm_with"]
                .as_str()
                .unwrap_or("pulumi_up")
                .to_owned();
            Ok((
                tool,
                json!({"project": preview["project"], "stack": preview["stack"],
                       "preview_id": ask.id}),
            ))
        }
    }
}

fn refusal_status(e: &DirectCallError) -> StatusCode {
    match e {
        DirectCallError::Refused(Refusal::Forbidden(_)) => StatusCode::FORBIDDEN,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    }
}

fn error(status: StatusCode, message: String) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}
