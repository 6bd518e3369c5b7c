//! Who is calling: every HTTP request's `Authorization: Bearer` credential
//! becomes an [`Identity`] (principal and roles) in the request's
//! extensions, or the request is refused with 401 (or 503 when the OAuth
//! issuer's keys cannot be fetched).
//!
//! # Layout
//! - [`keys`]: API keys, hashed in a file (`SOPHIA_GATEWAY_KEYS`), made by
//!   `sophia-gateway keys new`; the single `SOPHIA_GATEWAY_TOKEN` joins them.
//! - [`oauth`] and [`jwks`]: JWTs from an OAuth 2.1 authorization server,
//!   verified with its JWKS (the MCP authorization spec's resource server).
//! - [`metadata`]: RFC 9728 protected-resource metadata and the
//!   `WWW-Authenticate` challenge that points clients to it.
//!
//! # How a request is checked
//! [`require_identity`] reads the bearer credential (at most
//! [`MAX_CREDENTIAL_BYTES`], ASCII) → [`Authenticator::authenticate`] looks it
//! up among the keys; if it is not one, is shaped like a JWT and OAuth is
//! configured, [`oauth::OAuth::verify`] checks it → the [`Identity`] goes into
//! the request's extensions for the MCP handler and the REST shortcuts.
//! Keys are tried first so that a static token that happens to contain two
//! dots still works; a JWT can never match a key's hash by accident.

pub mod jwks;
pub mod keys;
pub mod metadata;
pub mod oauth;
mod verified;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::Response;

use crate::config::GatewayConfig;
use crate::mcp::Identity;
use keys::{KeyCheck, KeyRing};
use metadata::Challenge;
use oauth::{OAuth, OAuthSettings};

/// The longest bearer credential read; longer ones get 401 unread.
pub const MAX_CREDENTIAL_BYTES: usize = 16 * 1024;

/// Flags and environment for identities (flattened into [`GatewayConfig`]).
#[derive(Clone, Debug, clap::Args)]
pub struct IdentityConfig {
    /// A file of API keys (TOML, or JSON if it ends in `.json`): principal,
    /// roles, SHA-256 of the key, optional expiry. Make entries with
    /// `sophia-gateway keys new`.
    #[arg(long = "keys-file", env = "SOPHIA_GATEWAY_KEYS")]
    pub keys_file: Option<PathBuf>,
    /// The roles of `SOPHIA_GATEWAY_PRINCIPAL`, the caller with
    /// `SOPHIA_GATEWAY_TOKEN` or over stdio (comma-separated;
    /// none by default: without a policy file roles change nothing, with one
    /// the token gets only what every caller may until given roles here).
    #[arg(long = "roles", env = "SOPHIA_GATEWAY_ROLES", value_delimiter = ',')]
    pub principal_roles: Vec<String>,
    /// The URL clients reach the gateway at (e.g. `https://mcp.example.com`);
    /// names the protected-resource metadata and, by default, the OAuth
    /// audience `<url>/mcp`. Required with OAuth.
    #[arg(long = "public-url", env = "SOPHIA_GATEWAY_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// The OAuth authorization server whose JWTs are accepted (its `iss`).
    #[arg(long = "oauth-issuer", env = "SOPHIA_OAUTH_ISSUER")]
    pub oauth_issuer: Option<String>,
    /// The issuer's JWKS URL; by default discovered from its metadata.
    #[arg(long = "oauth-jwks-url", env = "SOPHIA_OAUTH_JWKS_URL")]
    pub oauth_jwks_url: Option<String>,
    /// The `aud` tokens must carry: this gateway's resource URI (default
    /// `<SOPHIA_GATEWAY_PUBLIC_URL>/mcp`).
    #[arg(long = "oauth-audience", env = "SOPHIA_OAUTH_AUDIENCE")]
    pub oauth_audience: Option<String>,
    /// The claim holding a token's roles (string or array; `a.b` walks into
    /// objects). `groups` is read too.
    #[arg(
        long = "oauth-roles-claim",
        env = "SOPHIA_OAUTH_ROLES_CLAIM",
        default_value = "roles"
    )]
    pub oauth_roles_claim: String,
    /// Scopes that grant roles, as `scope=role` pairs (comma-separated).
    #[arg(
        long = "oauth-scope-roles",
        env = "SOPHIA_OAUTH_SCOPE_ROLES",
        value_delimiter = ','
    )]
    pub oauth_scope_roles: Vec<String>,
    /// The scopes clients may ask for, listed in the protected-resource
    /// metadata (comma-separated).
    #[arg(
        long = "oauth-scopes",
        env = "SOPHIA_OAUTH_SCOPES",
        value_delimiter = ','
    )]
    pub oauth_scopes: Vec<String>,
    /// At most one JWKS refetch for an unknown key id per this many milliseconds.
    #[arg(
        long = "oauth-jwks-refetch-ms",
        env = "SOPHIA_OAUTH_JWKS_REFETCH_MS",
        default_value_t = 10_000
    )]
    pub oauth_jwks_refetch_ms: u64,
}

