//! OpenAI chat-completions shapes: token usage, and assembling a streamed
//! response (`chat.completion.chunk` events) into one `chat.completion`.
//!
//! Provider responses stay JSON values: providers add fields freely, and
//! the worker passes through what it does not need to understand. What the
//! mesh reads of them is typed in [`sophia_proto::chat`].

use serde_json::{Map, Value, json};

/// Token counts of one call: the mesh's own type ([`sophia_proto::chat`]).
pub use sophia_proto::chat::Usage;

/// Reads `usage.prompt_tokens` / `usage.completion_tokens` (OpenAI) or
/// `usage.input_tokens` / `usage.output_tokens` (some servers) of a
/// provider's response.
pub fn usage_of(response: &Value) -> Option<Usage> {
    let u = response.get("usage")?;
    let n = |a: &str, b: &str| u.get(a).or_else(|| u.get(b)).and_then(Value::as_u64);
    Some(Usage {
        input_tokens: n("prompt_tokens", "input_tokens")?,
        output_tokens: n("completion_tokens", "output_tokens").unwrap_or(0),
    })
}

/// A piece of a streamed response worth relaying to the caller at once.
#[derive(Clone, Debug, PartialEq)]
pub enum Delta {
    /// Generated text.
    Text(String),
    /// A fragment of a tool call's arguments (by the call's index).
    ToolCall {
        /// The tool call's index in the message.
        index: u64,
        /// The function name, in the first fragment.
        name: Option<String>,
        /// A fragment of the JSON arguments.
        arguments: String,
    },
}

#[derive(Default)]
struct ToolCallParts {
    id: Option<String>,
    kind: Option<String>,
    name: String,
    arguments: String,
}

/// Builds a `chat.completion` from `chat.completion.chunk`s.
#[derive(Default)]
pub struct Assembler {
    id: Option<String>,
    model: Option<String>,
    role: Option<String>,
    content: String,
    tool_calls: std::collections::BTreeMap<u64, ToolCallParts>,
    finish_reason: Option<String>,
    usage: Option<Value>,
    chunks: usize,
}

impl Assembler {
    /// A new, empty assembly.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many chunks were added.
    pub fn chunks(&self) -> usize {
        self.chunks
    }

    /// Whether the stream said it was finished (a `finish_reason`).
    pub fn finished(&self) -> bool {
        self.finish_reason.is_some()
    }

