//! One upstream server's life: started, its tools served by a kit worker
//! of its own (`bridge-<name>`), re-announced when its tool list changes,
//! restarted with backoff when it exits or fails to start, and stopped
//! with the bridge.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sophia_kit::{Worker, WorkerConfig, WorkerHandle};
use tokio_util::sync::CancellationToken;

use crate::config::ServerConfig;
use crate::lease::Leases;
use crate::names::{Names, Selection};
use crate::offers::Offers;
use crate::relay::{self, ToolCtx};
use crate::status::{State, Status};
use crate::upstream::{self, Connection, Link, StartError};

/// The first restart waits this long; each next one twice as long.
const BACKOFF_FIRST: Duration = Duration::from_secs(1);
/// The longest wait between restarts.
const BACKOFF_CAP: Duration = Duration::from_secs(30);
/// A server that served this long starts its backoff over.
const STABLE_AFTER: Duration = Duration::from_secs(30);
/// How long a burst of `tools/list_changed` is collected before re-listing.
const SETTLE: Duration = Duration::from_millis(150);

/// A started server: its connection and its first selection of tools.
pub(crate) type Started = (Connection, Selection);

/// What ended a connection.
enum Ended {
    Shutdown,
    Exited,
}

/// Runs one server until shutdown.
#[derive(Clone)]
pub(crate) struct Supervisor {
    pub server: Arc<ServerConfig>,
    pub worker: WorkerConfig,
    pub status: Status,
    pub names: Names,
    pub shutdown: CancellationToken,
}

/// A running worker for one connection.
struct Serving {
    handle: Option<WorkerHandle>,
    stop: CancellationToken,
    specs: Vec<sophia_proto::ToolSpec>,
    offers: Offers,
}

impl Serving {
    /// Drains the worker: gateways withdraw its tools.
    async fn stop(mut self) {
        self.stop.cancel();
        if let Some(handle) = self.handle.take() {
            handle.stopped().await;
        }
    }
}

/// A worker whose supervisor is gone without [`Serving::stop`] (the bridge
/// was aborted) stops at once, undrained, as if the process had died: no
/// replica keeps serving a server it no longer supervises.
impl Drop for Serving {
    fn drop(&mut self) {
        if let Some(handle) = self.handle.take() {
            handle.abort();
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    let _ = handle.client.drain().await;
                });
            }
        }
    }
}

impl Supervisor {
    /// Starts the server, settles its tool list and selects its tools.
    pub(crate) async fn start(&self) -> Result<Started, StartError> {
        let name = &self.server.name;
        self.status.update(name, |s| s.state = State::Starting);
        let conn = upstream::connect(self.server.clone()).await?;
        self.status.update(name, |s| s.pid = conn.link.pid);
        let selection = self.list(&conn.link).await?;
        Ok((conn, selection))
    }

    /// The server's tools and other offers now, once a burst of list
    /// changes is over (many servers add tools right after `initialize`).
    async fn list(&self, link: &Link) -> Result<Selection, StartError> {
        for _ in 0..5 {
            let changed = link.shared.list_changed.notified();
            if tokio::time::timeout(SETTLE, changed).await.is_err() {
                break;
            }
        }
        let listing = link.peer.list_all_tools();
        let tools = tokio::time::timeout(self.server.init_timeout(), listing)
            .await
            .map_err(|_| StartError::ListTools("no answer in time".into()))?
            .map_err(|e| StartError::ListTools(e.to_string()))?;
        let mut selection = self.names.select(&self.server, &tools);
        let (offers, notes) = Offers::list(link, self.server.init_timeout()).await;
        selection.offers = offers;
        selection.refused.extend(notes);
        Ok(selection)
    }

    /// Serves until shutdown, restarting the server whenever it goes down;
    /// a `replicas = "single"` server only while this replica holds its
    /// lease (`leases`). `first` is the first start, if already made.
    pub(crate) async fn run(
        self,
        first: Option<Result<Started, StartError>>,
        leases: Option<Leases>,
    ) {
        match leases {
            Some(leases) => self.run_leased(&leases).await,
            None => self.run_restarting(first).await,
        }
        let name = &self.server.name;
        self.names.release(name);
        self.status.update(name, |s| {
            s.state = State::Stopped;
            s.pid = None;
            s.tools.clear();
        });
    }

