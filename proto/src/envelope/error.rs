//! Errors on the wire: a code the caller can act on, and a sentence.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What went wrong, in terms of what the caller can do about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The arguments do not fit the tool's schema or were rejected by the
    /// tool. Fix the arguments; retrying as is will fail again.
    InvalidArguments,
    /// No such tool is served. Check the tool list.
    UnknownTool,
    /// No worker could take the call (none running, or the bus is down).
    /// Retry later or start a worker.
    Unavailable,
    /// The call's deadline passed before it finished.
    Timeout,
    /// The caller cancelled the call.
    Cancelled,
    /// A payload was larger than the mesh can carry.
    TooLarge,
    /// The message could not be decoded: not MessagePack, or not an envelope.
    BadEnvelope,
    /// The peer speaks a protocol version this side does not.
    UnsupportedVersion,
    /// The operation conflicts with another in progress (e.g. a locked stack).
    Conflict,
    /// The caller may not do this.
    PermissionDenied,
    /// The operation ran and failed; the message says why.
    Failed,
    /// The caller is over its rate or concurrency limit. Retry after the
    /// time the message (and `data.retry_after_ms`) gives.
    Busy,
    /// A bug or unexpected state in the worker.
    Internal,
    /// The replica running the call died, froze or was cut off before it
    /// answered: the call may or may not have run. Check before retrying.
    WorkerLost,
    /// Not a failure: the call needs the client's answers first (MCP
    /// 2026-07-28 multi-round-trip); `data` is a
    /// [`super::InputRequired`]. Call again with the answers.
    InputRequired,
    /// The caller's client lacks a capability the call needs (it cannot be
    /// asked that kind of question: elicitation, sampling, roots); `data`
    /// names it as `{"capability": "sampling"}`. Call again from a client
    /// that declares it.
    MissingCapability,
    /// A code this version does not know (sent by a newer peer).
    #[serde(other)]
    Unknown,
}

impl ErrorCode {
    /// The code's name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidArguments => "invalid_arguments",
            ErrorCode::UnknownTool => "unknown_tool",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Timeout => "timeout",
            ErrorCode::Cancelled => "cancelled",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::BadEnvelope => "bad_envelope",
            ErrorCode::UnsupportedVersion => "unsupported_version",
            ErrorCode::Conflict => "conflict",
            ErrorCode::PermissionDenied => "permission_denied",
            ErrorCode::Failed => "failed",
            ErrorCode::Busy => "busy",
            ErrorCode::Internal => "internal",
            ErrorCode::WorkerLost => "worker_lost",
            ErrorCode::InputRequired => "input_required",
            ErrorCode::MissingCapability => "missing_capability",
            ErrorCode::Unknown => "unknown",
        }
    }

    /// The code as a NATS service error code (`Nats-Service-Error-Code`),
    /// after the HTTP status of the same meaning.
    pub fn service_code(self) -> usize {
        match self {
            ErrorCode::InvalidArguments | ErrorCode::BadEnvelope | ErrorCode::MissingCapability => {
                400
            }
            ErrorCode::PermissionDenied => 403,
            ErrorCode::UnknownTool => 404,
            ErrorCode::Conflict => 409,
            ErrorCode::TooLarge => 413,
            ErrorCode::Busy => 429,
            ErrorCode::Cancelled => 499,
            ErrorCode::Failed | ErrorCode::Internal | ErrorCode::Unknown => 500,
            ErrorCode::WorkerLost => 502,
            ErrorCode::Unavailable => 503,
            ErrorCode::Timeout => 504,
            ErrorCode::UnsupportedVersion => 505,
            // Like HTTP 428 Precondition Required: answer, then call again.
            ErrorCode::InputRequired => 428,
        }
    }

    /// Whether the same call may succeed if simply retried later.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            ErrorCode::Unavailable | ErrorCode::Timeout | ErrorCode::Conflict | ErrorCode::Busy
        )
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A typed error on the wire.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[error("{code}: {message}")]
pub struct WireError {
    /// What kind of failure, for the caller to act on.
    pub code: ErrorCode,
    /// A sentence saying what happened and what to do next.
    pub message: String,
    /// Machine-readable details (e.g. schema validation errors).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}

impl WireError {
    /// An error with a code and message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            data: None,
        }
    }

    /// The arguments were wrong: fix them before calling again.
    pub fn invalid_arguments(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidArguments, message)
    }

    /// The operation ran and failed.
    pub fn failed(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Failed, message)
    }

    /// The operation conflicts with another one in progress.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Conflict, message)
    }

    /// A bug or unexpected state.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Internal, message)
    }

    /// The caller's client cannot answer `question`'s kind: the error
    /// names the capability it would have to declare.
    pub fn missing_capability(question: &super::Question) -> Self {
        let capability = question.capability();
        Self::new(
            ErrorCode::MissingCapability,
            format!(
                "the caller's MCP client does not support {capability} (it did not declare the \
                 `{capability}` client capability), so the call cannot ask it. Call again from a \
                 client that declares it"
            ),
        )
        .with_data(serde_json::json!({ "capability": capability }))
    }

    /// The capability a [`ErrorCode::MissingCapability`] error names.
    pub fn missing_capability_name(&self) -> Option<&str> {
        (self.code == ErrorCode::MissingCapability)
            .then(|| self.data.as_ref()?.get("capability")?.as_str())
            .flatten()
    }

    /// The same error with details attached.
    pub fn with_data(mut self, data: Value) -> Self {
        self.data = Some(data);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Question;

    #[test]
    fn a_missing_capability_names_it() {
        let error = WireError::missing_capability(&Question::Sample {
            params: Value::Null,
        });
        assert_eq!(error.code, ErrorCode::MissingCapability);
        assert!(error.message.contains("does not support sampling"));
        let back: WireError = crate::decode(&crate::encode(&error).unwrap()).unwrap();
        assert_eq!(back.missing_capability_name(), Some("sampling"));
        assert_eq!(WireError::failed("no").missing_capability_name(), None);
        assert!(!ErrorCode::MissingCapability.is_retryable());
    }
}
