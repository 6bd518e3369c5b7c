//! What the tools share, and what several of them do with it: find a
//! template or an agent, create an agent, check that a run's tools are on
//! the mesh, and hand a run to the replicas of its category.

use std::sync::Arc;

use serde_json::{Value, json};
use sophia_kit::{Call, Category, ErrorCode, ToolOutput, WireError};

use super::run_subject;
use crate::agent::{Agent, AgentRecord, now_ms};
use crate::runner::Runner;
use crate::store::{StoreError, valid_id};
use crate::templates::{Template, Templates};

/// What the tools share.
pub struct Ctx {
    /// Agent templates.
    pub templates: Templates,
    /// The loop, the directory and the store.
    pub runner: Runner,
    /// The categories this replica runs agents of.
    pub categories: Vec<Category>,
    /// This replica's id (the owner of the detached runs it drives).
    pub instance: String,
}

/// A store failure as the caller sees it.
pub(super) fn store_error(e: StoreError) -> WireError {
    let code = match &e {
        StoreError::Contended(_) | StoreError::AlreadyDecided(..) => ErrorCode::Conflict,
        StoreError::InvalidId(_) => ErrorCode::InvalidArguments,
        StoreError::Unavailable(_) => ErrorCode::Unavailable,
    };
    WireError::new(code, e.to_string())
}

impl Ctx {
    /// The template of `agent_type`, or an error naming the types there are.
    pub(super) fn template(&self, agent_type: &str) -> Result<&Arc<Template>, WireError> {
        self.templates.get(agent_type).ok_or_else(|| {
            WireError::invalid_arguments(format!(
                "unknown agent type {agent_type:?}; the types are: {} (see agno_list_agent_types)",
                self.templates.names().join(", ")
            ))
        })
    }

    /// Creates an agent (and its record, so any replica can run it).
    pub(super) async fn create(
        &self,
        agent_type: &str,
        session_id: Option<&str>,
    ) -> Result<AgentRecord, WireError> {
        let template = self.template(agent_type)?;
        let agent = Agent::new(template, now_ms());
        let session = match session_id {
            Some(s) => {
                valid_id(s).map_err(store_error)?;
                s.to_owned()
            }
            None => agent.id.to_string(),
        };
        let record = agent.record(&session);
        self.runner
            .store
            .put_agent(&record)
            .await
            .map_err(store_error)?;
        Ok(record)
    }

    /// A run may start only when every tool its template names is on the
    /// mesh, or when the caller allows it to run without them. Returns the
    /// missing tools (empty, or allowed).
    pub(super) fn tools_ready(
        &self,
        template: &Template,
        args: &Value,
    ) -> Result<Vec<String>, WireError> {
        let missing = self.runner.missing_tools(template);
        if missing.is_empty() || args["allow_missing_tools"].as_bool() == Some(true) {
            return Ok(missing);
        }
        let mut e = WireError::new(
            ErrorCode::Unavailable,
            format!(
                "the {} cannot do its work: its tools {} are not on the mesh. Start a worker \
                 that offers them (docs/agents.md says where each comes from), or pass \
                 allow_missing_tools: true to run it without them",
                template.agent_type,
                missing.join(", ")
            ),
        );
        e.data = Some(json!({ "missing_tools": missing }));
        Err(e)
    }

    /// Creates an agent of `agent_type` for one run and runs it; if the run
    /// fails, the agent is removed again (or, if that fails too, the error
    /// says which agent is left), so a failed call leaves no orphan.
    pub(super) async fn create_and_run(
        &self,
        call: &Call,
        agent_type: &str,
        message: &Value,
    ) -> Result<ToolOutput, WireError> {
        self.tools_ready(self.template(agent_type)?, &call.args)?;
        let record = self
            .create(agent_type, call.args["session_id"].as_str())
            .await?;
        match self.forward_run(call, &record, message).await {
            Ok(out) => Ok(out),
            Err(mut e) => {
                e.message = match self.runner.store.delete_agent(&record.id).await {
                    Ok(_) => format!("{} (the agent this call created was removed)", e.message),
                    Err(d) => format!(
                        "{} (the agent this call created, {}, could not be removed: {d}; \
                         delete it with agno_delete_agent)",
                        e.message, record.id
                    ),
                };
                Err(e)
            }
        }
    }

    /// Sends `message` to the agent of `record`, run by a replica of its
    /// category; the result names the agent.
    pub(super) async fn forward_run(
        &self,
        call: &Call,
        record: &AgentRecord,
        message: &Value,
    ) -> Result<ToolOutput, WireError> {
        let mut args = json!({"agent_id": record.id, "message": message,
            "allow_missing_tools": call.args["allow_missing_tools"]});
        // A detached start (an MCP task): the replica runs it as this job.
        if call.detached() {
            args["job_id"] = json!(uuid::Uuid::new_v4().simple().to_string());
        }
        if let Some(s) = call.args["session_id"].as_str() {
            args["session_id"] = json!(s);
        }
        let out = forward(call, record.category, args).await?;
        Ok(with_agent(out, record))
    }

    /// The agent `id`, or an error saying it does not exist.
    pub(super) async fn agent(&self, id: &str) -> Result<AgentRecord, WireError> {
        self.runner
            .store
            .agent(id)
            .await
            .map_err(store_error)?
            .ok_or_else(|| {
                WireError::invalid_arguments(format!(
                    "no agent {id} (agents expire with their session; see agno_list_agents)"
                ))
            })
    }
}

/// Hands a call to the replicas that run `category`'s agents.
pub(super) async fn forward(
    call: &Call,
    category: Category,
    args: Value,
) -> Result<ToolOutput, WireError> {
    call.forward(
        sophia_kit::bus::Target::Subject {
            subject: run_subject(category),
            category,
        },
        args,
    )
    .await
    .map_err(|e| match e {
        sophia_kit::bus::CallError::NoWorker { .. } => WireError::new(
            ErrorCode::Unavailable,
            format!(
                "no agno-worker replica runs {category} agents: start one with \
                     AGNO_CATEGORIES including {category}"
            ),
        ),
        sophia_kit::bus::CallError::Worker(w) => w,
        other => WireError::new(other.code(), other.to_string()),
    })
}

fn with_agent(mut out: ToolOutput, record: &AgentRecord) -> ToolOutput {
    if let Some(Value::Object(s)) = &mut out.structured {
        s.entry("agent_id").or_insert(json!(record.id));
        s.entry("agent_type").or_insert(json!(record.agent_type));
        s.entry("session_id").or_insert(json!(record.session_id));
    }
    out
}
