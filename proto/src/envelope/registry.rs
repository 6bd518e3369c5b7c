//! What workers tell the registry: announcements of tools and offers,
//! goodbyes, and the gateway's request to announce.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::subject::Category;

/// Hints about a tool's behaviour, as in MCP tool annotations.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hints {
    /// The tool does not change anything.
    #[serde(default)]
    pub read_only: bool,
    /// The tool may destroy or overwrite things.
    #[serde(default)]
    pub destructive: bool,
    /// Calling it again with the same arguments has no further effect.
    #[serde(default)]
    pub idempotent: bool,
    /// The tool talks to the world outside the mesh.
    #[serde(default)]
    pub open_world: bool,
}

/// A tool as a worker announces it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ToolSpec {
    /// Unique name, `[A-Za-z0-9_-]{1,48}`.
    pub name: String,
    /// Human-friendly title.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// What the tool does, for a model to decide when to call it.
    pub description: String,
    /// The category whose subjects serve it.
    pub category: Category,
    /// JSON Schema of the arguments (an object schema).
    pub input_schema: Value,
    /// JSON Schema of the structured output, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_schema: Option<Value>,
    /// Behaviour hints.
    #[serde(default)]
    pub hints: Hints,
    /// How long a call may take before callers give up, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// The tool can run detached, as a job these tools follow (MCP tasks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jobs: Option<super::JobTools>,
}

/// A worker's announcement of itself and its tools, sent on start, on every
/// reconnect, in answer to a discovery request and every `heartbeat_ms`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Announce {
    /// Protocol version.
    pub v: u16,
    /// This replica's unique id (a fresh one per process).
    pub instance: String,
    /// The worker's service name, e.g. `pulumi-worker`.
    pub service: String,
    /// The worker's version.
    pub version: String,
    /// The tools it serves.
    pub tools: Vec<ToolSpec>,
    /// How often it announces. A replica silent for three intervals is gone.
    pub heartbeat_ms: u64,
    /// What it offers besides tools: MCP resources, resource templates and
    /// prompts. Served on [`crate::subject::mcp`] subjects of its service.
    #[serde(default, skip_serializing_if = "Offers::is_empty")]
    pub offers: Offers,
    /// What this replica cannot do right now, each with what to do about it
    /// (e.g. "no model provider: start Ollama, ..."). Empty when all is well;
    /// gateways show it on `/health`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub degraded: Vec<String>,
    /// Whether the replica acknowledges requests at once (header
    /// [`crate::headers::ACK_TO`]) and answers on [`crate::subject::alive`],
    /// so callers may treat a request unacknowledged after a few seconds as
    /// lost.
    #[serde(default)]
    pub acks: bool,
    /// The host the replica runs on (its hostname), for operators; empty
    /// when unknown.
    #[serde(default)]
    pub host: String,
    /// When the replica's process started, in milliseconds since the Unix
    /// epoch (0 when unknown), so consoles show its uptime.
    #[serde(default)]
    pub started_at_ms: u64,
}

/// A resource's contents changed (MCP `notifications/resources/updated`),
/// published by its worker to [`crate::subject::RESOURCE_UPDATED`]; every
/// gateway tells the sessions subscribed to it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResourceUpdated {
    /// Protocol version.
    pub v: u16,
    /// The resource.
    pub uri: String,
}

/// A worker's MCP resources, resource templates and prompts, each in MCP's
/// own JSON shape (`Resource`, `ResourceTemplate`, `Prompt`), so clients
/// see exactly what the worker declared.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Offers {
    /// Resources (`uri`, `name`, `mimeType`, ...).
    #[serde(default)]
    pub resources: Vec<Value>,
    /// Resource templates (`uriTemplate`, `name`, ...).
    #[serde(default)]
    pub resource_templates: Vec<Value>,
    /// Prompts (`name`, `description`, `arguments`, ...).
    #[serde(default)]
    pub prompts: Vec<Value>,
    /// Whether the worker answers `completion/complete` for its prompts'
    /// arguments and its templates' variables.
    #[serde(default)]
    pub completions: bool,
}

impl Offers {
    /// Nothing offered.
    pub fn is_empty(&self) -> bool {
        self.resources.is_empty()
            && self.resource_templates.is_empty()
            && self.prompts.is_empty()
            && !self.completions
    }
}

/// A worker replica leaving the mesh (sent when it starts draining).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Leave {
    /// Protocol version.
    pub v: u16,
    /// The leaving replica.
    pub instance: String,
}

/// A gateway asking every worker to announce itself now.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Discover {
    /// Protocol version.
    pub v: u16,
    /// The asking gateway's instance id.
    pub requester: String,
}
