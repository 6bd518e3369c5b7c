//! MCP resources, resource templates, prompts and completions offered by a
//! worker, besides its tools. They are announced with the worker's tools
//! (in MCP's own JSON shapes) and served on the service's own subjects,
//! `sophia.v1.mcp.<service>.<method>` (a NATS service endpoint group), each
//! request a `ToolRequest` whose `args` are the MCP params and whose
//! structured result is the MCP result. They belong to no category: their
//! cancels arrive on `sophia.v1.mcp.<service>.cancel`.
//!
//! ```no_run
//! use serde_json::json;
//! use sophia_kit::Worker;
//! use sophia_kit::offers::Contents;
//!
//! let worker = Worker::new("docs-worker", "1.0.0")
//!     .resource(json!({"uri": "docs://readme", "name": "readme", "mimeType": "text/markdown"}),
//!         |_uri| async { Ok(Contents::text("# Hello")) })
//!     .prompt(json!({"name": "summarize", "arguments": [{"name": "topic", "required": true}]}),
//!         |args| async move { Ok(json!({"messages": [{"role": "user",
//!             "content": {"type": "text", "text": format!("Summarize {}", args["topic"])}}]})) });
//! ```

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde_json::{Value, json};
use sophia_proto::subject::McpMethod;
use sophia_proto::{Offers, ToolOutput, WireError};

use crate::serve::Served;
use crate::tool::{Call, Handler};

type BoxFut<T> = Pin<Box<dyn Future<Output = Result<T, WireError>> + Send>>;
type ReadFn = Arc<dyn Fn(String) -> BoxFut<Contents> + Send + Sync>;
type TemplateFn = Arc<dyn Fn(String, HashMap<String, String>) -> BoxFut<Contents> + Send + Sync>;
/// A prompt's handler: the call (to ask the client, as a tool does) and the
/// prompt's arguments.
type PromptFn = Arc<dyn Fn(Call, Value) -> BoxFut<Value> + Send + Sync>;
type CompleteFn = Arc<dyn Fn(Value) -> BoxFut<Completion> + Send + Sync>;

/// A resource's contents.
#[derive(Clone, Debug, PartialEq)]
pub enum Contents {
    /// Text, with an optional MIME type (the resource's own if absent).
    Text(String),
    /// Bytes.
    Blob(Vec<u8>),
    /// MCP `ResourceContents` objects as they are, each with its own
    /// `uri`, `mimeType`, `text` or `blob`: for relays, such as the MCP
    /// bridge, that pass another server's contents on unchanged.
    Mcp(Vec<Value>),
}

impl Contents {
    /// Text contents.
    pub fn text(text: impl Into<String>) -> Self {
        Contents::Text(text.into())
    }
}

/// A completion's suggestions, with what the offerer knows of the rest.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Completion {
    /// The suggestions, best first (at most 100 are sent).
    pub values: Vec<String>,
    /// How many there are in all, if known (default: `values.len()`).
    pub total: Option<u64>,
    /// Whether there are more than those sent (default: more than 100).
    pub has_more: Option<bool>,
}

impl From<Vec<String>> for Completion {
    fn from(values: Vec<String>) -> Self {
        Self {
            values,
            ..Self::default()
        }
    }
}

impl Completion {
    /// MCP's `CompleteResult`.
    fn to_mcp(&self) -> Value {
        let total = self.total.unwrap_or(self.values.len() as u64);
        let has_more = self.has_more.unwrap_or(self.values.len() > 100);
        let values: Vec<&String> = self.values.iter().take(100).collect();
        json!({"completion": {"values": values, "total": total, "hasMore": has_more}})
    }
}

/// Matches `uri` against an RFC 6570 level-1 template (`{name}` segments,
/// each standing for one or more characters other than `/`); the
/// variables, if it matches.
pub fn match_template(template: &str, uri: &str) -> Option<HashMap<String, String>> {
    let mut vars = HashMap::new();
    let mut rest = uri;
    let mut pattern = template;
    while !pattern.is_empty() {
        match pattern.find('{') {
            Some(0) => {
                let end = pattern.find('}')?;
                let name = &pattern[1..end];
                pattern = &pattern[end + 1..];
                let stop = match pattern.find('{') {
                    Some(i) => &pattern[..i],
                    None => pattern,
                };
                let value_len = if stop.is_empty() {
                    rest.find('/').unwrap_or(rest.len())
                } else {
                    rest.find(stop)?
                };
                let value = &rest[..value_len];
                if value.is_empty() || value.contains('/') {
                    return None;
                }
                vars.insert(name.to_owned(), value.to_owned());
                rest = &rest[value_len..];
            }
            Some(i) => {
                rest = rest.strip_prefix(&pattern[..i])?;
                pattern = &pattern[i..];
            }
            None => {
                rest = rest.strip_prefix(pattern)?;
                pattern = "";
            }
        }
    }
    rest.is_empty().then_some(vars)
}

