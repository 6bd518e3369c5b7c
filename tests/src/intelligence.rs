//! An intelligence-worker replica in front of stand-in providers.

use std::path::PathBuf;

use intelligence_worker::{Cli, InferenceArgs};
use sophia_kit::WorkerHandle;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::Mesh;
use crate::openai::StandIn;

/// A running replica; stops when dropped.
pub struct Replica {
    /// The worker.
    pub handle: WorkerHandle,
    _stop: DropGuard,
    _dir: tempfile::TempDir,
}

/// Starts an intelligence replica whose only provider is `standin`, serving
/// it as `alias` (or with no config at all, probing `ollama_url`), taking
/// prompts of at most 4 KiB.
pub async fn replica(mesh: &Mesh, provider: Option<(&StandIn, &str)>, ollama_url: &str) -> Replica {
    replica_taking(mesh, provider, ollama_url, 4096).await
}

/// [`replica`], taking prompts of at most `max_prompt_bytes`.
pub async fn replica_taking(
    mesh: &Mesh,
    provider: Option<(&StandIn, &str)>,
    ollama_url: &str,
    max_prompt_bytes: usize,
) -> Replica {
    let dir = tempfile::tempdir().unwrap();
    let config: Option<PathBuf> = provider.map(|(standin, alias)| {
        let path = dir.path().join("intelligence.toml");
        std::fs::write(
            &path,
            format!(
                r#"
                [[providers]]
                name = "p-{alias}"
                base_url = "{}"
                [aliases.{alias}]
                targets = [{{ provider = "p-{alias}", model = "{alias}-model" }}]
                [prices."{alias}-model"]
                input_per_million = 1.0
                output_per_million = 2.0
                "#,
                standin.base_url
            ),
        )
        .unwrap();
        path
    });
    let cli = Cli {
        worker: mesh.worker_config_as("intelligence"),
        inference: InferenceArgs {
            config,
            ollama_url: ollama_url.to_owned(),
            max_prompt_bytes,
        },
    };
    let stop = CancellationToken::new();
    let handle = intelligence_worker::run(cli, stop.clone())
        .await
        .expect("replica starts");
    Replica {
        handle,
        _stop: stop.drop_guard(),
        _dir: dir,
    }
}
