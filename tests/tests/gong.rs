//! The gong-worker on the mesh, called through the gateway by an MCP client,
//! against the Gong stand-in (`tests/src/gong.rs`, built from Gong's
//! published API v2 formats): the tools and their hints, paging, call
//! details, speaker-attributed transcripts, and what each failure says
//! (unknown call, bad or missing credentials, rate limits, Gong down).

use rmcp::model::CallToolResult;
use serde_json::{Value, json};
use sophia_tests::gong::{
    ACCESS_KEY, ACCESS_KEY_SECRET, PAGE_SIZE, Replica, StandIn, call_id, replica,
};
use sophia_tests::tools::{WAIT, call, error_code, text_of, wait_for_tool};
use sophia_tests::{McpClient, Mesh, eventually};

const TOOLS: [&str; 3] = ["gong_list_calls", "gong_get_call", "gong_get_transcript"];
/// A range holding all five fixture calls.
const MARCH: (&str, &str) = ("2025-03-01T00:00:00Z", "2025-04-01T00:00:00Z");

/// A mesh with a gong-worker against a fresh stand-in, and a client that
/// sees its tools.
async fn gong(credentials: Option<(&str, &str)>) -> (Mesh, StandIn, Replica, McpClient) {
    let mesh = Mesh::start().await;
    let standin = StandIn::start().await;
    let worker = replica(&mesh, &standin.base_url, credentials).await;
    let client = mesh.client().await;
    for tool in TOOLS {
        wait_for_tool(&client, tool).await;
    }
    (mesh, standin, worker, client)
}

async fn working() -> (Mesh, StandIn, Replica, McpClient) {
    gong(Some((ACCESS_KEY, ACCESS_KEY_SECRET))).await
}

fn structured(r: &CallToolResult) -> Value {
    r.structured_content.clone().unwrap_or(Value::Null)
}

fn ok(r: CallToolResult) -> CallToolResult {
    assert_eq!(r.is_error, Some(false), "{}", text_of(&r));
    r
}

