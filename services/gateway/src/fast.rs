//! The fast path: a `tools/call` POSTed in a live session, answered from
//! here as one `application/json` response, without rmcp's session worker.
//!
//! rmcp serves every request of a session through one task (the session
//! worker): it opens an SSE stream per POST, stores a priming event and the
//! result as SSE events, and routes them back to the stream. With many
//! calls in flight on one session, that task and those events are most of
//! a call's cost (`docs/performance.md`, issue 16). A plain tool call needs
//! none of it: the fast path runs the same handler
//! ([`rmcp::Service::handle_request`] on the session's
//! [`crate::mcp::McpGateway`], with the session's peer) and writes the
//! JSON-RPC response as the HTTP response, as the Streamable HTTP transport
//! allows.
//!
//! Everything else goes to rmcp, unchanged, and so does any `tools/call`
//! that could need the request's own SSE stream or that rmcp would answer
//! differently:
//! - the client asked for progress (`_meta.progressToken`): progress
//!   travels on the call's stream, which also makes it resumable;
//! - the call may ask the person to confirm a destructive tool, or is the
//!   profile's `find_tools` ([`crate::mcp::McpGateway::answers_alone`]);
//! - per-request protocol metadata (`_meta["io.modelcontextprotocol/..."]`)
//!   or an `MCP-Protocol-Version` from 2026-07-28 on;
//! - a session this gateway does not hold in memory (rmcp restores it);
//! - a client that answers questions but has no standalone (GET) stream
//!   open yet: a worker's question would find no stream (rmcp's path gives
//!   the client the time it had before to open one);
//! - an `Origin` header, a `Host` not plainly allowed, an `Accept` or
//!   `Content-Type` rmcp would refuse: rmcp answers those with its errors.
//!
//! What a fast call still has: authentication and the per-session request
//! id check (the layers in front), the policy, profile, limits, audit,
//! metrics and spans (the handler), questions and log records relayed
//! through the session's peer on its standalone stream (where rmcp sends
//! them too), and cancellation by `notifications/cancelled` ([`CallCancel`])
//! or by the client going away.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rmcp::Service;
use rmcp::model::{
    ClientJsonRpcMessage, ClientRequest, ErrorData, GetExtensions, GetMeta, ServerJsonRpcMessage,
};
use rmcp::service::RequestContext;
use serde::Deserialize as _;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::live::LiveSessions;

/// The JSON-RPC message of a POST, as the body guard in front parsed it.
#[derive(Clone)]
pub struct Incoming(pub Arc<Value>);

/// Cancels the request it comes with (`notifications/cancelled` naming its
/// id in its session, or the client going away).
#[derive(Clone)]
pub struct CallCancel(pub CancellationToken);

/// Protocol revisions whose sessions the fast path serves (the session
/// revisions; rmcp treats a POST without the header as 2025-03-26).
const SESSION_REVISIONS: [&str; 4] = ["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"];

/// The fast path of one MCP endpoint.
#[derive(Clone)]
pub struct FastPath {
    live: LiveSessions,
    /// `SOPHIA_ALLOWED_HOSTS`, parsed as rmcp parses them (empty: any).
    hosts: Arc<[(String, Option<u16>)]>,
}

fn authority(s: &str) -> Option<(String, Option<u16>)> {
    let a = axum::http::uri::Authority::try_from(s.trim()).ok()?;
    let host = a.host().trim_matches(['[', ']']).to_ascii_lowercase();
    Some((host, a.port_u16()))
}

impl FastPath {
    /// The fast path over `live`'s sessions, for requests to `allowed_hosts`.
    pub fn new(live: LiveSessions, allowed_hosts: &[String]) -> Self {
        let hosts = allowed_hosts
            .iter()
            .filter(|h| !h.trim().is_empty())
            .map(|h| {
                authority(h).unwrap_or_else(|| {
                    (h.trim().trim_matches(['[', ']']).to_ascii_lowercase(), None)
                })
            })
            .collect();
        Self { live, hosts }
    }

