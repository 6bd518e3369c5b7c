//! `mcp-bridge` binary: flags, environment and the TOML file, then `run`
//! until SIGTERM or Ctrl-C.
use clap::Parser;

#[global_allocator]
static ALLOCATOR: sophia_kit::Allocator = sophia_kit::Allocator {};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut cli = mcp_bridge::Cli::parse();
    cli.worker.default_http_port(mcp_bridge::DEFAULT_HTTP_PORT);
    let config = match mcp_bridge::BridgeConfig::load(&cli.config, cli.worker) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("mcp-bridge: {e}");
            std::process::exit(2);
        }
    };
    let traces = sophia_kit::telemetry::init("mcp-bridge");
    let shutdown = tokio_util::sync::CancellationToken::new();
    tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            sophia_kit::telemetry::shutdown_signal().await;
            shutdown.cancel();
        }
    });
    let handle = match mcp_bridge::run(config, shutdown.clone()).await {
        Ok(h) => h,
        Err(e) => {
            tracing::error!("{e}");
            traces.shutdown();
            eprintln!("mcp-bridge: {e}");
            std::process::exit(2);
        }
    };
    tracing::info!(http = %handle.http_addr, servers = handle.servers().len(), "mcp-bridge started");
    shutdown.cancelled().await;
    handle.stopped().await;
    traces.shutdown();
    Ok(())
}
