//! `agno-worker` binary: configuration from flags and environment, then `run`.
use clap::Parser;

#[global_allocator]
static ALLOCATOR: sophia_kit::Allocator = sophia_kit::Allocator {};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut cli = agno_worker::Cli::parse();
    cli.worker.default_http_port(agno_worker::DEFAULT_HTTP_PORT);
    sophia_kit::serve_until_signal("agno-worker", |shutdown| agno_worker::run(cli, shutdown))
        .await?;
    Ok(())
}
