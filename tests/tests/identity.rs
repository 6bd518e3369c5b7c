//! Who is calling: API keys from a file, the single token, and OAuth access
//! tokens from an issuer, each becoming the principal and roles a worker
//! sees; and every way in that must fail, failing with a 401 that says why
//! (or a 503 when the issuer's keys cannot be had).

use std::time::Duration;

use reqwest::header::{AUTHORIZATION, HeaderValue, RETRY_AFTER, WWW_AUTHENTICATE};
use rmcp::ServiceExt;
use rmcp::transport::{ConfigureCommandExt, TokioChildProcess};
use serde_json::{Value, json};
use sophia_gateway::GatewayConfig;
use sophia_gateway::identity::keys::{NewKeyArgs, new_key};
use sophia_kit::{Category, Tool, ToolOutput, Worker};
use sophia_tests::mesh::TEST_TOKEN;
use sophia_tests::oauth::{Issuer, TestKey};
use sophia_tests::tools::{call, error_code, text_of, wait_for_tool};
use sophia_tests::{DeadPort, Mesh, Recorder, connect_http};

/// The URL the gateway says clients reach it at; its OAuth resource is
/// `<it>/mcp`. Nothing listens there: it is a name.
const PUBLIC_URL: &str = "http://gateway.test";
const AUDIENCE: &str = "http://gateway.test/mcp";
const METADATA: &str =
    "resource_metadata=\"http://gateway.test/.well-known/oauth-protected-resource/mcp\"";

/// A worker whose `caller_info` answers with the caller it was given.
fn caller_worker() -> Worker {
    Worker::new("caller-info-worker", "1.0.0").tool(
        Tool::new(
            "caller_info",
            Category::CodeGeneration,
            "Says who called, with which roles.",
        )
        .read_only()
        .handler(|call| async move {
            Ok(ToolOutput::json(
                json!({"principal": call.caller.principal, "roles": call.caller.roles}),
            ))
        }),
    )
}

/// NATS, the caller worker, and a gateway configured by `configure`.
async fn mesh_with(configure: impl FnOnce(&mut GatewayConfig)) -> Mesh {
    let mut mesh = Mesh::without_gateway();
    mesh.worker(caller_worker()).await;
    let mut config = mesh.gateway_config();
    configure(&mut config);
    mesh.start_gateway_with(config).await;
    mesh
}

/// OAuth with `issuer`, its JWKS at `jwks_url` (or discovered).
fn with_oauth(config: &mut GatewayConfig, issuer: &Issuer, jwks_url: Option<String>) {
    config.identity.public_url = Some(PUBLIC_URL.into());
    config.identity.oauth_issuer = Some(issuer.url.clone());
    config.identity.oauth_jwks_url = jwks_url;
    config.identity.oauth_scope_roles = vec!["mcp:admin=admin".into()];
}

/// What a worker sees of a real MCP client connecting with `credential`.
async fn caller_seen_with(mesh: &Mesh, credential: &str) -> Value {
    let client = connect_http(&mesh.mcp_url(), credential).await;
    wait_for_tool(&client, "caller_info").await;
    let result = call(&client, "caller_info", json!({})).await;
    result.structured_content.expect("caller_info answers JSON")
}

/// An HTTP answer to an `initialize` POST.
#[derive(Debug)]
struct Answer {
    status: u16,
    challenge: String,
    retry_after: Option<String>,
    body: String,
}

/// POSTs `initialize` to `/mcp` with these `Authorization` header values.
async fn initialize(mesh: &Mesh, authorization: &[&[u8]]) -> Answer {
    initialize_at(&mesh.mcp_url(), authorization).await
}