impl IdentityConfig {
    /// The roles of `SOPHIA_GATEWAY_PRINCIPAL`: the single token's, and the
    /// caller's over stdio.
    pub fn roles(&self) -> Vec<String> {
        self.principal_roles
            .iter()
            .map(|r| r.trim().to_owned())
            .filter(|r| !r.is_empty())
            .collect()
    }
}

/// Why the identity configuration was refused at start-up.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The keys file could not be read or parsed.
    #[error(transparent)]
    KeysFile(#[from] keys::KeysFileError),
    /// A setting is missing or malformed; the message names it.
    #[error("{0}")]
    Setting(String),
}

/// Why a request was refused.
#[derive(Debug)]
pub enum AuthError {
    /// No `Authorization` header.
    Missing,
    /// An `Authorization` header that is not a usable bearer credential.
    Malformed(String),
    /// A bearer credential that is neither a key nor a valid token.
    InvalidToken(String),
    /// The issuer's keys could not be fetched (503).
    KeysUnavailable(String),
}

/// Checks bearer credentials.
pub struct Authenticator {
    keys: KeyRing,
    oauth: Option<OAuth>,
    challenge: Challenge,
}

impl Authenticator {
    /// The authenticator `config` describes; `Ok(None)` when it configures
    /// no way in at all (no token, no keys file, no issuer).
    pub fn from_config(config: &GatewayConfig) -> Result<Option<Self>, IdentityError> {
        let id = &config.identity;
        let mut keys = match &id.keys_file {
            Some(path) => KeyRing::load(path)?,
            None => KeyRing::default(),
        };
        if let Some(token) = config.token.as_deref().filter(|t| !t.trim().is_empty()) {
            keys.add_token(token, &config.principal, &id.roles())
                .map_err(IdentityError::Setting)?;
        }
        let oauth = oauth_settings(id)?.map(OAuth::new);
        if keys.is_empty() && oauth.is_none() {
            if let Some(path) = &id.keys_file {
                tracing::warn!(file = %path.display(), "the keys file has no keys and nothing else is configured: every HTTP request will be refused");
            } else {
                return Ok(None);
            }
        }
        let challenge = Challenge::new(oauth.as_ref().map(|o| {
            (
                id.public_url.clone().unwrap_or_default(),
                o.settings().clone(),
                id.oauth_scopes.clone(),
            )
        }));
        tracing::info!(
            keys = keys.len(),
            oauth = oauth.is_some(),
            "HTTP clients authenticate with bearer credentials"
        );
        Ok(Some(Self {
            keys,
            oauth,
            challenge,
        }))
    }

    /// The challenge and metadata of this gateway.
    pub fn challenge(&self) -> &Challenge {
        &self.challenge
    }

    /// The identity behind `headers`' bearer credential, for a request to `path`.
    pub async fn authenticate(
        &self,
        headers: &HeaderMap,
        path: &str,
    ) -> Result<Identity, AuthError> {
        self.check(bearer(headers)?, path).await
    }

    /// The identity behind `credential` (an API key, the gateway token or an
    /// OAuth access token), for a request to `path`: what a bearer header
    /// or the console's login cookie carries.
    pub async fn check(&self, credential: &str, path: &str) -> Result<Identity, AuthError> {
        match self.keys.check(credential, chrono::Utc::now()) {
            KeyCheck::Valid(identity) => return Ok(identity),
            KeyCheck::Expired { id, at } => {
                return Err(AuthError::InvalidToken(format!(
                    "the API key `{id}` expired at {}; ask an administrator for a new one \
                     (sophia-gateway keys new)",
                    at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                )));
            }
            KeyCheck::Unknown => {}
        }
        match &self.oauth {
            Some(oauth) if looks_like_jwt(credential) => {
                oauth
                    .verify(credential, self.challenge.resource_for(path).as_deref())
                    .await
            }
            _ => Err(AuthError::InvalidToken(
                "the bearer token is not a key of this gateway: check it was copied whole \
                 (API keys start with sk_sophia_); an administrator makes keys with \
                 `sophia-gateway keys new`"
                    .into(),
            )),
        }
    }
}

/// The bearer credential of `headers`: `Authorization: Bearer <credential>`
/// (scheme case-insensitive), ASCII, at most [`MAX_CREDENTIAL_BYTES`].
fn bearer(headers: &HeaderMap) -> Result<&str, AuthError> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return Err(match headers.contains_key(header::AUTHORIZATION) {
            true => AuthError::Malformed("send one Authorization header, not several".into()),
            false => AuthError::Missing,
        });
    };
    if value.len() > MAX_CREDENTIAL_BYTES {
        return Err(AuthError::Malformed(format!(
            "the Authorization header is longer than {MAX_CREDENTIAL_BYTES} bytes"
        )));
    }
    let value = value
        .to_str()
        .map_err(|_| AuthError::Malformed("the Authorization header is not ASCII".into()))?;
    let credential = match value.split_once(' ') {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
        _ => {
            return Err(AuthError::Malformed(
                "use the Bearer scheme: `Authorization: Bearer <key or token>`".into(),
            ));
        }
    };
    if credential.is_empty() || credential.contains(char::is_whitespace) {
        return Err(AuthError::Malformed(
            "the bearer credential is empty or has spaces in it".into(),
        ));
    }
    Ok(credential)
}

