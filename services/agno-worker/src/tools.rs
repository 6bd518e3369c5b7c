//! The agent runtime's MCP tools.
//!
//! The front door (category `agents`, served by every replica): create, run,
//! confirm, list, get and delete agents, and the category stats. Runs are
//! forwarded ([`Call::forward`]) to `sophia.v1.tools.<category>.agno_run`,
//! served only by the replicas whose `AGNO_CATEGORIES` include the agent's
//! category, so each category scales on its own. The forwarded call keeps
//! the caller's request id, deadline, progress and questions.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Value, json};
use sophia_kit::{Call, Category, ErrorCode, Tool, ToolOutput, WireError, Worker};
use sophia_proto::subject;

use crate::agent::{Agent, AgentRecord, now_ms};
use crate::runner::{Decision, Outcome, RunState, Runner};
use crate::store::{StoreError, valid_id};
use crate::templates::Templates;

/// What the tools share.
pub struct Ctx {
    /// Agent templates.
    pub templates: Templates,
    /// The loop, the directory and the store.
    pub runner: Runner,
    /// The categories this replica runs agents of.
    pub categories: Vec<Category>,
}

/// The subject where a category's agent runs are served.
pub fn run_subject(category: Category) -> String {
    subject::tool(category, "agno_run")
}

fn store_error(e: StoreError) -> WireError {
    let code = match &e {
        StoreError::Contended(_) | StoreError::AlreadyDecided(..) => ErrorCode::Conflict,
        StoreError::InvalidId(_) => ErrorCode::InvalidArguments,
        StoreError::Unavailable(_) => ErrorCode::Unavailable,
    };
    WireError::new(code, e.to_string())
}

impl Ctx {
    fn template(&self, agent_type: &str) -> Result<&Arc<crate::templates::Template>, WireError> {
        self.templates.get(agent_type).ok_or_else(|| {
            WireError::invalid_arguments(format!(
                "unknown agent type {agent_type:?}; the types are: {} (see agno_list_agent_types)",
                self.templates.names().join(", ")
            ))
        })
    }

