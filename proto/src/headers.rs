//! NATS header names the mesh uses.
//!
//! Trace context travels in W3C `traceparent` and `tracestate`, exactly as
//! the W3C Trace Context spec writes them for HTTP.

use async_nats::HeaderMap;
use uuid::Uuid;

/// W3C trace context: `00-<trace id>-<span id>-<flags>`.
pub const TRACEPARENT: &str = "traceparent";
/// W3C vendor trace state.
pub const TRACESTATE: &str = "tracestate";
/// The request id of the call, the same as the envelope's `id`.
pub const REQUEST_ID: &str = "Sophia-Request-Id";
/// Set to [`OFFLOADED`] when the body is an [`crate::payload::ObjectRef`]
/// rather than the envelope itself (see [`crate::payload`]).
pub const PAYLOAD: &str = "Sophia-Payload";
/// The value of [`PAYLOAD`] for an offloaded body.
pub const OFFLOADED: &str = "object";
/// On a tool request: where the worker acknowledges it at once (the
/// caller's [`crate::subject::progress`] subject of the call).
pub const ACK_TO: &str = "Sophia-Ack-To";
/// On an acknowledgement (an empty message to [`ACK_TO`]): the instance id
/// of the replica that took the request; the caller then watches that
/// replica's [`crate::subject::alive`] subject until the reply.
pub const ACCEPTED_BY: &str = "Sophia-Accepted-By";

/// On a reply sent as a NATS service error (headers `Nats-Service-Error`
/// and `Nats-Service-Error-Code`, empty body, which `$SRV.STATS` and `nats
/// micro stats` count): the error's [`crate::ToolResponse`] envelope, in
/// MessagePack, base64. See [`error_envelope`] and [`read_error_envelope`].
pub const ERROR_ENVELOPE: &str = "Sophia-Error";
/// The largest envelope carried in [`ERROR_ENVELOPE`]; a larger error goes
/// as a normal reply, its envelope in the body.
pub const MAX_ERROR_ENVELOPE: usize = 16 * 1024;

/// The value of [`ERROR_ENVELOPE`] for an encoded error envelope, if it is
/// small enough to travel in a header.
pub fn error_envelope(encoded: &[u8]) -> Option<String> {
    use base64::Engine;
    (encoded.len() <= MAX_ERROR_ENVELOPE)
        .then(|| base64::engine::general_purpose::STANDARD.encode(encoded))
}

/// The encoded error envelope a reply carries in [`ERROR_ENVELOPE`], if any
/// (`Err` when the header is there but is not base64).
pub fn read_error_envelope(headers: Option<&HeaderMap>) -> Option<Result<Vec<u8>, String>> {
    use base64::Engine;
    let value = headers?.get(ERROR_ENVELOPE)?;
    Some(
        base64::engine::general_purpose::STANDARD
            .decode(value.as_str())
            .map_err(|e| format!("the {ERROR_ENVELOPE} header is not base64: {e}")),
    )
}

/// Trace context and request id to put on a message.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Context {
    /// The call's request id.
    pub request_id: Option<Uuid>,
    /// W3C `traceparent`, if the call is traced.
    pub traceparent: Option<String>,
    /// W3C `tracestate`, if any.
    pub tracestate: Option<String>,
}

impl Context {
    /// Writes this context into NATS headers.
    pub fn to_headers(&self) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(id) = self.request_id {
            h.insert(REQUEST_ID, id.to_string().as_str());
        }
        if let Some(tp) = &self.traceparent {
            h.insert(TRACEPARENT, tp.as_str());
        }
        if let Some(ts) = &self.tracestate {
            h.insert(TRACESTATE, ts.as_str());
        }
        h
    }

    /// Reads the context from NATS headers; missing or malformed values are
    /// left out.
    pub fn from_headers(h: Option<&HeaderMap>) -> Self {
        let Some(h) = h else {
            return Self::default();
        };
        let get = |name: &str| h.get(name).map(|v| v.as_str().to_owned());
        Self {
            request_id: get(REQUEST_ID).and_then(|s| s.parse().ok()),
            traceparent: get(TRACEPARENT).filter(|s| is_traceparent(s)),
            tracestate: get(TRACESTATE),
        }
    }
}

/// Whether `s` is a well-formed W3C `traceparent` (version 00).
pub fn is_traceparent(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    let hex = |p: &str, n: usize| p.len() == n && p.bytes().all(|b| b.is_ascii_hexdigit());
    parts.len() == 4
        && hex(parts[0], 2)
        && hex(parts[1], 32)
        && hex(parts[2], 16)
        && hex(parts[3], 2)
        && parts[1] != "0".repeat(32)
        && parts[2] != "0".repeat(16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_round_trips_through_headers() {
        let ctx = Context {
            request_id: Some(Uuid::new_v4()),
            traceparent: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()),
            tracestate: Some("congo=t61rcWkgMzE".into()),
        };
        assert_eq!(Context::from_headers(Some(&ctx.to_headers())), ctx);
    }

    #[test]
    fn malformed_traceparent_is_dropped() {
        let mut h = HeaderMap::new();
        h.insert(TRACEPARENT, "not-a-trace");
        assert_eq!(Context::from_headers(Some(&h)).traceparent, None);
    }
}
