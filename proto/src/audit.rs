//! The audit record: one per tool call, refusal and confirmation, appended
//! by gateways to the JetStream stream [`STREAM`] on
//! `sophia.v1.audit.<kind>` ([`crate::subject::audit`]). Stored as JSON, so
//! `nats stream view sophia_audit` reads it. Argument values and tokens are
//! never recorded: arguments only as a SHA-256 hash.

use serde::{Deserialize, Serialize};

/// The JetStream stream holding audit records.
pub const STREAM: &str = "sophia_audit";

/// What a record is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditKind {
    /// A tool call that reached the bus, whatever its outcome.
    Call,
    /// A call refused at the gateway (policy, profile, limits, arguments).
    Refusal,
    /// A person's yes or no: an answer to a question before a change, a
    /// confirmed preview, an agent's pending action decided.
    Confirmation,
}

impl AuditKind {
    /// The kind's name, the last token of its subject.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditKind::Call => "call",
            AuditKind::Refusal => "refusal",
            AuditKind::Confirmation => "confirmation",
        }
    }
}

/// One audit record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// When, in milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// What it records.
    pub kind: AuditKind,
    /// Who: the authenticated principal.
    pub principal: String,
    /// Its roles.
    #[serde(default)]
    pub roles: Vec<String>,
    /// The MCP endpoint's profile (`ask`, `agent`, ...); `None` on `/mcp`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// The way in: `mcp`, `rest`, `stdio`, `console`.
    pub via: String,
    /// The tool (or MCP method) concerned.
    pub tool: String,
    /// How it ended: `ok`, an error code (`permission_denied`, `busy`,
    /// `timeout`, ...), `tool_error`; for confirmations `accepted`,
    /// `declined` or `requested`.
    pub outcome: String,
    /// How long it took, in milliseconds.
    #[serde(default)]
    pub duration_ms: u64,
    /// The trace the call belongs to, to find it in the tracing backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    /// SHA-256 (hex) of the arguments' JSON: tells identical calls apart
    /// without recording what they said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args_sha256: Option<String>,
}
