//! `intelligence-worker` binary: configuration from flags and environment, then the kit's run loop.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    sophia_kit::main(
        intelligence_worker::worker(),
        intelligence_worker::DEFAULT_HTTP_PORT,
    )
    .await?;
    Ok(())
}
