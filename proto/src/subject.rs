//! NATS subjects and queue groups. Every subject the mesh uses is built here.
//!
//! | subject | who publishes | who subscribes |
//! |---|---|---|
//! | `sophia.v1.tools.<category>.<tool>` | gateway, agents (request) | workers, queue group `sophia` |
//! | `sophia.v1.infer.<model token>.<operation>` | agents, tools (request) | intelligence workers serving that model |
//! | `sophia.v1.infer.models` | anyone (request, gather replies) | every intelligence worker |
//! | `sophia.v1.cancel.<category>` | callers | every worker of that category |
//! | `sophia.v1.progress.<caller>.<request id>` | workers | the caller that asked |
//! | `sophia.v1.ask.<caller>.<request id>` | workers (request) | the caller that asked |
//! | `sophia.v1.mcp.<service>.<method>` | gateways (request) | the service's replicas, queue group `sophia` |
//! | `sophia.v1.mcp.<service>.cancel` | gateways | every replica of the service |
//! | `sophia.v1.mcp.updated` | workers | gateways (sessions subscribed to the resource) |
//! | `sophia.v1.registry.announce` | workers (heartbeat) | gateways |
//! | `sophia.v1.registry.leave` | workers (on drain) | gateways |
//! | `sophia.v1.registry.discover` | gateways (on start) | every worker |
//! | `sophia.v1.audit.<kind>` | gateways | the `sophia_audit` stream |

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The root of every Sophia subject, including the protocol version.
pub const ROOT: &str = "sophia.v1";

/// The queue group every worker replica joins for the subjects it serves, so
/// that NATS hands each request to exactly one replica.
pub const QUEUE_GROUP: &str = "sophia";

/// Where workers announce their tools (heartbeat).
pub const REGISTRY_ANNOUNCE: &str = "sophia.v1.registry.announce";
/// Where workers say they are leaving (graceful drain).
pub const REGISTRY_LEAVE: &str = "sophia.v1.registry.leave";
/// Where workers say a resource they offer changed
/// ([`crate::ResourceUpdated`]).
pub const RESOURCE_UPDATED: &str = "sophia.v1.mcp.updated";
/// The prefix of audit records' subjects ([`audit`]).
pub const AUDIT_PREFIX: &str = "sophia.v1.audit";

/// Where audit records of `kind` are published (and captured by the
/// stream [`crate::audit::STREAM`]): `sophia.v1.audit.<kind>`.
pub fn audit(kind: crate::audit::AuditKind) -> String {
    format!("{AUDIT_PREFIX}.{}", kind.as_str())
}

/// Where a gateway asks every worker to announce itself now.
pub const REGISTRY_DISCOVER: &str = "sophia.v1.registry.discover";

/// An agent category. Tools are served on subjects of their category, so each
/// category can be scaled, secured and monitored on its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    /// Gong, Snowflake, HubSpot and other business-intelligence agents.
    BusinessIntelligence,
    /// Pulumi, Docker and other infrastructure agents.
    Infrastructure,
    /// Code and memory agents.
    CodeGeneration,
    /// Model inference offered as tools (chat, embeddings, model list). Not
    /// an agent category: agents use the [`inference`] subjects directly.
    Inference,
    /// The agent runtime's front door: creating, running, confirming and
    /// listing agents. Every agno-worker replica serves it; the runs
    /// themselves are forwarded to the agent's own category.
    Agents,
}

impl Category {
    /// Every category, in their canonical order.
    pub const ALL: [Category; 5] = [
        Category::BusinessIntelligence,
        Category::Infrastructure,
        Category::CodeGeneration,
        Category::Inference,
        Category::Agents,
    ];

    /// The agent categories (agents are created in these).
    pub const AGENTS: [Category; 3] = [
        Category::BusinessIntelligence,
        Category::Infrastructure,
        Category::CodeGeneration,
    ];

    /// The category's name as used on the wire and in subjects.
    pub fn as_str(self) -> &'static str {
        match self {
            Category::BusinessIntelligence => "business_intelligence",
            Category::Infrastructure => "infrastructure",
            Category::CodeGeneration => "code_generation",
            Category::Inference => "inference",
            Category::Agents => "agents",
        }
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A category name that is not one of [`Category::ALL`].
#[derive(Debug, thiserror::Error)]
#[error(
    "unknown category {0:?}: expected one of business_intelligence, infrastructure, code_generation, inference, agents"
)]
pub struct UnknownCategory(pub String);

impl FromStr for Category {
    type Err = UnknownCategory;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Category::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| UnknownCategory(s.to_owned()))
    }
}

