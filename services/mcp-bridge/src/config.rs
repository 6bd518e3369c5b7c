//! The bridge's configuration: a TOML file listing upstream MCP servers
//! (`SOPHIA_BRIDGE_CONFIG` or `--config`), next to the kit's worker settings.
//!
//! ```toml
//! [[servers]]
//! name = "everything"
//! category = "code_generation"
//! command = "npx"
//! args = ["-y", "@modelcontextprotocol/server-everything@2026.8.31"]
//! ```
//!
//! Secrets never live in the file: a header or environment value written
//! `env:NAME` is read from the bridge's own environment when the server
//! starts.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use sophia_kit::{Category, WorkerConfig};

/// The longest server name: the worker is `bridge-<name>`.
pub const MAX_SERVER_NAME_LEN: usize = 40;
/// How long a server may take to start and answer `initialize`, by default.
pub const DEFAULT_INIT_TIMEOUT_MS: u64 = 60_000;
/// The prefix of a value read from the bridge's environment.
pub const ENV_PREFIX: &str = "env:";

/// The `mcp-bridge` binary's command line.
#[derive(Clone, Debug, clap::Parser)]
#[command(
    name = "mcp-bridge",
    version,
    about = "Puts existing MCP servers on the Sophia Mesh"
)]
pub struct Cli {
    /// Mesh settings.
    #[command(flatten)]
    pub worker: WorkerConfig,
    /// The TOML file listing the MCP servers to bridge (see docs/bridge.md).
    #[arg(long = "config", env = "SOPHIA_BRIDGE_CONFIG")]
    pub config: PathBuf,
}

/// Everything the bridge runs with.
#[derive(Clone, Debug)]
pub struct BridgeConfig {
    /// How the bridge (and each server's worker) reaches the mesh. Its
    /// `http_addr` serves the bridge's own `/health`; the servers' workers
    /// serve theirs on ephemeral loopback ports.
    pub worker: WorkerConfig,
    /// The upstream servers, in file order.
    pub servers: Vec<ServerConfig>,
}

/// Why the configuration is unusable; the message names the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("could not read the bridge configuration {path} (SOPHIA_BRIDGE_CONFIG): {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A key has a bad value, or the TOML does not parse.
    #[error("bad bridge configuration: {key}: {message}")]
    Key {
        /// The key at fault, e.g. `servers[1] (hubspot).url`.
        key: String,
        /// What is wrong and what to write instead.
        message: String,
    },
}

/// One upstream MCP server.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// `[A-Za-z0-9_-]`, unique: the worker is `bridge-<name>`.
    pub name: String,
    /// The mesh category its tools are served in.
    pub category: Category,
    /// stdio: the program to run.
    #[serde(default)]
    pub command: Option<String>,
    /// stdio: its arguments.
    #[serde(default)]
    pub args: Vec<String>,
    /// stdio: extra environment (`env:NAME` reads NAME from the bridge's).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// stdio: its working directory.
    #[serde(default)]
    pub cwd: Option<PathBuf>,
    /// Streamable HTTP: the server's MCP endpoint.
    #[serde(default)]
    pub url: Option<String>,
    /// Streamable HTTP: headers, each `env:NAME` (read from the environment).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Only these upstream tools (upstream names); empty means all.
    #[serde(default)]
    pub allow: Vec<String>,
    /// Never these upstream tools (upstream names).
    #[serde(default)]
    pub deny: Vec<String>,
    /// Tool names on the mesh are `<prefix>_<tool>`; default: the name.
    /// `""` keeps the upstream's own names (still checked for clashes).
    #[serde(default)]
    pub prefix: Option<String>,
    /// How long callers wait for this server's tools, in milliseconds
    /// (default: the gateway's).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// How long the server may take to start and initialize, in milliseconds.
    #[serde(default)]
    pub init_timeout_ms: Option<u64>,
    /// How many bridge replicas serve it: each its own copy (`"all"`, the
    /// default), or exactly one at a time (`"single"`, leased on JetStream
    /// KV: for servers that keep state on local disk).
    #[serde(default)]
    pub replicas: Replicas,
}

/// Which bridge replicas serve a server (`replicas` in the file).
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Replicas {
    /// Every replica runs its own copy; calls are shared through the queue
    /// group.
    #[default]
    All,
    /// One replica at a time, the holder of the server's lease (`lease.rs`).
    Single,
}

/// How the bridge reaches a server.
#[derive(Clone, Debug, PartialEq)]
pub enum Transport<'a> {
    /// A child process speaking MCP on stdin and stdout.
    Stdio {
        /// The program.
        command: &'a str,
    },
    /// Streamable HTTP.
    Http {
        /// The MCP endpoint.
        url: &'a str,
    },
}

impl ServerConfig {
    /// A stdio server running `command args...`.
    pub fn stdio(name: &str, category: Category, command: &str, args: &[&str]) -> Self {
        let mut s = Self::blank(name, category);
        s.command = Some(command.to_owned());
        s.args = args.iter().map(|a| a.to_string()).collect();
        s
    }

