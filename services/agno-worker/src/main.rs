//! `agno-worker` binary: configuration from flags and environment, then `run`.
use clap::Parser;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut cli = agno_worker::Cli::parse();
    let telemetry = sophia_kit::telemetry::init("agno-worker");
    cli.worker
        .http_addr
        .get_or_insert(std::net::SocketAddr::from((
            [0, 0, 0, 0],
            agno_worker::DEFAULT_HTTP_PORT,
        )));
    let shutdown = CancellationToken::new();
    let handle = agno_worker::run(cli, shutdown.clone()).await?;
    tracing::info!(instance = %handle.instance, http = %handle.http_addr, "agno-worker started");
    sophia_kit::telemetry::shutdown_signal().await;
    shutdown.cancel();
    handle.stopped().await;
    telemetry.shutdown();
    Ok(())
}
