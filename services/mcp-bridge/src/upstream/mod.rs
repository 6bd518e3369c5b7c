//! Connecting to one upstream MCP server with rmcp's client: a child
//! process in its own process group (stdio), or Streamable HTTP; then
//! `initialize` within the server's start-up budget.

mod handler;
mod stderr;

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::Arc;

use process_wrap::tokio::{CommandWrap, KillOnDrop, ProcessGroup};
use rmcp::service::{Peer, QuitReason, RunningService, RunningServiceCancellationToken};
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::{StreamableHttpClientTransport, TokioChildProcess};
use rmcp::{RoleClient, ServiceExt};

pub(crate) use handler::{Ask, Question, Shared};
pub use stderr::StderrTail;

use crate::config::{ServerConfig, Transport, resolve};
use handler::Bridged;

/// Why a server could not be started; each says what to check.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A secret the configuration names is not in the environment.
    #[error("{0}")]
    MissingSecret(String),
    /// A header name or value cannot be sent.
    #[error("header {name} cannot be sent: {why}")]
    BadHeader {
        /// The header.
        name: String,
        /// Why.
        why: String,
    },
    /// The program could not be run.
    #[error("could not run {command:?}: {source}. Check that it is installed and on PATH")]
    Spawn {
        /// The program.
        command: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The MCP handshake failed (the process exited, or spoke no MCP).
    #[error("MCP initialize failed: {why}{}", tail_note(.stderr))]
    Initialize {
        /// What rmcp reported.
        why: String,
        /// The last lines the server wrote to stderr.
        stderr: String,
    },
    /// The server did not finish `initialize` in time.
    #[error("no answer to MCP initialize within {secs}s (is it an MCP server on stdio? \
             raise init_timeout_ms if it is slow to start){}", tail_note(.stderr))]
    Timeout {
        /// The budget.
        secs: u64,
        /// The last lines the server wrote to stderr.
        stderr: String,
    },
    /// `tools/list` failed.
    #[error("tools/list failed: {0}")]
    ListTools(String),
}

fn tail_note(stderr: &str) -> String {
    if stderr.is_empty() {
        String::new()
    } else {
        format!("; its stderr ends with: {stderr}")
    }
}

/// A live connection to an upstream server, as the calls see it.
#[derive(Debug)]
pub struct Link {
    /// The server's configuration.
    pub server: Arc<ServerConfig>,
    /// The child's process id (stdio), e.g. for `/health`.
    pub pid: Option<u32>,
    /// The last lines of the child's stderr.
    pub stderr: StderrTail,
    pub(crate) shared: Arc<Shared>,
    pub(crate) peer: Peer<RoleClient>,
}

/// A connection, owned by the server's supervisor.
pub struct Connection {
    /// What the calls share.
    pub link: Arc<Link>,
    service: RunningService<RoleClient, Bridged>,
}

impl Connection {
    /// The connection's parts: the link, the token that closes it, and the
    /// future that resolves once it is closed (server exited, or closed).
    pub fn split(
        self,
    ) -> (
        Arc<Link>,
        RunningServiceCancellationToken,
        impl Future<Output = Result<QuitReason, tokio::task::JoinError>>,
    ) {
        let stop = self.service.cancellation_token();
        (self.link, stop, self.service.waiting())
    }
}

/// Starts `server` and completes `initialize`, within its start-up budget.
pub async fn connect(server: Arc<ServerConfig>) -> Result<Connection, StartError> {
    let shared = Shared::new(&server.name);
    let stderr = StderrTail::default();
    let budget = server.init_timeout();
    let (started, pid) = match server.transport() {
        Transport::Stdio { command } => {
            let (child, err) = spawn(&server, command)?;
            let pid = child.id();
            if let Some(err) = err {
                stderr.follow(&server.name, err);
            }
            let init = Bridged(shared.clone()).serve(child);
            (tokio::time::timeout(budget, init).await, pid)
        }
        Transport::Http { url } => {
            let transport = http_transport(&server, url)?;
            let init = Bridged(shared.clone()).serve(transport);
            (tokio::time::timeout(budget, init).await, None)
        }
    };
    let service = match started {
        Err(_) => {
            return Err(StartError::Timeout {
                secs: budget.as_secs(),
                stderr: stderr.settled().await,
            });
        }
        Ok(Err(e)) => {
            return Err(StartError::Initialize {
                why: e.to_string(),
                stderr: stderr.settled().await,
            });
        }
        Ok(Ok(service)) => service,
    };
    let peer = service.peer().clone();
    let link = Arc::new(Link {
        server,
        pid,
        stderr,
        shared,
        peer,
    });
    Ok(Connection { link, service })
}

/// The bridge's NATS credentials, kept from the servers it starts.
const NATS_SECRETS: [&str; 5] = [
    "NATS_PASSWORD",
    "NATS_USER",
    "NATS_CREDS",
    "NATS_TLS_KEY",
    "NATS_URL",
];

/// The child process: in a new process group (so stopping it stops what it
/// started), killed if dropped, stderr captured.
fn spawn(
    server: &ServerConfig,
    command: &str,
) -> Result<(TokioChildProcess, Option<tokio::process::ChildStderr>), StartError> {
    let mut cmd = tokio::process::Command::new(command);
    cmd.args(&server.args);
    // The bridge's own NATS credentials are not the server's business: an
    // upstream server is third-party code and must not reach the bus as
    // the bridge.
    for name in NATS_SECRETS {
        cmd.env_remove(name);
    }
    for (name, value) in &server.env {
        let key = format!("servers ({}).env.{name}", server.name);
        cmd.env(
            name,
            resolve(&key, value).map_err(StartError::MissingSecret)?,
        );
    }
    if let Some(cwd) = &server.cwd {
        cmd.current_dir(cwd);
    }
    let mut wrap = CommandWrap::from(cmd);
    wrap.wrap(ProcessGroup::leader()).wrap(KillOnDrop);
    TokioChildProcess::builder(wrap)
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| StartError::Spawn {
            command: command.to_owned(),
            source,
        })
}

/// Streamable HTTP to `url`, with the configured headers read from the
/// environment (their values are never logged).
fn http_transport(
    server: &ServerConfig,
    url: &str,
) -> Result<StreamableHttpClientTransport<reqwest::Client>, StartError> {
    // reqwest is built without a default crypto provider; use ring, as NATS does.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut headers = HashMap::new();
    for (name, value) in &server.headers {
        let key = format!("servers ({}).headers.{name}", server.name);
        let value = resolve(&key, value).map_err(StartError::MissingSecret)?;
        let bad = |why: String| StartError::BadHeader {
            name: name.clone(),
            why,
        };
        let name = http::HeaderName::try_from(name.as_str()).map_err(|e| bad(e.to_string()))?;
        let mut value = http::HeaderValue::try_from(value)
            .map_err(|_| bad("its value is not a valid header value".into()))?;
        value.set_sensitive(true);
        headers.insert(name, value);
    }
    Ok(StreamableHttpClientTransport::from_config(
        StreamableHttpClientTransportConfig::with_uri(url.to_owned()).custom_headers(headers),
    ))
}
