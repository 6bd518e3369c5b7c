//! The mesh as `docker compose -f docker-compose.mcp.yml up` starts it, but
//! as processes on one host: every Sophia service of the compose file (its
//! `command` is one of the workspace's service binaries), with as many
//! replicas as it deploys, runs the real binary with only the compose file's
//! `environment`, rewritten the way one host differs from the compose
//! network:
//!
//! - `${VAR:?..}`, `${VAR:-default}` and the rest of compose's interpolation
//!   resolve from the test's stand-in for the shell (`ProcessMesh::start`): the NATS
//!   passwords of `ops/nats/nats.conf` that `nats::secured()` runs with, a
//!   random gateway token, the stand-in model provider;
//! - `nats://nats:4222` becomes the test's `nats-server`, which runs the
//!   project's own `ops/nats/nats.conf`, so the services log in as the same
//!   least-privilege users as under compose;
//! - `0.0.0.0:<port>` listen addresses become `127.0.0.1:<free port>`, and the
//!   compose health check (`curl http://127.0.0.1:<port>/ready`) probes the
//!   port that replaced `<port>`;
//! - URLs to compose services that are not Sophia's (Jaeger's OTLP
//!   endpoint, ...) point at a loopback port where nothing listens: the
//!   services must run while those are down, as under compose while they
//!   start or restart;
//! - container paths under a volume become directories of the test (the
//!   pulumi workspace volume holds a project the stand-in `pulumi` serves);
//! - and what the image has but this host does not: the pulumi-worker's CLI
//!   is the stand-in (`PULUMI_BINARY`).
//!
//! Services under a `profiles:` key (e.g. the GPU one) and third-party images
//! are not started. Needs the binaries built (`cargo build --workspace
//! --bins`, as `ops/scripts/test.sh` does). When something fails, every
//! process's log is printed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value as Json, json};
use sophia_tests::McpClient;
use sophia_tests::nats::{self, NatsServer};
use sophia_tests::openai::StandIn;
use sophia_tests::procs::{self, Process};
use sophia_tests::pulumi::Setup;
use sophia_tests::tools::{WAIT, call, text_of, wait_for_tool};
use yaml_serde::Value as Yaml;

/// The workspace's service binaries: a compose service running one of these
/// is a Sophia service.
const SOPHIA_BINARIES: [&str; 6] = [
    "sophia-gateway",
    "agno-worker",
    "pulumi-worker",
    "intelligence-worker",
    "gong-worker",
    "echo-worker",
];
const GATEWAY: &str = "sophia-gateway";
/// The model the stand-in provider lists at `/v1/models`.
const STANDIN_MODEL: &str = "standin-model";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

// ---------------------------------------------------------------------------
// The compose file

/// A compose service that runs one of our binaries.
#[derive(Debug)]
struct ComposeService {
    name: String,
    binary: String,
    args: Vec<String>,
    /// `KEY: value` (`None`: passed through from the shell, as compose does
    /// for a bare `KEY`).
    env: Vec<(String, Option<String>)>,
    replicas: u64,
    /// The URL of the compose health check, inside the container.
    healthcheck: Option<String>,
    /// `(source, container path)` of each volume.
    volumes: Vec<(String, String)>,
}

/// What the compose file has besides our services.
#[derive(Debug)]
struct ComposeFile {
    ours: Vec<ComposeService>,
    /// Every service's name (hosts on the compose network).
    hosts: BTreeSet<String>,
    /// The service running NATS.
    nats: String,
}