fn ids(r: &CallToolResult) -> Vec<String> {
    structured(r)["calls"]
        .as_array()
        .unwrap_or_else(|| panic!("calls in {}", text_of(r)))
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn the_tools_are_read_only_business_intelligence_tools_with_schemas() {
    let (mesh, _standin, _worker, client) = working().await;
    let tools = client.list_all_tools().await.unwrap();
    for name in TOOLS {
        let t = tools.iter().find(|t| t.name == name).unwrap();
        let hints = t
            .annotations
            .as_ref()
            .unwrap_or_else(|| panic!("{name} has hints"));
        assert_eq!(hints.read_only_hint, Some(true), "{name}");
        assert_eq!(hints.idempotent_hint, Some(true), "{name}");
        assert_ne!(hints.destructive_hint, Some(true), "{name}");
        assert!(t.output_schema.is_some(), "{name} has an output schema");
        assert_eq!(t.input_schema.get("type"), Some(&json!("object")), "{name}");
    }
    let health = eventually("the gateway counts the Gong tools", WAIT, || async {
        let h = mesh.health().await?;
        (h["categories"]["business_intelligence"]["tools"].as_u64() == Some(3)).then_some(h)
    })
    .await;
    assert!(
        !health["degraded"].to_string().contains("gong-worker"),
        "a worker with credentials is not degraded: {health}"
    );
}

#[tokio::test]
async fn listing_calls_follows_gongs_cursor_through_every_page() {
    let (_mesh, standin, _worker, client) = working().await;
    let r = ok(call(
        &client,
        "gong_list_calls",
        json!({"from": MARCH.0, "to": MARCH.1}),
    )
    .await);
    let all: Vec<String> = (0..5).map(call_id).collect();
    assert_eq!(ids(&r), all, "{}", text_of(&r));
    let out = structured(&r);
    assert_eq!(out["pages"], 3, "{out}");
    assert_eq!(out["total_records"], 5);
    assert!(out.get("next_cursor").is_none(), "{out}");
    assert!(text_of(&r).contains("Acme discovery #5"), "{}", text_of(&r));
    // The second and third requests carried the cursors Gong gave.
    let queries: Vec<String> = standin
        .hits()
        .iter()
        .filter_map(|h| h.query.clone())
        .collect();
    assert_eq!(queries.len(), 3, "{queries:?}");
    assert!(
        !queries[0].contains("cursor=")
            && queries[1].contains("cursor=")
            && queries[2].contains("cursor=")
    );
    assert!(
        queries[0].contains("fromDateTime=2025-03-01T00%3A00%3A00Z"),
        "{queries:?}"
    );

    // A limit stops early, and the cursor goes on from there.
    let first = ok(call(
        &client,
        "gong_list_calls",
        json!({"from": MARCH.0, "to": MARCH.1, "limit": PAGE_SIZE + 1}),
    )
    .await);
    assert_eq!(ids(&first), all[..PAGE_SIZE + 1].to_vec());
    let cursor = structured(&first)["next_cursor"]
        .as_str()
        .expect("a next_cursor")
        .to_owned();
    let rest = ok(call(
        &client,
        "gong_list_calls",
        json!({"from": MARCH.0, "to": MARCH.1, "cursor": cursor}),
    )
    .await);
    let mut seen = ids(&first);
    seen.extend(ids(&rest));
    seen.sort();
    seen.dedup();
    assert_eq!(seen, all, "together they list every call");
}

#[tokio::test]
async fn a_range_without_calls_is_an_empty_list_not_an_error() {
    let (_mesh, _standin, _worker, client) = working().await;
    let r = ok(call(
        &client,
        "gong_list_calls",
        json!({"from": "2020-01-01T00:00:00Z", "to": "2020-02-01T00:00:00Z"}),
    )
    .await);
    assert_eq!(ids(&r), Vec::<String>::new());
    assert!(text_of(&r).starts_with("0 calls"), "{}", text_of(&r));
}

#[tokio::test]
async fn a_call_comes_with_its_parties_topics_and_brief() {
    let (_mesh, standin, _worker, client) = working().await;
    let r = ok(call(&client, "gong_get_call", json!({"call_id": call_id(1)})).await);
    let out = structured(&r);
    assert_eq!(out["call"]["id"], call_id(1));
    assert_eq!(out["call"]["title"], "Acme discovery #2");
    assert_eq!(out["parties"][1]["name"], "Grace Hopper");
    assert_eq!(out["parties"][1]["affiliation"], "External");
    assert_eq!(
        out["topics"][0],
        json!({"name": "Pricing", "duration": 320})
    );
    assert!(out["brief"].as_str().unwrap().contains("SSO"));
    let text = text_of(&r);
    for needed in ["Acme discovery #2", "Grace Hopper", "Pricing", "SSO"] {
        assert!(text.contains(needed), "{needed:?} in {text}");
    }
    // What it asked Gong for.
    let asked = &standin.hits()[0];
    assert_eq!(asked.path, "/v2/calls/extensive");
    assert_eq!(asked.body["filter"]["callIds"], json!([call_id(1)]));
    assert_eq!(
        asked.body["contentSelector"]["exposedFields"]["parties"],
        true
    );
}

#[tokio::test]
async fn a_transcript_says_who_said_what_and_when() {
    let (_mesh, _standin, _worker, client) = working().await;
    let r = ok(call(
        &client,
        "gong_get_transcript",
        json!({"call_id": call_id(0)}),
    )
    .await);
    let text = text_of(&r);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        format!("Transcript of Gong call {}: Acme discovery #1", call_id(0))
    );
    assert_eq!(
        lines[1..],
        [
            "[0:00] Ada Lovelace (Internal): Thanks for joining, Grace. Shall we start with pricing?",
            "[1:05] Grace Hopper (External): Pricing works, but we need SSO.",
            "[1:02:05] Speaker 9999999999999999999: Recording stopped.",
        ],
        "{text}"
    );
    let out = structured(&r);
    assert_eq!(out["monologues"][1]["speaker_id"], "6432345678555530068");
    assert_eq!(out["monologues"][1]["topic"], "Pricing");
    assert_eq!(out["monologues"][1]["start_ms"], 65000.0);
    assert_eq!(out["speakers"].as_array().unwrap().len(), 2);
    assert!(out.get("note").is_none(), "{out}");
}

#[tokio::test]
async fn an_unknown_call_id_is_invalid_arguments_naming_it() {
    let (_mesh, _standin, _worker, client) = working().await;
    for tool in ["gong_get_call", "gong_get_transcript"] {
        let r = call(&client, tool, json!({"call_id": "123456789"})).await;
        assert_eq!(
            error_code(&r).as_deref(),
            Some("invalid_arguments"),
            "{tool}: {}",
            text_of(&r)
        );
        assert!(
            text_of(&r).contains("call 123456789 was not found"),
            "{}",
            text_of(&r)
        );
    }
    // Not an id at all: refused before Gong is asked.
    let r = call(&client, "gong_get_call", json!({"call_id": "abc"})).await;
    assert_eq!(r.is_error, Some(true));
}

#[tokio::test]
async fn wrong_credentials_say_which_settings_to_check() {
    let (_mesh, _standin, _worker, client) = gong(Some((ACCESS_KEY, "not-the-secret"))).await;
    let r = call(
        &client,
        "gong_list_calls",
        json!({"from": MARCH.0, "to": MARCH.1}),
    )
    .await;
    let text = text_of(&r);
    assert_eq!(
        error_code(&r).as_deref(),
        Some("permission_denied"),
        "{text}"
    );
    for needed in [
        "HTTP 401",
        "GONG_ACCESS_KEY",
        "GONG_ACCESS_KEY_SECRET",
        "api:calls:read:basic",
    ] {
        assert!(text.contains(needed), "{needed:?} in {text}");
    }
    assert!(
        !text.contains("not-the-secret"),
        "the secret is never shown: {text}"
    );
}

