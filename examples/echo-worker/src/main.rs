//! `echo-worker`: the kit's example worker as a binary.
use clap::Parser;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    worker: sophia_kit::WorkerConfig,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    sophia_kit::run_until_signal(echo_worker::echo_worker(), cli.worker, 8099).await?;
    Ok(())
}
