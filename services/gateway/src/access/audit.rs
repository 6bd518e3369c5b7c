//! The audit trail: every tool call, refusal and confirmation appended to
//! the JetStream stream `sophia_audit` (`docs/security.md`, "Audit").
//!
//! Records are queued in order to one task that stores them off the call
//! path, so auditing adds no round trip to a call. The task publishes each
//! record to the stream and awaits JetStream's acknowledgement, up to
//! [`WINDOW`] at once; a record JetStream did not confirm (stream away,
//! NATS reconnecting, timeout) is sent again with the same `Nats-Msg-Id`,
//! so the stream keeps it once, until it is stored. If the queue overflows
//! meanwhile ([`QUEUE`] records), the gateway's log says how many were
//! dropped.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::{self, message::PublishMessage, stream};
use futures::StreamExt;
use sha2::{Digest, Sha256};
use sophia_proto::audit::{AuditKind, AuditRecord, STREAM};

/// The most records waiting to be published.
const QUEUE: usize = 16 * 1024;
/// The most records published and not yet confirmed by JetStream.
const WINDOW: usize = 512;
/// The longest wait before a record JetStream did not confirm is sent again.
const MAX_RETRY: Duration = Duration::from_secs(5);

/// Stores every record received, in order of arrival, [`WINDOW`] at once.
async fn store_all(js: jetstream::Context, mut records: tokio::sync::mpsc::Receiver<AuditRecord>) {
    let mut storing = futures::stream::FuturesUnordered::new();
    loop {
        tokio::select! {
            Some(record) = records.recv(), if storing.len() < WINDOW => {
                storing.push(store(js.clone(), record));
            }
            Some(()) = storing.next(), if !storing.is_empty() => {}
            else => break,
        }
    }
}

/// Publishes `record` until JetStream confirms it stored it.
async fn store(js: jetstream::Context, record: AuditRecord) {
    let subject = sophia_proto::subject::audit(record.kind);
    let Ok(body) = serde_json::to_vec(&record) else {
        return;
    };
    let body = bytes::Bytes::from(body);
    let id = uuid::Uuid::new_v4().simple().to_string();
    let mut wait = Duration::from_millis(100);
    loop {
        let message = PublishMessage::build()
            .payload(body.clone())
            .message_id(&id);
        let stored = match js.send_publish(subject.clone(), message).await {
            Ok(ack) => ack.await.map(drop),
            Err(e) => Err(e),
        };
        match stored {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(cause = %e, retry_in = ?wait,
                    "JetStream did not confirm an audit record; sending it again");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(MAX_RETRY);
            }
        }
    }
}

/// Appends audit records. Cheap to clone.
#[derive(Clone)]
pub struct Audit {
    queue: Option<tokio::sync::mpsc::Sender<AuditRecord>>,
    /// Records dropped because the queue was full, not yet logged.
    dropped: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Audit {
    /// Opens (creating if needed) the stream, keeping records for `keep`
    /// (zero: auditing off).
    pub async fn open(
        link: &sophia_kit::nats::Connection,
        keep: Duration,
    ) -> Result<Self, async_nats::Error> {
        if keep.is_zero() {
            return Ok(Audit::off());
        }
        let js = jetstream::new(link.client.clone());
        let config = stream::Config {
            name: STREAM.into(),
            description: Some(
                "Sophia Mesh: who called what, refusals and confirmations (no argument values)"
                    .into(),
            ),
            subjects: vec![format!("{}.>", sophia_proto::subject::AUDIT_PREFIX)],
            // Kept by age: a size cap would be reserved on the servers'
            // disks up front, and a record dropped for size is lost evidence.
            max_age: keep,
            storage: stream::StorageType::File,
            discard: stream::DiscardPolicy::Old,
            num_replicas: sophia_proto::payload::replicas(&link.client),
            ..Default::default()
        };
        match js.get_or_create_stream(config.clone()).await {
            Ok(mut existing) => {
                // A new retention applies to the stream already there.
                let info = existing.info().await?;
                if info.config.max_age != keep {
                    js.update_stream(config).await?;
                }
            }
            Err(e) => return Err(e.into()),
        }
        let (queue, records) = tokio::sync::mpsc::channel::<AuditRecord>(QUEUE);
        tokio::spawn(store_all(js, records));
        Ok(Audit {
            queue: Some(queue),
            dropped: Default::default(),
        })
    }

    /// No audit (stdio tests, or `SOPHIA_AUDIT_RETENTION_S=0`).
    pub fn off() -> Self {
        Audit {
            queue: None,
            dropped: Default::default(),
        }
    }

    /// Whether records are kept.
    pub fn enabled(&self) -> bool {
        self.queue.is_some()
    }

    /// Appends `record`.
    pub fn record(&self, record: AuditRecord) {
        let Some(queue) = &self.queue else { return };
        use std::sync::atomic::Ordering;
        match queue.try_send(record) {
            // Said once per run of drops, when records flow again.
            Ok(()) => {
                let dropped = self.dropped.swap(0, Ordering::Relaxed);
                if dropped > 0 {
                    tracing::warn!(
                        dropped,
                        "the audit queue was full (NATS away or slow): records were dropped"
                    );
                }
            }
            Err(_) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// A record of `kind` by `who`, now.
pub fn record(kind: AuditKind, who: &Who<'_>, tool: &str, outcome: &str) -> AuditRecord {
    AuditRecord {
        time_ms: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or_default(),
        kind,
        principal: who.principal.to_owned(),
        roles: who.roles.to_vec(),
        profile: who.profile.map(str::to_owned),
        via: who.via.to_owned(),
        tool: sophia_kit::vetting::shown(tool),
        outcome: outcome.to_owned(),
        duration_ms: 0,
        trace_id: None,
        args_sha256: None,
    }
}

/// Who did something, and where.
pub struct Who<'a> {
    /// The principal.
    pub principal: &'a str,
    /// Its roles.
    pub roles: &'a [String],
    /// The endpoint's profile.
    pub profile: Option<&'a str>,
    /// `mcp`, `rest` or `stdio`.
    pub via: &'a str,
}

/// SHA-256 (hex) of `args` as JSON (compact, as `Value::to_string` writes
/// it), written straight into the hash: no copy of the arguments, and no
/// string per byte of the digest (once per call, `docs/performance.md`).
pub fn args_hash(args: &serde_json::Value) -> String {
    let mut hasher = HashWriter(Sha256::new());
    // Writing a `Value` into a hash cannot fail.
    let _ = serde_json::to_writer(&mut hasher, args);
    let digest = hasher.0.finalize();
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut hex = String::with_capacity(2 * digest.len());
    for b in digest {
        hex.push(HEX[usize::from(b >> 4)] as char);
        hex.push(HEX[usize::from(b & 0xf)] as char);
    }
    hex
}

/// A hash as an [`std::io::Write`] sink.
struct HashWriter(Sha256);

impl std::io::Write for HashWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_is_sha256_of_the_compact_json_in_lower_hex() {
        let args = serde_json::json!({"text": "x", "n": [1, 2.5, null], "nested": {"a": "é"}});
        let expected: String = Sha256::digest(args.to_string().as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(args_hash(&args), expected);
        assert_eq!(args_hash(&serde_json::json!({})).len(), 64);
    }
}
