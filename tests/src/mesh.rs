//! A whole mesh in one process: NATS, a gateway, and workers.

use std::future::Future;
use std::time::{Duration, Instant};

use sophia_gateway::{GatewayConfig, GatewayHandle};
use sophia_kit::{Worker, WorkerConfig, WorkerHandle};
use tokio_util::sync::CancellationToken;

use crate::client::{McpClient, connect_http};
use crate::nats::{NatsServer, nats_server};

/// The bearer token test gateways accept.
pub const TEST_TOKEN: &str = "test-token-0123456789abcdef";

/// Heartbeat used by test workers, so silent replicas expire quickly.
pub const TEST_HEARTBEAT_MS: u64 = 200;

/// A running worker in a [`Mesh`].
pub struct RunningWorker {
    /// The worker's handle.
    pub handle: Option<WorkerHandle>,
    shutdown: CancellationToken,
}

/// NATS, a gateway and workers. Dropping it stops everything.
pub struct Mesh {
    /// The NATS server.
    pub nats: NatsServer,
    /// The gateway, once started.
    pub gateway: Option<GatewayHandle>,
    gateway_stop: CancellationToken,
    workers: Vec<RunningWorker>,
    /// Services connect as `ops/nats/nats.conf`'s least-privilege users.
    least_privilege: bool,
    /// The policy file the gateway and every worker configured here enforce
    /// (`SOPHIA_POLICY`).
    pub policy: Option<std::path::PathBuf>,
}

impl Mesh {
    /// NATS and a gateway.
    pub async fn start() -> Self {
        let mut mesh = Self::without_gateway();
        mesh.start_gateway().await;
        mesh
    }

    /// NATS only; start the gateway later with [`Mesh::start_gateway`].
    pub fn without_gateway() -> Self {
        Self::on(nats_server())
    }

    /// A mesh on a NATS server started elsewhere (e.g. from a config file).
    pub fn on(nats: NatsServer) -> Self {
        init_test_logging();
        Self {
            nats,
            gateway: None,
            gateway_stop: CancellationToken::new(),
            workers: Vec::new(),
            least_privilege: false,
            policy: None,
        }
    }

    /// NATS with the project's own `ops/nats/nats.conf`, and a gateway;
    /// the gateway and every worker configured by [`Mesh::worker_config`]
    /// connect as that file's least-privilege users.
    pub async fn least_privilege() -> Self {
        let mut mesh = Self::on(crate::nats::secured());
        mesh.least_privilege = true;
        mesh.start_gateway().await;
        mesh
    }

    /// The gateway configuration tests use.
    pub fn gateway_config(&self) -> GatewayConfig {
        let mut c = GatewayConfig::new(self.nats.url(), TEST_TOKEN);
        c.call_timeout_ms = 10_000;
        c.policy = self.policy.clone();
        if self.least_privilege {
            c.nats.user = Some("gateway".into());
            c.nats.password = Some(crate::nats::GATEWAY_PASSWORD.into());
        }
        c
    }

    /// Starts the gateway with the test configuration.
    pub async fn start_gateway(&mut self) -> &GatewayHandle {
        let config = self.gateway_config();
        self.start_gateway_with(config).await
    }

    /// Starts the gateway with `config`.
    pub async fn start_gateway_with(&mut self, config: GatewayConfig) -> &GatewayHandle {
        let handle = sophia_gateway::run(config, self.gateway_stop.clone())
            .await
            .expect("gateway starts");
        self.gateway.insert(handle)
    }

    /// The worker configuration tests use: this NATS, fast heartbeats.
    pub fn worker_config(&self) -> WorkerConfig {
        let mut c = WorkerConfig::new(self.nats.url());
        c.heartbeat_ms = TEST_HEARTBEAT_MS;
        c.cancel_grace_ms = 500;
        c.policy = self.policy.clone();
        if self.least_privilege {
            c.nats.user = Some("worker".into());
            c.nats.password = Some(crate::nats::WORKER_PASSWORD.into());
        }
        c
    }

    /// [`Mesh::worker_config`], logging in as `user` of `ops/nats/nats.conf`
    /// on a least-privilege mesh (`pulumi`, `intelligence`, `gong`, ...).
    pub fn worker_config_as(&self, user: &str) -> WorkerConfig {
        let mut c = self.worker_config();
        if self.least_privilege {
            c.nats.user = Some(user.into());
            c.nats.password = Some(crate::nats::password(user));
        }
        c
    }

    /// Starts `worker`; returns its index for [`Mesh::stop_worker`] and friends.
    pub async fn worker(&mut self, worker: Worker) -> usize {
        let config = self.worker_config();
        self.worker_with(worker, config).await
    }

