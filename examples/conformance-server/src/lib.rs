//! The fixtures of the official MCP conformance suite
//! (`@modelcontextprotocol/conformance`) as a plain MCP server over stdio,
//! written with rmcp and nothing of the mesh: the upstream server the
//! bridge is tested against (`tests/tests/bridge.rs`), so that the suite
//! runs through gateway → bus → bridge → a real MCP server.
//!
//! It mirrors `examples/conformance-worker` (the same fixtures served
//! natively on the bus) and shares its binary fixtures. An example: not
//! started by `up.sh` or the compose file.
//!
//! # Layout
//! - [`Fixtures`]: the rmcp [`ServerHandler`]; `tools/call` dispatches by
//!   name in [`Fixtures::run`].
//! - [`tools`], [`resources`], [`prompts`]: what is listed, as JSON in
//!   MCP's own shapes.

use std::time::Duration;

use base64::Engine;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, CompleteRequestParams, CompleteResult,
    ElicitRequestParams, ElicitationSchema, GetPromptRequestParams, GetPromptResponse,
    Implementation, ListPromptsResult, ListResourceTemplatesResult, ListResourcesResult,
    ListToolsResult, PaginatedRequestParams, ProgressNotificationParam, ReadResourceRequestParams,
    ReadResourceResponse, ServerCapabilities, ServerConfig,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData as McpError, RoleServer, ServerHandler, ServiceExt};
use serde_json::{Value, json};

use conformance_worker::{RED_PIXEL_PNG, silent_wav};

/// Serves the fixtures on stdin/stdout until the client goes.
pub async fn serve_stdio() -> anyhow::Result<()> {
    let service = Fixtures.serve(rmcp::transport::stdio()).await?;
    service.waiting().await?;
    Ok(())
}

/// The conformance fixtures.
#[derive(Clone, Copy, Debug, Default)]
pub struct Fixtures;

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn from_json<T: serde::de::DeserializeOwned>(value: Value) -> Result<T, McpError> {
    serde_json::from_value(value).map_err(|e| McpError::internal_error(e.to_string(), None))
}

fn tool(name: &str, description: &str, input: Value) -> Value {
    json!({"name": name, "description": description, "inputSchema": input})
}

/// The tools, as `tools/list` gives them.
pub fn tools() -> Vec<Value> {
    let none = json!({"type": "object", "properties": {}});
    let mut tools: Vec<Value> = [
        ("test_simple_text", "Returns simple text content."),
        ("test_image_content", "Returns image content."),
        ("test_audio_content", "Returns audio content."),
        ("test_embedded_resource", "Returns an embedded resource."),
        (
            "test_multiple_content_types",
            "Returns text, an image and an embedded resource.",
        ),
        (
            "test_tool_with_logging",
            "Sends three log records while it runs.",
        ),
        ("test_error_handling", "Always fails."),
        ("test_tool_with_progress", "Reports progress 0, 50, 100."),
        (
            "test_elicitation_sep1034_defaults",
            "Asks with a default for every primitive type (SEP-1034).",
        ),
        (
            "test_elicitation_sep1330_enums",
            "Asks with every enum variant (SEP-1330).",
        ),
    ]
    .into_iter()
    .map(|(name, description)| tool(name, description, none.clone()))
    .collect();
    let string_arg = |arg: &str| json!({"type": "object", "properties": {arg: {"type": "string"}}, "required": [arg]});
    tools.push(tool(
        "test_sampling",
        "Asks the client's model (sampling/createMessage) and returns its answer.",
        string_arg("prompt"),
    ));
    tools.push(tool(
        "test_elicitation",
        "Asks the person for a username and an email.",
        string_arg("message"),
    ));
    tools.push(tool(
        "json_schema_2020_12_tool",
        "Tool with JSON Schema 2020-12 features",
        json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "type": "object",
            "$defs": {"address": {"type": "object", "properties": {
                "street": {"type": "string"}, "city": {"type": "string"}}}},
            "properties": {"name": {"type": "string"}, "address": {"$ref": "#/$defs/address"}},
            "additionalProperties": false}),
    ));
    tools
}

