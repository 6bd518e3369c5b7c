//! The mesh console's HTTP face, as a browser or a script meets it: every
//! route answers 401 without valid credentials (the page's 401 is the
//! login form), the login sets an `HttpOnly`, `SameSite=Strict` cookie, a
//! POST from a foreign `Origin` gets 403, a browser POST without the CSRF
//! token gets 403, and the state API shows the live mesh and a failed
//! call. The browser itself drives the console in `console.rs`.

use reqwest::StatusCode;
use reqwest::header::{CONTENT_SECURITY_POLICY, COOKIE, LOCATION, ORIGIN, SET_COOKIE};
use serde_json::{Value, json};
use sophia_kit::{Category, Tool, ToolOutput, WireError, Worker};
use sophia_tests::mesh::TEST_TOKEN;
use sophia_tests::pulumi::{self, Setup};
use sophia_tests::tools::{call, wait_for_tool};
use sophia_tests::{Mesh, eventually};

/// Every console route, with its method.
const ROUTES: [(&str, &str); 11] = [
    ("GET", "/console"),
    ("GET", "/console/"),
    ("GET", "/console/app.js"),
    ("GET", "/console/app.css"),
    ("GET", "/console/api/session"),
    ("GET", "/console/api/state"),
    ("GET", "/console/api/events"),
    ("GET", "/console/no-such-page"),
    ("POST", "/console/api/decide"),
    ("POST", "/console/logout"),
    ("POST", "/console/login"),
];

/// The stand-in `pulumi` CLI (`src/bin/pulumi.rs`).
const STANDIN: &str = env!("CARGO_BIN_EXE_pulumi");

const FORM: &str = "application/x-www-form-urlencoded";

/// The login form's body, as a browser sends it.
fn login_form(credential: &str) -> String {
    let encoded: String = credential
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect();
    format!("credential={encoded}")
}

