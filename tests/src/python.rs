//! The official MCP Python SDK (PyPI `mcp`, pinned in
//! `ops/python-sdk/requirements.txt`) as a client of the gateway: a venv
//! made by `ops/scripts/install-python-sdk.sh`, driven through
//! `tests/python/mcp_probe.py`, which prints one JSON object per run.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

/// How long one probe may take (15,000 tools are a few hundred pages).
const PROBE_TIMEOUT: Duration = Duration::from_secs(120);

/// The Python of a venv holding the pinned SDK.
pub struct PythonSdk {
    python: PathBuf,
}

impl PythonSdk {
    /// The venv under `SOPHIA_PYTHON_SDK` (set by `ops/scripts/test.sh`),
    /// else where the install script puts it:
    /// `.sophia/python-sdk/<the mcp version the lock file pins>`.
    pub fn find() -> PythonSdk {
        let venv = std::env::var_os("SOPHIA_PYTHON_SDK")
            .map(PathBuf::from)
            .unwrap_or_else(|| repo().join(".sophia/python-sdk").join(pinned_version()));
        let python = venv.join("bin/python");
        assert!(
            python.exists(),
            "the MCP Python SDK is not installed at {}: run \
             ./ops/scripts/install-python-sdk.sh (./ops/scripts/test.sh does)",
            venv.display()
        );
        PythonSdk { python }
    }

    /// Runs `mcp_probe.py <url> <token> <args...>` (`list-tools`, or
    /// `call <tool> <arguments JSON>`); the JSON it prints. A failure the
    /// SDK raised comes back as `{"error": "<type>: <message>"}` (the exit
    /// status is checked: 2 then, else 0).
    pub async fn probe(&self, url: &str, token: &str, args: &[&str]) -> serde_json::Value {
        let run = tokio::process::Command::new(&self.python)
            .arg(repo().join("tests/python/mcp_probe.py"))
            .args([url, token])
            .args(args)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output();
        let out = tokio::time::timeout(PROBE_TIMEOUT, run)
            .await
            .unwrap_or_else(|_| panic!("mcp_probe.py {args:?} finishes within {PROBE_TIMEOUT:?}"))
            .expect("mcp_probe.py runs");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let json: serde_json::Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
            panic!(
                "mcp_probe.py {args:?} printed no JSON ({e}; {}):\n{stdout}\n{stderr}",
                out.status
            )
        });
        let expected = if json.get("error").is_some() { 2 } else { 0 };
        assert_eq!(
            out.status.code(),
            Some(expected),
            "mcp_probe.py {args:?}: {stdout}\n{stderr}"
        );
        json
    }
}

impl PythonSdk {
    /// Starts `mcp_probe.py <url> <token> <args...>` for a probe that
    /// prints a JSON line per step (`modern`); read them with
    /// [`ProbeLines::next`].
    pub fn spawn(&self, url: &str, token: &str, args: &[&str]) -> ProbeLines {
        let mut child = tokio::process::Command::new(&self.python)
            .arg(repo().join("tests/python/mcp_probe.py"))
            .args([url, token])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("mcp_probe.py starts");
        let stdout = child.stdout.take().expect("its stdout");
        ProbeLines {
            _child: child,
            lines: tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdout)),
        }
    }
}

/// A running probe's JSON lines.
pub struct ProbeLines {
    _child: tokio::process::Child,
    lines: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
}

impl ProbeLines {
    /// The next line, as JSON; panics if the probe ends or takes longer
    /// than a probe may.
    pub async fn next(&mut self) -> serde_json::Value {
        let line = tokio::time::timeout(PROBE_TIMEOUT, self.lines.next_line())
            .await
            .unwrap_or_else(|_| {
                panic!("mcp_probe.py prints its next line within {PROBE_TIMEOUT:?}")
            })
            .expect("read mcp_probe.py's output")
            .expect("mcp_probe.py printed another line before it ended");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
    }
}

/// The repository's root.
fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The `mcp==<version>` line of the lock file.
fn pinned_version() -> String {
    let lock = repo().join("ops/python-sdk/requirements.txt");
    let text =
        std::fs::read_to_string(&lock).unwrap_or_else(|e| panic!("read {}: {e}", lock.display()));
    text.lines()
        .find_map(|l| l.trim().strip_prefix("mcp=="))
        .unwrap_or_else(|| panic!("{} pins no mcp==<version>", lock.display()))
        .to_owned()
}
