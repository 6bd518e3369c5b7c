//! Questions for a client that answers in rounds (MCP 2026-07-28, no
//! session; `docs/mcp.md`, "Input required"). Such a client cannot be asked
//! mid-call, so [`Call::elicit`] (and sampling, roots) ends the call with
//! an `input_required` outcome carrying the question and what the tool
//! [`Call::keep`]s; the client calls again with its answer, possibly at
//! another gateway and worker replica, and the same question then returns
//! that answer at once. A handler therefore runs again from the start on
//! the retry: it reads [`Call::round_state`] to skip what it did before
//! asking (Pulumi keeps the preview it showed, so the retry applies exactly
//! that preview and never makes a fresh one).
//!
//! Questions are keyed by their order in the call (`q0`, `q1`, ...), so a
//! handler must ask the same questions in the same order on every round.

use serde_json::Value;
use sophia_proto::{InputRequired, Question, WireError};

use crate::tool::Call;

/// One attempt's questions: what the handler keeps for the retry, and how
/// many it asked so far (the next question's key).
#[derive(Debug, Default)]
pub(crate) struct Asking {
    kept: parking_lot::Mutex<Value>,
    asked: std::sync::atomic::AtomicU32,
}

impl Call {
    /// Whether the caller's client answers in rounds: a question then ends
    /// this attempt of the call (see the module docs).
    pub fn answers_in_rounds(&self) -> bool {
        self.ask.as_ref().is_some_and(|a| a.rounds)
    }

    /// What this handler [`Call::keep`]t in the attempt whose question the
    /// client has now answered; `None` on a first attempt. The gateway
    /// verified it is exactly what the handler kept, for this caller, tool
    /// and arguments.
    pub fn round_state(&self) -> Option<&Value> {
        self.round.as_ref().and_then(|r| r.state.as_ref())
    }

    /// Keeps `state` for the retry, should a later question end this
    /// attempt (only with a client that answers in rounds). It is not
    /// secret (the client can read it) but it cannot be changed.
    pub fn keep(&self, state: Value) {
        *self.asking.kept.lock() = state;
    }

    /// The client's answer to `question`, from the retried call, or the
    /// `input_required` outcome that asks for it.
    pub(crate) fn answer_in_round(&self, question: Question) -> Result<Value, WireError> {
        let n = self
            .asking
            .asked
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let key = format!("q{n}");
        if let Some(answer) = self.round.as_ref().and_then(|r| r.responses.get(&key)) {
            return Ok(answer.clone());
        }
        let mut asked = InputRequired {
            state: self.asking.kept.lock().clone(),
            ..InputRequired::default()
        };
        asked.questions.insert(key, question);
        Err(asked.into_error())
    }
}