fn http() -> reqwest::Client {
    sophia_tests::install_crypto();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// `/console/api/state` as the holder of `bearer` sees it.
async fn state_as(http: &reqwest::Client, base: &str, bearer: &str) -> Value {
    http.get(format!("{base}/console/api/state"))
        .bearer_auth(bearer)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Approves preview `id` through the console's API as the holder of `bearer`.
async fn approve_as(http: &reqwest::Client, base: &str, bearer: &str, id: &Value) -> StatusCode {
    http.post(format!("{base}/console/api/decide"))
        .bearer_auth(bearer)
        .json(&json!({"kind": "preview", "id": id, "decision": "approve"}))
        .send()
        .await
        .unwrap()
        .status()
}

/// A new API key for `principal` with `roles`.
fn key(
    principal: &str,
    roles: &[&str],
    expires: Option<chrono::DateTime<chrono::Utc>>,
) -> sophia_gateway::identity::keys::NewKey {
    sophia_gateway::identity::keys::new_key(&sophia_gateway::identity::keys::NewKeyArgs {
        principal: principal.into(),
        roles: roles.iter().map(|r| r.to_string()).collect(),
        expires,
        id: None,
    })
    .expect("a key")
}

/// `/console/api/session` for the login `cookie`.
async fn session(http: &reqwest::Client, base: &str, cookie: &str) -> Value {
    http.get(format!("{base}/console/api/session"))
        .header(COOKIE, cookie)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// A worker with one tool that always fails, saying so with markup in it.
fn failing_worker() -> Worker {
    Worker::new("failing-worker", "2.3.4").tool(
        Tool::new("always_fails", Category::CodeGeneration, "Fails.")
            .read_only()
            .handler(|_| async move {
                Err::<ToolOutput, _>(WireError::failed("<b>it broke</b> on purpose"))
            }),
    )
}

#[tokio::test]
async fn without_valid_credentials_every_console_route_answers_401() {
    let mesh = Mesh::start().await;
    let base = mesh.http_base();
    let http = http();
    for (method, path) in ROUTES {
        for credential in [None, Some("Bearer not-a-key"), Some("cookie")] {
            let mut req = http.request(method.parse().unwrap(), format!("{base}{path}"));
            req = match credential {
                Some("cookie") => req.header(COOKIE, "sophia_console=sk_sophia_wrong"),
                Some(bearer) => req.header("authorization", bearer),
                None => req,
            };
            if method == "POST" {
                req = req.header(ORIGIN, base.clone());
                if path == "/console/login" {
                    req = req
                        .header("content-type", FORM)
                        .body(login_form("sk_sophia_wrong"));
                }
            }
            let r = req.send().await.unwrap();
            assert_eq!(
                r.status(),
                StatusCode::UNAUTHORIZED,
                "{method} {path} with {credential:?}"
            );
        }
    }
    // The page's 401 is the login form, saying what to do.
    let page = http.get(format!("{base}/console")).send().await.unwrap();
    assert!(
        page.headers()[CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap()
            .contains("default-src 'none'")
    );
    let body = page.text().await.unwrap();
    assert!(
        body.contains("<form method=\"post\" action=\"/console/login\""),
        "{body}"
    );
}

#[tokio::test]
async fn signing_in_keeps_the_credential_in_a_strict_cookie_that_then_opens_the_console() {
    let mesh = Mesh::start().await;
    let base = mesh.http_base();
    let http = http();
    let r = http
        .post(format!("{base}/console/login"))
        .header(ORIGIN, base.clone())
        .header("content-type", FORM)
        .body(login_form(TEST_TOKEN))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()[LOCATION], "/console");
    let cookie = r.headers()[SET_COOKIE].to_str().unwrap().to_owned();
    for part in ["HttpOnly", "SameSite=Strict", "Path=/console"] {
        assert!(cookie.contains(part), "{cookie}");
    }
    let pair = cookie.split(';').next().unwrap().to_owned();
    let page = http
        .get(format!("{base}/console"))
        .header(COOKIE, &pair)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(
        page.text()
            .await
            .unwrap()
            .contains("<script src=\"/console/app.js\"")
    );
    let session = session(&http, &base, &pair).await;
    assert_eq!(session["principal"], "local");
    assert_eq!(session["csrf"].as_str().unwrap().len(), 64);
    // A login from a foreign page is refused before the credential is looked at.
    let r = http
        .post(format!("{base}/console/login"))
        .header(ORIGIN, "http://evil.example")
        .header("content-type", FORM)
        .body(login_form(TEST_TOKEN))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn posts_need_an_allowed_origin_and_from_a_browser_the_csrf_token() {
    let mesh = Mesh::start().await;
    let base = mesh.http_base();
    let http = http();
    let cookie = format!("sophia_console={TEST_TOKEN}");
    let csrf = session(&http, &base, &cookie).await["csrf"]
        .as_str()
        .unwrap()
        .to_owned();
    let decide = json!({"kind": "action", "id": "a1", "decision": "reject"});
    let post = |origin: Option<&str>, token: Option<&str>, by_cookie: bool| {
        let mut req = http
            .post(format!("{base}/console/api/decide"))
            .json(&decide);
        req = if by_cookie {
            req.header(COOKIE, &cookie)
        } else {
            req.bearer_auth(TEST_TOKEN)
        };
        if let Some(o) = origin {
            req = req.header(ORIGIN, o);
        }
        if let Some(t) = token {
            req = req.header("x-sophia-csrf", t);
        }
        req.send()
    };
    let wrong = "0".repeat(64);
    let cases = [
        (
            Some("http://evil.example"),
            Some(csrf.as_str()),
            true,
            StatusCode::FORBIDDEN,
        ),
        (
            Some("http://evil.example"),
            None,
            false,
            StatusCode::FORBIDDEN,
        ),
        (
            Some("null"),
            Some(csrf.as_str()),
            true,
            StatusCode::FORBIDDEN,
        ),
        (None, Some(csrf.as_str()), true, StatusCode::FORBIDDEN),
        (Some(base.as_str()), None, true, StatusCode::FORBIDDEN),
        (
            Some(base.as_str()),
            Some(wrong.as_str()),
            true,
            StatusCode::FORBIDDEN,
        ),
        // The page's own POST, and a script's with the bearer header.
        (
            Some(base.as_str()),
            Some(csrf.as_str()),
            true,
            StatusCode::ACCEPTED,
        ),
        (None, None, false, StatusCode::ACCEPTED),
    ];
    for (origin, token, by_cookie, want) in cases {
        let r = post(origin, token, by_cookie).await.unwrap();
        assert_eq!(
            r.status(),
            want,
            "origin {origin:?}, csrf {token:?}, cookie {by_cookie}"
        );
    }
    let malformed = http
        .post(format!("{base}/console/api/decide"))
        .bearer_auth(TEST_TOKEN)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn the_state_shows_live_replicas_and_a_failed_call_with_its_trace() {
    let mut mesh = Mesh::start().await;
    mesh.worker(failing_worker()).await;
    let client = mesh.client().await;
    wait_for_tool(&client, "always_fails").await;
    let failed = call(&client, "always_fails", json!({})).await;
    assert_eq!(failed.is_error, Some(true));
    let base = mesh.http_base();
    let http = http();
    let state = state_as(&http, &base, TEST_TOKEN).await;
    let replica = state["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["service"] == "failing-worker")
        .map(|s| s["replicas"][0].clone())
        .expect("the failing worker's replica is listed");
    assert_eq!(replica["version"], "2.3.4");
    assert!(!replica["host"].as_str().unwrap().is_empty());
    assert!(replica["started_at_ms"].as_u64().unwrap() > 0);
    assert_eq!(state["bus"]["connected"], true);
    assert!(state["bus"]["server_name"].is_string());
    let error = &state["traffic"]["errors"][0];
    assert_eq!(error["tool"], "always_fails");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("<b>it broke</b>")
    );
    let row = state["traffic"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["tool"] == "always_fails")
        .unwrap();
    assert_eq!(
        (row["calls"].as_u64(), row["errors"].as_u64()),
        (Some(1), Some(1))
    );
    // The stream sends the same state, live.
    let mut events = http
        .get(format!("{base}/console/api/events"))
        .bearer_auth(TEST_TOKEN)
        .send()
        .await
        .unwrap();
    let first = tokio::time::timeout(std::time::Duration::from_secs(10), events.chunk())
        .await
        .expect("a state event within 10 s")
        .unwrap()
        .expect("the stream is open");
    let text = String::from_utf8_lossy(&first);
    assert!(text.starts_with("event: state"), "{text}");
}

#[tokio::test]
async fn an_open_console_is_signed_out_when_its_key_expires() {
    let made = key(
        "alice",
        &[],
        Some(chrono::Utc::now() + chrono::Duration::seconds(2)),
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("keys.toml");
    std::fs::write(&file, made.entry).unwrap();
    let mut mesh = Mesh::without_gateway();
    let mut config = mesh.gateway_config();
    config.identity.keys_file = Some(file);
    mesh.start_gateway_with(config).await;
    let base = mesh.http_base();
    let http = http();
    let mut events = http
        .get(format!("{base}/console/api/events"))
        .bearer_auth(&made.key)
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), StatusCode::OK);
    // The stream goes on until the key has expired, then says so and ends.
    let mut seen = String::new();
    while let Some(chunk) = tokio::time::timeout(std::time::Duration::from_secs(30), events.chunk())
        .await
        .expect("the stream ends within 30 s of the key's expiry")
        .unwrap()
    {
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    let last = seen.trim_end().rsplit("\n\n").next().unwrap();
    assert!(last.starts_with("event: signed_out"), "{last}");
    assert!(last.contains("expired"), "{last}");
    assert!(seen.contains("event: state"), "it was live before");
    let again = http
        .get(format!("{base}/console/api/session"))
        .bearer_auth(&made.key)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_decision_is_the_persons_call_and_their_policy_applies() {
    // Alice (operator) may preview and apply; Bob (viewer) may only read.
    let (alice, bob) = (
        key("alice", &["operator"], None),
        key("bob", &["viewer"], None),
    );
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys.toml");
    std::fs::write(&keys, format!("{}\n{}", alice.entry, bob.entry)).unwrap();
    let policy = dir.path().join("policy.toml");
    std::fs::write(
        &policy,
        "[roles.viewer]\nallow = [{ read_only = true }]\n\
         [roles.operator]\nallow = [{ tools = [\"pulumi_*\"] }]\n",
    )
    .unwrap();
    let mut mesh = Mesh::without_gateway();
    mesh.policy = Some(policy);
    let mut config = mesh.gateway_config();
    config.identity.keys_file = Some(keys);
    mesh.start_gateway_with(config).await;
    let setup = Setup::new(1);
    let _pulumi = pulumi::replica(&mesh, setup.args(STANDIN, 30_000)).await;
    let as_alice = sophia_tests::connect_http(&mesh.mcp_url(), &alice.key).await;
    wait_for_tool(&as_alice, "pulumi_preview").await;
    let made = call(
        &as_alice,
        "pulumi_preview",
        json!({"project": "app", "stack": "dev"}),
    )
    .await;
    assert_eq!(made.is_error, Some(false));
    let id = made.structured_content.unwrap()["preview_id"].clone();

    // Bob sees the preview waiting, and his approval is refused by the policy.
    let base = mesh.http_base();
    let http = http();
    let listed = state_as(&http, &base, &bob.key).await;
    assert_eq!(
        listed["work"]["previews"]["items"][0]["preview_id"], id,
        "{listed}"
    );
    assert_eq!(
        approve_as(&http, &base, &bob.key, &id).await,
        StatusCode::ACCEPTED
    );
    let decision = eventually("bob's decision ends", sophia_tests::tools::WAIT, || async {
        let d = state_as(&http, &base, &bob.key).await["decisions"][0].clone();
        (d["state"] != "running").then_some(d)
    })
    .await;
    assert_eq!(decision["state"], "failed", "{decision}");
    assert_eq!(decision["by"], "bob", "{decision}");
    assert!(
        setup.command_lines().lines().all(|l| !l.starts_with("up ")),
        "nothing applied"
    );
    let refusals = mesh.audit_records(1).await;
    assert!(
        refusals.iter().any(|r| r["kind"] == "refusal"
            && r["principal"] == "bob"
            && r["tool"] == "pulumi_up"
            && r["via"] == "console"),
        "{refusals:?}"
    );

    // Alice's approval from the console applies it, recorded as hers.
    assert_eq!(
        approve_as(&http, &base, &alice.key, &id).await,
        StatusCode::ACCEPTED
    );
    let job = eventually(
        "alice's job succeeds",
        sophia_tests::tools::WAIT,
        || async {
            let jobs =
                state_as(&http, &base, &alice.key).await["work"]["pulumi_jobs"]["items"].clone();
            (jobs[0]["state"] == "succeeded").then(|| jobs[0].clone())
        },
    )
    .await;
    assert_eq!(job["confirmed_by"], "alice", "{job}");
    assert_eq!(job["previewed_by"], "alice", "{job}");
}
