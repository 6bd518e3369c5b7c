//! Connecting to NATS: URL, credentials file, TLS, and reconnect with
//! jittered exponential backoff. The connection's state is watched so that
//! `/ready` and the metrics can report it, and so services can react to a
//! reconnect (workers announce themselves again).

use std::path::PathBuf;
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::{Duration, SystemTime};

use async_nats::{ConnectOptions, Event};
use tokio::sync::watch;

use crate::KitError;

/// How to reach NATS. Flattened into every service's command line.
#[derive(Clone, Debug, clap::Args)]
pub struct NatsConfig {
    /// NATS server URL(s), comma separated.
    #[arg(
        long = "nats-url",
        env = "NATS_URL",
        default_value = "nats://127.0.0.1:4222"
    )]
    pub url: String,
    /// A NATS credentials file (JWT + NKey seed), one per service for
    /// least-privilege access.
    #[arg(long = "nats-creds", env = "NATS_CREDS")]
    pub creds: Option<PathBuf>,
    /// A NATS user name (with `--nats-password`), for servers configured with
    /// per-service users such as `ops/nats/nats.conf`.
    #[arg(long = "nats-user", env = "NATS_USER", requires = "password")]
    pub user: Option<String>,
    /// The NATS user's password. Never logged.
    #[arg(
        long = "nats-password",
        env = "NATS_PASSWORD",
        hide_env_values = true,
        requires = "user"
    )]
    pub password: Option<String>,
    /// A CA certificate (PEM) to verify the server with; turns TLS on.
    #[arg(long = "nats-tls-ca", env = "NATS_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// A client certificate (PEM) for mutual TLS; needs `--nats-tls-key`.
    #[arg(long = "nats-tls-cert", env = "NATS_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long = "nats-tls-key", env = "NATS_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

impl NatsConfig {
    /// A configuration for a plain connection to `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            creds: None,
            user: None,
            password: None,
            tls_ca: None,
            tls_cert: None,
            tls_key: None,
        }
    }
}

/// The state of a service's NATS connection, as last reported by the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkState {
    /// Not connected yet, or connection lost and reconnecting.
    Down,
    /// Connected.
    Up,
}

/// A connected client plus a live view of its connection state.
#[derive(Clone, Debug)]
pub struct Connection {
    /// The client.
    pub client: async_nats::Client,
    /// Changes to [`LinkState::Up`] on every (re)connect.
    pub state: watch::Receiver<LinkState>,
    /// Counts reconnects (connects after the first).
    pub connects: watch::Receiver<u64>,
    /// The server URL(s), without credentials: for messages.
    pub url: String,
    /// Since when the link has been down (`None` while up).
    down_since: Arc<Mutex<Option<SystemTime>>>,
}

impl Connection {
    /// Whether the client is connected right now.
    pub fn is_up(&self) -> bool {
        *self.state.borrow() == LinkState::Up
            && self.client.connection_state() == async_nats::connection::State::Connected
    }

    /// Waits until the client is connected: for start-up steps that need the
    /// server (JetStream set-up). Meanwhile the client keeps retrying with
    /// backoff, each failure logged at WARN with the URL.
    pub async fn connected(&self) {
        let mut state = self.state.clone();
        let _ = state.wait_for(|s| *s == LinkState::Up).await;
    }

    /// Since when the link has been down, if it is.
    pub fn down_since(&self) -> Option<SystemTime> {
        if self.is_up() {
            return None;
        }
        Some(self.down_since.lock().unwrap_or_else(SystemTime::now))
    }

    /// While the link is down, what to tell a caller: which server, since
    /// when, and what to do.
    pub fn down_message(&self) -> Option<String> {
        let since = self.down_since()?;
        let secs = since.elapsed().map(|d| d.as_secs()).unwrap_or(0);
        Some(format!(
            "the message bus is down: NATS at {} unreachable since {} ({secs} s); \
             calls resume once it is back. Check that nats-server runs (NATS_URL)",
            self.url,
            httpdate::fmt_http_date(since)
        ))
    }
}

