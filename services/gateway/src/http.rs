//! The HTTP face: MCP over Streamable HTTP at `/mcp`, behind bearer
//! authentication ([`crate::identity`]), plus `/health`, `/ready` and
//! `/metrics`, and the OAuth protected-resource metadata.
//!
//! Host and Origin validation (DNS-rebinding defence), the body-size limit
//! and the `MCP-Protocol-Version` checks are rmcp's
//! [`StreamableHttpService`]; this module configures them and adds auth.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use rmcp::transport::StreamableHttpServerConfig;
use rmcp::transport::streamable_http_server::StreamableHttpService;
use tokio_util::sync::CancellationToken;

use crate::config::GatewayConfig;
use crate::fast::FastPath;
use crate::identity::{Authenticator, require_identity};
use crate::live::Tracked;
use crate::mcp::McpGateway;

/// The one layer in front of the MCP endpoints, after authentication: the
/// session id's shape ([`invalid_session_id`]), then the body guard
/// ([`json_rpc_guard`]), and `DELETE`'s answer. One layer rather than
/// three: each `from_fn` layer costs every request a boxed future and a
/// clone of the service behind it (`docs/performance.md`, issue 16).
async fn mcp_front(State(limit): State<BodyLimit>, req: Request, next: Next) -> Response {
    if let Some(refused) = invalid_session_id(&req) {
        return refused;
    }
    // `DELETE /mcp` ends a session. rmcp answers 202 Accepted; the session
    // is gone by then, and clients (the official Python SDK among them)
    // expect 200 or 204, so the answer is 204 No Content.
    let deleting = req.method() == axum::http::Method::DELETE;
    let response = json_rpc_guard(&limit, req, next).await;
    if deleting && response.status() == StatusCode::ACCEPTED {
        return StatusCode::NO_CONTENT.into_response();
    }
    response
}

#[derive(Clone)]
struct BodyLimit {
    max: usize,
    in_flight: InFlightIds,
    /// The most requests a session may have in flight.
    per_session: usize,
}

/// A JSON-RPC error response with no id (the request could not be read).
fn json_rpc_error(status: StatusCode, code: i64, message: String) -> Response {
    json_rpc_error_for(serde_json::Value::Null, status, code, message)
}

/// Reads a POST body up to `max` bytes as JSON: the bytes and the message,
/// or the error to answer (413 when too large, JSON-RPC's -32700 parse
/// error when not JSON).
async fn read_message(
    max: usize,
    body: axum::body::Body,
) -> Result<(axum::body::Bytes, serde_json::Value), Response> {
    let Ok(bytes) = axum::body::to_bytes(body, max).await else {
        return Err(json_rpc_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            -32600,
            format!(
                "request body is larger than {max} bytes (SOPHIA_MAX_BODY_BYTES); send less, \
                 e.g. pass a reference to large data instead of the data"
            ),
        ));
    };
    match serde_json::from_slice::<serde_json::Value>(&bytes) {
        Ok(message) => Ok((bytes, message)),
        Err(e) => Err(json_rpc_error(
            StatusCode::BAD_REQUEST,
            -32700,
            format!("parse error: the body is not valid JSON ({e})"),
        )),
    }
}

