//! One request, one trace: an MCP client asks an infrastructure agent what a
//! deploy would change. The gateway, the agno-worker, the intelligence-worker
//! and the pulumi-worker run as processes (the real binaries, configured by
//! `OTEL_*` variables as in `docker-compose.mcp.yml`) and export their spans
//! with OTLP/HTTP to a real receiver in this test (`sophia_tests::otlp`).
//! The model is the OpenAI-compatible stand-in and Pulumi is the stand-in
//! CLI (both in the test tree), so the agent's model asks for a preview.

use std::collections::HashMap;

use serde_json::json;
use sophia_tests::NatsServer;
use sophia_tests::client::traceparent_headers;
use sophia_tests::nats::{AGNO_PASSWORD, GATEWAY_PASSWORD, password, passwords, secured};
use sophia_tests::openai::{Behavior, StandIn};
use sophia_tests::otlp::{ReceivedSpan, Receiver};
use sophia_tests::procs::{ANY_PORT, Process};
use sophia_tests::pulumi::Setup;
use sophia_tests::tools::{call, text_of, wait_for_tool};

const STANDIN_PULUMI: &str = env!("CARGO_BIN_EXE_pulumi");
/// Planted where secrets live: the model provider's API key, Pulumi's
/// passphrase, and the person's message to the agent.
const SECRET: &str = "sk-planted-7c1d5e9a0b";
const TOKEN: &str = "gateway-token-planted-3f8e";
/// The client's own span, the parent of the gateway's.
const CLIENT_TRACE: &str = "5b8efff798038103d269b633813fc60c";
const CLIENT_SPAN: &str = "eee19b7ec3c1b174";

/// The four services as processes, exporting to `otlp`.
struct Fleet {
    gateway: String,
    _procs: Vec<Process>,
}

/// A process's environment.
type Env = Vec<(String, String)>;

