//! `conformance-server`: the conformance suite's fixtures as an MCP server
//! on stdin/stdout.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    conformance_server::serve_stdio().await
}