    /// A Streamable HTTP server at `url`.
    pub fn http(name: &str, category: Category, url: &str) -> Self {
        let mut s = Self::blank(name, category);
        s.url = Some(url.to_owned());
        s
    }

    fn blank(name: &str, category: Category) -> Self {
        Self {
            name: name.to_owned(),
            category,
            command: None,
            args: Vec::new(),
            env: BTreeMap::new(),
            cwd: None,
            url: None,
            headers: BTreeMap::new(),
            allow: Vec::new(),
            deny: Vec::new(),
            prefix: None,
            timeout_ms: None,
            init_timeout_ms: None,
            replicas: Replicas::All,
        }
    }

    /// The transport ([`BridgeConfig::validate`] checks there is exactly one).
    pub fn transport(&self) -> Transport<'_> {
        match (&self.command, &self.url) {
            (Some(command), _) => Transport::Stdio { command },
            (None, Some(url)) => Transport::Http { url },
            (None, None) => Transport::Stdio { command: "" },
        }
    }

    /// The prefix of its tools' names on the mesh.
    pub fn prefix(&self) -> &str {
        self.prefix.as_deref().unwrap_or(&self.name)
    }

    /// The mesh name of upstream tool `tool` (its own with prefix `""`).
    pub fn mesh_name(&self, tool: &str) -> String {
        match self.prefix() {
            "" => tool.to_owned(),
            prefix => format!("{prefix}_{tool}"),
        }
    }

    /// Whether upstream tool `tool` is put on the mesh (allow and deny lists).
    pub fn exposes(&self, tool: &str) -> bool {
        (self.allow.is_empty() || self.allow.iter().any(|a| a == tool))
            && !self.deny.iter().any(|d| d == tool)
    }

    /// The worker's service name.
    pub fn service(&self) -> String {
        format!("bridge-{}", self.name)
    }

    /// How long to wait for start-up and `initialize`.
    pub fn init_timeout(&self) -> Duration {
        Duration::from_millis(self.init_timeout_ms.unwrap_or(DEFAULT_INIT_TIMEOUT_MS))
    }
}

/// Reads `value`: `env:NAME` from the environment (an error names NAME and
/// `key`), anything else as written.
pub fn resolve(key: &str, value: &str) -> Result<String, String> {
    match value.strip_prefix(ENV_PREFIX) {
        Some(var) => std::env::var(var)
            .map_err(|_| format!("{var} is not set ({key} names it): export it and restart")),
        None => Ok(value.to_owned()),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    servers: Vec<ServerConfig>,
}

impl BridgeConfig {
    /// Reads and checks the file at `path`.
    pub fn load(path: &Path, worker: WorkerConfig) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml(&text, worker).map_err(|e| match e {
            ConfigError::Key { key, message } => ConfigError::Key {
                key: format!("{}: {key}", path.display()),
                message,
            },
            other => other,
        })
    }

    /// Parses and checks a configuration given as TOML text.
    pub fn from_toml(text: &str, worker: WorkerConfig) -> Result<Self, ConfigError> {
        let file: File = toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].lines().count().max(1));
            ConfigError::Key {
                key: line.map_or("the file".into(), |l| format!("line {l}")),
                message: e.message().replace('\n', " "),
            }
        })?;
        let config = Self {
            worker,
            servers: file.servers,
        };
        config.validate()?;
        Ok(config)
    }

    /// Checks names, transports, prefixes and headers.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let (mut names, mut prefixes) = (HashSet::new(), HashSet::new());
        if self.servers.is_empty() {
            return Err(key_error("servers", "no [[servers]]: add at least one"));
        }
        for (i, s) in self.servers.iter().enumerate() {
            let at = |k: &str| format!("servers[{i}] ({}).{k}", s.name);
            check_token(&s.name, MAX_SERVER_NAME_LEN).map_err(|m| key_error(&at("name"), &m))?;
            if !names.insert(s.name.as_str()) {
                return Err(key_error(&at("name"), "another server has this name"));
            }
            if !Category::AGENTS.contains(&s.category) {
                let m = "expected business_intelligence, infrastructure or code_generation";
                return Err(key_error(&at("category"), m));
            }
            // "" (upstream names as they are) may be shared: clashes
            // between tools are refused at start, naming both.
            if s.prefix().is_empty() {
                check_transport(s, &at)?;
                continue;
            }
            check_token(s.prefix(), 40).map_err(|m| key_error(&at("prefix"), &m))?;
            if !prefixes.insert(s.prefix()) {
                let m = "another server has this prefix (its name, unless `prefix` is set): \
                         set a distinct `prefix` so tool names cannot clash";
                return Err(key_error(&at("prefix"), m));
            }
            check_transport(s, &at)?;
        }
        Ok(())
    }
}