/// The longest tool name the mesh accepts. Cursor allows at most 60 characters
/// for server name plus tool name; 48 leaves 12 for the server's key in
/// `mcp.json` (`sophia` uses 6).
pub const MAX_TOOL_NAME_LEN: usize = 48;

/// Why a tool name was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InvalidToolName {
    /// The name is empty.
    #[error("tool name is empty")]
    Empty,
    /// The name is longer than [`MAX_TOOL_NAME_LEN`].
    #[error("tool name {0:?} is longer than {MAX_TOOL_NAME_LEN} characters")]
    TooLong(String),
    /// The name has a character outside `[A-Za-z0-9_-]`.
    #[error("tool name {0:?} may only contain A-Z, a-z, 0-9, '_' and '-'")]
    BadCharacter(String),
}

/// Checks that `name` can be a tool name: `[A-Za-z0-9_-]{1,48}`. Such a name is
/// also a valid single NATS subject token.
pub fn validate_tool_name(name: &str) -> Result<(), InvalidToolName> {
    if name.is_empty() {
        return Err(InvalidToolName::Empty);
    }
    if name.len() > MAX_TOOL_NAME_LEN {
        return Err(InvalidToolName::TooLong(name.to_owned()));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(InvalidToolName::BadCharacter(name.to_owned()));
    }
    Ok(())
}

/// The subject a tool is served on: `sophia.v1.tools.<category>.<tool>`.
pub fn tool(category: Category, tool: &str) -> String {
    format!("{ROOT}.tools.{category}.{tool}")
}

/// A model name or alias as one subject token: bytes outside
/// `[A-Za-z0-9_-]` are written `%XX` (upper-case hex), so `llama-3.1` becomes
/// `llama-3%2E1` and `org/model` becomes `org%2Fmodel`. Reversible, and never
/// a NATS wildcard or separator.
pub fn model_token(model: &str) -> String {
    let mut out = String::with_capacity(model.len());
    for b in model.bytes() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The subject for model inference: `sophia.v1.infer.<model token>.<operation>`,
/// e.g. `sophia.v1.infer.claude.chat`. Model inference has its own subject
/// space so that a replica subscribes only to the models it serves (a GPU
/// host's replica to its local models), each in queue group [`QUEUE_GROUP`].
/// Operations: `chat`, `embeddings`.
pub fn inference(model: &str, operation: &str) -> String {
    format!("{ROOT}.infer.{}.{operation}", model_token(model))
}

/// Where every intelligence replica answers with the models it serves and
/// their health (no queue group: callers gather all the answers).
pub const INFERENCE_MODELS: &str = "sophia.v1.infer.models";

/// The subject where callers publish [`crate::Cancel`] for calls in a
/// category: `sophia.v1.cancel.<category>`. Every replica of the category
/// listens; the one running the call stops it.
pub fn cancel(category: Category) -> String {
    format!("{ROOT}.cancel.{category}")
}

/// The subject a worker publishes [`crate::Progress`] to for one call:
/// `sophia.v1.progress.<caller instance>.<request id>`.
pub fn progress(caller_instance: &str, request_id: Uuid) -> String {
    format!("{ROOT}.progress.{caller_instance}.{request_id}")
}

/// The wildcard a caller subscribes to once to receive progress for all of
/// its calls: `sophia.v1.progress.<caller instance>.*`.
pub fn progress_inbox(caller_instance: &str) -> String {
    format!("{ROOT}.progress.{caller_instance}.*")
}

/// Where a worker replica answers "are you alive?" (an empty request, an
/// empty reply) until it has drained: `sophia.v1.alive.<instance>`. Callers
/// waiting on a call that replica acknowledged ask every second; "no
/// responders" means it is gone, three unanswered asks that it is stuck.
pub fn alive(instance: &str) -> String {
    format!("{ROOT}.alive.{}", model_token(instance))
}

/// The longest subject taken from a peer's envelope or header.
pub const MAX_REPLY_SUBJECT_LEN: usize = 256;

/// Whether `s`, taken from a peer's message, is a subject this mesh sends
/// replies to: one of the caller-owned families (`sophia.v1.progress.`,
/// `sophia.v1.ask.`), at most [`MAX_REPLY_SUBJECT_LEN`] bytes, tokens of
/// printable ASCII with no wildcard. Anything else is never published to: a
/// subject a peer makes up could be oversized (the server would drop the
/// connection) or reach someone else's subjects.
pub fn is_reply_subject(s: &str) -> bool {
    const FAMILIES: [&str; 2] = ["sophia.v1.progress.", "sophia.v1.ask."];
    s.len() <= MAX_REPLY_SUBJECT_LEN
        && FAMILIES.iter().any(|f| s.starts_with(f))
        && s.split('.').all(|t| {
            !t.is_empty() && t != "*" && t != ">" && t.bytes().all(|b| b.is_ascii_graphic())
        })
}

/// The MCP requests a worker answers besides tool calls, for its
/// resources, prompts and completions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum McpMethod {
    /// `resources/read`.
    ReadResource,
    /// `prompts/get`.
    GetPrompt,
    /// `completion/complete`.
    Complete,
}

