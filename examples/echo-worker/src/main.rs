//! `echo-worker`: the kit's example worker as a binary.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    sophia_kit::main(echo_worker::echo_worker(), 8099).await?;
    Ok(())
}
