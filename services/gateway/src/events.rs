//! SSE events on JetStream, so a client whose stream broke resumes it at
//! any gateway replica.
//!
//! rmcp gives every SSE event it sends an id from an [`EventStore`]. This
//! one publishes each event on `sophia.v1.sse.<stream>` in the stream
//! [`EVENTS_STREAM`]; the id is `<stream>-<number>`, numbers increasing
//! within a stream. A client
//! that reconnects with `Last-Event-ID` (to this replica or another: the
//! session itself moves through [`crate::sessions`]) gets, from JetStream,
//! every later event of the same SSE stream: those it missed, then new ones
//! as the replica still running the request publishes them, until the
//! request's response.
//!
//! The stream is in memory (at most [`MAX_BYTES`], replicated on a
//! cluster): a reconnect comes within seconds, and a NATS restart, which
//! loses the events, also breaks every stream anyway.
//!
//! Events are published without waiting for JetStream's acknowledgement (a
//! round trip per event would halve the gateway's throughput): the id does
//! not depend on it, and a resume reads the stream's events from JetStream
//! and skips those up to the id. An event that cannot be published (the
//! bus is down) is still sent, with an id that cannot be resumed from: a
//! resume from it gets an empty stream, which tells the client to ask
//! again. An event larger than a NATS message is refused by the server and
//! missing from a replay; results that large go in parts
//! ([`crate::results`]), so only a large worker notification could be.

use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use futures::StreamExt;
use rmcp::model::ServerJsonRpcMessage;
use rmcp::transport::streamable_http_server::session::{
    EventId, EventStore, EventStoreError, EventStream, ServerSseMessage,
};
use serde::{Deserialize, Serialize};

/// The JetStream stream holding SSE events.
pub const EVENTS_STREAM: &str = "sophia_sse_events";
/// Events of SSE stream `s` are published on this prefix + `s` in hex.
pub const SUBJECT_PREFIX: &str = "sophia.v1.sse.";
/// The most the stream holds (in the NATS servers' memory).
pub const MAX_BYTES: i64 = 256 * 1024 * 1024;
/// Between an event id's stream and its number.
const ID_SEPARATOR: char = '-';
/// The prefix of ids of events that were not stored.
const UNSTORED: &str = "unstored-";

/// SSE events on JetStream, shared by the gateway replicas.
pub struct JsEvents {
    stream: stream::Stream,
    link: sophia_kit::nats::Connection,
    /// Numbers events, increasing: the part of an event id after the
    /// stream. Starts at this replica's start time in microseconds, so a
    /// restarted replica's numbers are higher than its predecessor's.
    next: std::sync::atomic::AtomicU64,
}

/// An event as stored.
#[derive(Serialize, Deserialize)]
struct Stored {
    /// The event's number (this gateway's count; ordered within a stream).
    n: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    message: Option<ServerJsonRpcMessage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    retry_ms: Option<u64>,
}

impl JsEvents {
    /// Opens (creating if needed) the stream; events are kept for
    /// `keep`.
    pub async fn open(link: sophia_kit::nats::Connection, keep: Duration) -> Result<Self, String> {
        let js = jetstream::new(link.client.clone());
        let stream = js
            .get_or_create_stream(stream::Config {
                name: EVENTS_STREAM.into(),
                description: Some(
                    "Sophia Mesh: MCP SSE events, to resume a stream at any gateway replica".into(),
                ),
                subjects: vec![format!("{SUBJECT_PREFIX}>")],
                max_age: keep,
                // Events matter for minutes: memory is enough, and fast.
                // Bounded, the oldest going first.
                storage: stream::StorageType::Memory,
                max_bytes: MAX_BYTES,
                discard: stream::DiscardPolicy::Old,
                num_replicas: sophia_proto::payload::replicas(&link.client),
                ..Default::default()
            })
            .await
            .map_err(|e| e.to_string())?;
        let start = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(1);
        Ok(Self {
            stream,
            link,
            next: std::sync::atomic::AtomicU64::new(start),
        })
    }
}

