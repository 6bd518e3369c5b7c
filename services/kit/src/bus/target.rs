//! Where a call goes, and where its cancel follows it.

use std::fmt;

use sophia_proto::Category;
use sophia_proto::subject::{self, McpMethod};

/// Where a call is sent, and so where its cancel goes: a tool's category,
/// or the one worker service whose MCP offer it reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// A tool on its category's subject, `sophia.v1.tools.<category>.<tool>`;
    /// cancels go to `sophia.v1.cancel.<category>`.
    Tool(Category),
    /// A tool served on a subject of its own (e.g. an inference subject from
    /// [`subject::inference`]); cancels go to its category's.
    Subject {
        /// The subject, built with `proto`.
        subject: String,
        /// The tool's category.
        category: Category,
    },
    /// One worker service's MCP offer (resource read, prompt, completion)
    /// on `sophia.v1.mcp.<service>.<method>`; cancels go to that service
    /// alone, `sophia.v1.mcp.<service>.cancel`.
    Offer {
        /// The worker service.
        service: String,
        /// What is asked of it.
        method: McpMethod,
    },
}

impl Target {
    /// The subject the request for `tool` goes to.
    pub fn subject(&self, tool: &str) -> String {
        match self {
            Target::Tool(category) => subject::tool(*category, tool),
            Target::Subject { subject, .. } => subject.clone(),
            Target::Offer { service, method } => subject::mcp(service, *method),
        }
    }

    /// Where a cancel of the call goes.
    pub fn cancel_subject(&self) -> String {
        match self {
            Target::Tool(category) | Target::Subject { category, .. } => subject::cancel(*category),
            Target::Offer { service, .. } => subject::mcp_cancel(service),
        }
    }

    /// The tool's category, if the call is a tool's.
    pub fn category(&self) -> Option<Category> {
        match self {
            Target::Tool(category) | Target::Subject { category, .. } => Some(*category),
            Target::Offer { .. } => None,
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Tool(category) | Target::Subject { category, .. } => {
                write!(f, "category {category}")
            }
            Target::Offer { service, method } => {
                write!(f, "{} of worker service {service}", method.mcp_name())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_offer_is_sent_and_cancelled_per_service_and_a_tool_per_category() {
        let offer = Target::Offer {
            service: "docs".into(),
            method: McpMethod::ReadResource,
        };
        assert_eq!(
            offer.subject("ignored"),
            "sophia.v1.mcp.docs.resources_read"
        );
        assert_eq!(offer.cancel_subject(), "sophia.v1.mcp.docs.cancel");
        assert_eq!(offer.category(), None);
        let tool = Target::Tool(Category::Infrastructure);
        assert_eq!(
            tool.subject("pulumi_up"),
            "sophia.v1.tools.infrastructure.pulumi_up"
        );
        assert_eq!(tool.cancel_subject(), "sophia.v1.cancel.infrastructure");
    }
}
