//! `pulumi-worker`: Pulumi stacks (issue: pulumi-worker).
//!
//! This crate is still the worker's skeleton: it joins the mesh as a NATS
//! micro service with health, readiness and metrics, but offers **no tools
//! yet**. Built so far: [`events`], reading Pulumi's engine event log (from a
//! finished file, or live while the CLI writes it), [`cli`], driving
//! the Pulumi CLI as the Automation API does, and [`jobs`], durable job
//! records and cross-replica stack locks on JetStream KV. Still to come in
//! its issue: the tools, plans and confirmation, stack locks and
//! durable jobs.
#![forbid(unsafe_code)]

pub mod cli;
pub mod events;
pub mod jobs;

use sophia_kit::Worker;

/// The default port for `/health`, `/ready` and `/metrics` (the seed's layout).
pub const DEFAULT_HTTP_PORT: u16 = 8091;

/// The worker, with the tools it has today (none yet).
pub fn worker() -> Worker {
    Worker::new("pulumi-worker", env!("CARGO_PKG_VERSION"))
        .description("Sophia Mesh Pulumi stacks (issue: pulumi-worker); no tools yet")
}
