//! The 2026-07-28 suite's multi-round-trip tools and prompt (SEP-2322,
//! `input-required-result-*` scenarios): each asks under the key the
//! scenario names, with [`Call::ask_named`], so a stateless client gets the
//! questions as `inputRequests` and answers them in a retry. The gateway
//! seals what a tool [`Call::keep`]s into `requestState` and refuses a
//! tampered one, so the tools themselves only read it back.

use serde_json::{Value, json};
use sophia_kit::{Call, Question, Tool, ToolOutput, WireError, Worker};

use crate::{text_message, tool};

/// `worker` with the multi-round-trip prompt
/// (`input-required-result-non-tool-request`): `prompts/get` asks the
/// context (input request `user_context`), the retry makes the prompt.
pub fn with_prompt(worker: Worker) -> Worker {
    worker.prompt_with_call(
        json!({"name": "test_input_required_result_prompt",
            "description": "Asks the context to use (input request `user_context`) first"}),
        |call, _args| async move {
            let question = Question::Elicit {
                message: "What context should the prompt use?".into(),
                schema: json!({"type": "object", "properties": {"context": {"type": "string"}},
                    "required": ["context"]}),
            };
            let answer = ask_one(&call, "user_context", question).await?;
            let context = accepted(&answer, "context").unwrap_or("no context");
            let text = format!("Write the answer using this context: {context}");
            Ok(json!({"messages": [text_message(&text)]}))
        },
    )
}

/// The multi-round-trip tools.
pub fn tools() -> Vec<Tool> {
    vec![
        tool(
            "test_input_required_result_elicitation",
            "Asks the person's name (input request `user_name`) and greets them.",
        )
        .handler(|call| async move {
            let answer = ask_one(&call, "user_name", name_question("What is your name?")).await?;
            Ok(ToolOutput::text(match accepted(&answer, "name") {
                Some(name) => format!("Hello, {name}!"),
                None => format!("No name given ({}).", action(&answer)),
            }))
        }),
        tool(
            "test_input_required_result_sampling",
            "Asks the client's model a question (input request `capital_question`).",
        )
        .handler(|call| async move {
            let question = Question::Sample {
                params: json!({"messages": [{"role": "user", "content":
                    {"type": "text", "text": "What is the capital of France?"}}], "maxTokens": 100}),
            };
            let answer = ask_one(&call, "capital_question", question).await?;
            let text = answer["content"]["text"].as_str().unwrap_or_default();
            Ok(ToolOutput::text(format!("The model answered: {text}")))
        }),
        tool(
            "test_input_required_result_list_roots",
            "Asks the client's roots (input request `client_roots`) and lists them.",
        )
        .handler(|call| async move {
            let answer = ask_one(&call, "client_roots", Question::Roots).await?;
            Ok(ToolOutput::text(format!("Client roots: {}", roots(&answer))))
        }),
        tool(
            "test_input_required_result_request_state",
            "Asks for a confirmation with requestState; the retry says state-ok when it comes \
             back intact.",
        )
        .handler(request_state),
        tool(
            "test_input_required_result_multiple_inputs",
            "Asks a name, the model and the roots in one round.",
        )
        .handler(multiple_inputs),
        tool(
            "test_input_required_result_multi_round",
            "Asks a name (`step1`), then a colour (`step2`) in a second round.",
        )
        .handler(multi_round),
        tool(
            "test_input_required_result_tampered_state",
            "Asks for a confirmation with requestState (the gateway refuses it altered).",
        )
        .handler(|call| async move {
            call.keep(json!({"issued_by": "test_input_required_result_tampered_state"}));
            let answer = ask_one(&call, "confirm", confirm_question("Please confirm")).await?;
            Ok(ToolOutput::text(format!("Confirmed: {}", action(&answer))))
        }),
        tool(
            "test_input_required_result_capabilities",
            "Asks only what the client declared it answers (elicitation, sampling, roots).",
        )
        .handler(capabilities),
        // server-stateless probes that a client which did not declare
        // sampling gets MissingRequiredClientCapability (-32021): the
        // worker asks, the kit refuses the question (missing_capability),
        // the gateway answers with the MCP error.
        tool(
            "test_missing_capability",
            "Asks the client's model (sampling); a client that did not declare sampling \
             gets a MissingRequiredClientCapability error.",
        )
        .handler(|call| async move {
            let params = json!({"messages": [{"role": "user", "content":
                {"type": "text", "text": "Say hello"}}], "maxTokens": 20});
            let answer = call.sample(params).await?;
            let text = answer["content"]["text"].as_str().unwrap_or_default();
            Ok(ToolOutput::text(format!("The model answered: {text}")))
        }),
        // server-stateless probes that a stateless client is asked through
        // the result, never by a request on the response stream.
        tool(
            "test_streaming_elicitation",
            "Asks the person a question (as an input_required result for a stateless client).",
        )
        .handler(|call| async move {
            let answer = call.elicit("What is your name?", json!({"type": "object",
                "properties": {"name": {"type": "string"}}, "required": ["name"]})).await?;
            Ok(ToolOutput::text(format!("Answer: {answer:?}")))
        }),
    ]
}