/// The subject of SSE stream `stream_id` (rmcp's ids hold `:` and `-`).
fn subject(stream_id: &str) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(SUBJECT_PREFIX.len() + 2 * stream_id.len());
    s.push_str(SUBJECT_PREFIX);
    for b in stream_id.bytes() {
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn unstored() -> EventId {
    format!("{UNSTORED}{}", uuid::Uuid::new_v4().simple())
}

/// Whether `message` ends its SSE stream: a request's response or error.
fn ends_stream(message: &Option<ServerJsonRpcMessage>) -> bool {
    matches!(
        message,
        Some(ServerJsonRpcMessage::Response(_) | ServerJsonRpcMessage::Error(_))
    )
}

#[async_trait::async_trait]
impl EventStore for JsEvents {
    async fn store_event(
        &self,
        stream_id: &str,
        event: &ServerSseMessage,
    ) -> Result<EventId, EventStoreError> {
        if !self.link.is_up() {
            return Ok(unstored());
        }
        let n = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let stored = Stored {
            n,
            message: event.message.as_deref().cloned(),
            retry_ms: event.retry.map(|r| r.as_millis() as u64),
        };
        let subject = subject(stream_id);
        let id = format!("{}{ID_SEPARATOR}{n}", &subject[SUBJECT_PREFIX.len()..]);
        // Not waiting for JetStream's ack keeps a call's latency; a stream's
        // events still land in order (one connection, one subject).
        match self
            .link
            .client
            .publish(subject, serde_json::to_vec(&stored)?.into())
            .await
        {
            Ok(()) => Ok(id),
            Err(e) => {
                tracing::warn!(error = %e, "an SSE event was sent but not stored: a client cannot resume from it");
                Ok(unstored())
            }
        }
    }

    async fn replay_events_after(
        &self,
        last_event_id: &str,
    ) -> Result<EventStream, EventStoreError> {
        let (token, n) = last_event_id
            .split_once(ID_SEPARATOR)
            .and_then(|(t, n)| Some((t, n.parse::<u64>().ok()?)))
            .filter(|(t, _)| !t.is_empty() && t.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or_else(|| {
                format!("event {last_event_id:?} was not stored; it cannot be resumed")
            })?;
        let token = token.to_owned();
        let consumer = self
            .stream
            .create_consumer(consumer::pull::OrderedConfig {
                filter_subject: format!("{SUBJECT_PREFIX}{token}"),
                deliver_policy: consumer::DeliverPolicy::All,
                ..Default::default()
            })
            .await?;
        let mut messages = consumer.messages().await?;
        // The consumer's stream is not `Sync`; a task forwards it.
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        tokio::spawn(async move {
            loop {
                let next = tokio::select! {
                    next = messages.next() => next,
                    _ = tx.closed() => break,
                };
                let Some(Ok(message)) = next else { break };
                let Ok(stored) = serde_json::from_slice::<Stored>(&message.payload) else {
                    continue;
                };
                let end = ends_stream(&stored.message);
                if stored.n > n {
                    let mut event = ServerSseMessage::default();
                    event.event_id = Some(format!("{token}{ID_SEPARATOR}{}", stored.n));
                    event.message = stored.message.map(std::sync::Arc::new);
                    event.retry = stored.retry_ms.map(Duration::from_millis);
                    if tx.send(event).await.is_err() {
                        break;
                    }
                }
                if end {
                    break;
                }
            }
        });
        Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_are_one_safe_token() {
        let s = subject("0b4e-11:common.*>");
        let token = s.strip_prefix(SUBJECT_PREFIX).unwrap();
        assert!(token.bytes().all(|b| b.is_ascii_hexdigit()));
    }

    #[test]
    fn stored_messages_read_back_the_same() {
        for wire in [
            serde_json::json!({"jsonrpc": "2.0", "id": 7, "result": {
                "content": [{"type": "text", "text": "hi"}], "isError": false}}),
            serde_json::json!({"jsonrpc": "2.0", "method": "notifications/progress",
                "params": {"progressToken": "t", "progress": 3.0, "total": 10.0}}),
            serde_json::json!({"jsonrpc": "2.0", "id": 8, "error": {"code": -32602, "message": "bad"}}),
        ] {
            let message: ServerJsonRpcMessage = serde_json::from_value(wire.clone()).unwrap();
            let stored = serde_json::to_vec(&Stored {
                n: 1,
                message: Some(message),
                retry_ms: None,
            })
            .unwrap();
            let back: Stored = serde_json::from_slice(&stored).unwrap();
            assert_eq!(serde_json::to_value(back.message.unwrap()).unwrap(), wire);
        }
    }
}
