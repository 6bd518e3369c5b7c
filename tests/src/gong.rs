//! A stand-in for Gong's REST API v2, and gong-worker replicas pointed at it.
//!
//! It follows Gong's published reference (help.gong.io/apidocs, "Gong API
//! V2"; the same schemas as gong.app.gong.io/settings/api/documentation),
//! for the three endpoints the gong-worker uses and nothing more:
//!
//! - `GET /v2/calls?fromDateTime=&toDateTime=[&workspaceId=][&cursor=]`
//!   ("List calls by date range"): `{requestId, records: {totalRecords,
//!   currentPageSize, currentPageNumber, cursor?}, calls: [{id, url, title,
//!   scheduled, started, duration, primaryUserId, direction, system, scope,
//!   media, language, workspaceId, ...}]}`, `cursor` present only when more
//!   pages follow; calls from `fromDateTime` inclusive to `toDateTime`
//!   exclusive; 404 when no call is in the range.
//! - `POST /v2/calls/extensive` with `{filter: {callIds}, contentSelector:
//!   {exposedFields: {parties, content: {topics, brief}}}}`: `{requestId,
//!   records, calls: [{metaData: {...}, parties: [{id, emailAddress, name,
//!   title, userId, speakerId, affiliation, ...}], content: {topics: [{name,
//!   duration}], brief}}]}`; parties and content only when the selector asks.
//! - `POST /v2/calls/transcript` with `{filter: {callIds}}`: `{requestId,
//!   records, callTranscripts: [{callId, transcript: [{speakerId, topic,
//!   sentences: [{start, end, text}]}]}]}` (times in ms).
//! - Errors as `{requestId, errors: ["..."]}`: 401 for a wrong
//!   `Authorization: Basic base64(key:secret)`, 400 for a bad request or
//!   cursor, 404 when no call matches, and 429 with `Retry-After` (seconds)
//!   when told to, as Gong's "Limits" section describes.
//!
//! Its calls are [`fixture_calls`]; pages hold [`PAGE_SIZE`] calls (Gong's
//! hold 100), so a few calls make several pages.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use serde_json::{Value, json};
use sophia_kit::WorkerHandle;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::Mesh;

/// Calls per page of `/v2/calls`.
pub const PAGE_SIZE: usize = 2;
/// The access key the stand-in accepts.
pub const ACCESS_KEY: &str = "standin-access-key";
/// Its secret.
pub const ACCESS_KEY_SECRET: &str = "standin-secret-value";

/// One request the stand-in received.
#[derive(Clone, Debug)]
pub struct Hit {
    /// The path.
    pub path: String,
    /// The query string, if any.
    pub query: Option<String>,
    /// The JSON body (null for a GET).
    pub body: Value,
}

#[derive(Default)]
struct Inner {
    /// Statuses to answer the next requests with, and their `Retry-After`.
    script: VecDeque<(u16, Option<String>)>,
    hits: Vec<Hit>,
}

/// A running stand-in.
#[derive(Clone)]
pub struct StandIn {
    /// `http://127.0.0.1:<port>`, what `GONG_BASE_URL` takes.
    pub base_url: String,
    inner: Arc<Mutex<Inner>>,
}

impl StandIn {
    /// Starts a stand-in on a free loopback port.
    pub async fn start() -> Self {
        crate::install_crypto();
        let inner: Arc<Mutex<Inner>> = Default::default();
        let app = Router::new()
            .route("/v2/calls", get(list_calls))
            .route("/v2/calls/extensive", post(extensive))
            .route("/v2/calls/transcript", post(transcript))
            .with_state(inner.clone());
        let addr = crate::serve_on_free_port(app).await;
        Self {
            base_url: format!("http://{addr}"),
            inner,
        }
    }

    /// Answers the next request with 429 and `Retry-After: retry_after`
    /// (sent as given, so tests can send odd values).
    pub fn rate_limit_once(&self, retry_after: &str) {
        let mut i = self.inner.lock().unwrap();
        i.script.push_back((429, Some(retry_after.to_owned())));
    }

    /// Answers the next request with `status` and Gong's error body.
    pub fn fail_once(&self, status: u16) {
        self.inner.lock().unwrap().script.push_back((status, None));
    }

    /// Every request so far, authorized or not.
    pub fn hits(&self) -> Vec<Hit> {
        self.inner.lock().unwrap().hits.clone()
    }
}

fn error(status: StatusCode, message: &str) -> Response {
    let body = json!({"requestId": "standin-request", "errors": [message]});
    (status, axum::Json(body)).into_response()
}

