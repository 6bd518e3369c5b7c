//! The issuer's signing keys (its JWKS), fetched over HTTP and cached.
//!
//! A token naming a key id the cache lacks triggers one refetch, at most
//! once per `min_refetch` (10 s by default): a key rotated in at the issuer
//! is picked up without a restart, and tokens with made-up key ids cannot
//! make the gateway hammer the issuer. Keys older than [`MAX_AGE`] are
//! refreshed on use, so a key the issuer withdrew stops working too. When a
//! fetch fails the cached keys stay in use; only a token whose key is not
//! cached then gets 503.
//!
//! Without `SOPHIA_OAUTH_JWKS_URL` the JWKS address is discovered from the
//! issuer's metadata (RFC 8414, then OpenID Connect discovery), in the order
//! the MCP authorization spec has clients try them.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use parking_lot::RwLock;

/// How long one fetch (discovery or JWKS) may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest metadata or JWKS document read.
const MAX_DOCUMENT_BYTES: usize = 256 * 1024;
/// Cached keys older than this are refreshed when next used.
pub const MAX_AGE: Duration = Duration::from_secs(15 * 60);

/// A verification key from the JWKS.
#[derive(Clone)]
pub struct VerifyKey {
    /// The key.
    pub key: DecodingKey,
    /// The algorithms it may verify (by its type, curve and `alg`).
    pub algorithms: Vec<Algorithm>,
}

/// The answer to "which key verifies this token?".
pub enum Lookup {
    /// This key.
    Found(VerifyKey),
    /// The issuer has no such key (its JWKS was fetched and lacks it).
    Unknown,
    /// The keys could not be fetched and none cached matches: why.
    Unavailable(String),
}

/// The JWKS cache.
pub struct Jwks {
    http: reqwest::Client,
    issuer: String,
    /// The configured JWKS URL, if any (else discovered).
    configured: Option<String>,
    min_refetch: Duration,
    state: RwLock<State>,
    fetching: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct State {
    by_kid: HashMap<String, VerifyKey>,
    /// Keys without a `kid`, for tokens without one.
    unnamed: Vec<VerifyKey>,
    fetched_at: Option<Instant>,
    last_attempt: Option<Instant>,
    last_error: Option<String>,
    discovered: Option<String>,
    /// Counts the key sets fetched: a token verified against an older one
    /// is verified again.
    generation: u64,
}

impl Jwks {
    /// A cache for `issuer`'s keys, at `jwks_url` or discovered.
    pub fn new(issuer: String, jwks_url: Option<String>, min_refetch: Duration) -> Self {
        // reqwest is built without a default crypto provider; use ring, as NATS does.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .connect_timeout(FETCH_TIMEOUT)
            .redirect(reqwest::redirect::Policy::limited(3))
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        Self {
            http,
            issuer,
            configured: jwks_url,
            min_refetch,
            state: RwLock::default(),
            fetching: tokio::sync::Mutex::new(()),
        }
    }

    /// The key for `kid` (or the only key, for a token without one).
    pub async fn find(&self, kid: Option<&str>) -> Lookup {
        let asked = Instant::now();
        if let Some(key) = self.cached(kid)
            && !self.stale()
        {
            return Lookup::Found(key);
        }
        if !self.may_fetch() {
            return self.answer(kid);
        }
        let _one_at_a_time = self.fetching.lock().await;
        // Another request may have fetched while this one waited.
        let fetched_meanwhile = self.state.read().last_attempt.is_some_and(|t| t >= asked);
        if !fetched_meanwhile && self.may_fetch() {
            self.refresh().await;
        }
        self.answer(kid)
    }

    /// Which key set is cached (it changes with every fetch).
    pub fn generation(&self) -> u64 {
        self.state.read().generation
    }

    /// The answer from what is cached now.
    fn answer(&self, kid: Option<&str>) -> Lookup {
        if let Some(key) = self.cached(kid) {
            return Lookup::Found(key);
        }
        let state = self.state.read();
        match &state.last_error {
            Some(e) => Lookup::Unavailable(e.clone()),
            None if state.fetched_at.is_none() => {
                Lookup::Unavailable("the issuer's keys have not been fetched yet".into())
            }
            None => Lookup::Unknown,
        }
    }

    fn cached(&self, kid: Option<&str>) -> Option<VerifyKey> {
        let state = self.state.read();
        match kid {
            Some(kid) => state.by_kid.get(kid).cloned(),
            None => match (state.unnamed.as_slice(), state.by_kid.len()) {
                ([only], 0) => Some(only.clone()),
                ([], 1) => state.by_kid.values().next().cloned(),
                _ => None,
            },
        }
    }

