//! What the console's Traffic view shows: every tool call this gateway
//! sends, kept in bounded windows. A call is noted when it goes on the bus
//! ([`Traffic::begin`]) and when it ends ([`Flight::end`]); a call dropped
//! before it ends (its client went away) counts as cancelled.
//!
//! Everything is bounded, whatever the call rate: per tool and minute, for
//! the [`MINUTES`] last minutes, a count and a latency histogram
//! ([`Latencies`]); at most [`MAX_IN_FLIGHT_SHOWN`] calls in flight shown;
//! and the last [`ERROR_WINDOW`] errors. Noting a call costs one short
//! lock, and so does reading the view: it merges histograms, it does not
//! walk calls.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;
use serde::Serialize;

use super::latency::Latencies;

/// How many minutes back the per-tool figures reach.
pub const MINUTES: u64 = 10;
/// The most recent errors kept.
pub const ERROR_WINDOW: usize = 50;
/// The most calls in flight listed (the oldest first); the count is exact.
pub const MAX_IN_FLIGHT_SHOWN: usize = 50;
/// The longest error message kept, in bytes.
const MAX_MESSAGE: usize = 500;

/// The calls of this gateway. Cheap to clone; clones share state.
#[derive(Clone, Default)]
pub struct Traffic(Arc<Mutex<State>>);

struct State {
    /// When this gateway began counting: minutes are numbered from it.
    origin: Instant,
    next: u64,
    in_flight: HashMap<u64, Started>,
    /// The last [`MINUTES`] minutes that had calls, oldest first.
    minutes: VecDeque<Minute>,
    errors: VecDeque<CallError>,
    /// Errors ever noted, so a page can tell new ones from old.
    error_count: u64,
}

impl Default for State {
    fn default() -> Self {
        Self {
            origin: Instant::now(),
            next: 0,
            in_flight: HashMap::new(),
            minutes: VecDeque::new(),
            errors: VecDeque::new(),
            error_count: 0,
        }
    }
}

struct Started {
    tool: String,
    category: &'static str,
    principal: String,
    at: Instant,
}

/// One minute's calls, per (category, tool).
struct Minute {
    /// Its number, counted from [`State::origin`].
    index: u64,
    tools: HashMap<(&'static str, String), Counts>,
}

#[derive(Clone, Default)]
struct Counts {
    calls: u64,
    errors: u64,
    latencies: Latencies,
}

impl Counts {
    fn add(&mut self, other: &Counts) {
        self.calls += other.calls;
        self.errors += other.errors;
        self.latencies.merge(&other.latencies);
    }
}

/// One failed call, as the console lists it.
#[derive(Clone, Debug, Serialize)]
pub struct CallError {
    /// Its number among this gateway's errors (newer is larger).
    pub seq: u64,
    /// When it ended, ms since the Unix epoch.
    pub at_ms: u64,
    /// The tool.
    pub tool: String,
    /// Its category.
    pub category: String,
    /// Who called.
    pub principal: String,
    /// The outcome code (`tool_error`, `timeout`, `unavailable`, ...).
    pub code: String,
    /// What went wrong, as the caller was told (shortened).
    pub message: String,
    /// The call's trace, when it was traced.
    pub trace_id: Option<String>,
}

/// A call on its way; [`Flight::end`] notes how it ended.
pub struct Flight {
    traffic: Traffic,
    id: u64,
    ended: bool,
}

/// How a call ended, for [`Flight::end`].
pub struct Ending<'a> {
    /// The outcome label the metrics use (`ok`, `input_required`,
    /// `tool_error`, or an error code).
    pub label: &'a str,
    /// What the caller was told, when it failed.
    pub message: Option<String>,
    /// The call's trace id.
    pub trace_id: Option<String>,
}

impl Traffic {
    /// Notes a call of `tool` by `principal` going on the bus.
    pub fn begin(&self, tool: &str, category: &'static str, principal: &str) -> Flight {
        let mut s = self.0.lock();
        s.next += 1;
        let id = s.next;
        s.in_flight.insert(
            id,
            Started {
                tool: tool.to_owned(),
                category,
                principal: principal.to_owned(),
                at: Instant::now(),
            },
        );
        Flight {
            traffic: self.clone(),
            id,
            ended: false,
        }
    }

    fn finish(&self, id: u64, ending: Ending<'_>) {
        self.finish_at(id, ending, Instant::now());
    }

