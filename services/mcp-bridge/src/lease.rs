//! `replicas = "single"`: which bridge replica serves a server that keeps
//! state on local disk, decided by a lease in a JetStream KV bucket.
//!
//! The lease is the key `<server name>` in [`LEASE_BUCKET`]. A replica takes
//! it with a create (it succeeds only when nobody holds it) and keeps it by
//! rewriting it every [`RENEW_EVERY`] with a compare-and-swap on its last
//! revision. The bucket's values expire [`LEASE_TTL`] after they were
//! written, so a holder that dies (no drain, no goodbye) stops renewing and
//! its lease disappears; a waiting replica, which tries every
//! [`ACQUIRE_EVERY`], takes it over then. A holder that stops cleanly gives
//! the lease back at once.
//!
//! Design note: a holder that cannot renew for a whole [`LEASE_TTL`] (its
//! bus is unreachable, or another replica took the lease) gives the server
//! up before anyone else can have taken it over, so two replicas never
//! serve one server on purpose; the only overlap is a holder that is frozen
//! past the TTL, which then finds its lease gone on the next renewal.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sophia_kit::kv::{Bucket, BucketConfig, KvError, KvErrorKind};
use tokio_util::sync::CancellationToken;

use crate::status::State;

/// The KV bucket holding one lease per `replicas = "single"` server.
pub const LEASE_BUCKET: &str = "sophia_bridge_leases";
/// How long a lease lives without renewal: the longest a dead holder keeps
/// its server from the other replicas.
pub const LEASE_TTL: Duration = Duration::from_secs(3);
/// How often the holder renews its lease.
pub const RENEW_EVERY: Duration = Duration::from_secs(1);
/// How often a waiting replica tries to take the lease.
pub const ACQUIRE_EVERY: Duration = Duration::from_millis(500);

/// What a lease records: who holds it, for `nats kv get` and the log.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Holder {
    /// The holding bridge replica's instance id (its `mcp-bridge` worker's).
    pub instance: String,
    /// The holder's process id.
    pub pid: u32,
}

/// The leases of one bridge replica, opened on first use.
#[derive(Clone)]
pub(crate) struct Leases {
    client: async_nats::Client,
    me: Holder,
    bucket: std::sync::Arc<tokio::sync::OnceCell<Bucket>>,
}

impl Leases {
    /// The leases replica `instance` takes, over `client`.
    pub(crate) fn new(client: async_nats::Client, instance: String) -> Self {
        Self {
            client,
            me: Holder {
                instance,
                pid: std::process::id(),
            },
            bucket: Default::default(),
        }
    }

    async fn bucket(&self) -> Result<&Bucket, KvError> {
        self.bucket
            .get_or_try_init(|| async {
                let config =
                    BucketConfig::new(LEASE_BUCKET, "Sophia Mesh bridge leases").max_age(LEASE_TTL);
                Bucket::open(&self.client, config).await
            })
            .await
    }

    /// Waits until this replica holds `server`'s lease (`None` on
    /// `shutdown`). `waiting` is told each failure to reach the bucket (a
    /// lease held by another replica is no failure).
    pub(crate) async fn acquire(
        &self,
        server: &str,
        shutdown: &CancellationToken,
        waiting: impl Fn(Option<&KvError>),
    ) -> Option<Lease> {
        loop {
            match self.try_acquire(server).await {
                Ok(Some(revision)) => return Some(self.hold(server, revision)),
                Ok(None) => waiting(None),
                Err(e) => waiting(Some(&e)),
            }
            tokio::select! {
                _ = tokio::time::sleep(ACQUIRE_EVERY) => {}
                _ = shutdown.cancelled() => return None,
            }
        }
    }

