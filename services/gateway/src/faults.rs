//! Faults the gateway sees in worker replicas, counted and shown.
//!
//! Each failed call already ends with an error that says what to do. An SRE
//! also needs the pattern: which service, which replica, how often. So the
//! gateway records every call that ended because of a replica, in three
//! kinds, for [`WINDOW`]:
//! - **stuck**: the replica took the call and kept answering liveness
//!   checks, but did not finish before the deadline;
//! - **unacknowledged**: no replica acknowledged the request, so the one the
//!   queue group chose is gone or takes requests and drops them;
//! - **lost**: the replica that took the call died or froze.
//!
//! They are on `/health` under `faults` (grouped, with what to do) and in
//! `sophia_gateway_call_faults_total{service, fault}`.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use serde_json::{Value, json};
use sophia_kit::bus::{CallError, Loss};
use sophia_proto::ErrorCode;

/// How long a fault stays on `/health`.
pub const WINDOW: Duration = Duration::from_secs(600);
/// The most faults remembered (the oldest go first).
const MAX_RECORDS: usize = 10_000;

/// A kind of replica fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fault {
    /// Alive, but did not finish before the deadline.
    Stuck,
    /// Not acknowledged: gone, or dropping requests.
    Unacknowledged,
    /// Died or froze while running the call.
    Lost,
}

impl Fault {
    fn as_str(self) -> &'static str {
        match self {
            Fault::Stuck => "stuck",
            Fault::Unacknowledged => "unacknowledged",
            Fault::Lost => "lost",
        }
    }

    /// The fault behind a failed call, and the replica if known; `None`
    /// when the call did not fail because of a replica.
    pub fn of(error: &CallError) -> Option<(Fault, Option<String>)> {
        match error {
            CallError::Timeout { replica, .. } => Some((Fault::Stuck, replica.clone())),
            CallError::Worker(w) if w.code == ErrorCode::Timeout => {
                let replica = w
                    .data
                    .as_ref()
                    .and_then(|d| d["replica"].as_str())
                    .map(sophia_kit::vetting::shown);
                Some((Fault::Stuck, replica))
            }
            CallError::WorkerLost { loss, .. } => match loss {
                Loss::Link => None,
                Loss::Unacknowledged(_) => Some((Fault::Unacknowledged, None)),
                Loss::Replica { replica, .. } => Some((Fault::Lost, Some(replica.clone()))),
            },
            _ => None,
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FaultLabels {
    service: String,
    fault: String,
}

struct Record {
    at: Instant,
    service: String,
    fault: Fault,
    replica: Option<String>,
}

/// The recent faults, shared by every session.
#[derive(Clone)]
pub struct Faults {
    records: Arc<Mutex<VecDeque<Record>>>,
    total: Family<FaultLabels, Counter>,
}

impl Faults {
    /// A tracker whose counter is registered in `registry`.
    pub fn register(registry: &mut prometheus_client::registry::Registry) -> Self {
        let total = Family::<FaultLabels, Counter>::default();
        registry.register(
            "sophia_gateway_call_faults",
            "Calls that ended because of a worker replica: stuck, unacknowledged or lost",
            total.clone(),
        );
        Self {
            records: Default::default(),
            total,
        }
    }

    /// Records `error` of a call to `service`, if a replica caused it.
    pub fn note(&self, service: &str, error: &CallError) {
        let Some((fault, replica)) = Fault::of(error) else {
            return;
        };
        self.total
            .get_or_create(&FaultLabels {
                service: service.to_owned(),
                fault: fault.as_str().to_owned(),
            })
            .inc();
        let mut records = self.records.lock();
        prune(&mut records);
        if records.len() >= MAX_RECORDS {
            records.pop_front();
        }
        records.push_back(Record {
            at: Instant::now(),
            service: service.to_owned(),
            fault,
            replica,
        });
    }

    /// The faults of the last [`WINDOW`], grouped by service, kind and
    /// replica, each with what to do.
    pub fn health(&self) -> Vec<Value> {
        let mut records = self.records.lock();
        prune(&mut records);
        let mut groups: BTreeMap<(&str, Fault, Option<&str>), (usize, Instant)> = BTreeMap::new();
        for r in records.iter() {
            let g = groups
                .entry((&r.service, r.fault, r.replica.as_deref()))
                .or_insert((0, r.at));
            g.0 += 1;
            g.1 = g.1.max(r.at);
        }
        groups
            .into_iter()
            .map(|((service, fault, replica), (calls, last))| {
                json!({
                    "service": service,
                    "fault": fault.as_str(),
                    "replica": replica,
                    "calls": calls,
                    "last_seen_s_ago": last.elapsed().as_secs(),
                    "problem": problem(service, fault, replica, calls),
                })
            })
            .collect()
    }
}

fn prune(records: &mut VecDeque<Record>) {
    while records.front().is_some_and(|r| r.at.elapsed() > WINDOW) {
        records.pop_front();
    }
}

fn problem(service: &str, fault: Fault, replica: Option<&str>, calls: usize) -> String {
    let minutes = WINDOW.as_secs() / 60;
    let who = match replica {
        Some(r) => format!("replica {r} of {service}"),
        None => format!("a replica of {service}"),
    };
    match fault {
        Fault::Stuck => format!(
            "{who} let {calls} call(s) pass their deadline in the last {minutes} min while \
             answering liveness checks: it is stuck (a hung handler or dependency). Read its \
             logs or restart it"
        ),
        Fault::Unacknowledged => format!(
            "{calls} call(s) to {service} in the last {minutes} min were not acknowledged: \
             a replica takes requests and drops them, or has just died. Compare its replicas' \
             sophia_worker_tool_calls_total and restart the one that does not move"
        ),
        Fault::Lost => format!(
            "{who} died or froze while running {calls} call(s) in the last {minutes} min; \
             those calls ended with worker_lost. Check why it stopped (OOM, crash, SIGSTOP)"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_are_grouped_with_what_to_do() {
        let faults = Faults::register(&mut Default::default());
        let stuck = CallError::Timeout {
            tool: "t".into(),
            timeout: Duration::from_secs(1),
            replica: Some("r1".into()),
        };
        faults.note("svc", &stuck);
        faults.note("svc", &stuck);
        faults.note(
            "svc",
            &CallError::WorkerLost {
                tool: "t".into(),
                loss: Loss::Unacknowledged(Duration::from_secs(5)),
                pulumi: false,
            },
        );
        faults.note(
            "svc",
            &CallError::WorkerLost {
                tool: "t".into(),
                loss: Loss::Link,
                pulumi: false,
            },
        );
        let health = faults.health();
        assert_eq!(health.len(), 2, "{health:?}");
        assert_eq!(health[0]["fault"], "stuck");
        assert_eq!(health[0]["calls"], 2);
        assert!(health[0]["problem"].as_str().unwrap().contains("restart"));
        assert_eq!(health[1]["fault"], "unacknowledged");
    }
}