    fn finish_at(&self, id: u64, ending: Ending<'_>, now: Instant) {
        let mut s = self.0.lock();
        let Some(started) = s.in_flight.remove(&id) else {
            return;
        };
        // Not failures: the client answers a question, then calls again.
        let error = !matches!(ending.label, "ok" | "input_required");
        if error {
            s.error_count += 1;
            let seq = s.error_count;
            let message = ending.message.map(shorten).unwrap_or_default();
            s.errors.push_front(CallError {
                seq,
                at_ms: sophia_kit::process::now_ms(),
                tool: started.tool.clone(),
                category: started.category.to_owned(),
                principal: started.principal,
                code: ending.label.to_owned(),
                message,
                trace_id: ending.trace_id,
            });
            s.errors.truncate(ERROR_WINDOW);
        }
        let index = now.saturating_duration_since(s.origin).as_secs() / 60;
        if s.minutes.back().is_none_or(|m| m.index != index) {
            s.minutes.push_back(Minute {
                index,
                tools: HashMap::new(),
            });
        }
        while s
            .minutes
            .front()
            .is_some_and(|m| m.index + MINUTES <= index)
        {
            s.minutes.pop_front();
        }
        if let Some(minute) = s.minutes.back_mut() {
            let counts = minute
                .tools
                .entry((started.category, started.tool))
                .or_default();
            counts.calls += 1;
            counts.errors += u64::from(error);
            counts
                .latencies
                .add(now.saturating_duration_since(started.at).as_micros() as u64);
        }
    }

    /// The Traffic view now.
    pub fn view(&self) -> TrafficView {
        self.view_at(Instant::now())
    }

    fn view_at(&self, now: Instant) -> TrafficView {
        let s = self.0.lock();
        let current = now.saturating_duration_since(s.origin).as_secs() / 60;
        let mut per_tool: BTreeMap<(&str, &str), Counts> = BTreeMap::new();
        let mut minutes = [MinuteRow::default(); MINUTES as usize];
        for minute in s.minutes.iter() {
            let Some(row) = minutes.get_mut(current.saturating_sub(minute.index) as usize) else {
                continue;
            };
            for ((category, tool), counts) in &minute.tools {
                row.calls += counts.calls;
                row.errors += counts.errors;
                per_tool.entry((category, tool)).or_default().add(counts);
            }
        }
        let tools = per_tool
            .into_iter()
            .map(|((category, tool), counts)| ToolRow {
                tool: tool.to_owned(),
                category: category.to_owned(),
                calls: counts.calls,
                errors: counts.errors,
                p50_ms: counts.latencies.quantile_ms(0.50),
                p99_ms: counts.latencies.quantile_ms(0.99),
            })
            .collect();
        let mut in_flight: Vec<InFlightRow> = s
            .in_flight
            .values()
            .map(|c| InFlightRow {
                tool: c.tool.clone(),
                category: c.category.to_owned(),
                principal: c.principal.clone(),
                age_ms: now.saturating_duration_since(c.at).as_millis() as u64,
            })
            .collect();
        in_flight.sort_by_key(|c| std::cmp::Reverse(c.age_ms));
        in_flight.truncate(MAX_IN_FLIGHT_SHOWN);
        TrafficView {
            window_s: MINUTES * 60,
            tools,
            minutes: minutes.to_vec(),
            in_flight_count: s.in_flight.len(),
            in_flight,
            errors: s.errors.iter().cloned().collect(),
            error_count: s.error_count,
        }
    }
}

impl Flight {
    /// Notes how the call ended.
    pub fn end(mut self, ending: Ending<'_>) {
        self.ended = true;
        self.traffic.finish(self.id, ending);
    }
}

impl Drop for Flight {
    fn drop(&mut self) {
        if !self.ended {
            self.traffic.finish(
                self.id,
                Ending {
                    label: "cancelled",
                    message: Some("the caller went away before the call ended".into()),
                    trace_id: None,
                },
            );
        }
    }
}

/// What a failed call's caller was told, for the console.
pub(crate) fn failure_message(
    outcome: &Result<sophia_kit::bus::Reply, sophia_kit::bus::CallError>,
) -> Option<String> {
    match outcome {
        Ok(reply) if reply.output.is_error => Some(
            reply
                .output
                .content
                .iter()
                .find_map(|c| match c {
                    sophia_proto::Content::Text { text } => Some(text.clone()),
                    _ => None,
                })
                .unwrap_or_else(|| "the tool reported an error".into()),
        ),
        Ok(_) => None,
        Err(e) => Some(e.to_string()),
    }
}

/// `message` cut to at most [`MAX_MESSAGE`] bytes, at a character boundary.
fn shorten(mut message: String) -> String {
    if message.len() > MAX_MESSAGE {
        let mut end = MAX_MESSAGE;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
        message.push('…');
    }
    message
}

