//! A complete worker: one tool, `echo`, that returns its text.
use serde::Deserialize;
use serde_json::json;
use sophia_kit::{Category, Tool, ToolOutput, Worker};

#[derive(Deserialize)]
struct EchoArgs {
    text: String,
}

/// The echo worker: build it, then `run` it with a `WorkerConfig`.
pub fn echo_worker() -> Worker {
    let echo = Tool::new(
        "echo",
        Category::CodeGeneration,
        "Returns the text it is given.",
    )
    .input_schema(json!({
        "type": "object",
        "properties": { "text": { "type": "string", "description": "What to echo" } },
        "required": ["text"],
        "additionalProperties": false
    }))
    .read_only()
    .idempotent()
    .handler(|call| async move {
        let args: EchoArgs = call.args()?;
        Ok(ToolOutput::text(args.text))
    });
    Worker::new("echo-worker", env!("CARGO_PKG_VERSION")).tool(echo)
}