#[tokio::test]
async fn a_rate_limited_request_is_retried_after_the_wait_gong_asks_for() {
    let (_mesh, standin, _worker, client) = working().await;
    standin.rate_limit_once("0.2");
    let r = ok(call(&client, "gong_get_call", json!({"call_id": call_id(0)})).await);
    assert_eq!(structured(&r)["call"]["id"], call_id(0));
    assert_eq!(standin.hits().len(), 2, "one 429, one retry");

    // Odd values never break it: a wait with no number is a short default.
    standin.rate_limit_once("soon");
    ok(call(&client, "gong_get_call", json!({"call_id": call_id(0)})).await);
}

#[tokio::test]
async fn a_wait_longer_than_the_worker_allows_is_returned_with_when_to_retry() {
    let (_mesh, standin, _worker, client) = working().await;
    standin.rate_limit_once("3600");
    let r = call(&client, "gong_get_call", json!({"call_id": call_id(0)})).await;
    let text = text_of(&r);
    assert_eq!(error_code(&r).as_deref(), Some("unavailable"), "{text}");
    assert!(
        text.contains("429") && text.contains("retry in 3600 s"),
        "{text}"
    );
    assert_eq!(standin.hits().len(), 1, "not waited out");

    // Retries are bounded: three 429s in a row end in the same error.
    for _ in 0..3 {
        standin.rate_limit_once("0");
    }
    let r = call(&client, "gong_get_call", json!({"call_id": call_id(0)})).await;
    assert_eq!(
        error_code(&r).as_deref(),
        Some("unavailable"),
        "{}",
        text_of(&r)
    );
    assert_eq!(standin.hits().len(), 4, "the first try and two retries");
}

#[tokio::test]
async fn gong_failing_is_unavailable_and_a_failed_party_lookup_leaves_speakers_unnamed() {
    let (_mesh, standin, _worker, client) = working().await;
    standin.fail_once(503);
    let r = call(
        &client,
        "gong_list_calls",
        json!({"from": MARCH.0, "to": MARCH.1}),
    )
    .await;
    assert_eq!(
        error_code(&r).as_deref(),
        Some("unavailable"),
        "{}",
        text_of(&r)
    );
    assert!(text_of(&r).contains("HTTP 503"), "{}", text_of(&r));
    // The transcript and the parties are asked for at once; whichever the
    // stand-in fails, the call says what happened and never panics.
    standin.fail_once(500);
    let r = call(
        &client,
        "gong_get_transcript",
        json!({"call_id": call_id(0)}),
    )
    .await;
    if r.is_error == Some(true) {
        assert_eq!(
            error_code(&r).as_deref(),
            Some("unavailable"),
            "{}",
            text_of(&r)
        );
    } else {
        assert!(
            structured(&r)["note"]
                .as_str()
                .unwrap()
                .contains("speakers are not named")
        );
        assert!(
            text_of(&r).contains("Speaker 6432345678555530067: Thanks"),
            "{}",
            text_of(&r)
        );
    }
}

#[tokio::test]
async fn without_credentials_the_worker_is_degraded_and_calls_say_what_to_set() {
    let (mesh, standin, worker, client) = gong(None).await;
    let r = call(&client, "gong_list_calls", json!({})).await;
    let text = text_of(&r);
    assert_eq!(error_code(&r).as_deref(), Some("unavailable"), "{text}");
    assert!(
        text.contains("set GONG_ACCESS_KEY and GONG_ACCESS_KEY_SECRET"),
        "{text}"
    );
    assert!(
        standin.hits().is_empty(),
        "Gong is not asked without credentials"
    );

    // Its own /health says so, and the gateway's names it.
    let own: Value = reqwest::get(format!("http://{}/health", worker.http_addr()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(own.to_string().contains("GONG_ACCESS_KEY_SECRET"), "{own}");
    assert!(own.to_string().contains("degraded"), "{own}");
    eventually(
        "the gateway reports the missing credentials",
        WAIT,
        || async {
            let h = mesh.health().await?;
            h["degraded"]
                .as_array()?
                .iter()
                .any(|d| {
                    d["what"] == "gong-worker"
                        && d["problem"].to_string().contains("GONG_ACCESS_KEY")
                })
                .then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn it_serves_as_the_gong_user_of_nats_conf() {
    // ops/nats/nats.conf's `gong` user is all it needs: its three tools by
    // name, and nothing on JetStream but large payloads.
    let mesh = Mesh::least_privilege().await;
    let standin = StandIn::start().await;
    let _worker = replica(
        &mesh,
        &standin.base_url,
        Some((ACCESS_KEY, ACCESS_KEY_SECRET)),
    )
    .await;
    let client = mesh.client().await;
    wait_for_tool(&client, "gong_get_transcript").await;
    let r = ok(call(
        &client,
        "gong_get_transcript",
        json!({"call_id": call_id(2)}),
    )
    .await);
    assert!(
        text_of(&r).contains("Grace Hopper (External)"),
        "{}",
        text_of(&r)
    );
    assert_eq!(mesh.nats.violations(), Vec::<String>::new());
}