/// What a worker offers besides tools.
#[derive(Clone, Default)]
pub(crate) struct WorkerOffers {
    resources: Vec<(Value, ReadFn)>,
    templates: Vec<(Value, TemplateFn)>,
    prompts: Vec<(Value, PromptFn)>,
    complete: Option<CompleteFn>,
}

/// MCP's `ReadResourceResult` for `contents` read from `uri`.
fn read_result(uri: &str, mime: Option<&Value>, contents: Contents) -> Value {
    match contents {
        Contents::Mcp(list) => json!({"contents": list}),
        one => json!({"contents": [contents_json(uri, mime, one)]}),
    }
}

fn contents_json(uri: &str, mime: Option<&Value>, contents: Contents) -> Value {
    use base64::Engine;
    let mut c = json!({"uri": uri});
    if let Some(m) = mime.filter(|m| m.is_string()) {
        c["mimeType"] = m.clone();
    }
    match contents {
        Contents::Text(t) => c["text"] = json!(t),
        Contents::Blob(b) => c["blob"] = json!(base64::engine::general_purpose::STANDARD.encode(b)),
        Contents::Mcp(list) => return json!(list),
    }
    c
}

impl WorkerOffers {
    pub(crate) fn add_resource<F, Fut>(&mut self, resource: Value, read: F)
    where
        F: Fn(String) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Contents, WireError>> + Send + 'static,
    {
        self.resources
            .push((resource, Arc::new(move |uri| Box::pin(read(uri)))));
    }