    /// Takes the lease if nobody holds it (or this replica still does, from
    /// before a loss); its revision, or `None` when another replica holds it.
    async fn try_acquire(&self, server: &str) -> Result<Option<u64>, KvError> {
        let bucket = self.bucket().await?;
        let taken = match bucket.entry::<Holder>(server).await? {
            None => bucket.create(server, &self.me).await,
            Some((holder, revision)) if holder == self.me => {
                bucket.update(server, &self.me, revision).await
            }
            Some(_) => return Ok(None),
        };
        match taken {
            Ok(revision) => Ok(Some(revision)),
            Err(e) if e.kind() == KvErrorKind::Conflict => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn hold(&self, server: &str, revision: u64) -> Lease {
        let lost = CancellationToken::new();
        let release = CancellationToken::new();
        let task = tokio::spawn(renew(
            self.clone(),
            server.to_owned(),
            revision,
            lost.clone(),
            release.clone(),
        ));
        Lease {
            lost,
            release,
            task: Some(task),
        }
    }
}

/// Renews the lease until it is released (then deletes it) or lost.
async fn renew(
    leases: Leases,
    server: String,
    mut revision: u64,
    lost: CancellationToken,
    release: CancellationToken,
) {
    let mut renewed = Instant::now();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(RENEW_EVERY) => {}
            _ = release.cancelled() => {
                if let Ok(bucket) = leases.bucket().await {
                    let _ = bucket.delete_at(&server, revision).await;
                }
                return;
            }
        }
        let bucket = match leases.bucket().await {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(server = %server, cause = %e, "could not renew the lease");
                continue;
            }
        };
        match bucket.update(&server, &leases.me, revision).await {
            Ok(next) => {
                revision = next;
                renewed = Instant::now();
            }
            Err(e) if e.kind() == KvErrorKind::Conflict => {
                tracing::warn!(server = %server, "the lease was taken over by another replica; giving the server up");
                lost.cancel();
                return;
            }
            Err(e) => {
                tracing::warn!(server = %server, cause = %e, "could not renew the lease");
                if renewed.elapsed() + RENEW_EVERY >= LEASE_TTL {
                    tracing::warn!(server = %server, "the lease is about to expire unrenewed; giving the server up");
                    lost.cancel();
                    return;
                }
            }
        }
    }
}

/// A lease held by this replica, renewed in the background. Dropping it
/// stops the renewals (the lease then expires, as if this replica died);
/// [`Lease::release`] gives it back at once.
pub(crate) struct Lease {
    lost: CancellationToken,
    release: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Lease {
    /// Fires when the lease is lost: the server must stop being served.
    pub(crate) fn lost(&self) -> &CancellationToken {
        &self.lost
    }

    /// Gives the lease back, so another replica takes over without waiting
    /// for it to expire.
    pub(crate) async fn release(mut self) {
        self.release.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

impl crate::supervisor::Supervisor {
    /// Serves a `replicas = "single"` server while this replica holds its
    /// lease: waits for the lease (standing by), serves and restarts the
    /// server as usual until shutdown (then gives the lease back) or until
    /// the lease is lost (then stops serving and waits again).
    pub(crate) async fn run_leased(&self, leases: &Leases) {
        let name = self.server.name.clone();
        loop {
            self.status.update(&name, |s| {
                s.state = State::Standby;
                s.pid = None;
                s.tools.clear();
            });
            let waiting = |e: Option<&KvError>| {
                let error = e.map(|e| format!("cannot take its lease: {e}"));
                if let Some(error) = &error
                    && self.status.server(&name).and_then(|s| s.error).as_ref() != Some(error)
                {
                    tracing::warn!(server = %name, cause = %error, "standing by");
                }
                self.status.update(&name, |s| s.error = error);
            };
            let Some(lease) = leases.acquire(&name, &self.shutdown, waiting).await else {
                return;
            };
            tracing::info!(server = %name, "this replica holds the server's lease; serving it");
            // Served until the bridge stops or the lease is lost.
            let mut held = self.clone();
            held.shutdown = self.shutdown.child_token();
            let (stop, lost, shutdown) = (
                held.shutdown.clone(),
                lease.lost().clone(),
                self.shutdown.clone(),
            );
            let watch = tokio::spawn(async move {
                tokio::select! {
                    _ = lost.cancelled() => stop.cancel(),
                    _ = shutdown.cancelled() => {}
                }
            });
            held.run_restarting(None).await;
            watch.abort();
            if self.shutdown.is_cancelled() {
                lease.release().await;
                return;
            }
            tracing::warn!(server = %name, "lost the server's lease; standing by");
        }
    }
}
