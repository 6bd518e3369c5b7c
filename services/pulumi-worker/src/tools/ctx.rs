//! What the tools share: the CLI driver, the workspace, the job store, the
//! plans bucket and the job metrics; and which project a call means.

use std::path::PathBuf;
use std::time::Duration;

use async_nats::jetstream::{self, object_store};
use parking_lot::Mutex;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use sophia_kit::{Call, WireError};

use super::name;
use crate::cli::{CliError, PulumiCli};
use crate::jobs::{JobState, JobStore};

/// The object store bucket holding previews' update plans.
pub const PLANS_BUCKET: &str = "sophia_pulumi_plans";

/// Pulumi job outcomes, for `/metrics`:
/// `sophia_pulumi_jobs_total{operation, outcome}`.
#[derive(Clone, Debug, Default)]
pub struct JobMetrics {
    jobs: Family<JobLabels, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct JobLabels {
    operation: String,
    outcome: String,
}

impl JobMetrics {
    /// Counts a finished job.
    pub(super) fn record(&self, operation: &str, state: JobState) {
        let outcome = match state {
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        };
        self.jobs
            .get_or_create(&JobLabels {
                operation: operation.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// Adds the counters to a worker's registry.
    pub(super) fn register(&self, registry: &mut Registry) {
        registry.register(
            "sophia_pulumi_jobs",
            "Pulumi jobs (up, destroy, refresh) finished on this replica, by outcome",
            self.jobs.clone(),
        )
    }
}

/// What the tools share.
pub struct Ctx {
    /// The CLI driver.
    pub cli: PulumiCli,
    /// The root holding the Pulumi projects (one directory each).
    pub workspace: PathBuf,
    /// Jobs and locks.
    pub jobs: JobStore,
    /// Previews' plans.
    pub plans: object_store::ObjectStore,
    /// How often a running job renews its lock and checks for a cancel.
    pub heartbeat: Duration,
    /// How long `pulumi_up` waits for its job before returning its id.
    pub wait: Duration,
    /// Job outcomes.
    pub metrics: JobMetrics,
    /// Why the Pulumi CLI cannot be used, as last checked (`None`: it can).
    cli_problem: Mutex<Option<String>>,
}

impl Ctx {
    /// The shared context; opens the plans bucket.
    pub async fn new(
        cli: PulumiCli,
        workspace: PathBuf,
        jobs: JobStore,
        client: async_nats::Client,
        heartbeat: Duration,
        wait: Duration,
    ) -> Result<Self, String> {
        let js = jetstream::new(client);
        let plans = match js.get_object_store(PLANS_BUCKET).await {
            Ok(s) => s,
            Err(_) => js
                .create_object_store(object_store::Config {
                    bucket: PLANS_BUCKET.into(),
                    description: Some("Pulumi update plans from previews".into()),
                    max_age: Duration::from_secs(24 * 3600),
                    num_replicas: sophia_proto::payload::replicas(&js.client()),
                    ..Default::default()
                })
                .await
                .map_err(|e| e.to_string())?,
        };
        Ok(Self {
            cli,
            workspace,
            jobs,
            plans,
            heartbeat,
            wait,
            metrics: JobMetrics::default(),
            cli_problem: Mutex::new(None),
        })
    }

    /// Checks that the Pulumi CLI runs (`pulumi version`), remembers the
    /// answer for [`Ctx::degraded`], and returns it.
    pub async fn check_cli(&self) -> Result<String, CliError> {
        let checked = self.cli.version().await;
        *self.cli_problem.lock() = checked.as_ref().err().map(ToString::to_string);
        checked
    }

    /// What this worker cannot do now: the CLI's problem, if the last
    /// check found one.
    pub fn degraded(&self) -> Vec<String> {
        self.cli_problem.lock().iter().cloned().collect()
    }

    /// `project` from the call, or the workspace's only project when the
    /// call names none (the seed's `{"stack", "operation"}` body has none).
    pub(super) fn project(&self, call: &Call) -> Result<String, WireError> {
        if call.args.get("project").is_some_and(|p| !p.is_null()) {
            return name(call, "project");
        }
        match self.projects().as_slice() {
            [only] => Ok(only.clone()),
            [] => Err(WireError::invalid_arguments(
                "the workspace has no Pulumi projects",
            )),
            many => Err(WireError::invalid_arguments(format!(
                "name a `project`: the workspace has {}",
                many.join(", ")
            ))),
        }
    }

    /// The project's directory, if it holds a Pulumi project.
    pub(super) fn project_dir(&self, project: &str) -> Result<PathBuf, WireError> {
        let dir = self.workspace.join(project);
        if dir.join("Pulumi.yaml").exists() || dir.join("Pulumi.yml").exists() {
            Ok(dir)
        } else {
            Err(WireError::invalid_arguments(format!(
                "no Pulumi project {project:?} in the workspace; call pulumi_list_stacks for the projects"
            )))
        }
    }

    /// The call's project and stack, and the project's directory.
    pub(super) fn target(&self, call: &Call) -> Result<(String, String, PathBuf), WireError> {
        let (project, stack) = (self.project(call)?, name(call, "stack")?);
        let dir = self.project_dir(&project)?;
        Ok((project, stack, dir))
    }

    /// The workspace's projects, by name.
    pub(super) fn projects(&self) -> Vec<String> {
        let mut out: Vec<String> = std::fs::read_dir(&self.workspace)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| {
                e.path().join("Pulumi.yaml").exists() || e.path().join("Pulumi.yml").exists()
            })
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        out.sort();
        out
    }
}
