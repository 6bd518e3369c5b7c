//! Multi-round-trip calls for MCP 2026-07-28 clients (SEP-2322; docs/mcp.md,
//! "Input required"). Such a client has no session, so nothing can be asked
//! of it mid-call, and its retry may reach another gateway replica.
//!
//! A question (the agent profile's confirmation, or a worker's
//! [`sophia_proto::InputRequired`] outcome) becomes an `InputRequiredResult`:
//! the questions as `inputRequests`, and [`Sealed`] (whether the gateway's
//! own confirmation was given, and the worker's kept state) as
//! `requestState`, sealed (`states.rs`: [`RequestStates`], a key every
//! replica shares), bound to the caller, the tool (or prompt) and its
//! arguments, and valid for [`super::states::STATE_TTL`]. The retry's
//! `inputResponses` and opened state go to the worker with the call
//! ([`sophia_proto::Round`]); a state that does not open is refused. The
//! same holds for `prompts/get`, whose worker may ask too.

use std::collections::BTreeMap;

use rmcp::model::{InputRequest, InputRequiredResult};
use sophia_proto::{InputRequired, Round};

use super::states::{RequestStates, Sealed};
use super::*;

/// The `inputRequests` key of the agent profile's own confirmation.
pub(super) const CONFIRM_KEY: &str = "sophia_confirm";

/// One attempt of a call by a client that answers in rounds.
pub(super) struct Rounds {
    /// What the client declared it answers (in this request's `_meta`).
    pub can: ClientCan,
    /// Its answers to the previous round's questions.
    pub responses: BTreeMap<String, Value>,
    /// The previous round's state, verified.
    pub sealed: Sealed,
    binding: Vec<u8>,
}

impl Rounds {
    /// The worker's part of this attempt.
    pub fn round(&self) -> Option<Round> {
        let responses: BTreeMap<String, Value> = self
            .responses
            .iter()
            .filter(|(k, _)| k.as_str() != CONFIRM_KEY)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        (!responses.is_empty() || self.sealed.tool.is_some()).then(|| Round {
            responses,
            state: self.sealed.tool.clone(),
        })
    }
}

/// What a stateless client answers, from its request's client capabilities.
#[allow(deprecated)] // sampling and roots: deprecated by SEP-2577, still asked for
fn declared(context: &RequestContext<RoleServer>) -> ClientCan {
    let caps = context.meta.client_capabilities().unwrap_or_default();
    ClientCan {
        elicit: caps
            .elicitation
            .as_ref()
            .is_some_and(|e| e.form.is_some() || e.url.is_none()),
        sample: caps.sampling.is_some(),
        roots: caps.roots.is_some(),
        rounds: true,
    }
}

impl McpGateway {
    /// The rounds of a `tools/call`: `None` for a client with a session
    /// (which is asked on it, as before); for a stateless one, what it
    /// answers and its verified answers. A `requestState` that does not
    /// open, or round fields from a session client, are refused.
    pub(super) fn rounds_of(
        &self,
        request: &mut CallToolRequestParams,
        args: &Value,
        caller: &Caller,
        context: &RequestContext<RoleServer>,
    ) -> Result<Option<Rounds>, McpError> {
        let fields = (request.input_responses.take(), request.request_state.take());
        self.rounds_for(fields, &request.name, args, caller, context)
    }

    /// [`McpGateway::rounds_of`] for a `prompts/get` (SEP-2322 allows
    /// rounds there too): its state is bound to the prompt, so that it
    /// opens for no tool of the same name.
    pub(super) fn prompt_rounds_of(
        &self,
        request: &mut rmcp::model::GetPromptRequestParams,
        args: &Value,
        caller: &Caller,
        context: &RequestContext<RoleServer>,
    ) -> Result<Option<Rounds>, McpError> {
        let fields = (request.input_responses.take(), request.request_state.take());
        // A tool's name cannot hold a space or a slash.
        let target = format!("prompts/get {}", request.name);
        self.rounds_for(fields, &target, args, caller, context)
    }

    /// The rounds of a request for `target` (a tool's name, or a prompt's
    /// as [`McpGateway::prompt_rounds_of`] names it) whose round fields are
    /// `(inputResponses, requestState)`.
    fn rounds_for(
        &self,
        (responses, token): (Option<rmcp::model::InputResponses>, Option<String>),
        target: &str,
        args: &Value,
        caller: &Caller,
        context: &RequestContext<RoleServer>,
    ) -> Result<Option<Rounds>, McpError> {
        let responses = responses.unwrap_or_default();
        if !is_stateless(context) {
            if token.is_some() || !responses.is_empty() {
                return Err(McpError::invalid_params(
                    "inputResponses and requestState belong to MCP 2026-07-28; this request is \
                     on a session, where questions are asked as elicitation requests",
                    None,
                ));
            }
            return Ok(None);
        }
        let binding = binding(caller, target, args);
        let sealed = match token {
            Some(token) => self
                .request_states()
                .map_err(|e| McpError::internal_error(e.message, None))?
                .open(&token, &binding)?,
            None => Sealed::default(),
        };
        Ok(Some(Rounds {
            can: declared(context),
            responses,
            sealed,
            binding,
        }))
    }

