//! The agent loop: the model (through the intelligence-worker, over the
//! bus) decides, the mesh's tools act, until there is an answer.
//!
//! 1. The messages go to `sophia.v1.infer.<model>.chat` with the tool
//!    definitions of the agent's allow-list, whose schemas come from the
//!    workers' own announcements ([`Directory`]).
//! 2. Each tool call the model makes runs as a bus request to the worker
//!    that owns the tool, with the caller's identity, the remaining
//!    deadline and the trace context.
//! 3. The results go back into the messages; the loop repeats until the
//!    model answers without tool calls, the step limit is reached, or the
//!    deadline passes. Every step is reported as progress.
//!
//! Bad tool calls (unknown tool, arguments that are not JSON or do not fit
//! the schema, a failing tool) become the tool's result, for the model to
//! correct; they never end the run. A destructive tool never runs without a
//! person's yes: through MCP elicitation when the client supports it, or
//! else the run pauses with a [`PendingAction`] for `agno_confirm`.

use std::sync::Arc;
use std::time::Duration;

use opentelemetry::KeyValue;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sophia_kit::bus::{CallError, CallSpec};
use sophia_kit::telemetry::{Span, SpanKind, attr};
use sophia_kit::{Answer, Call, Category, ErrorCode, WireError};
use sophia_proto::{Content, ToolSpec, headers, subject};

use crate::directory::Directory;
use crate::store::{PendingAction, Store};
use crate::templates::Template;

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
    pub messages: Vec<Value>,
    /// Where this run's messages start (the rest is the session's history).
    pub new_from: usize,
    /// The tool calls made, with their results.
    pub steps: Vec<Value>,
    /// Model turns taken.
    pub turns: u32,
    /// Tokens used.
    pub usage: Usage,
    /// Tool calls of the current model turn still to run.
    pub queued: Vec<Value>,
    /// A person's decision on the first queued (destructive) call, when a
    /// paused run resumes.
    #[serde(default)]
    pub decided: Option<Decision>,
}

/// A person's yes or no on a pending tool call.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// The model's id of the tool call.
    pub tool_call_id: String,
    /// Yes?
    pub approve: bool,
}

/// Token usage, summed over the run's model calls.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    /// Prompt tokens.
    pub input_tokens: u64,
    /// Completion tokens.
    pub output_tokens: u64,
}

/// How a run ended (for now).
#[derive(Debug)]
pub enum Outcome {
    /// The model answered.
    Answered(String),
    /// The step limit was reached first.
    StepLimit,
    /// Waiting for a person to confirm a destructive tool call.
    Paused(Box<PendingAction>),
}

/// What a run needs from its replica.
pub struct Runner {
    /// The mesh's tools.
    pub directory: Directory,
    /// Agents, sessions and pending actions.
    pub store: Store,
}

