//! The MessagePack envelopes. Every field is named on the wire (a map), so
//! fields can be added without breaking older peers: unknown fields are
//! ignored, and optional fields may be absent.
//!
//! Here: calls (requests, replies, progress, questions, cancels);
//! [`error`]: error codes; [`registry`]: announcements and what they offer.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::PROTOCOL_VERSION;

mod error;
mod jobs;
mod registry;
mod rounds;

pub use error::{ErrorCode, WireError};
pub use jobs::{JobPhase, JobQuestion, JobReport, JobTools};
pub use registry::*;
pub use rounds::{InputRequired, Round};

/// Who is calling: carried on every request so workers can authorise and
/// account per principal.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Caller {
    /// The authenticated principal, e.g. the gateway token's owner or an agent id.
    pub principal: String,
    /// The MCP session the call belongs to, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// The service that put the call on the bus, e.g. `sophia-gateway`.
    #[serde(default)]
    pub via: String,
    /// The principal's roles, as the gateway authenticated them (API key or
    /// OAuth claims). Workers check them against the policy
    /// (`docs/security.md`); an agent passes its starter's on to every tool it
    /// calls, so it never has more than the person who started it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
}

/// A tool call, sent as a NATS request to [`crate::subject::tool`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ToolRequest {
    /// Protocol version, [`PROTOCOL_VERSION`].
    pub v: u16,
    /// The call's id; responses, progress and cancellation refer to it.
    pub id: Uuid,
    /// The tool's name.
    pub tool: String,
    /// The arguments, a JSON object already validated against the tool's schema.
    pub args: Value,
    /// The call's deadline, as the milliseconds left when it was sent (like
    /// gRPC's `grpc-timeout`, so clocks need not agree). A worker stops
    /// working on the call once this has passed.
    pub timeout_ms: u64,
    /// Who is calling.
    pub caller: Caller,
    /// Where to publish [`Progress`], if the caller wants progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress_to: Option<String>,
    /// Where and what the worker may ask the caller's client mid-call (MCP
    /// elicitation, sampling, roots); absent when the client can do none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ask: Option<AskRoute>,
    /// The client's answers to the questions a previous attempt of this
    /// call ended with ([`InputRequired`]); absent on a first attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub round: Option<Round>,
    /// Start the work as a job and answer at once with its [`JobReport`]
    /// (only for tools whose [`ToolSpec::jobs`] says they can).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub detached: bool,
}

/// Where a worker sends [`Ask`] requests (NATS request-reply) for one call,
/// and which the caller's client can answer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AskRoute {
    /// The subject, [`crate::subject::ask`].
    pub to: String,
    /// The client answers elicitation in form mode.
    #[serde(default)]
    pub elicit: bool,
    /// The client answers sampling (`sampling/createMessage`).
    #[serde(default)]
    pub sample: bool,
    /// The client lists its roots (`roots/list`).
    #[serde(default)]
    pub roots: bool,
    /// The client answers in rounds (MCP 2026-07-28, no session): a
    /// question ends the call with [`InputRequired`] instead of being sent
    /// to `to`, and the answers come with the retried call
    /// ([`ToolRequest::round`]).
    #[serde(default)]
    pub rounds: bool,
}

impl ToolRequest {
    /// A request for `tool` with `args`, a fresh id and the given deadline.
    pub fn new(tool: impl Into<String>, args: Value, timeout_ms: u64, caller: Caller) -> Self {
        Self {
            v: PROTOCOL_VERSION,
            id: Uuid::new_v4(),
            tool: tool.into(),
            args,
            timeout_ms,
            caller,
            progress_to: None,
            ask: None,
            round: None,
            detached: false,
        }
    }
}

/// One piece of a tool's output, mirroring MCP's content types.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Content {
    /// Plain text.
    Text {
        /// The text.
        text: String,
    },
    /// An image, as raw bytes (MessagePack `bin`, not base64).
    Image {
        /// The image bytes.
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
        /// Its MIME type, e.g. `image/png`.
        mime_type: String,
    },
    /// Audio, as raw bytes.
    Audio {
        /// The audio bytes.
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
        /// Its MIME type, e.g. `audio/wav`.
        mime_type: String,
    },
    /// A resource's contents, embedded (MCP `resource` content): `text`, or
    /// `blob` as raw bytes.
    Resource {
        /// The resource's URI.
        uri: String,
        /// Its MIME type.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mime_type: Option<String>,
        /// Text contents.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        text: Option<String>,
        /// Binary contents.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        blob: Option<serde_bytes::ByteBuf>,
    },
    /// A link to a resource the client may read (MCP `resource_link`).
    ResourceLink {
        /// The resource's URI.
        uri: String,
        /// Its name.
        name: String,
        /// Its MIME type.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mime_type: Option<String>,
        /// What it is.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        description: Option<String>,
    },
}

impl Content {
    /// Text content.
    pub fn text(text: impl Into<String>) -> Self {
        Content::Text { text: text.into() }
    }
}

/// What a tool returns when it ran.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ToolOutput {
    /// The content, in order.
    #[serde(default)]
    pub content: Vec<Content>,
    /// Structured output matching the tool's output schema, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub structured: Option<Value>,
    /// True when the tool ran but reports failure in its content (MCP `isError`).
    #[serde(default)]
    pub is_error: bool,
}

