//! `conformance-worker`: the conformance suite's fixtures as a binary.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    sophia_kit::main(conformance_worker::worker(), 8098).await?;
    Ok(())
}