fn compose() -> ComposeFile {
    let text = std::fs::read_to_string(root().join("docker-compose.mcp.yml"))
        .expect("read docker-compose.mcp.yml");
    let mut c: Yaml = yaml_serde::from_str(&text).expect("docker-compose.mcp.yml is YAML");
    // Nested merges (environment: <<: *worker-env) need more than one pass.
    for _ in 0..4 {
        c.apply_merge().expect("merge keys resolve");
    }
    let services = c["services"].as_mapping().expect("compose services");
    let mut ours = Vec::new();
    let mut hosts = BTreeSet::new();
    let mut nats = None;
    for (name, svc) in services {
        let name = name.as_str().expect("service name").to_owned();
        hosts.insert(name.clone());
        if svc["image"]
            .as_str()
            .is_some_and(|i| i.starts_with("nats:"))
        {
            nats = Some(name.clone());
        }
        let command: Vec<String> = match &svc["command"] {
            Yaml::Sequence(s) => s.iter().map(scalar).collect(),
            Yaml::String(s) => s.split_whitespace().map(str::to_owned).collect(),
            _ => Vec::new(),
        };
        let Some(binary) = command
            .first()
            .filter(|b| SOPHIA_BINARIES.contains(&b.as_str()))
        else {
            continue; // a third-party image (NATS, Jaeger, Prometheus, ...)
        };
        if !matches!(svc["profiles"], Yaml::Null) {
            continue; // only with `--profile ...`, e.g. the GPU replicas
        }
        let env = match &svc["environment"] {
            Yaml::Mapping(m) => m
                .iter()
                .map(|(k, v)| {
                    let v = (!matches!(v, Yaml::Null)).then(|| scalar(v));
                    (scalar(k), v)
                })
                .collect(),
            Yaml::Sequence(s) => s
                .iter()
                .map(|kv| {
                    let kv = scalar(kv);
                    match kv.split_once('=') {
                        Some((k, v)) => (k.to_owned(), Some(v.to_owned())),
                        None => (kv, None),
                    }
                })
                .collect(),
            _ => Vec::new(),
        };
        let healthcheck = match &svc["healthcheck"]["test"] {
            Yaml::Sequence(s) => Some(s.iter().map(scalar).collect::<Vec<_>>().join(" ")),
            Yaml::String(s) => Some(s.clone()),
            _ => None,
        }
        .and_then(|test| {
            let re = regex_lite::Regex::new(r"https?://(127\.0\.0\.1|localhost):\d+/\S*").unwrap();
            re.find(&test).map(|m| m.as_str().to_owned())
        });
        let volumes = svc["volumes"]
            .as_sequence()
            .into_iter()
            .flatten()
            .map(|v| match v {
                Yaml::String(s) => {
                    let mut parts = s.splitn(3, ':');
                    let src = parts.next().unwrap_or_default().to_owned();
                    let dst = parts.next().unwrap_or_default().to_owned();
                    (src, dst)
                }
                long => (scalar(&long["source"]), scalar(&long["target"])),
            })
            .collect();
        ours.push(ComposeService {
            name,
            binary: binary.clone(),
            args: command[1..].to_vec(),
            env,
            replicas: svc["deploy"]["replicas"].as_u64().unwrap_or(1),
            healthcheck,
            volumes,
        });
    }
    ComposeFile {
        ours,
        hosts,
        nats: nats.expect("a NATS service (image nats:...) in the compose file"),
    }
}

/// A YAML scalar as compose reads it (numbers and booleans as text).
fn scalar(v: &Yaml) -> String {
    match v {
        Yaml::String(s) => s.clone(),
        Yaml::Number(n) => n.to_string(),
        Yaml::Bool(b) => b.to_string(),
        Yaml::Null => String::new(),
        other => panic!("expected a scalar in the compose file, found {other:?}"),
    }
}

// ---------------------------------------------------------------------------
// Compose's interpolation

/// Resolves `$$`, `$VAR`, `${VAR}`, `${VAR:-default}`, `${VAR-default}`,
/// `${VAR:?error}`, `${VAR?error}`, `${VAR:+alt}` and `${VAR+alt}` (the
/// compose specification's interpolation) from `shell`. A variable that is
/// required, or read without a default, and missing from `shell` fails the
/// test: compose would refuse to start, or warn and use an empty string.
fn interpolate(s: &str, shell: &BTreeMap<String, String>, at: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(r) = after.strip_prefix('$') {
            out.push('$');
            rest = r;
        } else if let Some(body) = after.strip_prefix('{') {
            let mut depth = 1;
            let end = body
                .char_indices()
                .find(|&(_, c)| {
                    depth += match c {
                        '{' => 1,
                        '}' => -1,
                        _ => 0,
                    };
                    depth == 0
                })
                .map(|(j, _)| j)
                .unwrap_or_else(|| panic!("{at}: unclosed `${{` in {s:?}"));
            out.push_str(&expand(&body[..end], shell, at));
            rest = &body[end + 1..];
        } else {
            let n = name_len(after);
            assert!(n > 0, "{at}: a lone `$` in {s:?} (compose wants `$$`)");
            out.push_str(&expand(&after[..n], shell, at));
            rest = &after[n..];
        }
    }
    out.push_str(rest);
    out
}

fn name_len(s: &str) -> usize {
    s.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len())
}

