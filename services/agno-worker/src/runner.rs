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
use serde_json::Value;
use sophia_kit::bus::{CallError, CallSpec, Target};
use sophia_kit::telemetry::{Span, SpanKind, attr};
use sophia_kit::{Call, Category, ErrorCode, WireError};
use sophia_proto::chat::{ChatReply, ChatRequest, Message, Role, ToolCall, ToolDef};
use sophia_proto::{Content, ToolSpec, headers, subject};

use crate::confirm::{Confirmation, confirmation, pending};
use crate::directory::Directory;
use crate::run::{PendingAction, RunState, Step};
use crate::store::Store;
use crate::templates::Template;

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
                stop_if_cancelled(call)?;
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
            stop_if_cancelled(call)?;
            let message = self.model_turn(call, trace, template, state).await?;
            let calls = message.calls().to_vec();
            let answer = message.text().to_owned();
            state.messages.push(message);
            if calls.is_empty() {
                return Ok(Outcome::Answered(answer));
            }
            state.queued = calls;
        }
    }

    /// The request for the next model turn: the conversation, the tools of
    /// the agent's allow-list that are on the mesh, and the answer's schema.
    /// Only tools the caller may call are offered: an agent never has more
    /// than the person who started it.
    fn chat_request(
        &self,
        call: &Call,
        template: &Template,
        messages: Vec<Message>,
    ) -> ChatRequest {
        let tools = template
            .tools
            .iter()
            .filter_map(|name| self.directory.get(name))
            .filter(|spec| call.caller_may_call(spec).is_ok())
            .map(|spec| ToolDef::function(spec.name, spec.description, spec.input_schema))
            .collect();
        let request = ChatRequest {
            tools,
            ..ChatRequest::new(template.model.clone(), messages)
        };
        match &template.output_schema {
            Some(schema) => request.answer_schema(schema.clone()),
            None => request,
        }
    }

    async fn model_turn(
        &self,
        call: &Call,
        trace: &headers::Context,
        template: &Arc<Template>,
        state: &mut RunState,
    ) -> Result<Message, WireError> {
        state.turns += 1;
        call.progress(
            state.steps.len() as f64 + state.turns as f64,
            None,
            Some(format!("step {}: asking {}", state.turns, template.model)),
        )
        .await;
        // The messages are lent to the request and taken back once written.
        let request = self.chat_request(call, template, std::mem::take(&mut state.messages));
        let args = serde_json::to_value(&request);
        state.messages = request.messages;
        let spec = CallSpec {
            tool: "chat",
            target: Target::Subject {
                subject: subject::inference(&template.model, "chat"),
                category: Category::Inference,
            },
            args: args.map_err(|e| WireError::internal(e.to_string()))?,
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
            .map_err(|e| self.model_error(template, e))?;
        let unreadable =
            |what: String| WireError::failed(format!("{what}; see the intelligence-worker's logs"));
        let structured = reply.output.structured.unwrap_or_default();
        let reply: ChatReply = serde_json::from_value(structured).map_err(|e| {
            unreadable(format!(
                "the intelligence-worker's reply could not be read ({e})"
            ))
        })?;
        state.usage += reply.usage.map(|u| u.tokens).unwrap_or_default();
        let mut message = reply.message().map_err(|e| unreadable(e.to_string()))?;
        message.role = Role::Assistant;
        Ok(message)
    }

    /// What the run says when the model could not be called.
    fn model_error(&self, template: &Template, e: CallError) -> WireError {
        match e {
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
        }
    }

    /// Runs one tool call of the model (or pauses on a destructive one).
    async fn tool_call(
        &self,
        call: &Call,
        trace: &headers::Context,
        template: &Arc<Template>,
        state: &mut RunState,
        tool_call: ToolCall,
    ) -> Result<Option<PendingAction>, WireError> {
        let id = tool_call.id().to_owned();
        let name = tool_call.function.name.clone();
        let (arguments, outcome) =
            match self.check(call, template, &name, &tool_call.function.arguments) {
                Err((arguments, why)) => (arguments, Err(why)),
                Ok((spec, arguments)) => {
                    match confirmation(call, state, &spec, &id, &arguments).await? {
                        Confirmation::Yes => {
                            let r = self
                                .run_tool(call, trace, &id, &spec, arguments.clone())
                                .await;
                            (arguments, r)
                        }
                        Confirmation::No(why) => (arguments, Err(why)),
                        Confirmation::Ask => {
                            // Put the call back: it runs first when confirmed.
                            state.queued.insert(0, tool_call);
                            return Ok(Some(pending(state, name, arguments)));
                        }
                    }
                }
            };
        record(call, state, id, name, arguments, outcome).await;
        Ok(None)
    }

    /// The spec and parsed arguments, or what to tell the model.
    fn check(
        &self,
        call: &Call,
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
        if let Err(refusal) = call.caller_may_call(&spec) {
            return Err((arguments, refusal));
        }
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
            target: Target::Tool(spec.category),
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
}

/// Ends the run if its call (or job) was cancelled: checked between steps;
/// the model and tool calls in flight end with the same token.
fn stop_if_cancelled(call: &Call) -> Result<(), WireError> {
    if call.is_cancelled() {
        return Err(WireError::new(
            ErrorCode::Cancelled,
            "the run was cancelled",
        ));
    }
    Ok(())
}

/// Writes a finished tool call into the run: a step, and the tool message
/// the model reads next turn; reported as progress.
async fn record(
    call: &Call,
    state: &mut RunState,
    tool_call_id: String,
    tool: String,
    arguments: Value,
    outcome: Result<String, String>,
) {
    let (result, is_error) = match outcome {
        Ok(text) => (text, false),
        Err(why) => (format!("error: {why}"), true),
    };
    call.progress(
        state.steps.len() as f64 + state.turns as f64 + 1.0,
        None,
        Some(format!(
            "step {}: {tool} {}",
            state.turns,
            if is_error { "failed" } else { "done" }
        )),
    )
    .await;
    state
        .messages
        .push(Message::tool_result(tool_call_id, result.clone()));
    state.steps.push(Step {
        tool,
        arguments,
        result,
        is_error,
    });
}
