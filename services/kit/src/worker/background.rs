//! What runs beside serving: cancels for this worker's categories and
//! offers, and
//! the announcer (on start, on reconnect, when a gateway asks, and every
//! heartbeat).

use super::*;
use crate::StartKind;

pub(super) async fn spawn_cancel_listener(
    shared: &Arc<Shared>,
    subjects: &[String],
    stop: CancellationToken,
) -> Result<(), KitError> {
    let mut subs = Vec::new();
    for s in subjects {
        let sub = shared
            .client
            .subscribe(s.clone())
            .await
            .map_err(|e| KitError::start(StartKind::Subscribe, "subscribe to cancels", e))?;
        subs.push(sub);
    }
    let shared = shared.clone();
    tokio::spawn(async move {
        let mut all = futures::stream::select_all(subs);
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                Some(msg) = all.next() => match sophia_proto::decode::<Cancel>(&msg.payload) {
                    Ok(c) => shared.cancel(c.id),
                    Err(e) => tracing::warn!(cause = %e, "ignoring a malformed cancel message"),
                },
                else => break,
            }
        }
    });
    Ok(())
}

/// What the announcer announces: everything the worker declares, less
/// what its listing withdraws, with what it cannot do right now.
pub(super) struct Announcer {
    /// Everything the worker declares.
    pub(super) full: Announce,
    pub(super) listing: crate::Listing,
    pub(super) degraded: Option<DegradedCheck>,
}

/// Announces the worker now, on every reconnect, when a gateway asks, every
/// heartbeat, and at once when its listing changes.
pub(super) async fn spawn_announcer(
    conn: &Connection,
    announcer: Announcer,
    registered: CancellationToken,
    stop: CancellationToken,
) -> Result<(), KitError> {
    let Announcer {
        mut full,
        listing,
        degraded,
    } = announcer;
    let heartbeat_ms = full.heartbeat_ms;
    let mut changes = listing.changes();
    changes.mark_unchanged();
    let encode = move |full: &Announce| -> Result<bytes::Bytes, KitError> {
        sophia_proto::encode(&listing.listed(full))
            .map(Into::into)
            .map_err(|e| KitError::start(StartKind::Publish, "encode the announcement", e))
    };
    let mut payload = encode(&full)?;
    let client = conn.client.clone();
    let mut discover = client
        .subscribe(subject::REGISTRY_DISCOVER)
        .await
        .map_err(|e| KitError::start(StartKind::Subscribe, "listen for discovery", e))?;
    let mut connects = conn.connects.clone();
    tokio::spawn(async move {
        let mut beat = tokio::time::interval(Duration::from_millis(heartbeat_ms.max(10)));
        loop {
            let mut stale = false;
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = beat.tick() => {}
                changed = connects.changed() => if changed.is_err() { break },
                // The sender lives in the listing this task holds.
                Ok(()) = changes.changed() => stale = true,
                Some(msg) = discover.next() => {
                    if let Ok(d) = sophia_proto::decode::<Discover>(&msg.payload) {
                        tracing::debug!(gateway = %d.requester, "discovery request");
                    }
                }
            }
            if let Some(check) = &degraded {
                let now = check();
                stale |= now != full.degraded;
                full.degraded = now;
            }
            if stale {
                changes.mark_unchanged();
                match encode(&full) {
                    Ok(bytes) => payload = bytes,
                    Err(e) => tracing::warn!(cause = %e, "could not encode the announcement"),
                }
            }
            match client
                .publish(subject::REGISTRY_ANNOUNCE, payload.clone())
                .await
            {
                Ok(()) => registered.cancel(),
                Err(e) => tracing::warn!(cause = %e, "could not announce the worker"),
            }
        }
    });
    Ok(())
}
