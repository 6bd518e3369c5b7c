//! Static checks of `docker-compose.mcp.yml`, the Dockerfile, the NATS
//! configuration, the Prometheus rules, the Grafana dashboard and the
//! Kubernetes manifests against the code: no Docker engine or cluster runs in
//! CI, so these catch the drift a `docker compose up` (or a dashboard full of
//! empty panels) would otherwise find first. The tools' own checks of the
//! same files (compose schema, hadolint, promtool, Kubernetes schemas) are in
//! `ops/scripts/check-ops.sh`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use yaml_serde::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"))
}

fn compose() -> Value {
    let mut v: Value =
        yaml_serde::from_str(&read("docker-compose.mcp.yml")).expect("compose file is YAML");
    v.apply_merge().expect("merge keys resolve");
    // Nested merges (environment: <<: *worker-env) need a second pass.
    v.apply_merge().expect("merge keys resolve");
    v
}

fn services(c: &Value) -> BTreeMap<String, Value> {
    c["services"]
        .as_mapping()
        .expect("services")
        .iter()
        .map(|(k, v)| (k.as_str().unwrap().to_owned(), v.clone()))
        .collect()
}

/// The compose services built from our Dockerfile (image `sophia-*`): the
/// gateway and the workers. The others are third-party images (NATS, Jaeger,
/// Prometheus, Grafana, vLLM, ...).
fn sophia_services(c: &Value) -> BTreeMap<String, Value> {
    services(c)
        .into_iter()
        .filter(|(_, svc)| {
            svc["image"]
                .as_str()
                .is_some_and(|i| i.starts_with("sophia-"))
        })
        .collect()
}

/// The port of a Sophia service's HTTP listener (`/health`, `/ready`,
/// `/metrics`), from its environment.
fn http_port(env: &BTreeMap<String, String>) -> Option<u16> {
    env.get("SOPHIA_GATEWAY_ADDR")
        .or_else(|| env.get("SOPHIA_HTTP_ADDR"))
        .and_then(|addr| addr.rsplit_once(':'))
        .and_then(|(_, port)| port.parse().ok())
}

fn yaml_file(rel: &str) -> Value {
    yaml_serde::from_str(&read(rel)).unwrap_or_else(|e| panic!("{rel} is YAML: {e}"))
}

/// Every document of a YAML file (Kubernetes manifests may hold several).
fn yaml_docs(path: &Path) -> Vec<Value> {
    use serde::Deserialize;
    let text = std::fs::read_to_string(path).unwrap();
    yaml_serde::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).unwrap_or_else(|e| panic!("{path:?}: {e}")))
        .filter(|v| !v.is_null())
        .collect()
}

fn files_under(rel: &str, ext: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root().join(rel)];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{dir:?}: {e}")) {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == ext) {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

