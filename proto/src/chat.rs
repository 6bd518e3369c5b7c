//! The inference contract between agents and the intelligence-worker.
//!
//! An agent sends a [`ChatRequest`] (OpenAI's chat-completions body) as the
//! `args` of a tool request on [`crate::subject::inference`]`(model, "chat")`;
//! the intelligence-worker answers with a [`ChatReply`] as the structured
//! output. Both sides build and read these types, so a key is renamed in one
//! place or not at all, and a reply that does not fit fails to parse instead
//! of reading as zero tokens.
//!
//! Design note: every type keeps the fields it does not name in `extra`, and
//! a reply's `response` stays the provider's JSON. Providers add fields
//! freely (`refusal`, `reasoning`, `logprobs`, ...), MCP clients send any
//! OpenAI option, and the worker passes all of it through untouched; what
//! the mesh itself reads is typed here.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

/// A chat-completions request (OpenAI shape).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatRequest {
    /// The model or alias. Optional on the bus: the subject names the model.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub model: String,
    /// The conversation so far, oldest first.
    pub messages: Vec<Message>,
    /// The tools the model may call.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<ToolDef>,
    /// OpenAI's `response_format` (e.g. a JSON schema the answer must fit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_format: Option<Value>,
    /// Whether to stream the answer (the worker relays it as progress).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    /// Any other OpenAI option (`temperature`, `max_tokens`, ...), passed on.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ChatRequest {
    /// A request for `model` with `messages`.
    pub fn new(model: impl Into<String>, messages: Vec<Message>) -> Self {
        Self {
            model: model.into(),
            messages,
            ..Self::default()
        }
    }

    /// Asks for an answer that fits `schema` (OpenAI's `json_schema`
    /// response format, named `answer`).
    pub fn answer_schema(mut self, schema: Value) -> Self {
        self.response_format = Some(serde_json::json!({"type": "json_schema",
            "json_schema": {"name": "answer", "schema": schema}}));
        self
    }
}

/// Who wrote a message.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The instructions.
    System,
    /// The person (or the agent's caller).
    User,
    /// The model. A message without a role is the model's.
    #[default]
    Assistant,
    /// A tool's result.
    Tool,
    /// Any other role a client sends (e.g. `developer`), kept as written.
    #[serde(untagged)]
    Other(String),
}

/// One message of a conversation.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// Who wrote it.
    #[serde(default)]
    pub role: Role,
    /// A string, an array of content parts, or null (a model message that
    /// only calls tools). Always written, as providers write it.
    #[serde(default)]
    pub content: Value,
    /// The tools the model calls (model messages only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall>>,
    /// The call a tool message answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// Whatever else the writer put in (`refusal`, `name`, ...).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Message {
    /// A message of `role` with `content`.
    pub fn new(role: Role, content: impl Into<Value>) -> Self {
        Self {
            role,
            content: content.into(),
            ..Self::default()
        }
    }

    /// A tool's result, answering the call `tool_call_id`.
    pub fn tool_result(tool_call_id: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            tool_call_id: Some(tool_call_id.into()),
            ..Self::new(Role::Tool, content.into())
        }
    }

    /// The content when it is plain text, else `""`.
    pub fn text(&self) -> &str {
        self.content.as_str().unwrap_or_default()
    }

    /// The tools the message calls (none if it calls none).
    pub fn calls(&self) -> &[ToolCall] {
        self.tool_calls.as_deref().unwrap_or_default()
    }
}

/// A tool call the model makes.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    /// The model's id for the call; the tool message answering it names it.
    #[serde(default)]
    pub id: Option<String>,
    /// Always `function` today.
    #[serde(rename = "type", default = "function_kind")]
    pub kind: String,
    /// The function and its arguments.
    #[serde(default)]
    pub function: FunctionCall,
    /// Whatever else the provider put in (e.g. a streamed call's `index`).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ToolCall {
    /// The call's id, or `""` if the model gave none.
    pub fn id(&self) -> &str {
        self.id.as_deref().unwrap_or_default()
    }
}

/// The function a [`ToolCall`] calls.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FunctionCall {
    /// The tool's name.
    #[serde(default)]
    pub name: String,
    /// The arguments as JSON text, as the model wrote them (possibly not
    /// JSON at all). Missing or null reads as `{}`; a provider that sends
    /// a JSON value instead of text has it written out as text.
    #[serde(default = "empty_object", deserialize_with = "arguments_text")]
    pub arguments: String,
    /// Whatever else the provider put in.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Default for FunctionCall {
    fn default() -> Self {
        Self {
            name: String::new(),
            arguments: empty_object(),
            extra: Map::new(),
        }
    }
}