impl McpMethod {
    /// The method's subject token.
    pub fn as_str(self) -> &'static str {
        match self {
            McpMethod::ReadResource => "resources_read",
            McpMethod::GetPrompt => "prompts_get",
            McpMethod::Complete => "complete",
        }
    }

    /// The MCP method's own name (`resources/read`, ...).
    pub fn mcp_name(self) -> &'static str {
        match self {
            McpMethod::ReadResource => "resources/read",
            McpMethod::GetPrompt => "prompts/get",
            McpMethod::Complete => "completion/complete",
        }
    }
}

/// The prefix of one worker service's MCP offers, `sophia.v1.mcp.<service>`
/// (the service name as one token, like [`model_token`]): the NATS service
/// endpoint group its replicas serve [`mcp`] subjects in.
pub fn mcp_group(service: &str) -> String {
    format!("{ROOT}.mcp.{}", model_token(service))
}

/// Where a worker service answers `method` (queue group `sophia`), as a
/// `ToolRequest` whose `args` are the MCP request's params and whose
/// result's structured output is the MCP result:
/// `sophia.v1.mcp.<service>.<method>`.
pub fn mcp(service: &str, method: McpMethod) -> String {
    format!("{}.{}", mcp_group(service), method.as_str())
}

/// Where callers publish [`crate::Cancel`] for the MCP requests they sent
/// one worker service: `sophia.v1.mcp.<service>.cancel`. Every replica of
/// the service listens; the one running the request stops it. No
/// [`McpMethod`] is named `cancel`, so this never reaches an offer.
pub fn mcp_cancel(service: &str) -> String {
    format!("{}.cancel", mcp_group(service))
}

/// The subject a worker sends [`crate::Ask`] requests to for one call:
/// `sophia.v1.ask.<caller instance>.<request id>`.
pub fn ask(caller_instance: &str, request_id: Uuid) -> String {
    format!("{ROOT}.ask.{caller_instance}.{request_id}")
}

/// The wildcard a caller subscribes to once to answer questions for all of
/// its calls: `sophia.v1.ask.<caller instance>.*`.
pub fn ask_inbox(caller_instance: &str) -> String {
    format!("{ROOT}.ask.{caller_instance}.*")
}

/// The request id at the end of a progress subject, if it has one.
pub fn request_id_of_progress(subject: &str) -> Option<Uuid> {
    subject.rsplit('.').next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_are_built_from_category_and_name() {
        assert_eq!(
            tool(Category::Infrastructure, "pulumi_preview"),
            "sophia.v1.tools.infrastructure.pulumi_preview"
        );
        assert_eq!(
            cancel(Category::CodeGeneration),
            "sophia.v1.cancel.code_generation"
        );
        assert_eq!(inference("claude", "chat"), "sophia.v1.infer.claude.chat");
        assert_eq!(
            inference("meta/llama-3.1", "chat"),
            "sophia.v1.infer.meta%2Fllama-3%2E1.chat"
        );
        assert_eq!(model_token("a b*>"), "a%20b%2A%3E");
        assert_eq!(
            mcp("docs.v2", McpMethod::ReadResource),
            "sophia.v1.mcp.docs%2Ev2.resources_read"
        );
        assert_eq!(mcp_cancel("docs"), "sophia.v1.mcp.docs.cancel");
        let id = Uuid::new_v4();
        let p = progress("gw1", id);
        assert_eq!(request_id_of_progress(&p), Some(id));
    }

    #[test]
    fn categories_round_trip_through_their_names() {
        for c in Category::ALL {
            assert_eq!(c.as_str().parse::<Category>().unwrap(), c);
        }
        assert!("finance".parse::<Category>().is_err());
    }

    #[test]
    fn tool_names_fit_cursor_limits() {
        assert!(validate_tool_name("echo-2_x").is_ok());
        assert_eq!(validate_tool_name(""), Err(InvalidToolName::Empty));
        assert!(matches!(
            validate_tool_name("a.b"),
            Err(InvalidToolName::BadCharacter(_))
        ));
        assert!(matches!(
            validate_tool_name(&"x".repeat(49)),
            Err(InvalidToolName::TooLong(_))
        ));
    }
}