    /// Whether the headers are ones rmcp accepts without a word: an allowed
    /// Host, no Origin, JSON in, JSON and SSE accepted, a session revision.
    fn plain_headers(&self, headers: &HeaderMap) -> bool {
        let text = |name| headers.get(name).and_then(|v| v.to_str().ok());
        let host_ok = self.hosts.is_empty()
            || text(header::HOST)
                .and_then(authority)
                .is_some_and(|(h, p)| {
                    self.hosts
                        .iter()
                        .any(|(ah, ap)| *ah == h && ap.is_none_or(|ap| Some(ap) == p))
                });
        let content_json = text(header::CONTENT_TYPE).is_some_and(|c| {
            let essence = c.split(';').next().unwrap_or_default().trim();
            essence.eq_ignore_ascii_case("application/json")
        });
        let accepts = |wanted: &str| {
            headers.get_all(header::ACCEPT).iter().any(|v| {
                v.to_str()
                    .is_ok_and(|v| v.split(',').any(|e| e.trim().eq_ignore_ascii_case(wanted)))
            })
        };
        let revision_ok = match headers.get("mcp-protocol-version") {
            None => true,
            Some(v) => v.to_str().is_ok_and(|v| SESSION_REVISIONS.contains(&v)),
        };
        host_ok
            && !headers.contains_key(header::ORIGIN)
            && content_json
            && accepts("application/json")
            && accepts("text/event-stream")
            && revision_ok
    }
}

/// Whether `message` is a `tools/call` request the fast path may answer
/// as far as the message itself says (no progress, no per-request
/// protocol metadata).
fn plain_call(message: &Value) -> bool {
    if message.get("method").and_then(Value::as_str) != Some("tools/call")
        || message.get("id").is_none_or(Value::is_null)
    {
        return false;
    }
    match message.pointer("/params/_meta") {
        None => true,
        Some(Value::Object(meta)) => meta
            .keys()
            .all(|k| k != "progressToken" && !k.starts_with("io.modelcontextprotocol/")),
        Some(_) => false,
    }
}

/// The middleware in front of an endpoint's rmcp service: answers plain
/// `tools/call`s of live sessions, passes on everything else.
pub async fn tools_call(State(fast): State<FastPath>, req: Request, next: Next) -> Response {
    let Some(session) = eligible(&fast, &req) else {
        return next.run(req).await;
    };
    let message = req.extensions().get::<Incoming>().map(|m| m.0.clone());
    let parsed = message.and_then(|m| ClientJsonRpcMessage::deserialize(&*m).ok());
    let Some(ClientJsonRpcMessage::Request(call)) = parsed else {
        return next.run(req).await;
    };
    let ClientRequest::CallToolRequest(params) = &call.request else {
        return next.run(req).await;
    };
    let args = params.params.arguments.as_ref();
    if !session.handler.answers_alone(&params.params.name, args) {
        return next.run(req).await;
    }
    let (parts, _) = req.into_parts();
    let cancel = parts
        .extensions
        .get::<CallCancel>()
        .map(|c| c.0.clone())
        .unwrap_or_default();
    let id = call.id;
    let mut request = call.request;
    let meta = std::mem::take(request.get_meta_mut());
    let mut extensions = std::mem::take(request.extensions_mut());
    extensions.insert(parts);
    let mut context = RequestContext::new(id.clone(), session.peer.clone());
    context.ct = cancel.child_token();
    context.meta = meta;
    context.extensions = extensions;
    let handler = session.handler.clone();
    // The call runs to its end (audit, metrics) even if the client goes
    // away; going away cancels it, as `notifications/cancelled` would.
    let task = tokio::spawn(async move { handler.handle_request(request, context).await });
    let on_drop = cancel.drop_guard();
    let outcome = task.await;
    on_drop.disarm();
    let message = match outcome {
        Ok(Ok(result)) => ServerJsonRpcMessage::response(result, id),
        Ok(Err(error)) => ServerJsonRpcMessage::error(error, Some(id)),
        Err(e) => ServerJsonRpcMessage::error(
            ErrorData::internal_error(format!("the call ended abnormally: {e}"), None),
            Some(id),
        ),
    };
    match serde_json::to_vec(&message) {
        Ok(body) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("could not encode the response: {e}"),
        )
            .into_response(),
    }
}

/// The live session `req` is a plain `tools/call` of, if it is one.
fn eligible(fast: &FastPath, req: &Request) -> Option<Arc<crate::live::LiveSession>> {
    if req.method() != axum::http::Method::POST {
        return None;
    }
    let message = req.extensions().get::<Incoming>()?;
    if !plain_call(&message.0) || !fast.plain_headers(req.headers()) {
        return None;
    }
    let id = req.headers().get("mcp-session-id")?.to_str().ok()?;
    fast.live.get(id).filter(|s| s.reachable())
}
