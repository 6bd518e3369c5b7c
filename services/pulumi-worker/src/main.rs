//! `pulumi-worker` binary: configuration from flags and environment, then `run`.
use clap::Parser;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut cli = pulumi_worker::Cli::parse();
    let telemetry = sophia_kit::telemetry::init("pulumi-worker");
    cli.worker
        .http_addr
        .get_or_insert(std::net::SocketAddr::from((
            [0, 0, 0, 0],
            pulumi_worker::DEFAULT_HTTP_PORT,
        )));
    let shutdown = CancellationToken::new();
    let handle = pulumi_worker::run(cli, shutdown.clone()).await?;
    tracing::info!(instance = %handle.instance, http = %handle.http_addr, "pulumi-worker started");
    sophia_kit::telemetry::shutdown_signal().await;
    shutdown.cancel();
    handle.stopped().await;
    telemetry.shutdown();
    Ok(())
}
