//! Pulumi engine events: the JSON log the CLI writes with `--event-log FILE`
//! (when `PULUMI_DEBUG_COMMANDS=true`), which is how Pulumi's Automation API
//! learns what an operation did. Results come from here, never from the
//! CLI's human-readable output.
//!
//! [`parse_all`] reads a finished log; [`EventLogTail`] follows a log while
//! the CLI is still writing it, so progress can be streamed as it happens.
//! [`Summary`] folds events into what a caller wants to know.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

/// One engine event.
#[derive(Clone, Debug, PartialEq)]
pub struct EngineEvent {
    /// The engine's sequence number.
    pub sequence: u64,
    /// Unix seconds.
    pub timestamp: u64,
    /// What happened.
    pub kind: EventKind,
}

/// A resource an event is about.
#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    /// `create`, `update`, `delete`, `same`, `replace`, `create-replacement`,
    /// `delete-replaced`, `read`, `refresh`, ...
    pub op: String,
    /// The resource's URN.
    pub urn: String,
    /// The resource type, e.g. `aws:s3/bucket:Bucket`.
    pub resource_type: String,
}

impl Step {
    /// The resource's name: the URN's last `::` segment.
    pub fn name(&self) -> &str {
        self.urn.rsplit("::").next().unwrap_or(&self.urn)
    }
}

/// The kinds of event the mesh understands; others are kept by name.
#[derive(Clone, Debug, PartialEq)]
pub enum EventKind {
    /// The operation starts (with its config; values may be secret and are
    /// not kept).
    Prelude,
    /// A step on a resource is about to run.
    ResourcePre(Step),
    /// A step finished and the resource's outputs are known.
    ResOutputs(Step),
    /// A step failed.
    ResOpFailed(Step),
    /// A diagnostic message (e.g. an error from a provider).
    Diagnostic {
        /// `error`, `warning`, `info`, `debug`, ...
        severity: String,
        /// The message.
        message: String,
        /// The resource it is about, if any.
        urn: Option<String>,
    },
    /// The operation's totals.
    Summary {
        /// Resources per operation, e.g. `{"create": 1, "same": 5}`.
        resource_changes: BTreeMap<String, u64>,
        /// How long it took.
        duration_seconds: u64,
        /// Whether the state may be inconsistent.
        maybe_corrupt: bool,
    },
    /// The last event of a log.
    Cancel,
    /// An event kind this version does not interpret (e.g. `stdoutEvent`).
    Other(String),
}

/// An event that could not be read.
#[derive(Debug, thiserror::Error)]
#[error("malformed engine event: {0}")]
pub struct BadEvent(pub String);

fn step(payload: &Value) -> Step {
    let m = &payload["metadata"];
    let s = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    Step {
        op: s(&m["op"]),
        urn: s(&m["urn"]),
        resource_type: s(&m["type"]),
    }
}

impl EngineEvent {
    /// Interprets one event object.
    pub fn from_value(v: &Value) -> Result<Self, BadEvent> {
        let obj = v
            .as_object()
            .ok_or_else(|| BadEvent("not a JSON object".into()))?;
        let (name, payload) = obj
            .iter()
            .find(|(k, _)| *k != "sequence" && *k != "timestamp")
            .ok_or_else(|| BadEvent("no payload".into()))?;
        let kind = match name.as_str() {
            "preludeEvent" => EventKind::Prelude,
            "resourcePreEvent" => EventKind::ResourcePre(step(payload)),
            "resOutputsEvent" => EventKind::ResOutputs(step(payload)),
            "resOpFailedEvent" => EventKind::ResOpFailed(step(payload)),
            "diagnosticEvent" => EventKind::Diagnostic {
                severity: payload["severity"].as_str().unwrap_or("info").to_owned(),
                message: payload["message"]
                    .as_str()
                    .unwrap_or_default()
                    .trim()
                    .to_owned(),
                urn: payload["urn"]
                    .as_str()
                    .filter(|u| !u.is_empty())
                    .map(str::to_owned),
            },
            "summaryEvent" => EventKind::Summary {
                resource_changes: payload["resourceChanges"]
                    .as_object()
                    .map(|m| {
                        m.iter()
                            .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
                            .collect()
                    })
                    .unwrap_or_default(),
                duration_seconds: payload["durationSeconds"].as_u64().unwrap_or(0),
                maybe_corrupt: payload["maybeCorrupt"].as_bool().unwrap_or(false),
            },
            "cancelEvent" => EventKind::Cancel,
            other => EventKind::Other(other.to_owned()),
        };
        Ok(Self {
            sequence: v["sequence"].as_u64().unwrap_or(0),
            timestamp: v["timestamp"].as_u64().unwrap_or(0),
            kind,
        })
    }

