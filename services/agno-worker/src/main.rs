//! `agno-worker` binary: configuration from flags and environment, then the kit's run loop.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    sophia_kit::main(agno_worker::worker(), agno_worker::DEFAULT_HTTP_PORT).await?;
    Ok(())
}
