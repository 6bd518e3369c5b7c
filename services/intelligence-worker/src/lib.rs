//! `intelligence-worker`: model inference routing (issue: intelligence-worker).
//!
//! This crate is the worker's skeleton: it joins the mesh as a NATS micro
//! service with health, readiness and metrics, but offers **no tools yet**.
//! Its capabilities are built in their own issue; until then it announces an
//! empty tool list, so gateways list nothing for it.
#![forbid(unsafe_code)]

use sophia_kit::Worker;

/// The default port for `/health`, `/ready` and `/metrics` (the seed's layout).
pub const DEFAULT_HTTP_PORT: u16 = 8092;

/// The worker, with the tools it has today (none yet).
pub fn worker() -> Worker {
    Worker::new("intelligence-worker", env!("CARGO_PKG_VERSION")).description(
        "Sophia Mesh model inference routing (issue: intelligence-worker); no tools yet",
    )
}