async fn initialize_at(url: &str, authorization: &[&[u8]]) -> Answer {
    sophia_tests::install_crypto();
    let body = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "x", "version": "0"}}});
    let mut req = reqwest::Client::new()
        .post(url)
        .header("Accept", "application/json, text/event-stream")
        .json(&body);
    for value in authorization {
        req = req.header(
            AUTHORIZATION,
            HeaderValue::from_bytes(value).expect("a header value"),
        );
    }
    let resp = req.send().await.expect("the gateway answers");
    let header = |name| {
        resp.headers()
            .get(name)
            .map(|v: &HeaderValue| String::from_utf8_lossy(v.as_bytes()).into_owned())
    };
    Answer {
        status: resp.status().as_u16(),
        challenge: header(WWW_AUTHENTICATE).unwrap_or_default(),
        retry_after: header(RETRY_AFTER),
        body: resp.text().await.unwrap_or_default(),
    }
}

async fn with_bearer(mesh: &Mesh, credential: &str) -> Answer {
    initialize(mesh, &[format!("Bearer {credential}").as_bytes()]).await
}

/// A refused token: 401, `invalid_token`, the metadata's URL, `why` in the
/// description, and never the token itself.
fn assert_invalid_token(answer: &Answer, token: &str, why: &str) {
    assert_eq!(answer.status, 401, "{why}: {answer:?}");
    assert!(
        answer.challenge.contains("error=\"invalid_token\""),
        "{why}: {answer:?}"
    );
    assert!(answer.challenge.contains(METADATA), "{why}: {answer:?}");
    assert!(
        answer.body.contains(why),
        "the body says {why:?}: {answer:?}"
    );
    let secret = token.rsplit('.').next().unwrap_or(token);
    assert!(
        secret.len() < 8 || !answer.body.contains(secret) && !answer.challenge.contains(secret),
        "the answer echoes the token: {answer:?}"
    );
}

fn key_for(principal: &str, roles: &[&str], expires: Option<&str>) -> (String, String) {
    let made = new_key(&NewKeyArgs {
        principal: principal.into(),
        roles: roles.iter().map(|r| r.to_string()).collect(),
        expires: expires.map(|e| e.parse().expect("a date")),
        id: None,
    })
    .expect("a key");
    (made.key, made.entry)
}

#[tokio::test]
async fn api_keys_from_a_file_reach_workers_as_their_principals_and_roles() {
    let (alice, alice_entry) = key_for("alice", &["analyst"], None);
    let (bob, bob_entry) = key_for("bob", &["operator", "admin"], Some("2099-01-01T00:00:00Z"));
    let (carol, carol_entry) = key_for("carol", &["analyst"], Some("2020-01-01T00:00:00Z"));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("keys.toml");
    std::fs::write(&file, [alice_entry, bob_entry, carol_entry].join("\n")).unwrap();
    let mesh = mesh_with(|c| c.identity.keys_file = Some(file)).await;

    let seen = caller_seen_with(&mesh, &alice).await;
    assert_eq!(seen, json!({"principal": "alice", "roles": ["analyst"]}));
    let seen = caller_seen_with(&mesh, &bob).await;
    assert_eq!(
        seen,
        json!({"principal": "bob", "roles": ["operator", "admin"]})
    );
    // The single token still works beside the file, with no roles by default.
    let seen = caller_seen_with(&mesh, TEST_TOKEN).await;
    assert_eq!(seen, json!({"principal": "local", "roles": []}));

    let expired = with_bearer(&mesh, &carol).await;
    assert_eq!(expired.status, 401, "{expired:?}");
    assert!(
        expired.body.contains("expired at 2020-01-01T00:00:00Z"),
        "{expired:?}"
    );
    assert!(
        expired.challenge.contains("error=\"invalid_token\""),
        "{expired:?}"
    );
    let wrong = format!("{}x", &alice[..alice.len() - 1]);
    let refused = with_bearer(&mesh, &wrong).await;
    assert_eq!(refused.status, 401, "{refused:?}");
    assert!(
        refused.body.contains("not a key of this gateway"),
        "{refused:?}"
    );
    assert!(!refused.body.contains(&wrong) && !refused.challenge.contains(&wrong));
    // Without OAuth there is no metadata to point to, and none is served.
    assert!(
        !refused.challenge.contains("resource_metadata"),
        "{refused:?}"
    );
    let metadata = reqwest::get(format!(
        "{}/.well-known/oauth-protected-resource",
        mesh.http_base()
    ))
    .await
    .unwrap();
    assert_eq!(metadata.status().as_u16(), 404);
}

