//! The 2026-07-28 suite's list-change hooks (`server-stateless`): each call
//! of `test_trigger_tool_change` offers or withdraws `test_dynamic_tool`,
//! and each of `test_trigger_prompt_change` `test_dynamic_prompt`, with the
//! worker's [`sophia_kit::Listing`]. The worker announces the change at
//! once, and the gateway tells `subscriptions/listen` streams
//! (`notifications/tools/list_changed`, `.../prompts/list_changed`).

use serde_json::json;
use sophia_kit::{Listing, ToolOutput, Worker};

use crate::{text_message, tool};

/// The tool the trigger offers and withdraws.
pub const DYNAMIC_TOOL: &str = "test_dynamic_tool";
/// The prompt the trigger offers and withdraws.
pub const DYNAMIC_PROMPT: &str = "test_dynamic_prompt";

/// `worker` with the triggers and what they change (withdrawn at first).
pub fn with_list_changes(worker: Worker) -> Worker {
    let listing = worker.listing();
    listing.withdraw_tool(DYNAMIC_TOOL);
    listing.withdraw_prompt(DYNAMIC_PROMPT);
    let (tools, prompts) = (listing.clone(), listing);
    worker
        .tool(
            tool(
                DYNAMIC_TOOL,
                "Listed or not, as test_trigger_tool_change decides.",
            )
            .handler(|_| async { Ok(ToolOutput::text("The dynamic tool ran.")) }),
        )
        .tool(
            tool(
                "test_trigger_tool_change",
                "Offers test_dynamic_tool, or withdraws it: the tool list changes.",
            )
            .handler(move |_| {
                let text = toggle_tool(&tools);
                async move { Ok(ToolOutput::text(text)) }
            }),
        )
        .tool(
            tool(
                "test_trigger_prompt_change",
                "Offers test_dynamic_prompt, or withdraws it: the prompt list changes.",
            )
            .handler(move |_| {
                let text = toggle_prompt(&prompts);
                async move { Ok(ToolOutput::text(text)) }
            }),
        )
        .prompt(
            json!({"name": DYNAMIC_PROMPT,
                "description": "Listed or not, as test_trigger_prompt_change decides"}),
            |_| async { Ok(json!({"messages": [text_message("The dynamic prompt.")]})) },
        )
}

/// Withdraws the dynamic tool if it is listed, else offers it; says which.
fn toggle_tool(listing: &Listing) -> String {
    if listing.tool_offered(DYNAMIC_TOOL) {
        listing.withdraw_tool(DYNAMIC_TOOL);
        format!("{DYNAMIC_TOOL} withdrawn")
    } else {
        listing.offer_tool(DYNAMIC_TOOL);
        format!("{DYNAMIC_TOOL} offered")
    }
}

/// Withdraws the dynamic prompt if it is listed, else offers it.
fn toggle_prompt(listing: &Listing) -> String {
    if listing.prompt_offered(DYNAMIC_PROMPT) {
        listing.withdraw_prompt(DYNAMIC_PROMPT);
        format!("{DYNAMIC_PROMPT} withdrawn")
    } else {
        listing.offer_prompt(DYNAMIC_PROMPT);
        format!("{DYNAMIC_PROMPT} offered")
    }
}
