//! What a subject serves: a tool, or one of the worker service's MCP
//! offers.

use std::sync::Arc;

use opentelemetry::KeyValue;
use sophia_proto::Category;
use sophia_proto::subject::McpMethod;

use crate::metrics::Counted;
use crate::telemetry::attr;
use crate::tool::{Handler, Tool};

/// What one subject serves: a tool, or one of the worker service's MCP
/// offers (which belong to no category).
#[derive(Clone)]
pub(crate) struct Served {
    /// The tool's name, or the MCP method (`resources/read`, ...).
    pub(crate) name: String,
    /// The tool's category; `None` for an offer.
    pub(crate) category: Option<Category>,
    pub(crate) handler: Handler,
    /// The compiled input schema; offers check their own params.
    pub(crate) validator: Option<Arc<jsonschema::Validator>>,
    /// The tool's annotations (what the policy matches); offers are
    /// read-only.
    pub(crate) hints: sophia_proto::Hints,
}

impl Served {
    pub(crate) fn tool(tool: &Tool, validator: Arc<jsonschema::Validator>) -> Self {
        Served {
            name: tool.spec().name.clone(),
            category: Some(tool.spec().category),
            handler: tool.handler.clone(),
            validator: Some(validator),
            hints: tool.spec().hints,
        }
    }

    /// One of the service's MCP offers, answering `method`.
    pub(crate) fn offer(method: McpMethod, handler: Handler) -> Self {
        Served {
            name: method.mcp_name().to_owned(),
            category: None,
            handler,
            validator: None,
            hints: sophia_proto::Hints {
                read_only: true,
                ..Default::default()
            },
        }
    }

    /// Its span attributes: the tool's name and category.
    pub(crate) fn attributes(&self) -> Vec<KeyValue> {
        let mut attributes = vec![KeyValue::new(attr::TOOL_NAME, self.name.clone())];
        if let Some(category) = self.category {
            attributes.push(KeyValue::new(attr::CATEGORY, category.as_str()));
        }
        attributes
    }
}

impl<'a> From<&'a Served> for Counted<'a> {
    fn from(served: &'a Served) -> Self {
        Counted {
            tool: &served.name,
            category: served
                .category
                .map_or(crate::metrics::OFFERS, Category::as_str),
        }
    }
}
