//! A stand-in OAuth authorization server on a loopback port: its metadata
//! (RFC 8414) and its JWKS, which a test can rotate, break or take down, and
//! access tokens signed with ES256, EdDSA or RS256 keys.
//!
//! ```no_run
//! # async fn demo() {
//! use sophia_tests::oauth::{Issuer, TestKey};
//! let key = TestKey::es256("k1");
//! let issuer = Issuer::start(&[&key]).await;
//! let token = key.sign(&issuer.claims("alice", "http://gateway.test/mcp"));
//! # }
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine as _;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

/// The RSA key the RS256 tokens are signed with (a committed test key).
const RSA_TEST_KEY: &str = include_str!("../fixtures/oauth/rs256-test-key.pem");

/// A signing key of the stand-in issuer.
pub struct TestKey {
    /// Its key id (`kid`).
    pub kid: String,
    /// Its algorithm.
    pub alg: Algorithm,
    key: EncodingKey,
    /// Its public half, as the JWKS lists it.
    pub jwk: Value,
}

impl TestKey {
    /// A fresh ECDSA P-256 key.
    pub fn es256(kid: &str) -> Self {
        let pair = rcgen::KeyPair::generate().expect("a P-256 key");
        Self::new(
            kid,
            Algorithm::ES256,
            EncodingKey::from_ec_der(&pair.serialize_der()),
        )
    }

    /// A fresh Ed25519 key.
    pub fn ed25519(kid: &str) -> Self {
        // PKCS#8 v1 for Ed25519: a fixed 16-byte prefix, then the 32-byte seed
        // (random enough for a test key: two v4 UUIDs).
        let mut der = vec![
            0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22,
            0x04, 0x20,
        ];
        der.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
        der.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
        Self::new(kid, Algorithm::EdDSA, EncodingKey::from_ed_der(&der))
    }

    /// The committed RSA test key (`tests/fixtures/oauth/`).
    pub fn rs256(kid: &str) -> Self {
        let body: String = RSA_TEST_KEY
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(body)
            .expect("the RSA test key is base64");
        Self::new(kid, Algorithm::RS256, EncodingKey::from_rsa_der(&der))
    }

    fn new(kid: &str, alg: Algorithm, key: EncodingKey) -> Self {
        let mut jwk = serde_json::to_value(Jwk::from_encoding_key(&key, alg).expect("a JWK"))
            .expect("JWK as JSON");
        jwk["kid"] = json!(kid);
        jwk["use"] = json!("sig");
        Self {
            kid: kid.to_owned(),
            alg,
            key,
            jwk,
        }
    }

    /// A JWT with `claims`, signed by this key, its `kid` in the header.
    pub fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.key).expect("sign a token")
    }

    /// [`TestKey::sign`] with another `kid` in the header.
    pub fn sign_as(&self, kid: &str, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(kid.to_owned());
        jsonwebtoken::encode(&header, claims, &self.key).expect("sign a token")
    }
}

/// What the issuer's JWKS endpoint answers.
#[derive(Clone)]
enum Jwks {
    Keys(Vec<Value>),
    Garbage,
}

#[derive(Clone)]
struct IssuerState {
    url: Arc<std::sync::OnceLock<String>>,
    jwks: Arc<std::sync::Mutex<Jwks>>,
    fetches: Arc<AtomicUsize>,
}

/// The stand-in authorization server. Stops with the test.
pub struct Issuer {
    /// Its issuer identifier (`iss`), `http://127.0.0.1:<port>`.
    pub url: String,
    state: IssuerState,
}

impl Issuer {
    /// Serves metadata and a JWKS of `keys`.
    pub async fn start(keys: &[&TestKey]) -> Self {
        let state = IssuerState {
            url: Arc::default(),
            jwks: Arc::new(std::sync::Mutex::new(Jwks::Keys(Vec::new()))),
            fetches: Arc::default(),
        };
        let app = Router::new()
            .route("/.well-known/oauth-authorization-server", get(metadata))
            .route("/jwks", get(jwks))
            .with_state(state.clone());
        let addr = crate::serve_on_free_port(app).await;
        let url = format!("http://{addr}");
        let _ = state.url.set(url.clone());
        let issuer = Self { url, state };
        issuer.publish(keys);
        issuer
    }

    /// The JWKS URL.
    pub fn jwks_url(&self) -> String {
        format!("{}/jwks", self.url)
    }

    /// From now on the JWKS lists `keys` (a rotation).
    pub fn publish(&self, keys: &[&TestKey]) {
        *self.state.jwks.lock().expect("jwks lock") =
            Jwks::Keys(keys.iter().map(|k| k.jwk.clone()).collect());
    }

    /// From now on the JWKS endpoint answers something that is not JSON.
    pub fn serve_garbage(&self) {
        *self.state.jwks.lock().expect("jwks lock") = Jwks::Garbage;
    }

    /// How many times the JWKS was fetched.
    pub fn fetches(&self) -> usize {
        self.state.fetches.load(Ordering::SeqCst)
    }

    /// Valid claims: this issuer, `sub`, `aud`, expiring in five minutes.
    pub fn claims(&self, sub: &str, aud: &str) -> Value {
        let now = jsonwebtoken::get_current_timestamp();
        json!({"iss": self.url, "sub": sub, "aud": aud, "iat": now, "exp": now + 300})
    }
}

async fn metadata(State(s): State<IssuerState>) -> Response {
    let url = s.url.get().cloned().unwrap_or_default();
    axum::Json(json!({"issuer": url, "jwks_uri": format!("{url}/jwks"),
        "authorization_endpoint": format!("{url}/authorize"), "token_endpoint": format!("{url}/token")}))
    .into_response()
}

async fn jwks(State(s): State<IssuerState>) -> Response {
    s.fetches.fetch_add(1, Ordering::SeqCst);
    let jwks = s.jwks.lock().expect("jwks lock").clone();
    match jwks {
        Jwks::Keys(keys) => axum::Json(json!({ "keys": keys })).into_response(),
        Jwks::Garbage => (StatusCode::OK, "<html>maintenance</html>").into_response(),
    }
}
