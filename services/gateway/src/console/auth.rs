//! Who is looking at the console, and whether a POST may act for them.
//!
//! - **Credentials.** The same as `/mcp`: a bearer header, or the login
//!   cookie the form at `/console` sets. The cookie holds the credential
//!   itself (`HttpOnly`, `SameSite=Strict`, `Path=/console`, `Secure` behind
//!   https), so every request is checked again as `/mcp` would check it
//!   (a revoked key stops working at once) and any gateway replica can
//!   serve the next request. Without valid credentials every route
//!   answers 401; the page's 401 carries the login form.
//! - **Origin.** A POST with an `Origin` outside `SOPHIA_ALLOWED_ORIGINS`
//!   gets 403, and so does a POST that came with the cookie but no
//!   `Origin` (browsers always send one). `Host` must be one of
//!   `SOPHIA_ALLOWED_HOSTS` (DNS-rebinding defence), as on `/mcp`.
//! - **CSRF.** A POST made with the cookie must carry `X-Sophia-Csrf`, a
//!   token derived from the credential (SHA-256 of a fixed label and the
//!   credential), which only a page that could read `/console/api/session`
//!   knows. Bearer-header requests need none: a browser never adds that
//!   header by itself.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::Digest;

use super::Console;
use super::page;
use crate::identity::AuthError;
use crate::mcp::Identity;

/// The login cookie's name.
pub(super) const COOKIE: &str = "sophia_console";
/// The header carrying the CSRF token on POSTs.
pub(super) const CSRF_HEADER: &str = "x-sophia-csrf";
/// How long a login lasts, in seconds (a working day).
const LOGIN_S: u64 = 8 * 3600;

/// Someone authenticated.
pub(super) struct Viewer {
    /// Who, with their roles.
    pub identity: Identity,
    /// Their CSRF token.
    pub csrf: String,
    /// The credential itself, for checking it again later (never shown).
    pub credential: String,
    /// Whether the credential came in the cookie (a browser's request).
    by_cookie: bool,
}

impl Console {
    /// Who sent `headers`, or the answer refusing them: 403 for a `Host`
    /// not allowed, 401 (the login page for the page itself) without
    /// valid credentials.
    pub(super) async fn viewer(&self, headers: &HeaderMap, path: &str) -> Result<Viewer, Response> {
        if !self.host_allowed(headers) {
            return Err(forbidden(
                "this Host is not one of SOPHIA_ALLOWED_HOSTS; open the console by a name the \
                 gateway serves",
            ));
        }
        let (credential, by_cookie) = match credential(headers) {
            Some(found) => found,
            None => return Err(self.unauthorized(path, "sign in with an API key or token")),
        };
        match self.0.auth.check(&credential, path).await {
            Ok(identity) => Ok(Viewer {
                identity,
                csrf: csrf_token(&credential),
                credential,
                by_cookie,
            }),
            Err(e) => Err(self.unauthorized(path, &why(&e))),
        }
    }

    /// Whether `credential` is still valid (not expired, still a key).
    pub(super) async fn still_valid(&self, credential: &str) -> Result<(), String> {
        self.0
            .auth
            .check(credential, "/console/api/events")
            .await
            .map(|_| ())
            .map_err(|e| why(&e))
    }

    /// [`Console::viewer`], then the checks a POST needs: an allowed
    /// `Origin` and, from a browser, the CSRF token.
    pub(super) async fn actor(&self, headers: &HeaderMap, path: &str) -> Result<Viewer, Response> {
        let viewer = self.viewer(headers, path).await?;
        self.origin_allowed(headers, viewer.by_cookie)?;
        if viewer.by_cookie {
            let sent = headers
                .get(CSRF_HEADER)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            if !same(sent.as_bytes(), viewer.csrf.as_bytes()) {
                return Err(forbidden(
                    "missing or wrong CSRF token (X-Sophia-Csrf): reload the console and try again",
                ));
            }
        }
        Ok(viewer)
    }

    /// 403 unless `Origin` is allowed; a browser request (`by_cookie`)
    /// must send one.
    #[allow(clippy::result_large_err)] // the refusal is the response itself
    fn origin_allowed(&self, headers: &HeaderMap, by_cookie: bool) -> Result<(), Response> {
        match headers.get(header::ORIGIN).map(|o| o.to_str()) {
            Some(Ok(origin)) if origin_matches(&self.0.allowed_origins, origin) => Ok(()),
            Some(origin) => Err(forbidden(&format!(
                "Origin {} is not one of SOPHIA_ALLOWED_ORIGINS: the console acts only for \
                 its own pages",
                sophia_kit::vetting::shown(origin.unwrap_or("(not ASCII)"))
            ))),
            None if by_cookie => Err(forbidden(
                "a browser request without Origin: the console acts only for its own pages",
            )),
            None => Ok(()),
        }
    }

    fn host_allowed(&self, headers: &HeaderMap) -> bool {
        let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
            return true; // HTTP/1.0 without Host: nothing to rebind
        };
        let name = match host.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            _ => host,
        };
        let name = name.trim_start_matches('[').trim_end_matches(']');
        self.0.allowed_hosts.iter().any(|h| h == name || h == host)
    }

    /// 401: the login page for the page itself, a short text elsewhere.
    fn unauthorized(&self, path: &str, why: &str) -> Response {
        let mut response = if path == "/console" {
            page::login(why)
        } else {
            (
                StatusCode::UNAUTHORIZED,
                [(header::CONTENT_TYPE, "application/json")],
                serde_json::json!({"error": format!(
                    "not signed in: {why}. Sign in at /console, or send \
                     `Authorization: Bearer <API key or token>`")})
                .to_string(),
            )
                .into_response()
        };
        *response.status_mut() = StatusCode::UNAUTHORIZED;
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    }

    /// The cookie that keeps `credential` for the console.
    fn login_cookie(&self, credential: &str, max_age: u64) -> Option<HeaderValue> {
        let secure = if self.0.secure_cookie { "; Secure" } else { "" };
        HeaderValue::from_str(&format!(
            "{COOKIE}={credential}; Path=/console; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}"
        ))
        .ok()
    }
}