    /// Creates an agent (and its record, so any replica can run it).
    async fn create(
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
    fn tools_ready(
        &self,
        template: &crate::templates::Template,
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
    async fn create_and_run(
        &self,
        call: &Call,
        agent_type: &str,
        message: &Value,
    ) -> Result<ToolOutput, WireError> {
        self.tools_ready(self.template(agent_type)?, &call.args)?;
        let record = self
            .create(agent_type, call.args["session_id"].as_str())
            .await?;
        let mut args = json!({"agent_id": record.id, "message": message,
            "allow_missing_tools": call.args["allow_missing_tools"]});
        if let Some(s) = call.args["session_id"].as_str() {
            args["session_id"] = json!(s);
        }
        match forward(call, record.category, args).await {
            Ok(out) => Ok(with_agent(out, &record)),
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

    async fn agent(&self, id: &str) -> Result<AgentRecord, WireError> {
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

async fn forward(call: &Call, category: Category, args: Value) -> Result<ToolOutput, WireError> {
    call.forward(run_subject(category), category, args)
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

/// The `allow_missing_tools` argument of the tools that start runs.
static ALLOW_MISSING_TOOLS: std::sync::LazyLock<Value> = std::sync::LazyLock::new(|| {
    json!({"type": "boolean", "default": false,
        "description": "Run even if some of the agent's tools are not on the mesh \
            (by default such a run is refused, with the missing tools named)"})
});

/// The worker with its tools: the front door, plus the runs of
/// `ctx.categories`.
pub fn worker(ctx: Arc<Ctx>) -> Worker {
    let mut w = Worker::new("agno-worker", env!("CARGO_PKG_VERSION"))
        .description("Sophia Mesh agent runtime");
    let c = ctx.clone();
    w = w.tool(
        Tool::new(
            "agno_list_agent_types",
            Category::Agents,
            "The kinds of agent on offer: category, description, model, tools, and which of \
             those tools are not on the mesh right now.",
        )
        .input_schema(json!({"type": "object", "properties": {}, "additionalProperties": false}))
        .read_only()
        .idempotent()
        .handler(move |_| {
            let c = c.clone();
            async move {
                let types: Vec<Value> = c
                    .templates
                    .iter()
                    .map(|t| {
                        json!({"agent_type": t.agent_type, "category": t.category,
                        "description": t.description, "model": t.model, "tools": t.tools,
                        "max_steps": t.max_steps, "missing_tools": c.runner.missing_tools(t)})
                    })
                    .collect();
                Ok(ToolOutput::json(json!({"agent_types": types})))
            }
        }),
    );
    let c = ctx.clone();
    w = w.tool(
        Tool::new(
            "agno_create_agent",
            Category::Agents,
            "Creates an agent of a type (see agno_list_agent_types). With a task, runs it at once \
             and returns the answer, the steps taken and the token usage.",
        )
        .input_schema(json!({"type": "object", "properties": {
            "agent_type": {"type": "string", "description": "e.g. gong_agent, pulumi_agent"},
            "task": {"type": "string", "description": "Work to start on straight away"},
            "session_id": {"type": "string", "description": "Continue this session instead of starting one"},
            "allow_missing_tools": ALLOW_MISSING_TOOLS.clone()},
            "required": ["agent_type"], "additionalProperties": false}))
        .timeout_ms(10 * 60_000)
        .handler(move |call| {
            let c = c.clone();
            async move {
                let agent_type = call.args["agent_type"].as_str().unwrap_or_default();
                if call.args["task"].is_string() {
                    return c.create_and_run(&call, agent_type, &call.args["task"]).await;
                }
                let record = c.create(agent_type, call.args["session_id"].as_str()).await?;
                let template = c.template(&record.agent_type)?;
                let mut out = ToolOutput::text(format!(
                    "created {} {} (session {})",
                    record.agent_type, record.id, record.session_id
                ));
                out.structured = Some(json!({"agent_id": record.id, "agent_type": record.agent_type,
                    "category": record.category, "session_id": record.session_id,
                    "missing_tools": c.runner.missing_tools(template)}));
                Ok(out)
            }
        }),
    );
    let c = ctx.clone();
    w = w.tool(
        Tool::new(
            "agno_run_agent",
            Category::Agents,
            "Sends a message to an agent (by agent_id, or a new one of agent_type) and runs it to \
             an answer. Returns the answer, the steps taken (tool calls and results) and token \
             usage; or, before a destructive tool, a pending action to confirm with agno_confirm.",
        )
        .input_schema(json!({"type": "object", "properties": {
            "agent_id": {"type": "string"},
            "agent_type": {"type": "string"},
            "message": {"type": "string"},
            "session_id": {"type": "string"},
            "allow_missing_tools": ALLOW_MISSING_TOOLS.clone()},
            "required": ["message"], "additionalProperties": false}))
        .timeout_ms(10 * 60_000)
        .handler(move |call| {
            let c = c.clone();
            async move {
                let record = match (
                    call.args["agent_id"].as_str(),
                    call.args["agent_type"].as_str(),
                ) {
                    (Some(id), _) => c.agent(id).await?,
                    (None, Some(ty)) => {
                        return c.create_and_run(&call, ty, &call.args["message"]).await;
                    }
                    (None, None) => {
                        return Err(WireError::invalid_arguments(
                            "give an agent_id, or an agent_type to create a new agent",
                        ));
                    }
                };
                c.tools_ready(c.template(&record.agent_type)?, &call.args)?;
                let mut args = json!({"agent_id": record.id, "message": call.args["message"],
                    "allow_missing_tools": call.args["allow_missing_tools"]});
                if let Some(s) = call.args["session_id"].as_str() {
                    args["session_id"] = json!(s);
                }
                let out = forward(&call, record.category, args).await?;
                Ok(with_agent(out, &record))
            }
        }),
    );
    let c = ctx.clone();
    w = w.tool(
        Tool::new(
            "agno_confirm",
            Category::Agents,
            "Answers an agent's pending action (a destructive tool call waiting for a person): \
             approve=true runs it and resumes the agent, approve=false tells the agent no. Each \
             action is decided once.",
        )
        .input_schema(json!({"type": "object", "properties": {
            "action_id": {"type": "string"}, "approve": {"type": "boolean"}},
            "required": ["action_id", "approve"], "additionalProperties": false}))
        .destructive()
        .timeout_ms(10 * 60_000)
        .handler(move |call| {
            let c = c.clone();
            async move {
                let id = call.args["action_id"].as_str().unwrap_or_default();
                let approve = call.args["approve"].as_bool().unwrap_or(false);
                let action = c
                    .runner
                    .store
                    .decide(id, if approve { "confirmed" } else { "rejected" })
                    .await
                    .map_err(store_error)?
                    .ok_or_else(|| {
                        WireError::invalid_arguments(format!("no pending action {id}"))
                    })?;
                let template = c.template(&action.run.agent_type)?;
                let out = forward(
                    &call,
                    template.category,
                    json!({"action_id": id, "approve": approve,
                    "run": serde_json::to_value(&action.run).unwrap_or_default()}),
                )
                .await?;
                Ok(out)
            }
        }),
    );
    let c = ctx.clone();
    w = w.tool(
        Tool::new("agno_list_agents", Category::Agents, "The agents that exist, oldest first.")
            .input_schema(json!({"type": "object", "properties": {
                "limit": {"type": "integer", "minimum": 1, "maximum": 1000}}, "additionalProperties": false}))
            .read_only()
            .handler(move |call| {
                let c = c.clone();
                async move {
                    let limit = call.args["limit"].as_u64().unwrap_or(100) as usize;
                    let agents = c.runner.store.agents(limit).await.map_err(store_error)?;
                    Ok(ToolOutput::json(json!({"agents": agents})))
                }
            }),
    );
    let c = ctx.clone();
    w = w.tool(
        Tool::new(
            "agno_get_agent",
            Category::Agents,
            "One agent, with the length of its session.",
        )
        .input_schema(
            json!({"type": "object", "properties": {"agent_id": {"type": "string"}},
                "required": ["agent_id"], "additionalProperties": false}),
        )
        .read_only()
        .idempotent()
        .handler(move |call| {
            let c = c.clone();
            async move {
                let record = c
                    .agent(call.args["agent_id"].as_str().unwrap_or_default())
                    .await?;
                let (session, _) = c
                    .runner
                    .store
                    .session(&record.session_id)
                    .await
                    .map_err(store_error)?;
                let mut v = serde_json::to_value(&record).unwrap_or_default();
                v["session_messages"] = json!(session.messages.len());
                Ok(ToolOutput::json(v))
            }
        }),
    );
    let c = ctx.clone();
    w = w.tool(
        Tool::new(
            "agno_delete_agent",
            Category::Agents,
            "Deletes an agent (its session stays until it expires).",
        )
        .input_schema(
            json!({"type": "object", "properties": {"agent_id": {"type": "string"}},
                "required": ["agent_id"], "additionalProperties": false}),
        )
        .destructive()
        .idempotent()
        .handler(move |call| {
            let c = c.clone();
            async move {
                let id = call.args["agent_id"].as_str().unwrap_or_default();
                let existed = c.runner.store.delete_agent(id).await.map_err(store_error)?;
                Ok(ToolOutput::json(
                    json!({"agent_id": id, "deleted": existed}),
                ))
            }
        }),
    );
    let c = ctx.clone();
    w = w.tool(
        Tool::new(
            "agno_agent_stats",
            Category::Agents,
            "Per agent category: how many agents exist and how many runs are in progress.",
        )
        .input_schema(json!({"type": "object", "properties": {}, "additionalProperties": false}))
        .read_only()
        .handler(move |_| {
            let c = c.clone();
            async move { Ok(ToolOutput::json(stats(&c).await?)) }
        }),
    );
    for category in ctx.categories.clone() {
        let c = ctx.clone();
        w = w.tool(
            Tool::new(
                format!("agno_run_{category}"),
                category,
                format!("Runs {category} agents (forwarded here by the agents front door)."),
            )
            .on_subject(run_subject(category))
            .unannounced()
            .timeout_ms(10 * 60_000)
            .handler(move |call| {
                let c = c.clone();
                async move { run(&c, &call).await }
            }),
        );
    }
    w
}

async fn stats(c: &Ctx) -> Result<Value, WireError> {
    let mut per: BTreeMap<String, (u64, u64)> = Category::AGENTS
        .iter()
        .map(|c| (c.as_str().to_owned(), (0, 0)))
        .collect();
    for a in c.runner.store.agents(100_000).await.map_err(store_error)? {
        per.entry(a.category.as_str().to_owned()).or_default().0 += 1;
    }
    for key in c
        .runner
        .store
        .runs_in_progress()
        .await
        .map_err(store_error)?
    {
        if let Some((cat, _)) = key.split_once('.') {
            per.entry(cat.to_owned()).or_default().1 += 1;
        }
    }
    let categories: serde_json::Map<String, Value> = per
        .into_iter()
        .map(|(k, (agents, runs))| (k, json!({"agents": agents, "runs_in_progress": runs})))
        .collect();
    Ok(json!({"categories": categories}))
}

/// A run on this replica: a new message, or a paused run resumed.
async fn run(c: &Ctx, call: &Call) -> Result<ToolOutput, WireError> {
    let (template, mut state) = if let Some(action_id) = call.args["action_id"].as_str() {
        let mut state: RunState = serde_json::from_value(call.args["run"].clone())
            .map_err(|e| WireError::invalid_arguments(format!("a malformed paused run: {e}")))?;
        let first = state
            .queued
            .first()
            .and_then(|t| t["id"].as_str())
            .unwrap_or_default();
        state.decided = Some(Decision {
            tool_call_id: first.to_owned(),
            approve: call.args["approve"].as_bool().unwrap_or(false),
        });
        tracing::info!(action = %action_id, "resuming a paused run");
        (c.template(&state.agent_type)?.clone(), state)
    } else {
        let agent_id = call.args["agent_id"].as_str().unwrap_or_default();
        let record = c.agent(agent_id).await?;
        let template = c.template(&record.agent_type)?.clone();
        let session_id = call.args["session_id"]
            .as_str()
            .unwrap_or(&record.session_id)
            .to_owned();
        let (session, _) = c
            .runner
            .store
            .session(&session_id)
            .await
            .map_err(store_error)?;
        let mut messages = vec![json!({"role": "system", "content": template.instructions})];
        messages.extend(session.messages);
        let new_from = messages.len();
        messages.push(json!({"role": "user", "content": call.args["message"]}));
        let state = RunState {
            agent_id: record.id.clone(),
            agent_type: record.agent_type.clone(),
            session_id,
            messages,
            new_from,
            ..RunState::default()
        };
        (template, state)
    };
    // Checked again here: this replica's view of the mesh is what the run uses.
    let missing = if call.args["action_id"].is_string() {
        c.runner.missing_tools(&template)
    } else {
        c.tools_ready(&template, &call.args)?
    };
    if !missing.is_empty() {
        call.progress(
            0.0,
            None,
            Some(format!("not on the mesh right now: {}", missing.join(", "))),
        )
        .await;
    }
    let category = template.category.as_str();
    let run_id = call.id.simple().to_string();
    c.runner.store.run_started(category, &run_id).await;
    let outcome = c.runner.drive(call, &template, &mut state).await;
    c.runner.store.run_finished(category, &run_id).await;
    let outcome = outcome?;
    let mut result = json!({"agent_id": state.agent_id, "agent_type": state.agent_type,
        "session_id": state.session_id, "steps": state.steps, "turns": state.turns,
        "usage": state.usage, "missing_tools": missing});
    let text = match outcome {
        Outcome::Answered(answer) => {
            save(c, &state).await?;
            result["status"] = json!("completed");
            result["answer"] = json!(answer);
            answer
        }
        Outcome::StepLimit => {
            save(c, &state).await?;
            result["status"] = json!("step_limit");
            format!(
                "stopped after {} model turns (the {} template's max_steps) without a final answer; \
                 the steps so far are in the result",
                state.turns, template.agent_type
            )
        }
        Outcome::Paused(action) => {
            c.runner
                .store
                .put_pending(&action)
                .await
                .map_err(store_error)?;
            result["status"] = json!("awaiting_confirmation");
            result["pending_action"] = json!({"action_id": action.id, "tool": action.tool,
                "arguments": action.arguments, "plan": action.plan, "confirm_with": "agno_confirm"});
            format!(
                "the agent wants to run {} with {}; a person must confirm: call agno_confirm with \
                 action_id={} and approve=true (or false)",
                action.tool, action.arguments, action.id
            )
        }
    };
    let mut missing_note = String::new();
    if !missing.is_empty() {
        missing_note = format!(
            "\n\nnote: these tools of the {} are not on the mesh right now: {}",
            template.agent_type,
            missing.join(", ")
        );
    }
    let mut out = ToolOutput::text(format!("{text}{missing_note}"));
    out.structured = Some(result);
    Ok(out)
}

/// Appends the run's new messages to its session.
async fn save(c: &Ctx, state: &RunState) -> Result<(), WireError> {
    let new = state.messages.get(state.new_from..).unwrap_or_default();
    c.runner
        .store
        .append(&state.session_id, new)
        .await
        .map_err(store_error)
}