#[tokio::test]
async fn under_a_policy_a_key_and_a_token_get_what_their_roles_allow() {
    let (alice, alice_entry) = key_for("alice", &["reader"], None);
    let key = TestKey::es256("k1");
    let issuer = Issuer::start(&[&key]).await;
    let dir = tempfile::tempdir().unwrap();
    let (keys, policy) = (dir.path().join("keys.toml"), dir.path().join("policy.toml"));
    std::fs::write(&keys, alice_entry).unwrap();
    std::fs::write(
        &policy,
        "[roles.reader]\nallow = [{ read_only = true }]\n\n[roles.operator]\nallow = [{ tools = [\"*\"] }]\n",
    )
    .unwrap();
    let mut mesh = Mesh::without_gateway();
    mesh.policy = Some(policy);
    mesh.worker(caller_worker()).await;
    let wipe = Tool::new("wipe", Category::Infrastructure, "Wipes things.")
        .destructive()
        .handler(|_| async { Ok(ToolOutput::text("wiped")) });
    mesh.worker(Worker::new("wipe-worker", "1.0.0").tool(wipe))
        .await;
    let mut config = mesh.gateway_config();
    config.identity.keys_file = Some(keys);
    with_oauth(&mut config, &issuer, Some(issuer.jwks_url()));
    mesh.start_gateway_with(config).await;

    let mut claims = issuer.claims("bob", AUDIENCE);
    claims["roles"] = json!(["operator"]);
    let bob = connect_http(&mesh.mcp_url(), &key.sign(&claims)).await;
    wait_for_tool(&bob, "wipe").await;
    assert_eq!(text_of(&call(&bob, "wipe", json!({})).await), "wiped");

    let alice = connect_http(&mesh.mcp_url(), &alice).await;
    wait_for_tool(&alice, "caller_info").await;
    let names: Vec<String> = alice
        .list_all_tools()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name.to_string())
        .collect();
    assert_eq!(
        names,
        ["caller_info"],
        "a reader sees the read-only tool only"
    );
    let refused = call(&alice, "wipe", json!({})).await;
    assert_eq!(error_code(&refused).as_deref(), Some("permission_denied"));
    assert!(
        text_of(&refused).contains("alice (roles: reader)"),
        "{}",
        text_of(&refused)
    );
}

#[tokio::test]
async fn over_stdio_the_caller_is_the_configured_principal_with_its_roles() {
    let mut mesh = Mesh::without_gateway();
    mesh.worker(caller_worker()).await;
    let command = tokio::process::Command::new(sophia_tests::procs::binary("sophia-gateway"))
        .configure(|c| {
            c.arg("--stdio")
                .env_clear()
                .env("NATS_URL", mesh.nats.url())
                .env("SOPHIA_GATEWAY_PRINCIPAL", "ops-bot")
                .env("SOPHIA_GATEWAY_ROLES", "operator, reader");
        });
    let (transport, _stderr) = TokioChildProcess::builder(command)
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn sophia-gateway --stdio");
    let client = Recorder::default()
        .serve(transport)
        .await
        .expect("initialize over stdio");
    wait_for_tool(&client, "caller_info").await;
    let seen = call(&client, "caller_info", json!({}))
        .await
        .structured_content;
    assert_eq!(
        seen,
        Some(json!({"principal": "ops-bot", "roles": ["operator", "reader"]}))
    );
}

