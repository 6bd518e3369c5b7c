//! Multi-round-trip calls (MCP 2026-07-28, SEP-2322): a client without a
//! session cannot be asked mid-call, so a worker's question ends the call
//! with [`InputRequired`], and the client calls again with its answers
//! ([`Round`]). The gateway seals [`InputRequired::state`] into MCP's
//! `requestState` and opens it again on the retry, so a worker gets back
//! only state it wrote itself.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{ErrorCode, Question, WireError};

/// The client's answers to the previous round's questions, on a retried
/// call ([`super::ToolRequest::round`]).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Round {
    /// MCP's `inputResponses`: question key → the client's result as JSON
    /// (`ElicitResult`, `CreateMessageResult` or `ListRootsResult`).
    #[serde(default)]
    pub responses: BTreeMap<String, Value>,
    /// What the tool kept when it asked ([`InputRequired::state`]), as the
    /// gateway verified it; `None` on the first round.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<Value>,
}

/// A call that cannot go on without the client's answers: it travels as a
/// [`WireError`] with code [`ErrorCode::InputRequired`] and this in its
/// `data`, so it passes every hop (forwards, agents) unchanged.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct InputRequired {
    /// The questions, by key; the client answers each under its key.
    pub questions: BTreeMap<String, Question>,
    /// What the tool needs again on the retry (e.g. which preview the person
    /// was shown). Sealed by the gateway: the client cannot change it.
    #[serde(default)]
    pub state: Value,
}

impl InputRequired {
    /// The error that carries this to the caller.
    pub fn into_error(self) -> WireError {
        let keys: Vec<&str> = self.questions.keys().map(String::as_str).collect();
        let message = format!(
            "the call needs the client's answers ({}): call it again with them",
            keys.join(", ")
        );
        let data = serde_json::to_value(&self).unwrap_or(Value::Null);
        WireError::new(ErrorCode::InputRequired, message).with_data(data)
    }

    /// The input `error` asks for, if it is an [`ErrorCode::InputRequired`];
    /// `Some(Err)` names what is malformed in it.
    pub fn from_error(error: &WireError) -> Option<Result<Self, String>> {
        (error.code == ErrorCode::InputRequired).then(|| {
            let data = error.data.clone().unwrap_or(Value::Null);
            serde_json::from_value::<Self>(data)
                .map_err(|e| format!("a malformed input_required outcome: {e}"))
                .and_then(|i| {
                    if i.questions.is_empty() {
                        Err("an input_required outcome without questions".into())
                    } else {
                        Ok(i)
                    }
                })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_required_survives_the_wire_as_an_error() {
        let mut questions = BTreeMap::new();
        questions.insert(
            "q0".to_owned(),
            Question::Elicit {
                message: "Apply?".into(),
                schema: serde_json::json!({"type": "object"}),
            },
        );
        let asked = InputRequired {
            questions,
            state: serde_json::json!({"preview_id": "p1"}),
        };
        let error = asked.clone().into_error();
        let bytes = crate::encode(&error).unwrap();
        let back: WireError = crate::decode(&bytes).unwrap();
        assert_eq!(back.code, ErrorCode::InputRequired);
        assert_eq!(InputRequired::from_error(&back), Some(Ok(asked)));
        assert!(InputRequired::from_error(&WireError::failed("no")).is_none());
        let empty = WireError::new(ErrorCode::InputRequired, "?");
        assert!(matches!(InputRequired::from_error(&empty), Some(Err(_))));
    }

    #[test]
    fn a_round_is_optional_on_the_wire() {
        let round = Round::default();
        let back: Round = crate::decode(&crate::encode(&round).unwrap()).unwrap();
        assert_eq!(back, round);
    }
}