/// Reads POST bodies up to the limit and checks they are JSON, so that an
/// oversized body gets 413 and malformed JSON gets JSON-RPC's -32700 parse
/// error (rmcp alone would answer 415) before anything else looks at them.
/// The message goes on with the request ([`crate::fast::Incoming`]).
async fn json_rpc_guard(limit: &BodyLimit, req: Request, next: Next) -> Response {
    if req.method() != axum::http::Method::POST {
        return next.run(req).await;
    }
    let (mut parts, body) = req.into_parts();
    let (bytes, message) = match read_message(limit.max, body).await {
        Ok(read) => read,
        Err(refused) => return refused,
    };
    // A request whose id is already in flight on its session is refused at
    // once: its answer could not be told from the other's.
    let session = parts
        .headers
        .get(SESSION_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    if let Some(session) = &session
        && message.get("method").and_then(|m| m.as_str()) == Some("notifications/cancelled")
        && let Some(id) = message.pointer("/params/requestId")
    {
        // Calls the fast path answers are cancelled here; rmcp, which
        // gets the notification too, cancels its own.
        limit.in_flight.cancel(session, &id.to_string());
    }
    let claim = match claim(limit, session, &message) {
        Ok(claim) => claim,
        Err(refused) => return refused,
    };
    if let Some(claim) = &claim {
        parts
            .extensions
            .insert(crate::fast::CallCancel(claim.cancel.clone()));
    }
    parts
        .extensions
        .insert(crate::fast::Incoming(Arc::new(message)));
    let response = next
        .run(Request::from_parts(parts, axum::body::Body::from(bytes)))
        .await;
    match claim {
        // Released when the answer (possibly a stream) is over or dropped.
        Some(claim) => response.map(|body| {
            axum::body::Body::from_stream(body.into_data_stream().map(move |chunk| {
                let _held = &claim;
                chunk
            }))
        }),
        None => response,
    }
}

/// Claims a request's (session, id) while it is served: refused when the id
/// is in flight on the session already, or when the session has its limit
/// of requests in flight. `None` for messages outside a session or without
/// an id.
#[allow(clippy::result_large_err)] // the refusal is the response itself
fn claim(
    limit: &BodyLimit,
    session: Option<String>,
    message: &serde_json::Value,
) -> Result<Option<IdClaim>, Response> {
    Ok(match (session, message.get("id"), message.get("method")) {
        (Some(session), Some(id), Some(_)) if !id.is_null() => {
            match limit
                .in_flight
                .claim(session, id.to_string(), limit.per_session)
            {
                Ok(claim) => Some(claim),
                Err(Unclaimed::IdInUse) => {
                    return Err(json_rpc_error_for(
                        id.clone(),
                        StatusCode::CONFLICT,
                        -32600,
                        format!(
                            "request id {} is already in use by a request in flight on this \
                             session; give every concurrent request its own id",
                            sophia_kit::vetting::shown(&id.to_string())
                        ),
                    ));
                }
                Err(Unclaimed::SessionFull) => {
                    return Err(json_rpc_error_for(
                        id.clone(),
                        StatusCode::TOO_MANY_REQUESTS,
                        -32600,
                        format!(
                            "this session already has {} requests in flight, its limit \
                             (SOPHIA_SESSION_IN_FLIGHT); retry once some have ended",
                            limit.per_session
                        ),
                    ));
                }
            }
        }
        _ => None,
    })
}

/// The session header.
const SESSION_HEADER: &str = "mcp-session-id";
/// The longest session id accepted (the gateway's are 36-character UUIDs).
const MAX_SESSION_ID_LEN: usize = 128;

/// A session id must look like one before anything looks it up: at most
/// [`MAX_SESSION_ID_LEN`] characters of `[A-Za-z0-9_-]`. Anything else gets
/// 400 here, so it never becomes a store key or part of a NATS subject.
fn invalid_session_id(req: &Request) -> Option<Response> {
    if let Some(value) = req.headers().get(SESSION_HEADER) {
        let ok = value.to_str().is_ok_and(|s| {
            !s.is_empty()
                && s.len() <= MAX_SESSION_ID_LEN
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
        if !ok {
            return Some(json_rpc_error(
                StatusCode::BAD_REQUEST,
                -32600,
                format!(
                    "invalid Mcp-Session-Id: it must be the id this gateway gave at initialize \
                     (at most {MAX_SESSION_ID_LEN} letters, digits, '-' or '_'); start a new \
                     session with initialize"
                ),
            ));
        }
    }
    None
}

/// Request ids in flight, per session, each with what cancels it.
#[derive(Clone, Default)]
struct InFlightIds(Arc<parking_lot::Mutex<HashMap<String, HashMap<String, CancellationToken>>>>);

/// Holds one (session, id) while its request is served.
struct IdClaim {
    ids: InFlightIds,
    session: String,
    id: String,
    /// Cancelled by `notifications/cancelled` for this id.
    cancel: CancellationToken,
}

/// Why a request could not be claimed.
#[derive(Debug, PartialEq, Eq)]
enum Unclaimed {
    /// Its id is in flight on the session already.
    IdInUse,
    /// The session has its limit of requests in flight.
    SessionFull,
}

impl InFlightIds {
    fn claim(&self, session: String, id: String, limit: usize) -> Result<IdClaim, Unclaimed> {
        let mut sessions = self.0.lock();
        let ids = sessions.entry(session.clone()).or_default();
        if ids.contains_key(&id) {
            return Err(Unclaimed::IdInUse);
        }
        if ids.len() >= limit {
            return Err(Unclaimed::SessionFull);
        }
        let cancel = CancellationToken::new();
        ids.insert(id.clone(), cancel.clone());
        Ok(IdClaim {
            ids: self.clone(),
            session,
            id,
            cancel,
        })
    }

    /// Cancels request `id` of `session`, if it is in flight.
    fn cancel(&self, session: &str, id: &str) {
        if let Some(cancel) = self.0.lock().get(session).and_then(|ids| ids.get(id)) {
            cancel.cancel();
        }
    }
}

impl Drop for IdClaim {
    fn drop(&mut self) {
        let mut sessions = self.ids.0.lock();
        if let Some(ids) = sessions.get_mut(&self.session) {
            ids.remove(&self.id);
            if ids.is_empty() {
                sessions.remove(&self.session);
            }
        }
    }
}

/// A JSON-RPC error response to request `id`.
fn json_rpc_error_for(
    id: serde_json::Value,
    status: StatusCode,
    code: i64,
    message: String,
) -> Response {
    let body = serde_json::json!({
        "jsonrpc": "2.0",
        "id": id,
        "error": { "code": code, "message": message },
    });
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// The `/mcp` route, served by rmcp, wrapped in authentication; and the
/// OAuth protected-resource metadata, which is not.
pub fn mcp_router(
    gateway: McpGateway,
    config: &GatewayConfig,
    auth: Arc<Authenticator>,
    sessions: Arc<dyn rmcp::transport::streamable_http_server::session::SessionStore>,
    events: Option<Arc<dyn rmcp::transport::streamable_http_server::session::EventStore>>,
    stop: CancellationToken,
) -> Router {
    let mut http_config = StreamableHttpServerConfig::default()
        .with_allowed_hosts(config.allowed_hosts.clone())
        .with_allowed_origins(config.allowed_origins.clone())
        .enforce_origin_validation()
        .with_max_request_body_bytes(config.max_body_bytes)
        .with_sse_keep_alive(Some(Duration::from_secs(15)))
        // A stateless (2026-07-28) request that sends nothing before its
        // result is answered with plain JSON; rmcp falls back to SSE when
        // progress or log records come first.
        .with_json_response(true)
        .with_cancellation_token(stop.clone());
    // Sessions live on the bus, so any gateway replica (or this one after a
    // restart) continues them.
    http_config.session_store = Some(sessions);
    let gateway_for_rest = gateway.clone();
    // rmcp's service, with the fast path for plain tool calls in front
    // (crate::fast). SSE events on the bus, so a broken stream resumes at
    // any replica.
    let serve = |gateway: McpGateway| {
        let manager = Tracked::new(events.clone(), stop.clone());
        let fast = FastPath::new(manager.live(), &config.allowed_hosts);
        let service = StreamableHttpService::<McpGateway, Tracked>::new(
            move || Ok(gateway.for_session()),
            Arc::new(manager),
            http_config.clone(),
        );
        let endpoint = Router::new().fallback_service(service);
        if config.fast_calls {
            endpoint.layer(middleware::from_fn_with_state(
                fast,
                crate::fast::tools_call,
            ))
        } else {
            endpoint
        }
    };
    // One endpoint per profile (`/mcp/ask`, `/mcp/agent`, ...), each
    // serving its subset of what the caller's policy allows.
    let mut endpoints = Router::new();
    for profile in gateway.access().profiles() {
        let path = format!("/mcp/{}", profile.name);
        endpoints = endpoints.nest_service(&path, serve(gateway.clone().with_profile(profile)));
    }
    let service = serve(gateway);
    let rest = crate::rest::router(gateway_for_rest);
    // Layers run outside-in: auth first, then the session id and body
    // guard, then rmcp.
    Router::new()
        .nest_service("/mcp", service)
        .merge(endpoints)
        .layer(middleware::from_fn_with_state(
            BodyLimit {
                max: config.max_body_bytes,
                in_flight: InFlightIds::default(),
                per_session: config.session_in_flight,
            },
            mcp_front,
        ))
        .merge(rest)
        .layer(middleware::from_fn_with_state(
            auth.clone(),
            require_identity,
        ))
        // The OAuth metadata tells clients how to authenticate: no auth on it.
        .merge(auth.challenge().router())
}

#[cfg(test)]
mod fuzz {
    //! The JSON-RPC guard in front of rmcp (body limit, JSON check, session
    //! ids, ids in flight), fed arbitrary bodies and headers: it answers
    //! every one with a status it documents, and never panics.
    use super::*;
    use proptest::prelude::*;
    use tower::ServiceExt;

    fn guarded() -> Router {
        Router::new()
            .route("/mcp", axum::routing::any(|| async { "passed" }))
            .layer(middleware::from_fn_with_state(
                BodyLimit {
                    max: 4096,
                    in_flight: InFlightIds::default(),
                    per_session: 8,
                },
                mcp_front,
            ))
    }

    fn message() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..6000),
            ("\\PC{0,200}", any::<i64>(), "[a-z/]{0,20}").prop_map(|(s, id, m)| {
                serde_json::json!({"jsonrpc": "2.0", "id": id, "method": m, "params": {"s": s}})
                    .to_string()
                    .into_bytes()
            }),
            "\\PC{0,300}".prop_map(String::into_bytes),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_048))]

        #[test]
        fn every_body_and_session_id_gets_a_documented_answer(
            body in message(),
            session in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..200)),
            method in prop_oneof![Just("POST"), Just("GET"), Just("DELETE")],
        ) {
            let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let status = runtime.block_on(async {
                let mut req = axum::http::Request::builder().method(method).uri("/mcp");
                if let Some(id) = session
                    && let Ok(v) = axum::http::HeaderValue::from_bytes(&id)
                {
                    req = req.header(SESSION_HEADER, v);
                }
                let req = req.body(axum::body::Body::from(body)).unwrap();
                guarded().oneshot(req).await.unwrap().status()
            });
            prop_assert!(
                [200, 400, 409, 413, 429].contains(&status.as_u16()),
                "status {status}"
            );
        }
    }
}
