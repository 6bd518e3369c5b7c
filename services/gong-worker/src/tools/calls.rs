//! Calls: `gong_list_calls` and `gong_get_call`.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};
use sophia_kit::{Call, Category, Tool, ToolOutput, ToolResult};

use super::{Ctx, call_id, call_id_schema, clock, gong_error};
use crate::api::{CallMeta, CallsPage, ExtensiveCall, ExtensivePage, extensive_request};
use crate::client::{GongError, Request};
use crate::time::iso8601;

/// The most calls one `gong_list_calls` returns.
const MAX_LIMIT: u64 = 1000;

/// The JSON Schema of a call's metadata, with Gong's field names.
fn call_schema() -> Value {
    let s = json!({"type": "string"});
    json!({"type": "object", "properties": {
        "id": s, "url": s, "title": s, "scheduled": s, "started": s,
        "duration": {"type": "number", "description": "seconds"},
        "primaryUserId": s, "direction": s, "system": s, "scope": s, "media": s,
        "language": s, "workspaceId": s}})
}

/// `gong_list_calls`: the calls in a date range, following Gong's cursor.
pub(super) fn list_calls(ctx: &Arc<Ctx>) -> Tool {
    Tool::new(
        "gong_list_calls",
        Category::BusinessIntelligence,
        "Lists recorded Gong calls in a date range (default: the last 7 days), oldest first: \
         id, title, start, duration, direction, scope. Use a call's id with gong_get_call or \
         gong_get_transcript.",
    )
    .title("List Gong calls")
    .input_schema(json!({"type": "object", "properties": {
        "from": {"type": "string", "format": "date-time",
                 "description": "ISO-8601 start, e.g. 2025-01-31T00:00:00Z; default 7 days ago"},
        "to": {"type": "string", "format": "date-time",
               "description": "ISO-8601 end (exclusive); default now"},
        "limit": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": 100,
                  "description": "The most calls to return; pages are followed until then"},
        "cursor": {"type": "string", "description": "next_cursor of an earlier answer, to go on from there"},
        "workspace_id": {"type": "string", "description": "Only calls of this Gong workspace"}
    }, "additionalProperties": false}))
    .output_schema(json!({"type": "object", "properties": {
        "from": {"type": "string"}, "to": {"type": "string"},
        "calls": {"type": "array", "items": call_schema()},
        "total_records": {"type": "integer", "description": "Calls Gong has in the range"},
        "pages": {"type": "integer", "description": "Pages fetched"},
        "next_cursor": {"type": "string", "description": "Pass as `cursor` for the calls after these"}
    }, "required": ["from", "to", "calls", "pages"]}))
    .read_only()
    .idempotent()
    .open_world()
    .timeout_ms(120_000)
    .with_ctx(ctx, run_list_calls)
}

/// What one listing gathered.
struct Listing {
    calls: Vec<CallMeta>,
    total: Option<u64>,
    pages: u64,
    next_cursor: Option<String>,
}

async fn run_list_calls(c: Arc<Ctx>, call: Call) -> ToolResult {
    let now = SystemTime::now();
    let arg = |k: &str| call.args.get(k).and_then(Value::as_str).map(str::to_owned);
    let from = arg("from").unwrap_or_else(|| iso8601(now - Duration::from_secs(7 * 86_400)));
    let to = arg("to").unwrap_or_else(|| iso8601(now));
    let limit = call.args["limit"]
        .as_u64()
        .unwrap_or(100)
        .clamp(1, MAX_LIMIT) as usize;
    let listing = fetch(&c, &call, &from, &to, limit)
        .await
        .map_err(gong_error)?;
    let mut text = format!(
        "{} call{} from {from} to {to}{}:",
        listing.calls.len(),
        if listing.calls.len() == 1 { "" } else { "s" },
        listing
            .total
            .map(|t| format!(" (Gong has {t} in the range)"))
            .unwrap_or_default()
    );
    for m in &listing.calls {
        text.push_str(&format!("\n- {}", call_line(m)));
    }
    if let Some(cursor) = &listing.next_cursor {
        text.push_str(&format!(
            "\nMore calls follow: call again with cursor {cursor:?}."
        ));
    }
    let mut out = json!({"from": from, "to": to, "calls": listing.calls, "pages": listing.pages});
    if let Some(t) = listing.total {
        out["total_records"] = json!(t);
    }
    if let Some(cursor) = listing.next_cursor {
        out["next_cursor"] = json!(cursor);
    }
    let mut output = ToolOutput::text(text);
    output.structured = Some(out);
    Ok(output)
}