fn expand(body: &str, shell: &BTreeMap<String, String>, at: &str) -> String {
    let (name, op) = body.split_at(name_len(body));
    let value = shell.get(name);
    let non_empty = value.filter(|v| !v.is_empty());
    let arg = |skip: usize| interpolate(&op[skip..], shell, at);
    let missing = |why: &str| -> ! {
        panic!("{at}: compose needs ${name} ({why}), and the test's shell does not set it")
    };
    if op.is_empty() {
        return value.cloned().unwrap_or_else(|| missing("no default"));
    }
    if op.starts_with(":-") {
        non_empty.cloned().unwrap_or_else(|| arg(2))
    } else if op.starts_with('-') {
        value.cloned().unwrap_or_else(|| arg(1))
    } else if op.starts_with(":?") {
        non_empty.cloned().unwrap_or_else(|| missing(&op[2..]))
    } else if op.starts_with('?') {
        value.cloned().unwrap_or_else(|| missing(&op[1..]))
    } else if op.starts_with(":+") {
        non_empty.map(|_| arg(2)).unwrap_or_default()
    } else if op.starts_with('+') {
        value.map(|_| arg(1)).unwrap_or_default()
    } else {
        panic!("{at}: unsupported interpolation `${{{body}}}`")
    }
}

// ---------------------------------------------------------------------------
// One host in place of the compose network

/// What stands in for the compose network and volumes.
struct Host {
    /// The shell environment compose interpolates from.
    shell: BTreeMap<String, String>,
    nats_url: String,
    /// `127.0.0.1:<port>` where nothing listens: the compose services that
    /// are not run (Jaeger, ...).
    down: String,
    /// Holds `down`'s port.
    _down: sophia_tests::DeadPort,
    /// Named volumes and missing bind sources.
    volumes: tempfile::TempDir,
    /// The pulumi workspace with project `app`, and its backend.
    pulumi: Setup,
}

/// One replica of a compose service, configured for this host.
#[derive(Debug)]
struct Plan {
    service: String,
    binary: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    /// `http://127.0.0.1:<port>` of the service's health checks, once the
    /// process has reported the port it bound.
    base: String,
    /// The compose health check's path (e.g. `/ready`).
    health_path: String,
    /// What was changed from the compose file, for the log on failure.
    notes: Vec<String>,
}

impl Host {
    fn plan(&self, compose: &ComposeFile, svc: &ComposeService, replica: u64) -> Plan {
        let at = |key: &str| format!("{}.environment.{key}", svc.name);
        let mut ports: BTreeSet<u16> = BTreeSet::new();
        let mut notes = Vec::new();
        let mut env: Vec<(String, String)> = Vec::new();
        let url =
            regex_lite::Regex::new(r"([a-z][a-z0-9+.-]*)://([A-Za-z0-9_.-]+)(:[0-9]+)?").unwrap();
        let listen = regex_lite::Regex::new(r"^(0\.0\.0\.0|\[::\])?:([0-9]+)$").unwrap();
        for (key, value) in &svc.env {
            let value = match value {
                Some(v) => interpolate(v, &self.shell, &at(key)),
                None => match self.shell.get(key) {
                    Some(v) => v.clone(),
                    None => continue, // compose leaves it unset too
                },
            };
            // Listen addresses: port 0 on loopback; the process reports
            // the port it bound.
            if let Some(c) = listen.captures(&value) {
                ports.insert(c[2].parse().expect("a port"));
                notes.push(format!("{key}: {value} -> {}", procs::ANY_PORT));
                env.push((key.clone(), procs::ANY_PORT.into()));
                continue;
            }
            // URLs to hosts on the compose network.
            let mut rewritten = value.clone();
            for c in url.captures_iter(&value) {
                let host = &c[2];
                if host == compose.nats {
                    rewritten = rewritten.replace(&c[0], &self.nats_url);
                } else if host == "host.docker.internal" {
                    rewritten = rewritten.replace(&c[0], &c[0].replace(host, "127.0.0.1"));
                } else if compose.ours.iter().any(|s| s.name == host) {
                    panic!(
                        "{}: {value:?} refers to Sophia service {host}; teach tests/tests/processes.rs \
                         to point it at that service's process",
                        at(key)
                    );
                } else if compose.hosts.contains(host) {
                    // Jaeger, Prometheus, ...: not run here. The services
                    // must do without, as they do while those start or
                    // restart (nothing depends on them).
                    let down = format!("{}://{}", &c[1], self.down);
                    notes.push(format!("{key}: {value} -> {down} ({host} is not run)"));
                    rewritten = rewritten.replace(&c[0], &down);
                }
            }
            // Container paths: the directories standing in for the volumes.
            let path = rewritten
                .strip_prefix("file://")
                .unwrap_or(&rewritten)
                .to_owned();
            if path.starts_with('/') {
                let host_path = self.host_path(svc, &path, &at(key));
                let host_path = host_path.display().to_string();
                notes.push(format!("{key}: {path} -> {host_path}"));
                rewritten = rewritten.replace(&path, &host_path);
            }
            env.push((key.clone(), rewritten));
        }
        // What the image has and this host does not.
        if svc.binary == "pulumi-worker" {
            env.retain(|(k, _)| k != "PULUMI_BINARY");
            env.push(("PULUMI_BINARY".into(), env!("CARGO_BIN_EXE_pulumi").into()));
            notes.push("PULUMI_BINARY: the stand-in pulumi".into());
        }
        let healthcheck = svc.healthcheck.as_deref().unwrap_or_else(|| {
            panic!(
                "{} has no `curl http://127.0.0.1:<port>/...` health check",
                svc.name
            )
        });
        let re = regex_lite::Regex::new(r"^https?://[^:/]+:([0-9]+)(/\S*)$").unwrap();
        let c = re.captures(healthcheck).expect("a health check URL");
        let port: u16 = c[1].parse().unwrap();
        assert!(
            ports.contains(&port),
            "{}'s health check probes port {port}, which none of its listen addresses \
             ({ports:?}) serves",
            svc.name
        );
        Plan {
            service: format!("{}#{replica}", svc.name),
            binary: svc.binary.clone(),
            args: svc.args.clone(),
            health_path: c[2].to_owned(),
            base: String::new(),
            env,
            notes,
        }
    }