/// `url` with any `user:password@` (or token) removed, for logs and errors.
pub fn redact(url: &str) -> String {
    url.split(',')
        .map(|one| match (one.find("://"), one.rfind('@')) {
            (Some(scheme), Some(at)) if at > scheme => {
                format!("{}://***@{}", &one[..scheme], &one[at + 1..])
            }
            (None, Some(at)) => format!("***@{}", &one[at + 1..]),
            _ => one.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The delay before reconnect attempt `attempts`: exponential from 100 ms,
/// capped at 5 s, with up to 25% random jitter so replicas do not stampede.
pub fn backoff(attempts: usize) -> Duration {
    if attempts == 0 {
        return Duration::ZERO;
    }
    let exp = attempts.min(16) as u32 - 1;
    let base = (100u64 << exp).min(5_000);
    let jitter = (uuid::Uuid::new_v4().as_u128() % (base as u128 / 4 + 1)) as u64;
    Duration::from_millis(base + jitter)
}

/// Connects to NATS as `name`. The connection retries in the background if
/// the server is not up yet, so services can start before NATS does; bad
/// credentials or TLS files are reported at once.
pub async fn connect(config: &NatsConfig, name: &str) -> Result<Connection, KitError> {
    let (state_tx, state_rx) = watch::channel(LinkState::Down);
    let (connects_tx, connects_rx) = watch::channel(0u64);
    let url = redact(&config.url);
    let link = LinkEvents {
        state: state_tx,
        connects: connects_tx,
        url: url.clone(),
        down_since: Arc::new(Mutex::new(Some(SystemTime::now()))),
        last_error: Arc::default(),
    };
    let down_since = link.down_since.clone();
    let retry = link.clone();
    let options = auth_options(config)
        .await?
        .name(name)
        .retry_on_initial_connect()
        .max_reconnects(None)
        .connection_timeout(Duration::from_secs(5))
        .reconnect_delay_callback(move |attempts| retry.retry_in(attempts))
        .event_callback(move |event| {
            let link = link.clone();
            async move { link.record(event) }
        });
    let client = options
        .connect(servers(config)?)
        .await
        .map_err(|e| KitError::Config {
            key: "NATS_URL",
            message: format!("cannot use NATS at {}: {e}", redact(&config.url)),
        })?;
    Ok(Connection {
        client,
        state: state_rx,
        connects: connects_rx,
        url,
        down_since,
    })
}

/// Credentials and TLS from the configuration.
async fn auth_options(config: &NatsConfig) -> Result<ConnectOptions, KitError> {
    let mut options = match &config.creds {
        Some(path) => ConnectOptions::with_credentials_file(path.clone())
            .await
            .map_err(|e| KitError::Config {
                key: "NATS_CREDS",
                message: format!("cannot read credentials file {}: {e}", path.display()),
            })?,
        None => ConnectOptions::new(),
    };
    if let (Some(user), Some(password)) = (&config.user, &config.password) {
        options = options.user_and_password(user.clone(), password.clone());
    }
    if let Some(ca) = &config.tls_ca {
        options = options.add_root_certificates(ca.clone()).require_tls(true);
    }
    if let (Some(cert), Some(key)) = (&config.tls_cert, &config.tls_key) {
        options = options.add_client_certificate(cert.clone(), key.clone());
    }
    Ok(options)
}

/// Several servers (a cluster), comma separated: the client picks one and
/// moves to another if it goes away.
fn servers(config: &NatsConfig) -> Result<Vec<async_nats::ServerAddr>, KitError> {
    config
        .url
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(|u| u.parse::<async_nats::ServerAddr>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| KitError::Config {
            key: "NATS_URL",
            message: format!("{}: {e}", redact(&config.url)),
        })
}

/// What the client's events say about the link, kept for [`Connection`].
#[derive(Clone)]
struct LinkEvents {
    state: watch::Sender<LinkState>,
    connects: watch::Sender<u64>,
    url: String,
    down_since: Arc<Mutex<Option<SystemTime>>>,
    /// The last client error, for the retry warnings.
    last_error: Arc<Mutex<String>>,
}

impl LinkEvents {
    /// The delay before reconnect attempt `attempts`, warning (with the
    /// last error) from the second attempt on: one has failed by then.
    fn retry_in(&self, attempts: usize) -> Duration {
        let delay = backoff(attempts);
        if attempts > 1 {
            let cause = self.last_error.lock().clone();
            tracing::warn!(
                url = %self.url,
                cause = %cause,
                attempt = attempts,
                retry_in = ?delay,
                "cannot reach NATS; retrying (is nats-server running at NATS_URL?)"
            );
        }
        delay
    }

    fn record(&self, event: Event) {
        let url = &self.url;
        match event {
            Event::Connected => {
                tracing::info!(url = %url, "connected to NATS");
                *self.down_since.lock() = None;
                self.state.send_replace(LinkState::Up);
                self.connects.send_modify(|n| *n += 1);
            }
            Event::Disconnected => {
                tracing::warn!(url = %url, "lost the NATS connection; reconnecting");
                self.down_since.lock().get_or_insert_with(SystemTime::now);
                self.state.send_replace(LinkState::Down);
            }
            Event::ClientError(e) => {
                tracing::debug!(url = %url, cause = %e, "NATS client error");
                *self.last_error.lock() = e.to_string();
            }
            other => tracing::info!(url = %url, event = %other, "NATS event"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_never_reach_logs() {
        assert_eq!(redact("nats://gw:s3cret@nats:4222"), "nats://***@nats:4222");
        assert_eq!(
            redact("nats://a:b@h1:4222,nats://h2:4222"),
            "nats://***@h1:4222,nats://h2:4222"
        );
        assert_eq!(redact("nats://127.0.0.1:4222"), "nats://127.0.0.1:4222");
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        assert_eq!(backoff(0), Duration::ZERO);
        let first = backoff(1);
        assert!(first >= Duration::from_millis(100) && first <= Duration::from_millis(125));
        for n in [10, 20, 1000] {
            let d = backoff(n);
            assert!(
                d >= Duration::from_secs(5) && d <= Duration::from_millis(6_250),
                "{d:?}"
            );
        }
    }
}
