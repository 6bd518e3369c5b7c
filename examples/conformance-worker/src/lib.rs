//! The tools the official MCP conformance suite
//! (`@modelcontextprotocol/conformance`) calls by name, served over the bus
//! like any worker's, so the suite tests the gateway and the bus together.
//! An example: not started by `up.sh` or the compose file.
//!
//! Resources, the resource template, prompts and completions are offered
//! with the kit's `Worker::resource`, `resource_template`, `prompt` and
//! `completions`. The multi-round-trip tools and prompt of the 2026-07-28
//! suite are in `rounds.rs`, its list-change hooks in `changes.rs`.

mod changes;
mod rounds;

use std::time::Duration;

use serde_json::{Value, json};
use sophia_kit::{Answer, Call, Category, Content, Tool, ToolOutput, WireError, Worker};

/// A 1x1 red PNG.
pub const RED_PIXEL_PNG: [u8; 69] = [
    137, 80, 78, 71, 13, 10, 26, 10, 0, 0, 0, 13, 73, 72, 68, 82, 0, 0, 0, 1, 0, 0, 0, 1, 8, 2, 0,
    0, 0, 144, 119, 83, 222, 0, 0, 0, 12, 73, 68, 65, 84, 120, 156, 99, 248, 207, 192, 0, 0, 3, 1,
    1, 0, 201, 254, 146, 239, 0, 0, 0, 0, 73, 69, 78, 68, 174, 66, 96, 130,
];

/// A short silent WAV (8 kHz, mono, 16-bit, 8 samples).
pub fn silent_wav() -> Vec<u8> {
    let samples = 8u32;
    let data_len = samples * 2;
    let mut w = Vec::with_capacity(44 + data_len as usize);
    w.extend_from_slice(b"RIFF");
    w.extend_from_slice(&(36 + data_len).to_le_bytes());
    w.extend_from_slice(b"WAVEfmt ");
    w.extend_from_slice(&16u32.to_le_bytes());
    w.extend_from_slice(&1u16.to_le_bytes()); // PCM
    w.extend_from_slice(&1u16.to_le_bytes()); // mono
    w.extend_from_slice(&8000u32.to_le_bytes());
    w.extend_from_slice(&16000u32.to_le_bytes()); // byte rate
    w.extend_from_slice(&2u16.to_le_bytes()); // block align
    w.extend_from_slice(&16u16.to_le_bytes());
    w.extend_from_slice(b"data");
    w.extend_from_slice(&data_len.to_le_bytes());
    w.resize(44 + data_len as usize, 0);
    w
}

fn image() -> Content {
    Content::Image {
        data: RED_PIXEL_PNG.to_vec(),
        mime_type: "image/png".into(),
    }
}

fn output(content: Vec<Content>) -> ToolOutput {
    ToolOutput {
        content,
        ..ToolOutput::default()
    }
}

fn no_args() -> Value {
    json!({"type": "object", "properties": {}})
}

fn tool(name: &str, description: &str) -> Tool {
    Tool::new(name, Category::CodeGeneration, description).input_schema(no_args())
}

/// Asks `schema`'s question and describes the answer as the suite expects.
async fn elicit(
    call: &Call,
    message: &str,
    schema: Value,
    prefix: &str,
) -> Result<ToolOutput, WireError> {
    let answer = call.elicit(message, schema).await?;
    let (action, content) = match answer {
        Answer::Accepted(c) => ("accept", c),
        Answer::Declined => ("decline", Value::Null),
        Answer::Cancelled => ("cancel", Value::Null),
    };
    Ok(ToolOutput::text(format!(
        "{prefix}action={action}, content={content}"
    )))
}

