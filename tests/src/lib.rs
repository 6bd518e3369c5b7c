//! The Sophia Mesh test harness: a real `nats-server`, the gateway and
//! workers started in-process through their `run` functions, and real MCP
//! clients. Everything cleans up on drop.
//!
//! ```no_run
//! # async fn demo() {
//! let mut mesh = sophia_tests::Mesh::start().await;
//! mesh.worker(echo_worker::echo_worker()).await;
//! let client = mesh.client().await;
//! let tools = client.list_all_tools().await.unwrap();
//! # }
//! ```
#![forbid(unsafe_code)]

pub mod agno;
pub mod announce;
pub mod balancer;
pub mod bench;
pub mod bridge;
pub mod browser;
pub mod client;
pub mod gong;
pub mod intelligence;
pub mod mesh;
pub mod nats;
pub mod oauth;
pub mod openai;
pub mod otlp;
pub mod procs;
pub mod pulumi;
pub mod python;
pub mod raw;
pub mod stateless;
pub mod tools;
pub mod workers;

pub use browser::Browser;
pub use client::{McpClient, Recorder, connect_http};

/// Installs rustls's ring crypto provider for this process (once). reqwest
/// is built without a default provider in this workspace (the
/// intelligence-worker uses ring, as NATS does), so every HTTP client the
/// tests build needs it.
pub fn install_crypto() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}
pub use mesh::{Mesh, eventually};

/// The Prometheus text a service serves at `http://<addr>/metrics`.
pub async fn metrics_text(addr: impl std::fmt::Display) -> String {
    reqwest::get(format!("http://{addr}/metrics"))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("the metrics body")
}

/// Serves `app` on a free loopback port for the rest of the test; returns
/// its address. For the stand-ins of external services.
pub async fn serve_on_free_port(app: axum::Router) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}
pub use nats::{NatsServer, nats_server};

/// A loopback port that is bound but never listens: connections to it are
/// refused at once, and no other process can take it while this lives. For
/// services a test does not run (a dead NATS, an absent Jaeger).
pub struct DeadPort(tokio::net::TcpSocket);

impl DeadPort {
    /// Binds a fresh port on 127.0.0.1.
    pub fn new() -> Self {
        let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
        socket
            .bind(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))
            .expect("bind a port that never listens");
        Self(socket)
    }

    /// `127.0.0.1:<port>`.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.0.local_addr().expect("its address")
    }
}

impl Default for DeadPort {
    fn default() -> Self {
        Self::new()
    }
}