#[tokio::test]
async fn keys_new_prints_a_key_that_a_gateway_with_its_entry_accepts() {
    let out = std::process::Command::new(sophia_tests::procs::binary("sophia-gateway"))
        .args([
            "keys",
            "new",
            "--principal",
            "dana",
            "--role",
            "analyst",
            "--role",
            "viewer",
        ])
        .args(["--expires", "2099-01-01T00:00:00Z"])
        .env_clear()
        .output()
        .expect("run sophia-gateway keys new");
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let key = stdout.lines().next().unwrap().to_owned();
    assert!(
        key.starts_with("sk_sophia_") && key.len() == "sk_sophia_".len() + 43,
        "{stdout}"
    );
    assert_eq!(
        stdout.matches(&key).count(),
        1,
        "the key is printed once: {stdout}"
    );
    assert!(
        stdout.contains("expires = \"2099-01-01T00:00:00Z\""),
        "{stdout}"
    );

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("keys.toml");
    std::fs::write(&file, stdout.lines().skip(1).collect::<Vec<_>>().join("\n")).unwrap();
    let mesh = mesh_with(|c| {
        c.token = None;
        c.identity.keys_file = Some(file);
    })
    .await;
    let seen = caller_seen_with(&mesh, &key).await;
    assert_eq!(
        seen,
        json!({"principal": "dana", "roles": ["analyst", "viewer"]})
    );
    assert_eq!(
        with_bearer(&mesh, TEST_TOKEN).await.status,
        401,
        "no token configured"
    );
}

/// Runs the gateway binary with `envs` (NATS nowhere: it must stop before
/// needing it) and returns its exit status and stderr.
async fn start_up_failure(envs: &[(&str, String)]) -> (std::process::ExitStatus, String) {
    let dead = DeadPort::new();
    let mut cmd = tokio::process::Command::new(sophia_tests::procs::binary("sophia-gateway"));
    cmd.env_clear()
        .env("NATS_URL", format!("nats://{}", dead.addr()))
        .env("SOPHIA_GATEWAY_ADDR", "127.0.0.1:0")
        .envs(envs.iter().map(|(k, v)| (k, v)))
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(30), cmd.output())
        .await
        .expect("the gateway exits at start-up")
        .expect("run sophia-gateway");
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn a_configuration_mistake_stops_start_up_with_one_line_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let typo = dir.path().join("typo.toml");
    std::fs::write(&typo, "[[keys]]\nprincipal = \"erin\"\nsha265 = \"00\"\n").unwrap();
    let bad_hash = dir.path().join("bad-hash.toml");
    std::fs::write(
        &bad_hash,
        "[[keys]]\nprincipal = \"erin\"\nsha256 = \"00ff\"\n",
    )
    .unwrap();
    let cases = [
        (
            vec![("SOPHIA_GATEWAY_KEYS", typo.display().to_string())],
            format!(
                "keys file {}: line 3, column 1: unknown field `sha265`",
                typo.display()
            ),
        ),
        (
            vec![("SOPHIA_GATEWAY_KEYS", bad_hash.display().to_string())],
            format!(
                "keys file {}: line 3, column 10: sha256 must be 64 hex digits",
                bad_hash.display()
            ),
        ),
        (
            vec![("SOPHIA_OAUTH_ISSUER", "https://issuer.test".into())],
            "SOPHIA_GATEWAY_PUBLIC_URL is not set".into(),
        ),
        (
            vec![
                ("SOPHIA_GATEWAY_TOKEN", "t".into()),
                ("SOPHIA_OAUTH_SCOPE_ROLES", "mcp:admin".into()),
            ],
            "SOPHIA_OAUTH_SCOPE_ROLES: `mcp:admin` is not scope=role".into(),
        ),
    ];
    for (envs, expected) in cases {
        let (status, stderr) = start_up_failure(&envs).await;
        assert!(!status.success(), "{envs:?} must stop start-up: {stderr}");
        let line = stderr
            .lines()
            .find(|l| l.contains(&expected))
            .unwrap_or_else(|| panic!("no line says {expected:?}:\n{stderr}"));
        assert!(line.starts_with("Error: "), "{line}");
    }
}