fn env_of(service: &Value) -> BTreeMap<String, String> {
    service["environment"]
        .as_mapping()
        .map(|m| {
            m.iter()
                .map(|(k, v)| {
                    (
                        k.as_str().unwrap().to_owned(),
                        v.as_str().unwrap_or("").to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Every `env = "NAME"` a service's configuration reads.
fn config_env_keys() -> BTreeSet<String> {
    let re = regex_lite::Regex::new(r#"env = "([A-Z0-9_]+)""#).unwrap();
    let mut keys = BTreeSet::new();
    let mut stack = vec![root().join("services")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                keys.extend(re.captures_iter(&text).map(|c| c[1].to_owned()));
            }
        }
    }
    keys
}

/// The binaries the Dockerfile builds.
fn dockerfile_bins() -> BTreeSet<String> {
    let re = regex_lite::Regex::new(r"--bin ([a-z-]+)").unwrap();
    re.captures_iter(&read("ops/docker/Dockerfile"))
        .map(|c| c[1].to_owned())
        .collect()
}

fn workspace_bins() -> BTreeSet<String> {
    let out = std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args([
            "metadata",
            "--no-deps",
            "--format-version",
            "1",
            "--offline",
        ])
        .current_dir(root())
        .output()
        .expect("cargo metadata runs");
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).expect("cargo metadata JSON");
    meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap().iter())
        .filter(|t| t["kind"][0] == "bin")
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn compose_runs_the_whole_mesh_on_the_seed_ports() {
    let s = services(&compose());
    for name in [
        "nats",
        "gateway",
        "agno-worker",
        "pulumi-worker",
        "intelligence-worker",
    ] {
        assert!(
            s.contains_key(name),
            "service {name} is in the compose file"
        );
    }
    let ports = [
        ("gateway", "SOPHIA_GATEWAY_ADDR", 8000),
        ("agno-worker", "SOPHIA_HTTP_ADDR", 8090),
        ("pulumi-worker", "SOPHIA_HTTP_ADDR", 8091),
        ("intelligence-worker", "SOPHIA_HTTP_ADDR", 8092),
    ];
    for (name, key, port) in ports {
        let env = env_of(&s[name]);
        assert_eq!(
            env.get(key).map(String::as_str),
            Some(format!("0.0.0.0:{port}").as_str()),
            "{name}"
        );
        let health = format!("{:?}", s[name]["healthcheck"]["test"]);
        assert!(
            health.contains(&format!("127.0.0.1:{port}/ready")),
            "{name} health checks its own /ready"
        );
    }
    // Only loopback on the host: the gateway is reached through its token, NATS not at all from outside.
    // Every service's seed port is published, on loopback only, so the
    // seed's `curl 127.0.0.1:<port>/health` works from the host.
    let published = |name: &str, shell: &BTreeMap<String, String>| -> Vec<String> {
        s[name]["ports"]
            .as_sequence()
            .unwrap_or_else(|| panic!("{name} publishes ports"))
            .iter()
            .map(|p| interpolate(p.as_str().expect("short port syntax"), shell))
            .collect()
    };
    let no_shell = BTreeMap::new();
    for (name, _, port) in [("gateway", "", 8000)].into_iter().chain(ports) {
        let by_default = published(name, &no_shell);
        assert!(
            by_default.contains(&format!("127.0.0.1:{port}:{port}")),
            "{name} publishes {port} on loopback: {by_default:?}"
        );
        assert!(
            by_default.iter().all(|p| p.starts_with("127.0.0.1:")),
            "{name} publishes on loopback only: {by_default:?}"
        );
    }
    // A fixed host port belongs to one container. Each worker's host port
    // is a variable whose default is the seed's port; set to nothing, every
    // replica of `--scale` gets a free loopback port of its own.
    for (name, _, port) in ports.into_iter().filter(|(n, _, _)| *n != "gateway") {
        let spec = format!("{:?}", s[name]["ports"]);
        let var = regex_lite::Regex::new(r"\$\{([A-Z_]+)-[0-9]+\}")
            .unwrap()
            .captures(&spec)
            .unwrap_or_else(|| panic!("{name}'s host port is a ${{VAR-{port}}}: {spec}"))[1]
            .to_owned();
        let scaled = published(name, &BTreeMap::from([(var.clone(), String::new())]));
        assert_eq!(
            scaled,
            [format!("127.0.0.1::{port}")],
            "{name} with {var} set to nothing publishes a free port per replica"
        );
        let operations = read("docs/operations.md");
        assert!(
            operations.contains(&var),
            "docs/operations.md explains {var}"
        );
    }
}

/// Compose's interpolation of `${VAR}`, `${VAR:-default}` and
/// `${VAR-default}` from `shell` (`tests/tests/processes.rs` has the whole
/// specification; this is what the port and URL checks here need).
fn interpolate(text: &str, shell: &BTreeMap<String, String>) -> String {
    let re = regex_lite::Regex::new(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?-)([^}]*))?\}").unwrap();
    re.replace_all(text, |c: &regex_lite::Captures| {
        let value = shell.get(&c[1]);
        match c.get(2).map(|m| m.as_str()) {
            Some(":-") => value
                .filter(|v| !v.is_empty())
                .cloned()
                .unwrap_or_else(|| c[3].to_owned()),
            Some(_) => value.cloned().unwrap_or_else(|| c[3].to_owned()),
            None => value.cloned().unwrap_or_default(),
        }
    })
    .into_owned()
}

#[test]
fn every_service_command_is_a_binary_the_image_builds() {
    let image_bins = dockerfile_bins();
    let workspace = workspace_bins();
    assert!(
        image_bins.is_subset(&workspace),
        "Dockerfile builds {image_bins:?}; workspace has {workspace:?}"
    );
    for (name, svc) in services(&compose()) {
        let image = svc["image"].as_str().unwrap_or_default();
        if !image.starts_with("sophia-") {
            // Third-party images: pinned, and none of them runs our binaries.
            assert!(
                image.contains(':') && !image.ends_with(":latest") && svc["build"].is_null(),
                "{name}: a third-party image is pinned to a version: {image}"
            );
            let first = svc["command"][0].as_str().unwrap_or_default();
            assert!(
                !workspace.contains(first),
                "{name} runs {first} on the third-party image {image}"
            );
            continue;
        }
        let image = if name == "pulumi-worker" {
            "sophia-pulumi-worker:dev"
        } else if name.starts_with("mcp-bridge") {
            "sophia-mcp-bridge:dev"
        } else {
            "sophia-mesh:dev"
        };
        assert_eq!(svc["image"].as_str(), Some(image), "{name}");
        let bin = svc["command"][0].as_str().unwrap();
        assert!(
            image_bins.contains(bin),
            "{name} runs {bin}, which the image builds"
        );
    }
    // The pulumi-worker's image carries the real Pulumi CLI.
    let dockerfile = read("ops/docker/Dockerfile");
    let stage = &dockerfile[dockerfile
        .find("AS pulumi-worker")
        .expect("a pulumi-worker stage")..];
    assert!(
        stage.contains("get.pulumi.com") && stage.contains("/usr/local/bin/"),
        "installs pulumi"
    );
    assert_eq!(
        services(&compose())["pulumi-worker"]["build"]["target"].as_str(),
        Some("pulumi-worker")
    );
    for line in read("ops/docker/Dockerfile").lines() {
        if let Some(rest) = line
            .strip_prefix("COPY ")
            .filter(|r| !r.starts_with("--from"))
        {
            let parts: Vec<&str> = rest.split_whitespace().collect();
            for src in &parts[..parts.len() - 1] {
                assert!(
                    root().join(src).exists(),
                    "Dockerfile copies {src}, which exists"
                );
            }
        }
    }
}

/// Variables read by libraries rather than our flags (the log filter, the
/// OpenTelemetry SDK's standard variables).
const PASSTHROUGH: [&str; 5] = [
    "RUST_LOG",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_SERVICE_NAME",
    "OTEL_RESOURCE_ATTRIBUTES",
];

/// Whether `key` is read by a library or by nats-server's config file (a
/// user's `SOPHIA_NATS_<USER>_PASSWORD`), not by our flags.
fn passthrough(key: &str) -> bool {
    PASSTHROUGH.contains(&key)
        || sophia_tests::nats::passwords()
            .iter()
            .any(|(var, _)| var == key)
}

/// The API-key variables the shipped intelligence config names
/// (`api_key_env`): compose passes them through to the intelligence-worker.
fn provider_keys() -> BTreeSet<String> {
    let example: toml::Value = toml::from_str(&read("ops/intelligence/example.toml")).unwrap();
    example["providers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p.get("api_key_env")?.as_str().map(str::to_owned))
        .collect()
}

/// The variables the bridge catalog's servers read through `env:NAME`.
fn bridge_catalog_env() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for file in files_under("ops/bridge/catalog", "toml") {
        let text = std::fs::read_to_string(&file).unwrap();
        let config: toml::Value = toml::from_str(&text).unwrap();
        for server in config["servers"].as_array().unwrap() {
            for table in ["env", "headers"] {
                for value in server
                    .get(table)
                    .and_then(|t| t.as_table())
                    .into_iter()
                    .flatten()
                {
                    if let Some(name) = value.1.as_str().and_then(|v| v.strip_prefix("env:")) {
                        names.insert(name.to_owned());
                    }
                }
            }
        }
    }
    names
}

#[test]
fn the_bridge_image_runs_the_catalogs_servers_and_every_catalog_file_has_a_bridge() {
    let stage = dockerfile_stage("mcp-bridge");
    for runtime in [
        "node --version",
        "npx --version",
        "uvx --version",
        "COPY ops/bridge/catalog",
    ] {
        assert!(
            stage.contains(runtime),
            "the mcp-bridge stage checks {runtime}"
        );
    }
    let configs: BTreeSet<String> = services(&compose())
        .into_iter()
        .filter(|(name, _)| name.starts_with("mcp-bridge"))
        .filter_map(|(_, svc)| env_of(&svc).get("SOPHIA_BRIDGE_CONFIG").cloned())
        .collect();
    let catalog: BTreeSet<String> = files_under("ops/bridge/catalog", "toml")
        .into_iter()
        .map(|f| {
            f.strip_prefix(root())
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert_eq!(configs, catalog, "one compose bridge per catalog file");
}

#[test]
fn every_environment_variable_is_one_the_services_read() {
    let known = config_env_keys();
    let c = compose();
    let ours = sophia_services(&c);
    for (name, svc) in services(&c) {
        if name != "nats" && !ours.contains_key(&name) {
            continue; // a third-party image reads its own settings
        }
        for key in env_of(&svc).keys() {
            assert!(
                known.contains(key)
                    || passthrough(key)
                    || provider_keys().contains(key)
                    || (name.starts_with("mcp-bridge") && bridge_catalog_env().contains(key)),
                "{name} sets {key}, which no service reads (typo?)"
            );
        }
    }
}

/// The text of the Dockerfile stage `name`, up to the next `FROM`.
fn dockerfile_stage(name: &str) -> String {
    let dockerfile = read("ops/docker/Dockerfile");
    let start = dockerfile
        .lines()
        .position(|l| l.starts_with("FROM ") && l.ends_with(&format!(" AS {name}")))
        .unwrap_or_else(|| panic!("a Dockerfile stage {name}"));
    dockerfile
        .lines()
        .skip(start)
        .enumerate()
        .take_while(|(i, l)| *i == 0 || !l.starts_with("FROM "))
        .map(|(_, l)| format!("{l}\n"))
        .collect()
}

/// The pulumi-worker can write where Pulumi writes: the projects of the
/// bind-mounted `./pulumi` (each stack's `Pulumi.<stack>.yaml`), the state
/// volume, and `$HOME`; and its image has the runtimes of TypeScript and
/// Python programs.
#[test]
fn the_pulumi_worker_writes_its_workspace_and_state_and_runs_node_and_python() {
    let c = compose();
    let svc = &services(&c)["pulumi-worker"];
    let env = env_of(svc);
    assert_eq!(
        env.get("SOPHIA_PULUMI_WORKSPACE").map(String::as_str),
        Some("/workspace")
    );
    let volumes = format!("{:?}", svc["volumes"]);
    assert!(volumes.contains("./pulumi:/workspace"), "{volumes}");
    assert!(volumes.contains("pulumi-state:/state"), "{volumes}");
    assert!(
        c["volumes"]
            .as_mapping()
            .unwrap()
            .contains_key(Value::from("pulumi-state")),
        "pulumi-state is a named volume"
    );
    assert_eq!(
        interpolate(
            &env["PULUMI_BACKEND_URL"],
            &BTreeMap::from([("PULUMI_BACKEND_URL".to_owned(), String::new())])
        ),
        "file:///state",
        "by default the state is on the volume"
    );
    // The uid is the checkout's owner's when set (the bind mount keeps the
    // host's owners), the image's otherwise; the group is 0 either way.
    let user = svc["user"].as_str().expect("pulumi-worker sets `user`");
    assert_eq!(interpolate(user, &BTreeMap::new()), "10001:0");
    assert_eq!(
        interpolate(
            user,
            &BTreeMap::from([("SOPHIA_PULUMI_UID".to_owned(), "1000".to_owned())])
        ),
        "1000:0"
    );
    assert!(read("docs/operations.md").contains("SOPHIA_PULUMI_UID=$(id -u)"));
    // Docker creates a named volume from the image's directory, with its
    // owner and mode: the image's /state (and /workspace and $HOME) belong to
    // uid 10001 and group 0, which may write them.
    let stage = dockerfile_stage("pulumi-worker");
    for dir in ["/workspace", "/state", "/home/sophia"] {
        for step in ["chown 10001:0 ", "chmod 0775 "] {
            let line = stage
                .lines()
                .find(|l| l.contains(step))
                .unwrap_or_else(|| panic!("the pulumi-worker stage runs {step}"));
            assert!(
                line.split_whitespace().any(|w| w == dir),
                "{step}{dir}: {line}"
            );
        }
    }
    assert!(stage.contains("mkdir -p /workspace /state"), "{stage}");
    assert!(
        stage.contains("USER 10001:10001"),
        "runs as 10001 by default"
    );
    // Node.js (the Pulumi Node.js SDK wants 20 or newer; its current
    // releases 22) from a pinned official image, and Python with venv and
    // pip (Pulumi creates a virtualenv per Python program).
    let dockerfile = read("ops/docker/Dockerfile");
    let node_version =
        regex_lite::Regex::new(r"(?m)^ARG NODE_VERSION=([0-9]+)\.([0-9]+)\.([0-9]+)$")
            .unwrap()
            .captures(&dockerfile)
            .expect("a pinned ARG NODE_VERSION=x.y.z")[1]
            .parse::<u32>()
            .unwrap();
    assert!(node_version >= 22, "Node.js {node_version}");
    assert!(
        dockerfile.contains("FROM node:${NODE_VERSION}-${DEBIAN_RELEASE}-slim AS node"),
        "the node stage"
    );
    for copied in ["/usr/local/bin/node", "/usr/local/lib/node_modules/npm"] {
        assert!(
            stage.contains(&format!("COPY --from=node {copied} ")),
            "copies {copied}"
        );
    }
    for link in ["/usr/local/bin/npm", "/usr/local/bin/npx"] {
        assert!(stage.contains(link), "links {link}");
    }
    let install = stage
        .lines()
        .find(|l| l.contains("apt-get install"))
        .expect("apt-get install");
    for package in ["git", "python3", "python3-venv", "python3-pip"] {
        assert!(
            install.split_whitespace().any(|w| w == package),
            "installs {package}: {install}"
        );
    }
    for check in [
        "node --version",
        "npm --version",
        "python3 -m venv",
        "pulumi version",
    ] {
        assert!(stage.contains(check), "the build runs `{check}`");
    }
}

/// A first run needs no API key: the ollama service pulls the model named
/// once, in SOPHIA_OLLAMA_MODEL, and the intelligence-worker asks it;
/// a config file and the keys it names come from the shell.
#[test]
fn the_intelligence_worker_uses_the_ollama_service_or_the_shells_config_and_keys() {
    let c = compose();
    let all = services(&c);
    let ollama = &all["ollama"];
    let model_default = regex_lite::Regex::new(r"^\$\{SOPHIA_OLLAMA_MODEL:-([^}]+)\}$").unwrap();
    let model = env_of(ollama)["SOPHIA_OLLAMA_MODEL"].clone();
    let model = model_default
        .captures(&model)
        .unwrap_or_else(|| panic!("SOPHIA_OLLAMA_MODEL from the shell, with a default: {model}"))
        [1]
    .to_owned();
    let command = ollama["command"][0].as_str().expect("a shell command");
    assert!(
        command.contains("ollama pull \"$${SOPHIA_OLLAMA_MODEL}\""),
        "the ollama service pulls $SOPHIA_OLLAMA_MODEL: {command}"
    );
    assert!(command.contains("ollama serve"), "{command}");
    let named_once = read("docker-compose.mcp.yml")
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .map(|l| l.matches(&model).count())
        .sum::<usize>();
    assert_eq!(
        named_once, 1,
        "the model {model} is named once in the compose file (comments aside)"
    );
    let models = format!("{:?}", ollama["volumes"]);
    assert!(models.contains("ollama-models:/root/.ollama"), "{models}");
    assert!(
        c["volumes"]
            .as_mapping()
            .unwrap()
            .contains_key(Value::from("ollama-models")),
        "ollama-models is a named volume"
    );

    let worker = &all["intelligence-worker"];
    let env = &worker["environment"];
    let url = env["SOPHIA_OLLAMA_URL"].as_str().unwrap();
    assert_eq!(
        interpolate(url, &BTreeMap::new()),
        "http://ollama:11434/v1",
        "the ollama service, OpenAI-compatible"
    );
    assert_eq!(
        interpolate(
            url,
            &BTreeMap::from([(
                "SOPHIA_OLLAMA_URL".to_owned(),
                "http://gpu:8000/v1".to_owned()
            )])
        ),
        "http://gpu:8000/v1",
        "overridable from the shell"
    );
    assert!(
        format!("{:?}", worker["depends_on"]).contains("ollama"),
        "starts after ollama"
    );
    // Passed through when set, left unset otherwise: an empty
    // SOPHIA_INTELLIGENCE_CONFIG would be an empty path, which the worker
    // refuses.
    let keys = provider_keys();
    for key in ["OPENAI_API_KEY", "ANTHROPIC_API_KEY", "OPENROUTER_API_KEY"] {
        assert!(
            keys.contains(key),
            "ops/intelligence/example.toml names {key}"
        );
    }
    for var in keys
        .iter()
        .map(String::as_str)
        .chain(["SOPHIA_INTELLIGENCE_CONFIG"])
    {
        assert!(
            matches!(env.get(var), Some(Value::Null)),
            "intelligence-worker passes {var} through from the shell: {:?}",
            env.get(var)
        );
    }
    let volumes = format!("{:?}", worker["volumes"]);
    assert!(
        volumes.contains("./ops/intelligence:/etc/sophia/intelligence:ro"),
        "{volumes}"
    );
}

// ---------------------------------------------------------------------------
// Traces, metrics, dashboards

#[test]
fn every_sophia_service_sends_traces_to_jaeger_under_its_own_name() {
    let c = compose();
    let all = services(&c);
    assert!(all.contains_key("jaeger"), "compose runs Jaeger");
    let published = format!("{:?}", all["jaeger"]["ports"]);
    assert!(published.contains("127.0.0.1:16686:16686"), "{published}");
    let mut names = BTreeSet::new();
    for (name, svc) in sophia_services(&c) {
        let env = env_of(&svc);
        let service_name = env
            .get("OTEL_SERVICE_NAME")
            .unwrap_or_else(|| panic!("{name} sets OTEL_SERVICE_NAME"));
        assert!(
            names.insert(service_name.clone()),
            "{name}: OTEL_SERVICE_NAME {service_name} is another service's too"
        );
        assert_eq!(
            env.get("OTEL_EXPORTER_OTLP_ENDPOINT").map(String::as_str),
            Some("http://jaeger:4318"),
            "{name} exports OTLP/HTTP to the jaeger service"
        );
        assert_eq!(
            env.get("OTEL_EXPORTER_OTLP_PROTOCOL").map(String::as_str),
            Some("http/protobuf"),
            "{name}"
        );
    }
    assert!(names.contains("sophia-gateway"), "{names:?}");
}

/// A DNS-discovered scrape job: its name, the names it looks up, the port.
type DnsJob = (String, Vec<String>, u64);
/// A static scrape target: its job and `host:port`.
type StaticTarget = (String, String);

/// The scrape jobs of `ops/prometheus/prometheus.yml`.
fn scrape_config() -> (Vec<DnsJob>, Vec<StaticTarget>) {
    let prom = yaml_file("ops/prometheus/prometheus.yml");
    let mut dns = Vec::new();
    let mut statics = Vec::new();
    for job in prom["scrape_configs"]
        .as_sequence()
        .expect("scrape_configs")
    {
        let name = job["job_name"].as_str().unwrap().to_owned();
        for sd in job["dns_sd_configs"].as_sequence().into_iter().flatten() {
            let names = sd["names"]
                .as_sequence()
                .unwrap()
                .iter()
                .map(|n| n.as_str().unwrap().to_owned())
                .collect();
            dns.push((name.clone(), names, sd["port"].as_u64().expect("port")));
        }
        for sc in job["static_configs"].as_sequence().into_iter().flatten() {
            for t in sc["targets"].as_sequence().unwrap() {
                statics.push((name.clone(), t.as_str().unwrap().to_owned()));
            }
        }
    }
    (dns, statics)
}

#[test]
fn prometheus_scrapes_every_replica_of_every_sophia_service_on_its_port() {
    let c = compose();
    let all = services(&c);
    let (dns, statics) = scrape_config();
    for (name, svc) in sophia_services(&c) {
        let port = http_port(&env_of(&svc)).unwrap_or_else(|| panic!("{name} has an HTTP port"));
        let job = dns
            .iter()
            .find(|(_, names, _)| names.contains(&name))
            .unwrap_or_else(|| panic!("prometheus.yml scrapes {name} (dns_sd_configs)"));
        assert_eq!(job.0, name, "the job scraping {name} is named after it");
        assert_eq!(
            job.2,
            u64::from(port),
            "prometheus scrapes {name} on its SOPHIA_*_ADDR port"
        );
    }
    for (job, names, _) in &dns {
        for n in names {
            assert!(
                all.contains_key(n),
                "job {job} looks up {n}, a compose service"
            );
        }
    }
    for (job, target) in &statics {
        let host = target.split(':').next().unwrap();
        assert!(
            host == "localhost" || all.contains_key(host),
            "job {job} scrapes {target}, a compose service"
        );
    }
    // The rules load from the directory compose mounts.
    let prom = yaml_file("ops/prometheus/prometheus.yml");
    for f in prom["rule_files"].as_sequence().unwrap() {
        let f = f.as_str().unwrap();
        assert!(
            root().join("ops/prometheus").join(f).exists(),
            "rule file {f}"
        );
    }
    let mounted = format!("{:?}", all["prometheus"]["volumes"]);
    assert!(
        mounted.contains("./ops/prometheus:/etc/prometheus"),
        "{mounted}"
    );
}

/// The metric families the services register (names without the `_total`,
/// `_bucket`, ... that the exposition adds): `registry.register("sophia_...")`
/// and collectors' `encode_descriptor("sophia_...")` literals, and
/// `format!("{prefix}_...")` names registered under a prefix
/// (`ToolCallMetrics::register(&mut registry, "sophia_worker")`, ...). A
/// `{prefix}` family is taken for every prefix: a slight over-approximation.
fn registered_metric_families() -> BTreeSet<String> {
    let literal =
        regex_lite::Regex::new(r#"(?:register|encode_descriptor)\(\s*"(sophia_[a-z0-9_]+)""#)
            .unwrap();
    let prefixed = regex_lite::Regex::new(r#"format!\(\s*"\{prefix\}(_[a-z0-9_]+)""#).unwrap();
    let prefix =
        regex_lite::Regex::new(r#"\(\s*&mut\s+\w+\s*,\s*"(sophia_[a-z_]+)"\s*\)"#).unwrap();
    let (mut families, mut suffixes, mut prefixes) =
        (BTreeSet::new(), BTreeSet::new(), BTreeSet::new());
    for path in files_under("services", "rs") {
        let text = std::fs::read_to_string(&path).unwrap();
        families.extend(literal.captures_iter(&text).map(|c| c[1].to_owned()));
        suffixes.extend(prefixed.captures_iter(&text).map(|c| c[1].to_owned()));
        prefixes.extend(prefix.captures_iter(&text).map(|c| c[1].to_owned()));
    }
    for p in &prefixes {
        for s in &suffixes {
            families.insert(format!("{p}{s}"));
        }
    }
    families
}

/// Every PromQL expression of the alert rules and the dashboards.
fn promql_expressions() -> Vec<(String, String)> {
    let mut out = Vec::new();
    let rules = yaml_file("ops/prometheus/alerts.yml");
    for group in rules["groups"].as_sequence().unwrap() {
        for rule in group["rules"].as_sequence().unwrap() {
            out.push((
                "ops/prometheus/alerts.yml".to_owned(),
                rule["expr"].as_str().unwrap().to_owned(),
            ));
        }
    }
    fn walk(file: &str, v: &serde_json::Value, out: &mut Vec<(String, String)>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    match (k.as_str(), v) {
                        ("expr" | "definition", serde_json::Value::String(s)) => {
                            out.push((file.to_owned(), s.clone()))
                        }
                        ("query", serde_json::Value::String(s)) => {
                            out.push((file.to_owned(), s.clone()))
                        }
                        _ => walk(file, v, out),
                    }
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| walk(file, v, out)),
            _ => {}
        }
    }
    for path in files_under("ops/grafana/dashboards", "json") {
        let file = path.strip_prefix(root()).unwrap().display().to_string();
        let dash: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).expect("dashboard JSON");
        walk(&file, &dash, &mut out);
    }
    out
}

#[test]
fn dashboards_and_alerts_use_only_metrics_the_services_export() {
    let families = registered_metric_families();
    for f in [
        "sophia_gateway_tool_calls",
        "sophia_worker_tool_call_duration_seconds",
        "sophia_nats_connected",
        "sophia_inference_tokens",
        "sophia_pulumi_jobs",
    ] {
        assert!(families.contains(f), "found {f} in services/: {families:?}");
    }
    let recorded: BTreeSet<String> = yaml_file("ops/prometheus/alerts.yml")["groups"]
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_sequence().unwrap().iter())
        .filter_map(|r| r["record"].as_str().map(str::to_owned))
        .collect();
    let metric = regex_lite::Regex::new(r"\bsophia_[a-z0-9_]+").unwrap();
    let recording = regex_lite::Regex::new(r"\bsophia:[a-z0-9_:]+").unwrap();
    let exposition_suffixes = ["", "_total", "_bucket", "_sum", "_count", "_created"];
    let mut unknown = BTreeSet::new();
    let exprs = promql_expressions();
    assert!(exprs.len() > 20, "found the rules' and dashboards' queries");
    for (file, expr) in &exprs {
        for m in metric.find_iter(expr) {
            let name = m.as_str();
            let known = exposition_suffixes.iter().any(|s| {
                name.strip_suffix(s)
                    .is_some_and(|family| families.contains(family))
            });
            if !known {
                unknown.insert(format!("{file}: {name}"));
            }
        }
        for m in recording.find_iter(expr) {
            if !recorded.contains(m.as_str()) {
                unknown.insert(format!("{file}: {} (no recording rule)", m.as_str()));
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "metrics no service registers (services/ has {families:?}):\n{}",
        unknown.into_iter().collect::<Vec<_>>().join("\n")
    );
}

#[test]
fn every_alert_says_what_happened_and_where_its_runbook_is() {
    let rules = yaml_file("ops/prometheus/alerts.yml");
    let operations = std::fs::read_to_string(root().join("docs/operations.md")).ok();
    let mut alerts = 0;
    for group in rules["groups"].as_sequence().unwrap() {
        for rule in group["rules"].as_sequence().unwrap() {
            let Some(name) = rule["alert"].as_str() else {
                continue;
            };
            alerts += 1;
            let a = &rule["annotations"];
            assert!(
                a["summary"].as_str().is_some_and(|s| !s.is_empty()),
                "{name}: summary"
            );
            assert!(
                a["description"].as_str().is_some_and(|s| !s.is_empty()),
                "{name}: description"
            );
            assert!(
                rule["labels"]["severity"].as_str().is_some(),
                "{name}: severity"
            );
            let runbook = a["runbook_url"].as_str().unwrap_or_default();
            let anchor = runbook
                .strip_prefix("docs/operations.md#")
                .unwrap_or_else(|| {
                    panic!("{name}: runbook_url docs/operations.md#..., not {runbook:?}")
                });
            // Once docs/operations.md exists, every anchor is one of its headings.
            if let Some(doc) = &operations {
                let headings: BTreeSet<String> = doc
                    .lines()
                    .filter_map(|l| l.strip_prefix("## ").or_else(|| l.strip_prefix("### ")))
                    .map(|h| {
                        h.trim()
                            .to_lowercase()
                            .chars()
                            .filter_map(|c| match c {
                                'a'..='z' | '0'..='9' | '-' | '_' => Some(c),
                                ' ' => Some('-'),
                                _ => None,
                            })
                            .collect()
                    })
                    .collect();
                assert!(
                    headings.contains(anchor),
                    "{name}: docs/operations.md has a section #{anchor} ({headings:?})"
                );
            }
        }
    }
    assert!(alerts >= 8, "{alerts} alerts");
}

#[test]
fn grafana_loads_the_dashboards_with_the_provisioned_datasources() {
    let c = compose();
    let grafana = &services(&c)["grafana"];
    let volumes = format!("{:?}", grafana["volumes"]);
    assert!(
        volumes.contains("./ops/grafana/provisioning:/etc/grafana/provisioning"),
        "{volumes}"
    );
    let provider = yaml_file("ops/grafana/provisioning/dashboards/sophia.yml");
    let path = provider["providers"][0]["options"]["path"]
        .as_str()
        .unwrap();
    assert!(
        volumes.contains(&format!("./ops/grafana/dashboards:{path}")),
        "compose mounts the dashboards where the provider reads them ({path}): {volumes}"
    );
    let ds = yaml_file("ops/grafana/provisioning/datasources/prometheus.yml");
    let mut uids = BTreeMap::new();
    for d in ds["datasources"].as_sequence().unwrap() {
        let url = d["url"].as_str().unwrap();
        let host = url.split("://").nth(1).unwrap().split(':').next().unwrap();
        assert!(
            services(&c).contains_key(host),
            "datasource {url} is a compose service"
        );
        uids.insert(
            d["uid"].as_str().unwrap().to_owned(),
            d["type"].as_str().unwrap().to_owned(),
        );
    }
    assert_eq!(
        uids.get("sophia-prometheus").map(String::as_str),
        Some("prometheus")
    );
    assert!(uids.values().any(|t| t == "jaeger"), "a Jaeger datasource");
    fn datasources(v: &serde_json::Value, out: &mut Vec<serde_json::Value>) {
        match v {
            serde_json::Value::Object(m) => {
                if let Some(d) = m.get("datasource") {
                    out.push(d.clone());
                }
                m.values().for_each(|v| datasources(v, out));
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| datasources(v, out)),
            _ => {}
        }
    }
    for path in files_under("ops/grafana/dashboards", "json") {
        let dash: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert!(
            dash["uid"].as_str().is_some_and(|u| !u.is_empty()),
            "{path:?}: uid"
        );
        assert!(
            dash["schemaVersion"].as_u64().unwrap_or(0) >= 36,
            "{path:?}: schemaVersion"
        );
        let mut refs = Vec::new();
        datasources(&dash, &mut refs);
        assert!(!refs.is_empty());
        for d in refs {
            let uid = d["uid"].as_str().unwrap_or_default();
            assert!(
                uid == "-- Grafana --" || uids.contains_key(uid),
                "{path:?} refers to datasource {d} by a provisioned uid"
            );
        }
    }
}

// ---------------------------------------------------------------------------
// Kubernetes

/// Every object of the Kubernetes manifests under `rel`.
fn k8s_objects(rel: &str) -> Vec<(PathBuf, Value)> {
    files_under(rel, "yaml")
        .into_iter()
        .filter(|p| p.file_name().is_some_and(|n| n != "kustomization.yaml"))
        .flat_map(|p| yaml_docs(&p).into_iter().map(move |d| (p.clone(), d)))
        .collect()
}

#[test]
fn kubernetes_deployments_run_the_services_as_compose_does() {
    let known = config_env_keys();
    let image_bins = dockerfile_bins();
    let objects = k8s_objects("ops/k8s/base");
    let kustomization = yaml_file("ops/k8s/base/kustomization.yaml");
    let listed: BTreeSet<&str> = kustomization["resources"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    let mut deployments = BTreeMap::new();
    let mut agno_categories = BTreeSet::new();
    for (path, obj) in &objects {
        let file = path.file_name().unwrap().to_str().unwrap();
        assert!(listed.contains(file), "kustomization.yaml lists {file}");
        if obj["kind"].as_str() != Some("PriorityClass") {
            assert_eq!(
                obj["metadata"]["namespace"]
                    .as_str()
                    .or(obj["metadata"]["name"].as_str()),
                Some("sophia"),
                "{file} is in namespace sophia"
            );
        }
        if obj["kind"].as_str() != Some("Deployment") {
            continue;
        }
        let name = obj["metadata"]["name"].as_str().unwrap().to_owned();
        let pod = &obj["spec"]["template"];
        assert!(
            obj["spec"]["replicas"].is_null(),
            "{name}: replicas are the autoscaler's"
        );
        assert_eq!(
            pod["spec"]["securityContext"]["runAsNonRoot"].as_bool(),
            Some(true),
            "{name}"
        );
        assert!(
            pod["spec"]["terminationGracePeriodSeconds"]
                .as_u64()
                .unwrap_or(30)
                > 30,
            "{name}: the grace period outlasts the 30 s drain"
        );
        let containers = pod["spec"]["containers"].as_sequence().unwrap();
        let main = containers
            .iter()
            .find(|c| {
                c["command"][0]
                    .as_str()
                    .is_some_and(|b| image_bins.contains(b))
            })
            .unwrap_or_else(|| panic!("{name} runs a binary the image builds"));
        let bin = main["command"][0].as_str().unwrap();
        let mut env = BTreeMap::new();
        for e in main["env"].as_sequence().unwrap() {
            let key = e["name"].as_str().unwrap().to_owned();
            assert!(
                known.contains(&key)
                    || passthrough(&key)
                    || ["POD_NAME", "POD_NAMESPACE", "HOME"].contains(&key.as_str()),
                "{name} sets {key}, which no service reads (typo?)"
            );
            env.insert(key, e["value"].as_str().unwrap_or_default().to_owned());
        }
        let port = http_port(&env).unwrap_or_else(|| panic!("{name} sets its HTTP address"));
        assert_eq!(
            main["ports"][0]["containerPort"].as_u64(),
            Some(u64::from(port)),
            "{name}: containerPort"
        );
        assert_eq!(
            pod["metadata"]["annotations"]["prometheus.io/port"].as_str(),
            Some(port.to_string().as_str()),
            "{name}: scrape annotation"
        );
        assert_eq!(
            main["readinessProbe"]["httpGet"]["path"].as_str(),
            Some("/ready"),
            "{name}"
        );
        assert_eq!(
            main["livenessProbe"]["httpGet"]["path"].as_str(),
            Some("/health"),
            "{name}"
        );
        assert!(
            env.contains_key("OTEL_SERVICE_NAME"),
            "{name}: OTEL_SERVICE_NAME"
        );
        let expected_port = match bin {
            "sophia-gateway" => 8000,
            "agno-worker" => 8090,
            "pulumi-worker" => 8091,
            "intelligence-worker" => 8092,
            _ => port,
        };
        assert_eq!(port, expected_port, "{name} listens on the seed's port");
        if bin == "agno-worker" {
            let cats = env.get("AGNO_CATEGORIES").cloned().unwrap_or_default();
            assert!(!cats.contains(','), "{name}: one category per Deployment");
            agno_categories.insert(cats);
        }
        deployments.insert(name, pod.clone());
    }
    assert_eq!(
        agno_categories,
        BTreeSet::from(
            ["business_intelligence", "infrastructure", "code_generation"].map(String::from)
        ),
        "an agno-worker Deployment per category"
    );
    assert!(
        !deployments.contains_key("intelligence-worker-gpu"),
        "the GPU Deployment is opt-in (ops/k8s/gpu), not in the base"
    );
    let overlay = yaml_file("ops/k8s/gpu/kustomization.yaml");
    assert_eq!(overlay["resources"][0].as_str(), Some("../base"));
    let gpu_objects = k8s_objects("ops/k8s/gpu");
    let gpu = &gpu_objects
        .iter()
        .find(|(_, o)| o["kind"].as_str() == Some("Deployment"))
        .expect("the GPU Deployment")
        .1["spec"]["template"]["spec"];
    assert_eq!(
        gpu["nodeSelector"]["nvidia.com/gpu.present"].as_str(),
        Some("true")
    );
    assert!(format!("{:?}", gpu["tolerations"]).contains("nvidia.com/gpu"));
    assert!(
        format!("{gpu:?}").contains("nvidia.com/gpu"),
        "requests a GPU"
    );
    // Every profile scales every Deployment of the base, and nothing else.
    let profiles = files_under("ops/k8s/profiles", "yaml");
    assert!(profiles.len() >= 4, "{profiles:?}");
    for path in profiles {
        if !yaml_docs(&path)
            .iter()
            .all(|d| d["kind"].as_str() == Some("HorizontalPodAutoscaler"))
        {
            continue; // the agent profile's disruption budgets
        }
        let targets: BTreeSet<String> = yaml_docs(&path)
            .iter()
            .map(|hpa| {
                assert_eq!(
                    hpa["apiVersion"].as_str(),
                    Some("autoscaling/v2"),
                    "{path:?}"
                );
                let min = hpa["spec"]["minReplicas"].as_u64().unwrap();
                let max = hpa["spec"]["maxReplicas"].as_u64().unwrap();
                assert!(1 <= min && min <= max, "{path:?}: {min}..{max}");
                hpa["spec"]["scaleTargetRef"]["name"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        let all: BTreeSet<String> = deployments.keys().cloned().collect();
        assert_eq!(targets, all, "{path:?} has an autoscaler per Deployment");
    }
}

/// One user of `ops/nats/nats.conf`: what it may publish and subscribe to.
#[derive(Debug, Default, PartialEq)]
struct ConfUser {
    publish: Vec<String>,
    publish_deny: Vec<String>,
    subscribe: Vec<String>,
    subscribe_deny: Vec<String>,
    allow_responses: bool,
}

/// The users of `ops/nats/nats.conf`, by name.
fn nats_conf_users() -> BTreeMap<String, ConfUser> {
    let conf = read("ops/nats/nats.conf");
    let user = regex_lite::Regex::new(r"(?m)^\s*user:\s*(\w+)\s*$").unwrap();
    let quoted = regex_lite::Regex::new(r#""([^"]*)""#).unwrap();
    let starts: Vec<(usize, String)> = user
        .captures_iter(&conf)
        .map(|c| (c.get(0).unwrap().start(), c[1].to_owned()))
        .collect();
    // The quoted subjects of the list after `key` in `section`, if any: its
    // lines up to the one that closes it, comments left out.
    let list = |section: &str, key: &str| -> Vec<String> {
        let Some(at) = section.find(key) else {
            return Vec::new();
        };
        section[at..]
            .lines()
            .skip(1)
            .take_while(|l| l.trim() != "]")
            .filter(|l| !l.trim_start().starts_with('#'))
            .flat_map(|l| {
                quoted
                    .captures_iter(l)
                    .map(|c| c[1].to_owned())
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    starts
        .iter()
        .enumerate()
        .map(|(i, (start, name))| {
            let end = starts.get(i + 1).map_or(conf.len(), |(s, _)| *s);
            let chunk = &conf[*start..end];
            let sub_at = chunk.find("subscribe:").expect("a subscribe section");
            let (publish, subscribe) = chunk.split_at(sub_at);
            let u = ConfUser {
                publish: list(publish, "allow:"),
                publish_deny: list(publish, "deny:"),
                subscribe: list(subscribe, "allow:"),
                subscribe_deny: list(subscribe, "deny:"),
                allow_responses: chunk.contains("allow_responses: true"),
            };
            (name.clone(), u)
        })
        .collect()
}

/// The services' own NATS users, by binary and by what the service serves
/// (an agno-worker's categories, a bridge's catalog file).
fn expected_nats_user(bin: &str, env: &BTreeMap<String, String>) -> String {
    let short = |category: &str| match category {
        "business_intelligence" => "bi",
        "infrastructure" => "infra",
        "code_generation" => "code",
        other => panic!("{bin}: no NATS user for category {other:?}"),
    };
    match bin {
        "sophia-gateway" => "gateway".into(),
        "pulumi-worker" => "pulumi".into(),
        "intelligence-worker" => "intelligence".into(),
        "gong-worker" => "gong".into(),
        "echo-worker" => "worker".into(),
        "agno-worker" => match env.get("AGNO_CATEGORIES").map(String::as_str) {
            Some(one) if !one.contains(',') => format!("agno_{}", short(one)),
            _ => "agno".into(),
        },
        "mcp-bridge" => {
            let config = Path::new(&env["SOPHIA_BRIDGE_CONFIG"]).to_owned();
            let category = config.file_stem().unwrap().to_str().unwrap();
            format!("bridge_{}", short(category))
        }
        other => panic!("which NATS user does {other} log in as?"),
    }
}

#[test]
fn nats_gets_jetstream_and_each_service_logs_in_as_its_own_user() {
    let c = compose();
    let s = services(&c);
    let nats = &s["nats"];
    let command = format!("{:?}", nats["command"]);
    assert!(command.contains("/etc/nats/nats.conf"), "{command}");
    let mounted = format!("{:?}", nats["volumes"]);
    assert!(mounted.contains("./ops/nats/nats.conf:/etc/nats/nats.conf"));
    assert!(read("ops/nats/nats.conf").contains("jetstream: enabled"));
    let users = nats_conf_users();
    // nats.conf reads every user's password: compose gives nats all of them.
    for (var, _) in sophia_tests::nats::passwords() {
        assert!(env_of(nats).contains_key(&var), "compose gives nats {var}");
    }
    for (name, svc) in &sophia_services(&c) {
        let env = env_of(svc);
        let bin = svc["command"][0].as_str().unwrap();
        let user = env.get("NATS_USER").cloned().unwrap_or_default();
        assert!(
            users.contains_key(&user),
            "{name} logs in as {user:?}, a user in nats.conf"
        );
        assert_eq!(user, expected_nats_user(bin, &env), "{name}: its own user");
        let var = format!("SOPHIA_NATS_{}_PASSWORD", user.to_uppercase());
        assert!(
            env["NATS_PASSWORD"].starts_with(&format!("${{{var}:?")),
            "{name}: the password of {user}, required: {}",
            env["NATS_PASSWORD"]
        );
    }
}

#[test]
fn each_bridge_user_serves_its_catalog_servers_offers() {
    let users = nats_conf_users();
    for path in files_under("ops/bridge/catalog", "toml") {
        let category = path.file_stem().unwrap().to_str().unwrap().to_owned();
        let env = BTreeMap::from([("SOPHIA_BRIDGE_CONFIG".to_owned(), category.clone())]);
        let name = expected_nats_user("mcp-bridge", &env);
        let user = &users[&name];
        assert!(
            user.subscribe
                .contains(&format!("sophia.v1.tools.{category}.>")),
            "{name} serves the {category} category"
        );
        let catalog: toml::Table =
            toml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        for server in catalog["servers"].as_array().unwrap() {
            let service = format!("bridge-{}", server["name"].as_str().unwrap());
            for subject in [
                format!("sophia.v1.mcp.{service}.>"),
                format!("$SRV.*.{service}"),
                format!("$SRV.*.{service}.*"),
            ] {
                assert!(
                    user.subscribe.contains(&subject),
                    "{name} may subscribe to {subject}"
                );
            }
        }
        // Never the agents' runs of its category.
        assert!(
            user.subscribe_deny
                .contains(&format!("sophia.v1.tools.{category}.agno_run")),
            "{name} denies agno_run"
        );
    }
}

#[test]
fn every_kubernetes_service_logs_in_as_its_own_nats_user() {
    let users = nats_conf_users();
    let image_bins = dockerfile_bins();
    let mut seen = BTreeSet::new();
    for dir in ["ops/k8s/base", "ops/k8s/gpu", "ops/k8s/bridge"] {
        for (path, obj) in k8s_objects(dir) {
            if obj["kind"].as_str() != Some("Deployment") {
                continue;
            }
            let name = obj["metadata"]["name"].as_str().unwrap();
            let main = obj["spec"]["template"]["spec"]["containers"]
                .as_sequence()
                .unwrap()
                .iter()
                .find(|c| {
                    c["command"][0]
                        .as_str()
                        .is_some_and(|b| image_bins.contains(b))
                })
                .unwrap_or_else(|| panic!("{path:?}: {name} runs a binary the image builds"))
                .clone();
            let mut env = BTreeMap::new();
            let mut password_key = None;
            for e in main["env"].as_sequence().unwrap() {
                let key = e["name"].as_str().unwrap().to_owned();
                if key == "NATS_PASSWORD" {
                    let secret = &e["valueFrom"]["secretKeyRef"];
                    assert_eq!(secret["name"].as_str(), Some("sophia-nats"), "{name}");
                    password_key = secret["key"].as_str().map(str::to_owned);
                }
                env.insert(key, e["value"].as_str().unwrap_or_default().to_owned());
            }
            let bin = main["command"][0].as_str().unwrap();
            let user = env.get("NATS_USER").cloned().unwrap_or_default();
            assert!(
                users.contains_key(&user),
                "{name} logs in as {user:?}, a user in nats.conf"
            );
            assert_eq!(user, expected_nats_user(bin, &env), "{name}: its own user");
            assert_eq!(
                password_key,
                Some(format!("{}-password", user.replace('_', "-"))),
                "{name}: the password of {user}"
            );
            seen.insert(user);
        }
    }
    assert!(
        !seen.contains("worker"),
        "no Deployment uses the development user"
    );
}

#[test]
fn the_nats_helm_values_carry_the_users_of_nats_conf() {
    let conf_users = nats_conf_users();
    assert_eq!(
        conf_users.keys().cloned().collect::<BTreeSet<_>>(),
        sophia_tests::nats::users().into_iter().collect(),
        "{conf_users:?}"
    );
    assert!(conf_users.len() >= 12, "a user per service: {conf_users:?}");
    let values = yaml_file("ops/k8s/nats/values.yaml");
    assert_eq!(
        values["config"]["jetstream"]["enabled"].as_bool(),
        Some(true)
    );
    assert_eq!(
        values["config"]["jetstream"]["fileStore"]["pvc"]["enabled"].as_bool(),
        Some(true)
    );
    assert_eq!(values["config"]["cluster"]["replicas"].as_u64(), Some(3));
    let strings = |v: &Value| -> Vec<String> {
        v.as_sequence()
            .map(|s| s.iter().map(|s| s.as_str().unwrap().to_owned()).collect())
            .unwrap_or_default()
    };
    let mut seen = BTreeSet::new();
    for u in values["config"]["merge"]["authorization"]["users"]
        .as_sequence()
        .unwrap()
    {
        let name = u["user"].as_str().unwrap();
        let p = &u["permissions"];
        let helm = ConfUser {
            publish: strings(&p["publish"]["allow"]),
            publish_deny: strings(&p["publish"]["deny"]),
            subscribe: strings(&p["subscribe"]["allow"]),
            subscribe_deny: strings(&p["subscribe"]["deny"]),
            allow_responses: p["allow_responses"].as_bool().unwrap_or(false),
        };
        assert_eq!(
            helm, conf_users[name],
            "{name}: the permissions of nats.conf"
        );
        // The password is the same variable as in nats.conf, set from the
        // Secret the Deployments read.
        let var = format!("SOPHIA_NATS_{}_PASSWORD", name.to_uppercase());
        assert_eq!(
            u["password"].as_str(),
            Some(format!("<< ${var} >>").as_str()),
            "{name}"
        );
        let env = &values["container"]["env"][var.as_str()]["valueFrom"]["secretKeyRef"];
        assert_eq!(env["name"].as_str(), Some("sophia-nats"), "{var}");
        assert_eq!(
            env["key"].as_str(),
            Some(format!("{}-password", name.replace('_', "-")).as_str()),
            "{var}"
        );
        seen.insert(name.to_owned());
    }
    assert_eq!(
        seen,
        conf_users.keys().cloned().collect(),
        "every nats.conf user"
    );
}

#[test]
fn the_kubernetes_intelligence_config_is_one_the_worker_accepts() {
    for (path, obj) in k8s_objects("ops/k8s/base") {
        if obj["kind"].as_str() != Some("ConfigMap") {
            continue;
        }
        for (key, text) in obj["data"].as_mapping().unwrap() {
            let key = key.as_str().unwrap();
            if key.ends_with(".toml") {
                let text = text.as_str().unwrap();
                intelligence_worker::config::Config::parse(text, key)
                    .unwrap_or_else(|e| panic!("{path:?} {key}: {e}"));
            }
        }
    }
}

/// The rows of the markdown table in `text` whose header row starts with
/// `header`: each row's cells, trimmed, without backticks.
fn md_table(text: &str, header: &str) -> Vec<Vec<String>> {
    let mut lines = text.lines().skip_while(|l| !l.starts_with(header));
    lines
        .next()
        .unwrap_or_else(|| panic!("a table headed {header:?}"));
    lines
        .skip(1)
        .take_while(|l| l.starts_with('|'))
        .map(|l| {
            l.trim_matches('|')
                .split('|')
                .map(|c| c.trim().replace('`', ""))
                .collect()
        })
        .collect()
}

/// Every number of the seed's tables (docs/operations.md) is in the
/// manifests, and every manifest number of those kinds is in the tables:
/// each Cursor mode's profile (replicas, CPU target), and each category's
/// resources (requests and limits) and priority (PriorityClass and value).
#[test]
fn the_seeds_tables_are_what_the_manifests_run() {
    let doc = read("docs/operations.md");
    let base: BTreeMap<String, Value> = k8s_objects("ops/k8s/base")
        .into_iter()
        .filter(|(_, o)| o["kind"].as_str() == Some("Deployment"))
        .map(|(_, o)| (o["metadata"]["name"].as_str().unwrap().to_owned(), o))
        .collect();

    let modes = md_table(&doc, "| Cursor mode | profile |");
    assert_eq!(
        modes.iter().map(|r| r[0].as_str()).collect::<Vec<_>>(),
        ["chat", "composer", "agent"]
    );
    for row in &modes {
        let [mode, profile, replicas, target] = &row[..] else {
            panic!("{row:?}")
        };
        let (lo, hi) = replicas.split_once('–').expect("min–max");
        let (lo, hi): (u64, u64) = (lo.parse().unwrap(), hi.parse().unwrap());
        // A percentage, or no metric at all ("none: no autoscaling").
        let cpu: Option<u64> = target.strip_suffix('%').map(|p| p.parse().unwrap());
        assert_eq!(
            cpu.is_none(),
            target.starts_with("none"),
            "{mode}: {target:?} is a percentage or none"
        );
        if mode == "agent" {
            assert_eq!((lo, hi, cpu), (1, 1, None), "the seed's agent mode");
        }
        let hpas = yaml_docs(&root().join(format!("ops/k8s/{profile}/hpa.yaml")));
        let targets: BTreeSet<String> = hpas
            .iter()
            .map(|h| {
                h["spec"]["scaleTargetRef"]["name"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        assert_eq!(
            targets,
            base.keys().cloned().collect(),
            "{profile} scales every Deployment of the base"
        );
        for hpa in &hpas {
            let at = format!("{profile} {}", hpa["metadata"]["name"].as_str().unwrap());
            assert_eq!(
                hpa["metadata"]["labels"]["sophia.dev/profile"].as_str(),
                Some(mode.as_str()),
                "{at}"
            );
            assert_eq!(hpa["spec"]["minReplicas"].as_u64(), Some(lo), "{at}");
            assert_eq!(hpa["spec"]["maxReplicas"].as_u64(), Some(hi), "{at}");
            match cpu {
                Some(cpu) => {
                    let metrics = hpa["spec"]["metrics"].as_sequence().expect("metrics");
                    assert_eq!(metrics.len(), 1, "{at}: CPU only");
                    let r = &metrics[0]["resource"];
                    assert_eq!(r["name"].as_str(), Some("cpu"), "{at}");
                    assert_eq!(r["target"]["type"].as_str(), Some("Utilization"), "{at}");
                    assert_eq!(
                        r["target"]["averageUtilization"].as_u64(),
                        Some(cpu),
                        "{at}"
                    );
                }
                None => assert!(
                    hpa["spec"]["metrics"].is_null() && hpa["spec"]["behavior"].is_null(),
                    "{at}: no autoscaling, so no metric"
                ),
            }
        }
    }

    // `agent`: one instance, kept available. No voluntary eviction takes it
    // (a disruption budget each, which a broken pod does not hold), rollouts
    // surge before they stop, and a failed node is left after 30 s.
    let budgets = yaml_docs(&root().join("ops/k8s/profiles/agent/pdb.yaml"));
    let gateway_budget = yaml_file("ops/k8s/base/gateway-pdb.yaml");
    for (name, deployment) in &base {
        let budget = budgets
            .iter()
            .chain(std::iter::once(&gateway_budget))
            .find(|b| {
                b["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"].as_str()
                    == Some(name.as_str())
            })
            .unwrap_or_else(|| panic!("{name} has a disruption budget in the agent profile"));
        assert_eq!(budget["spec"]["minAvailable"].as_u64(), Some(1), "{name}");
        assert_eq!(
            budget["spec"]["unhealthyPodEvictionPolicy"].as_str(),
            Some("AlwaysAllow"),
            "{name}: a broken pod does not hold a drain up"
        );
        let rollout = &deployment["spec"]["strategy"]["rollingUpdate"];
        assert_eq!(rollout["maxUnavailable"].as_u64(), Some(0), "{name}");
        assert_eq!(rollout["maxSurge"].as_u64(), Some(1), "{name}");
        let pod = &deployment["spec"]["template"]["spec"];
        for taint in [
            "node.kubernetes.io/not-ready",
            "node.kubernetes.io/unreachable",
        ] {
            let t = pod["tolerations"]
                .as_sequence()
                .into_iter()
                .flatten()
                .find(|t| t["key"].as_str() == Some(taint))
                .unwrap_or_else(|| panic!("{name} tolerates {taint} for a while"));
            assert_eq!(t["effect"].as_str(), Some("NoExecute"), "{name}");
            assert_eq!(t["tolerationSeconds"].as_u64(), Some(30), "{name}: {taint}");
        }
        let spread = &pod["topologySpreadConstraints"][0];
        assert_eq!(
            spread["topologyKey"].as_str(),
            Some("kubernetes.io/hostname"),
            "{name}"
        );
        assert_eq!(
            spread["labelSelector"]["matchLabels"]["app.kubernetes.io/name"].as_str(),
            Some(name.as_str()),
            "{name} spreads its own replicas"
        );
    }
    assert!(
        doc.contains("tolerationSeconds") && doc.contains("30 s"),
        "the doc says what keeps the agent profile's instance available"
    );

    let categories = md_table(&doc, "| category | Deployment |");
    let classes: BTreeMap<String, u64> =
        yaml_docs(&root().join("ops/k8s/base/priorityclasses.yaml"))
            .iter()
            .map(|c| {
                assert_eq!(c["globalDefault"].as_bool(), Some(false));
                (
                    c["metadata"]["name"].as_str().unwrap().to_owned(),
                    c["value"].as_u64().unwrap(),
                )
            })
            .collect();
    let seed = regex_lite::Regex::new(r"^([0-9]+) GB, ([0-9]+) cores?$").unwrap();
    let mut tabled_classes = BTreeMap::new();
    let mut tabled_agno = BTreeSet::new();
    for row in &categories {
        let [
            category,
            deployment,
            seeded,
            resources,
            priority,
            class,
            value,
        ] = &row[..]
        else {
            panic!("{row:?}")
        };
        let c = seed
            .captures(seeded)
            .unwrap_or_else(|| panic!("{category}: the seed's \"N GB, M cores\": {seeded:?}"));
        let (memory, cpu) = (format!("{}Gi", &c[1]), c[2].to_owned());
        assert_eq!(
            resources,
            &format!("cpu: {cpu}, memory: {memory}"),
            "{category}: the seed's GB as Gi and cores as CPUs"
        );
        let d = base
            .get(deployment.as_str())
            .unwrap_or_else(|| panic!("{deployment} is a Deployment of the base"));
        tabled_agno.insert(deployment.clone());
        let pod = &d["spec"]["template"]["spec"];
        let env = format!("{:?}", pod["containers"][0]["env"]);
        assert!(
            env.contains(&format!("String(\"{category}\")")),
            "{deployment} serves {category}: {env}"
        );
        let resources = &pod["containers"][0]["resources"];
        for side in ["requests", "limits"] {
            assert_eq!(
                resources[side]["cpu"].as_str(),
                Some(cpu.as_str()),
                "{deployment} {side}"
            );
            assert_eq!(
                resources[side]["memory"].as_str(),
                Some(memory.as_str()),
                "{deployment} {side}"
            );
        }
        assert_eq!(pod["priorityClassName"].as_str(), Some(class.as_str()));
        assert_eq!(class, &format!("sophia-{priority}"));
        let value: u64 = value.parse().unwrap();
        assert_eq!(classes.get(class.as_str()), Some(&value), "{class}'s value");
        tabled_classes.insert(class.clone(), value);
    }
    assert_eq!(
        tabled_agno,
        base.keys()
            .filter(|n| n.starts_with("agno-worker-"))
            .cloned()
            .collect(),
        "a row per agno-worker Deployment"
    );
    assert_eq!(
        tabled_classes, classes,
        "every PriorityClass is in the table"
    );
    // critical > high > medium.
    assert!(classes["sophia-critical"] > classes["sophia-high"]);
    assert!(classes["sophia-high"] > classes["sophia-medium"]);
    assert_eq!(
        base["agno-worker-infrastructure"]["spec"]["template"]["spec"]["priorityClassName"]
            .as_str(),
        Some("sophia-critical"),
        "infrastructure is the seed's critical category"
    );
}

/// The sample Pulumi project is a Pulumi YAML program whose every
/// `${...}` names a config key or a resource (or a resource's output), so
/// its preview needs nothing but the `random` provider.
#[test]
fn the_sample_pulumi_project_refers_only_to_what_it_defines() {
    let project = yaml_file("pulumi/hello/Pulumi.yaml");
    assert_eq!(project["runtime"].as_str(), Some("yaml"));
    let mut defined: BTreeSet<String> = BTreeSet::new();
    for section in ["config", "resources"] {
        for (k, _) in project[section].as_mapping().unwrap() {
            defined.insert(k.as_str().unwrap().to_owned());
        }
    }
    for (_, r) in project["resources"].as_mapping().unwrap() {
        assert!(r["type"].as_str().unwrap().starts_with("random:"), "{r:?}");
    }
    let text = read("pulumi/hello/Pulumi.yaml");
    let reference = regex_lite::Regex::new(r"\$\{([A-Za-z]+)").unwrap();
    for c in reference.captures_iter(&text) {
        assert!(defined.contains(&c[1]), "${{{}}} is defined", &c[1]);
    }
}
