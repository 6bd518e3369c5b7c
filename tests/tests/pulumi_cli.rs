//! The pulumi-worker's CLI driver against the stand-in `pulumi`
//! (`tests/src/bin/pulumi.rs`), which replays engine event logs recorded from
//! the real CLI: create-or-select, preview with a saved plan then up with it,
//! progress as it happens, locked stacks, cancellation, a malformed event
//! line, secrets, and a missing CLI.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pulumi_worker::cli::{CliConfig, CliError, Operation, PulumiCli};
use serde_json::json;
use tokio_util::sync::CancellationToken;

struct Project {
    dir: tempfile::TempDir,
    cli: PulumiCli,
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../services/pulumi-worker/tests/fixtures")
        .join(name)
}

impl Project {
    /// A project whose preview and up replay `fixture` with `delay_ms` between events.
    fn new(fixture_name: &str, delay_ms: u64, extra: serde_json::Value) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("backend")).unwrap();
        std::fs::create_dir(dir.path().join("app")).unwrap();
        let mut scenario = json!({
            "preview": fixture(fixture_name), "up": fixture(fixture_name), "delay_ms": delay_ms,
            "outputs": {"url": "http://example.test", "dbPassword": "hunter2"},
            "secret_outputs": ["dbPassword"],
        });
        for (k, v) in extra.as_object().unwrap() {
            scenario[k] = v.clone();
        }
        std::fs::write(dir.path().join("app/standin.json"), scenario.to_string()).unwrap();
        std::fs::write(
            dir.path().join("app/Pulumi.yaml"),
            "name: app\nruntime: nodejs\n",
        )
        .unwrap();
        let cli = PulumiCli::new(CliConfig {
            binary: PathBuf::from(env!("CARGO_BIN_EXE_pulumi")),
            backend_url: Some(format!("file://{}", dir.path().join("backend").display())),
            passphrase: Some("test-passphrase".into()),
        });
        Self { dir, cli }
    }

    fn app(&self) -> PathBuf {
        self.dir.path().join("app")
    }

    /// Creates-or-selects `dev` and previews it, saving the plan.
    async fn select_and_preview(&self) -> pulumi_worker::events::Summary {
        self.cli.select_or_create(&self.app(), "dev").await.unwrap();
        let op = Operation::Preview {
            save_plan: self.plan(),
        };
        self.run(op, &CancellationToken::new()).await.0.unwrap()
    }

    fn plan(&self) -> PathBuf {
        self.dir.path().join("plan.json")
    }

    async fn run(
        &self,
        op: Operation,
        cancel: &CancellationToken,
    ) -> (
        Result<pulumi_worker::events::Summary, CliError>,
        Vec<String>,
    ) {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        let r = self
            .cli
            .operation(
                &self.app(),
                "dev",
                &op,
                move |e| {
                    if let Some(l) = e.describe() {
                        sink.lock().unwrap().push(l);
                    }
                },
                cancel,
            )
            .await;
        let lines = lines.lock().unwrap().clone();
        (r, lines)
    }
}

#[tokio::test]
async fn preview_saves_a_plan_and_up_applies_it_with_progress() {
    let p = Project::new("not-truncated--up.json", 1, json!({}));
    p.cli.select_or_create(&p.app(), "dev").await.unwrap();
    let stacks = p.cli.stacks(&p.app()).await.unwrap();
    assert_eq!(stacks.len(), 1);
    assert!(stacks[0].current && stacks[0].name == "dev");
    // Selecting again finds it rather than creating it twice.
    p.cli.select_or_create(&p.app(), "dev").await.unwrap();

    let never = CancellationToken::new();
    let (preview, _) = p
        .run(
            Operation::Preview {
                save_plan: p.plan(),
            },
            &never,
        )
        .await;
    assert!(preview.unwrap().succeeded());
    assert!(p.plan().exists(), "the preview saved an update plan");

    let (up, lines) = p
        .run(
            Operation::Up {
                plan: p.plan(),
                message: None,
            },
            &never,
        )
        .await;
    let summary = up.unwrap();
    assert_eq!(summary.resource_changes.get("create"), Some(&1));
    assert_eq!(lines.last().unwrap(), "done in 609s: 1 create, 5 same");
    assert!(lines[0].starts_with("creating "), "{lines:?}");

    let masked = p.cli.outputs(&p.app(), "dev", false).await.unwrap();
    assert_eq!(
        masked,
        json!({"url": "http://example.test", "dbPassword": "[secret]"})
    );
    let clear = p.cli.outputs(&p.app(), "dev", true).await.unwrap();
    assert_eq!(clear["dbPassword"], "hunter2");
}