    /// Starts `worker` with `config`.
    pub async fn worker_with(&mut self, worker: Worker, config: WorkerConfig) -> usize {
        let shutdown = CancellationToken::new();
        let handle = worker
            .run(config, shutdown.clone())
            .await
            .expect("worker starts");
        self.workers.push(RunningWorker {
            handle: Some(handle),
            shutdown,
        });
        self.workers.len() - 1
    }

    /// The handle of worker `i`.
    pub fn worker_handle(&self, i: usize) -> &WorkerHandle {
        self.workers[i].handle.as_ref().expect("worker is running")
    }

    /// Drains worker `i` as SIGTERM would, and waits until it has stopped.
    pub async fn stop_worker(&mut self, i: usize) {
        let w = &mut self.workers[i];
        w.shutdown.cancel();
        if let Some(h) = w.handle.take() {
            h.stopped().await;
        }
    }

    /// Kills worker `i` without a goodbye: it just goes silent, as a crashed
    /// process would.
    pub async fn kill_worker(&mut self, i: usize) {
        if let Some(h) = self.workers[i].handle.take() {
            h.abort();
            // Drop its NATS connection too, so its subscriptions vanish.
            let _ = h.client.drain().await;
        }
    }

    /// The gateway's MCP URL.
    pub fn mcp_url(&self) -> String {
        self.gateway.as_ref().expect("gateway started").mcp_url()
    }

    /// A base URL for the gateway's HTTP endpoints.
    pub fn http_base(&self) -> String {
        format!(
            "http://{}",
            self.gateway.as_ref().expect("gateway started").http_addr
        )
    }

    /// A connected MCP client (Streamable HTTP, with the test token).
    pub async fn client(&self) -> McpClient {
        connect_http(&self.mcp_url(), TEST_TOKEN).await
    }

    /// An MCP client with `recorder`'s capabilities and answers.
    pub async fn client_as(&self, recorder: crate::client::Recorder) -> McpClient {
        crate::client::connect_http_as(&self.mcp_url(), TEST_TOKEN, Default::default(), recorder)
            .await
    }

    /// An MCP client that supports elicitation and gives `answers` in order.
    pub async fn client_answering(
        &self,
        answers: impl IntoIterator<Item = rmcp::model::ElicitResult>,
    ) -> McpClient {
        crate::client::connect_http_as(
            &self.mcp_url(),
            TEST_TOKEN,
            Default::default(),
            crate::client::Recorder::answering(answers),
        )
        .await
    }

    /// The gateway's `/health`, if it answers with JSON.
    pub async fn health(&self) -> Option<serde_json::Value> {
        crate::install_crypto();
        reqwest::get(format!("{}/health", self.http_base()))
            .await
            .ok()?
            .json()
            .await
            .ok()
    }

    /// Every record of the audit stream `sophia_audit`, each with its
    /// `subject`, once there are at least `at_least`.
    pub async fn audit_records(&self, at_least: usize) -> Vec<serde_json::Value> {
        eventually(
            "the audit records are stored",
            crate::tools::WAIT,
            || async { self.audit_now().await.filter(|r| r.len() >= at_least) },
        )
        .await
    }

    /// The records of the audit stream `sophia_audit` now, each with its
    /// `subject`; `None` when the stream cannot be read.
    pub async fn audit_now(&self) -> Option<Vec<serde_json::Value>> {
        let js = async_nats::jetstream::new(self.nats_client().await);
        let stream = js.get_stream("sophia_audit").await.ok()?;
        let consumer = stream
            .create_consumer(async_nats::jetstream::consumer::pull::Config::default())
            .await
            .ok()?;
        let mut batch = consumer
            .fetch()
            .max_messages(1000)
            .expires(Duration::from_millis(300))
            .messages()
            .await
            .ok()?;
        let mut records = Vec::new();
        while let Some(Ok(m)) = futures::StreamExt::next(&mut batch).await {
            let mut r = serde_json::from_slice::<serde_json::Value>(&m.payload).ok()?;
            r["subject"] = serde_json::json!(m.subject.to_string());
            records.push(r);
        }
        Some(records)
    }

    /// A plain NATS client on the mesh's server.
    pub async fn nats_client(&self) -> async_nats::Client {
        async_nats::connect(self.nats.url())
            .await
            .expect("connect to test NATS")
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        self.gateway_stop.cancel();
        for w in &self.workers {
            w.shutdown.cancel();
            if let Some(h) = &w.handle {
                h.abort();
            }
        }
    }
}

/// Polls `check` until it returns `Some`, or panics with `what` after `within`.
pub async fn eventually<T, F, Fut>(what: &str, within: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn init_test_logging() {
    crate::install_crypto();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}
