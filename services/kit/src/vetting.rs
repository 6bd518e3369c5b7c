//! What a follower of announcements (the gateway, the agent runtime) checks
//! in a worker's announcement before it offers or uses anything from it, so
//! that no announcement can crash it or break another client's list:
//! - tool names follow the mesh's rules (`[A-Za-z0-9_-]{1,48}`);
//! - `inputSchema` (and `outputSchema`, if any) is a JSON object whose root
//!   says `"type": "object"`, as MCP requires;
//! - schemas are at most [`MAX_SCHEMA_BYTES`] and [`MAX_SCHEMA_DEPTH`] deep,
//!   measured without recursion (a 1,000-deep schema must not overflow the
//!   stack while it is measured), and they compile;
//! - resources need a `uri` and a `name`, templates a `uriTemplate` and a
//!   `name`, prompts a `name` (and `arguments`, if any, a list of objects
//!   with a `name`).
//!
//! Whatever fails is left out, alone: the rest of the announcement is
//! offered. Each refusal names the entry and why.

use serde_json::Value;
use sophia_proto::{Announce, ToolSpec, subject};

/// The largest schema accepted, as JSON bytes (estimated while walking it).
pub const MAX_SCHEMA_BYTES: usize = 64 * 1024;
/// The deepest schema accepted (objects and arrays, the root being 1).
pub const MAX_SCHEMA_DEPTH: usize = 32;
/// The longest tool description accepted.
pub const MAX_DESCRIPTION_BYTES: usize = 16 * 1024;

/// An entry of an announcement that is not offered, and why.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Refusal {
    /// What was refused, e.g. `tool echo` or `prompt greet`.
    pub what: String,
    /// Why.
    pub why: String,
}

/// Removes from `a` every tool, resource, template and prompt that fails
/// the checks above; returns the refusals.
pub fn vet(a: &mut Announce) -> Vec<Refusal> {
    let mut refused = Vec::new();
    a.tools.retain(|spec| match tool(spec) {
        Ok(()) => true,
        Err(why) => {
            refused.push(Refusal {
                what: format!("tool {}", shown(&spec.name)),
                why,
            });
            false
        }
    });
    let offers = &mut a.offers;
    for (kind, list, check) in [
        (
            "resource",
            &mut offers.resources,
            resource as fn(&Value) -> _,
        ),
        (
            "resource template",
            &mut offers.resource_templates,
            template,
        ),
        ("prompt", &mut offers.prompts, prompt),
    ] {
        list.retain(|entry| match check(entry) {
            Ok(()) => true,
            Err(why) => {
                refused.push(Refusal {
                    what: format!("{kind} {}", label(entry)),
                    why,
                });
                false
            }
        });
    }
    refused
}

fn tool(spec: &ToolSpec) -> Result<(), String> {
    subject::validate_tool_name(&spec.name).map_err(|e| e.to_string())?;
    if spec.description.len() > MAX_DESCRIPTION_BYTES {
        return Err(format!(
            "its description is {} bytes, over {MAX_DESCRIPTION_BYTES}",
            spec.description.len()
        ));
    }
    object_schema(&spec.input_schema, "inputSchema")?;
    if let Some(output) = &spec.output_schema {
        object_schema(output, "outputSchema")?;
    }
    Ok(())
}

/// A schema MCP accepts: an object with `"type": "object"` at the root, of
/// bounded size and depth, that compiles.
fn object_schema(schema: &Value, which: &str) -> Result<(), String> {
    let (depth, bytes) = measure(schema);
    if depth > MAX_SCHEMA_DEPTH {
        return Err(format!(
            "its {which} nests {depth} levels deep, over {MAX_SCHEMA_DEPTH}"
        ));
    }
    if bytes > MAX_SCHEMA_BYTES {
        return Err(format!(
            "its {which} is about {bytes} bytes, over {MAX_SCHEMA_BYTES}"
        ));
    }
    if schema.get("type").and_then(Value::as_str) != Some("object") {
        return Err(format!(
            "its {which} must be a JSON Schema with \"type\": \"object\" at the root (MCP requires it)"
        ));
    }
    jsonschema::validator_for(schema)
        .map(drop)
        .map_err(|e| format!("its {which} is not a valid JSON Schema: {e}"))
}

/// Nesting depth and approximate JSON size of `v`, walked with an explicit
/// stack (never recursion).
pub fn measure(v: &Value) -> (usize, usize) {
    let mut stack = vec![(v, 1usize)];
    let (mut deepest, mut bytes) = (0, 0);
    while let Some((v, depth)) = stack.pop() {
        deepest = deepest.max(depth);
        match v {
            Value::Object(map) => {
                bytes += 2;
                for (k, child) in map {
                    bytes += k.len() + 4;
                    stack.push((child, depth + 1));
                }
            }
            Value::Array(items) => {
                bytes += 2;
                stack.extend(items.iter().map(|child| (child, depth + 1)));
            }
            Value::String(s) => bytes += s.len() + 2,
            _ => bytes += 8,
        }
        if bytes > MAX_SCHEMA_BYTES * 4 {
            break; // far over: no need to walk the rest
        }
    }
    (deepest, bytes)
}

