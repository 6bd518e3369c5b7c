//! `intelligence-worker`: the mesh's door to model inference.
//!
//! # Layout
//! - [`config`]: providers, model aliases, prices and routing settings (TOML;
//!   API keys come from environment variables the file names).
//! - [`provider`]: one OpenAI-compatible provider, one HTTP attempt, its
//!   failures classified (timeout, 429 with `Retry-After`, 5xx, rejection,
//!   malformed, cut-off stream).
//! - [`chat`]: token usage, and assembling streamed chunks (text and
//!   tool-call deltas by index; `choices: null` tolerated).
//! - [`router`]: fallback across priority tiers, least-outstanding balancing,
//!   per-provider circuit breakers, retries with jittered backoff.
//!
//! # Status
//! The routing core above is built and tested against a stand-in
//! OpenAI-compatible server (`tests/src/openai.rs`). **Not built yet**: the
//! bus API on `sophia.v1.infer.<alias>.*` subjects with per-model queue
//! groups, the MCP tools, usage metrics, and the benchmark. Until then the
//! worker joins the mesh with no tools.
#![forbid(unsafe_code)]

pub mod chat;
pub mod config;
pub mod provider;
pub mod router;

use sophia_kit::Worker;

/// The default port for `/health`, `/ready` and `/metrics` (the seed's layout).
pub const DEFAULT_HTTP_PORT: u16 = 8092;

/// The worker, with the tools it has today (none yet: see the status above).
pub fn worker() -> Worker {
    Worker::new("intelligence-worker", env!("CARGO_PKG_VERSION"))
        .description("Sophia Mesh model inference routing; no tools yet")
}