    pub(crate) fn add_template<F, Fut>(&mut self, template: Value, read: F)
    where
        F: Fn(String, HashMap<String, String>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Contents, WireError>> + Send + 'static,
    {
        self.templates.push((
            template,
            Arc::new(move |uri, vars| Box::pin(read(uri, vars))),
        ));
    }

    pub(crate) fn add_prompt<F, Fut>(&mut self, prompt: Value, get: F)
    where
        F: Fn(Call, Value) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Value, WireError>> + Send + 'static,
    {
        self.prompts.push((
            prompt,
            Arc::new(move |call, args| Box::pin(get(call, args))),
        ));
    }

    pub(crate) fn set_completions<F, Fut>(&mut self, complete: F)
    where
        F: Fn(Value) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Completion, WireError>> + Send + 'static,
    {
        self.complete = Some(Arc::new(move |params| Box::pin(complete(params))));
    }

    /// What to announce.
    pub(crate) fn announced(&self) -> Offers {
        Offers {
            resources: self.resources.iter().map(|(r, _)| r.clone()).collect(),
            resource_templates: self.templates.iter().map(|(t, _)| t.clone()).collect(),
            prompts: self.prompts.iter().map(|(p, _)| p.clone()).collect(),
            completions: self.complete.is_some(),
        }
    }

    /// What serves each offered method: the handlers behind the service's
    /// `sophia.v1.mcp.<service>.<method>` endpoints.
    /// `listing` says which prompts are withdrawn.
    pub(crate) fn served(&self, listing: &crate::Listing) -> Vec<(McpMethod, Served)> {
        let mut served = Vec::new();
        if !self.resources.is_empty() || !self.templates.is_empty() {
            let me = self.clone();
            let read: Handler = Arc::new(move |call: Call| {
                let me = me.clone();
                Box::pin(
                    async move { me.read(call.args["uri"].as_str().unwrap_or_default()).await },
                )
            });
            served.push((
                McpMethod::ReadResource,
                Served::offer(McpMethod::ReadResource, read),
            ));
        }
        if !self.prompts.is_empty() {
            let (me, listing) = (self.clone(), listing.clone());
            let get: Handler = Arc::new(move |call: Call| {
                let (me, listing) = (me.clone(), listing.clone());
                Box::pin(async move { me.get_prompt(call, &listing).await })
            });
            served.push((
                McpMethod::GetPrompt,
                Served::offer(McpMethod::GetPrompt, get),
            ));
        }
        if let Some(complete) = self.complete.clone() {
            let suggest: Handler = Arc::new(move |call: Call| {
                let complete = complete.clone();
                Box::pin(async move {
                    let completion = complete(call.args.clone()).await?;
                    Ok(structured(completion.to_mcp()))
                })
            });
            served.push((
                McpMethod::Complete,
                Served::offer(McpMethod::Complete, suggest),
            ));
        }
        served
    }

    async fn read(&self, uri: &str) -> Result<ToolOutput, WireError> {
        if let Some((resource, read)) = self.resources.iter().find(|(r, _)| r["uri"] == uri) {
            let contents = read(uri.to_owned()).await?;
            return Ok(structured(read_result(
                uri,
                resource.get("mimeType"),
                contents,
            )));
        }
        for (template, read) in &self.templates {
            let pattern = template["uriTemplate"].as_str().unwrap_or_default();
            if let Some(vars) = match_template(pattern, uri) {
                let contents = read(uri.to_owned(), vars).await?;
                return Ok(structured(read_result(
                    uri,
                    template.get("mimeType"),
                    contents,
                )));
            }
        }
        Err(WireError::invalid_arguments(format!(
            "no resource {uri} here"
        )))
    }

    /// `prompts/get`: `call.args` are its MCP params (`name`, `arguments`).
    async fn get_prompt(
        &self,
        call: Call,
        listing: &crate::Listing,
    ) -> Result<ToolOutput, WireError> {
        let params = &call.args;
        let name = params["name"].as_str().unwrap_or_default().to_owned();
        let (prompt, get) = self
            .prompts
            .iter()
            .find(|(p, _)| p["name"] == name)
            .ok_or_else(|| WireError::invalid_arguments(format!("no prompt {name:?} here")))?;
        if !listing.prompt_offered(&name) {
            return Err(crate::listing::withdrawn("prompt", &name));
        }
        let args = params.get("arguments").cloned().unwrap_or(json!({}));
        for required in prompt["arguments"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|a| a["required"] == json!(true))
        {
            let arg = required["name"].as_str().unwrap_or_default();
            if args.get(arg).is_none_or(Value::is_null) {
                return Err(WireError::invalid_arguments(format!(
                    "prompt {name} needs the argument {arg:?}"
                )));
            }
        }
        let mut result = get(call, args).await?;
        if result.get("description").is_none()
            && let Some(d) = prompt.get("description")
        {
            result["description"] = d.clone();
        }
        Ok(structured(result))
    }
}

fn structured(value: Value) -> ToolOutput {
    ToolOutput {
        structured: Some(value),
        ..ToolOutput::default()
    }
}

#[cfg(test)]
mod tests {
    use super::{Completion, Contents, WorkerOffers, match_template};
    use serde_json::json;

    #[tokio::test]
    async fn relayed_contents_and_completions_pass_unchanged() {
        let mut offers = WorkerOffers::default();
        let upstream = json!({"uri": "a://b", "mimeType": "text/plain", "blob": "aGk="});
        let given = upstream.clone();
        offers.add_resource(
            json!({"uri": "a://b", "name": "b", "mimeType": "application/octet-stream"}),
            move |_| {
                let given = given.clone();
                async move { Ok(Contents::Mcp(vec![given])) }
            },
        );
        let read = offers.read("a://b").await.unwrap().structured.unwrap();
        assert_eq!(read, json!({"contents": [upstream]}));
        let relayed = Completion {
            values: vec!["x".into()],
            total: Some(250),
            has_more: Some(true),
        };
        assert_eq!(
            relayed.to_mcp(),
            json!({"completion": {"values": ["x"], "total": 250, "hasMore": true}})
        );
        let own = Completion::from(vec!["y".to_owned(); 101]).to_mcp();
        assert_eq!(
            own["completion"]["values"].as_array().map(Vec::len),
            Some(100)
        );
        assert_eq!(
            (
                own["completion"]["total"].clone(),
                own["completion"]["hasMore"].clone()
            ),
            (json!(101), json!(true))
        );
    }

    #[test]
    fn templates_match_level_one_variables() {
        let v = match_template("test://template/{id}/data", "test://template/123/data").unwrap();
        assert_eq!(v["id"], "123");
        assert!(match_template("test://template/{id}/data", "test://template/1/2/data").is_none());
        assert!(match_template("test://template/{id}/data", "test://template//data").is_none());
        assert!(match_template("a://{x}", "b://1").is_none());
        let v = match_template("repo://{owner}/{name}", "repo://me/mesh").unwrap();
        assert_eq!((v["owner"].as_str(), v["name"].as_str()), ("me", "mesh"));
    }
}
