//! Large payloads: anything bigger than the server's `max_payload` travels
//! through the JetStream object store instead of inline.
//!
//! The sender writes the encoded envelope as an object in the bucket
//! [`BUCKET`] under a fresh name, and sends a small [`ObjectRef`] in its place,
//! with the header `Sophia-Payload: object`. The receiver reads the object,
//! deletes it, and decodes the envelope as usual. Objects nobody collects
//! expire after [`OBJECT_TTL`]. The object store itself chunks the data into
//! 128 KiB messages, so any size up to [`PayloadStore::max_bytes`] works.

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, object_store::ObjectStore};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;
use tokio::sync::OnceCell;

use crate::{codec, headers};

/// The object store bucket holding offloaded payloads.
pub const BUCKET: &str = "sophia_payloads";
/// How long an offloaded payload is kept if nobody collects it.
pub const OBJECT_TTL: Duration = Duration::from_secs(15 * 60);
/// Room left under `max_payload` for headers and NATS framing.
pub const HEADROOM: usize = 8 * 1024;
/// The default largest payload the mesh carries at all (64 MiB).
pub const DEFAULT_MAX_BYTES: usize = 64 * 1024 * 1024;

/// Where an offloaded payload is: the body of a message whose
/// `Sophia-Payload` header is `object`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectRef {
    /// The object store bucket.
    pub bucket: String,
    /// The object's name in it.
    pub name: String,
    /// The payload's size in bytes.
    pub size: u64,
}

/// The [`ObjectRef`] a received message carries instead of its body, if its
/// headers say it was offloaded. Only an object of this mesh's [`BUCKET`],
/// named as senders name them (a UUID), is ever fetched: a reference a peer
/// makes up cannot make the receiver read (and then delete) anything else.
pub fn reference(
    headers: Option<&HeaderMap>,
    body: &[u8],
) -> Result<Option<ObjectRef>, PayloadError> {
    let offloaded = headers
        .and_then(|h| h.get(headers::PAYLOAD))
        .is_some_and(|v| v.as_str() == headers::OFFLOADED);
    if !offloaded {
        return Ok(None);
    }
    let reference: ObjectRef = codec::decode(body)?;
    if reference.bucket != BUCKET || uuid::Uuid::parse_str(&reference.name).is_err() {
        return Err(PayloadError::FetchFailed {
            bucket: reference.bucket.chars().take(64).collect(),
            name: reference.name.chars().take(64).collect(),
            cause: format!("only objects of bucket {BUCKET} named by a UUID are collected"),
        });
    }
    Ok(Some(reference))
}

/// How many copies JetStream keeps of each of the mesh's streams, KV and
/// object-store buckets: three on a NATS cluster of three or more servers
/// (so losing one server loses nothing), one on a single server. Read from
/// the connected server's INFO; call it once connected.
pub fn replicas(client: &async_nats::Client) -> usize {
    let info = client.server_info();
    if info.cluster.is_none() {
        return 1;
    }
    // The cluster's client URLs, this server's among them or not.
    let mut servers: Vec<&str> = info.connect_urls.iter().map(String::as_str).collect();
    servers.sort_unstable();
    servers.dedup();
    servers.len().clamp(1, 3)
}

/// Why a payload could not be carried.
#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    /// Bigger than the mesh carries at all.
    #[error(
        "payload of {size} bytes is larger than the mesh's limit of {max} bytes; \
         send less data (e.g. page through it) or raise the limit"
    )]
    TooLarge {
        /// The payload's size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// Too big for one NATS message, and the object store is not usable.
    #[error(
        "payload of {size} bytes exceeds the NATS server's max_payload ({limit} bytes) \
         and could not be offloaded to the JetStream object store ({cause}); \
         enable JetStream on the NATS server (nats-server -js) or send less data"
    )]
    OffloadFailed {
        /// The payload's size.
        size: usize,
        /// What a single message may carry.
        limit: usize,
        /// What went wrong with JetStream.
        cause: String,
    },
    /// A message said its payload was offloaded, but it could not be fetched.
    #[error("could not fetch the offloaded payload {name:?} from bucket {bucket:?}: {cause}")]
    FetchFailed {
        /// The bucket.
        bucket: String,
        /// The object.
        name: String,
        /// What went wrong.
        cause: String,
    },
    /// The body of an offloaded message was not an [`ObjectRef`].
    #[error(
        "the message says its payload was offloaded, but its body is not an object reference: {0}"
    )]
    BadReference(#[from] codec::DecodeError),
}

/// Packs and unpacks payloads, offloading the large ones. Cheap to clone.
#[derive(Clone)]
pub struct PayloadStore {
    client: async_nats::Client,
    js: jetstream::Context,
    store: std::sync::Arc<OnceCell<ObjectStore>>,
    max_bytes: usize,
}