fn check_transport(s: &ServerConfig, at: &dyn Fn(&str) -> String) -> Result<(), ConfigError> {
    match (&s.command, &s.url) {
        (Some(_), Some(_)) => Err(key_error(
            &at("url"),
            "a server has either `command` (stdio) or `url` (Streamable HTTP), not both",
        )),
        (None, None) => Err(key_error(
            &at("command"),
            "missing: give `command` (stdio) or `url` (Streamable HTTP)",
        )),
        (Some(c), None) => {
            if c.trim().is_empty() {
                return Err(key_error(&at("command"), "is empty"));
            }
            if !s.headers.is_empty() {
                return Err(key_error(&at("headers"), "only for `url` servers"));
            }
            Ok(())
        }
        (None, Some(url)) => {
            let uri: http::Uri = url
                .parse()
                .map_err(|e| key_error(&at("url"), &format!("not a URL: {e}")))?;
            if !matches!(uri.scheme_str(), Some("http" | "https")) {
                return Err(key_error(&at("url"), "must start with http:// or https://"));
            }
            if !s.args.is_empty() || !s.env.is_empty() || s.cwd.is_some() {
                return Err(key_error(
                    &at("args"),
                    "args, env and cwd are for stdio servers",
                ));
            }
            for (name, value) in &s.headers {
                if !value.starts_with(ENV_PREFIX) {
                    let m = "header values name an environment variable (\"env:NAME\"): \
                             secrets never go in this file";
                    return Err(key_error(&at(&format!("headers.{name}")), m));
                }
            }
            Ok(())
        }
    }
}

fn check_token(s: &str, max: usize) -> Result<(), String> {
    if s.is_empty() || s.len() > max {
        return Err(format!("must be 1 to {max} characters"));
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err("may only contain A-Z, a-z, 0-9, '_' and '-'".into());
    }
    Ok(())
}

fn key_error(key: &str, message: &str) -> ConfigError {
    ConfigError::Key {
        key: key.to_owned(),
        message: message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<BridgeConfig, ConfigError> {
        BridgeConfig::from_toml(text, WorkerConfig::new("nats://127.0.0.1:4222"))
    }

    #[test]
    fn a_stdio_server_in_five_lines() {
        let c = parse(
            "[[servers]]\nname = \"everything\"\ncategory = \"code_generation\"\n\
             command = \"npx\"\nargs = [\"-y\", \"x\"]\n",
        )
        .unwrap();
        let s = &c.servers[0];
        assert_eq!(s.transport(), Transport::Stdio { command: "npx" });
        assert_eq!(s.mesh_name("echo"), "everything_echo");
        assert_eq!(s.service(), "bridge-everything");
        assert_eq!(s.replicas, Replicas::All);
    }

    #[test]
    fn a_server_with_state_on_disk_is_served_by_a_single_replica() {
        let c = parse(
            "[[servers]]\nname = \"git\"\ncategory = \"code_generation\"\n\
             command = \"x\"\nreplicas = \"single\"\n",
        )
        .unwrap();
        assert_eq!(c.servers[0].replicas, Replicas::Single);
        let e = parse(
            "[[servers]]\nname = \"git\"\ncategory = \"code_generation\"\n\
             command = \"x\"\nreplicas = \"two\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("line 5") && e.contains("single"), "{e}");
    }

    #[test]
    fn bad_values_name_the_key_on_one_line() {
        for (text, key) in [
            (
                "[[servers]]\nname = \"a b\"\ncategory = \"code_generation\"\ncommand = \"x\"\n",
                "name",
            ),
            (
                "[[servers]]\nname = \"a\"\ncategory = \"inference\"\ncommand = \"x\"\n",
                "category",
            ),
            (
                "[[servers]]\nname = \"a\"\ncategory = \"code_generation\"\n",
                "command",
            ),
            (
                "[[servers]]\nname = \"a\"\ncategory = \"code_generation\"\nurl = \"http://h/mcp\"\n\
                 headers = { Authorization = \"Bearer s3cret\" }\n",
                "headers.Authorization",
            ),
            (
                "[[servers]]\nname = \"a\"\ncategory = \"code_generation\"\ncommand = \"x\"\n\
                 [[servers]]\nname = \"b\"\nprefix = \"a\"\ncategory = \"code_generation\"\ncommand = \"x\"\n",
                "prefix",
            ),
            ("[[servers]]\nname = \"a\"\ncolor = \"red\"\n", "line 2"),
        ] {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains(key), "{key}: {e}");
            assert!(!e.contains('\n'), "{e}");
            assert!(!e.contains("s3cret"), "{e}");
        }
    }

    #[test]
    fn allow_and_deny_lists() {
        let mut s = ServerConfig::stdio("a", Category::CodeGeneration, "x", &[]);
        assert!(s.exposes("anything"));
        s.allow = vec!["echo".into(), "sum".into()];
        s.deny = vec!["sum".into()];
        assert!(s.exposes("echo"));
        assert!(!s.exposes("sum"));
        assert!(!s.exposes("other"));
    }

    #[test]
    fn env_values_come_from_the_environment() {
        assert_eq!(resolve("k", "plain").unwrap(), "plain");
        let e = resolve("servers[0].headers.X", "env:SOPHIA_BRIDGE_SURELY_UNSET").unwrap_err();
        assert!(
            e.contains("SOPHIA_BRIDGE_SURELY_UNSET") && e.contains("headers.X"),
            "{e}"
        );
    }
}
