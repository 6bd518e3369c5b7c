//! Logs and traces.
//!
//! Logs: structured `tracing` events to stderr (never stdout, which belongs
//! to the protocol in stdio mode), filtered by `RUST_LOG`.
//!
//! Traces: OpenTelemetry spans, exported with OTLP and configured only by
//! the standard `OTEL_*` variables ([`init`]). Every hop of a call opens a
//! [`Span`] whose parent is the W3C trace context the call arrived with
//! (HTTP or NATS headers), and sends its own context onwards, so one request
//! from Cursor to Pulumi is one trace. Attributes are chosen one by one (the
//! [`attr`] names, OpenTelemetry's semantic conventions): never arguments,
//! prompts, outputs or credentials.

use std::borrow::Cow;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{Status, TraceContextExt, Tracer, TracerProvider as _};
use opentelemetry::{KeyValue, global};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use sophia_proto::headers;
use tracing_subscriber::EnvFilter;

pub use opentelemetry::trace::SpanKind;

/// Attribute names (OpenTelemetry semantic conventions, plus `sophia.*` and
/// `pulumi.*` for what the conventions do not cover).
pub mod attr {
    /// The MCP method (`tools/call`, `resources/read`, ...).
    pub const MCP_METHOD: &str = "mcp.method.name";
    /// The MCP session id.
    pub const MCP_SESSION: &str = "mcp.session.id";
    /// The MCP protocol version the client negotiated.
    pub const MCP_PROTOCOL_VERSION: &str = "mcp.protocol.version";
    /// The JSON-RPC request id.
    pub const JSONRPC_REQUEST_ID: &str = "jsonrpc.request.id";
    /// `tcp` (Streamable HTTP) or `pipe` (stdio).
    pub const NETWORK_TRANSPORT: &str = "network.transport";
    /// The tool called (MCP and gen_ai conventions share it).
    pub const TOOL_NAME: &str = "gen_ai.tool.name";
    /// The id of a model's tool call.
    pub const TOOL_CALL_ID: &str = "gen_ai.tool.call.id";
    /// `execute_tool`, `invoke_agent`, `chat`, `embeddings`.
    pub const GEN_AI_OPERATION: &str = "gen_ai.operation.name";
    /// The model provider (`openai`, `ollama`, the configured name).
    pub const GEN_AI_PROVIDER: &str = "gen_ai.provider.name";
    /// The model asked for.
    pub const GEN_AI_REQUEST_MODEL: &str = "gen_ai.request.model";
    /// The model that answered.
    pub const GEN_AI_RESPONSE_MODEL: &str = "gen_ai.response.model";
    /// Input (prompt) tokens.
    pub const GEN_AI_INPUT_TOKENS: &str = "gen_ai.usage.input_tokens";
    /// Output (completion) tokens.
    pub const GEN_AI_OUTPUT_TOKENS: &str = "gen_ai.usage.output_tokens";
    /// The agent's name (its template).
    pub const GEN_AI_AGENT_NAME: &str = "gen_ai.agent.name";
    /// The agent's id.
    pub const GEN_AI_AGENT_ID: &str = "gen_ai.agent.id";
    /// The agent session's id.
    pub const GEN_AI_CONVERSATION_ID: &str = "gen_ai.conversation.id";
    /// Always `nats` on the bus.
    pub const MESSAGING_SYSTEM: &str = "messaging.system";
    /// The subject.
    pub const MESSAGING_DESTINATION: &str = "messaging.destination.name";
    /// `send` (caller) or `process` (worker).
    pub const MESSAGING_OPERATION_TYPE: &str = "messaging.operation.type";
    /// `request` (caller) or `process` (worker).
    pub const MESSAGING_OPERATION_NAME: &str = "messaging.operation.name";
    /// The queue group the worker serves in.
    pub const MESSAGING_CONSUMER_GROUP: &str = "messaging.consumer.group.name";
    /// The call's request id.
    pub const MESSAGING_MESSAGE_ID: &str = "messaging.message.id";
    /// The request body's size in bytes.
    pub const MESSAGING_BODY_SIZE: &str = "messaging.message.body.size";
    /// The error code when a span failed (`timeout`, `no_worker`, ...).
    pub const ERROR_TYPE: &str = "error.type";
    /// The agent category of a tool.
    pub const CATEGORY: &str = "sophia.category";
    /// The principal a call runs for.
    pub const PRINCIPAL: &str = "sophia.principal";
    /// The worker instance that served a call.
    pub const INSTANCE: &str = "sophia.instance";
}

/// Installs the global log subscriber, writing to stderr, in colour only
/// when stderr is a terminal. `RUST_LOG` filters (default `info`);
/// async-nats's own events are kept at `warn` unless `RUST_LOG` names it
/// (the kit reports connection trouble itself, once per retry, with the
/// URL). Calling it twice is harmless.
pub fn init_logging() {
    use std::io::IsTerminal;
    let spec = std::env::var("RUST_LOG").unwrap_or_default();
    let spec = if spec.trim().is_empty() {
        "info"
    } else {
        spec.as_str()
    };
    let filter = if spec.contains("async_nats") {
        EnvFilter::new(spec)
    } else {
        EnvFilter::new(format!("{spec},async_nats=warn"))
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .try_init();
}

/// The process's tracing; flushes spans when dropped (or [`Telemetry::shutdown`]).
#[derive(Debug)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
    exporting: bool,
}