/// A form question for a required `name`.
fn name_question(message: &str) -> Question {
    Question::Elicit {
        message: message.into(),
        schema: json!({"type": "object", "properties": {"name": {"type": "string"}},
            "required": ["name"]}),
    }
}

/// A form question for a required boolean `ok`.
fn confirm_question(message: &str) -> Question {
    Question::Elicit {
        message: message.into(),
        schema: json!({"type": "object", "properties": {"ok": {"type": "boolean"}},
            "required": ["ok"]}),
    }
}

/// The answer to one named question.
async fn ask_one(call: &Call, key: &str, question: Question) -> Result<Value, WireError> {
    let mut answers = call.ask_named(vec![(key.to_owned(), question)]).await?;
    Ok(answers.remove(key).unwrap_or_default())
}

/// An elicitation answer's action.
fn action(answer: &Value) -> &str {
    answer["action"].as_str().unwrap_or("cancel")
}

/// An accepted elicitation answer's string `field`.
fn accepted<'a>(answer: &'a Value, field: &str) -> Option<&'a str> {
    (action(answer) == "accept")
        .then(|| answer["content"][field].as_str())
        .flatten()
}

/// A `ListRootsResult`'s root URIs, comma-separated.
fn roots(answer: &Value) -> String {
    let uris: Vec<&str> = answer["roots"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["uri"].as_str())
        .collect();
    uris.join(", ")
}

async fn request_state(call: Call) -> Result<ToolOutput, WireError> {
    let kept = json!({"issued_by": "test_input_required_result_request_state", "round": 1});
    call.keep(kept.clone());
    let answer = ask_one(&call, "confirm", confirm_question("Please confirm")).await?;
    if call.round_state() != Some(&kept) {
        return Err(WireError::invalid_arguments(
            "the answer came without the requestState this tool issued",
        ));
    }
    Ok(ToolOutput::text(format!(
        "state-ok: the requestState came back intact (confirmation: {})",
        action(&answer)
    )))
}

async fn multiple_inputs(call: Call) -> Result<ToolOutput, WireError> {
    call.keep(json!({"issued_by": "test_input_required_result_multiple_inputs"}));
    let greeting = Question::Sample {
        params: json!({"messages": [{"role": "user", "content":
            {"type": "text", "text": "Generate a greeting"}}], "maxTokens": 50}),
    };
    let answers = call
        .ask_named(vec![
            ("user_name".into(), name_question("What is your name?")),
            ("greeting".into(), greeting),
            ("client_roots".into(), Question::Roots),
        ])
        .await?;
    let name = accepted(&answers["user_name"], "name").unwrap_or("stranger");
    let greeting = answers["greeting"]["content"]["text"]
        .as_str()
        .unwrap_or_default();
    Ok(ToolOutput::text(format!(
        "{greeting} {name}; roots: {}",
        roots(&answers["client_roots"])
    )))
}

/// Round 1 asks `step1`; round 2 keeps the name (a new requestState) and
/// asks `step2`; round 3 answers.
async fn multi_round(call: Call) -> Result<ToolOutput, WireError> {
    let known = call
        .round_state()
        .and_then(|s| s["name"].as_str())
        .map(str::to_owned);
    let name = match known {
        Some(name) => name,
        None => {
            call.keep(json!({"step": 1}));
            let question = name_question("Step 1: What is your name?");
            let answer = ask_one(&call, "step1", question).await?;
            match accepted(&answer, "name") {
                Some(name) => name.to_owned(),
                None => return Ok(ToolOutput::text("Step 1 was not answered.")),
            }
        }
    };
    call.keep(json!({"step": 2, "name": name}));
    let question = Question::Elicit {
        message: "Step 2: What is your favorite color?".into(),
        schema: json!({"type": "object", "properties": {"color": {"type": "string"}},
            "required": ["color"]}),
    };
    let answer = ask_one(&call, "step2", question).await?;
    let color = accepted(&answer, "color").unwrap_or("no colour");
    Ok(ToolOutput::text(format!(
        "{name}'s favorite color: {color}"
    )))
}

async fn capabilities(call: Call) -> Result<ToolOutput, WireError> {
    let mut questions = Vec::new();
    if call.can_elicit() {
        questions.push(("user_name".to_owned(), name_question("What is your name?")));
    }
    if call.can_sample() {
        let params = json!({"messages": [{"role": "user", "content":
            {"type": "text", "text": "Generate a greeting"}}], "maxTokens": 50});
        questions.push(("greeting".to_owned(), Question::Sample { params }));
    }
    if call.can_list_roots() {
        questions.push(("client_roots".to_owned(), Question::Roots));
    }
    if questions.is_empty() {
        return Ok(ToolOutput::text(
            "The client declared none of elicitation, sampling and roots: nothing to ask.",
        ));
    }
    let answers = call.ask_named(questions).await?;
    let keys: Vec<&str> = answers.keys().map(String::as_str).collect();
    Ok(ToolOutput::text(format!("Answered: {}", keys.join(", "))))
}
