//! `pulumi-worker` binary: configuration from flags and environment, then `run`.
use clap::Parser;

#[global_allocator]
static ALLOCATOR: sophia_kit::Allocator = sophia_kit::Allocator {};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut cli = pulumi_worker::Cli::parse();
    cli.worker
        .default_http_port(pulumi_worker::DEFAULT_HTTP_PORT);
    sophia_kit::serve_until_signal("pulumi-worker", |shutdown| {
        pulumi_worker::run(cli, shutdown)
    })
    .await?;
    Ok(())
}
