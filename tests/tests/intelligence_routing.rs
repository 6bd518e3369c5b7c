//! The intelligence-worker's routing core against stand-in OpenAI-compatible
//! providers: fallback order, retries, Retry-After, circuit breakers,
//! least-outstanding balancing, streaming (text and tool calls), malformed
//! and cut-off streams, usage and cost, and the errors callers see.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use intelligence_worker::chat::Delta;
use intelligence_worker::config::Config;
use intelligence_worker::router::{BreakerState, Operation, RouteError, Router};
use serde_json::{Value, json};
use sophia_tests::eventually;
use sophia_tests::openai::{Behavior, StandIn};

/// A router over stand-ins `a` (priority 0) and `b` (priority 1) for alias
/// `smart`, with fast retries.
fn router(a: &StandIn, b: &StandIn, max_retries: u32, breaker_failures: u32) -> Router {
    let text = format!(
        r#"
        [[providers]]
        name = "a"
        base_url = "{}"
        models = ["model-a"]
        timeout_ms = 2000

        [[providers]]
        name = "b"
        base_url = "{}"
        models = ["model-b"]
        timeout_ms = 2000

        [aliases.smart]
        targets = [
          {{ provider = "a", model = "model-a", priority = 0 }},
          {{ provider = "b", model = "model-b", priority = 1 }},
        ]

        [prices."model-b"]
        input_per_million = 2.0
        output_per_million = 10.0

        [routing]
        max_retries = {max_retries}
        backoff_ms = 10
        breaker_failures = {breaker_failures}
        breaker_open_ms = 300
        "#,
        a.base_url, b.base_url
    );
    Router::new(Config::parse(&text, "test").expect("test config parses"))
}

fn ask(text: &str) -> Value {
    json!({"messages": [{"role": "user", "content": text}]})
}

fn soon() -> Instant {
    Instant::now() + Duration::from_secs(20)
}

fn content(v: &Value) -> &str {
    v["choices"][0]["message"]["content"].as_str().unwrap_or("")
}

async fn chat(
    r: &Router,
    model: &str,
    text: &str,
) -> Result<intelligence_worker::router::Routed, RouteError> {
    let body = ask(text);
    r.call(model, Operation::Chat(&body), soon()).await
}

#[tokio::test]
async fn falls_back_in_priority_order_and_accounts_usage() {
    let (a, b) = (StandIn::start().await, StandIn::start().await);
    a.script([Behavior::ServerError]);
    let r = router(&a, &b, 0, 2);

    let done = chat(&r, "smart", "hello there").await.unwrap();
    assert_eq!(done.provider, "b");
    assert_eq!(done.model, "model-b");
    assert_eq!(content(&done.response), "echo: hello there");
    assert_eq!(done.attempts.len(), 2);
    assert!(
        done.attempts[0].starts_with("a: a failed: HTTP 500"),
        "{:?}",
        done.attempts
    );
    // The provider saw its own model name, not the alias.
    assert_eq!(b.hits()[0].body["model"], "model-b");
    // Usage from the response, cost from the price table: 2 in, 3 out.
    let usage = done.usage.unwrap();
    assert_eq!((usage.input_tokens, usage.output_tokens), (2, 3));
    let cost = done.cost_usd.unwrap();
    assert!(
        (cost - (2.0 * 2.0 + 3.0 * 10.0) / 1e6).abs() < 1e-12,
        "{cost}"
    );
}

#[tokio::test]
async fn transient_failures_are_retried_with_backoff() {
    let (a, b) = (StandIn::start().await, StandIn::start().await);
    a.script([Behavior::ServerError, Behavior::ServerError]);
    b.script([Behavior::ServerError, Behavior::ServerError]);
    // A breaker that stays closed, so only the retry rounds are at work.
    let r = router(&a, &b, 2, 100);
    let done = chat(&r, "smart", "third time lucky").await.unwrap();
    assert_eq!(done.provider, "a", "round three starts at the top again");
    assert_eq!((a.hits().len(), b.hits().len()), (3, 2));
}

