//! The mesh console at `/console`: a web page that shows the mesh live
//! (Mesh, Traffic, Work) and lets a person approve or reject pending
//! changes. See `docs/console.md`.
//!
//! # How it is put together
//! - [`auth`]: who is looking. The same credentials as `/mcp` (an API key,
//!   the gateway token or an OAuth access token), sent as a bearer header
//!   or kept, after the login form, in an `HttpOnly`, `SameSite=Strict`
//!   cookie. POSTs need an allowed `Origin` and the CSRF token.
//! - [`traffic`]: the calls this gateway sent, in bounded windows, with
//!   latency histograms ([`latency`]).
//! - [`view`]: the state the page shows, as JSON: the mesh from the
//!   registry and the bus link, the traffic, and the work lists.
//! - [`work`]: the work lists, read from the workers' own tools as the
//!   person looking (so the policy decides what they see), and the
//!   decisions, made by calling `pulumi_up`, `pulumi_destroy`,
//!   `pulumi_reject_preview` or `agno_confirm` as that person.
//! - [`page`]: the page itself, static HTML, CSS and JavaScript compiled
//!   into the binary (no build step, nothing fetched from elsewhere).
//!
//! The page asks `/console/api/session` for its CSRF token, then follows
//! `/console/api/events`, a server-sent event stream with the whole state
//! every second; it renders everything with `textContent`, never as HTML.

mod auth;
mod latency;
mod page;
pub mod traffic;
mod view;
mod work;

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio_util::sync::CancellationToken;

pub use traffic::{Ending, Traffic};

use crate::config::GatewayConfig;
use crate::identity::Authenticator;
use crate::mcp::McpGateway;

/// The console's shared state. Cheap to clone.
#[derive(Clone)]
pub struct Console(Arc<Inner>);

struct Inner {
    gateway: McpGateway,
    auth: Arc<Authenticator>,
    allowed_origins: Vec<String>,
    allowed_hosts: Vec<String>,
    /// Where an error's trace is shown, with `{trace_id}` to fill in.
    trace_url: Option<String>,
    /// Whether the login cookie is `Secure` (the gateway is served as https).
    secure_cookie: bool,
    decisions: work::Decisions,
    instance: String,
    started: Instant,
    stop: CancellationToken,
}

impl Console {
    /// The console of `gateway`, with `config`'s origins, hosts and trace
    /// links; its streams end when `stop` fires.
    pub fn new(
        gateway: McpGateway,
        auth: Arc<Authenticator>,
        config: &GatewayConfig,
        instance: String,
        stop: CancellationToken,
    ) -> Self {
        let secure_cookie = config
            .identity
            .public_url
            .as_deref()
            .is_some_and(|u| u.starts_with("https://"));
        Self(Arc::new(Inner {
            gateway,
            auth,
            allowed_origins: config.allowed_origins.clone(),
            allowed_hosts: config.allowed_hosts.clone(),
            trace_url: config
                .trace_url_template
                .clone()
                .filter(|t| t.starts_with("http://") || t.starts_with("https://")),
            secure_cookie,
            decisions: work::Decisions::default(),
            instance,
            started: Instant::now(),
            stop,
        }))
    }
}

/// The console's routes: the page, its assets, its JSON API and its event
/// stream, each checking credentials itself (see [`auth`]).
pub fn router(console: Console) -> Router {
    use axum::routing::{any, get, post};
    Router::new()
        .route("/console", get(page::index))
        .route("/console/", get(page::index))
        .route("/console/login", post(auth::login))
        .route("/console/logout", post(auth::logout))
        .route("/console/app.js", get(page::script))
        .route("/console/app.css", get(page::style))
        .route("/console/api/session", get(view::session))
        .route("/console/api/state", get(view::state))
        .route("/console/api/events", get(view::events))
        .route("/console/api/decide", post(work::decide))
        .route("/console/{*rest}", any(not_found))
        .with_state(console)
}

/// Anything else under `/console/`: 401 without credentials, like every
/// console route, else 404.
async fn not_found(State(console): State<Console>, headers: HeaderMap) -> Response {
    match console.viewer(&headers, "/console").await {
        Ok(_) => (StatusCode::NOT_FOUND, "no such page\n").into_response(),
        Err(refused) => refused,
    }
}
