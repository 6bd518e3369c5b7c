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

/// Announces the worker now, on every reconnect, when a gateway asks, and
/// every heartbeat.
pub(super) async fn spawn_announcer(
    conn: &Connection,
    mut announce: Announce,
    degraded: Option<DegradedCheck>,
    heartbeat_ms: u64,
    registered: CancellationToken,
    stop: CancellationToken,
) -> Result<(), KitError> {
    let mut payload: bytes::Bytes = sophia_proto::encode(&announce)
        .map_err(|e| KitError::start(StartKind::Publish, "encode the announcement", e))?
        .into();
    let client = conn.client.clone();
    let mut discover = client
        .subscribe(subject::REGISTRY_DISCOVER)
        .await
        .map_err(|e| KitError::start(StartKind::Subscribe, "listen for discovery", e))?;
    let mut connects = conn.connects.clone();
    tokio::spawn(async move {
        let mut beat = tokio::time::interval(Duration::from_millis(heartbeat_ms.max(10)));
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = beat.tick() => {}
                changed = connects.changed() => if changed.is_err() { break },
                Some(msg) = discover.next() => {
                    if let Ok(d) = sophia_proto::decode::<Discover>(&msg.payload) {
                        tracing::debug!(gateway = %d.requester, "discovery request");
                    }
                }
            }
            if let Some(check) = &degraded {
                let now = check();
                if now != announce.degraded {
                    announce.degraded = now;
                    if let Ok(bytes) = sophia_proto::encode(&announce) {
                        payload = bytes.into();
                    }
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