#[tokio::test]
async fn every_provider_failing_gives_one_error_listing_the_attempts() {
    let (a, b) = (StandIn::start().await, StandIn::start().await);
    a.default_behavior(Behavior::ServerError);
    b.default_behavior(Behavior::ServerError);
    let r = router(&a, &b, 1, 100);
    let err = chat(&r, "smart", "x").await.unwrap_err();
    let RouteError::Exhausted { attempts, .. } = &err else {
        panic!("{err}")
    };
    assert_eq!(attempts.len(), 4, "{attempts:?}");
    assert!(
        err.to_string()
            .contains("every provider for \"smart\" failed"),
        "{err}"
    );
}

#[tokio::test]
async fn a_429_retry_after_is_respected() {
    let (a, b) = (StandIn::start().await, StandIn::start().await);
    // Only `a` serves this model: the router must wait out Retry-After.
    a.script([Behavior::RateLimited(0.4)]);
    let r = router(&a, &b, 2, 2);
    let done = chat(&r, "model-a", "later").await.unwrap();
    assert_eq!(done.provider, "a");
    let hits = a.hits();
    assert_eq!(hits.len(), 2);
    assert!(
        hits[1].at.duration_since(hits[0].at) >= Duration::from_millis(400),
        "the retry came before Retry-After had passed"
    );

    // With a fallback, a rate-limited provider is skipped while it cools down.
    a.script([Behavior::RateLimited(60.0)]);
    assert_eq!(chat(&r, "smart", "x").await.unwrap().provider, "b");
    assert_eq!(chat(&r, "smart", "y").await.unwrap().provider, "b");
    assert_eq!(
        a.hits().len(),
        3,
        "a was not called again during its Retry-After"
    );
}

#[tokio::test]
async fn the_breaker_opens_after_repeated_failures_and_closes_after_a_good_trial() {
    let (a, b) = (StandIn::start().await, StandIn::start().await);
    a.default_behavior(Behavior::ServerError);
    let r = router(&a, &b, 0, 2);

    for _ in 0..2 {
        assert_eq!(chat(&r, "smart", "x").await.unwrap().provider, "b");
    }
    assert_eq!(r.breaker("a"), Some(BreakerState::Open));
    assert_eq!(chat(&r, "smart", "x").await.unwrap().provider, "b");
    assert_eq!(a.hits().len(), 2, "an open breaker sends nothing to a");

    a.default_behavior(Behavior::Ok);
    eventually("the breaker half-opens", Duration::from_secs(5), || async {
        (r.breaker("a") == Some(BreakerState::HalfOpen)).then_some(())
    })
    .await;
    assert_eq!(
        chat(&r, "smart", "x").await.unwrap().provider,
        "a",
        "the trial call goes to a"
    );
    assert_eq!(r.breaker("a"), Some(BreakerState::Closed));
}

#[tokio::test]
async fn a_stalled_provider_times_out_and_the_call_falls_back() {
    let (a, b) = (StandIn::start().await, StandIn::start().await);
    a.script([Behavior::Stall(Duration::from_secs(30))]);
    let r = router(&a, &b, 0, 2);
    let done = chat(&r, "smart", "x").await.unwrap();
    assert_eq!(done.provider, "b");
    assert!(
        done.attempts[0].contains("did not answer within"),
        "{:?}",
        done.attempts
    );
}

#[tokio::test]
async fn equal_priority_targets_share_load_by_least_outstanding() {
    let (a, b) = (StandIn::start().await, StandIn::start().await);
    let text = format!(
        r#"
        [[providers]]
        name = "a"
        base_url = "{}"
        [[providers]]
        name = "b"
        base_url = "{}"
        [aliases.local]
        targets = [{{ provider = "a", model = "m" }}, {{ provider = "b", model = "m" }}]
        "#,
        a.base_url, b.base_url
    );
    let r = Arc::new(Router::new(Config::parse(&text, "t").unwrap()));
    a.script([Behavior::Stall(Duration::from_millis(500))]);
    let first = {
        let r = r.clone();
        tokio::spawn(async move { chat(&r, "local", "slow").await.unwrap().provider })
    };
    eventually(
        "a call is outstanding at a",
        Duration::from_secs(5),
        || async { (r.outstanding("a") == 1).then_some(()) },
    )
    .await;
    assert_eq!(chat(&r, "local", "fast").await.unwrap().provider, "b");
    assert_eq!(first.await.unwrap(), "a");
    // Idle again: configuration order breaks the tie.
    assert_eq!(chat(&r, "local", "again").await.unwrap().provider, "a");
}