/// The worker with every fixture tool.
pub fn worker() -> Worker {
    let tools = vec![
        tool("test_simple_text", "Returns simple text content.").handler(|_| async {
            Ok(ToolOutput::text("This is a simple text response for testing."))
        }),
        tool("test_image_content", "Returns image content.")
            .handler(|_| async { Ok(output(vec![image()])) }),
        tool("test_audio_content", "Returns audio content.").handler(|_| async {
            Ok(output(vec![Content::Audio {
                data: silent_wav(),
                mime_type: "audio/wav".into(),
            }]))
        }),
        tool("test_embedded_resource", "Returns an embedded resource.").handler(|_| async {
            Ok(output(vec![Content::Resource {
                uri: "test://embedded-resource".into(),
                mime_type: Some("text/plain".into()),
                text: Some("This is an embedded resource content.".into()),
                blob: None,
            }]))
        }),
        tool(
            "test_multiple_content_types",
            "Returns text, an image and an embedded resource.",
        )
        .handler(|_| async {
            Ok(output(vec![
                Content::text("Multiple content types test:"),
                image(),
                Content::Resource {
                    uri: "test://mixed-content-resource".into(),
                    mime_type: Some("application/json".into()),
                    text: Some(r#"{"test":"data","value":123}"#.into()),
                    blob: None,
                },
            ]))
        }),
        tool(
            "test_tool_with_logging",
            "Sends three log records while it runs.",
        )
        .handler(|call| async move {
            call.log("info", json!("Tool execution started")).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
            call.log("info", json!("Tool processing data")).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
            call.log("info", json!("Tool execution completed")).await;
            Ok(ToolOutput::text("Tool with logging executed successfully"))
        }),
        // The 2026-07-28 suite's name for the same probe: it checks that
        // no record arrives unless the request asked for a log level.
        tool("test_logging_tool", "Sends a log record while it runs.").handler(
            |call| async move {
                call.log("info", json!("Tool execution started")).await;
                Ok(ToolOutput::text("Tool with logging executed successfully"))
            },
        ),
        tool("test_error_handling", "Always fails.").handler(|_| async {
            Err(WireError::failed(
                "This tool intentionally returns an error for testing",
            ))
        }),
        tool("test_tool_with_progress", "Reports progress 0, 50, 100.").handler(|call| async move {
            for (i, p) in [0.0, 50.0, 100.0].into_iter().enumerate() {
                if i > 0 {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                call.progress(p, Some(100.0), Some(format!("{p}%"))).await;
            }
            Ok(ToolOutput::text("Progress test completed"))
        }),
        Tool::new(
            "test_sampling",
            Category::CodeGeneration,
            "Asks the client's model (sampling/createMessage) and returns its answer.",
        )
        .input_schema(json!({"type": "object", "properties": {"prompt": {"type": "string"}}, "required": ["prompt"]}))
        .handler(|call| async move {
            let prompt = call.args["prompt"].as_str().unwrap_or_default();
            let result = call
                .sample(json!({"messages": [{"role": "user",
                    "content": {"type": "text", "text": prompt}}], "maxTokens": 100}))
                .await?;
            let text = result["content"]["text"].as_str().unwrap_or_default();
            Ok(ToolOutput::text(format!("LLM response: {text}")))
        }),
        Tool::new(
            "test_elicitation",
            Category::CodeGeneration,
            "Asks the person for a username and an email.",
        )
        .input_schema(json!({"type": "object", "properties": {"message": {"type": "string"}}, "required": ["message"]}))
        .handler(|call| async move {
            let message = call.args["message"].as_str().unwrap_or("Please provide your information").to_owned();
            let schema = json!({"type": "object", "properties": {
                "username": {"type": "string", "description": "User's response"},
                "email": {"type": "string", "description": "User's email address"}},
                "required": ["username", "email"]});
            elicit(&call, &message, schema, "User response: ").await
        }),
        tool(
            "test_elicitation_sep1034_defaults",
            "Asks with a default for every primitive type (SEP-1034).",
        )
        .handler(|call| async move {
            let schema = json!({"type": "object", "properties": {
                "name": {"type": "string", "default": "John Doe"},
                "age": {"type": "integer", "default": 30},
                "score": {"type": "number", "default": 95.5},
                "status": {"type": "string", "enum": ["active", "inactive", "pending"], "default": "active"},
                "verified": {"type": "boolean", "default": true}}});
            elicit(&call, "Please review and update the form fields with defaults", schema, "Elicitation completed: ").await
        }),
        tool(
            "test_elicitation_sep1330_enums",
            "Asks with every enum variant (SEP-1330).",
        )
        .handler(|call| async move {
            let schema = json!({"type": "object", "properties": {
                "untitledSingle": {"type": "string", "enum": ["option1", "option2", "option3"]},
                "titledSingle": {"type": "string", "oneOf": [
                    {"const": "value1", "title": "First Option"},
                    {"const": "value2", "title": "Second Option"},
                    {"const": "value3", "title": "Third Option"}]},
                "legacyEnum": {"type": "string", "enum": ["opt1", "opt2", "opt3"],
                    "enumNames": ["Option One", "Option Two", "Option Three"]},
                "untitledMulti": {"type": "array", "items": {"type": "string", "enum": ["option1", "option2", "option3"]}},
                "titledMulti": {"type": "array", "items": {"anyOf": [
                    {"const": "value1", "title": "First Choice"},
                    {"const": "value2", "title": "Second Choice"},
                    {"const": "value3", "title": "Third Choice"}]}}}});
            elicit(&call, "Please select options from the enum fields", schema, "Elicitation completed: ").await
        }),
        Tool::new(
            "json_schema_2020_12_tool",
            Category::CodeGeneration,
            "Tool with JSON Schema 2020-12 features",
        )
        .input_schema(json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "type": "object",
            "$defs": {"address": {"type": "object", "properties": {
                "street": {"type": "string"}, "city": {"type": "string"}}}},
            "properties": {"name": {"type": "string"}, "address": {"$ref": "#/$defs/address"}},
            "additionalProperties": false}))
        .handler(|call| async move { Ok(ToolOutput::json(call.args.clone())) }),
    ];
    let worker = tools.into_iter().chain(rounds::tools()).fold(
        Worker::new("conformance-worker", env!("CARGO_PKG_VERSION"))
            .description("MCP conformance suite fixtures"),
        Worker::tool,
    );
    let worker = rounds::with_prompt(changes::with_list_changes(worker));
    with_resources_and_prompts(worker)
}

