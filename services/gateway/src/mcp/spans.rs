//! The gateway's server spans, children of the client's trace context.

use super::*;

/// Trace context from the HTTP `traceparent` header, else from the request's
/// `_meta` (MCP SEP-414).
pub(super) fn trace_context(context: &RequestContext<RoleServer>) -> headers::Context {
    let parts = context.extensions.get::<http::request::Parts>();
    let header = |name: &str| {
        parts
            .and_then(|p| p.headers.get(name))
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let traceparent = header(headers::TRACEPARENT)
        .or_else(|| context.meta.get_traceparent().map(str::to_owned))
        .filter(|t| headers::is_traceparent(t));
    // tracestate only means something alongside its traceparent.
    let tracestate = traceparent.as_ref().and_then(|_| {
        header(headers::TRACESTATE)
            .or_else(|| context.meta.get_tracestate().map(str::to_owned))
            .filter(|s| !s.is_empty() && s.len() <= 512)
    });
    headers::Context {
        request_id: None,
        traceparent,
        tracestate,
    }
}

/// The gateway's span for one MCP request (`<method> <target>`, kind
/// server), a child of the client's trace context when it sent one.
pub(super) fn server_span(
    method: &str,
    target: Option<&str>,
    context: &RequestContext<RoleServer>,
    mut attributes: Vec<KeyValue>,
) -> Span {
    let parts = context.extensions.get::<http::request::Parts>();
    attributes.push(KeyValue::new(attr::MCP_METHOD, method.to_owned()));
    attributes.push(KeyValue::new(
        attr::JSONRPC_REQUEST_ID,
        context.id.to_string(),
    ));
    attributes.push(KeyValue::new(
        attr::NETWORK_TRANSPORT,
        if parts.is_some() { "tcp" } else { "pipe" },
    ));
    if let Some(session) = parts
        .and_then(|p| p.headers.get("mcp-session-id"))
        .and_then(|v| v.to_str().ok())
    {
        attributes.push(KeyValue::new(attr::MCP_SESSION, session.to_owned()));
    }
    if let Some(info) = context.peer.peer_info() {
        attributes.push(KeyValue::new(
            attr::MCP_PROTOCOL_VERSION,
            info.protocol_version.to_string(),
        ));
    }
    let name = match target {
        Some(t) => format!("{method} {t}"),
        None => method.to_owned(),
    };
    Span::start(name, SpanKind::Server, &trace_context(context), attributes)
}
