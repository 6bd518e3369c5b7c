//! An upstream server's resources, resource templates, prompts and
//! completions, offered through its kit worker the way native workers offer
//! theirs (`Worker::resource`, `resource_template`, `prompt`,
//! `completions_full`), each handler asking the server (`resources/read`,
//! `prompts/get`, `completion/complete`) and passing its answer on
//! unchanged.
//!
//! What is listed is only what the server declares (its `resources`,
//! `prompts` and `completions` capabilities), every page of each list. A
//! list the server fails to give is left out and reported with the
//! server's status; its tools are offered all the same.
//!
//! Resource subscriptions are held by the gateways, per session, and not
//! told to workers; so, for `notifications/resources/updated` to reach
//! anyone, the bridge subscribes upstream to every listed resource (at most
//! [`MAX_SUBSCRIPTIONS`]) when the server supports subscriptions.
//! Gateways then pass each update only to the sessions subscribed to it.

#![expect(deprecated)] // resources/subscribe is legacy-only in rmcp 3.11; the 2025 revisions use it

use std::sync::Arc;
use std::time::Duration;

use rmcp::model::{
    CompleteRequestParams, GetPromptRequestParams, ReadResourceRequestParams,
    SubscribeRequestParams,
};
use rmcp::service::ServiceError;
use serde_json::{Value, json};
use sophia_kit::offers::{Completion, Contents};
use sophia_kit::{ErrorCode, WireError, Worker};

use crate::upstream::Link;

/// At most this many resources, templates and prompts of each kind are
/// offered (they travel in every announcement, which must fit a NATS
/// message).
pub const MAX_OFFERS: usize = 500;
/// At most this many resources are subscribed to upstream.
pub const MAX_SUBSCRIPTIONS: usize = 100;

/// What a server offers besides tools, in MCP's own JSON shapes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Offers {
    /// `resources/list`, every page.
    pub resources: Vec<Value>,
    /// `resources/templates/list`, every page.
    pub templates: Vec<Value>,
    /// `prompts/list`, every page.
    pub prompts: Vec<Value>,
    /// Whether the server declares `completions`.
    pub completions: bool,
}

/// The capabilities that matter here, from the server's `initialize`.
struct Declared {
    resources: bool,
    subscribe: bool,
    prompts: bool,
    completions: bool,
}

fn declared(link: &Link) -> Declared {
    let caps = link
        .peer
        .peer_info()
        .and_then(|info| serde_json::to_value(&info.capabilities).ok())
        .unwrap_or_default();
    let has = |key: &str| caps.get(key).is_some_and(|v| !v.is_null());
    Declared {
        resources: has("resources"),
        subscribe: caps["resources"]["subscribe"] == json!(true),
        prompts: has("prompts"),
        completions: has("completions"),
    }
}

/// Each listed item as JSON, at most [`MAX_OFFERS`] of them; a note when
/// some were left out.
fn shapes<T: serde::Serialize>(what: &str, items: Vec<T>, notes: &mut Vec<String>) -> Vec<Value> {
    if items.len() > MAX_OFFERS {
        notes.push(format!(
            "the server lists {} {what}; only the first {MAX_OFFERS} are offered",
            items.len()
        ));
    }
    items
        .iter()
        .take(MAX_OFFERS)
        .filter_map(|i| serde_json::to_value(i).ok())
        .collect()
}

impl Offers {
    /// Whether there is nothing to offer.
    pub fn is_empty(&self) -> bool {
        self.resources.is_empty()
            && self.templates.is_empty()
            && self.prompts.is_empty()
            && !self.completions
    }

    /// What `link`'s server offers, each list within `budget`; with a note
    /// for each list it failed to give (left out, not fatal).
    pub(crate) async fn list(link: &Link, budget: Duration) -> (Offers, Vec<String>) {
        let declared = declared(link);
        let (mut offers, mut notes) = (Offers::default(), Vec::new());
        let peer = &link.peer;
        let failed = |what: &str, why: String| {
            format!("{what} failed ({why}); the server's {what} results are not offered")
        };
        if declared.resources {
            match within(budget, peer.list_all_resources()).await {
                Ok(r) => offers.resources = shapes("resources", r, &mut notes),
                Err(why) => notes.push(failed("resources/list", why)),
            }
            match within(budget, peer.list_all_resource_templates()).await {
                Ok(t) => offers.templates = shapes("resource templates", t, &mut notes),
                Err(why) => notes.push(failed("resources/templates/list", why)),
            }
        }
        if declared.prompts {
            match within(budget, peer.list_all_prompts()).await {
                Ok(p) => offers.prompts = shapes("prompts", p, &mut notes),
                Err(why) => notes.push(failed("prompts/list", why)),
            }
        }
        offers.completions = declared.completions;
        if declared.subscribe {
            offers.subscribe_all(link, budget, &mut notes).await;
        }
        (offers, notes)
    }