/// A tool the model may call, as a request offers it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ToolDef {
    /// Always `function` today.
    #[serde(rename = "type", default = "function_kind")]
    pub kind: String,
    /// The function.
    #[serde(default)]
    pub function: FunctionDef,
    /// Whatever else the writer put in.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ToolDef {
    /// A function tool: its name, what it does, and its arguments' JSON Schema.
    pub fn function(
        name: impl Into<String>,
        description: impl Into<String>,
        parameters: Value,
    ) -> Self {
        Self {
            kind: function_kind(),
            function: FunctionDef {
                name: name.into(),
                description: Some(description.into()),
                parameters,
                extra: Map::new(),
            },
            extra: Map::new(),
        }
    }
}

/// The function a [`ToolDef`] offers.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FunctionDef {
    /// The tool's name.
    #[serde(default)]
    pub name: String,
    /// What it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The JSON Schema of its arguments.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub parameters: Value,
    /// Whatever else the writer put in (e.g. `strict`).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The structured output of an inference call (chat, and embeddings too).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChatReply {
    /// The provider's response as it sent it (for a streamed call, the
    /// assembled `chat.completion`; for embeddings, the embeddings body).
    pub response: Value,
    /// The provider that served the call.
    pub provider: String,
    /// The model name at that provider.
    pub model: String,
    /// Tokens used and their cost, if the provider said (null otherwise).
    pub usage: Option<ReplyUsage>,
    /// Every attempt, in order, as `provider: outcome`.
    pub attempts: Vec<String>,
}

/// Why a [`ChatReply`] holds no message to read.
#[derive(Debug, thiserror::Error)]
pub enum ReplyError {
    /// The response has no `choices[0].message` object.
    #[error("the model's answer had no message")]
    NoMessage,
    /// The message is not a chat message.
    #[error("the model's message could not be read: {0}")]
    Malformed(String),
}

impl ChatReply {
    /// The model's message: `choices[0].message` of a chat response.
    pub fn message(&self) -> Result<Message, ReplyError> {
        let message = &self.response["choices"][0]["message"];
        if !message.is_object() {
            return Err(ReplyError::NoMessage);
        }
        Message::deserialize(message).map_err(|e| ReplyError::Malformed(e.to_string()))
    }
}

/// Token counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Prompt (input) tokens.
    pub input_tokens: u64,
    /// Completion (output) tokens.
    pub output_tokens: u64,
}

impl std::ops::AddAssign for Usage {
    fn add_assign(&mut self, other: Self) {
        self.input_tokens = self.input_tokens.saturating_add(other.input_tokens);
        self.output_tokens = self.output_tokens.saturating_add(other.output_tokens);
    }
}

/// A reply's usage: its tokens and their estimated cost.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ReplyUsage {
    /// The tokens.
    #[serde(flatten)]
    pub tokens: Usage,
    /// In US dollars, from the worker's price table (null without a price).
    pub cost_usd: Option<f64>,
}

fn function_kind() -> String {
    "function".to_owned()
}

fn empty_object() -> String {
    "{}".to_owned()
}