    /// The host directory for container path `path` of `svc`: under the
    /// volume mounted there.
    fn host_path(&self, svc: &ComposeService, path: &str, at: &str) -> PathBuf {
        let workspace = self.pulumi_workspace();
        let (src, dst) = svc
            .volumes
            .iter()
            .filter(|(_, dst)| path == dst || path.starts_with(&format!("{dst}/")))
            .max_by_key(|(_, dst)| dst.len())
            .unwrap_or_else(|| panic!("{at}: {path} is not on a volume of {}", svc.name));
        let mounted = if svc
            .env
            .iter()
            .any(|(k, v)| k == "SOPHIA_PULUMI_WORKSPACE" && v.as_deref() == Some(dst.as_str()))
        {
            workspace // the Pulumi projects: the stand-in's
        } else if src.starts_with('.') || src.starts_with('/') {
            let bind = root().join(src);
            if bind.exists() {
                bind
            } else {
                // Docker creates a missing bind source as a directory.
                self.volumes
                    .path()
                    .join("binds")
                    .join(src.replace('/', "_"))
            }
        } else {
            self.volumes.path().join(src) // a named volume
        };
        std::fs::create_dir_all(&mounted).expect("volume directory");
        match path[dst.len()..].trim_start_matches('/') {
            "" => mounted,
            rest => mounted.join(rest),
        }
    }

    fn pulumi_workspace(&self) -> PathBuf {
        self.pulumi.args("pulumi", 0).workspace
    }
}

// ---------------------------------------------------------------------------
// The mesh of processes

struct Running {
    plan: Plan,
    process: Process,
}

/// The compose file's Sophia services as processes, beside a secured
/// `nats-server` and a stand-in model provider. On a failing test, prints
/// every process's log.
struct ProcessMesh {
    running: Vec<Running>,
    token: String,
    standin: StandIn,
    nats: NatsServer,
    _host: Host,
}