    /// Adds one chunk; returns what it contributes for relaying. Tolerates
    /// `choices: null` or `[]` (usage-only chunks) and missing fields.
    pub fn push(&mut self, chunk: &Value) -> Vec<Delta> {
        self.chunks += 1;
        if self.id.is_none() {
            self.id = chunk.get("id").and_then(Value::as_str).map(str::to_owned);
        }
        if self.model.is_none() {
            self.model = chunk
                .get("model")
                .and_then(Value::as_str)
                .map(str::to_owned);
        }
        if let Some(u) = chunk.get("usage").filter(|u| !u.is_null()) {
            self.usage = Some(u.clone());
        }
        let mut out = Vec::new();
        let Some(choices) = chunk.get("choices").and_then(Value::as_array) else {
            return out;
        };
        // One choice is what the mesh asks for (n = 1); others are ignored.
        let Some(choice) = choices
            .iter()
            .find(|c| c.get("index").and_then(Value::as_u64).unwrap_or(0) == 0)
        else {
            return out;
        };
        if let Some(r) = choice.get("finish_reason").and_then(Value::as_str) {
            self.finish_reason = Some(r.to_owned());
        }
        let Some(delta) = choice.get("delta") else {
            return out;
        };
        if let Some(role) = delta.get("role").and_then(Value::as_str) {
            self.role.get_or_insert_with(|| role.to_owned());
        }
        if let Some(text) = delta
            .get("content")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
        {
            self.content.push_str(text);
            out.push(Delta::Text(text.to_owned()));
        }
        for call in delta
            .get("tool_calls")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            out.push(self.push_tool_call(call));
        }
        out
    }

    /// Adds one fragment of a tool call (joined with the others of its index).
    fn push_tool_call(&mut self, call: &Value) -> Delta {
        let index = call.get("index").and_then(Value::as_u64).unwrap_or(0);
        let parts = self.tool_calls.entry(index).or_default();
        if let Some(id) = call.get("id").and_then(Value::as_str) {
            parts.id = Some(id.to_owned());
        }
        if let Some(kind) = call.get("type").and_then(Value::as_str) {
            parts.kind = Some(kind.to_owned());
        }
        let function = call.get("function");
        let name = function.and_then(|f| f.get("name")).and_then(Value::as_str);
        if let Some(n) = name {
            parts.name.push_str(n);
        }
        let args = function
            .and_then(|f| f.get("arguments"))
            .and_then(Value::as_str)
            .unwrap_or("");
        parts.arguments.push_str(args);
        Delta::ToolCall {
            index,
            name: name.map(str::to_owned),
            arguments: args.to_owned(),
        }
    }

    /// The assembled `chat.completion`.
    pub fn finish(self) -> Value {
        let mut message = Map::new();
        message.insert(
            "role".into(),
            json!(self.role.unwrap_or_else(|| "assistant".into())),
        );
        message.insert(
            "content".into(),
            if self.content.is_empty() && !self.tool_calls.is_empty() {
                Value::Null
            } else {
                json!(self.content)
            },
        );
        if !self.tool_calls.is_empty() {
            let calls: Vec<Value> = self
                .tool_calls
                .into_iter()
                .map(|(index, p)| {
                    json!({
                        "index": index,
                        "id": p.id,
                        "type": p.kind.unwrap_or_else(|| "function".into()),
                        "function": { "name": p.name, "arguments": p.arguments },
                    })
                })
                .collect();
            message.insert("tool_calls".into(), Value::Array(calls));
        }
        json!({
            "id": self.id,
            "object": "chat.completion",
            "model": self.model,
            "choices": [{
                "index": 0,
                "message": message,
                "finish_reason": self.finish_reason,
            }],
            "usage": self.usage,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_call_deltas_are_assembled_by_index() {
        let mut a = Assembler::new();
        let chunks = [
            json!({"id": "c1", "model": "m", "choices": [{"index": 0, "delta": {"role": "assistant",
                "tool_calls": [{"index": 0, "id": "call_a", "type": "function",
                    "function": {"name": "get_weather", "arguments": ""}}]}}]}),
            json!({"choices": [{"index": 0, "delta": {"tool_calls": [
                {"index": 1, "id": "call_b", "type": "function", "function": {"name": "get_time", "arguments": "{\"tz\""}},
                {"index": 0, "function": {"arguments": "{\"city\": "}}]}}]}),
            json!({"choices": [{"index": 0, "delta": {"tool_calls": [
                {"index": 0, "function": {"arguments": "\"Paris\"}"}},
                {"index": 1, "function": {"arguments": ": \"UTC\"}"}}]}}]}),
            json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}),
            json!({"choices": null, "usage": {"prompt_tokens": 12, "completion_tokens": 7}}),
        ];
        for c in &chunks {
            a.push(c);
        }
        assert!(a.finished());
        let done = a.finish();
        let calls = &done["choices"][0]["message"]["tool_calls"];
        assert_eq!(calls[0]["id"], "call_a");
        assert_eq!(calls[0]["function"]["name"], "get_weather");
        assert_eq!(calls[0]["function"]["arguments"], "{\"city\": \"Paris\"}");
        assert_eq!(calls[1]["function"]["name"], "get_time");
        assert_eq!(calls[1]["function"]["arguments"], "{\"tz\": \"UTC\"}");
        assert_eq!(done["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(done["choices"][0]["message"]["content"], Value::Null);
        assert_eq!(
            usage_of(&done),
            Some(Usage {
                input_tokens: 12,
                output_tokens: 7
            })
        );
    }

    #[test]
    fn text_deltas_are_relayed_and_joined() {
        let mut a = Assembler::new();
        let mut relayed = Vec::new();
        for t in ["Hel", "lo", ""] {
            relayed.extend(a.push(&json!({"choices": [{"index": 0, "delta": {"content": t}}]})));
        }
        a.push(&json!({"choices": [], "usage": {"input_tokens": 3, "output_tokens": 2}}));
        assert_eq!(
            relayed,
            [Delta::Text("Hel".into()), Delta::Text("lo".into())]
        );
        assert!(
            !a.finished(),
            "no finish_reason yet: a cut-off stream is detectable"
        );
        let done = a.finish();
        assert_eq!(done["choices"][0]["message"]["content"], "Hello");
        assert_eq!(usage_of(&done).unwrap().output_tokens, 2);
    }
}