    /// Subscribes upstream to the listed resources, so that their updates
    /// come (see the module's note); all of it within `budget`.
    async fn subscribe_all(&self, link: &Link, budget: Duration, notes: &mut Vec<String>) {
        let uris = self.resources.iter().filter_map(|r| r["uri"].as_str());
        let mut failed = Vec::new();
        let all = async {
            for uri in uris.take(MAX_SUBSCRIPTIONS) {
                if let Err(e) = link.peer.subscribe(SubscribeRequestParams::new(uri)).await {
                    failed.push(format!(
                        "resources/subscribe {uri} failed ({e}); its updates are not relayed"
                    ));
                }
            }
        };
        if tokio::time::timeout(budget, all).await.is_err() {
            failed.push(format!(
                "resources/subscribe got no answers within {}s; updates of the resources \
                 not subscribed to yet are not relayed",
                budget.as_secs()
            ));
        }
        notes.extend(failed);
    }

    /// `worker`, offering all this on `link`.
    pub(crate) fn offer(&self, mut worker: Worker, link: &Arc<Link>) -> Worker {
        for resource in &self.resources {
            let link = link.clone();
            worker = worker.resource(resource.clone(), move |uri| read(link.clone(), uri));
        }
        for template in &self.templates {
            let link = link.clone();
            worker = worker
                .resource_template(template.clone(), move |uri, _vars| read(link.clone(), uri));
        }
        for prompt in &self.prompts {
            let (link, name) = (link.clone(), prompt["name"].as_str().unwrap_or_default());
            let name = name.to_owned();
            worker = worker.prompt(prompt.clone(), move |args| {
                get_prompt(link.clone(), name.clone(), args)
            });
        }
        if self.completions {
            let link = link.clone();
            worker = worker.completions_full(move |params| complete(link.clone(), params));
        }
        worker
    }
}

/// `fut` within `budget`, its error as text.
async fn within<T>(
    budget: Duration,
    fut: impl Future<Output = Result<T, ServiceError>>,
) -> Result<T, String> {
    match tokio::time::timeout(budget, fut).await {
        Err(_) => Err(format!("no answer within {}s", budget.as_secs())),
        Ok(r) => r.map_err(|e| e.to_string()),
    }
}

/// `resources/read` upstream; the contents as the server gave them.
async fn read(link: Arc<Link>, uri: String) -> Result<Contents, WireError> {
    let result = link
        .peer
        .read_resource(ReadResourceRequestParams::new(uri))
        .await
        .map_err(|e| upstream_error(&link, "resources/read", e))?;
    let contents = serde_json::to_value(&result.contents)
        .ok()
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default();
    Ok(Contents::Mcp(contents))
}

/// `prompts/get` upstream; the result as the server gave it.
async fn get_prompt(link: Arc<Link>, name: String, args: Value) -> Result<Value, WireError> {
    let mut params = GetPromptRequestParams::new(name);
    match args {
        Value::Object(args) => params = params.with_arguments(args),
        Value::Null => {}
        _ => {
            return Err(WireError::invalid_arguments(
                "a prompt's arguments must be a JSON object of strings",
            ));
        }
    }
    let result = link
        .peer
        .get_prompt(params)
        .await
        .map_err(|e| upstream_error(&link, "prompts/get", e))?;
    serde_json::to_value(result).map_err(|e| {
        WireError::new(
            ErrorCode::Internal,
            format!("the prompt could not be encoded: {e}"),
        )
    })
}

/// `completion/complete` upstream; the suggestions, total and `hasMore` as
/// the server gave them.
async fn complete(link: Arc<Link>, params: Value) -> Result<Completion, WireError> {
    let params: CompleteRequestParams = serde_json::from_value(params).map_err(|e| {
        WireError::invalid_arguments(format!(
            "completion/complete needs `ref` and `argument` as MCP defines them: {e}"
        ))
    })?;
    let result = link
        .peer
        .complete(params)
        .await
        .map_err(|e| upstream_error(&link, "completion/complete", e))?;
    Ok(Completion {
        values: result.completion.values,
        total: result.completion.total.map(u64::from),
        has_more: result.completion.has_more,
    })
}

/// An upstream failure of `method`, named for what the caller can do.
fn upstream_error(link: &Link, method: &str, e: ServiceError) -> WireError {
    let server = &link.server.name;
    match e {
        ServiceError::McpError(data) => {
            // -32602 invalid params, -32002 resource not found: the
            // caller's to fix. Anything else is the server's failure.
            let code = match data.code.0 {
                -32602 | -32002 => ErrorCode::InvalidArguments,
                _ => ErrorCode::Failed,
            };
            WireError::new(
                code,
                format!("the MCP server {server} refused {method}: {}", data.message),
            )
        }
        ServiceError::TransportClosed | ServiceError::TransportSend(_) => {
            crate::relay::server_gone(link)
        }
        other => WireError::new(
            ErrorCode::Failed,
            format!("{method} on the MCP server {server} failed: {other}"),
        ),
    }
}