fn env(pairs: &[(&str, &str)]) -> Env {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

impl Fleet {
    async fn start(
        nats: &NatsServer,
        otlp: &Receiver,
        model: &StandIn,
        pulumi: &Setup,
        dir: &std::path::Path,
    ) -> Self {
        let config = dir.join("intelligence.toml");
        std::fs::write(
            &config,
            format!(
                "[[providers]]\nname = \"standin\"\nbase_url = \"{}\"\napi_key_env = \"STANDIN_API_KEY\"\n\
                 [aliases.default]\ntargets = [{{ provider = \"standin\", model = \"standin-model\" }}]\n",
                model.base_url
            ),
        )
        .unwrap();
        let url = nats.url();
        let traced = |user: &str, password: &str| {
            env(&[
                ("NATS_URL", &url),
                ("NATS_USER", user),
                ("NATS_PASSWORD", password),
                ("OTEL_EXPORTER_OTLP_ENDPOINT", &otlp.endpoint),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
                // Export every 100 ms rather than every 5 s.
                ("OTEL_BSP_SCHEDULE_DELAY", "100"),
                ("RUST_LOG", "info"),
            ])
        };
        let mut procs = Vec::new();
        let (intelligence_password, pulumi_password) =
            (password("intelligence"), password("pulumi"));
        let workers: [(&str, &str, &str, Env); 3] = [
            (
                "intelligence-worker",
                "intelligence",
                &intelligence_password,
                env(&[
                    ("SOPHIA_INTELLIGENCE_CONFIG", &config.display().to_string()),
                    ("STANDIN_API_KEY", SECRET),
                ]),
            ),
            (
                "pulumi-worker",
                "pulumi",
                &pulumi_password,
                pulumi.env(STANDIN_PULUMI, SECRET),
            ),
            ("agno-worker", "agno", AGNO_PASSWORD, vec![]),
        ];
        for (name, user, password, own) in workers {
            let mut e = traced(user, password);
            e.extend(own);
            e.push(("SOPHIA_HTTP_ADDR".into(), ANY_PORT.into()));
            procs.push(Process::spawn(name, &e));
        }
        let mut e = traced("gateway", GATEWAY_PASSWORD);
        e.extend(env(&[
            ("SOPHIA_GATEWAY_ADDR", ANY_PORT),
            ("SOPHIA_GATEWAY_TOKEN", TOKEN),
        ]));
        procs.push(Process::spawn("sophia-gateway", &e));
        let mut gateway = String::new();
        for p in &mut procs {
            gateway = p.ready_at("/ready").await;
        }
        Self {
            gateway: format!("{gateway}/mcp"),
            _procs: procs,
        }
    }
}

impl Fleet {
    fn logs(&self) -> String {
        self._procs
            .iter()
            .map(|p| p.log())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// `span`, its parent, its parent's parent, ... as far as the trace has them.
fn ancestry<'a>(
    span: &'a ReceivedSpan,
    by_id: &HashMap<&str, &'a ReceivedSpan>,
) -> Vec<&'a ReceivedSpan> {
    let mut chain = vec![span];
    while let Some(parent) = by_id.get(chain.last().unwrap().parent_id.as_str()) {
        chain.push(parent);
    }
    chain
}

fn hops(chain: &[&ReceivedSpan]) -> Vec<String> {
    chain
        .iter()
        .map(|s| format!("{} | {} | {}", s.service, s.kind, s.name))
        .collect()
}

/// The services one agent run crosses, each exporting its spans.
const SERVICES: [&str; 4] = [
    "agno-worker",
    "intelligence-worker",
    "pulumi-worker",
    "sophia-gateway",
];

#[tokio::test]
async fn a_call_from_an_mcp_client_to_pulumi_is_one_trace_across_four_services() {
    let nats = secured();
    let otlp = Receiver::start().await;
    let model = StandIn::start().await;
    model.script([
        Behavior::call_tool("pulumi_preview", json!({"stack": "dev"})),
        Behavior::Say("The preview creates 1 resource.".into()),
    ]);
    let pulumi = Setup::new(1);
    let dir = tempfile::tempdir().unwrap();
    let fleet = Fleet::start(&nats, &otlp, &model, &pulumi, dir.path()).await;

    // The client sends its own trace context, as a traced MCP client does.
    let headers = traceparent_headers(&format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"));
    let client = sophia_tests::client::connect_http_with(&fleet.gateway, TOKEN, headers).await;
    for tool in ["agno_create_agent", "pulumi_preview", "model_chat"] {
        wait_for_tool(&client, tool).await;
    }
    let r = call(
        &client,
        "agno_create_agent",
        json!({"agent_type": "pulumi_agent",
               "task": format!("what would change on dev? (the db password is {SECRET})")}),
    )
    .await;
    let out = r.structured_content.clone().unwrap_or_default();
    assert_eq!(out["status"], "completed", "{}", text_of(&r));

    // Every hop's span arrives (exports are batched every 100 ms).
    let mut spans = otlp.spans();
    for _ in 0..200 {
        let chats = spans.iter().filter(|s| s.name == "chat default").count();
        let every_service = SERVICES.iter().all(|svc| {
            spans
                .iter()
                .any(|s| s.service == *svc && s.trace_id == CLIENT_TRACE)
        });
        if spans.iter().any(|s| s.name == "pulumi preview") && chats >= 2 && every_service {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        spans = otlp.spans();
    }
    let names: Vec<String> = spans
        .iter()
        .map(|s| format!("{}: {}", s.service, s.name))
        .collect();
    assert!(
        names.iter().any(|n| n.ends_with("pulumi preview")),
        "no span of the Pulumi operation; received {names:#?}\n{}",
        fleet.logs()
    );
    assert!(otlp.rejected().is_empty(), "{:?}", otlp.rejected());

    // One trace: the client's.
    let ours: Vec<&ReceivedSpan> = spans
        .iter()
        .filter(|s| s.trace_id == CLIENT_TRACE)
        .collect();
    let by_id: HashMap<&str, &ReceivedSpan> =
        ours.iter().map(|s| (s.span_id.as_str(), *s)).collect();
    let services: std::collections::BTreeSet<&str> =
        ours.iter().map(|s| s.service.as_str()).collect();
    assert_eq!(services.into_iter().collect::<Vec<_>>(), SERVICES);
    let others: Vec<String> = spans
        .iter()
        .filter(|s| s.trace_id != CLIENT_TRACE && s.name.contains("pulumi"))
        .map(|s| format!("{} {}", s.trace_id, s.name))
        .collect();
    assert!(
        others.is_empty(),
        "Pulumi spans outside the client's trace: {others:?}"
    );

    // The parent chain from the Pulumi operation back to the client's span.
    let operation = ours.iter().find(|s| s.name == "pulumi preview").unwrap();
    let chain = ancestry(operation, &by_id);
    assert_eq!(
        hops(&chain),
        [
            "pulumi-worker | SPAN_KIND_INTERNAL | pulumi preview",
            "pulumi-worker | SPAN_KIND_INTERNAL | execute_tool pulumi_preview",
            "pulumi-worker | SPAN_KIND_CONSUMER | process sophia.v1.tools.infrastructure.pulumi_preview",
            "agno-worker | SPAN_KIND_PRODUCER | send sophia.v1.tools.infrastructure.pulumi_preview",
            "agno-worker | SPAN_KIND_INTERNAL | execute_tool pulumi_preview",
            "agno-worker | SPAN_KIND_INTERNAL | invoke_agent pulumi_agent",
            "agno-worker | SPAN_KIND_INTERNAL | execute_tool agno_run_infrastructure",
            "agno-worker | SPAN_KIND_CONSUMER | process sophia.v1.tools.infrastructure.agno_run",
            "agno-worker | SPAN_KIND_PRODUCER | send sophia.v1.tools.infrastructure.agno_run",
            "agno-worker | SPAN_KIND_INTERNAL | execute_tool agno_create_agent",
            "agno-worker | SPAN_KIND_CONSUMER | process sophia.v1.tools.agents.agno_create_agent",
            "sophia-gateway | SPAN_KIND_PRODUCER | send sophia.v1.tools.agents.agno_create_agent",
            "sophia-gateway | SPAN_KIND_SERVER | tools/call agno_create_agent",
        ],
        "the chain from the Pulumi operation up"
    );
    let root = chain.last().unwrap();
    assert_eq!(
        root.parent_id, CLIENT_SPAN,
        "the gateway's span continues the client's"
    );
    let agent_run = chain[5];

    // Each model call is a child of the same agent run, through the bus.
    let chats: Vec<&&ReceivedSpan> = ours.iter().filter(|s| s.name == "chat default").collect();
    assert_eq!(
        chats.len(),
        2,
        "two model turns: the tool call, then the answer"
    );
    for chat in &chats {
        let up = ancestry(chat, &by_id);
        assert_eq!(
            hops(&up[..5]),
            [
                "intelligence-worker | SPAN_KIND_CLIENT | chat default",
                "intelligence-worker | SPAN_KIND_INTERNAL | execute_tool infer-0-chat",
                "intelligence-worker | SPAN_KIND_CONSUMER | process sophia.v1.infer.default.chat",
                "agno-worker | SPAN_KIND_PRODUCER | send sophia.v1.infer.default.chat",
                "agno-worker | SPAN_KIND_INTERNAL | invoke_agent pulumi_agent",
            ]
        );
        assert_eq!(up[4].span_id, agent_run.span_id, "the same agent run");
        // gen_ai conventions on the model call.
        assert_eq!(chat.attr("gen_ai.operation.name"), Some("chat"));
        assert_eq!(chat.attr("gen_ai.request.model"), Some("default"));
        assert_eq!(chat.attr("gen_ai.response.model"), Some("standin-model"));
        assert_eq!(chat.attr("gen_ai.provider.name"), Some("standin"));
        for tokens in ["gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens"] {
            let n: u64 = chat.attr(tokens).unwrap_or("0").parse().unwrap();
            assert!(n > 0, "{tokens} on {chat:?}");
        }
    }
    // The agent run adds its model calls' tokens up.
    let sum = |key: &str| -> u64 {
        chats
            .iter()
            .map(|c| c.attr(key).unwrap().parse::<u64>().unwrap())
            .sum()
    };
    for key in ["gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens"] {
        assert_eq!(
            agent_run.attr(key),
            Some(sum(key).to_string().as_str()),
            "{key}"
        );
    }
    assert_eq!(agent_run.attr("gen_ai.agent.name"), Some("pulumi_agent"));
    assert_eq!(agent_run.attr("gen_ai.agent.id"), out["agent_id"].as_str());
    assert_eq!(
        agent_run.attr("gen_ai.conversation.id"),
        out["session_id"].as_str()
    );

    // MCP conventions on the gateway's span.
    assert_eq!(root.attr("mcp.method.name"), Some("tools/call"));
    assert_eq!(root.attr("gen_ai.tool.name"), Some("agno_create_agent"));
    assert!(
        root.attr("mcp.session.id").is_some_and(|s| !s.is_empty()),
        "{root:?}"
    );
    assert_eq!(root.attr("network.transport"), Some("tcp"));
    // Messaging conventions on every bus hop.
    for s in ours
        .iter()
        .filter(|s| s.kind == "SPAN_KIND_PRODUCER" || s.kind == "SPAN_KIND_CONSUMER")
    {
        assert_eq!(s.attr("messaging.system"), Some("nats"), "{s:?}");
        let subject = s.name.split_once(' ').unwrap().1;
        assert_eq!(s.attr("messaging.destination.name"), Some(subject), "{s:?}");
        let op = if s.kind == "SPAN_KIND_PRODUCER" {
            "send"
        } else {
            "process"
        };
        assert_eq!(s.attr("messaging.operation.type"), Some(op), "{s:?}");
    }
    // Which worker handled a call: the consuming replica's instance.
    assert!(
        chain[2]
            .attr("sophia.instance")
            .is_some_and(|i| !i.is_empty())
    );
    // The Pulumi operation says what it did.
    assert_eq!(operation.attr("pulumi.stack"), Some("dev"));
    assert_eq!(operation.attr("pulumi.operation"), Some("preview"));
    assert_eq!(operation.status, "STATUS_CODE_UNSET", "{operation:?}");
    // service.name per service, as a resource attribute.
    for s in &ours {
        assert_eq!(
            s.resource.get("service.name").map(String::as_str),
            Some(s.service.as_str())
        );
    }

    // No secret anywhere in what was exported.
    for s in &spans {
        let text = s.all_text();
        let nats_passwords = passwords().into_iter().map(|(_, p)| p);
        for secret in [SECRET.to_owned(), TOKEN.to_owned()]
            .into_iter()
            .chain(nats_passwords)
        {
            assert!(
                !text.contains(&secret),
                "a secret in span {:?}: {text}",
                s.name
            );
        }
    }
    // The planted secret did travel (the test would prove nothing otherwise).
    assert!(
        model
            .hits()
            .iter()
            .any(|h| format!("{h:?}").contains(SECRET)),
        "the model saw the person's message and the provider key"
    );
}

#[tokio::test]
async fn spans_go_out_over_otlp_grpc_too_with_the_configured_service_name_and_sampler() {
    let mesh = sophia_tests::Mesh::start().await;
    let otlp = Receiver::start_grpc().await;
    let mut echo = Process::spawn(
        "echo-worker",
        &env(&[
            ("NATS_URL", &mesh.nats.url()),
            ("SOPHIA_HTTP_ADDR", ANY_PORT),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &otlp.endpoint),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_SERVICE_NAME", "echo-replica-a"),
            // Record every span, even under a caller that did not sample
            // (the default, parentbased_always_on, would follow the caller
            // and record nothing of this call).
            ("OTEL_TRACES_SAMPLER", "always_on"),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ]),
    );
    echo.ready_at("/ready").await;
    // Flags 00: the client did not sample this trace.
    let headers = traceparent_headers(&format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-00"));
    let client = sophia_tests::client::connect_http_with(
        &mesh.mcp_url(),
        sophia_tests::mesh::TEST_TOKEN,
        headers,
    )
    .await;
    wait_for_tool(&client, "echo").await;
    call(&client, "echo", json!({"text": "hi"})).await;

    let mut spans = otlp.spans();
    for _ in 0..100 {
        if spans.iter().any(|s| s.name == "execute_tool echo") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        spans = otlp.spans();
    }
    let process = spans
        .iter()
        .find(|s| s.kind == "SPAN_KIND_CONSUMER")
        .unwrap_or_else(|| panic!("no span over gRPC: {spans:?}\n{}", echo.log()));
    assert_eq!(process.service, "echo-replica-a", "OTEL_SERVICE_NAME wins");
    // This in-process gateway exports nothing (no tracer is set up in the
    // test process), so the worker's span continues the client's directly.
    assert_eq!(process.trace_id, CLIENT_TRACE);
    assert_eq!(process.parent_id, CLIENT_SPAN);
    let execute = spans
        .iter()
        .find(|s| s.name == "execute_tool echo")
        .unwrap();
    assert_eq!(execute.parent_id, process.span_id);
    assert_eq!(execute.attr("gen_ai.tool.name"), Some("echo"));
}
