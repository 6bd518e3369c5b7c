//! A destructive tool never runs without a person's yes: asked at once
//! through MCP elicitation when the caller's client supports it (on a
//! session; a 2026-07-28 client answering in rounds is not), or else
//! the run pauses with a [`PendingAction`] for `agno_confirm`, and resumes
//! with the decision.

use serde_json::{Value, json};
use sophia_kit::{Answer, Call, WireError};
use sophia_proto::ToolSpec;

use crate::run::{ActionStatus, PendingAction, RunState};

/// Whether a checked call may run: at once unless it is destructive;
/// else on the decision a resumed run brings, or on a person's answer.
pub(crate) async fn confirmation(
    call: &Call,
    state: &mut RunState,
    spec: &ToolSpec,
    tool_call_id: &str,
    arguments: &Value,
) -> Result<Confirmation, WireError> {
    if !spec.hints.destructive {
        return Ok(Confirmation::Yes);
    }
    match state.decided.take_if(|d| d.tool_call_id == tool_call_id) {
        Some(d) if d.approve => Ok(Confirmation::Yes),
        Some(_) => Ok(Confirmation::No(not_allowed(&spec.name))),
        None => confirm(call, state, spec, arguments).await,
    }
}

async fn confirm(
    call: &Call,
    state: &RunState,
    spec: &ToolSpec,
    arguments: &Value,
) -> Result<Confirmation, WireError> {
    // A client that answers in rounds (MCP 2026-07-28) would be asked by
    // ending the call, and the retry would run the agent again from its
    // start: pause with a pending action for agno_confirm instead.
    if !call.can_elicit() || call.answers_in_rounds() {
        return Ok(Confirmation::Ask);
    }
    let plan = match plan_for(state, arguments) {
        Some(plan) => format!("The plan: {plan}. "),
        None => String::new(),
    };
    let question = format!(
        "The {} wants to run {} with {}. {plan}Allow it?",
        state.agent_type, spec.name, arguments,
    );
    Ok(
        match call.elicit(question, confirm_schema(&spec.name)).await? {
            Answer::Accepted(a) if a["confirm"] == json!(true) => Confirmation::Yes,
            _ => Confirmation::No(not_allowed(&spec.name)),
        },
    )
}

/// Whether a destructive call may run.
pub(crate) enum Confirmation {
    /// It may run.
    Yes,
    /// It may not; what to tell the model.
    No(String),
    /// Nobody can be asked now: the run pauses for `agno_confirm`.
    Ask,
}

/// What the model is told when a person said no.
fn not_allowed(tool: &str) -> String {
    format!("the person did not allow {tool}; do not run it again unless they ask")
}

/// The question a detached run's task asks about `action` (its key is the
/// action's id): the same words and schema as the elicitation above.
pub(crate) fn question(action: &PendingAction) -> sophia_proto::JobQuestion {
    let plan = match &action.plan {
        Some(plan) => format!("The plan: {plan}. "),
        None => String::new(),
    };
    sophia_proto::JobQuestion {
        key: action.id.clone(),
        message: format!(
            "The {} wants to run {} with {}. {plan}Allow it?",
            action.run.agent_type, action.tool, action.arguments,
        ),
        schema: confirm_schema(&action.tool),
    }
}

/// The answer's schema: one boolean, `confirm`.
fn confirm_schema(tool: &str) -> Value {
    json!({"type": "object", "properties": {"confirm": {"type": "boolean",
        "title": format!("Run {tool}")}}, "required": ["confirm"]})
}

/// The preview a destructive call applies, if the run saw it.
fn plan_for(state: &RunState, arguments: &Value) -> Option<String> {
    let preview_id = arguments["preview_id"].as_str()?;
    state.result_mentioning(preview_id).map(str::to_owned)
}

/// The run paused before `tool`, for a person to decide on.
pub(crate) fn pending(state: &RunState, tool: String, arguments: Value) -> PendingAction {
    PendingAction {
        id: uuid::Uuid::new_v4().simple().to_string(),
        agent_id: state.agent_id.clone(),
        tool,
        plan: plan_for(state, &arguments),
        arguments,
        run: state.clone(),
        status: ActionStatus::Pending,
        decided_by: None,
        job: None,
        created_ms: Some(crate::agent::now_ms()),
    }
}
