//! How a client learns to authenticate: the `WWW-Authenticate` challenge on
//! every 401 (RFC 6750, with RFC 9728's `resource_metadata`), and the
//! protected-resource metadata it points to.
//!
//! The metadata is served, without authentication, only when OAuth is
//! configured (otherwise there is no authorization server to name, and the
//! paths are 404): at `/.well-known/oauth-protected-resource`, and with the
//! resource's path appended (`.../mcp`, `.../mcp/{profile}`), which MCP
//! clients try first. Its `resource` is the audience tokens must carry; a
//! profile's is `<audience>/<profile>`, which that profile's endpoint also
//! accepts as `aud`.

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use super::AuthError;
use super::oauth::OAuthSettings;

/// The realm named in every challenge.
const REALM: &str = "sophia-gateway";
/// The metadata's path (RFC 9728 section 3).
const WELL_KNOWN: &str = "/.well-known/oauth-protected-resource";
/// Seconds a client should wait after a 503 before retrying.
const RETRY_AFTER_S: &str = "10";

/// The challenge and metadata of a gateway.
#[derive(Clone, Debug)]
pub struct Challenge {
    oauth: Option<OAuthView>,
}

#[derive(Clone, Debug)]
struct OAuthView {
    public_url: String,
    issuer: String,
    audience: String,
    scopes: Vec<String>,
}

impl Challenge {
    /// A challenge; with OAuth, `(public URL, settings, scopes supported)`.
    pub fn new(oauth: Option<(String, OAuthSettings, Vec<String>)>) -> Self {
        Self {
            oauth: oauth.map(|(public_url, s, scopes)| OAuthView {
                public_url: public_url.trim_end_matches('/').to_owned(),
                issuer: s.issuer,
                audience: s.audience,
                scopes: scopes
                    .into_iter()
                    .filter(|s| !s.trim().is_empty())
                    .collect(),
            }),
        }
    }

    /// The resource a request to `path` is for, when it is a profile's
    /// endpoint (`/mcp/{profile}`): `<audience>/<profile>`.
    pub fn resource_for(&self, path: &str) -> Option<String> {
        let oauth = self.oauth.as_ref()?;
        profile_of(path).map(|p| format!("{}/{p}", oauth.audience))
    }

    /// The metadata URL for a request to `path`.
    fn metadata_url(&self, oauth: &OAuthView, path: &str) -> String {
        let suffix = match profile_of(path) {
            Some(p) => format!("/mcp/{p}"),
            None if path.trim_end_matches('/') == "/mcp" => "/mcp".into(),
            None => String::new(),
        };
        format!("{}{WELL_KNOWN}{suffix}", oauth.public_url)
    }

    /// The response refusing a request to `path` for `why`.
    pub fn refuse(&self, why: &AuthError, path: &str) -> Response {
        let (error, message) = match why {
            AuthError::KeysUnavailable(cause) => {
                let body = format!(
                    "the OAuth issuer's signing keys could not be fetched, so the token cannot be \
                     checked: {cause}. Try again shortly; if it persists, check SOPHIA_OAUTH_ISSUER \
                     and SOPHIA_OAUTH_JWKS_URL\n"
                );
                tracing::warn!(cause = %cause, "refused a token: the issuer's keys are unavailable");
                return (
                    StatusCode::SERVICE_UNAVAILABLE,
                    [(header::RETRY_AFTER, RETRY_AFTER_S)],
                    body,
                )
                    .into_response();
            }
            AuthError::Missing => (
                None,
                "missing bearer credential: send `Authorization: Bearer <API key or token>` \
                 (SOPHIA_GATEWAY_TOKEN, a key from the keys file, or an OAuth access token)"
                    .to_owned(),
            ),
            AuthError::Malformed(m) => (
                Some("invalid_request"),
                format!("malformed Authorization header: {m}"),
            ),
            AuthError::InvalidToken(m) => (Some("invalid_token"), m.clone()),
        };
        tracing::debug!(path, error = error.unwrap_or("none"), reason = %message, "refused an unauthenticated request");
        let mut challenge = format!("Bearer realm=\"{REALM}\"");
        if let Some(oauth) = &self.oauth {
            challenge.push_str(&format!(
                ", resource_metadata=\"{}\"",
                self.metadata_url(oauth, path)
            ));
            if !oauth.scopes.is_empty() {
                challenge.push_str(&format!(
                    ", scope=\"{}\"",
                    quotable(&oauth.scopes.join(" "))
                ));
            }
        }
        if let Some(error) = error {
            challenge.push_str(&format!(
                ", error=\"{error}\", error_description=\"{}\"",
                quotable(&message)
            ));
        }
        let value = HeaderValue::from_str(&challenge)
            .unwrap_or_else(|_| HeaderValue::from_static("Bearer realm=\"sophia-gateway\""));
        let mut response = (StatusCode::UNAUTHORIZED, format!("{message}\n")).into_response();
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, value);
        response
    }

    /// The metadata routes (none without OAuth), served without auth.
    pub fn router(&self) -> Router {
        let Some(oauth) = self.oauth.clone() else {
            return Router::new();
        };
        Router::new()
            .route(
                WELL_KNOWN,
                get(|State(o): State<OAuthView>| async move { document(&o, None) }),
            )
            .route(
                &format!("{WELL_KNOWN}/mcp"),
                get(|State(o): State<OAuthView>| async move { document(&o, None) }),
            )
            .route(
                &format!("{WELL_KNOWN}/mcp/{{profile}}"),
                get(
                    |State(o): State<OAuthView>, Path(p): Path<String>| async move {
                        match profile_of(&format!("/mcp/{p}")) {
                            Some(p) => document(&o, Some(p)),
                            None => StatusCode::NOT_FOUND.into_response(),
                        }
                    },
                ),
            )
            .with_state(oauth)
    }
}

