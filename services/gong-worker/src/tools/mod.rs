//! The worker's MCP tools (category `business_intelligence`), one file per
//! family. All are read-only and idempotent: they only read from Gong.
//!
//! # Layout
//! - `calls.rs`: `gong_list_calls` (a date range, cursor paging) and
//!   `gong_get_call` (one call's metadata, parties, topics and brief).
//! - `transcripts.rs`: `gong_get_transcript`, with speakers named from the
//!   call's parties.
//! - here: [`Ctx`], what the tools share; the argument helpers; and the one
//!   mapping from [`GongError`] to the wire's error codes.
//!
//! Every tool has the same shape: a `fn` that declares it and a named
//! `async fn run_*(ctx, call)` that runs a call ([`sophia_kit::Tool::with_ctx`]).

mod calls;
mod transcripts;

use std::sync::Arc;

use serde_json::{Value, json};
use sophia_kit::{Call, ErrorCode, WireError, Worker};

use crate::client::{GongClient, GongError};

/// What the tools share.
#[derive(Debug)]
pub struct Ctx {
    /// The Gong account's client.
    pub client: GongClient,
}

impl Ctx {
    /// What this worker cannot do now: call Gong at all, without credentials.
    pub fn degraded(&self) -> Vec<String> {
        let missing = self.client.missing_credentials();
        if missing.is_empty() {
            return Vec::new();
        }
        vec![GongError::MissingCredentials { missing }.to_string()]
    }

    /// Sends a request for `call` (its deadline bounds any retry wait).
    pub(crate) async fn send<T: serde::de::DeserializeOwned>(
        &self,
        call: &Call,
        path: &str,
        request: crate::client::Request<'_, Value>,
        scope: &'static str,
        what: &str,
    ) -> Result<T, GongError> {
        let deadline = tokio::time::Instant::from_std(call.deadline);
        self.client.send(path, request, scope, what, deadline).await
    }
}

/// The worker with its tools.
pub fn worker(ctx: Arc<Ctx>) -> Worker {
    Worker::new("gong-worker", env!("CARGO_PKG_VERSION"))
        .description("Sophia Mesh Gong tools: calls, call details and transcripts")
        .tool(calls::list_calls(&ctx))
        .tool(calls::get_call(&ctx))
        .tool(transcripts::get_transcript(&ctx))
}

/// The one mapping of Gong's failures to the wire's codes.
pub(crate) fn gong_error(e: GongError) -> WireError {
    let code = match &e {
        GongError::MissingCredentials { .. } => ErrorCode::Unavailable,
        GongError::Unauthorized { .. } => ErrorCode::PermissionDenied,
        GongError::NotFound { .. } | GongError::Rejected { .. } => ErrorCode::InvalidArguments,
        GongError::RateLimited { .. }
        | GongError::Unavailable { .. }
        | GongError::Timeout { .. } => ErrorCode::Unavailable,
        GongError::Malformed { .. } => ErrorCode::Failed,
    };
    let mut wire = WireError::new(code, e.to_string());
    if let GongError::RateLimited {
        retry_after: Some(d),
    } = e
    {
        wire.data = Some(json!({"retry_after_seconds": d.as_secs_f64().ceil() as u64}));
    }
    wire
}

/// The JSON Schema of a Gong call id.
fn call_id_schema() -> Value {
    json!({"type": "string", "pattern": "^[0-9]{1,20}$",
           "description": "Gong's numeric call id (up to 20 digits), as gong_list_calls returns it"})
}

/// The argument `call_id`: Gong's numeric id, up to 20 digits.
fn call_id(call: &Call) -> Result<String, WireError> {
    match call.args.get("call_id") {
        Some(Value::String(s))
            if !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit()) =>
        {
            Ok(s.clone())
        }
        other => Err(WireError::invalid_arguments(format!(
            "`call_id` must be Gong's numeric call id (up to 20 digits, as gong_list_calls returns it); got {}",
            other
                .map(Value::to_string)
                .unwrap_or_else(|| "nothing".into())
        ))),
    }
}

/// Seconds as `m:ss` or `h:mm:ss`.
fn clock(seconds: f64) -> String {
    let s = if seconds.is_finite() && seconds > 0.0 {
        seconds as u64
    } else {
        0
    };
    let (h, m, s) = (s / 3600, s / 60 % 60, s % 60);
    if h > 0 {
        format!("{h}:{m:02}:{s:02}")
    } else {
        format!("{m}:{s:02}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clocks_read_as_people_write_them() {
        assert_eq!(clock(0.0), "0:00");
        assert_eq!(clock(65.9), "1:05");
        assert_eq!(clock(3723.0), "1:02:03");
        assert_eq!(clock(f64::NAN), "0:00");
        assert_eq!(clock(-4.0), "0:00");
    }
}