fn text_message(text: &str) -> Value {
    json!({"role": "user", "content": {"type": "text", "text": text}})
}

/// The suite's resources, resource template, prompts and completions.
fn with_resources_and_prompts(worker: Worker) -> Worker {
    use base64::Engine;
    use sophia_kit::offers::Contents;
    let png = base64::engine::general_purpose::STANDARD.encode(RED_PIXEL_PNG);
    worker
        .resource(
            json!({"uri": "test://static-text", "name": "static-text", "description": "A static text resource",
                "mimeType": "text/plain"}),
            |_| async { Ok(Contents::text("This is the content of the static text resource.")) },
        )
        .resource(
            json!({"uri": "test://static-binary", "name": "static-binary", "description": "A static binary resource (a PNG)",
                "mimeType": "image/png"}),
            |_| async { Ok(Contents::Blob(RED_PIXEL_PNG.to_vec())) },
        )
        .resource(
            json!({"uri": "test://watched-resource", "name": "watched-resource", "description": "A resource to subscribe to",
                "mimeType": "text/plain"}),
            |_| async { Ok(Contents::text("Watched resource content.")) },
        )
        .resource_template(
            json!({"uriTemplate": "test://template/{id}/data", "name": "template-data",
                "description": "Data for an id", "mimeType": "application/json"}),
            |_, vars| async move {
                let id = vars.get("id").cloned().unwrap_or_default();
                Ok(Contents::text(
                    json!({"id": id, "templateTest": true, "data": format!("Data for ID: {id}")}).to_string(),
                ))
            },
        )
        .prompt(
            json!({"name": "test_simple_prompt", "description": "A simple prompt without arguments"}),
            |_| async { Ok(json!({"messages": [text_message("This is a simple prompt for testing.")]})) },
        )
        .prompt(
            json!({"name": "test_prompt_with_arguments", "description": "A prompt with arguments",
                "arguments": [
                    {"name": "arg1", "description": "First test argument", "required": true},
                    {"name": "arg2", "description": "Second test argument", "required": true}]}),
            |args| async move {
                let text = format!(
                    "Prompt with arguments: arg1='{}', arg2='{}'",
                    args["arg1"].as_str().unwrap_or_default(),
                    args["arg2"].as_str().unwrap_or_default()
                );
                Ok(json!({"messages": [text_message(&text)]}))
            },
        )
        .prompt(
            json!({"name": "test_prompt_with_embedded_resource", "description": "A prompt embedding a resource",
                "arguments": [{"name": "resourceUri", "description": "URI of the resource to embed", "required": true}]}),
            |args| async move {
                Ok(json!({"messages": [
                    {"role": "user", "content": {"type": "resource", "resource": {
                        "uri": args["resourceUri"], "mimeType": "text/plain",
                        "text": "Embedded resource content for testing."}}},
                    text_message("Please process the embedded resource above.")]}))
            },
        )
        .prompt(
            json!({"name": "test_prompt_with_image", "description": "A prompt with an image"}),
            move |_| {
                let png = png.clone();
                async move {
                    Ok(json!({"messages": [
                        {"role": "user", "content": {"type": "image", "data": png, "mimeType": "image/png"}},
                        text_message("Please analyze the image above.")]}))
                }
            },
        )
        .completions(|params| async move {
            let typed = params["argument"]["value"].as_str().unwrap_or_default().to_owned();
            let candidates: &[&str] = match params["argument"]["name"].as_str() {
                Some("arg1" | "arg2") => &["paris", "park", "party", "hello", "world"],
                _ => &[],
            };
            Ok(candidates
                .iter()
                .filter(|c| c.starts_with(&typed))
                .map(|c| (*c).to_owned())
                .collect())
        })
}