/// RFC 9728's document for the audience, or a profile's resource.
fn document(oauth: &OAuthView, profile: Option<&str>) -> Response {
    let resource = match profile {
        Some(p) => format!("{}/{p}", oauth.audience),
        None => oauth.audience.clone(),
    };
    let mut doc = json!({
        "resource": resource,
        "authorization_servers": [oauth.issuer],
        "bearer_methods_supported": ["header"],
        "resource_name": "Sophia Mesh",
    });
    if !oauth.scopes.is_empty() {
        doc["scopes_supported"] = json!(oauth.scopes);
    }
    Json(doc).into_response()
}

/// The profile of a request to `/mcp/{profile}` (one segment of letters,
/// digits, `-` or `_`).
fn profile_of(path: &str) -> Option<&str> {
    let rest = path.strip_prefix("/mcp/")?.trim_end_matches('/');
    let ok = !rest.is_empty()
        && rest.len() <= 64
        && rest
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    ok.then_some(rest)
}

/// `s` as an RFC 6750 quoted-string's content: printable ASCII without `"`
/// and `\`.
fn quotable(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '"' | '\\' => '\'',
            c if c == ' ' || c.is_ascii_graphic() => c,
            _ => '?',
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn challenge() -> Challenge {
        Challenge::new(Some((
            "https://gw.test/".into(),
            OAuthSettings {
                issuer: "https://issuer.test".into(),
                jwks_url: None,
                audience: "https://gw.test/mcp".into(),
                roles_claim: "roles".into(),
                scope_roles: Default::default(),
                min_refetch: std::time::Duration::from_secs(10),
            },
            vec![],
        )))
    }

    #[test]
    fn the_challenge_points_to_the_metadata_of_the_resource_asked_for() {
        let c = challenge();
        let header = |path: &str| {
            let r = c.refuse(&AuthError::InvalidToken("bad \"x\"\n".into()), path);
            r.headers()[header::WWW_AUTHENTICATE]
                .to_str()
                .unwrap()
                .to_owned()
        };
        assert!(header("/mcp").contains(
            "resource_metadata=\"https://gw.test/.well-known/oauth-protected-resource/mcp\""
        ));
        assert!(header("/mcp/ask").contains("oauth-protected-resource/mcp/ask\""));
        assert!(header("/mcp/pulumi/deploy").contains("oauth-protected-resource\""));
        assert!(header("/mcp").contains("error=\"invalid_token\", error_description=\"bad 'x'?\""));
        assert_eq!(
            c.resource_for("/mcp/ask").as_deref(),
            Some("https://gw.test/mcp/ask")
        );
        assert_eq!(c.resource_for("/mcp"), None);
    }
}
