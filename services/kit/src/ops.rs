//! The operations endpoints every service serves over HTTP: `/health`
//! (alive), `/ready` (connected to the bus and registered) and `/metrics`
//! (Prometheus text format).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::serve::ListenerExt;
use prometheus_client::registry::Registry;

use crate::KitError;

/// Answers whether the service is ready, and why not.
pub type ReadyCheck = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// What `/health` says beyond "alive" (the gateway sums up the mesh).
pub type HealthDetail = Arc<dyn Fn() -> serde_json::Value + Send + Sync>;

#[derive(Clone)]
struct OpsState {
    registry: Arc<Registry>,
    ready: ReadyCheck,
    detail: Option<HealthDetail>,
}

/// The `/health`, `/ready` and `/metrics` routes, to serve alone or merge
/// into a service's own router.
pub fn router(registry: Arc<Registry>, ready: ReadyCheck) -> Router {
    router_with(registry, ready, None)
}

/// [`router`], with `/health` answering `detail()` as JSON (status 200
/// while the process is alive, whatever the detail says).
pub fn router_with(
    registry: Arc<Registry>,
    ready: ReadyCheck,
    detail: Option<HealthDetail>,
) -> Router {
    Router::new()
        .route("/health", get(health_handler))
        .route("/ready", get(ready_handler))
        .route("/metrics", get(metrics_handler))
        .with_state(OpsState {
            registry,
            ready,
            detail,
        })
}

/// A worker's operations port, told where the mesh's API is: any other path
/// (say `POST :8090/mcp/agno/create_agent`, as the seed's examples put it)
/// answers 404 with the same path on the gateway and the header it needs.
/// The gateway is the one front door, so authentication, limits and audit
/// stay in one place.
pub fn gateway_pointer(gateway_url: String) -> Router {
    let gateway_url: Arc<str> = gateway_url.trim_end_matches('/').into();
    Router::new().fallback(move |req: axum::extract::Request| {
        let gateway_url = gateway_url.clone();
        async move {
            let path = req.uri().path();
            let url = format!("{gateway_url}{path}");
            let body = serde_json::json!({
                "error": format!(
                    "{path} is not served here: this is a worker's operations port \
                     (/health, /ready, /metrics). The mesh's API is on the gateway: {} {url} \
                     with the header `Authorization: Bearer <SOPHIA_GATEWAY_TOKEN>` \
                     (ops/scripts/up.sh keeps it in .sophia/gateway-token)",
                    req.method()
                ),
                "gateway": url,
                "header": "Authorization: Bearer <SOPHIA_GATEWAY_TOKEN>",
            });
            (StatusCode::NOT_FOUND, axum::Json(body))
        }
    })
}

async fn health_handler(State(state): State<OpsState>) -> axum::response::Response {
    match &state.detail {
        None => "ok\n".into_response(),
        Some(detail) => axum::Json(detail()).into_response(),
    }
}

async fn ready_handler(State(state): State<OpsState>) -> impl IntoResponse {
    match (state.ready)() {
        Ok(()) => (StatusCode::OK, "ready\n".to_owned()),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        ),
    }
}

async fn metrics_handler(State(state): State<OpsState>) -> impl IntoResponse {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &state.registry) {
        Ok(()) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// Binds `addr` and serves `app` until `shutdown` resolves. Returns the bound
/// address (useful with port 0) and the server task. With `report`, the
/// bound address is also written to that file (see [`report_bound`]).
pub async fn serve(
    addr: SocketAddr,
    app: Router,
    report: Option<&Path>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), KitError> {
    let listener = bind(addr).map_err(|e| KitError::Bind { addr, source: e })?;
    let bound = listener
        .local_addr()
        .map_err(|e| KitError::Bind { addr, source: e })?;
    tracing::info!(addr = %bound, "serving HTTP");
    if let Some(path) = report {
        report_bound(path, bound)?;
    }
    // Without TCP_NODELAY, a response written in pieces (SSE events, then the
    // end of the chunked body) waits for the client's delayed ACK: ~40 ms.
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(cause = %e, "could not set TCP_NODELAY");
        }
    });
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::error!(cause = %e, "HTTP server failed");
        }
    });
    Ok((bound, task))
}

/// The accept queue's length. A burst of new connections (a client
/// opening thousands at once) waits in it instead of being reset; tokio's
/// own `bind` asks for 1,024. The kernel caps it at `net.core.somaxconn`.
const ACCEPT_BACKLOG: u32 = 4096;

/// A listener on `addr` with an [`ACCEPT_BACKLOG`]-long accept queue.
fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    // As tokio's `bind` does: a restarted service rebinds its port at once.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(ACCEPT_BACKLOG)
}

/// Writes `addr` (e.g. `127.0.0.1:41234`, one line) to `path`, all at once:
/// a reader polling for the file never sees half of it. This is how a
/// process started with port 0 (`SOPHIA_ADDR_FILE`) tells whoever started it
/// where it listens, with no port picked in advance and handed on.
pub fn report_bound(path: &Path, addr: SocketAddr) -> Result<(), KitError> {
    let fail = |source| KitError::AddrFile {
        path: path.to_owned(),
        source,
    };
    let tmp = path.with_extension("partial");
    std::fs::write(&tmp, format!("{addr}\n")).map_err(fail)?;
    std::fs::rename(&tmp, path).map_err(fail)
}