/// The static resources, as `resources/list` gives them.
pub fn resources() -> Vec<Value> {
    vec![
        json!({"uri": "test://static-text", "name": "static-text",
            "description": "A static text resource", "mimeType": "text/plain"}),
        json!({"uri": "test://static-binary", "name": "static-binary",
            "description": "A static binary resource (a PNG)", "mimeType": "image/png"}),
        json!({"uri": "test://watched-resource", "name": "watched-resource",
            "description": "A resource to subscribe to", "mimeType": "text/plain"}),
    ]
}

/// The prompts, as `prompts/list` gives them.
pub fn prompts() -> Vec<Value> {
    let arg = |name: &str, description: &str| json!({"name": name, "description": description, "required": true});
    vec![
        json!({"name": "test_simple_prompt", "description": "A simple prompt without arguments"}),
        json!({"name": "test_prompt_with_arguments", "description": "A prompt with arguments",
            "arguments": [arg("arg1", "First test argument"), arg("arg2", "Second test argument")]}),
        json!({"name": "test_prompt_with_embedded_resource", "description": "A prompt embedding a resource",
            "arguments": [arg("resourceUri", "URI of the resource to embed")]}),
        json!({"name": "test_prompt_with_image", "description": "A prompt with an image"}),
    ]
}

fn text(text: &str) -> Value {
    json!({"type": "text", "text": text})
}

fn image() -> Value {
    json!({"type": "image", "data": b64(&RED_PIXEL_PNG), "mimeType": "image/png"})
}

fn content(blocks: Vec<Value>) -> Value {
    json!({"content": blocks})
}

fn user(content: Value) -> Value {
    json!({"role": "user", "content": content})
}

impl Fixtures {
    /// Runs the tool `name`; its result as JSON.
    pub async fn run(
        &self,
        name: &str,
        args: &Value,
        context: &RequestContext<RoleServer>,
    ) -> Result<Value, McpError> {
        let embedded = |uri: &str, mime: &str, body: &str| json!({"type": "resource", "resource": {"uri": uri, "mimeType": mime, "text": body}});
        Ok(match name {
            "test_simple_text" => {
                content(vec![text("This is a simple text response for testing.")])
            }
            "test_image_content" => content(vec![image()]),
            "test_audio_content" => content(vec![json!({"type": "audio",
                "data": b64(&silent_wav()), "mimeType": "audio/wav"})]),
            "test_embedded_resource" => content(vec![embedded(
                "test://embedded-resource",
                "text/plain",
                "This is an embedded resource content.",
            )]),
            "test_multiple_content_types" => content(vec![
                text("Multiple content types test:"),
                image(),
                embedded(
                    "test://mixed-content-resource",
                    "application/json",
                    r#"{"test":"data","value":123}"#,
                ),
            ]),
            "test_tool_with_logging" => self.with_logging(context).await,
            "test_error_handling" => json!({"isError": true, "content": [
                text("This tool intentionally returns an error for testing")]}),
            "test_tool_with_progress" => self.with_progress(context).await,
            "test_sampling" => self.sampling(args, context).await?,
            "json_schema_2020_12_tool" => json!({"content": [text(&args.to_string())],
                "structuredContent": args}),
            elicitation if elicitation.starts_with("test_elicitation") => {
                self.elicitation(elicitation, args, context).await?
            }
            other => {
                return Err(McpError::invalid_params(
                    format!("unknown tool {other:?}"),
                    None,
                ));
            }
        })
    }

