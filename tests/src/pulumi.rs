//! A pulumi-worker with a workspace and backend of its own, driving the
//! stand-in `pulumi` (`src/bin/pulumi.rs`), which replays real engine logs.

use std::path::{Path, PathBuf};

use pulumi_worker::{Cli, PulumiArgs};
use serde_json::json;
use sophia_kit::WorkerHandle;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::Mesh;

/// A workspace with project `app` and a file backend, in a temporary directory.
pub struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    /// A workspace with project `app`, whose operations replay the recorded
    /// `up` log with `delay_ms` between events.
    pub fn new(delay_ms: u64) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("workspace/app")).unwrap();
        std::fs::create_dir_all(dir.path().join("backend")).unwrap();
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../services/pulumi-worker/tests/fixtures/not-truncated--up.json");
        let destroy = fixture.with_file_name("not-truncated--destroy-with-deep-hierarchy.json");
        let scenario = json!({"preview": fixture, "up": fixture, "refresh": fixture, "destroy": destroy, "delay_ms": delay_ms,
            "outputs": {"url": "http://example.test", "dbPassword": "hunter2"}, "secret_outputs": ["dbPassword"]});
        std::fs::write(
            dir.path().join("workspace/app/standin.json"),
            scenario.to_string(),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("workspace/app/Pulumi.yaml"),
            "name: app\nruntime: nodejs\n",
        )
        .unwrap();
        Self { dir }
    }

    /// Makes every `up`, `refresh` and `destroy` hold before its summary
    /// until cancelled, so that a test sees it running for as long as it
    /// needs (the stand-in waits for a file this never writes).
    pub fn hold(&self) {
        let path = self.dir.path().join("workspace/app/standin.json");
        let mut scenario: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        scenario["hold_file"] = json!(self.dir.path().join("release"));
        std::fs::write(&path, scenario.to_string()).unwrap();
    }

    /// Every command line the stand-in CLI was given.
    pub fn command_lines(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("backend/command-lines.log"))
            .unwrap_or_default()
    }

    /// The same settings as environment variables, for a pulumi-worker
    /// process (`passphrase` for `PULUMI_CONFIG_PASSPHRASE`).
    pub fn env(&self, binary: &str, passphrase: &str) -> Vec<(String, String)> {
        let args = self.args(binary, 30_000);
        [
            (
                "SOPHIA_PULUMI_WORKSPACE",
                args.workspace.display().to_string(),
            ),
            ("PULUMI_BINARY", binary.to_owned()),
            ("PULUMI_BACKEND_URL", args.backend_url.unwrap_or_default()),
            ("PULUMI_CONFIG_PASSPHRASE", passphrase.to_owned()),
            ("SOPHIA_PULUMI_WAIT_MS", args.wait_ms.to_string()),
        ]
        .map(|(k, v)| (k.to_owned(), v))
        .into()
    }

    /// The worker's settings, with `binary` as the CLI.
    pub fn args(&self, binary: &str, wait_ms: u64) -> PulumiArgs {
        PulumiArgs {
            workspace: self.dir.path().join("workspace"),
            binary: PathBuf::from(binary),
            backend_url: Some(format!(
                "file://{}",
                self.dir.path().join("backend").display()
            )),
            passphrase: Some("test".into()),
            stale_after_ms: 600,
            wait_ms,
        }
    }
}

/// A running replica; stops when dropped.
pub struct Replica {
    _handle: WorkerHandle,
    _stop: DropGuard,
}

/// Starts a replica with `args`.
pub async fn replica(mesh: &Mesh, args: PulumiArgs) -> Replica {
    let stop = CancellationToken::new();
    let handle = pulumi_worker::run(
        Cli {
            worker: mesh.worker_config_as("pulumi"),
            pulumi: args,
        },
        stop.clone(),
    )
    .await
    .expect("pulumi-worker starts");
    Replica {
        _handle: handle,
        _stop: stop.drop_guard(),
    }
}

impl Replica {
    /// Where its `/health`, `/ready` and `/metrics` are served.
    pub fn http_addr(&self) -> std::net::SocketAddr {
        self._handle.http_addr
    }
}
