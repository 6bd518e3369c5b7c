//! Serving and draining: the task that owns a running worker, and its
//! handle.

use super::*;
use crate::StartKind;

/// Everything the serving task owns, from first request to drained.
pub(super) struct Serving {
    /// Answers liveness asks until the drain is over (dropped with this).
    pub(super) _alive: crate::serve::AliveResponder,
    pub(super) name: String,
    pub(super) shared: Arc<Shared>,
    pub(super) limit: Arc<Semaphore>,
    pub(super) max_in_flight: usize,
    pub(super) drain_timeout: Duration,
    pub(super) leave: Leave,
    pub(super) background: CancellationToken,
    pub(super) http_stop: CancellationToken,
    pub(super) http_task: tokio::task::JoinHandle<()>,
}

impl Serving {
    /// Serves requests until `shutdown`, then drains: say goodbye, stop
    /// taking requests, serve what NATS already delivered, wait for calls in
    /// flight (cancelling them after the drain timeout), and stop HTTP.
    pub(super) async fn run(
        self,
        service: async_nats::service::Service,
        endpoints: Vec<Endpoint>,
        shutdown: CancellationToken,
    ) {
        let mut requests = futures::stream::select_all(endpoints);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                next = requests.next() => match next {
                    Some(req) => dispatch(&self.shared, &self.limit, req).await,
                    // No endpoints (a worker without tools yet): idle until shutdown.
                    None => {
                        shutdown.cancelled().await;
                        break;
                    }
                },
            }
        }
        tracing::info!(worker = %self.name, "draining: leaving the mesh and finishing calls in flight");
        if let Ok(bytes) = sophia_proto::encode(&self.leave) {
            let _ = self
                .shared
                .client
                .publish(subject::REGISTRY_LEAVE, bytes.into())
                .await;
        }
        self.background.cancel();
        match tokio::time::timeout(Duration::from_secs(2), service.stop()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(cause = %e, "could not stop the NATS service cleanly"),
            Err(_) => tracing::warn!("stopping the NATS service timed out (is NATS down?)"),
        }
        // Requests NATS had already delivered are still served. With NATS
        // gone the stop above could not unsubscribe, so the stream may never
        // end: take what is buffered and stop waiting once it goes quiet.
        while let Ok(Some(req)) =
            tokio::time::timeout(Duration::from_millis(500), requests.next()).await
        {
            dispatch(&self.shared, &self.limit, req).await;
        }
        let all = u32::try_from(self.max_in_flight).unwrap_or(u32::MAX);
        if tokio::time::timeout(self.drain_timeout, self.limit.acquire_many(all))
            .await
            .is_err()
        {
            tracing::warn!(worker = %self.name, "drain timed out; cancelling calls still in flight");
            self.shared.cancel_all();
            // Let the cancelled calls reply `cancelled` before going.
            let grace = self.shared.cancel_grace + Duration::from_secs(1);
            let _ = tokio::time::timeout(grace, self.limit.acquire_many(all)).await;
        }
        // Best effort: with NATS gone, flush would wait for a reconnect forever.
        let _ = tokio::time::timeout(Duration::from_secs(2), self.shared.client.flush()).await;
        self.http_stop.cancel();
        let _ = self.http_task.await;
        tracing::info!(worker = %self.name, "drained");
    }
}

/// A running worker.
#[derive(Debug)]
pub struct WorkerHandle {
    /// This replica's instance id, as announced.
    pub instance: String,
    /// Where `/health`, `/ready` and `/metrics` are served.
    pub http_addr: SocketAddr,
    /// The worker's NATS client.
    pub client: async_nats::Client,
    pub(super) task: tokio::task::JoinHandle<()>,
}

impl WorkerHandle {
    /// Tells the gateways that resource `uri` changed, so that the MCP
    /// sessions subscribed to it get `notifications/resources/updated`.
    pub async fn resource_updated(&self, uri: &str) -> Result<(), KitError> {
        let update = sophia_proto::ResourceUpdated {
            v: PROTOCOL_VERSION,
            uri: uri.to_owned(),
        };
        let bytes = sophia_proto::encode(&update)
            .map_err(|e| KitError::start(StartKind::Publish, "encode a resource update", e))?;
        self.client
            .publish(subject::RESOURCE_UPDATED, bytes.into())
            .await
            .map_err(|e| KitError::start(StartKind::Publish, "publish a resource update", e))
    }

    /// Waits until the worker has drained after its shutdown token fired.
    pub async fn stopped(self) {
        let _ = self.task.await;
    }

    /// Stops serving at once, without draining (as a crash would, but the
    /// process lives on). For tests of dead workers.
    pub fn abort(&self) {
        self.task.abort();
    }
}

/// Which replica of which service this is, and the policy it enforces.
pub(super) struct Identity<'a> {
    pub(super) instance: &'a str,
    pub(super) service: &'a str,
    pub(super) policy: Option<Arc<crate::policy::Policy>>,
}

/// The state every request of this replica shares.
pub(super) async fn shared(
    conn: &Connection,
    config: &WorkerConfig,
    tools: ToolsBySubject,
    metrics: ToolCallMetrics,
    identity: Identity<'_>,
) -> Result<Arc<Shared>, KitError> {
    let instance = identity.instance;
    let bus = crate::bus::Bus::start(
        conn.client.clone(),
        instance.to_owned(),
        config.max_payload_bytes,
    )
    .await
    .map_err(|e| {
        KitError::start(
            StartKind::Subscribe,
            "open the call path (progress inbox)",
            e,
        )
    })?;
    Ok(Arc::new(Shared {
        client: conn.client.clone(),
        payloads: PayloadStore::new(conn.client.clone()).with_max_bytes(config.max_payload_bytes),
        tools,
        in_flight: Mutex::new(HashMap::new()),
        early_cancels: Mutex::new(HashMap::new()),
        metrics,
        cancel_grace: Duration::from_millis(config.cancel_grace_ms),
        bus,
        instance: instance.to_owned(),
        policy: identity.policy,
        service: identity.service.to_owned(),
    }))
}
