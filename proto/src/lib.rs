//! The Sophia Mesh wire contract, and the only code that knows it.
//!
//! Everything that crosses the bus is defined here: the NATS subjects
//! ([`subject`]), the header names ([`headers`]), the MessagePack envelopes
//! ([`envelope`]), the codec ([`codec`]) and the large-payload offload
//! ([`payload`]). Services never format a subject string or call `rmp_serde`
//! themselves; they call into this crate. `docs/protocol.md` describes the same
//! contract for people writing workers in other languages.
//!
//! # How a tool call crosses the bus
//! 1. The caller builds a [`envelope::ToolRequest`], encodes it with
//!    [`codec::encode`], and, if it is larger than the server accepts, lets
//!    [`payload::PayloadStore::pack`] move it to the JetStream object store.
//! 2. It sends the bytes as a NATS request to [`subject::tool`] with the
//!    [`headers`] for tracing and the request id.
//! 3. A worker in the queue group [`subject::QUEUE_GROUP`] decodes it, may
//!    publish [`envelope::Progress`] to the request's `progress_to` subject,
//!    watches [`subject::cancel`] for a [`envelope::Cancel`], and replies with
//!    a [`envelope::ToolResponse`] that carries a result or a typed error.
#![forbid(unsafe_code)]

pub mod audit;
pub mod chat;
pub mod codec;
pub mod envelope;
pub mod headers;
pub mod payload;
pub mod subject;

pub use codec::{DecodeError, EncodeError, decode, encode};
pub use envelope::*;
pub use subject::Category;

/// The version of the bus protocol this crate speaks. It is carried as `v` in
/// every envelope and as the `v1` token in every subject.
pub const PROTOCOL_VERSION: u16 = 1;
