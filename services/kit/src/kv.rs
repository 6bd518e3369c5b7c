//! JSON records in a JetStream KV bucket, shared by every replica.
//!
//! [`Bucket::open`] gets a bucket, creating it when it does not exist yet;
//! then [`Bucket::get`], [`Bucket::put`] and [`Bucket::delete`] read and
//! write JSON values, and [`Bucket::create`], [`Bucket::update`] and
//! [`Bucket::delete_at`] do the same with compare-and-swap on a key's
//! revision ([`Bucket::put_bytes`] and [`Bucket::get_bytes`] carry values
//! that are not JSON). A key that is not there is `Ok(None)`; a bus that does not
//! answer, a value that does not decode and a lost compare-and-swap are
//! [`KvError`]s of different [`KvErrorKind`]s, never "missing".
//!
//! Design note: opening is get, then create, not async-nats's
//! `create_or_update_key_value`. The update needs `$JS.API.STREAM.UPDATE`,
//! which the least-privilege users of `ops/nats/nats.conf` do not have: a
//! replica may create its bucket, not rewrite the limits of one in use.

use std::error::Error as StdError;
use std::time::Duration;

use async_nats::jetstream::{self, context, kv};
use futures::TryStreamExt;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// A bucket's settings, used when [`Bucket::open`] has to create it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BucketConfig {
    /// The bucket's name (letters, digits, `-` and `_`).
    pub name: String,
    /// What the bucket holds, for `nats kv ls`.
    pub description: String,
    /// How many revisions of each key are kept (1: the latest only).
    pub history: i64,
    /// How long a value lives; zero keeps values until they are deleted.
    pub max_age: Duration,
}

impl BucketConfig {
    /// A bucket keeping the latest revision of each key, for ever.
    pub fn new(name: impl Into<String>, description: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            description: description.into(),
            history: 1,
            max_age: Duration::ZERO,
        }
    }

    /// Values expire `max_age` after they were written.
    pub fn max_age(mut self, max_age: Duration) -> Self {
        self.max_age = max_age;
        self
    }

    /// Keeps `history` revisions of each key.
    pub fn history(mut self, history: i64) -> Self {
        self.history = history;
        self
    }
}

/// What went wrong with a bucket, for callers to `match` on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KvErrorKind {
    /// JetStream did not answer: the server is down or unreachable, or
    /// runs without JetStream.
    #[error(
        "JetStream did not answer: check that nats-server is running with JetStream \
         enabled (-js) and is reachable, then try again"
    )]
    Unreachable,
    /// JetStream answered with a refusal (permissions, limits, a bucket
    /// that exists with other settings).
    #[error(
        "JetStream refused the request: check the account's JetStream limits and the \
         user's permissions for this bucket"
    )]
    Refused,
    /// A stored value is not the JSON this reader expects.
    #[error(
        "the stored value is not what this version reads: delete the key \
         (`nats kv del <bucket> <key>`) or run a matching version"
    )]
    Corrupt,
    /// The key or bucket name cannot be used.
    #[error(
        "not a valid name: use letters, digits, '-', '_', '/', '=' and '.' (not at either end)"
    )]
    InvalidKey,
    /// The value could not be written as JSON.
    #[error("the value could not be written as JSON (a bug in the writer; please report it)")]
    Encode,
    /// Another writer got there first: the key exists already, or changed
    /// since it was read.
    #[error("another writer changed the key first: read it again and retry")]
    Conflict,
}

/// A bucket operation that failed: its [`KvErrorKind`], where, and the
/// underlying cause.
#[derive(Clone, Debug, thiserror::Error)]
#[error("KV bucket {bucket}{}: {kind}{}", key_part(.key), cause_part(.cause))]
pub struct KvError {
    kind: KvErrorKind,
    bucket: String,
    key: Option<String>,
    cause: Option<String>,
}

fn key_part(key: &Option<String>) -> String {
    key.as_ref()
        .map(|k| format!(", key {k}"))
        .unwrap_or_default()
}

fn cause_part(cause: &Option<String>) -> String {
    cause
        .as_ref()
        .map(|c| format!(" ({c})"))
        .unwrap_or_default()
}

impl KvError {
    /// An error of `kind` on `bucket` (and `key`, if about one key).
    pub fn new(kind: KvErrorKind, bucket: &str, key: Option<&str>) -> Self {
        Self {
            kind,
            bucket: bucket.to_owned(),
            key: key.map(str::to_owned),
            cause: None,
        }
    }

