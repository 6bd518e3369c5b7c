//! `echo-worker`: the kit's example worker as a binary.

#[global_allocator]
static ALLOCATOR: sophia_kit::Allocator = sophia_kit::Allocator {};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    sophia_kit::main(echo_worker::echo_worker(), 8099).await?;
    Ok(())
}
