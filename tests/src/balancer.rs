//! A round-robin HTTP load balancer in front of gateway replicas: each
//! request goes to the next replica in turn, whatever session or client it
//! belongs to. It shows a client needing no session affinity (MCP
//! 2026-07-28 is stateless), the way a plain L7 balancer would serve it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use futures::TryStreamExt;

/// Headers a proxy does not pass on (RFC 9110 §7.6.1), plus `host`.
const HOP_BY_HOP: [&str; 6] = [
    "connection",
    "keep-alive",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
];

struct Backends {
    bases: Vec<String>,
    next: AtomicUsize,
    served: Vec<AtomicUsize>,
    http: reqwest::Client,
}

/// The balancer, serving on an ephemeral port until dropped.
pub struct RoundRobin {
    addr: std::net::SocketAddr,
    backends: Arc<Backends>,
    _stop: tokio_util::sync::DropGuard,
}

impl RoundRobin {
    /// Balances over `bases` (each `http://host:port`).
    pub async fn start(bases: Vec<String>) -> RoundRobin {
        let backends = Arc::new(Backends {
            served: bases.iter().map(|_| AtomicUsize::new(0)).collect(),
            bases,
            next: AtomicUsize::new(0),
            http: reqwest::Client::new(),
        });
        let app = axum::Router::new()
            .fallback(forward)
            .with_state(backends.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the balancer");
        let addr = listener.local_addr().expect("its address");
        let stop = tokio_util::sync::CancellationToken::new();
        let until = stop.clone();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(until.cancelled_owned())
                .await
        });
        RoundRobin {
            addr,
            backends,
            _stop: stop.drop_guard(),
        }
    }

    /// The balancer's base URL, `http://127.0.0.1:<port>`.
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// How many requests each backend has served, in the order given.
    pub fn served(&self) -> Vec<usize> {
        self.backends
            .served
            .iter()
            .map(|n| n.load(Ordering::Relaxed))
            .collect()
    }
}

async fn forward(State(backends): State<Arc<Backends>>, req: Request) -> Response {
    let i = backends.next.fetch_add(1, Ordering::Relaxed) % backends.bases.len();
    backends.served[i].fetch_add(1, Ordering::Relaxed);
    let (parts, body) = req.into_parts();
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let url = format!("{}{path}", backends.bases[i]);
    let body = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    let mut out = backends.http.request(parts.method, url).body(body);
    for (name, value) in &parts.headers {
        if !HOP_BY_HOP.contains(&name.as_str()) {
            out = out.header(name, value);
        }
    }
    let answer = match out.send().await {
        Ok(answer) => answer,
        Err(e) => {
            return Response::builder()
                .status(502)
                .body(Body::from(format!("balancer: backend {i}: {e}")))
                .expect("a response");
        }
    };
    let mut response = Response::builder().status(answer.status());
    for (name, value) in answer.headers() {
        if !HOP_BY_HOP.contains(&name.as_str()) {
            response = response.header(name, value);
        }
    }
    let stream = answer.bytes_stream().map_err(std::io::Error::other);
    response
        .body(Body::from_stream(stream))
        .expect("a response")
}