#[tokio::test]
async fn an_oauth_token_names_the_caller_by_sub_with_roles_from_its_claims() {
    let (es, ed, rs) = (
        TestKey::es256("es"),
        TestKey::ed25519("ed"),
        TestKey::rs256("rs"),
    );
    let issuer = Issuer::start(&[&es, &ed, &rs]).await;
    // No JWKS URL: the gateway discovers it from the issuer's metadata.
    let mesh = mesh_with(|c| with_oauth(c, &issuer, None)).await;

    let mut claims = issuer.claims("alice@example.com", AUDIENCE);
    claims["roles"] = json!(["analyst"]);
    claims["groups"] = json!("ops");
    claims["scope"] = json!("openid mcp:admin");
    let seen = caller_seen_with(&mesh, &es.sign(&claims)).await;
    assert_eq!(
        seen,
        json!({"principal": "alice@example.com", "roles": ["admin", "analyst", "ops"]})
    );
    for key in [&ed, &rs] {
        let answer = with_bearer(&mesh, &key.sign(&issuer.claims("bob", AUDIENCE))).await;
        assert_eq!(answer.status, 200, "{:?}: {answer:?}", key.alg);
    }
    // The static token still works beside OAuth.
    assert_eq!(with_bearer(&mesh, TEST_TOKEN).await.status, 200);
}