/// The credential of a request: the bearer header's, else the cookie's.
fn credential(headers: &HeaderMap) -> Option<(String, bool)> {
    if let Some(bearer) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, c)| c.trim())
    {
        return Some((bearer.to_owned(), false));
    }
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(name, value)| *name == COOKIE && !value.is_empty())
        .map(|(_, value)| (value.to_owned(), true))
}

/// Why a credential was refused, in words for the login page.
fn why(e: &AuthError) -> String {
    match e {
        AuthError::Missing => "sign in with an API key or token".into(),
        AuthError::Malformed(m) | AuthError::InvalidToken(m) | AuthError::KeysUnavailable(m) => {
            m.clone()
        }
    }
}

/// The CSRF token of `credential`.
pub(super) fn csrf_token(credential: &str) -> String {
    let mut hash = sha2::Sha256::new();
    hash.update(b"sophia-console-csrf\0");
    hash.update(credential.as_bytes());
    hash.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Equal, in time that does not depend on where they differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether `origin` matches one of `allowed` (`scheme://host:port`, or
/// `scheme://host:*` for any port).
fn origin_matches(allowed: &[String], origin: &str) -> bool {
    allowed
        .iter()
        .any(|pattern| match pattern.strip_suffix(":*") {
            Some(prefix) => {
                origin == prefix
                    || origin
                        .strip_prefix(prefix)
                        .and_then(|rest| rest.strip_prefix(':'))
                        .is_some_and(|port| {
                            !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit())
                        })
            }
            None => origin == pattern,
        })
}

fn forbidden(message: &str) -> Response {
    (
        StatusCode::FORBIDDEN,
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::json!({ "error": message }).to_string(),
    )
        .into_response()
}

/// Characters a cookie value may hold (RFC 6265 cookie-octet).
fn cookie_safe(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| matches!(b, 0x21 | 0x23..=0x2B | 0x2D..=0x3A | 0x3C..=0x5B | 0x5D..=0x7E))
}

/// The login form's fields.
#[derive(serde::Deserialize)]
pub(super) struct LoginForm {
    credential: String,
}

/// `POST /console/login`: checks the credential typed in the form and keeps
/// it in the login cookie; 401 with the form again when it is not valid.
pub(super) async fn login(
    State(console): State<Console>,
    headers: HeaderMap,
    form: Result<axum::Form<LoginForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    if let Err(refused) = console.origin_allowed(&headers, true) {
        return refused;
    }
    let credential = form
        .map(|f| f.0.credential.trim().to_owned())
        .unwrap_or_default();
    if !cookie_safe(&credential) {
        return console.unauthorized(
            "/console",
            "paste the whole API key or token (letters, digits and punctuation, no spaces)",
        );
    }
    match console.0.auth.check(&credential, "/console").await {
        Ok(identity) => {
            tracing::info!(principal = %identity.principal, "signed in to the console");
            let mut response =
                (StatusCode::SEE_OTHER, [(header::LOCATION, "/console")]).into_response();
            if let Some(cookie) = console.login_cookie(&credential, LOGIN_S) {
                response.headers_mut().insert(header::SET_COOKIE, cookie);
            }
            response
        }
        Err(e) => console.unauthorized("/console", &why(&e)),
    }
}

/// `POST /console/logout`: forgets the login cookie.
pub(super) async fn logout(State(console): State<Console>, headers: HeaderMap) -> Response {
    if let Err(refused) = console.actor(&headers, "/console/logout").await {
        return refused;
    }
    let mut response = (StatusCode::SEE_OTHER, [(header::LOCATION, "/console")]).into_response();
    if let Some(cookie) = console.login_cookie("", 0) {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_match_exactly_or_on_any_port() {
        let allowed = vec![
            "http://localhost:*".to_owned(),
            "https://ops.example".to_owned(),
        ];
        assert!(origin_matches(&allowed, "http://localhost:8000"));
        assert!(origin_matches(&allowed, "http://localhost"));
        assert!(origin_matches(&allowed, "https://ops.example"));
        assert!(!origin_matches(&allowed, "http://localhost.evil.example"));
        assert!(!origin_matches(&allowed, "http://localhost:80x"));
        assert!(!origin_matches(&allowed, "https://ops.example.evil"));
        assert!(!origin_matches(&allowed, "null"));
    }

    #[test]
    fn the_cookie_or_the_bearer_header_carries_the_credential() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=b; sophia_console=sk_1"),
        );
        assert_eq!(credential(&h), Some(("sk_1".into(), true)));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer sk_2"),
        );
        assert_eq!(credential(&h), Some(("sk_2".into(), false)));
    }

    #[test]
    fn csrf_tokens_differ_per_credential() {
        assert_ne!(csrf_token("a"), csrf_token("b"));
        assert_eq!(csrf_token("a").len(), 64);
        assert!(same(b"abc", b"abc") && !same(b"abc", b"abd") && !same(b"ab", b"abc"));
    }
}
