//! `pulumi-worker` binary: configuration from flags and environment, then the kit's run loop.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    sophia_kit::main(pulumi_worker::worker(), pulumi_worker::DEFAULT_HTTP_PORT).await?;
    Ok(())
}