fn resource(r: &Value) -> Result<(), String> {
    text_fields(r, &["uri", "name"])
}

fn template(t: &Value) -> Result<(), String> {
    text_fields(t, &["uriTemplate", "name"])
}

fn prompt(p: &Value) -> Result<(), String> {
    text_fields(p, &["name"])?;
    match p.get("arguments") {
        None | Some(Value::Null) => Ok(()),
        Some(Value::Array(args)) if args.iter().all(|a| a["name"].is_string()) => Ok(()),
        Some(_) => Err("its `arguments` must be a list of objects with a `name`".into()),
    }
}

/// `entry` is a bounded JSON object with these fields as non-empty strings.
fn text_fields(entry: &Value, fields: &[&str]) -> Result<(), String> {
    if !entry.is_object() {
        return Err("it is not a JSON object".into());
    }
    let (depth, bytes) = measure(entry);
    if depth > MAX_SCHEMA_DEPTH || bytes > MAX_SCHEMA_BYTES {
        return Err("it is too large or too deeply nested".into());
    }
    for field in fields {
        match entry.get(*field).and_then(Value::as_str) {
            Some(s) if !s.is_empty() => {}
            _ => return Err(format!("it has no `{field}` text")),
        }
    }
    Ok(())
}

/// A name as shown in messages: at most 64 characters of it.
pub fn shown(name: &str) -> String {
    let mut out: String = name.chars().take(64).collect();
    if out.len() < name.len() {
        out.push('…');
    }
    out
}

fn label(entry: &Value) -> String {
    ["name", "uri", "uriTemplate"]
        .iter()
        .find_map(|k| entry.get(*k).and_then(Value::as_str))
        .map(shown)
        .unwrap_or_else(|| "(unnamed)".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use sophia_proto::{Category, Hints};

    fn spec(name: &str, schema: Value) -> ToolSpec {
        ToolSpec {
            name: name.into(),
            title: None,
            description: "d".into(),
            category: Category::CodeGeneration,
            input_schema: schema,
            output_schema: None,
            hints: Hints::default(),
            timeout_ms: None,
            jobs: None,
        }
    }

    fn deep(key: &str, levels: usize) -> Value {
        let mut v = json!({"type": "string"});
        for _ in 0..levels {
            v = json!({ key: v });
        }
        v["type"] = json!("object");
        v
    }

    #[test]
    fn schemas_mcp_would_refuse_are_refused_and_good_ones_kept() {
        let bad = [
            json!({"type": "string"}),
            json!({"properties": {}}),
            json!({"type": ["object", "null"]}),
            json!("object"),
            deep("not", 1_000),
            deep("items", 1_000),
            deep("not", 200),
            json!({"type": "object", "description": "x".repeat(MAX_SCHEMA_BYTES + 1)}),
            json!({"type": "object", "properties": {"a": {"type": 12}}}),
        ];
        for schema in bad {
            assert!(tool(&spec("t", schema.clone())).is_err(), "{schema:.80}");
        }
        assert!(tool(&spec("t", json!({"type": "object"}))).is_ok());
        assert!(tool(&spec("t", deep("not", 20))).is_ok());
        assert!(tool(&spec("bad.name", json!({"type": "object"}))).is_err());
    }

    #[test]
    fn one_bad_entry_leaves_the_rest_of_the_announcement() {
        let mut a: Announce = serde_json::from_value(json!({
            "v": 1, "instance": "i", "service": "s", "version": "1.0.0", "heartbeat_ms": 1000,
            "tools": [spec("good", json!({"type": "object"})), spec("bad", json!({"type": "string"}))],
            "offers": {
                "resources": [{"uri": "mem://a", "name": "a"}, {"name": "no uri"}],
                "resource_templates": [{"uriTemplate": "mem://{x}", "name": "x"}, 7],
                "prompts": [{"name": "greet"}, {"name": "bad", "arguments": "nope"}]
            }
        }))
        .unwrap();
        let refused = vet(&mut a);
        assert_eq!(a.tools.len(), 1);
        assert_eq!(a.offers.resources.len(), 1);
        assert_eq!(a.offers.resource_templates.len(), 1);
        assert_eq!(a.offers.prompts.len(), 1);
        let what: Vec<&str> = refused.iter().map(|r| r.what.as_str()).collect();
        assert_eq!(
            what,
            [
                "tool bad",
                "resource no uri",
                "resource template (unnamed)",
                "prompt bad"
            ]
        );
    }

    #[test]
    fn long_names_are_shown_cut() {
        assert_eq!(shown(&"n".repeat(1 << 20)).chars().count(), 65);
    }
}