/// Records the hit, then answers a scripted or an authorization failure,
/// if there is one.
fn gate(inner: &Mutex<Inner>, hit: Hit, headers: &HeaderMap) -> Option<Response> {
    let mut i = inner.lock().unwrap();
    i.hits.push(hit);
    if let Some((status, retry_after)) = i.script.pop_front() {
        let status = StatusCode::from_u16(status).unwrap();
        let mut r = error(status, "scripted failure");
        if let Some(v) = retry_after {
            r.headers_mut()
                .insert("retry-after", v.parse().expect("a header value"));
        }
        return Some(r);
    }
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD
            .encode(format!("{ACCESS_KEY}:{ACCESS_KEY_SECRET}"))
    );
    let given = headers.get("authorization").and_then(|v| v.to_str().ok());
    (given != Some(expected.as_str())).then(|| {
        error(
            StatusCode::UNAUTHORIZED,
            "Unauthorized: invalid access key or secret",
        )
    })
}

fn records(total: usize, page_size: usize, page: usize, cursor: Option<String>) -> Value {
    let mut r =
        json!({"totalRecords": total, "currentPageSize": page_size, "currentPageNumber": page});
    if let Some(c) = cursor {
        r["cursor"] = json!(c);
    }
    r
}

/// An opaque-looking cursor for page `n`, and back.
fn cursor_for(page: usize) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{{\"page\":{page}}}"))
}

fn page_of(cursor: &str) -> Option<usize> {
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()?;
    serde_json::from_slice::<Value>(&raw).ok()?["page"]
        .as_u64()
        .map(|p| p as usize)
}

