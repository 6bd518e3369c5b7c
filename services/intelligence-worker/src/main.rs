//! `intelligence-worker` binary: configuration from flags and environment, then `run`.
use clap::Parser;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut cli = intelligence_worker::Cli::parse();
    let telemetry = sophia_kit::telemetry::init("intelligence-worker");
    cli.worker
        .http_addr
        .get_or_insert(std::net::SocketAddr::from((
            [0, 0, 0, 0],
            intelligence_worker::DEFAULT_HTTP_PORT,
        )));
    let shutdown = CancellationToken::new();
    let handle = intelligence_worker::run(cli, shutdown.clone()).await?;
    tracing::info!(instance = %handle.instance, http = %handle.http_addr, "intelligence-worker started");
    sophia_kit::telemetry::shutdown_signal().await;
    shutdown.cancel();
    handle.stopped().await;
    telemetry.shutdown();
    Ok(())
}