#[tokio::test]
async fn every_bad_token_gets_401_invalid_token_pointing_to_the_metadata() {
    let key = TestKey::es256("k1");
    let stranger = TestKey::es256("k1"); // same kid, another key
    let issuer = Issuer::start(&[&key]).await;
    let mesh = mesh_with(|c| with_oauth(c, &issuer, Some(issuer.jwks_url()))).await;
    let good = issuer.claims("alice", AUDIENCE);
    let now = jsonwebtoken::get_current_timestamp();
    let with = |patch: Value| {
        let mut c = good.clone();
        for (k, v) in patch.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    };
    let b64 = |v: Value| {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let valid = key.sign(&good);
    let (head, rest) = valid.split_once('.').unwrap();
    let (payload, signature) = rest.split_once('.').unwrap();
    let tampered_payload = format!("{head}.{}.{signature}", b64(with(json!({"sub": "root"}))));
    let flipped: String = signature
        .char_indices()
        .map(|(i, c)| {
            if i == 10 {
                if c == 'A' { 'B' } else { 'A' }
            } else {
                c
            }
        })
        .collect();
    let cases = [
        (
            key.sign(&with(json!({"aud": "http://elsewhere.test/mcp"}))),
            "audience (aud) must be http://gateway.test/mcp",
        ),
        (
            key.sign(&with(json!({"iss": "http://evil.test"}))),
            "issuer (iss) is not",
        ),
        (key.sign(&with(json!({"exp": now - 120}))), "has expired"),
        (key.sign(&with(json!({"nbf": now + 600}))), "not valid yet"),
        (
            key.sign_as("k-unknown", &good),
            "no signing key `k-unknown`",
        ),
        (stranger.sign(&good), "signature does not verify"),
        (tampered_payload, "signature does not verify"),
        (
            format!("{head}.{payload}.{flipped}"),
            "signature does not verify",
        ),
        (
            format!("{}.{payload}.", b64(json!({"alg": "none", "typ": "JWT"}))),
            "`none` is not accepted",
        ),
        (
            format!(
                "{}.{payload}.{signature}",
                b64(json!({"alg": "HS256", "kid": "k1"}))
            ),
            "`HS256` is not accepted",
        ),
        (
            key.sign(&json!({"iss": issuer.url, "aud": AUDIENCE, "exp": now + 300})),
            "no `sub` claim",
        ),
        (
            format!(
                "{}.{payload}.{signature}",
                b64(json!({"alg": "RS256", "kid": "k1"}))
            ),
            "the issuer's key is for",
        ),
    ];
    for (token, why) in &cases {
        assert_invalid_token(&with_bearer(&mesh, token).await, token, why);
    }
    assert_eq!(
        with_bearer(&mesh, &valid).await.status,
        200,
        "the good token still works"
    );
    // A token for another resource of the gateway (a profile) is not for /mcp.
    let profile_token = key.sign(&with(json!({"aud": format!("{AUDIENCE}/ask")})));
    assert_eq!(with_bearer(&mesh, &profile_token).await.status, 401);
    let at_profile = initialize_at(
        &format!("{}/ask", mesh.mcp_url()),
        &[format!("Bearer {profile_token}").as_bytes()],
    )
    .await;
    assert_ne!(
        at_profile.status, 401,
        "a profile's own audience is accepted there: {at_profile:?}"
    );
}

#[tokio::test]
async fn a_key_rotated_in_at_the_issuer_is_used_without_a_restart() {
    let (old, new) = (TestKey::es256("2025-old"), TestKey::ed25519("2026-new"));
    let issuer = Issuer::start(&[&old]).await;
    let mesh = mesh_with(|c| {
        with_oauth(c, &issuer, Some(issuer.jwks_url()));
        c.identity.oauth_jwks_refetch_ms = 0;
    })
    .await;
    let claims = issuer.claims("alice", AUDIENCE);
    assert_eq!(with_bearer(&mesh, &old.sign(&claims)).await.status, 200);

    issuer.publish(&[&new]);
    let seen = caller_seen_with(&mesh, &new.sign(&claims)).await;
    assert_eq!(seen["principal"], "alice");
    // The withdrawn key is gone from the refetched set.
    let old_token = old.sign(&claims);
    assert_invalid_token(
        &with_bearer(&mesh, &old_token).await,
        &old_token,
        "no signing key `2025-old`",
    );
}

#[tokio::test]
async fn made_up_key_ids_refetch_the_jwks_at_most_once_per_interval() {
    let key = TestKey::es256("real");
    let issuer = Issuer::start(&[&key]).await;
    let mesh = mesh_with(|c| with_oauth(c, &issuer, Some(issuer.jwks_url()))).await;
    let claims = issuer.claims("mallory", AUDIENCE);
    assert_eq!(with_bearer(&mesh, &key.sign(&claims)).await.status, 200);
    for i in 0..20 {
        let token = key.sign_as(&format!("made-up-{i}"), &claims);
        assert_eq!(with_bearer(&mesh, &token).await.status, 401);
    }
    // The first token fetched; the made-up ones all came within 10 s of it.
    assert_eq!(issuer.fetches(), 1);
}

#[tokio::test]
async fn an_unreachable_or_broken_jwks_is_a_503_but_cached_keys_keep_working() {
    let key = TestKey::es256("k1");
    let issuer = Issuer::start(&[&key]).await;
    let claims = issuer.claims("alice", AUDIENCE);

    let dead = DeadPort::new();
    let down =
        mesh_with(|c| with_oauth(c, &issuer, Some(format!("http://{}/jwks", dead.addr())))).await;
    let answer = with_bearer(&down, &key.sign(&claims)).await;
    assert_eq!(answer.status, 503, "{answer:?}");
    assert!(
        answer.body.contains("signing keys could not be fetched")
            && answer.body.contains("could not connect"),
        "{answer:?}"
    );
    assert_eq!(answer.retry_after.as_deref(), Some("10"));

    let mesh = mesh_with(|c| {
        with_oauth(c, &issuer, Some(issuer.jwks_url()));
        c.identity.oauth_jwks_refetch_ms = 0;
    })
    .await;
    assert_eq!(with_bearer(&mesh, &key.sign(&claims)).await.status, 200);
    issuer.serve_garbage();
    let answer = with_bearer(&mesh, &key.sign_as("k2", &claims)).await;
    assert_eq!(answer.status, 503, "{answer:?}");
    assert!(answer.body.contains("is not JSON"), "{answer:?}");
    assert_eq!(
        with_bearer(&mesh, &key.sign(&claims)).await.status,
        200,
        "the cached key still works"
    );

    let broken = Issuer::start(&[]).await;
    broken.serve_garbage();
    let fresh = mesh_with(|c| with_oauth(c, &broken, Some(broken.jwks_url()))).await;
    let answer = with_bearer(&fresh, &key.sign(&broken.claims("alice", AUDIENCE))).await;
    assert_eq!(answer.status, 503, "{answer:?}");
}

#[tokio::test]
async fn protected_resource_metadata_is_served_without_auth() {
    let key = TestKey::es256("k1");
    let issuer = Issuer::start(&[&key]).await;
    let mesh = mesh_with(|c| {
        with_oauth(c, &issuer, Some(issuer.jwks_url()));
        c.identity.oauth_scopes = vec!["mcp:tools".into(), "mcp:admin".into()];
    })
    .await;
    for (path, resource) in [
        ("", AUDIENCE.to_owned()),
        ("/mcp", AUDIENCE.to_owned()),
        ("/mcp/ask", format!("{AUDIENCE}/ask")),
    ] {
        let url = format!(
            "{}/.well-known/oauth-protected-resource{path}",
            mesh.http_base()
        );
        let resp = reqwest::get(&url).await.unwrap();
        assert_eq!(resp.status().as_u16(), 200, "{url}");
        let doc: Value = resp.json().await.unwrap();
        assert_eq!(doc["resource"], resource, "{doc}");
        assert_eq!(doc["authorization_servers"], json!([issuer.url]), "{doc}");
        assert_eq!(doc["bearer_methods_supported"], json!(["header"]), "{doc}");
        assert_eq!(
            doc["scopes_supported"],
            json!(["mcp:tools", "mcp:admin"]),
            "{doc}"
        );
    }
    // A client without credentials learns where to look, and nothing else.
    let answer = initialize(&mesh, &[]).await;
    assert_eq!(answer.status, 401);
    assert!(
        answer
            .challenge
            .starts_with("Bearer realm=\"sophia-gateway\""),
        "{answer:?}"
    );
    assert!(answer.challenge.contains(METADATA), "{answer:?}");
    assert!(
        answer.challenge.contains("scope=\"mcp:tools mcp:admin\""),
        "{answer:?}"
    );
    assert!(
        !answer.challenge.contains("error="),
        "RFC 6750 3.1: no error without credentials: {answer:?}"
    );
}

#[tokio::test]
async fn malformed_authorization_headers_get_a_clear_401_and_the_gateway_keeps_serving() {
    let key = TestKey::es256("k1");
    let issuer = Issuer::start(&[&key]).await;
    let mesh = mesh_with(|c| with_oauth(c, &issuer, Some(issuer.jwks_url()))).await;
    let long = format!("Bearer {}", "a".repeat(20 * 1024));
    let huge = format!("Bearer {}", "eyJ".repeat(350 * 1024));
    let cases: [(&[&[u8]], &str); 8] = [
        (&[b"Basic dXNlcjpwYXNz"], "use the Bearer scheme"),
        (&[b"Bearer"], "use the Bearer scheme"),
        (&[b"Bearer\tabc"], "use the Bearer scheme"),
        (&[b"Bearer two words"], "empty or has spaces"),
        (&[b"Bearer sk_sophia_\xff\xfe"], "not ASCII"),
        (&[b"Bearer a", b"Bearer b"], "one Authorization header"),
        (&[long.as_bytes()], "longer than 16384 bytes"),
        (&[b"Bearer a.b.c"], "not base64url"),
    ];
    for (headers, why) in cases {
        let answer = initialize(&mesh, headers).await;
        assert_eq!(answer.status, 401, "{why}: {answer:?}");
        assert!(answer.body.contains(why), "{why}: {answer:?}");
        assert!(
            answer.challenge.contains("error=\"invalid_"),
            "{why}: {answer:?}"
        );
        assert!(answer.challenge.contains(METADATA), "{why}: {answer:?}");
    }
    // About 1 MB: hyper refuses the headers (431) before the gateway reads them.
    let answer = initialize(&mesh, &[huge.as_bytes()]).await;
    assert!([401, 431].contains(&answer.status), "{answer:?}");
    // The scheme is case-insensitive, and the gateway still serves.
    let token = key.sign(&issuer.claims("alice", AUDIENCE));
    let answer = initialize(&mesh, &[format!("bearer {token}").as_bytes()]).await;
    assert_eq!(answer.status, 200, "{answer:?}");
}