async fn stream(
    r: &Router,
    model: &str,
    text: &str,
) -> (
    Result<intelligence_worker::router::Routed, RouteError>,
    Vec<Delta>,
) {
    let deltas = Arc::new(Mutex::new(Vec::new()));
    let sink = deltas.clone();
    let mut on_delta = move |d: Delta| sink.lock().unwrap().push(d);
    let body = ask(text);
    let result = r
        .call(model, Operation::ChatStream(&body, &mut on_delta), soon())
        .await;
    let deltas = deltas.lock().unwrap().clone();
    (result, deltas)
}

#[tokio::test]
async fn streamed_text_is_relayed_as_it_arrives_and_assembled() {
    let (a, b) = (StandIn::start().await, StandIn::start().await);
    let r = router(&a, &b, 2, 2);
    let (done, deltas) = stream(&r, "smart", "stream me").await;
    let done = done.unwrap();
    let texts: Vec<_> = deltas
        .iter()
        .map(|d| match d {
            Delta::Text(t) => t.clone(),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(texts, ["echo:", " stream", " me"]);
    assert_eq!(content(&done.response), "echo: stream me");
    // The usage chunk (with `choices: null`) was read.
    assert_eq!(done.usage.unwrap().output_tokens, 3);
    assert_eq!(a.hits()[0].body["stream_options"]["include_usage"], true);
}

#[tokio::test]
async fn streamed_tool_calls_are_assembled_by_index() {
    let (a, b) = (StandIn::start().await, StandIn::start().await);
    a.script([Behavior::ToolCalls]);
    let r = router(&a, &b, 2, 2);
    let (done, deltas) = stream(&r, "smart", "weather and time?").await;
    let done = done.unwrap();
    let calls = &done.response["choices"][0]["message"]["tool_calls"];
    assert_eq!(calls[0]["id"], "call_0");
    assert_eq!(calls[0]["function"]["name"], "get_weather");
    assert_eq!(calls[0]["function"]["arguments"], "{\"city\":\"Paris\"}");
    assert_eq!(calls[1]["function"]["name"], "get_time");
    assert_eq!(calls[1]["function"]["arguments"], "{\"tz\":\"UTC\"}");
    assert_eq!(done.response["choices"][0]["finish_reason"], "tool_calls");
    assert!(
        deltas
            .iter()
            .any(|d| matches!(d, Delta::ToolCall { index: 1, .. }))
    );
    assert_eq!(done.usage.unwrap().output_tokens, 4);
}

#[tokio::test]
async fn malformed_sse_before_any_output_falls_back() {
    let (a, b) = (StandIn::start().await, StandIn::start().await);
    a.script([Behavior::MalformedSse]);
    let r = router(&a, &b, 0, 2);
    let (done, _) = stream(&r, "smart", "x").await;
    let done = done.unwrap();
    assert_eq!(done.provider, "b");
    assert!(done.attempts[0].contains("not JSON"), "{:?}", done.attempts);
}

#[tokio::test]
async fn a_stream_cut_off_after_output_is_reported_not_repeated() {
    let (a, b) = (StandIn::start().await, StandIn::start().await);
    a.script([Behavior::CutOff]);
    let r = router(&a, &b, 2, 2);
    let (result, deltas) = stream(&r, "smart", "x").await;
    let err = result.unwrap_err();
    assert!(matches!(err, RouteError::FailedMidStream(_)), "{err}");
    assert!(err.to_string().contains("cut off"), "{err}");
    assert_eq!(deltas.len(), 2, "what arrived was relayed once");
    assert!(
        b.hits().is_empty(),
        "no retry elsewhere after output was relayed"
    );
}

#[tokio::test]
async fn a_rejected_request_is_not_retried_anywhere() {
    let (a, b) = (StandIn::start().await, StandIn::start().await);
    a.script([Behavior::Reject]);
    let r = router(&a, &b, 2, 2);
    let err = chat(&r, "smart", "x").await.unwrap_err();
    assert!(matches!(err, RouteError::Rejected(_)), "{err}");
    assert!(err.to_string().contains("400"), "{err}");
    assert!(b.hits().is_empty());
    assert_eq!(
        r.breaker("a"),
        Some(BreakerState::Closed),
        "a bad request is not the provider's fault"
    );
}

#[tokio::test]
async fn embeddings_are_routed_too() {
    let (a, b) = (StandIn::start().await, StandIn::start().await);
    let r = router(&a, &b, 2, 2);
    let body = json!({"input": ["one two", "three"]});
    let done = r
        .call("smart", Operation::Embeddings(&body), soon())
        .await
        .unwrap();
    assert_eq!(done.response["data"].as_array().unwrap().len(), 2);
    assert_eq!(done.usage.unwrap().input_tokens, 3);
    assert_eq!(a.hits()[0].path, "/v1/embeddings");
}

#[tokio::test]
async fn api_keys_come_from_the_named_environment_variable() {
    let a = StandIn::start().await;
    let text = format!(
        r#"
        [[providers]]
        name = "keyed"
        base_url = "{}"
        api_key_env = "SOPHIA_TEST_KEY_PRESENT"
        models = ["m"]
        [[providers]]
        name = "keyless"
        base_url = "{}"
        api_key_env = "SOPHIA_TEST_KEY_NEVER_SET"
        models = ["n"]
        "#,
        a.base_url, a.base_url
    );
    // The key is read from the environment when the router is built; this
    // variable is never set, so the provider cannot be used.
    let config = Config::parse(&text, "t").unwrap();
    let r = Router::new(config);
    let err = chat(&r, "n", "x").await.unwrap_err();
    assert!(
        err.to_string()
            .contains("set the environment variable SOPHIA_TEST_KEY_NEVER_SET"),
        "{err}"
    );
    assert!(a.hits().is_empty(), "nothing is sent without the key");
    assert_eq!(r.breaker("keyless"), Some(BreakerState::Closed));
}

#[tokio::test]
async fn unknown_models_and_missing_configuration_get_errors_that_say_what_to_do() {
    let (a, b) = (StandIn::start().await, StandIn::start().await);
    let r = router(&a, &b, 2, 2);
    let err = chat(&r, "gpt-9", "x").await.unwrap_err();
    assert!(err.to_string().contains("unknown model \"gpt-9\""), "{err}");
    assert!(
        err.to_string().contains("smart"),
        "lists what exists: {err}"
    );

    let empty = Router::new(Config::default());
    let err = chat(&empty, "anything", "x").await.unwrap_err();
    assert!(
        err.to_string().contains("SOPHIA_INTELLIGENCE_CONFIG"),
        "{err}"
    );
}

#[tokio::test]
async fn weights_scale_how_much_outstanding_load_a_provider_takes() {
    let (a, b) = (StandIn::start().await, StandIn::start().await);
    let text = format!(
        r#"
        [[providers]]
        name = "big"
        base_url = "{}"
        weight = 4
        [[providers]]
        name = "small"
        base_url = "{}"
        weight = 1
        [aliases.local]
        targets = [{{ provider = "small", model = "m" }}, {{ provider = "big", model = "m" }}]
        "#,
        a.base_url, b.base_url
    );
    let r = Arc::new(Router::new(Config::parse(&text, "t").unwrap()));
    // Both idle: file order picks `small`. Keep it busy.
    b.script([Behavior::Stall(Duration::from_millis(800))]);
    let slow_small = {
        let r = r.clone();
        tokio::spawn(async move { chat(&r, "local", "slow").await.unwrap().provider })
    };
    eventually(
        "small has a call in flight",
        Duration::from_secs(5),
        || async { (r.outstanding("small") == 1).then_some(()) },
    )
    .await;
    // `big` (weight 4) takes calls until its load per weight passes small's 1/1.
    a.script(std::iter::repeat_n(
        Behavior::Stall(Duration::from_millis(800)),
        3,
    ));
    let mut busy_big = Vec::new();
    for _ in 0..3 {
        let r = r.clone();
        busy_big.push(tokio::spawn(async move {
            chat(&r, "local", "x").await.unwrap().provider
        }));
    }
    eventually(
        "big has three calls in flight",
        Duration::from_secs(5),
        || async { (r.outstanding("big") == 3).then_some(()) },
    )
    .await;
    // big: 3/4 = 0.75 < small: 1/1, so big still gets the next call.
    assert_eq!(chat(&r, "local", "next").await.unwrap().provider, "big");
    assert_eq!(slow_small.await.unwrap(), "small");
    for t in busy_big {
        assert_eq!(t.await.unwrap(), "big");
    }
}
