//! `sophia-gateway`: MCP over stdio (`--stdio`) or Streamable HTTP (`/mcp`).
use clap::Parser;
use sophia_gateway::GatewayConfig;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = GatewayConfig::parse();
    let telemetry = sophia_kit::telemetry::init("sophia-gateway");
    let shutdown = CancellationToken::new();
    let signal = shutdown.clone();
    tokio::spawn(async move {
        sophia_kit::telemetry::shutdown_signal().await;
        signal.cancel();
    });
    if config.stdio {
        sophia_gateway::run_stdio(config, shutdown).await?;
    } else {
        // A signal stops start-up too (it may be waiting for NATS).
        let started = tokio::select! {
            handle = sophia_gateway::run(config, shutdown.clone()) => Some(handle?),
            _ = shutdown.cancelled() => None,
        };
        if let Some(handle) = started {
            handle.stopped().await;
        }
    }
    telemetry.shutdown();
    Ok(())
}