    /// The same error, saying what caused it.
    pub fn because(mut self, cause: impl std::fmt::Display) -> Self {
        self.cause = Some(cause.to_string());
        self
    }

    /// What went wrong.
    pub fn kind(&self) -> KvErrorKind {
        self.kind
    }
}

/// A refusal from JetStream itself (an API error) anywhere in `e`'s
/// causes, as opposed to no answer at all.
fn refused(e: &(dyn StdError + 'static)) -> bool {
    let mut next = Some(e);
    while let Some(e) = next {
        if let Some(e) = e.downcast_ref::<context::CreateStreamError>()
            && matches!(e.kind(), context::CreateStreamErrorKind::JetStream(_))
        {
            return true;
        }
        if let Some(e) = e.downcast_ref::<context::AccountError>()
            && matches!(e.kind(), context::AccountErrorKind::JetStream(_))
        {
            return true;
        }
        next = e.source();
    }
    false
}

fn open_kind(e: &context::CreateKeyValueError) -> KvErrorKind {
    use context::CreateKeyValueErrorKind as K;
    match e.kind() {
        K::InvalidStoreName => KvErrorKind::InvalidKey,
        K::TooLongHistory | K::LimitMarkersNotSupported => KvErrorKind::Refused,
        K::TimedOut => KvErrorKind::Unreachable,
        K::JetStream | K::BucketCreate if refused(e) => KvErrorKind::Refused,
        K::JetStream | K::BucketCreate => KvErrorKind::Unreachable,
    }
}

fn entry_kind(kind: kv::EntryErrorKind) -> KvErrorKind {
    match kind {
        kv::EntryErrorKind::InvalidKey => KvErrorKind::InvalidKey,
        kv::EntryErrorKind::TimedOut | kv::EntryErrorKind::Other => KvErrorKind::Unreachable,
    }
}

fn put_kind(kind: kv::PutErrorKind) -> KvErrorKind {
    match kind {
        kv::PutErrorKind::InvalidKey => KvErrorKind::InvalidKey,
        kv::PutErrorKind::Publish | kv::PutErrorKind::Ack => KvErrorKind::Unreachable,
    }
}

fn create_kind(kind: kv::CreateErrorKind) -> KvErrorKind {
    match kind {
        kv::CreateErrorKind::AlreadyExists => KvErrorKind::Conflict,
        kv::CreateErrorKind::InvalidKey => KvErrorKind::InvalidKey,
        kv::CreateErrorKind::Publish | kv::CreateErrorKind::Ack | kv::CreateErrorKind::Other => {
            KvErrorKind::Unreachable
        }
    }
}

/// Updates, deletes and purges fail alike.
fn update_kind(kind: kv::UpdateErrorKind) -> KvErrorKind {
    match kind {
        kv::UpdateErrorKind::WrongLastRevision => KvErrorKind::Conflict,
        kv::UpdateErrorKind::InvalidKey => KvErrorKind::InvalidKey,
        kv::UpdateErrorKind::TimedOut | kv::UpdateErrorKind::Other => KvErrorKind::Unreachable,
    }
}

/// A JetStream KV bucket of JSON values.
#[derive(Clone, Debug)]
pub struct Bucket {
    store: kv::Store,
    name: String,
}

impl Bucket {
    /// Opens the bucket `config` names, creating it with `config` (and as
    /// many replicas as [`sophia_proto::payload::replicas`] says) if it
    /// does not exist. Call it once connected.
    pub async fn open(client: &async_nats::Client, config: BucketConfig) -> Result<Self, KvError> {
        let js = jetstream::new(client.clone());
        let name = config.name.clone();
        if let Ok(store) = js.get_key_value(&name).await {
            return Ok(Self { store, name });
        }
        // Not there (or not readable): create it. If JetStream is down,
        // this fails too, and says so.
        let store = js
            .create_key_value(kv::Config {
                bucket: config.name,
                description: config.description,
                history: config.history,
                max_age: config.max_age,
                num_replicas: sophia_proto::payload::replicas(client),
                ..Default::default()
            })
            .await
            .map_err(|e| KvError::new(open_kind(&e), &name, None).because(e))?;
        Ok(Self { store, name })
    }

    /// The bucket's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn error(&self, kind: KvErrorKind, key: &str, cause: impl std::fmt::Display) -> KvError {
        KvError::new(kind, &self.name, Some(key)).because(cause)
    }

    fn encode<T: Serialize + ?Sized>(&self, key: &str, value: &T) -> Result<Vec<u8>, KvError> {
        serde_json::to_vec(value).map_err(|e| self.error(KvErrorKind::Encode, key, e))
    }

    /// The value at `key` and its revision; `None` when the key has no
    /// value (never written, deleted or expired).
    pub async fn entry<T: DeserializeOwned>(&self, key: &str) -> Result<Option<(T, u64)>, KvError> {
        let entry = self
            .store
            .entry(key)
            .await
            .map_err(|e| self.error(entry_kind(e.kind()), key, e))?;
        let Some(entry) = entry.filter(|e| e.operation == kv::Operation::Put) else {
            return Ok(None);
        };
        let value = serde_json::from_slice(&entry.value)
            .map_err(|e| self.error(KvErrorKind::Corrupt, key, e))?;
        Ok(Some((value, entry.revision)))
    }

    /// The value at `key`; `None` when the key has no value.
    pub async fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, KvError> {
        Ok(self.entry(key).await?.map(|(value, _)| value))
    }

    /// Writes `value` at `key`, whatever was there; returns the new revision.
    pub async fn put<T: Serialize + ?Sized>(&self, key: &str, value: &T) -> Result<u64, KvError> {
        let bytes = self.encode(key, value)?;
        self.put_bytes(key, bytes.into()).await
    }

    /// Writes raw `bytes` at `key` (for values that are not JSON, such as
    /// the parts of a large result); returns the new revision.
    pub async fn put_bytes(&self, key: &str, bytes: bytes::Bytes) -> Result<u64, KvError> {
        self.store
            .put(key, bytes)
            .await
            .map_err(|e| self.error(put_kind(e.kind()), key, e))
    }

    /// The raw bytes at `key`, as [`Bucket::put_bytes`] wrote them; `None`
    /// when the key has no value.
    pub async fn get_bytes(&self, key: &str) -> Result<Option<bytes::Bytes>, KvError> {
        self.store
            .get(key)
            .await
            .map_err(|e| self.error(entry_kind(e.kind()), key, e))
    }

    /// Writes `value` at `key` only if the key has no value; a
    /// [`KvErrorKind::Conflict`] if it has one. Returns the new revision.
    pub async fn create<T: Serialize + ?Sized>(
        &self,
        key: &str,
        value: &T,
    ) -> Result<u64, KvError> {
        let bytes = self.encode(key, value)?;
        self.store
            .create(key, bytes.into())
            .await
            .map_err(|e| self.error(create_kind(e.kind()), key, e))
    }

    /// Writes `value` at `key` only if the key is still at `revision`; a
    /// [`KvErrorKind::Conflict`] if it changed. Returns the new revision.
    pub async fn update<T: Serialize + ?Sized>(
        &self,
        key: &str,
        value: &T,
        revision: u64,
    ) -> Result<u64, KvError> {
        let bytes = self.encode(key, value)?;
        self.store
            .update(key, bytes.into(), revision)
            .await
            .map_err(|e| self.error(update_kind(e.kind()), key, e))
    }

    /// Deletes `key` with every revision of it (a purge: nothing of the
    /// value stays on the server). Deleting a missing key is no error.
    pub async fn delete(&self, key: &str) -> Result<(), KvError> {
        self.store
            .purge(key)
            .await
            .map_err(|e| self.error(update_kind(e.kind()), key, e))
    }

    /// Deletes `key` as [`Bucket::delete`] does, only if it is still at
    /// `revision`; a [`KvErrorKind::Conflict`] if it changed.
    pub async fn delete_at(&self, key: &str, revision: u64) -> Result<(), KvError> {
        self.store
            .purge_expect_revision(key, Some(revision))
            .await
            .map_err(|e| self.error(update_kind(e.kind()), key, e))
    }

    /// Every key with a value.
    pub async fn keys(&self) -> Result<Vec<String>, KvError> {
        let unreachable = |e: &dyn std::fmt::Display| {
            KvError::new(KvErrorKind::Unreachable, &self.name, None).because(e)
        };
        self.store
            .keys()
            .await
            .map_err(|e| unreachable(&e))?
            .try_collect()
            .await
            .map_err(|e| unreachable(&e))
    }
}