#[tokio::test]
async fn a_second_update_on_a_locked_stack_is_told_exactly_that() {
    let p = Arc::new(Project::new("not-truncated--up.json", 60, json!({})));
    p.select_and_preview().await;
    let never = CancellationToken::new();
    let first = {
        let p = p.clone();
        tokio::spawn(async move {
            p.run(
                Operation::Up {
                    plan: p.plan(),
                    message: None,
                },
                &CancellationToken::new(),
            )
            .await
            .0
        })
    };
    sophia_tests::eventually(
        "the first update holds the lock",
        Duration::from_secs(10),
        || async {
            let stacks = p.cli.stacks(&p.app()).await.ok()?;
            stacks[0].update_in_progress.then_some(())
        },
    )
    .await;
    let (second, _) = p
        .run(
            Operation::Up {
                plan: p.plan(),
                message: None,
            },
            &never,
        )
        .await;
    match second {
        Err(CliError::Locked { stack, message }) => {
            assert_eq!(stack, "dev");
            assert!(
                message.contains("the stack is currently locked"),
                "{message}"
            );
        }
        other => panic!("expected Locked, got {other:?}"),
    }
    assert!(
        first.await.unwrap().unwrap().succeeded(),
        "the first update finished"
    );
}

#[tokio::test]
async fn cancelling_an_update_interrupts_the_cli_and_releases_the_stack() {
    let p = Project::new("not-truncated--up.json", 100, json!({}));
    p.select_and_preview().await;
    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(250)).await;
        trigger.cancel();
    });
    let (r, _) = p
        .run(
            Operation::Up {
                plan: p.plan(),
                message: None,
            },
            &cancel,
        )
        .await;
    match r {
        Err(CliError::Cancelled { summary }) => {
            assert!(summary.complete, "the log ended with its cancel event");
            assert!(
                summary.resource_changes.is_empty(),
                "the engine never reached its summary"
            );
        }
        other => panic!("expected Cancelled, got {other:?}"),
    }
    let stacks = p.cli.stacks(&p.app()).await.unwrap();
    assert!(!stacks[0].update_in_progress, "the lock was released");
}

#[tokio::test]
async fn a_malformed_event_line_is_counted_and_the_operation_still_reads() {
    let p = Project::new("not-truncated--up.json", 1, json!({"malformed_line": 3}));
    p.cli.select_or_create(&p.app(), "dev").await.unwrap();
    let (r, _) = p
        .run(
            Operation::Preview {
                save_plan: p.plan(),
            },
            &CancellationToken::new(),
        )
        .await;
    let summary = r.unwrap();
    assert_eq!(summary.malformed, 1);
    assert_eq!(summary.resource_changes.get("same"), Some(&5));
}

#[tokio::test]
async fn a_missing_cli_is_a_clear_error() {
    let cli = PulumiCli::new(CliConfig {
        binary: PathBuf::from("/nonexistent/pulumi"),
        backend_url: None,
        passphrase: None,
    });
    let err = cli.version().await.unwrap_err();
    assert!(matches!(err, CliError::NotInstalled { .. }), "{err}");
    assert!(err.to_string().contains("PULUMI_BINARY"), "{err}");
    assert_eq!(
        PulumiCli::new(CliConfig {
            binary: PathBuf::from(env!("CARGO_BIN_EXE_pulumi")),
            backend_url: None,
            passphrase: None,
        })
        .version()
        .await
        .unwrap(),
        "v3.200.0-standin"
    );
}

#[tokio::test]
async fn an_unknown_stack_is_reported_as_such() {
    let p = Project::new("not-truncated--up.json", 1, json!({}));
    let err = p.cli.outputs(&p.app(), "prod", false).await.unwrap_err();
    assert!(
        matches!(&err, CliError::StackNotFound { stack } if stack == "prod"),
        "{err}"
    );
    let (r, _) = p
        .run(
            Operation::Preview {
                save_plan: p.plan(),
            },
            &CancellationToken::new(),
        )
        .await;
    assert!(matches!(r, Err(CliError::StackNotFound { .. })), "{r:?}");
}
