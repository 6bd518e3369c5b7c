//! Tools that run detached, as jobs (MCP's tasks extension, SEP-2663): a
//! worker announces which of its tools can ([`ToolSpec::jobs`]) and which
//! of its tools report and cancel such a job; a caller asks for a detached
//! start ([`super::ToolRequest::detached`]) and gets the job's
//! [`JobReport`] at once instead of waiting for the work. The job lives
//! where the worker keeps it (e.g. JetStream KV), so any caller replica can
//! follow it by id.
//!
//! [`ToolSpec::jobs`]: super::ToolSpec::jobs

use serde::{Deserialize, Serialize};

/// How a tool's detached jobs are followed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobTools {
    /// The tool that reports a job: called with `{"job_id": ...}`, it
    /// answers with a [`JobReport`] as structured content.
    pub status: String,
    /// The tool that asks a job to stop: called with `{"job_id": ...}`.
    pub cancel: String,
    /// The tool that answers a job waiting for input
    /// ([`JobPhase::InputRequired`]): called with `{"job_id": ...,
    /// "responses": {<question key>: <MCP ElicitResult>}}`. Absent for jobs
    /// that never ask (and in announcements from before it existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer: Option<String>,
}

/// Where a job is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobPhase {
    /// Still working.
    Running,
    /// Paused until a person answers [`JobReport::question`] (through
    /// [`JobTools::answer`]).
    InputRequired,
    /// Done; the status tool's output is the job's result.
    Succeeded,
    /// Ended in failure; [`JobReport::message`] says why.
    Failed,
    /// Stopped by a cancel.
    Cancelled,
    /// A phase this version does not know.
    #[serde(other)]
    Unknown,
}

impl JobPhase {
    /// Whether the job is over.
    pub fn is_over(self) -> bool {
        matches!(
            self,
            JobPhase::Succeeded | JobPhase::Failed | JobPhase::Cancelled
        )
    }
}

/// A job as the tools of [`JobTools`] report it, in their structured
/// content (further fields are the worker's own and are kept).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobReport {
    /// The job's id.
    pub id: String,
    /// Where it is.
    pub state: JobPhase,
    /// How it ended, for people (when it is over).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The latest progress line while it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<String>,
    /// When it started, in Unix milliseconds.
    #[serde(default)]
    pub started_ms: u64,
    /// When its record last changed, in Unix milliseconds.
    #[serde(default)]
    pub updated_ms: u64,
    /// What the job asks while it waits for input
    /// ([`JobPhase::InputRequired`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub question: Option<JobQuestion>,
}

/// A question a paused job asks a person (MCP elicitation, form mode).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobQuestion {
    /// The key its answer comes back under (`responses` of
    /// [`JobTools::answer`]); a new question has a new key.
    pub key: String,
    /// The question, for people.
    pub message: String,
    /// The answer's JSON Schema: a flat object of primitive properties.
    pub schema: serde_json::Value,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_reads_a_workers_job_record_and_tolerates_new_phases() {
        let record = serde_json::json!({"id": "j1", "state": "running", "progress": "+ create",
            "owner": "replica-a", "started_ms": 5});
        let report: JobReport = serde_json::from_value(record).unwrap();
        assert_eq!(report.state, JobPhase::Running);
        assert_eq!(report.progress.as_deref(), Some("+ create"));
        assert!(!report.state.is_over());
        let later: JobReport =
            serde_json::from_value(serde_json::json!({"id": "j1", "state": "paused"})).unwrap();
        assert_eq!(later.state, JobPhase::Unknown);
    }

    #[test]
    fn a_waiting_job_carries_its_question_and_old_job_tools_still_read() {
        let record = serde_json::json!({"id": "j2", "state": "input_required",
            "question": {"key": "a1", "message": "Allow pulumi_up?",
                "schema": {"type": "object"}}});
        let report: JobReport = serde_json::from_value(record).unwrap();
        assert_eq!(report.state, JobPhase::InputRequired);
        assert!(!report.state.is_over());
        assert_eq!(report.question.map(|q| q.key).as_deref(), Some("a1"));
        let old: JobTools =
            serde_json::from_value(serde_json::json!({"status": "s", "cancel": "c"})).unwrap();
        assert_eq!(old.answer, None);
        let bytes = crate::encode(&old).unwrap();
        assert_eq!(crate::decode::<JobTools>(&bytes).unwrap(), old);
    }
}