fn tool_text(content: &[Content]) -> String {
    content
        .iter()
        .filter_map(|c| match c {
            Content::Text { text } => Some(text.as_str()),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

impl Runner {
    /// The template's tools that no live worker offers right now.
    pub fn missing_tools(&self, template: &Template) -> Vec<String> {
        template
            .tools
            .iter()
            .filter(|t| self.directory.get(t).is_none())
            .cloned()
            .collect()
    }

    /// Drives `state` until an answer, the step limit, or a pause.
    pub async fn drive(
        &self,
        call: &Call,
        template: &Arc<Template>,
        state: &mut RunState,
    ) -> Result<Outcome, WireError> {
        // The run's span: its model calls and tool calls are its children.
        let run = Span::start(
            format!("invoke_agent {}", template.agent_type),
            SpanKind::Internal,
            &call.trace,
            vec![
                KeyValue::new(attr::GEN_AI_OPERATION, "invoke_agent"),
                KeyValue::new(attr::GEN_AI_AGENT_NAME, template.agent_type.clone()),
                KeyValue::new(attr::GEN_AI_AGENT_ID, state.agent_id.clone()),
                KeyValue::new(attr::GEN_AI_CONVERSATION_ID, state.session_id.clone()),
                KeyValue::new(attr::GEN_AI_REQUEST_MODEL, template.model.clone()),
                KeyValue::new(attr::CATEGORY, template.category.to_string()),
            ],
        );
        let outcome = self.drive_in(call, &run.trace(), template, state).await;
        run.set(KeyValue::new(
            attr::GEN_AI_INPUT_TOKENS,
            state.usage.input_tokens as i64,
        ));
        run.set(KeyValue::new(
            attr::GEN_AI_OUTPUT_TOKENS,
            state.usage.output_tokens as i64,
        ));
        run.outcome(&outcome);
        outcome
    }

    async fn drive_in(
        &self,
        call: &Call,
        trace: &headers::Context,
        template: &Arc<Template>,
        state: &mut RunState,
    ) -> Result<Outcome, WireError> {
        loop {
            while !state.queued.is_empty() {
                let tool_call = state.queued.remove(0);
                if let Some(paused) = self
                    .tool_call(call, trace, template, state, tool_call)
                    .await?
                {
                    return Ok(Outcome::Paused(Box::new(paused)));
                }
            }
            if state.turns >= template.max_steps {
                return Ok(Outcome::StepLimit);
            }
            if call.is_cancelled() {
                return Err(WireError::new(
                    ErrorCode::Cancelled,
                    "the run was cancelled",
                ));
            }
            let message = self.model_turn(call, trace, template, state).await?;
            let calls = message["tool_calls"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            state.messages.push(message.clone());
            if calls.is_empty() {
                return Ok(Outcome::Answered(
                    message["content"].as_str().unwrap_or_default().to_owned(),
                ));
            }
            state.queued = calls;
        }
    }

    async fn model_turn(
        &self,
        call: &Call,
        trace: &headers::Context,
        template: &Arc<Template>,
        state: &mut RunState,
    ) -> Result<Value, WireError> {
        state.turns += 1;
        call.progress(
            state.steps.len() as f64 + state.turns as f64,
            None,
            Some(format!("step {}: asking {}", state.turns, template.model)),
        )
        .await;
        let tools: Vec<Value> = template
            .tools
            .iter()
            .filter_map(|name| self.directory.get(name))
            .map(|spec| {
                json!({"type": "function", "function": {"name": spec.name,
                    "description": spec.description, "parameters": spec.input_schema}})
            })
            .collect();
        let mut args = json!({"model": template.model, "messages": state.messages});
        if !tools.is_empty() {
            args["tools"] = Value::Array(tools);
        }
        if let Some(schema) = &template.output_schema {
            args["response_format"] = json!({"type": "json_schema",
                "json_schema": {"name": "answer", "schema": schema}});
        }
        let spec = CallSpec {
            tool: "chat",
            category: Category::Inference,
            subject: Some(subject::inference(&template.model, "chat")),
            args,
            timeout: call.remaining(),
            caller: call.caller.clone(),
            trace: trace.clone(),
            // Intelligence replicas acknowledge; a model call may run again.
            liveness: sophia_kit::bus::Liveness {
                acked: true,
                retry: true,
            },
        };
        let reply = call
            .bus()
            .call(spec, None, &call.cancellation())
            .await
            .map_err(|e| match e {
                CallError::NoWorker { .. } if self.directory.get("list_models").is_none() => {
                    WireError::new(
                        ErrorCode::Unavailable,
                        "no intelligence-worker is running, so agents cannot reach a model: \
                         start one (ops/scripts/up.sh does; docs/intelligence-worker.md)",
                    )
                }
                CallError::NoWorker { .. } => WireError::new(
                    ErrorCode::InvalidArguments,
                    format!(
                        "no intelligence-worker serves model {:?} (the {} template's model): \
                         set the template's model to one that list_models shows, or `default`",
                        template.model, template.agent_type
                    ),
                ),
                CallError::Worker(w) => w,
                other => WireError::new(other.code(), other.to_string()),
            })?;
        let structured = reply.output.structured.unwrap_or_default();
        state.usage.input_tokens += structured["usage"]["input_tokens"].as_u64().unwrap_or(0);
        state.usage.output_tokens += structured["usage"]["output_tokens"].as_u64().unwrap_or(0);
        let message = structured["response"]["choices"][0]["message"].clone();
        if !message.is_object() {
            return Err(WireError::failed(
                "the model's answer had no message; see the intelligence-worker's logs",
            ));
        }
        let mut message = message;
        message["role"] = json!("assistant");
        Ok(message)
    }

    /// Runs one tool call of the model (or pauses on a destructive one).
    async fn tool_call(
        &self,
        call: &Call,
        trace: &headers::Context,
        template: &Arc<Template>,
        state: &mut RunState,
        tool_call: Value,
    ) -> Result<Option<PendingAction>, WireError> {
        let id = tool_call["id"].as_str().unwrap_or_default().to_owned();
        let name = tool_call["function"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let raw = tool_call["function"]["arguments"].as_str().unwrap_or("{}");
        let checked = self.check(template, &name, raw);
        let (arguments, outcome) = match checked {
            Err((arguments, why)) => (arguments, Err(why)),
            Ok((spec, arguments)) if spec.hints.destructive => {
                let decided = state.decided.take_if(|d| d.tool_call_id == id).map(|d| {
                    if d.approve {
                        Confirmation::Yes
                    } else {
                        Confirmation::No(format!(
                            "the person did not allow {name}; do not run it again unless they ask"
                        ))
                    }
                });
                let confirmation = match decided {
                    Some(c) => c,
                    None => self.confirm(call, state, &spec, &arguments).await?,
                };
                match confirmation {
                    Confirmation::Yes => {
                        let r = self
                            .run_tool(call, trace, &id, &spec, arguments.clone())
                            .await;
                        (arguments, r)
                    }
                    Confirmation::No(why) => (arguments, Err(why)),
                    Confirmation::Ask => {
                        // Put the call back: it runs first when confirmed.
                        state.queued.insert(0, tool_call.clone());
                        let plan = self.plan_for(state, &arguments);
                        let action = PendingAction {
                            id: uuid::Uuid::new_v4().simple().to_string(),
                            agent_id: state.agent_id.clone(),
                            tool: name,
                            arguments,
                            plan,
                            run: state.clone(),
                            status: "pending".into(),
                        };
                        return Ok(Some(action));
                    }
                }
            }
            Ok((spec, arguments)) => {
                let r = self
                    .run_tool(call, trace, &id, &spec, arguments.clone())
                    .await;
                (arguments, r)
            }
        };
        let (content, is_error) = match &outcome {
            Ok(text) => (text.clone(), false),
            Err(why) => (format!("error: {why}"), true),
        };
        call.progress(
            state.steps.len() as f64 + state.turns as f64 + 1.0,
            None,
            Some(format!(
                "step {}: {name} {}",
                state.turns,
                if is_error { "failed" } else { "done" }
            )),
        )
        .await;
        state
            .steps
            .push(json!({"tool": name, "arguments": arguments,
            "result": content, "is_error": is_error}));
        state
            .messages
            .push(json!({"role": "tool", "tool_call_id": id, "content": content}));
        Ok(None)
    }

    /// The spec and parsed arguments, or what to tell the model.
    fn check(
        &self,
        template: &Template,
        name: &str,
        raw: &str,
    ) -> Result<(ToolSpec, Value), (Value, String)> {
        let arguments: Value = match serde_json::from_str(raw) {
            Ok(v @ Value::Object(_)) => v,
            Ok(_) | Err(_) => {
                return Err((
                    Value::String(raw.to_owned()),
                    format!(
                        "the arguments for {name} are not a JSON object ({raw:?}); call it again \
                         with arguments that fit its schema"
                    ),
                ));
            }
        };
        if !template.tools.iter().any(|t| t == name) {
            return Err((
                arguments,
                format!(
                    "{name} is not one of this agent's tools ({})",
                    template.tools.join(", ")
                ),
            ));
        }
        let Some(spec) = self.directory.get(name) else {
            return Err((
                arguments,
                format!("{name} is not on the mesh right now: no live worker offers it"),
            ));
        };
        if let Some(validator) = self.directory.validator(&spec) {
            let problems = sophia_kit::schema::problems(&validator, &arguments);
            if !problems.is_empty() {
                return Err((
                    arguments,
                    format!(
                        "invalid arguments for {name}: {}; call it again with arguments that fit \
                         its schema",
                        problems.join("; ")
                    ),
                ));
            }
        }
        Ok((spec, arguments))
    }

    async fn run_tool(
        &self,
        call: &Call,
        trace: &headers::Context,
        tool_call_id: &str,
        spec: &ToolSpec,
        arguments: Value,
    ) -> Result<String, String> {
        let span = Span::start(
            format!("execute_tool {}", spec.name),
            SpanKind::Internal,
            trace,
            vec![
                KeyValue::new(attr::GEN_AI_OPERATION, "execute_tool"),
                KeyValue::new(attr::TOOL_NAME, spec.name.clone()),
                KeyValue::new(attr::TOOL_CALL_ID, tool_call_id.to_owned()),
                KeyValue::new(attr::CATEGORY, spec.category.to_string()),
            ],
        );
        let result = self.run_tool_in(call, &span.trace(), spec, arguments).await;
        if result.is_err() {
            span.fail("tool_error", "the tool call failed");
        }
        result
    }

    async fn run_tool_in(
        &self,
        call: &Call,
        trace: &headers::Context,
        spec: &ToolSpec,
        arguments: Value,
    ) -> Result<String, String> {
        let timeout = spec
            .timeout_ms
            .map(Duration::from_millis)
            .unwrap_or(call.remaining())
            .min(call.remaining());
        let cs = CallSpec {
            tool: &spec.name,
            category: spec.category,
            subject: None,
            args: arguments,
            timeout,
            caller: call.caller.clone(),
            trace: trace.clone(),
            liveness: sophia_kit::bus::Liveness {
                acked: false,
                retry: spec.hints.read_only || spec.hints.idempotent,
            },
        };
        match call.bus().call(cs, None, &call.cancellation()).await {
            Ok(reply) => {
                let mut text = tool_text(&reply.output.content);
                if let Some(s) = &reply.output.structured
                    && !text.contains(&s.to_string())
                {
                    text = format!("{text}\n{s}");
                }
                if reply.output.is_error {
                    Err(text)
                } else {
                    Ok(text)
                }
            }
            Err(e) => Err(format!("{} ({})", e, e.code())),
        }
    }

    /// The preview a destructive call applies, if the run saw it.
    fn plan_for(&self, state: &RunState, arguments: &Value) -> Option<Value> {
        let preview_id = arguments["preview_id"].as_str()?;
        state
            .steps
            .iter()
            .rev()
            .find(|s| s["result"].as_str().is_some_and(|r| r.contains(preview_id)))
            .map(|s| s["result"].clone())
    }

    async fn confirm(
        &self,
        call: &Call,
        state: &RunState,
        spec: &ToolSpec,
        arguments: &Value,
    ) -> Result<Confirmation, WireError> {
        if !call.can_elicit() {
            return Ok(Confirmation::Ask);
        }
        let plan = self
            .plan_for(state, arguments)
            .and_then(|p| p.as_str().map(str::to_owned))
            .unwrap_or_default();
        let question = format!(
            "The {} wants to run {} with {}. {}Allow it?",
            state.agent_type,
            spec.name,
            arguments,
            if plan.is_empty() {
                String::new()
            } else {
                format!("The plan: {plan}. ")
            }
        );
        let schema = json!({"type": "object", "properties": {"confirm": {"type": "boolean",
            "title": format!("Run {}", spec.name)}}, "required": ["confirm"]});
        Ok(match call.elicit(question, schema).await? {
            Answer::Accepted(a) if a["confirm"] == json!(true) => Confirmation::Yes,
            _ => Confirmation::No(format!(
                "the person did not allow {}; do not run it again unless they ask",
                spec.name
            )),
        })
    }
}

enum Confirmation {
    Yes,
    No(String),
    Ask,
}