impl std::fmt::Debug for PayloadStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PayloadStore")
            .field("max_bytes", &self.max_bytes)
            .finish_non_exhaustive()
    }
}

impl PayloadStore {
    /// A store using `client`'s JetStream, carrying payloads up to
    /// [`DEFAULT_MAX_BYTES`].
    pub fn new(client: async_nats::Client) -> Self {
        Self {
            js: jetstream::new(client.clone()),
            client,
            store: Default::default(),
            max_bytes: DEFAULT_MAX_BYTES,
        }
    }

    /// The same store with another limit on the largest payload.
    pub fn with_max_bytes(mut self, max_bytes: usize) -> Self {
        self.max_bytes = max_bytes;
        self
    }

    /// The largest payload this store carries.
    pub fn max_bytes(&self) -> usize {
        self.max_bytes
    }

    /// The largest body sent inline, from the server's current `max_payload`.
    pub fn inline_limit(&self) -> usize {
        self.client.max_payload().saturating_sub(HEADROOM)
    }

    async fn bucket(&self) -> Result<&ObjectStore, async_nats::Error> {
        self.store
            .get_or_try_init(|| async {
                let config = jetstream::object_store::Config {
                    bucket: BUCKET.to_owned(),
                    description: Some("Sophia Mesh payloads too large for one message".into()),
                    max_age: OBJECT_TTL,
                    num_replicas: replicas(&self.client),
                    ..Default::default()
                };
                Ok::<_, async_nats::Error>(self.js.create_object_store(config).await?)
            })
            .await
    }

    /// Returns the body to send for `body`: itself when it fits in one
    /// message, otherwise an [`ObjectRef`] to it, with the `Sophia-Payload`
    /// header set in `headers`.
    pub async fn pack(
        &self,
        body: Vec<u8>,
        headers: &mut HeaderMap,
    ) -> Result<Bytes, PayloadError> {
        let size = body.len();
        if size > self.max_bytes {
            return Err(PayloadError::TooLarge {
                size,
                max: self.max_bytes,
            });
        }
        let limit = self.inline_limit();
        if size <= limit {
            return Ok(Bytes::from(body));
        }
        let failed = |cause: String| PayloadError::OffloadFailed { size, limit, cause };
        let store = self.bucket().await.map_err(|e| failed(e.to_string()))?;
        let name = uuid::Uuid::new_v4().to_string();
        store
            .put(name.as_str(), &mut body.as_slice())
            .await
            .map_err(|e| failed(e.to_string()))?;
        tracing::debug!(size, object = %name, "payload offloaded to the object store");
        headers.insert(headers::PAYLOAD, headers::OFFLOADED);
        let reference = ObjectRef {
            bucket: BUCKET.to_owned(),
            name,
            size: size as u64,
        };
        let encoded = codec::encode(&reference).map_err(|e| failed(e.to_string()))?;
        Ok(Bytes::from(encoded))
    }

    /// Returns the real body of a received message: the body itself, or the
    /// offloaded payload it points to (which is then deleted).
    pub async fn unpack(
        &self,
        headers: Option<&HeaderMap>,
        body: Bytes,
    ) -> Result<Bytes, PayloadError> {
        let Some(reference) = reference(headers, &body)? else {
            return Ok(body);
        };
        let fetch_failed = |cause: String| PayloadError::FetchFailed {
            bucket: reference.bucket.clone(),
            name: reference.name.clone(),
            cause,
        };
        if reference.size as usize > self.max_bytes {
            return Err(fetch_failed(format!(
                "it is {} bytes, over this side's limit of {} bytes",
                reference.size, self.max_bytes
            )));
        }
        let store = self
            .js
            .get_object_store(&reference.bucket)
            .await
            .map_err(|e| fetch_failed(e.to_string()))?;
        let mut object = store
            .get(&reference.name)
            .await
            .map_err(|e| fetch_failed(e.to_string()))?;
        let mut data = Vec::with_capacity(reference.size as usize);
        object
            .read_to_end(&mut data)
            .await
            .map_err(|e| fetch_failed(e.to_string()))?;
        if data.len() as u64 != reference.size {
            return Err(fetch_failed(format!(
                "expected {} bytes, read {}",
                reference.size,
                data.len()
            )));
        }
        // One reader per object: remove it now rather than waiting for the TTL.
        let name = reference.name.clone();
        tokio::spawn(async move {
            if let Err(e) = store.delete(&name).await {
                tracing::debug!(object = %name, cause = %e, "could not delete a collected payload");
            }
        });
        Ok(Bytes::from(data))
    }
}
