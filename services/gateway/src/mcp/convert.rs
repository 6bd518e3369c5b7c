//! Worker outputs and gateway errors as MCP results.

use super::*;

/// An rmcp result from its MCP JSON form.
pub(super) fn from_json<T: serde::de::DeserializeOwned>(value: Value) -> Result<T, McpError> {
    serde_json::from_value(value.clone()).map_err(|e| {
        McpError::internal_error(
            format!("a worker's answer is not valid MCP ({e}): {value}"),
            None,
        )
    })
}

/// A worker's MCP result (a list, a read resource, a prompt, a completion)
/// as rmcp's type, marked complete: MCP 2026-07-28 requires `resultType`,
/// and rmcp strips a complete one for peers of earlier revisions.
pub(super) fn result_from_json<T: serde::de::DeserializeOwned>(
    mut value: Value,
) -> Result<T, McpError> {
    if let Some(object) = value.as_object_mut() {
        object
            .entry("resultType")
            .or_insert_with(|| Value::from("complete"));
    }
    from_json(value)
}

/// A tool result carrying an error the model and the person can read; the
/// machine-readable code is in `_meta["sophia/error"]`.
pub(super) fn error_result(
    code: ErrorCode,
    message: String,
    data: Option<Value>,
) -> CallToolResult {
    let mut result = CallToolResult::error(vec![ContentBlock::text(message)]);
    let mut meta = serde_json::Map::new();
    meta.insert(
        "sophia/error".into(),
        json!({ "code": code.as_str(), "retryable": code.is_retryable(), "data": data }),
    );
    result.meta = Some(MetaObject(meta));
    result
}

/// A content block from its MCP JSON form (the wire shape is the spec's, so
/// this cannot drift from what clients read).
pub(super) fn mcp_block(value: Value) -> ContentBlock {
    serde_json::from_value(value.clone()).unwrap_or_else(|e| {
        ContentBlock::text(format!(
            "(content the gateway could not relay: {e}: {value})"
        ))
    })
}

pub(super) fn to_mcp(output: ToolOutput) -> CallToolResult {
    let b64 = base64::engine::general_purpose::STANDARD;
    let content = output
        .content
        .into_iter()
        .map(|c| match c {
            Content::Text { text } => ContentBlock::text(text),
            Content::Image { data, mime_type } => ContentBlock::image(b64.encode(data), mime_type),
            Content::Audio { data, mime_type } => ContentBlock::audio(b64.encode(data), mime_type),
            Content::Resource {
                uri,
                mime_type,
                text,
                blob,
            } => {
                let mut resource = json!({"uri": uri});
                if let Some(m) = mime_type {
                    resource["mimeType"] = json!(m);
                }
                match (text, blob) {
                    (_, Some(blob)) => resource["blob"] = json!(b64.encode(blob)),
                    (text, None) => resource["text"] = json!(text.unwrap_or_default()),
                }
                mcp_block(json!({"type": "resource", "resource": resource}))
            }
            Content::ResourceLink {
                uri,
                name,
                mime_type,
                description,
            } => {
                let mut link = json!({"type": "resource_link", "uri": uri, "name": name});
                if let Some(m) = mime_type {
                    link["mimeType"] = json!(m);
                }
                if let Some(d) = description {
                    link["description"] = json!(d);
                }
                mcp_block(link)
            }
        })
        .collect();
    let mut result = if output.is_error {
        CallToolResult::error(content)
    } else {
        CallToolResult::success(content)
    };
    result.structured_content = output.structured;
    result
}

impl Refusal {
    /// The refusal as MCP answers it: an unknown tool is a JSON-RPC error
    /// (the client asked for something that is not there); a bus that is
    /// down or bad arguments are `isError` results the model can act on.
    pub(super) fn into_mcp(self) -> Result<CallToolResult, McpError> {
        let code = self.code();
        match self {
            Refusal::UnknownTool(_) => Err(McpError::invalid_params(self.to_string(), None)),
            Refusal::BusDown(down) => Ok(error_result(code, down, None)),
            Refusal::Forbidden(why) => Ok(error_result(code, why, None)),
            Refusal::InvalidArguments { ref problems, .. } => {
                let data = json!({ "errors": problems });
                Ok(error_result(code, self.to_string(), Some(data)))
            }
        }
    }
}