fn arguments_text<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::String(s) => s,
        Value::Null => empty_object(),
        other => other.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn round_trip<T: Serialize + serde::de::DeserializeOwned>(wire: &Value) -> Value {
        let typed: T = serde_json::from_value(wire.clone()).expect("fits the type");
        serde_json::to_value(&typed).expect("serializes")
    }

    #[test]
    fn an_agents_request_has_the_wire_shape_of_today() {
        let request = ChatRequest {
            tools: vec![ToolDef::function(
                "pulumi_preview",
                "Previews a stack",
                json!({"type": "object", "required": ["stack"]}),
            )],
            ..ChatRequest::new(
                "default",
                vec![
                    Message::new(Role::System, "be brief"),
                    Message::new(Role::User, json!("deploy it")),
                ],
            )
        }
        .answer_schema(json!({"type": "object"}));
        assert_eq!(
            serde_json::to_value(&request).unwrap(),
            json!({"model": "default",
                "messages": [{"role": "system", "content": "be brief"},
                    {"role": "user", "content": "deploy it"}],
                "tools": [{"type": "function", "function": {"name": "pulumi_preview",
                    "description": "Previews a stack",
                    "parameters": {"type": "object", "required": ["stack"]}}}],
                "response_format": {"type": "json_schema",
                    "json_schema": {"name": "answer", "schema": {"type": "object"}}}})
        );
    }

    #[test]
    fn a_clients_request_round_trips_unchanged() {
        let wire = json!({"messages": [
                {"role": "developer", "content": [{"type": "text", "text": "hi"}], "name": "d"},
                {"role": "assistant", "content": null, "refusal": null, "tool_calls": [
                    {"index": 0, "id": "call_a", "type": "function",
                     "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
                {"role": "tool", "tool_call_id": "call_a", "content": "sunny"}],
            "tools": [{"type": "function", "function": {"name": "get_weather",
                "parameters": {"type": "object"}, "strict": true}}],
            "stream": true, "temperature": 0.2, "max_tokens": 5});
        assert_eq!(round_trip::<ChatRequest>(&wire), wire);
        let request: ChatRequest = serde_json::from_value(wire).unwrap();
        assert_eq!(request.messages[0].role, Role::Other("developer".into()));
        assert_eq!(request.messages[1].calls()[0].function.name, "get_weather");
        assert_eq!(request.stream, Some(true));
    }

    #[test]
    fn a_reply_round_trips_and_its_message_is_typed() {
        let wire = json!({
            "response": {"id": "c1", "choices": [{"index": 0, "finish_reason": "tool_calls",
                "message": {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_a", "type": "function",
                     "function": {"name": "get_weather", "arguments": "{}"}}]}}]},
            "provider": "cloud", "model": "claude-x",
            "usage": {"input_tokens": 4, "output_tokens": 5, "cost_usd": null},
            "attempts": ["cloud: ok"]});
        assert_eq!(round_trip::<ChatReply>(&wire), wire);
        let reply: ChatReply = serde_json::from_value(wire.clone()).unwrap();
        let usage = reply.usage.unwrap();
        assert_eq!(
            usage.tokens,
            Usage {
                input_tokens: 4,
                output_tokens: 5
            }
        );
        let message = reply.message().unwrap();
        assert_eq!(message.role, Role::Assistant);
        assert_eq!(message.calls()[0].id(), "call_a");
        // The message goes back into the next request as the provider wrote it.
        assert_eq!(
            serde_json::to_value(&message).unwrap(),
            wire["response"]["choices"][0]["message"]
        );
    }

    #[test]
    fn a_reply_without_usage_or_message_says_so() {
        let reply: ChatReply = serde_json::from_value(json!({"response": {"choices": []},
            "provider": "p", "model": "m", "usage": null, "attempts": []}))
        .unwrap();
        assert_eq!(reply.usage, None);
        assert!(matches!(reply.message(), Err(ReplyError::NoMessage)));
    }

    #[test]
    fn a_renamed_key_fails_to_parse_instead_of_reading_as_nothing() {
        let renamed = json!({"responses": {}, "provider": "p", "model": "m", "attempts": []});
        assert!(serde_json::from_value::<ChatReply>(renamed).is_err());
    }

    #[test]
    fn arguments_are_text_whatever_the_provider_sent() {
        let call = |function: Value| -> ToolCall {
            serde_json::from_value(json!({"id": "c", "function": function})).unwrap()
        };
        assert_eq!(call(json!({"name": "t"})).function.arguments, "{}");
        assert_eq!(
            call(json!({"name": "t", "arguments": null}))
                .function
                .arguments,
            "{}"
        );
        assert_eq!(
            call(json!({"name": "t", "arguments": ""}))
                .function
                .arguments,
            ""
        );
        assert_eq!(
            call(json!({"name": "t", "arguments": {"a": 1}}))
                .function
                .arguments,
            "{\"a\":1}"
        );
        assert_eq!(call(json!({"name": "t"})).kind, "function");
    }

    #[test]
    fn usage_adds_up_without_overflowing() {
        let mut total = Usage {
            input_tokens: u64::MAX - 1,
            output_tokens: 1,
        };
        total += Usage {
            input_tokens: 5,
            output_tokens: 2,
        };
        assert_eq!((total.input_tokens, total.output_tokens), (u64::MAX, 3));
    }
}
