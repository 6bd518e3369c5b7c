//! Between MCP's shapes (rmcp's) and the mesh's: an upstream tool as a kit
//! [`Tool`], and an upstream result as a [`ToolOutput`].

use base64::Engine;
use rmcp::model::{CallToolResult, ContentBlock};
use serde_json::Value;
use sophia_kit::{Content, Tool, ToolOutput};

use crate::config::ServerConfig;

/// Upstream tool `t` as the mesh announces it (without its handler): named
/// `<prefix>_<name>`, schemas as they are, annotations as hints. MCP's
/// defaults apply to absent annotations: a tool that is not read-only is
/// destructive and open-world unless it says otherwise, so confirmation
/// before destructive tools still happens. An announcement gateways would
/// refuse (name, schema) is refused here, with the reason.
pub fn tool(server: &ServerConfig, t: &rmcp::model::Tool) -> Result<Tool, String> {
    let name = server.mesh_name(&t.name);
    let ann = t.annotations.clone().unwrap_or_default();
    let read_only = ann.read_only_hint.unwrap_or(false);
    let mut tool = Tool::new(
        name.clone(),
        server.category,
        t.description.as_deref().unwrap_or_default(),
    )
    .input_schema(Value::Object((*t.input_schema).clone()));
    if let Some(out) = &t.output_schema {
        tool = tool.output_schema(Value::Object((**out).clone()));
    }
    if let Some(title) = t.title.clone().or(ann.title) {
        tool = tool.title(title);
    }
    if read_only {
        tool = tool.read_only();
    }
    if !read_only && ann.destructive_hint.unwrap_or(true) {
        tool = tool.destructive();
    }
    if ann.idempotent_hint.unwrap_or(false) {
        tool = tool.idempotent();
    }
    if ann.open_world_hint.unwrap_or(true) {
        tool = tool.open_world();
    }
    if let Some(ms) = server.timeout_ms {
        tool = tool.timeout_ms(ms);
    }
    vet(&tool)?;
    Ok(tool)
}

/// The checks gateways make on announcements, made before announcing.
fn vet(tool: &Tool) -> Result<(), String> {
    let mut announce = sophia_proto::Announce {
        v: sophia_proto::PROTOCOL_VERSION,
        instance: String::new(),
        service: String::new(),
        version: String::new(),
        tools: vec![tool.spec().clone()],
        heartbeat_ms: 0,
        offers: Default::default(),
        degraded: Vec::new(),
        acks: true,
        host: String::new(),
        started_at_ms: 0,
    };
    match sophia_kit::vetting::vet(&mut announce).pop() {
        Some(refusal) => Err(refusal.why),
        None => Ok(()),
    }
}

/// An upstream result as the mesh carries it: every content block in
/// order, `structuredContent` and `isError` as they are.
pub fn output(result: CallToolResult) -> ToolOutput {
    ToolOutput {
        content: result.content.iter().map(content).collect(),
        structured: result.structured_content,
        is_error: result.is_error.unwrap_or(false),
    }
}

fn content(block: &ContentBlock) -> Content {
    let v = serde_json::to_value(block).unwrap_or_default();
    let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
    let converted = match v.get("type").and_then(Value::as_str) {
        Some("text") => s(&v, "text").map(|text| Content::Text { text }),
        Some(kind @ ("image" | "audio")) => {
            let (data, mime_type) = (bytes(s(&v, "data")), s(&v, "mimeType"));
            match (data, mime_type) {
                (Some(data), Some(mime_type)) if kind == "image" => {
                    Some(Content::Image { data, mime_type })
                }
                (Some(data), Some(mime_type)) => Some(Content::Audio { data, mime_type }),
                _ => None,
            }
        }
        Some("resource") => v.get("resource").and_then(|r| {
            Some(Content::Resource {
                uri: s(r, "uri")?,
                mime_type: s(r, "mimeType"),
                text: s(r, "text"),
                blob: bytes(s(r, "blob")).map(serde_bytes::ByteBuf::from),
            })
        }),
        Some("resource_link") => Some(Content::ResourceLink {
            uri: s(&v, "uri").unwrap_or_default(),
            name: s(&v, "name").unwrap_or_default(),
            mime_type: s(&v, "mimeType"),
            description: s(&v, "description"),
        }),
        _ => None,
    };
    converted.unwrap_or_else(|| {
        Content::text(format!("(content the bridge could not relay as is: {v})"))
    })
}

fn bytes(b64: Option<String>) -> Option<Vec<u8>> {
    base64::engine::general_purpose::STANDARD.decode(b64?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use sophia_kit::Category;

    fn upstream(v: Value) -> rmcp::model::Tool {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn annotations_become_hints_with_mcp_defaults() {
        let s = ServerConfig::stdio("ev", Category::CodeGeneration, "x", &[]);
        let schema = json!({"type": "object"});
        let t = tool(
            &s,
            &upstream(json!({"name": "get-sum", "inputSchema": schema,
            "annotations": {"readOnlyHint": true, "idempotentHint": true}})),
        )
        .unwrap();
        let h = &t.spec().hints;
        assert_eq!(t.spec().name, "ev_get-sum");
        assert!(h.read_only && h.idempotent && !h.destructive && h.open_world);
        let bare = tool(&s, &upstream(json!({"name": "rm", "inputSchema": schema}))).unwrap();
        assert!(bare.spec().hints.destructive && !bare.spec().hints.read_only);
    }

    #[test]
    fn what_gateways_would_refuse_is_refused() {
        let s = ServerConfig::stdio("ev", Category::CodeGeneration, "x", &[]);
        let long = "x".repeat(50);
        assert!(
            tool(
                &s,
                &upstream(json!({"name": long, "inputSchema": {"type": "object"}}))
            )
            .is_err()
        );
        let bad = json!({"name": "t", "inputSchema": {"type": "object", "properties": 3}});
        assert!(tool(&s, &upstream(bad)).is_err());
    }

    #[test]
    fn every_content_kind_is_relayed() {
        let result: CallToolResult = serde_json::from_value(json!({
            "content": [
                {"type": "text", "text": "hi"},
                {"type": "image", "data": "AAEC", "mimeType": "image/png"},
                {"type": "audio", "data": "AAEC", "mimeType": "audio/wav"},
                {"type": "resource", "resource": {"uri": "a://b", "blob": "AAEC"}},
                {"type": "resource_link", "uri": "a://c", "name": "c"}
            ],
            "structuredContent": {"n": 1}, "isError": true
        }))
        .unwrap();
        let out = output(result);
        assert!(out.is_error);
        assert_eq!(out.structured, Some(json!({"n": 1})));
        assert_eq!(out.content[0], Content::text("hi"));
        assert!(matches!(&out.content[1], Content::Image { data, .. } if data == &[0, 1, 2]));
        assert!(matches!(&out.content[2], Content::Audio { .. }));
        assert!(
            matches!(&out.content[3], Content::Resource { blob: Some(b), .. } if b.as_ref() == [0, 1, 2])
        );
        assert!(matches!(&out.content[4], Content::ResourceLink { name, .. } if name == "c"));
    }
}
