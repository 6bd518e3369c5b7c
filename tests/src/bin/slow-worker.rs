//! A worker for fault tests, run as a process so that a test can kill or
//! freeze it: `slow_read` (read-only) and `slow_write` (neither read-only
//! nor idempotent) each take `ms` milliseconds. Every start is appended to
//! the file `SLOW_WORKER_LOG` names, as `<pid> <tool>`, so a test can count
//! executions; the result is `done by <pid>`.

use std::io::Write;

use serde_json::json;
use sophia_kit::{Category, Tool, ToolOutput, Worker};

fn slow(name: &str, read_only: bool) -> Tool {
    let tool = Tool::new(
        name,
        Category::CodeGeneration,
        "Waits `ms` milliseconds, then answers with the process id.",
    )
    .input_schema(
        json!({"type": "object", "properties": {"ms": {"type": "integer"}},
        "required": ["ms"]}),
    )
    .timeout_ms(60_000);
    let tool = if read_only { tool.read_only() } else { tool };
    let name = name.to_owned();
    tool.handler(move |call| {
        let name = name.clone();
        async move {
            let pid = std::process::id();
            if let Some(path) = std::env::var_os("SLOW_WORKER_LOG") {
                let mut log = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .expect("the execution log");
                writeln!(log, "{pid} {name}").expect("log an execution");
            }
            let ms = call.args["ms"].as_u64().unwrap_or(0);
            tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
            Ok(ToolOutput::text(format!("done by {pid}")))
        }
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let worker = Worker::new("slow-worker", env!("CARGO_PKG_VERSION"))
        .tool(slow("slow_read", true))
        .tool(slow("slow_write", false));
    sophia_kit::main(worker, 0).await?;
    Ok(())
}