/// The Traffic view.
#[derive(Clone, Debug, Serialize)]
pub struct TrafficView {
    /// How far back the figures reach, in seconds.
    pub window_s: u64,
    /// Per tool: calls, errors, latency.
    pub tools: Vec<ToolRow>,
    /// Calls and errors per minute, the last minute first.
    pub minutes: Vec<MinuteRow>,
    /// How many calls are in flight.
    pub in_flight_count: usize,
    /// The oldest of them.
    pub in_flight: Vec<InFlightRow>,
    /// The last errors, newest first.
    pub errors: Vec<CallError>,
    /// Errors ever noted by this gateway.
    pub error_count: u64,
}

/// One tool's calls within the window.
#[derive(Clone, Debug, Serialize)]
pub struct ToolRow {
    /// The tool.
    pub tool: String,
    /// Its category.
    pub category: String,
    /// Calls ended.
    pub calls: u64,
    /// Of which failed.
    pub errors: u64,
    /// Median latency, ms (within the histogram's ±10%).
    pub p50_ms: f64,
    /// 99th percentile latency, ms (within the histogram's ±10%).
    pub p99_ms: f64,
}

/// Calls in one minute.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct MinuteRow {
    /// Calls ended.
    pub calls: u64,
    /// Of which failed.
    pub errors: u64,
}

/// A call in flight.
#[derive(Clone, Debug, Serialize)]
pub struct InFlightRow {
    /// The tool.
    pub tool: String,
    /// Its category.
    pub category: String,
    /// Who called.
    pub principal: String,
    /// How long it has been on its way, ms.
    pub age_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn end(f: Flight, label: &str) {
        f.end(Ending {
            label,
            message: Some(format!("{label} happened")),
            trace_id: Some("abc".into()),
        });
    }

    #[test]
    fn calls_are_counted_per_tool_and_errors_kept_newest_first() {
        let t = Traffic::default();
        end(t.begin("a", "infrastructure", "alice"), "ok");
        end(t.begin("a", "infrastructure", "alice"), "timeout");
        end(t.begin("b", "code_generation", "bob"), "input_required");
        let held = t.begin("c", "code_generation", "bob");
        let v = t.view();
        assert_eq!(v.in_flight_count, 1);
        assert_eq!(v.in_flight[0].tool, "c");
        let a = v.tools.iter().find(|r| r.tool == "a").unwrap();
        assert_eq!((a.calls, a.errors), (2, 1));
        let b = v.tools.iter().find(|r| r.tool == "b").unwrap();
        assert_eq!((b.calls, b.errors), (1, 0));
        assert_eq!(v.errors.len(), 1);
        assert_eq!(v.errors[0].code, "timeout");
        assert_eq!(v.minutes[0].calls, 3);
        drop(held);
        let v = t.view();
        assert_eq!(v.in_flight_count, 0);
        assert_eq!(
            v.errors[0].code, "cancelled",
            "a dropped call counts as cancelled"
        );
    }

    #[test]
    fn windows_stay_bounded_under_a_flood() {
        let t = Traffic::default();
        for _ in 0..100_000 {
            end(t.begin("a", "infrastructure", "alice"), "unavailable");
        }
        let v = t.view();
        assert_eq!(v.errors.len(), ERROR_WINDOW);
        assert_eq!(v.tools[0].calls, 100_000);
        assert_eq!(v.error_count, 100_000);
        assert!(v.errors[0].seq > v.errors[1].seq);
        let s = t.0.lock();
        assert!(s.minutes.len() <= 2, "one entry per minute, not per call");
        assert_eq!(s.minutes.iter().map(|m| m.tools.len()).max(), Some(1));
    }

    #[test]
    fn minutes_older_than_the_window_are_forgotten() {
        let t = Traffic::default();
        end(t.begin("a", "infrastructure", "alice"), "ok");
        // Ten minutes later.
        let later = Instant::now() + std::time::Duration::from_secs(MINUTES * 60);
        let b = t.begin("b", "infrastructure", "alice");
        let id = b.id;
        std::mem::forget(b);
        t.finish_at(
            id,
            Ending {
                label: "ok",
                message: None,
                trace_id: None,
            },
            later,
        );
        let v = t.view_at(later);
        assert_eq!(v.tools.len(), 1);
        assert_eq!(v.tools[0].tool, "b");
        assert_eq!(v.minutes[0].calls, 1);
        assert_eq!(t.0.lock().minutes.len(), 1);
    }

    #[test]
    fn long_messages_are_cut_at_a_character_boundary() {
        let s = shorten("é".repeat(400));
        assert!(s.len() <= MAX_MESSAGE + '…'.len_utf8());
        assert!(s.ends_with('…'));
    }
}
