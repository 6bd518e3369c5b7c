//! A run's state: what it carries from step to step, and what a paused run
//! waiting for a person keeps. Plain data, read and written by the
//! [`crate::runner`] and kept by the [`crate::store`]; it depends on neither.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sophia_proto::chat::{Message, ToolCall, Usage};

/// What a run carries from step to step; saved whole when it pauses.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RunState {
    /// The agent.
    pub agent_id: String,
    /// Its type.
    pub agent_type: String,
    /// Its session.
    pub session_id: String,
    /// Every message of the conversation, system prompt first.
    pub messages: Vec<Message>,
    /// Where this run's messages start (the rest is the session's history).
    pub new_from: usize,
    /// The tool calls made, with their results.
    pub steps: Vec<Step>,
    /// Model turns taken.
    pub turns: u32,
    /// Tokens used, summed over the run's model calls.
    pub usage: Usage,
    /// Tool calls of the current model turn still to run.
    pub queued: Vec<ToolCall>,
    /// A person's decision on the first queued (destructive) call, when a
    /// paused run resumes.
    #[serde(default)]
    pub decided: Option<Decision>,
}

impl RunState {
    /// The messages this run added to its session.
    pub fn new_messages(&self) -> &[Message] {
        self.messages.get(self.new_from..).unwrap_or_default()
    }

    /// The result of the latest step that mentions `id` (e.g. the preview a
    /// destructive call applies), if the run saw one.
    pub fn result_mentioning(&self, id: &str) -> Option<&str> {
        self.steps
            .iter()
            .rev()
            .find(|s| s.result.contains(id))
            .map(|s| s.result.as_str())
    }
}

/// One tool call the model made, and its result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Step {
    /// The tool.
    pub tool: String,
    /// Its arguments (the model's text, when it was not a JSON object).
    pub arguments: Value,
    /// What the tool said, or `error: ...`.
    pub result: String,
    /// Whether the call failed.
    pub is_error: bool,
}

/// A person's yes or no on a pending tool call.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// The model's id of the tool call.
    pub tool_call_id: String,
    /// Yes?
    pub approve: bool,
}

/// A destructive tool call waiting for a person's yes or no, with what the
/// run needs to resume.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PendingAction {
    /// Its id (give it to `agno_confirm`).
    pub id: String,
    /// The agent that wants it.
    pub agent_id: String,
    /// The tool.
    pub tool: String,
    /// Its arguments.
    pub arguments: Value,
    /// What it will do, as far as the run knows (e.g. the preview it applies).
    pub plan: Option<String>,
    /// The paused run.
    pub run: RunState,
    /// Whether a person has decided yet.
    pub status: ActionStatus,
    /// Who decided (the caller's principal), once someone has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<String>,
    /// The detached run (job) this action pauses, if it is one: the job's
    /// record says it waits for input, and a decision resumes it as a job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    /// When the run paused for it (Unix ms); none in records of the
    /// version before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_ms: Option<u64>,
}

/// Where a [`PendingAction`] is: `pending`, then `confirmed` or `rejected`,
/// exactly once.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ActionStatus {
    /// Waiting for a person.
    Pending,
    /// A person said yes.
    Confirmed,
    /// A person said no.
    Rejected,
}

impl ActionStatus {
    /// `confirmed` for a yes, `rejected` for a no.
    pub fn decided(approve: bool) -> Self {
        if approve {
            Self::Confirmed
        } else {
            Self::Rejected
        }
    }

    /// The name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Confirmed => "confirmed",
            Self::Rejected => "rejected",
        }
    }
}

impl std::fmt::Display for ActionStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_status_is_written_as_the_strings_of_before() {
        for (status, name) in [
            (ActionStatus::Pending, "pending"),
            (ActionStatus::Confirmed, "confirmed"),
            (ActionStatus::Rejected, "rejected"),
        ] {
            assert_eq!(serde_json::to_value(status).unwrap(), json!(name));
            assert_eq!(
                serde_json::from_value::<ActionStatus>(json!(name)).unwrap(),
                status
            );
            assert_eq!(status.to_string(), name);
        }
    }

    #[test]
    fn a_paused_run_stored_before_reads_the_same() {
        let stored = json!({"id": "a1", "agent_id": "g1", "tool": "pulumi_up",
            "arguments": {"stack": "dev"}, "plan": "1 create", "status": "pending",
            "run": {"agent_id": "g1", "agent_type": "pulumi_agent", "session_id": "s1",
                "messages": [{"role": "system", "content": "be careful"},
                    {"role": "assistant", "content": null, "tool_calls": [{"id": "c1",
                        "type": "function", "function": {"name": "pulumi_up",
                        "arguments": "{\"stack\":\"dev\"}"}}]}],
                "new_from": 1,
                "steps": [{"tool": "pulumi_preview", "arguments": {"stack": "dev"},
                    "result": "1 create", "is_error": false}],
                "turns": 2, "usage": {"input_tokens": 3, "output_tokens": 4},
                "queued": [{"id": "c1", "type": "function", "function": {"name": "pulumi_up",
                    "arguments": "{\"stack\":\"dev\"}"}}]}});
        let action: PendingAction = serde_json::from_value(stored.clone()).unwrap();
        assert_eq!(action.status, ActionStatus::Pending);
        assert_eq!(action.run.queued[0].id(), "c1");
        assert_eq!(action.run.result_mentioning("create"), Some("1 create"));
        let mut again = serde_json::to_value(&action).unwrap();
        again["run"]
            .as_object_mut()
            .unwrap()
            .remove("decided")
            .expect("written as null");
        assert_eq!(again, stored);
    }
}