/// Fetches pages until `limit` calls or the last page. A page cut short by
/// `limit` is asked for again by `next_cursor` (its calls repeat, by id).
async fn fetch(
    c: &Ctx,
    call: &Call,
    from: &str,
    to: &str,
    limit: usize,
) -> Result<Listing, GongError> {
    let mut cursor = call
        .args
        .get("cursor")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let workspace = call.args.get("workspace_id").and_then(Value::as_str);
    let mut listing = Listing {
        calls: Vec::new(),
        total: None,
        pages: 0,
        next_cursor: None,
    };
    loop {
        let mut query = vec![
            ("fromDateTime", from.to_owned()),
            ("toDateTime", to.to_owned()),
        ];
        query.extend(workspace.map(|w| ("workspaceId", w.to_owned())));
        query.extend(cursor.clone().map(|c| ("cursor", c)));
        let what = format!("any call from {from} to {to}");
        let page: CallsPage = match c
            .send(
                call,
                "/v2/calls",
                Request::Get(&query),
                "api:calls:read:basic",
                &what,
            )
            .await
        {
            // Gong answers 404 when no call is in the range.
            Err(GongError::NotFound { .. }) if listing.pages == 0 => CallsPage::default(),
            other => other?,
        };
        listing.pages += 1;
        listing.total = listing.total.or(page.records.total_records);
        let room = limit - listing.calls.len();
        let got = page.calls.len();
        listing.calls.extend(page.calls.into_iter().take(room));
        let next = page.records.cursor.filter(|c| !c.is_empty());
        if got > room {
            listing.next_cursor = cursor; // this page again, for the rest of it
            return Ok(listing);
        }
        call.progress(
            listing.calls.len() as f64,
            listing.total.map(|t| t as f64),
            None,
        )
        .await;
        match next {
            Some(n) if got > 0 && listing.calls.len() < limit => cursor = Some(n),
            next => {
                listing.next_cursor = next.filter(|_| got > 0);
                return Ok(listing);
            }
        }
    }
}

/// One line about a call: start, title, id, length, direction and scope.
fn call_line(m: &CallMeta) -> String {
    let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "?".into());
    let length = m
        .duration
        .as_ref()
        .and_then(|d| d.as_f64())
        .map(clock)
        .unwrap_or_else(|| "?".into());
    format!(
        "{} {:?} (id {}, {length}, {}, {})",
        opt(&m.started),
        m.title.clone().unwrap_or_default(),
        opt(&m.id),
        opt(&m.direction),
        opt(&m.scope)
    )
}

/// `gong_get_call`: one call's metadata, parties, topics and brief.
pub(super) fn get_call(ctx: &Arc<Ctx>) -> Tool {
    Tool::new(
        "gong_get_call",
        Category::BusinessIntelligence,
        "One Gong call in detail: its metadata, the people on it (name, email, title, internal or \
         external), the topics discussed and Gong's brief.",
    )
    .title("Get a Gong call")
    .input_schema(json!({"type": "object", "properties": {"call_id": call_id_schema()},
                         "required": ["call_id"], "additionalProperties": false}))
    .output_schema(json!({"type": "object", "properties": {
        "call": call_schema(),
        "parties": {"type": "array", "items": {"type": "object", "properties": {
            "id": {"type": "string"}, "name": {"type": "string"}, "emailAddress": {"type": "string"},
            "title": {"type": "string"}, "userId": {"type": "string"}, "speakerId": {"type": "string"},
            "affiliation": {"type": "string"}, "phoneNumber": {"type": "string"}}}},
        "topics": {"type": "array", "items": {"type": "object", "properties": {
            "name": {"type": ["string", "null"]}, "duration": {"type": ["number", "null"]}}}},
        "brief": {"type": "string"}
    }, "required": ["call", "parties", "topics"]}))
    .read_only()
    .idempotent()
    .open_world()
    .timeout_ms(60_000)
    .with_ctx(ctx, run_get_call)
}

async fn run_get_call(c: Arc<Ctx>, call: Call) -> ToolResult {
    let id = call_id(&call)?;
    let found = extensive(&c, &call, &id).await.map_err(gong_error)?;
    let mut text = format!("Call {}", call_line(&found.meta_data));
    if let Some(url) = &found.meta_data.url {
        text.push_str(&format!("\n{url}"));
    }
    text.push_str("\nParties:");
    for p in &found.parties {
        let who = p
            .name
            .clone()
            .or(p.email_address.clone())
            .unwrap_or_else(|| "(unnamed)".into());
        let extra: Vec<String> = [&p.title, &p.email_address, &p.affiliation]
            .into_iter()
            .flatten()
            .filter(|s| Some(*s) != p.name.as_ref())
            .cloned()
            .collect();
        text.push_str(&format!("\n- {who} ({})", extra.join(", ")));
    }
    if !found.content.topics.is_empty() {
        let topics: Vec<String> = found
            .content
            .topics
            .iter()
            .filter_map(|t| t.name.clone())
            .collect();
        text.push_str(&format!("\nTopics: {}", topics.join(", ")));
    }
    if let Some(brief) = &found.content.brief {
        text.push_str(&format!("\nBrief: {brief}"));
    }
    let mut out =
        json!({"call": found.meta_data, "parties": found.parties, "topics": found.content.topics});
    if let Some(brief) = found.content.brief {
        out["brief"] = json!(brief);
    }
    let mut output = ToolOutput::text(text);
    output.structured = Some(out);
    Ok(output)
}

/// `/v2/calls/extensive` for call `id`: its metadata, parties and content.
pub(super) async fn extensive(c: &Ctx, call: &Call, id: &str) -> Result<ExtensiveCall, GongError> {
    let body = extensive_request(&[id]);
    let what = format!("call {id}");
    let page: ExtensivePage = c
        .send(
            call,
            "/v2/calls/extensive",
            Request::Post(&body),
            "api:calls:read:extensive",
            &what,
        )
        .await?;
    page.calls
        .into_iter()
        .find(|x| x.meta_data.id.as_deref().is_none_or(|got| got == id))
        .ok_or(GongError::NotFound {
            what,
            detail: String::new(),
        })
}