    fn stale(&self) -> bool {
        self.state
            .read()
            .fetched_at
            .is_none_or(|t| t.elapsed() > MAX_AGE)
    }

    fn may_fetch(&self) -> bool {
        self.state
            .read()
            .last_attempt
            .is_none_or(|t| t.elapsed() >= self.min_refetch)
    }

    /// Fetches the JWKS; on success replaces the cached keys, on failure
    /// keeps them and remembers why.
    async fn refresh(&self) {
        self.state.write().last_attempt = Some(Instant::now());
        match self.fetch().await {
            Ok((by_kid, unnamed)) => {
                tracing::debug!(
                    keys = by_kid.len() + unnamed.len(),
                    "fetched the issuer's JWKS"
                );
                let mut state = self.state.write();
                state.by_kid = by_kid;
                state.unnamed = unnamed;
                state.generation += 1;
                state.fetched_at = Some(Instant::now());
                state.last_error = None;
            }
            Err(e) => {
                tracing::warn!(cause = %e, "could not fetch the issuer's JWKS; keeping the cached keys");
                self.state.write().last_error = Some(e);
            }
        }
    }

    async fn fetch(&self) -> Result<(HashMap<String, VerifyKey>, Vec<VerifyKey>), String> {
        let url = match self
            .configured
            .clone()
            .or_else(|| self.state.read().discovered.clone())
        {
            Some(url) => url,
            None => {
                let url = self.discover().await?;
                self.state.write().discovered = Some(url.clone());
                url
            }
        };
        let doc = self.get_json(&url).await?;
        let keys = doc
            .get("keys")
            .and_then(|k| k.as_array())
            .ok_or_else(|| format!("the JWKS at {url} is not a JWK set (no \"keys\" array)"))?;
        let (mut by_kid, mut unnamed) = (HashMap::new(), Vec::new());
        for raw in keys {
            let Ok(jwk) = serde_json::from_value::<Jwk>(raw.clone()) else {
                continue; // a key type this gateway does not know
            };
            let Some(key) = verify_key(&jwk) else {
                continue;
            };
            match jwk.common.key_id {
                Some(kid) => {
                    by_kid.insert(kid, key);
                }
                None => unnamed.push(key),
            }
        }
        if by_kid.is_empty() && unnamed.is_empty() {
            return Err(format!(
                "the JWKS at {url} has no usable signing key (RSA 2048-4096 bits, EC P-256/P-384 or Ed25519)"
            ));
        }
        Ok((by_kid, unnamed))
    }

    /// The `jwks_uri` of the issuer's metadata.
    async fn discover(&self) -> Result<String, String> {
        let mut tried = Vec::new();
        for url in metadata_urls(&self.issuer) {
            match self.get_json(&url).await {
                Ok(meta) => {
                    if meta.get("issuer").and_then(|i| i.as_str()) != Some(self.issuer.as_str()) {
                        return Err(format!(
                            "the metadata at {url} is for another issuer than {} (RFC 8414 section 3.3)",
                            self.issuer
                        ));
                    }
                    return meta
                        .get("jwks_uri")
                        .and_then(|u| u.as_str())
                        .map(str::to_owned)
                        .ok_or_else(|| {
                            format!(
                                "the metadata at {url} has no jwks_uri; set SOPHIA_OAUTH_JWKS_URL"
                            )
                        });
                }
                Err(e) => tried.push(e),
            }
        }
        Err(format!(
            "could not discover the issuer's JWKS ({}); set SOPHIA_OAUTH_JWKS_URL",
            tried.join("; ")
        ))
    }

    /// GETs `url` as a JSON document of at most [`MAX_DOCUMENT_BYTES`].
    async fn get_json(&self, url: &str) -> Result<serde_json::Value, String> {
        let mut resp = self
            .http
            .get(url)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| format!("GET {url} failed: {}", describe(&e)))?;
        if !resp.status().is_success() {
            return Err(format!("GET {url} answered {}", resp.status()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| format!("reading {url} failed: {}", describe(&e)))?
        {
            body.extend_from_slice(&chunk);
            if body.len() > MAX_DOCUMENT_BYTES {
                return Err(format!("{url} is larger than {MAX_DOCUMENT_BYTES} bytes"));
            }
        }
        serde_json::from_slice(&body).map_err(|e| format!("{url} is not JSON ({e})"))
    }
}

fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        format!("no answer within {} s", FETCH_TIMEOUT.as_secs())
    } else if e.is_connect() {
        "could not connect".into()
    } else {
        e.to_string()
    }
}