impl ProcessMesh {
    async fn start() -> Self {
        sophia_tests::install_crypto();
        let compose = compose();
        let binaries: BTreeSet<&str> = compose.ours.iter().map(|s| s.binary.as_str()).collect();
        assert_eq!(
            binaries,
            SOPHIA_BINARIES.into_iter().collect(),
            "the compose file runs the whole mesh"
        );
        let nats = nats::secured();
        let standin = StandIn::start().await;
        let token = format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        let shell: BTreeMap<String, String> = [
            ("SOPHIA_GATEWAY_TOKEN", token.as_str()),
            ("SOPHIA_OLLAMA_URL", &standin.base_url),
            ("PULUMI_CONFIG_PASSPHRASE", "test-passphrase"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .chain(nats::passwords())
        .collect();
        let down = sophia_tests::DeadPort::new();
        let host = Host {
            shell,
            nats_url: nats.url(),
            down: down.addr().to_string(),
            _down: down,
            volumes: tempfile::tempdir().expect("volumes"),
            pulumi: Setup::new(0),
        };
        // The gateway first, as it hears the workers' announcements.
        let mut plans = Vec::new();
        for svc in &compose.ours {
            for replica in 1..=svc.replicas {
                plans.push(host.plan(&compose, svc, replica));
            }
        }
        plans.sort_by_key(|p| p.binary != GATEWAY);
        let mut mesh = ProcessMesh {
            running: Vec::new(),
            token,
            standin,
            nats,
            _host: host,
        };
        for plan in plans {
            let process = Process::spawn_with_args(&plan.binary, &plan.args, &plan.env);
            mesh.running.push(Running { plan, process });
        }
        for r in &mut mesh.running {
            r.plan.base = r.process.ready_at(&r.plan.health_path).await;
        }
        mesh
    }

    fn gateway(&self) -> &Plan {
        &self
            .running
            .iter()
            .find(|r| r.plan.binary == GATEWAY)
            .expect("a gateway")
            .plan
    }

    async fn client(&self) -> McpClient {
        sophia_tests::connect_http(&format!("{}/mcp", self.gateway().base), &self.token).await
    }

    /// Live replicas per worker service, as compose deploys them.
    fn expected_replicas(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for r in &self.running {
            if r.plan.binary != GATEWAY {
                *out.entry(r.plan.binary.clone()).or_default() += 1;
            }
        }
        out
    }

    /// Every process still runs, NATS saw no permission violations, and every
    /// process exits by itself on SIGINT (as on `docker compose stop`),
    /// workers first.
    fn stop_cleanly(mut self) {
        for r in &mut self.running {
            if let Some(status) = r.process.exited() {
                panic!("{} exited early ({status})", r.plan.service);
            }
        }
        let violations = self.nats.violations();
        assert!(
            violations.is_empty(),
            "the services stay within their NATS users' rights (ops/nats/nats.conf):\n{}",
            violations.join("\n")
        );
        let mut lingered = Vec::new();
        for r in self.running.iter_mut().rev() {
            let started = Instant::now();
            if !r.process.stop() {
                lingered.push(format!(
                    "{} (killed after {:?})",
                    r.plan.service,
                    started.elapsed()
                ));
            }
        }
        assert!(
            lingered.is_empty(),
            "every service exits on SIGINT within 10 s; these did not: {lingered:?}"
        );
    }
}

impl Drop for ProcessMesh {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let ansi = regex_lite::Regex::new("\x1b\\[[0-9;]*m").unwrap();
        for r in &self.running {
            let log = ansi.replace_all(&r.process.log(), "").into_owned();
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(120)..].join("\n");
            eprintln!(
                "===== {} ({} {:?}) at {}\n--- compose environment rewritten: {:#?}\n--- log:\n{tail}",
                r.plan.service, r.plan.binary, r.plan.args, r.plan.base, r.plan.notes
            );
        }
        let log = self.nats.log();
        let lines: Vec<&str> = log.lines().collect();
        eprintln!(
            "===== nats-server\n{}",
            lines[lines.len().saturating_sub(60)..].join("\n")
        );
    }
}

async fn get(url: &str) -> (u16, String, String) {
    let r = reqwest::get(url)
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = r.status().as_u16();
    let content_type = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    (status, content_type, r.text().await.unwrap_or_default())
}