    /// A one-line description for progress, or `None` for events not worth
    /// showing. Only names, types and operations: never inputs, outputs or
    /// config, which may hold secrets.
    pub fn describe(&self) -> Option<String> {
        match &self.kind {
            EventKind::ResourcePre(s) if s.op != "same" => {
                Some(format!("{} {} ({})", ing(&s.op), s.name(), s.resource_type))
            }
            EventKind::ResOutputs(s) if s.op != "same" => {
                Some(format!("{} {} ({})", ed(&s.op), s.name(), s.resource_type))
            }
            EventKind::ResOpFailed(s) => Some(format!(
                "failed to {} {} ({})",
                s.op,
                s.name(),
                s.resource_type
            )),
            EventKind::Diagnostic {
                severity, message, ..
            } if severity == "error" || severity == "warning" => {
                Some(format!("{severity}: {message}"))
            }
            EventKind::Summary {
                resource_changes,
                duration_seconds,
                ..
            } => Some(format!(
                "done in {duration_seconds}s: {}",
                describe_changes(resource_changes)
            )),
            _ => None,
        }
    }
}

fn ing(op: &str) -> String {
    match op {
        "create" => "creating".into(),
        "update" => "updating".into(),
        "delete" => "deleting".into(),
        "replace" => "replacing".into(),
        "read" => "reading".into(),
        "refresh" => "refreshing".into(),
        other => other.to_owned(),
    }
}

fn ed(op: &str) -> String {
    match op {
        "create" => "created".into(),
        "update" => "updated".into(),
        "delete" => "deleted".into(),
        "replace" => "replaced".into(),
        "read" => "read".into(),
        "refresh" => "refreshed".into(),
        other => format!("{other} done"),
    }
}

/// Reads complete events from the front of `buf`; returns them and how many
/// bytes they used. An incomplete last event is left for later; a malformed
/// one is skipped up to the next line.
fn drain_events(buf: &[u8]) -> (Vec<Result<EngineEvent, BadEvent>>, usize) {
    let mut out = Vec::new();
    let mut used = 0;
    loop {
        // Start at the next value, so "the rest of this line" below is the
        // bad value's own line, not the newline before it.
        used += buf[used..]
            .iter()
            .take_while(|b| b.is_ascii_whitespace())
            .count();
        let rest = &buf[used..];
        let mut stream = serde_json::Deserializer::from_slice(rest).into_iter::<Value>();
        match stream.next() {
            None => {
                used = buf.len();
                break;
            }
            Some(Ok(v)) => {
                used += stream.byte_offset();
                out.push(EngineEvent::from_value(&v));
            }
            Some(Err(e)) if e.is_eof() => break,
            Some(Err(e)) => {
                out.push(Err(BadEvent(e.to_string())));
                match rest.iter().position(|b| *b == b'\n') {
                    Some(nl) => used += nl + 1,
                    None => {
                        used = buf.len();
                        break;
                    }
                }
            }
        }
    }
    (out, used)
}

/// Every event in a finished log (JSON lines, or concatenated JSON objects).
pub fn parse_all(text: &str) -> Vec<Result<EngineEvent, BadEvent>> {
    drain_events(text.as_bytes()).0
}

