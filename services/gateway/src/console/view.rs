//! What the page shows, as JSON: `/console/api/state` once, and
//! `/console/api/events` as a server-sent event stream with the whole state
//! every [`TICK`] (the page needs no diffing protocol, and a page that
//! missed events is whole again at the next one). The Work lists are read
//! every [`WORK_EVERY`] by a task that lives as long as the stream.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use serde_json::{Value, json};

use super::Console;
use super::work;
use crate::mcp::Identity;

/// How often the stream sends the state.
const TICK: Duration = Duration::from_secs(1);
/// How often the Work lists are read from the workers.
const WORK_EVERY: Duration = Duration::from_secs(2);
/// Every how many ticks a stream checks its credential again, so that an
/// expired or removed key ends an open page's stream too.
const RECHECK_TICKS: u64 = 5;

/// `GET /console/api/session`: who is signed in, and the CSRF token the
/// page sends with its POSTs.
pub(super) async fn session(State(console): State<Console>, headers: HeaderMap) -> Response {
    match console.viewer(&headers, "/console/api/session").await {
        Ok(v) => Json(json!({
            "principal": v.identity.principal,
            "roles": v.identity.roles,
            "csrf": v.csrf,
            "trace_links": console.0.trace_url.is_some(),
        }))
        .into_response(),
        Err(refused) => refused,
    }
}

/// `GET /console/api/state`: the state now, Work lists included.
pub(super) async fn state(State(console): State<Console>, headers: HeaderMap) -> Response {
    match console.viewer(&headers, "/console/api/state").await {
        Ok(v) => {
            let work = work::lists(&console.0.gateway, &v.identity).await;
            Json(console.snapshot(&v.identity, Some(work))).into_response()
        }
        Err(refused) => refused,
    }
}

/// `GET /console/api/events`: the state every [`TICK`], until the client
/// goes or the gateway stops.
pub(super) async fn events(State(console): State<Console>, headers: HeaderMap) -> Response {
    let viewer = match console.viewer(&headers, "/console/api/events").await {
        Ok(v) => v,
        Err(refused) => return refused,
    };
    Sse::new(state_stream(console, viewer.identity, viewer.credential))
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// The stream: a task reads the Work lists as `who` every [`WORK_EVERY`];
/// the stream sends the state with the latest of them every [`TICK`], and
/// checks `credential` again every [`RECHECK_TICKS`]: once it is no longer
/// valid, it sends `signed_out` and ends. Dropping the stream (the page
/// went away) stops the task.
fn state_stream(
    console: Console,
    who: Identity,
    credential: String,
) -> impl Stream<Item = Result<Event, Infallible>> {
    let latest: Arc<parking_lot::Mutex<Option<Value>>> = Arc::default();
    let done = console.0.stop.child_token();
    spawn_work_reader(&console, &who, &latest, &done);
    let stream = Following {
        console,
        who,
        credential,
        latest,
        ticks: tokio::time::interval(TICK),
        count: 0,
        _guard: done.clone().drop_guard(),
        done,
    };
    futures::stream::unfold(stream, |mut s| async move {
        tokio::select! {
            biased;
            _ = s.done.cancelled() => return None,
            _ = s.ticks.tick() => {}
        }
        s.count += 1;
        if s.count % RECHECK_TICKS == 0
            && let Err(why) = s.console.still_valid(&s.credential).await
        {
            s.done.cancel();
            let event = Event::default().event("signed_out").data(why);
            return Some((Ok(event), s));
        }
        let work = s.latest.lock().clone();
        let state = s.console.snapshot(&s.who, work);
        let event = Event::default().event("state").data(state.to_string());
        Some((Ok(event), s))
    })
}

/// What a stream keeps between events.
struct Following {
    console: Console,
    who: Identity,
    credential: String,
    latest: Arc<parking_lot::Mutex<Option<Value>>>,
    ticks: tokio::time::Interval,
    count: u64,
    done: tokio_util::sync::CancellationToken,
    _guard: tokio_util::sync::DropGuard,
}

/// Reads the Work lists as `who` into `latest` every [`WORK_EVERY`] until
/// `done`.
fn spawn_work_reader(
    console: &Console,
    who: &Identity,
    latest: &Arc<parking_lot::Mutex<Option<Value>>>,
    done: &tokio_util::sync::CancellationToken,
) {
    let (console, who, latest, done) = (console.clone(), who.clone(), latest.clone(), done.clone());
    tokio::spawn(async move {
        loop {
            let work = tokio::select! {
                work = work::lists(&console.0.gateway, &who) => work,
                _ = done.cancelled() => break,
            };
            *latest.lock() = Some(work);
            tokio::select! {
                _ = tokio::time::sleep(WORK_EVERY) => {}
                _ = done.cancelled() => break,
            }
        }
    });
}

impl Console {
    /// The whole state, as `who` sees it: the mesh, the traffic, the
    /// decisions, and `work` when it has been read.
    fn snapshot(&self, who: &Identity, work: Option<Value>) -> Value {
        let gateway = &self.0.gateway;
        let mut traffic = serde_json::to_value(gateway.traffic().view()).unwrap_or_default();
        if let (Some(template), Some(errors)) =
            (&self.0.trace_url, traffic["errors"].as_array_mut())
        {
            for e in errors {
                if let Some(id) = e["trace_id"].as_str() {
                    e["trace_url"] = json!(template.replace("{trace_id}", id));
                }
            }
        }
        json!({
            "at_ms": sophia_kit::process::now_ms(),
            "gateway": {
                "instance": self.0.instance,
                "version": env!("CARGO_PKG_VERSION"),
                "uptime_s": self.0.started.elapsed().as_secs(),
                "viewer": who.principal,
            },
            "bus": self.bus(),
            "services": self.services(),
            "categories": self.categories(),
            "refused": self.0.gateway.registry().refused(),
            "traffic": traffic,
            "work": work,
            "decisions": self.0.decisions.list(),
        })
    }

    /// The NATS link and the server (cluster node) this gateway is on.
    fn bus(&self) -> Value {
        let link = self.0.gateway.link();
        let info = link.client.server_info();
        json!({
            "connected": link.is_up(),
            "problem": link.down_message(),
            "server_name": info.server_name,
            "server_id": info.server_id,
            "version": info.version,
            "host": info.host,
            "port": info.port,
            "cluster": info.cluster,
            "cluster_urls": info.connect_urls,
            "jetstream": info.jetstream,
        })
    }

    /// Live replicas, grouped by service.
    fn services(&self) -> Value {
        let mut services: Vec<Value> = Vec::new();
        for replica in self.0.gateway.registry().replica_list() {
            let replica = serde_json::to_value(replica).unwrap_or_default();
            match services.last_mut() {
                Some(last) if last["service"] == replica["service"] => {
                    if let Some(list) = last["replicas"].as_array_mut() {
                        list.push(replica);
                    }
                }
                _ => services.push(json!({"service": replica["service"], "replicas": [replica]})),
            }
        }
        Value::Array(services)
    }

    /// The tools on offer, per category.
    fn categories(&self) -> Value {
        let view = self.0.gateway.registry().view();
        let mut out: Vec<Value> = Vec::new();
        for category in sophia_proto::Category::ALL {
            let tools: Vec<&str> = view
                .tools
                .values()
                .filter(|t| t.spec.category == category)
                .map(|t| t.spec.name.as_str())
                .collect();
            out.push(json!({"category": category.to_string(), "tools": tools}));
        }
        Value::Array(out)
    }
}
