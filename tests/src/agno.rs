//! An agno-worker replica on a test mesh.

use agno_worker::{AgnoArgs, Cli};
use sophia_kit::{Category, WorkerHandle};
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::Mesh;

/// A running replica; stops when dropped.
pub struct Replica {
    _handle: WorkerHandle,
    _stop: DropGuard,
}

impl Replica {
    /// Stops the replica and waits until it has drained.
    pub async fn stop(self) {
        let Replica { _handle, _stop } = self;
        drop(_stop);
        _handle.stopped().await;
    }
}

/// The NATS user of an agno-worker serving `categories`
/// (`ops/nats/nats.conf`): `agno_bi`, `agno_infra` or `agno_code` for one
/// category, as `ops/k8s` runs them, else `agno`.
pub fn nats_user(categories: &[Category]) -> &'static str {
    match categories {
        [Category::BusinessIntelligence] => "agno_bi",
        [Category::Infrastructure] => "agno_infra",
        [Category::CodeGeneration] => "agno_code",
        _ => "agno",
    }
}

/// Starts an agno-worker serving the runs of `categories`, with the
/// built-in templates.
pub async fn replica(mesh: &Mesh, categories: &[Category]) -> Replica {
    replica_with(mesh, categories, None).await
}

/// Starts an agno-worker serving the runs of `categories`, with the
/// templates of the TOML file `templates` besides the built-in ones.
pub async fn replica_with(
    mesh: &Mesh,
    categories: &[Category],
    templates: Option<std::path::PathBuf>,
) -> Replica {
    let stop = CancellationToken::new();
    let handle = agno_worker::run(
        Cli {
            worker: mesh.worker_config_as(nats_user(categories)),
            agno: AgnoArgs {
                categories: categories.to_vec(),
                templates,
                session_ttl_s: 3600,
            },
        },
        stop.clone(),
    )
    .await
    .expect("agno-worker starts");
    Replica {
        _handle: handle,
        _stop: stop.drop_guard(),
    }
}

/// What a scripted model does when asked to deploy: it previews dev, then
/// wants `pulumi_up` of that preview, then says it is done.
pub fn deploy_script() -> Vec<crate::openai::Behavior> {
    use crate::openai::Behavior;
    vec![
        Behavior::call_tool("pulumi_preview", serde_json::json!({"stack": "dev"})),
        Behavior::call_tool(
            "pulumi_up",
            serde_json::json!({"stack": "dev", "preview_id": "$preview_id"}),
        ),
        Behavior::Say("Deployed: 1 resource created.".into()),
    ]
}
