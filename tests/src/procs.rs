//! The mesh's services as processes, the way `docker compose` or `up.sh`
//! runs them: the real binaries, configured only by their environment.
//!
//! The binaries are the workspace's own `target/<profile>/<name>`, which
//! `ops/scripts/test.sh` builds (`cargo build --workspace --bins`) before it
//! runs the tests. Each process logs to a file, shown when it fails to come
//! up, and is stopped with SIGINT on drop (so it drains and flushes its
//! spans) and killed if it lingers.
//!
//! Processes listen on port 0 (`SOPHIA_HTTP_ADDR=127.0.0.1:0`) and report the
//! address they bound in the file `SOPHIA_ADDR_FILE` names, which
//! [`Process::http_addr`] reads: no test picks a port and hands it on.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The path of workspace binary `name`, next to the running test's own
/// directory (`target/<profile>/deps/..`).
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps");
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} is missing: build the binaries first with `cargo build --workspace --bins` \
         (ops/scripts/test.sh does)",
        path.display()
    );
    path
}

/// The listen address for a process that reports where it bound.
pub const ANY_PORT: &str = "127.0.0.1:0";

/// A running service process; stopped when dropped.
pub struct Process {
    name: String,
    child: Option<Child>,
    log: tempfile::NamedTempFile,
    /// Holds the file the process writes its bound HTTP address to.
    addr_dir: tempfile::TempDir,
}

impl Process {
    /// Starts binary `name` with only `envs` (plus `PATH` and `HOME`) in its
    /// environment, as a container would have.
    pub fn spawn(name: &str, envs: &[(String, String)]) -> Self {
        Self::spawn_with_args(name, &[], envs)
    }

    /// [`Process::spawn`] with command-line arguments (a compose `command`
    /// after the binary's name).
    pub fn spawn_with_args(name: &str, args: &[String], envs: &[(String, String)]) -> Self {
        let log = tempfile::NamedTempFile::new().expect("log file");
        let addr_dir = tempfile::tempdir().expect("address directory");
        let mut cmd = Command::new(binary(name));
        cmd.args(args);
        cmd.env_clear();
        for keep in ["PATH", "HOME"] {
            if let Some(v) = std::env::var_os(keep) {
                cmd.env(keep, v);
            }
        }
        let child = cmd
            .env("SOPHIA_ADDR_FILE", addr_dir.path().join("addr"))
            .envs(envs.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.reopen().expect("log file"))
            .stderr(log.reopen().expect("log file"))
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        Self {
            name: name.to_owned(),
            child: Some(child),
            log,
            addr_dir,
        }
    }

    /// The process id (while it runs).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Sends `signal` (e.g. `KILL`, `STOP`, `CONT`) to the process, as a
    /// crash, a freeze or an operator would.
    pub fn signal(&self, signal: &str) {
        if let Some(pid) = self.pid() {
            let _ = Command::new("kill")
                .args([format!("-{signal}"), pid.to_string()])
                .status();
        }
    }

    /// The binary's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How the process ended, if it has (`None` while it runs).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// What the process has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    /// The HTTP address the process bound, once it reports it. Panics with
    /// the process's log if it exits or does not report within 30 s.
    pub async fn http_addr(&mut self) -> std::net::SocketAddr {
        let file = self.addr_dir.path().join("addr");
        for _ in 0..600 {
            if let Ok(text) = std::fs::read_to_string(&file)
                && let Ok(addr) = text.trim().parse()
            {
                return addr;
            }
            self.assert_running();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "{} did not report its HTTP address in 30 s:\n{}",
            self.name,
            self.log()
        );
    }

    /// Waits until the process answers 200 on `path` (e.g. `/ready`) at the
    /// address it bound, and returns its base URL (`http://127.0.0.1:<port>`).
    pub async fn ready_at(&mut self, path: &str) -> String {
        let base = format!("http://{}", self.http_addr().await);
        self.wait_ready(&format!("{base}{path}")).await;
        base
    }

    fn assert_running(&mut self) {
        if let Some(child) = self.child.as_mut()
            && let Ok(Some(status)) = child.try_wait()
        {
            panic!("{} exited ({status}):\n{}", self.name, self.log());
        }
    }

    /// Waits until `url` answers 200 (e.g. the service's `/ready`). Panics
    /// with the process's log if it exits or does not get there in time.
    pub async fn wait_ready(&mut self, url: &str) {
        crate::install_crypto();
        let http = reqwest::Client::new();
        for _ in 0..300 {
            self.assert_running();
            if let Ok(r) = http.get(url).send().await
                && r.status().is_success()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "{} did not answer {url} in 30 s:\n{}",
            self.name,
            self.log()
        );
    }

    /// Stops the process with SIGINT, as Ctrl-C or `docker stop` would, and
    /// waits up to 10 s for it to exit (then kills it). Returns whether it
    /// exited on its own.
    pub fn stop(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        let _ = Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status();
        for _ in 0..100 {
            if let Ok(Some(_)) = child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.stop();
    }
}
