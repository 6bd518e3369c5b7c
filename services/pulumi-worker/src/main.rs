//! `pulumi-worker` binary: config from flags and environment, then the kit's run loop.
use clap::Parser;

#[derive(Parser)]
#[command(name = "pulumi-worker", version)]
struct Cli {
    #[command(flatten)]
    worker: sophia_kit::WorkerConfig,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    sophia_kit::run_until_signal(
        pulumi_worker::worker(),
        cli.worker,
        pulumi_worker::DEFAULT_HTTP_PORT,
    )
    .await?;
    Ok(())
}