/// Follows an event log while the CLI writes it.
pub struct EventLogTail {
    path: PathBuf,
    offset: u64,
    pending: Vec<u8>,
    poll: Duration,
}

impl EventLogTail {
    /// How often the file is checked for new events. Progress reaches the
    /// caller within this, plus the bus hop.
    pub const POLL: Duration = Duration::from_millis(25);

    /// A tail of `path` (which need not exist yet).
    pub fn new(path: impl AsRef<Path>) -> Self {
        Self {
            path: path.as_ref().to_owned(),
            offset: 0,
            pending: Vec::new(),
            poll: Self::POLL,
        }
    }

    /// The events written since the last call (possibly none).
    pub async fn read_new(&mut self) -> Vec<Result<EngineEvent, BadEvent>> {
        use tokio::io::{AsyncReadExt, AsyncSeekExt};
        let Ok(mut file) = tokio::fs::File::open(&self.path).await else {
            return Vec::new();
        };
        if file
            .seek(std::io::SeekFrom::Start(self.offset))
            .await
            .is_err()
        {
            return Vec::new();
        }
        let mut fresh = Vec::new();
        if let Ok(n) = file.read_to_end(&mut fresh).await {
            self.offset += n as u64;
        }
        self.pending.extend_from_slice(&fresh);
        let (events, used) = drain_events(&self.pending);
        self.pending.drain(..used);
        events
    }

    /// Calls `on_event` for every event until `done` resolves, then reads
    /// what is left; returns what `done` resolved to. `done` is typically
    /// the CLI process exiting.
    pub async fn follow<T>(
        mut self,
        done: impl std::future::Future<Output = T>,
        mut on_event: impl FnMut(Result<EngineEvent, BadEvent>),
    ) -> T {
        tokio::pin!(done);
        let mut tick = tokio::time::interval(self.poll);
        let out = loop {
            tokio::select! {
                out = &mut done => break out,
                _ = tick.tick() => {
                    for e in self.read_new().await {
                        on_event(e);
                    }
                }
            }
        };
        for e in self.read_new().await {
            on_event(e);
        }
        out
    }
}

/// Resource changes for people: `1 create, 5 same`.
pub fn describe_changes(changes: &BTreeMap<String, u64>) -> String {
    changes
        .iter()
        .map(|(op, n)| format!("{n} {op}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// What an operation did, folded from its events.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Summary {
    /// The engine's own totals (from the summary event), per operation.
    pub resource_changes: BTreeMap<String, u64>,
    /// Resources whose step failed (URNs).
    pub failed: Vec<String>,
    /// Error diagnostics, in order.
    pub errors: Vec<String>,
    /// Seconds the operation took.
    pub duration_seconds: u64,
    /// Whether the log ended with its cancel event (it was complete).
    pub complete: bool,
    /// Events that could not be read.
    pub malformed: usize,
}

impl Summary {
    /// Folds one more event in.
    pub fn add(&mut self, event: &Result<EngineEvent, BadEvent>) {
        let Ok(event) = event else {
            self.malformed += 1;
            return;
        };
        match &event.kind {
            EventKind::ResOpFailed(s) => self.failed.push(s.urn.clone()),
            EventKind::Diagnostic {
                severity, message, ..
            } if severity == "error" => self.errors.push(message.clone()),
            EventKind::Summary {
                resource_changes,
                duration_seconds,
                ..
            } => {
                self.resource_changes = resource_changes.clone();
                self.duration_seconds = *duration_seconds;
            }
            EventKind::Cancel => self.complete = true,
            _ => {}
        }
    }

    /// The engine's totals for people: `1 create, 5 same`.
    pub fn changes(&self) -> String {
        describe_changes(&self.resource_changes)
    }

    /// Whether the operation succeeded: complete, nothing failed, no errors.
    pub fn succeeded(&self) -> bool {
        self.complete && self.failed.is_empty() && self.errors.is_empty()
    }
}