/// Polls the gateway's `/health` until it lists `expected` replicas.
async fn wait_for_mesh_health(mesh: &ProcessMesh) -> Json {
    let url = format!("{}/health", mesh.gateway().base);
    let expected = json!(mesh.expected_replicas());
    let deadline = Instant::now() + WAIT;
    loop {
        let (status, _, body) = get(&url).await;
        let health: Json = serde_json::from_str(&body).unwrap_or(Json::Null);
        if status == 200 && health["replicas"] == expected {
            return health;
        }
        assert!(
            Instant::now() < deadline,
            "the gateway's /health lists {expected} as live replicas within {WAIT:?}; \
             last answer {status}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

// ---------------------------------------------------------------------------
// /metrics

/// One sample: `name{labels} value`.
#[derive(Clone, Debug, PartialEq)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses an OpenMetrics text exposition strictly: it must end in `# EOF`
/// and every line must be well-formed (openmetrics-parser's grammar, which
/// passes the OpenMetrics test suite).
fn parse_openmetrics(body: &str) -> Result<Vec<Sample>, String> {
    use openmetrics_parser::{OpenMetricsValue as V, openmetrics};
    if !body.ends_with("# EOF\n") && !body.ends_with("# EOF") {
        return Err("the exposition does not end with `# EOF`".into());
    }
    let exposition = openmetrics::parse_openmetrics(body).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for (family, metrics) in &exposition.families {
        for s in metrics.iter_samples() {
            let labels: BTreeMap<String, String> = s
                .get_labelset()
                .map_err(|e| e.to_string())?
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            let mut push = |suffix: &str, extra: Option<(&str, String)>, value: f64| {
                let mut labels = labels.clone();
                if let Some((k, v)) = extra {
                    labels.insert(k.to_owned(), v);
                }
                out.push(Sample {
                    name: format!("{family}{suffix}"),
                    labels,
                    value,
                });
            };
            match &s.value {
                V::Counter(c) => push("_total", None, c.value.as_f64()),
                V::Gauge(n) | V::Unknown(n) | V::StateSet(n) => push("", None, n.as_f64()),
                V::Histogram(h) | V::GaugeHistogram(h) => {
                    for b in &h.buckets {
                        let le = if b.upper_bound.is_infinite() {
                            "+Inf".to_owned()
                        } else {
                            b.upper_bound.to_string()
                        };
                        push("_bucket", Some(("le", le)), b.count.as_f64());
                    }
                    if let Some(sum) = h.sum {
                        push("_sum", None, sum.as_f64());
                    }
                    if let Some(count) = h.count {
                        push("_count", None, count as f64);
                    }
                }
                V::Summary(summary) => {
                    if let Some(sum) = summary.sum {
                        push("_sum", None, sum.as_f64());
                    }
                    if let Some(count) = summary.count {
                        push("_count", None, count as f64);
                    }
                }
                V::Info => push("_info", None, 1.0),
            }
        }
    }
    Ok(out)
}

/// The sum of the samples called `name` whose labels include `labels`.
fn sum(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
        .sum()
}

/// Every replica's `/metrics`, parsed, by service binary (replicas' samples
/// together).
async fn scrape(mesh: &ProcessMesh) -> BTreeMap<String, Vec<Sample>> {
    let mut out: BTreeMap<String, Vec<Sample>> = BTreeMap::new();
    for r in &mesh.running {
        let url = format!("{}/metrics", r.plan.base);
        let (status, content_type, body) = get(&url).await;
        assert_eq!(status, 200, "{url}: {body}");
        assert!(
            content_type.starts_with("application/openmetrics-text"),
            "{url} serves OpenMetrics, not {content_type:?}"
        );
        let samples = parse_openmetrics(&body)
            .unwrap_or_else(|e| panic!("{url} is not valid OpenMetrics: {e}\n{body}"));
        assert_eq!(
            sum(&samples, "sophia_nats_connected", &[]),
            1.0,
            "{} is connected to NATS, says {url}:\n{body}",
            r.plan.service
        );
        out.entry(r.plan.binary.clone())
            .or_default()
            .extend(samples);
    }
    out
}

// ---------------------------------------------------------------------------
// The tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compose_services_run_as_processes_and_answer_health_checks() {
    let mesh = ProcessMesh::start().await;
    // They came up cleanly: nothing panicked, nothing logged an error.
    let ansi = regex_lite::Regex::new("\x1b\\[[0-9;]*m").unwrap();
    let error = regex_lite::Regex::new(r"^\S+\s+ERROR\b").unwrap();
    for r in &mesh.running {
        let log = ansi.replace_all(&r.process.log(), "").into_owned();
        let lines: Vec<&str> = log.lines().collect();
        let mut bad: Vec<&str> = Vec::new();
        for (i, line) in lines.iter().enumerate() {
            if line.contains("panicked at") {
                // With the panic's message, on the next line.
                bad.extend(lines.get(i..=i + 1).unwrap_or(&lines[i..]).iter().copied());
            } else if error.is_match(line) {
                bad.push(*line);
            }
        }
        assert!(
            bad.is_empty(),
            "{} starts without panics or errors; it logged:\n{}",
            r.plan.service,
            bad.join("\n")
        );
    }
    for r in &mesh.running {
        for path in ["/health", "/ready"] {
            let url = format!("{}{path}", r.plan.base);
            let (status, _, body) = get(&url).await;
            assert_eq!(status, 200, "{} {url}: {body}", r.plan.service);
        }
    }
    let health = wait_for_mesh_health(&mesh).await;
    // All that is missing is what the shell does not give: Gong's
    // credentials (the model and the Pulumi CLI are there).
    assert_eq!(health["status"], "degraded", "{health}");
    assert_eq!(
        health["degraded"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["what"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["gong-worker"],
        "{health}"
    );
    assert!(
        health["degraded"][0]["problem"]
            .to_string()
            .contains("GONG_ACCESS_KEY"),
        "{health}"
    );
    assert_eq!(health["bus"], "connected", "{health}");
    // Every worker service's tools are on offer in their categories.
    for category in [
        "agents",
        "infrastructure",
        "inference",
        "code_generation",
        "business_intelligence",
    ] {
        assert!(
            health["categories"][category]["tools"].as_u64() > Some(0),
            "the gateway offers {category} tools: {health}"
        );
    }
    mesh.stop_cleanly();
}

/// A tool call through the gateway, the binary that serves it, and the
/// outcome the counters should record.
struct Check {
    tool: &'static str,
    args: Json,
    binary: &'static str,
    category: &'static str,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_services_metrics_parse_and_move_after_calls() {
    let mesh = ProcessMesh::start().await;
    wait_for_mesh_health(&mesh).await;
    let client = mesh.client().await;
    let checks = [
        Check {
            tool: "echo",
            args: json!({"text": "metrics"}),
            binary: "echo-worker",
            category: "code_generation",
        },
        Check {
            tool: "agno_list_agent_types",
            args: json!({}),
            binary: "agno-worker",
            category: "agents",
        },
        Check {
            tool: "pulumi_list_stacks",
            args: json!({}),
            binary: "pulumi-worker",
            category: "infrastructure",
        },
        Check {
            tool: "list_models",
            args: json!({}),
            binary: "intelligence-worker",
            category: "inference",
        },
        Check {
            tool: "model_chat",
            args: json!({"model": STANDIN_MODEL,
                "messages": [{"role": "user", "content": "count these four words"}]}),
            binary: "intelligence-worker",
            category: "inference",
        },
    ];
    for c in &checks {
        wait_for_tool(&client, c.tool).await;
    }
    let before = scrape(&mesh).await;

    let mut answers = BTreeMap::new();
    for c in &checks {
        let result = call(&client, c.tool, c.args.clone()).await;
        let text = text_of(&result);
        assert_ne!(result.is_error, Some(true), "{} answers: {text}", c.tool);
        answers.insert(c.tool, text);
    }
    assert_eq!(answers["echo"], "metrics");
    assert!(
        answers["list_models"].contains(STANDIN_MODEL),
        "the intelligence-worker serves the stand-in's model: {}",
        answers["list_models"]
    );
    assert!(
        answers["model_chat"].contains("echo: count these four words"),
        "the stand-in answered the chat: {}",
        answers["model_chat"]
    );
    let chats = mesh
        .standin
        .hits()
        .iter()
        .filter(|h| h.path == "/v1/chat/completions")
        .count();
    assert_eq!(chats, 1, "model_chat reached the provider once");
    client.cancel().await.ok();

    let after = scrape(&mesh).await;
    let moved = |binary: &str, name: &str, labels: &[(&str, &str)]| {
        sum(&after[binary], name, labels) - sum(&before[binary], name, labels)
    };
    for c in &checks {
        let times = 1.0;
        let ok = [
            ("tool", c.tool),
            ("category", c.category),
            ("outcome", "ok"),
        ];
        let tool = [("tool", c.tool), ("category", c.category)];
        assert_eq!(
            moved(GATEWAY, "sophia_gateway_tool_calls_total", &ok),
            times,
            "the gateway counted {} calls of {}",
            times,
            c.tool
        );
        assert_eq!(
            moved(
                GATEWAY,
                "sophia_gateway_tool_call_duration_seconds_count",
                &tool
            ),
            times,
            "the gateway timed the calls of {}",
            c.tool
        );
        assert_eq!(
            moved(c.binary, "sophia_worker_tool_calls_total", &ok),
            times,
            "{} counted the calls of {}",
            c.binary,
            c.tool
        );
        assert_eq!(
            moved(
                c.binary,
                "sophia_worker_tool_call_duration_seconds_count",
                &tool
            ),
            times,
            "{} timed the calls of {}",
            c.binary,
            c.tool
        );
        assert!(
            moved(
                c.binary,
                "sophia_worker_queue_wait_seconds_count",
                &[("category", c.category)]
            ) >= times,
            "{} measured the queue wait of {}",
            c.binary,
            c.tool
        );
    }
    // The gateway's view of the mesh: replicas per service (as many as the
    // compose file runs), tools per category.
    let expected = mesh.expected_replicas();
    assert_eq!(expected.len(), 5, "{expected:?}");
    for (service, replicas) in expected.iter().map(|(s, n)| (s.as_str(), *n as f64)) {
        assert_eq!(
            sum(
                &after[GATEWAY],
                "sophia_gateway_live_replicas",
                &[("service", service)]
            ),
            replicas,
            "live replicas of {service}"
        );
    }
    for category in ["agents", "infrastructure", "inference", "code_generation"] {
        assert!(
            sum(
                &after[GATEWAY],
                "sophia_gateway_live_tools",
                &[("category", category)]
            ) > 0.0,
            "live tools in {category}"
        );
    }
    // The chat, on whichever intelligence replica serves the model.
    let model = [("model", STANDIN_MODEL)];
    assert_eq!(
        moved(
            "intelligence-worker",
            "sophia_inference_requests_total",
            &[("model", STANDIN_MODEL), ("outcome", "ok")]
        ),
        1.0,
        "one inference request of {STANDIN_MODEL}"
    );
    for direction in ["input", "output"] {
        let tokens = moved(
            "intelligence-worker",
            "sophia_inference_tokens_total",
            &[model[0], ("direction", direction)],
        );
        assert!(tokens > 0.0, "{direction} tokens were counted: {tokens}");
    }
    // Nothing in flight once the calls are answered.
    for (binary, samples) in &after {
        for name in [
            "sophia_worker_tool_calls_in_flight",
            "sophia_gateway_tool_calls_in_flight",
        ] {
            assert_eq!(sum(samples, name, &[]), 0.0, "{binary}: {name}");
        }
    }
    mesh.stop_cleanly();
}

/// The parser above is a real one: it refuses what Prometheus would.
#[test]
fn the_metrics_parser_refuses_malformed_expositions() {
    let good = "# TYPE calls counter\ncalls_total{tool=\"echo\"} 3\n# TYPE up gauge\nup 1\n# EOF\n";
    let samples = parse_openmetrics(good).expect("a well-formed exposition");
    assert_eq!(sum(&samples, "calls_total", &[("tool", "echo")]), 3.0);
    assert_eq!(sum(&samples, "up", &[]), 1.0);
    for bad in [
        // No `# EOF`.
        "# TYPE up gauge\nup 1\n",
        // Text after it.
        "# TYPE up gauge\nup 1\n# EOF\nup 2\n",
        // An unclosed label set.
        "# TYPE up gauge\nup{a=\"b\" 1\n# EOF\n",
        // A value that is not a number.
        "# TYPE up gauge\nup one\n# EOF\n",
        // A line that is no sample at all.
        "# TYPE up gauge\nup 1\nthis is not a sample\n# EOF\n",
        // A blank line.
        "# TYPE up gauge\n\nup 1\n# EOF\n",
    ] {
        assert!(
            parse_openmetrics(bad).is_err(),
            "refuses {bad:?}, parsed as {:?}",
            parse_openmetrics(bad)
        );
    }
}

/// The interpolation above follows the compose specification.
#[test]
fn compose_interpolation_follows_the_specification() {
    let shell: BTreeMap<String, String> = [("SET", "v"), ("EMPTY", "")]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let i = |s: &str| interpolate(s, &shell, "test");
    assert_eq!(i("a-${SET}-$SET-$$SET"), "a-v-v-$SET");
    assert_eq!(i("${SET:?must}"), "v");
    assert_eq!(i("${UNSET:-d}|${EMPTY:-d}|${EMPTY-d}|${UNSET-d}"), "d|d||d");
    assert_eq!(i("${UNSET:-${SET}/x}"), "v/x");
    assert_eq!(
        i("${SET:+alt}|${EMPTY:+alt}|${EMPTY+alt}|${UNSET+alt}"),
        "alt||alt|"
    );
    for required in [
        "${UNSET:?set it}",
        "${EMPTY:?set it}",
        "${UNSET?set it}",
        "${UNSET}",
    ] {
        let r = std::panic::catch_unwind(|| i(required));
        assert!(r.is_err(), "{required} needs a value");
    }
}
