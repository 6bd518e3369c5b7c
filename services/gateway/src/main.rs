//! `sophia-gateway`: MCP over stdio (`--stdio`) or Streamable HTTP (`/mcp`).
use clap::Parser;
use sophia_gateway::GatewayConfig;
use sophia_gateway::config::{Command, KeysCommand};
use tokio_util::sync::CancellationToken;

#[global_allocator]
static ALLOCATOR: sophia_kit::Allocator = sophia_kit::Allocator {};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = GatewayConfig::parse();
    if let Some(Command::Keys(KeysCommand::New(args))) = &config.command {
        let made = sophia_gateway::identity::keys::new_key(args)?;
        println!(
            "{}\n\n# Append to the keys file (SOPHIA_GATEWAY_KEYS); it holds only the hash:\n{}",
            made.key, made.entry
        );
        eprintln!(
            "The key (first line) is shown only now: hand it to its holder, who sends `Authorization: Bearer <key>`."
        );
        return Ok(());
    }
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