    fn request_states(&self) -> Result<&RequestStates, WireError> {
        self.states.as_ref().ok_or_else(|| {
            WireError::new(
                ErrorCode::Unavailable,
                "this gateway has no requestState key (no random bytes at start), so it cannot \
                 ask a stateless client; see its start-up log",
            )
        })
    }

    /// The answer to a stateless client whose call needs `asked` (or only
    /// the gateway's `confirm` question, with `asked` empty).
    pub(super) fn input_required(
        &self,
        rounds: &Rounds,
        questions: BTreeMap<String, Question>,
        tool_state: Option<Value>,
    ) -> Result<InputRequiredResult, WireError> {
        let mut requests = BTreeMap::new();
        for (key, question) in questions {
            requests.insert(key, input_request(question)?);
        }
        let sealed = Sealed {
            confirmed: rounds.sealed.confirmed,
            tool: tool_state,
        };
        let state = self.request_states()?.seal(&sealed, &rounds.binding);
        Ok(InputRequiredResult::new(Some(requests), Some(state)))
    }

    /// The agent profile's confirmation of `tool` for a stateless client:
    /// given in an earlier round (sealed), answered in this one, or asked
    /// now as `input_required`; `Some` is the call's answer instead of
    /// running it.
    pub(super) fn confirm_in_rounds(
        &self,
        tool: &str,
        caller: &Caller,
        rounds: &mut Rounds,
        question: Question,
    ) -> Option<CallToolResponse> {
        if rounds.sealed.confirmed {
            return None;
        }
        if let Some(answer) = rounds.responses.get(CONFIRM_KEY) {
            let yes = super::guard::confirmed(answer);
            rounds.sealed.confirmed = yes;
            return self.confirmation_given(tool, caller, yes);
        }
        let mut questions = BTreeMap::new();
        questions.insert(CONFIRM_KEY.to_owned(), question);
        Some(
            self.input_required(rounds, questions, None)
                .map_or_else(|e| error_result(e.code, e.message, None).into(), Into::into),
        )
    }

    /// Audits the person's answers to a worker's questions that this retry
    /// brings, as the relay does for a session client's answers.
    pub(super) fn audit_answers(&self, rounds: &Rounds, caller: &Caller, tool: &str) {
        let answers = rounds
            .responses
            .iter()
            .filter(|(key, _)| key.as_str() != CONFIRM_KEY)
            .filter_map(|(_, answer)| answer.get("action").and_then(Value::as_str));
        for action in answers {
            let outcome = match action {
                "accept" => "accepted",
                "decline" => "declined",
                _ => "cancelled",
            };
            self.audit(
                sophia_proto::audit::AuditKind::Confirmation,
                caller,
                tool,
                outcome,
                super::guard::AuditDetail::default(),
            );
        }
    }

    /// A worker's error that a stateless client gets as its own answer:
    /// its questions (`input_required`), or MissingRequiredClientCapability
    /// ([`missing_capability`]; a session client is told in the result, as
    /// its revisions have no such error). `None` for any other error.
    pub(super) fn stateless_answer(
        &self,
        rounds: &Rounds,
        error: &WireError,
    ) -> Option<Result<CallToolResponse, McpError>> {
        if let Some(missing) = missing_capability(error) {
            return Some(Err(missing));
        }
        self.worker_input_required(rounds, error).map(Ok)
    }

    /// A worker's `input_required` outcome as the client's answer to its
    /// `tools/call`.
    pub(super) fn worker_input_required(
        &self,
        rounds: &Rounds,
        error: &WireError,
    ) -> Option<CallToolResponse> {
        self.worker_asked(rounds, error).map(|asked| match asked {
            Ok(result) => result.into(),
            Err(e) => error_result(e.code, e.message, None).into(),
        })
    }

    /// A worker's `input_required` outcome (of a tool or a prompt) as MCP's
    /// `InputRequiredResult`, its state sealed; `Err` says why its
    /// questions cannot be put to an MCP client. `None` for any other
    /// error.
    pub(super) fn worker_asked(
        &self,
        rounds: &Rounds,
        error: &WireError,
    ) -> Option<Result<InputRequiredResult, WireError>> {
        let asked = InputRequired::from_error(error)?;
        Some(
            asked
                .map_err(|why| WireError::new(ErrorCode::BadEnvelope, why))
                .and_then(|asked| self.input_required(rounds, asked.questions, Some(asked.state))),
        )
    }
}

