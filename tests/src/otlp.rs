//! Real OTLP trace receivers for tests, as the OTLP specification defines
//! them and as the OpenTelemetry Collector and Jaeger accept them:
//! OTLP/HTTP (`POST /v1/traces` with an `ExportTraceServiceRequest` in
//! protobuf, `application/x-protobuf`) and OTLP/gRPC (the
//! `opentelemetry.proto.collector.trace.v1.TraceService/Export` method).
//! Messages are decoded with the official generated types
//! (`opentelemetry-proto`, served with tonic for gRPC); the spans are kept
//! for the test to inspect.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, any_value};
use prost::Message;

/// One received span, flattened.
#[derive(Clone, Debug)]
pub struct ReceivedSpan {
    /// The exporting service's `service.name`.
    pub service: String,
    /// Every resource attribute, as text.
    pub resource: BTreeMap<String, String>,
    /// Hex trace id.
    pub trace_id: String,
    /// Hex span id.
    pub span_id: String,
    /// Hex parent span id; empty for a root.
    pub parent_id: String,
    /// Span name.
    pub name: String,
    /// `SPAN_KIND_SERVER`, `SPAN_KIND_CLIENT`, ...
    pub kind: String,
    /// Attributes, as text.
    pub attributes: BTreeMap<String, String>,
    /// `STATUS_CODE_UNSET`, `STATUS_CODE_OK` or `STATUS_CODE_ERROR`.
    pub status: String,
    /// The status message.
    pub status_message: String,
    /// Event names and their attributes, as text.
    pub events: Vec<String>,
}

impl ReceivedSpan {
    /// An attribute's value, if set.
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }

    /// Everything the span carries, as one text (to search for secrets).
    pub fn all_text(&self) -> String {
        format!("{self:?}")
    }
}

/// A running receiver; stops with the test's runtime.
#[derive(Clone)]
pub struct Receiver {
    /// Base URL for `OTEL_EXPORTER_OTLP_ENDPOINT` (`http://127.0.0.1:<port>`).
    pub endpoint: String,
    spans: Arc<Mutex<Vec<ReceivedSpan>>>,
    rejected: Arc<Mutex<Vec<String>>>,
}

impl Receiver {
    /// Starts a receiver on a free loopback port.
    pub async fn start() -> Self {
        let spans: Arc<Mutex<Vec<ReceivedSpan>>> = Default::default();
        let rejected: Arc<Mutex<Vec<String>>> = Default::default();
        let app = Router::new()
            .route("/v1/traces", post(export))
            .with_state((spans.clone(), rejected.clone()));
        let addr = crate::serve_on_free_port(app).await;
        Self {
            endpoint: format!("http://{addr}"),
            spans,
            rejected,
        }
    }

    /// Starts an OTLP/gRPC receiver on a free loopback port (its
    /// `endpoint` is for `OTEL_EXPORTER_OTLP_ENDPOINT` with
    /// `OTEL_EXPORTER_OTLP_PROTOCOL=grpc`).
    pub async fn start_grpc() -> Self {
        use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceServiceServer;
        let receiver = Self {
            endpoint: String::new(),
            spans: Default::default(),
            rejected: Default::default(),
        };
        let incoming =
            tonic::transport::server::TcpIncoming::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = incoming.local_addr().unwrap();
        let service = TraceServiceServer::new(GrpcSink(receiver.spans.clone()));
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(incoming)
                .await
        });
        Self {
            endpoint: format!("http://{addr}"),
            ..receiver
        }
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.spans.lock().unwrap().clone()
    }

    /// Requests that were not well-formed OTLP/HTTP protobuf, and why.
    pub fn rejected(&self) -> Vec<String> {
        self.rejected.lock().unwrap().clone()
    }
}

type Shared = (Arc<Mutex<Vec<ReceivedSpan>>>, Arc<Mutex<Vec<String>>>);

async fn export(
    State((spans, rejected)): State<Shared>,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if content_type != "application/x-protobuf" {
        rejected
            .lock()
            .unwrap()
            .push(format!("content-type {content_type:?}"));
        return (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "want application/x-protobuf",
        )
            .into_response();
    }
    let request = match ExportTraceServiceRequest::decode(body) {
        Ok(r) => r,
        Err(e) => {
            rejected.lock().unwrap().push(format!("decode: {e}"));
            return (StatusCode::BAD_REQUEST, e.to_string()).into_response();
        }
    };
    spans.lock().unwrap().extend(flatten(request));
    (
        [(header::CONTENT_TYPE, "application/x-protobuf")],
        ExportTraceServiceResponse::default().encode_to_vec(),
    )
        .into_response()
}

struct GrpcSink(Arc<Mutex<Vec<ReceivedSpan>>>);

#[tonic::async_trait]
impl opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceService
    for GrpcSink
{
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.0.lock().unwrap().extend(flatten(request.into_inner()));
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

fn flatten(request: ExportTraceServiceRequest) -> Vec<ReceivedSpan> {
    let mut received = Vec::new();
    for rs in request.resource_spans {
        let resource: BTreeMap<String, String> = rs
            .resource
            .map(|r| {
                r.attributes
                    .into_iter()
                    .map(|kv| (kv.key, text(kv.value)))
                    .collect()
            })
            .unwrap_or_default();
        let service = resource.get("service.name").cloned().unwrap_or_default();
        for ss in rs.scope_spans {
            for span in ss.spans {
                let kind =
                    opentelemetry_proto::tonic::trace::v1::span::SpanKind::try_from(span.kind)
                        .map(|k| k.as_str_name().to_owned())
                        .unwrap_or_default();
                let (status, status_message) = span
                    .status
                    .map(|s| {
                        let code =
                            opentelemetry_proto::tonic::trace::v1::status::StatusCode::try_from(
                                s.code,
                            )
                            .map(|c| c.as_str_name().to_owned())
                            .unwrap_or_default();
                        (code, s.message)
                    })
                    .unwrap_or_default();
                received.push(ReceivedSpan {
                    service: service.clone(),
                    resource: resource.clone(),
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_id: hex(&span.parent_span_id),
                    name: span.name,
                    kind,
                    attributes: span
                        .attributes
                        .into_iter()
                        .map(|kv| (kv.key, text(kv.value)))
                        .collect(),
                    status,
                    status_message,
                    events: span
                        .events
                        .into_iter()
                        .map(|e| {
                            let attrs: Vec<String> = e
                                .attributes
                                .into_iter()
                                .map(|kv| format!("{}={}", kv.key, text(kv.value)))
                                .collect();
                            format!("{} {}", e.name, attrs.join(" "))
                        })
                        .collect(),
                });
            }
        }
    }
    received
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn text(v: Option<AnyValue>) -> String {
    match v.and_then(|v| v.value) {
        Some(any_value::Value::StringValue(s)) => s,
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}