    #[allow(deprecated)] // logging is deprecated by SEP-2577; the suite still tests it
    async fn with_logging(&self, context: &RequestContext<RoleServer>) -> Value {
        for (i, message) in [
            "Tool execution started",
            "Tool processing data",
            "Tool execution completed",
        ]
        .into_iter()
        .enumerate()
        {
            if i > 0 {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            if let Ok(param) = serde_json::from_value(json!({"level": "info", "data": message})) {
                let _ = context.peer.notify_logging_message(param).await;
            }
        }
        content(vec![text("Tool with logging executed successfully")])
    }

    async fn with_progress(&self, context: &RequestContext<RoleServer>) -> Value {
        if let Some(token) = context.meta.get_progress_token() {
            for (i, p) in [0.0, 50.0, 100.0].into_iter().enumerate() {
                if i > 0 {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                let param = ProgressNotificationParam::new(token.clone(), p)
                    .with_total(100.0)
                    .with_message(format!("{p}%"));
                let _ = context.peer.notify_progress(param).await;
            }
        }
        content(vec![text("Progress test completed")])
    }

    #[allow(deprecated)] // sampling is deprecated by SEP-2577; the suite still tests it
    async fn sampling(
        &self,
        args: &Value,
        context: &RequestContext<RoleServer>,
    ) -> Result<Value, McpError> {
        let prompt = args["prompt"].as_str().unwrap_or_default();
        let params = from_json(json!({"messages": [user(text(prompt))], "maxTokens": 100}))?;
        let result = context
            .peer
            .create_message(params)
            .await
            .map_err(|e| McpError::internal_error(format!("sampling failed: {e}"), None))?;
        let result = serde_json::to_value(result).unwrap_or_default();
        let answer = result["content"]["text"].as_str().unwrap_or_default();
        Ok(content(vec![text(&format!("LLM response: {answer}"))]))
    }

    async fn elicitation(
        &self,
        name: &str,
        args: &Value,
        context: &RequestContext<RoleServer>,
    ) -> Result<Value, McpError> {
        let (message, schema, prefix) = match name {
            "test_elicitation" => (
                args["message"]
                    .as_str()
                    .unwrap_or("Please provide your information")
                    .to_owned(),
                json!({"type": "object", "properties": {
                    "username": {"type": "string", "description": "User's response"},
                    "email": {"type": "string", "description": "User's email address"}},
                    "required": ["username", "email"]}),
                "User response: ",
            ),
            "test_elicitation_sep1034_defaults" => (
                "Please review and update the form fields with defaults".to_owned(),
                json!({"type": "object", "properties": {
                    "name": {"type": "string", "default": "John Doe"},
                    "age": {"type": "integer", "default": 30},
                    "score": {"type": "number", "default": 95.5},
                    "status": {"type": "string", "enum": ["active", "inactive", "pending"], "default": "active"},
                    "verified": {"type": "boolean", "default": true}}}),
                "Elicitation completed: ",
            ),
            _ => (
                "Please select options from the enum fields".to_owned(),
                enums_schema(),
                "Elicitation completed: ",
            ),
        };
        let requested_schema = schema
            .as_object()
            .cloned()
            .ok_or_else(|| "not an object".to_owned())
            .and_then(|o| ElicitationSchema::from_json_schema(o).map_err(|e| e.to_string()))
            .map_err(|e| McpError::internal_error(e, None))?;
        let answer = context
            .peer
            .create_elicitation(ElicitRequestParams::FormElicitationParams {
                meta: None,
                message,
                requested_schema,
            })
            .await
            .map_err(|e| McpError::internal_error(format!("elicitation failed: {e}"), None))?;
        let answer = serde_json::to_value(answer).unwrap_or_default();
        let action = answer["action"].as_str().unwrap_or_default();
        let given = answer.get("content").cloned().unwrap_or(Value::Null);
        Ok(content(vec![text(&format!(
            "{prefix}action={action}, content={given}"
        ))]))
    }
}

fn enums_schema() -> Value {
    let titled = |options: [(&str, &str); 3]| {
        options
            .iter()
            .map(|(value, title)| json!({"const": value, "title": title}))
            .collect::<Vec<_>>()
    };
    json!({"type": "object", "properties": {
        "untitledSingle": {"type": "string", "enum": ["option1", "option2", "option3"]},
        "titledSingle": {"type": "string", "oneOf": titled([
            ("value1", "First Option"), ("value2", "Second Option"), ("value3", "Third Option")])},
        "legacyEnum": {"type": "string", "enum": ["opt1", "opt2", "opt3"],
            "enumNames": ["Option One", "Option Two", "Option Three"]},
        "untitledMulti": {"type": "array", "items": {"type": "string", "enum": ["option1", "option2", "option3"]}},
        "titledMulti": {"type": "array", "items": {"anyOf": titled([
            ("value1", "First Choice"), ("value2", "Second Choice"), ("value3", "Third Choice")])}}}})
}

fn read(uri: &str) -> Result<Value, McpError> {
    let contents = match uri {
        "test://static-text" => json!({"uri": uri, "mimeType": "text/plain",
            "text": "This is the content of the static text resource."}),
        "test://static-binary" => {
            json!({"uri": uri, "mimeType": "image/png", "blob": b64(&RED_PIXEL_PNG)})
        }
        "test://watched-resource" => {
            json!({"uri": uri, "mimeType": "text/plain", "text": "Watched resource content."})
        }
        _ => {
            let id = uri
                .strip_prefix("test://template/")
                .and_then(|rest| rest.strip_suffix("/data"))
                .filter(|id| !id.is_empty() && !id.contains('/'))
                .ok_or_else(|| McpError::resource_not_found(format!("no resource {uri}"), None))?;
            let data =
                json!({"id": id, "templateTest": true, "data": format!("Data for ID: {id}")});
            json!({"uri": uri, "mimeType": "application/json", "text": data.to_string()})
        }
    };
    Ok(json!({"contents": [contents]}))
}

fn prompt(name: &str, args: &Value) -> Result<Value, McpError> {
    let arg = |key: &str| args[key].as_str().unwrap_or_default().to_owned();
    let messages = match name {
        "test_simple_prompt" => vec![user(text("This is a simple prompt for testing."))],
        "test_prompt_with_arguments" => vec![user(text(&format!(
            "Prompt with arguments: arg1='{}', arg2='{}'",
            arg("arg1"),
            arg("arg2")
        )))],
        "test_prompt_with_embedded_resource" => vec![
            user(
                json!({"type": "resource", "resource": {"uri": arg("resourceUri"),
                "mimeType": "text/plain", "text": "Embedded resource content for testing."}}),
            ),
            user(text("Please process the embedded resource above.")),
        ],
        "test_prompt_with_image" => {
            vec![user(image()), user(text("Please analyze the image above."))]
        }
        other => {
            return Err(McpError::invalid_params(
                format!("unknown prompt {other:?}"),
                None,
            ));
        }
    };
    Ok(json!({"messages": messages}))
}

impl ServerHandler for Fixtures {
    #[allow(deprecated)] // logging: see with_logging
    fn get_info(&self) -> ServerConfig {
        let capabilities: ServerCapabilities = serde_json::from_value(json!({
            "tools": {}, "logging": {}, "resources": {"subscribe": true},
            "prompts": {}, "completions": {}}))
        .unwrap_or_default();
        ServerConfig::new(capabilities).with_server_info(Implementation::new(
            "conformance-server",
            env!("CARGO_PKG_VERSION"),
        ))
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        from_json(json!({"tools": tools()}))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let args = Value::Object(request.arguments.clone().unwrap_or_default());
        let result = self.run(&request.name, &args, &context).await?;
        Ok(from_json::<CallToolResult>(result)?.into())
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, McpError> {
        from_json(json!({"resources": resources()}))
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, McpError> {
        from_json(
            json!({"resourceTemplates": [{"uriTemplate": "test://template/{id}/data",
            "name": "template-data", "description": "Data for an id",
            "mimeType": "application/json"}]}),
        )
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, McpError> {
        Ok(from_json::<rmcp::model::ReadResourceResult>(read(&request.uri)?)?.into())
    }

    async fn subscribe(
        &self,
        _request: rmcp::model::SubscribeRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        Ok(())
    }

    async fn unsubscribe(
        &self,
        _request: rmcp::model::UnsubscribeRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        Ok(())
    }

    async fn list_prompts(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, McpError> {
        from_json(json!({"prompts": prompts()}))
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, McpError> {
        let args = serde_json::to_value(&request.arguments).unwrap_or_default();
        let result = prompt(&request.name, &args)?;
        Ok(from_json::<rmcp::model::GetPromptResult>(result)?.into())
    }

    async fn complete(
        &self,
        request: CompleteRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CompleteResult, McpError> {
        let request = serde_json::to_value(&request).unwrap_or_default();
        let typed = request["argument"]["value"].as_str().unwrap_or_default();
        let candidates: &[&str] = match request["argument"]["name"].as_str() {
            Some("arg1" | "arg2") => &["paris", "park", "party", "hello", "world"],
            _ => &[],
        };
        let values: Vec<&str> = candidates
            .iter()
            .copied()
            .filter(|c| c.starts_with(typed))
            .collect();
        from_json(
            json!({"completion": {"values": values, "total": values.len(), "hasMore": false}}),
        )
    }
}
