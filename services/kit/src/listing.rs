//! What a running worker lists right now. Tools and prompts are declared on
//! the [`crate::Worker`] before it runs (their handlers, schemas and
//! endpoints are set up once, at start); its [`Listing`] withdraws some of
//! them and offers them again while it runs, for a worker whose offer
//! depends on something that changes (a backend that comes and goes, a
//! licence, a plugin). Each change is announced at once, so gateways update
//! their lists and tell their clients (`notifications/tools/list_changed`,
//! `notifications/prompts/list_changed`). A withdrawn tool's calls are
//! refused as `unknown_tool`, a withdrawn prompt's `prompts/get` as unknown.
//!
//! ```no_run
//! use sophia_kit::{Category, Tool, ToolOutput, Worker};
//!
//! let worker = Worker::new("reports", "1.0.0");
//! let listing = worker.listing();
//! listing.withdraw_tool("export"); // until the exporter is configured
//! let worker = worker
//!     .tool(Tool::new("export", Category::BusinessIntelligence, "Exports a report.")
//!         .handler(|_| async { Ok(ToolOutput::text("exported")) }))
//!     .tool(Tool::new("configure_export", Category::BusinessIntelligence, "Sets up exports.")
//!         .handler(move |_| {
//!             listing.offer_tool("export");
//!             async { Ok(ToolOutput::text("exports are on")) }
//!         }));
//! ```
//!
//! A listing belongs to one replica: gateways list a tool while any live
//! replica offers it. Replicas that must agree drive their listings from
//! shared state (a [`crate::kv`] bucket they all watch).

use std::collections::BTreeSet;
use std::sync::Arc;

use parking_lot::Mutex;
use sophia_proto::{Announce, ErrorCode, WireError};
use tokio::sync::watch;

use crate::tool::Handler;

/// Which declared tools and prompts a running worker withdraws; cheap to
/// clone, every clone the same listing. See the [module docs](self).
#[derive(Clone, Debug)]
pub struct Listing {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    withdrawn: Mutex<BTreeSet<(Kind, String)>>,
    /// Moves on every change, for the announcer.
    changes: watch::Sender<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Tool,
    Prompt,
}

impl Default for Listing {
    fn default() -> Self {
        Self {
            inner: Arc::new(Inner {
                withdrawn: Mutex::default(),
                changes: watch::channel(0).0,
            }),
        }
    }
}

impl Listing {
    /// Stops listing the tool `name`; its calls are refused until
    /// [`Listing::offer_tool`]. Whether that changed anything.
    pub fn withdraw_tool(&self, name: &str) -> bool {
        self.set(Kind::Tool, name, false)
    }

    /// Lists the tool `name` again (every declared tool is listed until
    /// withdrawn). Whether that changed anything.
    pub fn offer_tool(&self, name: &str) -> bool {
        self.set(Kind::Tool, name, true)
    }

    /// Stops listing the prompt `name`; its `prompts/get` is refused until
    /// [`Listing::offer_prompt`]. Whether that changed anything.
    pub fn withdraw_prompt(&self, name: &str) -> bool {
        self.set(Kind::Prompt, name, false)
    }

    /// Lists the prompt `name` again. Whether that changed anything.
    pub fn offer_prompt(&self, name: &str) -> bool {
        self.set(Kind::Prompt, name, true)
    }

    /// Whether the tool `name` is listed (not withdrawn).
    pub fn tool_offered(&self, name: &str) -> bool {
        self.offered(Kind::Tool, name)
    }

    /// Whether the prompt `name` is listed (not withdrawn).
    pub fn prompt_offered(&self, name: &str) -> bool {
        self.offered(Kind::Prompt, name)
    }

    fn offered(&self, kind: Kind, name: &str) -> bool {
        // Checked on every call of a declared tool: no key is built while
        // nothing is withdrawn (the common case).
        let withdrawn = self.inner.withdrawn.lock();
        withdrawn.is_empty() || !withdrawn.contains(&(kind, name.to_owned()))
    }

    fn set(&self, kind: Kind, name: &str, offered: bool) -> bool {
        let key = (kind, name.to_owned());
        let changed = {
            let mut withdrawn = self.inner.withdrawn.lock();
            if offered {
                withdrawn.remove(&key)
            } else {
                withdrawn.insert(key)
            }
        };
        if changed {
            self.inner.changes.send_modify(|v| *v += 1);
        }
        changed
    }

    /// A receiver that moves on every change.
    pub(crate) fn changes(&self) -> watch::Receiver<u64> {
        self.inner.changes.subscribe()
    }

    /// `full` (everything the worker declares) without what is withdrawn.
    pub(crate) fn listed(&self, full: &Announce) -> Announce {
        let mut listed = full.clone();
        listed.tools.retain(|t| self.tool_offered(&t.name));
        listed
            .offers
            .prompts
            .retain(|p| p["name"].as_str().is_none_or(|n| self.prompt_offered(n)));
        listed
    }

    /// `handler`, refusing calls while the tool `name` is withdrawn.
    pub(crate) fn guard(&self, name: &str, handler: Handler) -> Handler {
        let (listing, name) = (self.clone(), name.to_owned());
        Arc::new(move |call| {
            if listing.tool_offered(&name) {
                handler(call)
            } else {
                let refusal = withdrawn("tool", &name);
                Box::pin(async move { Err(refusal) })
            }
        })
    }
}

/// The refusal of a withdrawn tool or prompt.
pub(crate) fn withdrawn(what: &str, name: &str) -> WireError {
    WireError::new(
        ErrorCode::UnknownTool,
        format!("this worker no longer offers the {what} {name:?}: see the current list"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use sophia_proto::{Category, Hints, ToolSpec};

    fn spec(name: &str) -> ToolSpec {
        ToolSpec {
            name: name.into(),
            title: None,
            description: String::new(),
            category: Category::CodeGeneration,
            input_schema: json!({"type": "object"}),
            output_schema: None,
            hints: Hints::default(),
            timeout_ms: None,
            jobs: None,
        }
    }

    #[test]
    fn withdrawn_tools_and_prompts_are_left_out_of_the_announcement() {
        let full = Announce {
            v: 1,
            instance: "i".into(),
            service: "w".into(),
            version: "1.0.0".into(),
            tools: vec![spec("a"), spec("b")],
            heartbeat_ms: 1000,
            offers: sophia_proto::Offers {
                prompts: vec![json!({"name": "p"}), json!({"name": "q"})],
                ..Default::default()
            },
            degraded: vec![],
            acks: true,
            host: String::new(),
            started_at_ms: 0,
        };
        let listing = Listing::default();
        let mut changes = listing.changes();
        assert!(listing.withdraw_tool("a"));
        assert!(!listing.withdraw_tool("a"), "already withdrawn");
        assert!(listing.withdraw_prompt("q"));
        assert!(changes.has_changed().unwrap());
        changes.mark_unchanged();
        let listed = listing.listed(&full);
        let tools: Vec<&str> = listed.tools.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(tools, ["b"]);
        assert_eq!(listed.offers.prompts, vec![json!({"name": "p"})]);

        assert!(listing.offer_tool("a"));
        assert!(changes.has_changed().unwrap());
        assert_eq!(listing.listed(&full).tools.len(), 2);
        assert!(listing.tool_offered("a") && !listing.prompt_offered("q"));
    }
}
