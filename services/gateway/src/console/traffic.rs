//! What the console's Traffic view shows: every tool call this gateway
//! sends, kept in bounded windows. A call is noted when it goes on the bus
//! ([`Traffic::begin`]) and when it ends ([`Flight::end`]); a call dropped
//! before it ends (its client went away) counts as cancelled.
//!
//! Everything is bounded: the last [`DONE_WINDOW`] ended calls within
//! [`WINDOW`], at most [`MAX_IN_FLIGHT_SHOWN`] calls in flight shown, and the
//! last [`ERROR_WINDOW`] errors. Noting a call costs one short lock.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::Serialize;

/// How far back the per-tool figures reach.
pub const WINDOW: Duration = Duration::from_secs(10 * 60);
/// The most ended calls kept for those figures.
pub const DONE_WINDOW: usize = 50_000;
/// The most recent errors kept.
pub const ERROR_WINDOW: usize = 50;
/// The most calls in flight listed (the oldest first); the count is exact.
pub const MAX_IN_FLIGHT_SHOWN: usize = 50;
/// The longest error message kept, in bytes.
const MAX_MESSAGE: usize = 500;

/// The calls of this gateway. Cheap to clone; clones share state.
#[derive(Clone, Default)]
pub struct Traffic(Arc<Mutex<State>>);

#[derive(Default)]
struct State {
    next: u64,
    in_flight: HashMap<u64, Started>,
    done: VecDeque<Done>,
    errors: VecDeque<CallError>,
    /// Errors ever noted, so a page can tell new ones from old.
    error_count: u64,
}

struct Started {
    tool: String,
    category: String,
    principal: String,
    at: Instant,
}

struct Done {
    at: Instant,
    tool: String,
    category: String,
    micros: u64,
    error: bool,
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
    pub fn begin(&self, tool: &str, category: &str, principal: &str) -> Flight {
        let mut s = self.0.lock();
        s.next += 1;
        let id = s.next;
        s.in_flight.insert(
            id,
            Started {
                tool: tool.to_owned(),
                category: category.to_owned(),
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
        let mut s = self.0.lock();
        let Some(started) = s.in_flight.remove(&id) else {
            return;
        };
        // Not failures: the client answers a question, then calls again.
        let error = !matches!(ending.label, "ok" | "input_required");
        let now = Instant::now();
        if error {
            s.error_count += 1;
            let seq = s.error_count;
            let message = ending.message.map(shorten).unwrap_or_default();
            s.errors.push_front(CallError {
                seq,
                at_ms: sophia_kit::process::now_ms(),
                tool: started.tool.clone(),
                category: started.category.clone(),
                principal: started.principal,
                code: ending.label.to_owned(),
                message,
                trace_id: ending.trace_id,
            });
            s.errors.truncate(ERROR_WINDOW);
        }
        s.done.push_back(Done {
            at: now,
            tool: started.tool,
            category: started.category,
            micros: now.duration_since(started.at).as_micros() as u64,
            error,
        });
        while s.done.len() > DONE_WINDOW || s.done.front().is_some_and(|d| now - d.at > WINDOW) {
            s.done.pop_front();
        }
    }

    /// The Traffic view now.
    pub fn view(&self) -> TrafficView {
        let s = self.0.lock();
        let now = Instant::now();
        let mut per_tool: BTreeMap<(&str, &str), Vec<&Done>> = BTreeMap::new();
        let mut minutes = [MinuteRow::default(); 10];
        for d in s.done.iter().filter(|d| now - d.at <= WINDOW) {
            per_tool
                .entry((d.category.as_str(), d.tool.as_str()))
                .or_default()
                .push(d);
            let ago = ((now - d.at).as_secs() / 60) as usize;
            if let Some(m) = minutes.get_mut(ago) {
                m.calls += 1;
                m.errors += u64::from(d.error);
            }
        }
        let tools = per_tool
            .into_iter()
            .map(|((category, tool), done)| ToolRow::of(category, tool, done))
            .collect();
        let mut in_flight: Vec<InFlightRow> = s
            .in_flight
            .values()
            .map(|c| InFlightRow {
                tool: c.tool.clone(),
                category: c.category.clone(),
                principal: c.principal.clone(),
                age_ms: (now - c.at).as_millis() as u64,
            })
            .collect();
        in_flight.sort_by_key(|c| std::cmp::Reverse(c.age_ms));
        in_flight.truncate(MAX_IN_FLIGHT_SHOWN);
        TrafficView {
            window_s: WINDOW.as_secs(),
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
    /// Median latency, ms.
    pub p50_ms: f64,
    /// 99th percentile latency, ms.
    pub p99_ms: f64,
}

impl ToolRow {
    fn of(category: &str, tool: &str, done: Vec<&Done>) -> Self {
        let mut micros: Vec<u64> = done.iter().map(|d| d.micros).collect();
        micros.sort_unstable();
        let at = |q: f64| {
            let i = ((micros.len() as f64 - 1.0) * q).round() as usize;
            micros.get(i).map_or(0.0, |m| *m as f64 / 1000.0)
        };
        Self {
            tool: tool.to_owned(),
            category: category.to_owned(),
            calls: done.len() as u64,
            errors: done.iter().filter(|d| d.error).count() as u64,
            p50_ms: at(0.50),
            p99_ms: at(0.99),
        }
    }
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
        for _ in 0..(DONE_WINDOW + 10) {
            end(t.begin("a", "infrastructure", "alice"), "unavailable");
        }
        let v = t.view();
        assert_eq!(v.errors.len(), ERROR_WINDOW);
        assert_eq!(v.tools[0].calls, DONE_WINDOW as u64);
        assert_eq!(v.error_count, DONE_WINDOW as u64 + 10);
        assert!(v.errors[0].seq > v.errors[1].seq);
    }

    #[test]
    fn long_messages_are_cut_at_a_character_boundary() {
        let s = shorten("é".repeat(400));
        assert!(s.len() <= MAX_MESSAGE + '…'.len_utf8());
        assert!(s.ends_with('…'));
    }
}