/// Three non-empty base64url parts (the signature may be empty only for
/// `alg: none`, which is refused later with a clear message).
fn looks_like_jwt(s: &str) -> bool {
    let parts: Vec<&str> = s.split('.').collect();
    parts.len() == 3
        && !parts[0].is_empty()
        && !parts[1].is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Middleware: puts the caller's [`Identity`] into the request, or refuses it.
pub async fn require_identity(
    State(auth): State<Arc<Authenticator>>,
    mut req: Request,
    next: Next,
) -> Response {
    let path = req.uri().path().to_owned();
    match auth.authenticate(req.headers(), &path).await {
        Ok(identity) => {
            req.extensions_mut().insert(identity);
            next.run(req).await
        }
        Err(e) => auth.challenge.refuse(&e, &path),
    }
}

/// Scope → role pairs from `scope=role` strings.
fn scope_roles(pairs: &[String]) -> Result<HashMap<String, String>, IdentityError> {
    pairs
        .iter()
        .filter(|p| !p.trim().is_empty())
        .map(|p| match p.split_once('=') {
            Some((s, r)) if !s.trim().is_empty() && !r.trim().is_empty() => {
                Ok((s.trim().to_owned(), r.trim().to_owned()))
            }
            _ => Err(IdentityError::Setting(format!(
                "SOPHIA_OAUTH_SCOPE_ROLES: `{p}` is not scope=role (e.g. mcp:admin=admin)"
            ))),
        })
        .collect()
}

fn oauth_settings(id: &IdentityConfig) -> Result<Option<OAuthSettings>, IdentityError> {
    // Checked even without an issuer: a malformed setting is a mistake either way.
    let scope_roles = scope_roles(&id.oauth_scope_roles)?;
    let Some(issuer) = id.oauth_issuer.clone().filter(|i| !i.trim().is_empty()) else {
        return Ok(None);
    };
    let url = |name: &str, v: &str| {
        reqwest::Url::parse(v)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https"))
            .map(|_| v.trim_end_matches('/').to_owned())
            .ok_or_else(|| IdentityError::Setting(format!("{name}: `{v}` is not an http(s) URL")))
    };
    url("SOPHIA_OAUTH_ISSUER", &issuer)?;
    let public_url = id.public_url.as_deref().ok_or_else(|| {
        IdentityError::Setting(
            "SOPHIA_GATEWAY_PUBLIC_URL is not set: with SOPHIA_OAUTH_ISSUER the gateway must know \
             the URL clients reach it at (e.g. https://mcp.example.com), to name its resource"
                .into(),
        )
    })?;
    let public_url = url("SOPHIA_GATEWAY_PUBLIC_URL", public_url)?;
    let audience = match &id.oauth_audience {
        Some(a) => url("SOPHIA_OAUTH_AUDIENCE", a)?,
        None => format!("{public_url}/mcp"),
    };
    let jwks_url = id
        .oauth_jwks_url
        .as_deref()
        .map(|u| url("SOPHIA_OAUTH_JWKS_URL", u))
        .transpose()?;
    Ok(Some(OAuthSettings {
        issuer,
        jwks_url,
        audience,
        roles_claim: id.oauth_roles_claim.clone(),
        scope_roles,
        min_refetch: Duration::from_millis(id.oauth_jwks_refetch_ms),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_credentials_are_read_strictly() {
        let with = |v: &[u8]| {
            let mut h = HeaderMap::new();
            h.insert(
                header::AUTHORIZATION,
                axum::http::HeaderValue::from_bytes(v).unwrap(),
            );
            h
        };
        assert_eq!(bearer(&with(b"Bearer abc")).unwrap(), "abc");
        assert_eq!(bearer(&with(b"bearer  abc ")).unwrap(), "abc");
        assert!(matches!(bearer(&HeaderMap::new()), Err(AuthError::Missing)));
        for bad in [
            &b"Basic abc"[..],
            b"Bearer",
            b"Bearer ",
            b"Bearer a b",
            b"Bearer \xff\xfe",
            b"abc",
        ] {
            assert!(
                matches!(bearer(&with(bad)), Err(AuthError::Malformed(_))),
                "{bad:?}"
            );
        }
        let huge = format!("Bearer {}", "a".repeat(MAX_CREDENTIAL_BYTES + 1));
        assert!(matches!(
            bearer(&with(huge.as_bytes())),
            Err(AuthError::Malformed(_))
        ));
    }

    #[test]
    fn jwts_are_told_from_keys_by_shape() {
        assert!(looks_like_jwt("eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln"));
        assert!(!looks_like_jwt("sk_sophia_abcdef"));
        assert!(!looks_like_jwt("a.b"));
        assert!(!looks_like_jwt("a.b.c.d"));
        assert!(!looks_like_jwt("a+b.c.d"));
    }
}