async fn list_calls(
    State(inner): State<Arc<Mutex<Inner>>>,
    Query(q): Query<std::collections::HashMap<String, String>>,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> Response {
    let hit = Hit {
        path: "/v2/calls".into(),
        query: uri.query().map(str::to_owned),
        body: Value::Null,
    };
    if let Some(r) = gate(&inner, hit, &headers) {
        return r;
    }
    let (Some(from), Some(to)) = (q.get("fromDateTime"), q.get("toDateTime")) else {
        return error(
            StatusCode::BAD_REQUEST,
            "fromDateTime and toDateTime are required",
        );
    };
    let matching: Vec<Value> = fixture_calls()
        .into_iter()
        .map(|c| c["metaData"].clone())
        .filter(|m| {
            let started = m["started"].as_str().unwrap_or_default();
            started >= from.as_str() && started < to.as_str()
        })
        .collect();
    if matching.is_empty() {
        return error(
            StatusCode::NOT_FOUND,
            "No calls found corresponding to the provided filters",
        );
    }
    let page = match q.get("cursor").map(|c| page_of(c)) {
        None => 0,
        Some(Some(p)) => p,
        Some(None) => return error(StatusCode::BAD_REQUEST, "Invalid cursor"),
    };
    let calls: Vec<Value> = matching
        .iter()
        .skip(page * PAGE_SIZE)
        .take(PAGE_SIZE)
        .cloned()
        .collect();
    let more = (page + 1) * PAGE_SIZE < matching.len();
    let body = json!({"requestId": "standin-request",
        "records": records(matching.len(), calls.len(), page, more.then(|| cursor_for(page + 1))),
        "calls": calls});
    axum::Json(body).into_response()
}

/// The fixture calls whose ids `body.filter.callIds` names.
fn by_ids(body: &Value) -> Result<Vec<Value>, (StatusCode, &'static str)> {
    let ids = body["filter"]["callIds"].as_array().ok_or((
        StatusCode::BAD_REQUEST,
        "filter.callIds is required by this stand-in",
    ))?;
    let found: Vec<Value> = fixture_calls()
        .into_iter()
        .filter(|c| ids.contains(&c["metaData"]["id"]))
        .collect();
    if found.is_empty() {
        return Err((
            StatusCode::NOT_FOUND,
            "No calls found corresponding to the provided filters",
        ));
    }
    Ok(found)
}

/// A POST by call ids: recorded, authenticated (or scripted), and the
/// calls it names, or the response that refuses it.
fn admit(
    inner: &Arc<Mutex<Inner>>,
    path: &str,
    headers: &HeaderMap,
    body: &Value,
) -> Result<Vec<Value>, Box<Response>> {
    let hit = Hit {
        path: path.into(),
        query: None,
        body: body.clone(),
    };
    if let Some(r) = gate(inner, hit, headers) {
        return Err(Box::new(r));
    }
    by_ids(body).map_err(|(status, message)| Box::new(error(status, message)))
}

async fn extensive(
    State(inner): State<Arc<Mutex<Inner>>>,
    headers: HeaderMap,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    let found = match admit(&inner, "/v2/calls/extensive", &headers, &body) {
        Ok(found) => found,
        Err(refused) => return *refused,
    };
    let fields = &body["contentSelector"]["exposedFields"];
    let calls: Vec<Value> = found
        .into_iter()
        .map(|c| {
            let mut out = json!({"metaData": c["metaData"]});
            if fields["parties"] == true {
                out["parties"] = c["parties"].clone();
            }
            let mut content = json!({});
            for part in ["topics", "brief"] {
                if fields["content"][part] == true {
                    content[part] = c["content"][part].clone();
                }
            }
            out["content"] = content;
            out
        })
        .collect();
    let n = calls.len();
    axum::Json(
        json!({"requestId": "standin-request", "records": records(n, n, 0, None), "calls": calls}),
    )
    .into_response()
}

async fn transcript(
    State(inner): State<Arc<Mutex<Inner>>>,
    headers: HeaderMap,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    let found = match admit(&inner, "/v2/calls/transcript", &headers, &body) {
        Ok(found) => found,
        Err(refused) => return *refused,
    };
    let transcripts: Vec<Value> = found
        .iter()
        .map(|c| json!({"callId": c["metaData"]["id"], "transcript": c["transcript"]}))
        .collect();
    let n = transcripts.len();
    axum::Json(
        json!({"requestId": "standin-request", "records": records(n, n, 0, None),
                      "callTranscripts": transcripts}),
    )
    .into_response()
}

/// The id of fixture call `i` (0-based).
pub fn call_id(i: usize) -> String {
    format!("77823422740259378{:02}", 10 + i)
}

/// Five calls on 2025-03-03 to 2025-03-07, 15:00 UTC, each with the same
/// two parties (Ada Lovelace, internal; Grace Hopper, external), topics,
/// brief and a three-monologue transcript.
pub fn fixture_calls() -> Vec<Value> {
    (0..5)
        .map(|i| {
            let id = call_id(i);
            json!({
                "metaData": {"id": id, "url": format!("https://app.gong.io/call?id={id}"),
                    "title": format!("Acme discovery #{}", i + 1),
                    "scheduled": format!("2025-03-0{}T15:00:00Z", i + 3),
                    "started": format!("2025-03-0{}T15:01:10Z", i + 3),
                    "duration": 1800 + i, "primaryUserId": "234599484848423",
                    "direction": "Conference", "system": "Zoom", "scope": "External",
                    "media": "Video", "language": "eng", "workspaceId": "623457276584334",
                    "sdrDisposition": null, "clientUniqueId": null, "customData": null,
                    "purpose": null, "meetingUrl": "https://zoom.us/j/1", "isPrivate": false,
                    "calendarEventId": null},
                "parties": [
                    {"id": "56825452554556", "emailAddress": "ada@ourco.example", "name": "Ada Lovelace",
                     "title": "Account Executive", "userId": "234599484848423",
                     "speakerId": "6432345678555530067", "context": [], "affiliation": "Internal",
                     "phoneNumber": null, "methods": ["Invitee"]},
                    {"id": "56825452554557", "emailAddress": "grace@acme.example", "name": "Grace Hopper",
                     "title": "CTO", "speakerId": "6432345678555530068", "context": [],
                     "affiliation": "External", "methods": ["Attendee"]}
                ],
                "content": {"topics": [{"name": "Pricing", "duration": 320}, {"name": "Security", "duration": 210}],
                            "brief": "Acme wants SSO before signing; pricing is acceptable."},
                "transcript": [
                    {"speakerId": "6432345678555530067", "topic": "Call Setup",
                     "sentences": [{"start": 460, "end": 2300, "text": "Thanks for joining, Grace."},
                                   {"start": 2300, "end": 4100, "text": "Shall we start with pricing?"}]},
                    {"speakerId": "6432345678555530068", "topic": "Pricing",
                     "sentences": [{"start": 65000, "end": 70500, "text": "Pricing works, but we need SSO."}]},
                    {"speakerId": "9999999999999999999", "topic": null,
                     "sentences": [{"start": 3725000, "end": 3726000, "text": "Recording stopped."}]}
                ]
            })
        })
        .collect()
}

/// A running gong-worker; stops when dropped.
pub struct Replica {
    handle: WorkerHandle,
    _stop: DropGuard,
}

impl Replica {
    /// Where its `/health`, `/ready` and `/metrics` are served.
    pub fn http_addr(&self) -> std::net::SocketAddr {
        self.handle.http_addr
    }
}

/// Starts a gong-worker on `mesh` against `base_url` with these
/// credentials (`None`: unset, as with no `GONG_ACCESS_KEY...`).
pub async fn replica(mesh: &Mesh, base_url: &str, credentials: Option<(&str, &str)>) -> Replica {
    let stop = CancellationToken::new();
    let cli = gong_worker::Cli {
        worker: mesh.worker_config_as("gong"),
        gong: gong_worker::GongArgs {
            base_url: base_url.to_owned(),
            access_key: credentials.map(|c| c.0.to_owned()),
            access_key_secret: credentials.map(|c| c.1.to_owned()),
            timeout_ms: 5_000,
            max_retries: 2,
            max_retry_wait_ms: 2_000,
        },
    };
    let handle = gong_worker::run(cli, stop.clone())
        .await
        .expect("gong-worker starts");
    Replica {
        handle,
        _stop: stop.drop_guard(),
    }
}
