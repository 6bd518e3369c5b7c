//! Whether the replica running a call is still there: its acknowledgement,
//! a liveness ask every second, and the caller's own link.

use super::*;

/// How often a caller asks a replica running its call whether it is alive.
pub(super) const ALIVE_EVERY: Duration = Duration::from_secs(1);

/// Unanswered asks in a row after which that replica counts as stuck.
pub(super) const ALIVE_MISSES: u32 = 3;

/// How long a replica that acknowledges requests may take to do so.
pub(super) const ACK_WITHIN: Duration = Duration::from_secs(5);

/// How long the bus link may be down before the calls in flight end (their
/// replies, if any, would be lost with it).
pub(super) const LINK_GRACE: Duration = Duration::from_secs(1);

/// What a call does about the replica running it: it always watches the
/// replica that acknowledged it (see [`headers::ACK_TO`]) and ends with
/// [`CallError::WorkerLost`] once that replica is gone or stuck, or once the
/// bus link has been down for a second.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Liveness {
    /// Every replica serving the subject acknowledges requests: one not
    /// acknowledged within five seconds went to a replica that is gone.
    pub acked: bool,
    /// Run the call once more if its replica is lost (the queue group picks
    /// another): only for read-only or idempotent tools.
    pub retry: bool,
}

pub(super) type AckWaiters = Arc<Mutex<HashMap<Uuid, tokio::sync::oneshot::Sender<String>>>>;

/// Asks one replica whether it is alive, for as long as calls wait on it;
/// `lost` says why once it is not.
pub(super) struct Watcher {
    pub(super) lost: tokio::sync::watch::Receiver<Option<String>>,
}

/// Forgets a call's acknowledgement waiter when the call is over.
pub(super) struct AckGuard<'a>(pub(super) &'a AckWaiters, pub(super) Uuid);

impl Drop for AckGuard<'_> {
    fn drop(&mut self) {
        self.0.lock().remove(&self.1);
    }
}

/// Watches `client`'s link: true once it has been down for [`LINK_GRACE`],
/// false again once it is up. The task ends with the last receiver.
pub(super) fn watch_link(client: async_nats::Client) -> tokio::sync::watch::Receiver<bool> {
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let mut down_since: Option<tokio::time::Instant> = None;
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        while !tx.is_closed() {
            tick.tick().await;
            if client.connection_state() == State::Connected {
                down_since = None;
            } else {
                down_since.get_or_insert_with(tokio::time::Instant::now);
            }
            let lost = down_since.is_some_and(|t| t.elapsed() >= LINK_GRACE);
            tx.send_if_modified(|v| std::mem::replace(v, lost) != lost);
        }
    });
    rx
}

impl Bus {
    /// The watcher of replica `instance`, shared by every call waiting on it.
    pub(super) fn watcher(&self, instance: &str) -> Arc<Watcher> {
        let mut watchers = self.watchers.lock();
        if let Some(w) = watchers.get(instance).and_then(std::sync::Weak::upgrade) {
            return w;
        }
        watchers.retain(|_, w| w.strong_count() > 0);
        let (tx, rx) = tokio::sync::watch::channel(None);
        let watcher = Arc::new(Watcher { lost: rx });
        watchers.insert(instance.to_owned(), Arc::downgrade(&watcher));
        let (client, target, weak) = (
            self.client.clone(),
            subject::alive(instance),
            Arc::downgrade(&watcher),
        );
        tokio::spawn(async move {
            let mut misses = 0;
            // The first ask a second after the ack: calls shorter than that
            // (most) never cost one.
            let mut tick =
                tokio::time::interval_at(tokio::time::Instant::now() + ALIVE_EVERY, ALIVE_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if weak.strong_count() == 0 {
                    return; // no call waits on this replica any more
                }
                let ask = async_nats::Request::new().timeout(Some(ALIVE_EVERY));
                match client.send_request(target.clone(), ask).await {
                    Ok(_) => misses = 0,
                    Err(e) if e.kind() == RequestErrorKind::NoResponders => {
                        let _ = tx.send(Some("its process is gone (it left NATS)".into()));
                        return;
                    }
                    Err(e) if e.kind() == RequestErrorKind::TimedOut => {
                        misses += 1;
                        if misses >= ALIVE_MISSES {
                            let _ = tx.send(Some(format!(
                                "it stopped answering ({misses} liveness checks missed, \
                                 {ALIVE_EVERY:?} apart)"
                            )));
                            return;
                        }
                    }
                    // The link is down: that is watched on its own.
                    Err(_) => {}
                }
            }
        });
        watcher
    }

    /// Resolves with why the call with request id `id` can no longer be
    /// answered; pending while all is well.
    pub(super) async fn lost(
        &self,
        ack: tokio::sync::oneshot::Receiver<String>,
        liveness: Liveness,
        acked_by: &Mutex<Option<String>>,
    ) -> Loss {
        let mut link = self.link_lost.clone();
        let link_lost = async move {
            let _ = link.wait_for(|lost| *lost).await;
            Loss::Link
        };
        let replica = async {
            let by = if liveness.acked {
                match tokio::time::timeout(ACK_WITHIN, ack).await {
                    Ok(Ok(by)) => by,
                    Ok(Err(_)) => return std::future::pending().await,
                    Err(_) => return Loss::Unacknowledged(ACK_WITHIN),
                }
            } else {
                match ack.await {
                    Ok(by) => by,
                    // A replica that does not acknowledge: wait for its answer.
                    Err(_) => return std::future::pending().await,
                }
            };
            *acked_by.lock() = Some(by.clone());
            let watcher = self.watcher(&by);
            let mut lost = watcher.lost.clone();
            let why = lost
                .wait_for(Option::is_some)
                .await
                .map(|why| why.clone().unwrap_or_default());
            let Ok(why) = why else {
                return std::future::pending().await;
            };
            Loss::Replica { replica: by, why }
        };
        tokio::select! {
            why = link_lost => why,
            why = replica => why,
        }
    }
}
