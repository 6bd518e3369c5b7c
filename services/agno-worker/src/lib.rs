//! `agno-worker`: an agent runtime on the bus, in the spirit of Agno.
//!
//! # Layout
//! - [`templates`]: agent templates, built in or from a TOML file.
//! - [`agent`]: agents, cheap to create (a shared template, an id, a time).
//! - [`directory`]: the mesh's tools, from workers' announcements.
//! - [`run`]: a run's state (messages, steps, usage) and a paused run's
//!   pending action.
//! - [`store`]: agents, sessions, pending actions and runs on JetStream KV.
//! - [`jobs`]: detached runs' records (MCP tasks): state, progress, result,
//!   the owner's lease, a cancel request, the question a paused run asks.
//! - [`runner`]: the agent loop (model → tools → model ...), talking to
//!   models through the typed chat contract ([`sophia_proto::chat`]).
//! - `confirm`: a person's yes before a destructive tool call.
//! - [`tools`]: the MCP tools, one file per family.
//!
//! See `docs/agents.md`.
#![forbid(unsafe_code)]

pub mod agent;
mod confirm;
pub mod directory;
pub mod jobs;
pub mod run;
pub mod runner;
pub mod store;
pub mod templates;
pub mod tools;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use sophia_kit::{Category, KitError, StartKind, WorkerConfig, WorkerHandle};
use tokio_util::sync::CancellationToken;

/// The default port for `/health`, `/ready` and `/metrics` (the seed's layout).
pub const DEFAULT_HTTP_PORT: u16 = 8090;

/// The agno-worker's settings, besides the kit's.
#[derive(Clone, Debug, clap::Args)]
pub struct AgnoArgs {
    /// The agent categories whose runs this replica serves (comma-separated).
    #[arg(
        long,
        env = "AGNO_CATEGORIES",
        value_delimiter = ',',
        default_value = "business_intelligence,infrastructure,code_generation"
    )]
    pub categories: Vec<Category>,
    /// A TOML file of agent templates, added to the built-in ones.
    #[arg(long, env = "SOPHIA_AGNO_TEMPLATES")]
    pub templates: Option<PathBuf>,
    /// How long agents and sessions live without being used, in seconds.
    #[arg(long, env = "SOPHIA_AGNO_SESSION_TTL_S", default_value_t = 86_400)]
    pub session_ttl_s: u64,
}

/// The command line of the `agno-worker` binary.
#[derive(Clone, Debug, clap::Parser)]
#[command(name = "agno-worker", version, about = "Sophia Mesh agent runtime")]
pub struct Cli {
    /// Mesh settings.
    #[command(flatten)]
    pub worker: WorkerConfig,
    /// Agent settings.
    #[command(flatten)]
    pub agno: AgnoArgs,
}

/// Starts the worker until `shutdown`.
pub async fn run(cli: Cli, shutdown: CancellationToken) -> Result<WorkerHandle, KitError> {
    let templates = match &cli.agno.templates {
        Some(path) => templates::Templates::load(path).map_err(|e| {
            KitError::start(
                StartKind::File,
                "load the agent templates (AGNO_TEMPLATES)",
                e,
            )
        })?,
        None => templates::Templates::builtin(),
    };
    if let Some(c) = cli
        .agno
        .categories
        .iter()
        .find(|c| !Category::AGENTS.contains(c))
    {
        return Err(KitError::Config {
            key: "AGNO_CATEGORIES",
            message: format!(
                "{c} is not an agent category (use business_intelligence, infrastructure, \
                 code_generation)"
            ),
        });
    }
    let conn = sophia_kit::nats::connect(&cli.worker.nats, "agno-worker-state").await?;
    conn.connected().await; // the store is on JetStream
    let instance = uuid::Uuid::new_v4().simple().to_string();
    let store = store::Store::open(
        conn.client.clone(),
        Duration::from_secs(cli.agno.session_ttl_s),
    )
    .await
    .map_err(|e| KitError::start(StartKind::Store, "open the agent store (JetStream KV)", e))?;
    let directory = directory::Directory::follow(conn.client.clone(), &instance)
        .await
        .map_err(|e| KitError::start(StartKind::Subscribe, "follow tool announcements", e))?;
    let ctx = tools::Ctx {
        templates,
        runner: runner::Runner { directory, store },
        categories: cli.agno.categories.clone(),
        instance,
    };
    tools::worker(Arc::new(ctx)).run(cli.worker, shutdown).await
}