impl Telemetry {
    /// Whether spans are exported (an OTLP endpoint is configured).
    pub fn is_exporting(&self) -> bool {
        self.exporting
    }

    /// Exports the spans still buffered and stops the exporter.
    pub fn shutdown(mut self) {
        self.flush_and_stop();
    }

    fn flush_and_stop(&mut self) {
        if let Some(provider) = self.provider.take()
            && self.exporting
            && let Err(e) = provider.shutdown()
        {
            tracing::warn!(cause = %e, "could not export the last spans");
        }
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        self.flush_and_stop();
    }
}

fn env_set(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| !v.trim().is_empty())
}

/// Sets up logging ([`init_logging`]) and tracing for service `service`
/// (the `service.name` unless `OTEL_SERVICE_NAME` says otherwise), from the
/// standard OpenTelemetry variables:
///
/// - `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`):
///   where spans go. Without one nothing is exported and nothing errors;
///   spans are still made, so trace ids reach the logs and the next hop.
/// - `OTEL_EXPORTER_OTLP_PROTOCOL` (or `..._TRACES_PROTOCOL`): `http/protobuf`
///   (the default) or `grpc`; `OTEL_EXPORTER_OTLP_HEADERS`, `..._TIMEOUT`.
/// - `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG` (default
///   `parentbased_always_on`), `OTEL_RESOURCE_ATTRIBUTES`, the `OTEL_BSP_*`
///   batch settings, `OTEL_SDK_DISABLED=true` and `OTEL_TRACES_EXPORTER=none`.
///
/// Must be called inside the Tokio runtime (the gRPC exporter needs it).
pub fn init(service: &str) -> Telemetry {
    init_logging();
    build(service, None)
}

/// Tracing for `service` that exports to the OTLP/HTTP receiver at
/// `endpoint` (e.g. `http://127.0.0.1:4318`), whatever the environment
/// says: for benchmarks and tests that measure tracing in-process.
pub fn init_exporting_to(service: &str, endpoint: &str) -> Telemetry {
    build(service, Some(endpoint))
}

fn build(service: &str, endpoint: Option<&str>) -> Telemetry {
    let disabled = std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.eq_ignore_ascii_case("true"))
        || std::env::var("OTEL_TRACES_EXPORTER").is_ok_and(|v| v.eq_ignore_ascii_case("none"));
    global::set_text_map_propagator(TraceContextPropagator::new());
    if disabled && endpoint.is_none() {
        return Telemetry {
            provider: None,
            exporting: false,
        };
    }
    let mut resource = opentelemetry_sdk::Resource::builder();
    if !env_set("OTEL_SERVICE_NAME") {
        resource = resource.with_service_name(service.to_owned());
    }
    let resource = resource
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build();
    let mut builder = SdkTracerProvider::builder().with_resource(resource);
    let wants_export = endpoint.is_some()
        || env_set("OTEL_EXPORTER_OTLP_ENDPOINT")
        || env_set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
    let mut exporting = false;
    if wants_export {
        // The HTTP exporter's client (reqwest, built without a default TLS
        // provider in this workspace) needs one, as NATS and the
        // intelligence-worker's clients do: ring.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let exporter = match endpoint {
            Some(e) => {
                use opentelemetry_otlp::WithExportConfig;
                opentelemetry_otlp::SpanExporter::builder()
                    .with_http()
                    .with_endpoint(format!("{}/v1/traces", e.trim_end_matches('/')))
                    .build()
            }
            None => opentelemetry_otlp::SpanExporter::builder().build(),
        };
        match exporter {
            Ok(exporter) => {
                builder = builder.with_batch_exporter(exporter);
                exporting = true;
            }
            Err(e) => {
                tracing::error!(cause = %e, "OTLP exporter not built; spans are not exported")
            }
        }
    }
    let provider = builder.build();
    global::set_tracer_provider(provider.clone());
    if exporting {
        tracing::info!(service, "exporting traces with OTLP");
    }
    Telemetry {
        provider: Some(provider),
        exporting,
    }
}

/// One span of a call's trace. Ends when dropped.
pub struct Span {
    cx: opentelemetry::Context,
}

impl std::fmt::Debug for Span {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Span")
            .field("trace", &self.trace().traceparent)
            .finish()
    }
}

impl Span {
    /// Starts a span named `name` as a child of `parent` (a root span when
    /// `parent` carries no trace context).
    pub fn start(
        name: impl Into<Cow<'static, str>>,
        kind: SpanKind,
        parent: &headers::Context,
        attributes: Vec<KeyValue>,
    ) -> Self {
        let parent_cx = extract(parent);
        let tracer = global::tracer_provider().tracer("sophia-mesh");
        let span = tracer
            .span_builder(name)
            .with_kind(kind)
            .with_attributes(attributes)
            .start_with_context(&tracer, &parent_cx);
        Self {
            cx: parent_cx.with_span(span),
        }
    }