/// A worker's `missing_capability` error (it asked what the client did not
/// declare it answers) as MCP 2026-07-28's MissingRequiredClientCapability
/// error: JSON-RPC -32021, which rmcp's Streamable HTTP transport sends
/// with HTTP 400, `data.requiredCapabilities` naming the capability as a
/// `ClientCapabilities` object. `None` for any other error.
pub(super) fn missing_capability(error: &WireError) -> Option<McpError> {
    let capability = error.missing_capability_name()?;
    // The gateway asks in form mode.
    let declaration = match capability {
        "elicitation" => json!({"form": {}}),
        _ => json!({}),
    };
    Some(McpError::new(
        rmcp::model::ErrorCode::MISSING_REQUIRED_CLIENT_CAPABILITY,
        error.message.clone(),
        Some(json!({"requiredCapabilities": {capability: declaration}})),
    ))
}

/// What the sealed state is bound to: the caller, the tool and a digest of
/// its arguments, so it cannot be replayed by another caller or for other
/// arguments.
fn binding(caller: &Caller, tool: &str, args: &Value) -> Vec<u8> {
    let hash = crate::access::audit::args_hash(args);
    format!("{}\u{0}{tool}\u{0}{hash}", caller.principal).into_bytes()
}

/// A bus question as an MCP `inputRequests` entry.
fn input_request(question: Question) -> Result<InputRequest, WireError> {
    let request = match question {
        Question::Elicit { message, schema } => {
            let schema = super::relay::elicitation_schema(&schema)?;
            json!({"method": "elicitation/create", "params": {
                "mode": "form", "message": message, "requestedSchema": schema}})
        }
        Question::Sample { params } => {
            json!({"method": "sampling/createMessage", "params": params})
        }
        Question::Roots => json!({"method": "roots/list"}),
    };
    serde_json::from_value(request)
        .map_err(|e| WireError::invalid_arguments(format!("not a valid MCP input request: {e}")))
}

/// Whether `context` is a stateless request (MCP 2026-07-28 or later):
/// no session, no peer to ask questions of, everything in the request.
pub(crate) fn is_stateless(context: &RequestContext<RoleServer>) -> bool {
    context
        .meta
        .protocol_version()
        .is_some_and(|v| !v.has_initialize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_state_opens_only_for_its_caller_tool_and_arguments() {
        let states = RequestStates::ephemeral().unwrap();
        let alice = Caller {
            principal: "alice".into(),
            ..Caller::default()
        };
        let args = json!({"stack": "dev"});
        let bound = binding(&alice, "pulumi_up", &args);
        let state = Sealed {
            confirmed: true,
            tool: Some(json!({"preview_id": "p1"})),
        };
        let token = states.seal(&state, &bound);
        let opened = states.open(&token, &bound).unwrap();
        assert!(opened.confirmed);
        assert_eq!(opened.tool, Some(json!({"preview_id": "p1"})));

        let bob = Caller {
            principal: "bob".into(),
            ..Caller::default()
        };
        for other in [
            binding(&bob, "pulumi_up", &args),
            binding(&alice, "pulumi_destroy", &args),
            binding(&alice, "pulumi_up", &json!({"stack": "prod"})),
        ] {
            let refused = states.open(&token, &other).unwrap_err();
            assert!(refused.message.contains("did not issue it"), "{refused:?}");
        }
        let mut tampered = token.clone();
        tampered.insert(tampered.len() / 2, 'x');
        assert!(states.open(&tampered, &bound).is_err());
        // Another mesh's key.
        let foreign = RequestStates::ephemeral().unwrap();
        assert!(foreign.open(&token, &bound).is_err());
    }

    #[test]
    fn questions_become_mcp_input_requests() {
        let elicit = input_request(Question::Elicit {
            message: "Apply?".into(),
            schema: json!({"type": "object", "properties": {"confirm": {"type": "boolean"}},
                "required": ["confirm"]}),
        })
        .unwrap();
        let wire = serde_json::to_value(&elicit).unwrap();
        assert_eq!(wire["method"], "elicitation/create");
        assert_eq!(wire["params"]["message"], "Apply?");
        assert_eq!(
            serde_json::to_value(input_request(Question::Roots).unwrap()).unwrap()["method"],
            "roots/list"
        );
        let nested = input_request(Question::Elicit {
            message: "?".into(),
            schema: json!({"type": "object", "properties": {"a": {"type": "object"}}}),
        });
        assert!(nested.is_err());
    }
}