    /// Starts, serves and restarts the server until `self.shutdown`.
    pub(crate) async fn run_restarting(&self, first: Option<Result<Started, StartError>>) {
        let name = self.server.name.clone();
        let mut backoff = BACKOFF_FIRST;
        let mut attempt = first;
        loop {
            let started = match attempt.take() {
                Some(a) => a,
                None => self.start().await,
            };
            match started {
                Ok((conn, selection)) => {
                    let since = Instant::now();
                    if let Ended::Shutdown = self.serve(conn, selection).await {
                        break;
                    }
                    if since.elapsed() >= STABLE_AFTER {
                        backoff = BACKOFF_FIRST;
                    }
                }
                Err(e) => {
                    tracing::error!(server = %name, cause = %e, "MCP server failed to start");
                    self.status.update(&name, |s| {
                        s.state = State::Down;
                        s.error = Some(e.to_string());
                        s.pid = None;
                    });
                }
            }
            tracing::info!(server = %name, wait_ms = backoff.as_millis() as u64, "restarting the MCP server after a pause");
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = self.shutdown.cancelled() => break,
            }
            backoff = (backoff * 2).min(BACKOFF_CAP);
            self.status.update(&name, |s| s.restarts += 1);
        }
    }

    /// Serves one connection: its worker, re-announced on list changes,
    /// until the server exits or the bridge stops.
    async fn serve(&self, conn: Connection, selection: Selection) -> Ended {
        let (link, close, closed) = conn.split();
        tokio::pin!(closed);
        let name = self.server.name.clone();
        let mut serving = self.start_worker(&link, selection).await;
        tracing::info!(server = %name, pid = ?link.pid, "MCP server is serving");
        enum Event {
            Shutdown,
            Closed,
            Changed,
            Updated(String),
        }
        loop {
            let event = tokio::select! {
                _ = self.shutdown.cancelled() => Event::Shutdown,
                _ = &mut closed => Event::Closed,
                _ = link.shared.list_changed.notified() => Event::Changed,
                Some(uri) = async { link.shared.updated.lock().await.recv().await } => Event::Updated(uri),
            };
            match event {
                Event::Shutdown => {
                    if let Some(s) = serving.take() {
                        s.stop().await;
                    }
                    close.cancel();
                    let _ = closed.await;
                    return Ended::Shutdown;
                }
                Event::Closed => {
                    let tail = link.stderr.text();
                    tracing::warn!(server = %name, stderr = %tail, "MCP server exited; withdrawing its tools");
                    self.status.update(&name, |s| {
                        s.state = State::Down;
                        s.pid = None;
                        s.error = Some(format!("it exited; its stderr ends with: {tail}"));
                    });
                    if let Some(s) = serving.take() {
                        s.stop().await;
                    }
                    return Ended::Exited;
                }
                Event::Changed => serving = self.relist(&link, serving).await,
                Event::Updated(uri) => {
                    if let Some(Err(e)) = match serving.as_ref().and_then(|s| s.handle.as_ref()) {
                        Some(handle) => Some(handle.resource_updated(&uri).await),
                        None => None,
                    } {
                        tracing::warn!(server = %name, cause = %e, "could not relay a resource update");
                    }
                }
            }
        }
    }

    /// Re-lists after `list_changed`; a different list is served
    /// by a new worker before the old one leaves.
    async fn relist(&self, link: &Arc<Link>, serving: Option<Serving>) -> Option<Serving> {
        let selection = match self.list(link).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(server = %self.server.name, cause = %e, "could not re-list tools");
                return serving;
            }
        };
        let same = serving
            .as_ref()
            .map(|s| (s.specs.clone(), s.offers.clone()))
            .unwrap_or_default();
        if (selection.specs(), selection.offers.clone()) == same {
            return serving;
        }
        tracing::info!(server = %self.server.name, tools = selection.tools.len(), "tool list changed; re-announcing");
        let next = self.start_worker(link, selection).await;
        if let Some(old) = serving {
            tokio::spawn(old.stop());
        }
        next
    }

    /// A worker serving `selection` on `link`; none when nothing is offered.
    async fn start_worker(&self, link: &Arc<Link>, selection: Selection) -> Option<Serving> {
        let name = &self.server.name;
        let specs = selection.specs();
        self.status.update(name, |s| {
            s.state = State::Serving;
            s.pid = link.pid;
            s.error = None;
            s.tools = specs.iter().map(|t| t.name.clone()).collect();
            s.refused = selection.refused.clone();
        });
        for r in &selection.refused {
            tracing::warn!(server = %name, "{r}");
        }
        if selection.tools.is_empty() && selection.offers.is_empty() {
            return None;
        }
        let worker = Worker::new(self.server.service(), env!("CARGO_PKG_VERSION"))
            .description(format!("MCP server {name}, bridged by mcp-bridge"));
        let mut worker = selection.offers.offer(worker, link);
        for (upstream, tool) in selection.tools {
            let ctx = Arc::new(ToolCtx {
                link: link.clone(),
                upstream,
            });
            worker = worker.tool(tool.with_ctx(&ctx, relay::run));
        }
        let mut config = self.worker.clone();
        config.http_addr = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
        config.addr_file = None;
        let stop = CancellationToken::new();
        match worker.run(config, stop.clone()).await {
            Ok(handle) => Some(Serving {
                handle: Some(handle),
                stop,
                specs,
                offers: selection.offers,
            }),
            Err(e) => {
                tracing::error!(server = %name, cause = %e, "could not serve the MCP server's tools");
                self.status.update(name, |s| s.error = Some(e.to_string()));
                None
            }
        }
    }
}