impl ToolOutput {
    /// Output made of one text.
    pub fn text(text: impl Into<String>) -> Self {
        Self {
            content: vec![Content::text(text)],
            ..Self::default()
        }
    }

    /// Output carrying a JSON value, both as structured content and as its
    /// JSON text (so clients that ignore structured content still see it).
    pub fn json(value: Value) -> Self {
        Self {
            content: vec![Content::text(value.to_string())],
            structured: Some(value),
            is_error: false,
        }
    }
}

/// The reply to a [`ToolRequest`]: exactly one of `result` and `error` is set.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ToolResponse {
    /// Protocol version.
    pub v: u16,
    /// The id of the request this answers.
    pub id: Uuid,
    /// The tool's output, when it ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<ToolOutput>,
    /// The error, when it did not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<WireError>,
    /// How many [`Progress`] messages the worker published for this call.
    /// Progress travels on another subject, so it may arrive after the reply;
    /// the caller uses this count to wait for the stragglers before it
    /// delivers the result.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub progress_sent: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl ToolResponse {
    /// The response a NATS reply carries: in its
    /// [`crate::headers::ERROR_ENVELOPE`] header when the worker sent an
    /// error as a NATS service error, else in its body (fetch an offloaded
    /// body first, see [`crate::payload`]).
    pub fn from_reply(
        headers: Option<&async_nats::HeaderMap>,
        body: &[u8],
    ) -> Result<Self, crate::DecodeError> {
        match crate::headers::read_error_envelope(headers) {
            Some(Ok(envelope)) => crate::decode(&envelope),
            // Not base64: decoding the (empty) body says what is wrong.
            Some(Err(_)) | None => crate::decode(body),
        }
    }

    /// A response for request `id` with the given outcome.
    pub fn new(id: Uuid, outcome: Result<ToolOutput, WireError>) -> Self {
        let (result, error) = match outcome {
            Ok(r) => (Some(r), None),
            Err(e) => (None, Some(e)),
        };
        Self {
            v: PROTOCOL_VERSION,
            id,
            result,
            error,
            progress_sent: 0,
        }
    }

    /// The outcome. A response with both or neither set is itself an error.
    pub fn into_outcome(self) -> Result<ToolOutput, WireError> {
        match (self.result, self.error) {
            (Some(r), None) => Ok(r),
            (None, Some(e)) => Err(e),
            _ => Err(WireError::new(
                ErrorCode::BadEnvelope,
                "the worker's response must carry exactly one of `result` and `error`",
            )),
        }
    }
}

/// Progress of a long call, published to the request's `progress_to`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// Protocol version.
    pub v: u16,
    /// The request this is progress for.
    pub id: Uuid,
    /// Work done so far; increases with every message.
    pub progress: f64,
    /// Total work, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<f64>,
    /// A human-readable step description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// A log record for the caller's client (MCP `notifications/message`)
    /// instead of a progress step; `progress`, `total` and `message` are
    /// then unused. Logs travel with progress so that they too arrive
    /// before the result (the `progress_sent` fence counts both).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<LogRecord>,
}

/// A log record a worker sends to the caller's client.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LogRecord {
    /// MCP's level name: `debug`, `info`, `notice`, `warning`, `error`,
    /// `critical`, `alert` or `emergency`.
    pub level: String,
    /// Which logger, if named.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logger: Option<String>,
    /// The record: any JSON.
    pub data: Value,
}

/// What a worker asks the caller's client mid-call, sent as a NATS request
/// to the call's [`AskRoute::to`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Ask {
    /// Protocol version.
    pub v: u16,
    /// The call this belongs to.
    pub id: Uuid,
    /// The question.
    pub question: Question,
}

/// The kinds of question, as the MCP requests a server may send a client.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Question {
    /// `elicitation/create`, form mode: ask the person.
    Elicit {
        /// What to ask.
        message: String,
        /// The answer's shape: a flat JSON Schema object of primitive
        /// properties, as MCP's `requestedSchema`.
        schema: Value,
    },
    /// `sampling/createMessage`: ask the client's model. `params` are MCP's
    /// `CreateMessageRequestParams` as JSON (`messages`, `maxTokens`, ...).
    Sample {
        /// The request's parameters.
        params: Value,
    },
    /// `roots/list`: the client's roots.
    Roots,
}

impl Question {
    /// The MCP client capability a client must declare to be asked this
    /// (`elicitation`, `sampling`, `roots`).
    pub fn capability(&self) -> &'static str {
        match self {
            Question::Elicit { .. } => "elicitation",
            Question::Sample { .. } => "sampling",
            Question::Roots => "roots",
        }
    }
}

/// The answer to an [`Ask`]: the client's MCP result as JSON
/// (`ElicitResult`, `CreateMessageResult` or `ListRootsResult`), or why no
/// answer could be had.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AskReply {
    /// Protocol version.
    pub v: u16,
    /// The client's result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// Why there is none: the call is over, the client went away, cannot
    /// answer this kind of question, or the question is malformed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<WireError>,
}

/// A request to stop a call, published to [`crate::subject::cancel`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Cancel {
    /// Protocol version.
    pub v: u16,
    /// The request to stop.
    pub id: Uuid,
    /// Why, if the caller said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}
