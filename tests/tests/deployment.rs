//! Static checks of `docker-compose.mcp.yml`, the Dockerfile and the NATS
//! configuration against the code: no Docker engine runs in CI, so these
//! catch the drift a `docker compose up` would otherwise find first.

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
    let published = format!("{:?}", s["gateway"]["ports"]);
    assert!(published.contains("127.0.0.1:8000:8000"), "{published}");
    assert!(
        s["agno-worker"]["deploy"]["replicas"].as_u64().unwrap() >= 2,
        "workers run replicas"
    );
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
        if name == "nats" {
            continue;
        }
        let image = if name == "pulumi-worker" {
            "sophia-pulumi-worker:dev"
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

#[test]
fn every_environment_variable_is_one_the_services_read() {
    let known = config_env_keys();
    // Read by libraries rather than our flags, or by nats-server's config file.
    let passthrough = [
        "RUST_LOG",
        "SOPHIA_NATS_GATEWAY_PASSWORD",
        "SOPHIA_NATS_WORKER_PASSWORD",
        "SOPHIA_NATS_AGNO_PASSWORD",
    ];
    for (name, svc) in services(&compose()) {
        for key in env_of(&svc).keys() {
            assert!(
                known.contains(key) || passthrough.contains(&key.as_str()),
                "{name} sets {key}, which no service reads (typo?)"
            );
        }
    }
}

#[test]
fn nats_gets_jetstream_and_the_users_the_services_log_in_as() {
    let c = compose();
    let s = services(&c);
    let nats = &s["nats"];
    let command = format!("{:?}", nats["command"]);
    assert!(command.contains("/etc/nats/nats.conf"), "{command}");
    let mounted = format!("{:?}", nats["volumes"]);
    assert!(mounted.contains("./ops/nats/nats.conf:/etc/nats/nats.conf"));
    let conf = read("ops/nats/nats.conf");
    assert!(conf.contains("jetstream: enabled"));
    for var in [
        "SOPHIA_NATS_GATEWAY_PASSWORD",
        "SOPHIA_NATS_WORKER_PASSWORD",
        "SOPHIA_NATS_AGNO_PASSWORD",
    ] {
        assert!(conf.contains(&format!("${var}")), "nats.conf reads {var}");
        assert!(env_of(nats).contains_key(var), "compose gives nats {var}");
    }
    for (name, svc) in &s {
        if name == "nats" {
            continue;
        }
        let user = env_of(svc).get("NATS_USER").cloned().unwrap_or_default();
        assert!(
            conf.contains(&format!("user: {user}\n")),
            "{name} logs in as {user:?}, a user in nats.conf"
        );
    }
}
