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
//! [`Call::ask_named`] instead asks several questions at once under keys
//! the handler names (for a protocol that fixes the keys): one round for
//! all of them.

use std::collections::BTreeMap;

use serde_json::Value;
use sophia_proto::{InputRequired, Question, Round, WireError};

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

impl Call {
    /// Asks `questions` together, each under its own key, and returns the
    /// client's answers (its MCP results as JSON: `ElicitResult`,
    /// `CreateMessageResult`, `ListRootsResult`) by key.
    ///
    /// A client that answers in rounds gets them all in one
    /// `input_required` outcome (with what the handler [`Call::keep`]s);
    /// on the retry the answers are taken from its `inputResponses` by key.
    /// Keys it did not answer, or answered with something that is not the
    /// question's kind of result (e.g. an elicitation answer without an
    /// `action`), are asked again; keys it sent that were not asked are
    /// ignored. Keys must not be `q0`, `q1`, ... (those of
    /// [`Call::elicit`]'s questions) nor `sophia_confirm` (the gateway's).
    ///
    /// A client with a session is asked them one by one, in order, through
    /// the usual relay, as [`Call::elicit`], [`Call::sample`] and
    /// [`Call::list_roots`] ask; the keys only name the answers.
    ///
    /// Errors: `missing_capability` when the client cannot answer one of the
    /// questions' kinds (check [`Call::can_elicit`] etc. first to ask only
    /// what it can), and those of [`Call::elicit`].
    pub async fn ask_named(
        &self,
        questions: Vec<(String, Question)>,
    ) -> Result<BTreeMap<String, Value>, WireError> {
        if let Some((_, question)) = questions.iter().find(|(_, q)| !self.can_answer(q)) {
            return Err(WireError::missing_capability(question));
        }
        if self.answers_in_rounds() {
            return gather(self.round.as_ref(), questions).map_err(|unanswered| {
                InputRequired {
                    questions: unanswered,
                    state: self.asking.kept.lock().clone(),
                }
                .into_error()
            });
        }
        let mut answers = BTreeMap::new();
        for (key, question) in questions {
            answers.insert(key, self.ask(question).await?);
        }
        Ok(answers)
    }

    /// Whether the caller's client can answer `question`'s kind.
    pub(crate) fn can_answer(&self, question: &Question) -> bool {
        match question {
            Question::Elicit { .. } => self.can_elicit(),
            Question::Sample { .. } => self.can_sample(),
            Question::Roots => self.can_list_roots(),
        }
    }
}

/// The answers `round` holds for all of `questions`, or the questions
/// still unanswered.
fn gather(
    round: Option<&Round>,
    questions: Vec<(String, Question)>,
) -> Result<BTreeMap<String, Value>, BTreeMap<String, Question>> {
    let mut answers = BTreeMap::new();
    let mut unanswered = BTreeMap::new();
    for (key, question) in questions {
        match round.and_then(|r| r.responses.get(&key)) {
            Some(answer) if answers_kind(&question, answer) => {
                answers.insert(key, answer.clone());
            }
            _ => {
                unanswered.insert(key, question);
            }
        }
    }
    if unanswered.is_empty() {
        Ok(answers)
    } else {
        Err(unanswered)
    }
}

/// Whether `answer` has the shape of `question`'s MCP result.
fn answers_kind(question: &Question, answer: &Value) -> bool {
    match question {
        Question::Elicit { .. } => matches!(
            answer.get("action").and_then(Value::as_str),
            Some("accept" | "decline" | "cancel")
        ),
        Question::Sample { .. } => answer.get("content").is_some(),
        Question::Roots => answer.get("roots").is_some_and(Value::is_array),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn questions() -> Vec<(String, Question)> {
        vec![
            (
                "user_name".to_owned(),
                Question::Elicit {
                    message: "What is your name?".into(),
                    schema: json!({"type": "object"}),
                },
            ),
            ("client_roots".to_owned(), Question::Roots),
        ]
    }

    fn round(responses: Value) -> Round {
        Round {
            responses: serde_json::from_value(responses).unwrap(),
            state: None,
        }
    }

    #[test]
    fn named_questions_are_asked_together_until_all_are_answered() {
        let asked = gather(None, questions()).unwrap_err();
        assert_eq!(
            asked.keys().collect::<Vec<_>>(),
            ["client_roots", "user_name"]
        );

        // One answered, one malformed (not a ListRootsResult): both missing
        // ones are asked again; the extra key is ignored.
        let partial = round(json!({
            "user_name": {"action": "accept", "content": {"name": "Alice"}},
            "client_roots": 12345,
            "unknown": {"action": "accept"}}));
        let again = gather(Some(&partial), questions()).unwrap_err();
        assert_eq!(again.keys().collect::<Vec<_>>(), ["client_roots"]);

        let full = round(json!({
            "user_name": {"action": "accept", "content": {"name": "Alice"}},
            "client_roots": {"roots": [{"uri": "file:///r"}]},
            "unknown": {}}));
        let answers = gather(Some(&full), questions()).unwrap();
        assert_eq!(answers.len(), 2);
        assert_eq!(answers["user_name"]["content"]["name"], "Alice");
    }

    #[test]
    fn an_answer_must_be_its_questions_kind_of_result() {
        let sample = Question::Sample { params: json!({}) };
        assert!(answers_kind(
            &sample,
            &json!({"role": "assistant", "content": {}})
        ));
        assert!(!answers_kind(&sample, &json!({"action": "accept"})));
        let elicit = &questions()[0].1;
        assert!(answers_kind(elicit, &json!({"action": "decline"})));
        assert!(!answers_kind(elicit, &json!(12345)));
        assert!(!answers_kind(&Question::Roots, &json!({"roots": {}})));
    }
}