/// Where the issuer's metadata may be: RFC 8414 first, then OpenID Connect
/// discovery, path-inserted and path-appended for an issuer with a path.
fn metadata_urls(issuer: &str) -> Vec<String> {
    let issuer = issuer.trim_end_matches('/');
    let Ok(parsed) = reqwest::Url::parse(issuer) else {
        return Vec::new();
    };
    let path = parsed.path().trim_end_matches('/');
    let origin = parsed.origin().ascii_serialization();
    if path.is_empty() {
        vec![
            format!("{origin}/.well-known/oauth-authorization-server"),
            format!("{origin}/.well-known/openid-configuration"),
        ]
    } else {
        vec![
            format!("{origin}/.well-known/oauth-authorization-server{path}"),
            format!("{origin}/.well-known/openid-configuration{path}"),
            format!("{issuer}/.well-known/openid-configuration"),
        ]
    }
}

/// A key the gateway can verify with, and the algorithms it may verify;
/// `None` for encryption keys, symmetric keys (no HS* ever) and key
/// material of the wrong size (checked here so that no malformed key reaches
/// the crypto code).
fn verify_key(jwk: &Jwk) -> Option<VerifyKey> {
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return None;
    }
    let b64 = |s: &str| {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(s.trim_end_matches('='))
            .ok()
    };
    let algorithms = match &jwk.algorithm {
        AlgorithmParameters::RSA(p) => {
            let bits = b64(&p.n)?.iter().skip_while(|b| **b == 0).count() * 8;
            if !(2048..=4096).contains(&bits) || b64(&p.e)?.len() > 8 {
                return None;
            }
            use Algorithm::*;
            vec![RS256, RS384, RS512, PS256, PS384, PS512]
        }
        AlgorithmParameters::EllipticCurve(p) => {
            let (alg, len) = match p.curve {
                EllipticCurve::P256 => (Algorithm::ES256, 32),
                EllipticCurve::P384 => (Algorithm::ES384, 48),
                _ => return None,
            };
            if b64(&p.x)?.len() != len || b64(&p.y)?.len() != len {
                return None;
            }
            vec![alg]
        }
        AlgorithmParameters::OctetKeyPair(p) => {
            if p.curve != EllipticCurve::Ed25519 || b64(&p.x)?.len() != 32 {
                return None;
            }
            vec![Algorithm::EdDSA]
        }
        _ => return None, // symmetric (oct) keys and key types this gateway does not know
    };
    // A key that names its algorithm verifies only that one.
    let algorithms = match jwk.common.key_algorithm.map(Algorithm::try_from) {
        None => algorithms,
        Some(Ok(named)) if algorithms.contains(&named) => vec![named],
        Some(_) => return None,
    };
    let key = DecodingKey::from_jwk(jwk).ok()?;
    Some(VerifyKey { key, algorithms })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_is_looked_for_where_the_mcp_spec_says() {
        assert_eq!(
            metadata_urls("https://auth.example.com"),
            [
                "https://auth.example.com/.well-known/oauth-authorization-server",
                "https://auth.example.com/.well-known/openid-configuration"
            ]
        );
        assert_eq!(
            metadata_urls("https://auth.example.com/tenant1")[0],
            "https://auth.example.com/.well-known/oauth-authorization-server/tenant1"
        );
    }

    #[test]
    fn symmetric_short_and_encryption_keys_are_not_used() {
        let jwk = |v: serde_json::Value| serde_json::from_value::<Jwk>(v).unwrap();
        assert!(verify_key(&jwk(serde_json::json!({"kty": "oct", "k": "c2VjcmV0"}))).is_none());
        assert!(
            verify_key(&jwk(
                serde_json::json!({"kty": "OKP", "crv": "Ed25519", "x": "AAAA"})
            ))
            .is_none()
        );
        let x = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";
        assert!(
            verify_key(&jwk(
                serde_json::json!({"kty": "OKP", "crv": "Ed25519", "x": x})
            ))
            .is_some()
        );
        assert!(
            verify_key(&jwk(
                serde_json::json!({"kty": "OKP", "crv": "Ed25519", "x": x, "use": "enc"})
            ))
            .is_none()
        );
        assert!(
            verify_key(&jwk(
                serde_json::json!({"kty": "OKP", "crv": "Ed25519", "x": x, "alg": "RS256"})
            ))
            .is_none()
        );
    }
}