    /// This span's trace context, to send with the next hop (its request id
    /// is left for the sender to set).
    pub fn trace(&self) -> headers::Context {
        let mut carrier = headers::Context::default();
        TraceContextPropagator::new().inject_context(&self.cx, &mut Carrier(&mut carrier));
        carrier.tracestate = carrier.tracestate.filter(|s| !s.is_empty());
        carrier
    }

    /// The trace id, as hex (for logs), if the call is traced.
    pub fn trace_id(&self) -> Option<String> {
        let sc = self.cx.span().span_context().clone();
        sc.is_valid().then(|| sc.trace_id().to_string())
    }

    /// Sets one attribute.
    pub fn set(&self, attribute: KeyValue) {
        self.cx.span().set_attribute(attribute);
    }

    /// Marks the span failed with error code `code` (`error.type`) and a
    /// message meant for people (no arguments or secrets).
    pub fn fail(&self, code: &str, message: impl Into<Cow<'static, str>>) {
        let span = self.cx.span();
        span.set_attribute(KeyValue::new(attr::ERROR_TYPE, code.to_owned()));
        span.set_status(Status::error(message));
    }

    /// [`Span::fail`] with an error code as both type and message (a
    /// worker's message is not vetted for spans; its code is).
    pub fn fail_code(&self, code: sophia_proto::ErrorCode) {
        self.fail(code.as_str(), code.as_str());
    }

    /// Marks the span with the outcome of a call: nothing on success, or
    /// [`Span::fail_code`] with the error's code.
    pub fn outcome<T>(&self, outcome: &Result<T, sophia_proto::WireError>) {
        if let Err(e) = outcome {
            self.fail_code(e.code);
        }
    }
}

impl Drop for Span {
    fn drop(&mut self) {
        self.cx.span().end();
    }
}

fn extract(parent: &headers::Context) -> opentelemetry::Context {
    TraceContextPropagator::new().extract(&ParentCarrier(parent))
}

/// A trace context's two headers as the propagator reads them (a
/// tracestate only alongside its traceparent), without a map of copies:
/// this runs for every span of every call (`docs/performance.md`).
struct ParentCarrier<'a>(&'a headers::Context);

impl opentelemetry::propagation::Extractor for ParentCarrier<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        let parent = self.0.traceparent.as_deref()?;
        match key {
            headers::TRACEPARENT => Some(parent),
            headers::TRACESTATE => self.0.tracestate.as_deref(),
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        match (&self.0.traceparent, &self.0.tracestate) {
            (None, _) => vec![],
            (Some(_), None) => vec![headers::TRACEPARENT],
            (Some(_), Some(_)) => vec![headers::TRACEPARENT, headers::TRACESTATE],
        }
    }
}

/// Where the propagator writes a span's context: straight into the
/// [`headers::Context`] sent onwards.
struct Carrier<'a>(&'a mut headers::Context);

impl opentelemetry::propagation::Injector for Carrier<'_> {
    fn set(&mut self, key: &str, value: String) {
        match key {
            headers::TRACEPARENT => self.0.traceparent = Some(value),
            headers::TRACESTATE => self.0.tracestate = Some(value),
            _ => {}
        }
    }
}

/// A future that resolves on SIGTERM or Ctrl-C, for graceful drain.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("interrupt received; draining"),
        _ = term => tracing::info!("SIGTERM received; draining"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_pass_the_trace_on_with_and_without_a_tracer() {
        let parent = headers::Context {
            request_id: None,
            traceparent: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()),
            tracestate: Some("vendor=1".into()),
        };
        let span = Span::start("x", SpanKind::Internal, &parent, vec![]);
        let trace = span.trace();
        assert_eq!(trace.traceparent, parent.traceparent);
        assert_eq!(trace.tracestate, parent.tracestate);
        let root = Span::start(
            "y",
            SpanKind::Internal,
            &headers::Context::default(),
            vec![],
        );
        assert_eq!(root.trace().traceparent, None);
        assert_eq!(root.trace_id(), None);
        drop((span, root));

        // Set up without an endpoint: nothing is exported, and spans are
        // still made (a new trace at the first hop, continued after).
        if env_set("OTEL_EXPORTER_OTLP_ENDPOINT") || env_set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
            return;
        }
        let telemetry = build("unit", None);
        assert!(!telemetry.is_exporting());
        let root = Span::start("z", SpanKind::Server, &headers::Context::default(), vec![]);
        let trace = root.trace();
        let traceparent = trace.traceparent.clone().expect("a new trace");
        assert!(headers::is_traceparent(&traceparent), "{traceparent}");
        let child = Span::start("w", SpanKind::Internal, &trace, vec![]);
        assert_eq!(child.trace_id(), root.trace_id());
        assert_ne!(
            child.trace().traceparent,
            trace.traceparent,
            "its own span id"
        );
        telemetry.shutdown();
    }
}
