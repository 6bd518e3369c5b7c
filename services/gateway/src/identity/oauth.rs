//! The OAuth 2.1 resource server of the MCP authorization spec: a bearer
//! JWT from the configured issuer, verified with the issuer's JWKS, for
//! this gateway (its audience), names the caller (`sub`) and their roles.
//!
//! Checked, in order: the header's `alg` is an asymmetric one (never `none`,
//! never HS*: a public JWKS key must not double as an HMAC secret); the key
//! its `kid` names is in the JWKS and is of that algorithm; the signature;
//! `iss`, `aud`, `exp` and `nbf` (30 s leeway); then `sub` is the principal
//! and the roles come from the roles claim, `groups`, and mapped scopes.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use base64::Engine as _;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde_json::{Map, Value};

use super::AuthError;
use super::jwks::{Jwks, Lookup};
use crate::mcp::Identity;

/// Clock skew allowed on `exp` and `nbf`, in seconds.
const LEEWAY_S: u64 = 30;
/// The most roles taken from one token; more are ignored (fewer roles can
/// only mean less access).
const MAX_ROLES: usize = 128;
/// The longest role or principal taken from a token.
const MAX_NAME_LEN: usize = 256;
/// The algorithms accepted: asymmetric only.
const ALLOWED: &[(&str, Algorithm)] = &[
    ("RS256", Algorithm::RS256),
    ("RS384", Algorithm::RS384),
    ("RS512", Algorithm::RS512),
    ("PS256", Algorithm::PS256),
    ("PS384", Algorithm::PS384),
    ("PS512", Algorithm::PS512),
    ("ES256", Algorithm::ES256),
    ("ES384", Algorithm::ES384),
    ("EdDSA", Algorithm::EdDSA),
];

/// How OAuth is set up (from [`super::IdentityConfig`]).
#[derive(Clone, Debug)]
pub struct OAuthSettings {
    /// The issuer (`iss`), exactly as the authorization server writes it.
    pub issuer: String,
    /// The JWKS URL; discovered from the issuer's metadata if `None`.
    pub jwks_url: Option<String>,
    /// The gateway's resource identifier, the `aud` tokens must carry.
    pub audience: String,
    /// The claim holding the roles (a string or an array of strings); a
    /// dotted name (`realm_access.roles`) walks into objects.
    pub roles_claim: String,
    /// Scopes that grant a role: scope → role.
    pub scope_roles: HashMap<String, String>,
    /// At most one JWKS refetch per this long for unknown key ids.
    pub min_refetch: Duration,
}

/// Verifies bearer JWTs.
pub struct OAuth {
    settings: OAuthSettings,
    jwks: Jwks,
    verified: super::verified::Verified,
}

/// What the header of a token says, read before anything is verified.
#[derive(serde::Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
}

impl OAuth {
    /// A verifier; fetches nothing until the first token.
    pub fn new(settings: OAuthSettings) -> Self {
        let jwks = Jwks::new(
            settings.issuer.clone(),
            settings.jwks_url.clone(),
            settings.min_refetch,
        );
        Self {
            settings,
            jwks,
            verified: Default::default(),
        }
    }

    /// The settings.
    pub fn settings(&self) -> &OAuthSettings {
        &self.settings
    }

    /// The identity `token` proves, for a request to `resource` (the
    /// audience itself, or a profile's `<audience>/<profile>`).
    pub async fn verify(&self, token: &str, resource: Option<&str>) -> Result<Identity, AuthError> {
        let header = read_header(token)?;
        let alg = ALLOWED
            .iter()
            .find(|(name, _)| *name == header.alg)
            .map(|(_, alg)| *alg)
            .ok_or_else(|| {
                invalid(format!(
                    "the token's algorithm `{}` is not accepted; the issuer must sign with RS256, \
                     PS256, ES256 or EdDSA (never none or HS*)",
                    shown(&header.alg)
                ))
            })?;
        // The key set the signature will be checked against is at least this
        // one: a fetch meanwhile makes a cached answer stale, never wrong.
        let generation = self.jwks.generation();
        let key = match self.jwks.find(header.kid.as_deref()).await {
            Lookup::Found(key) => {
                let current = self.jwks.generation();
                if let Some(identity) = self.verified.get(token, resource, current) {
                    return Ok(identity);
                }
                key
            }
            Lookup::Unknown => {
                return Err(invalid(match &header.kid {
                    Some(kid) => format!(
                        "the issuer has no signing key `{}` (not in its JWKS); get a new token",
                        shown(kid)
                    ),
                    None => {
                        "the token names no key (kid) and the issuer has several; get a new token"
                            .into()
                    }
                }));
            }
            Lookup::Unavailable(why) => return Err(AuthError::KeysUnavailable(why)),
        };
        if !key.algorithms.contains(&alg) {
            return Err(invalid(format!(
                "the token says {alg:?}, but the issuer's key is for {:?}",
                key.algorithms
            )));
        }
        let mut validation = Validation::new(alg);
        validation.leeway = LEEWAY_S;
        validation.validate_nbf = true;
        validation.set_issuer(&[&self.settings.issuer]);
        let mut audiences = vec![self.settings.audience.as_str()];
        audiences.extend(resource);
        validation.set_audience(&audiences);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        // Design note: the claims are read as a JSON map, not a struct of
        // the claims used, because the roles claim is configurable (and may
        // be a path, `realm_access.roles`). That is bounded: the whole token
        // is at most 16 KiB (`MAX_CREDENTIAL_BYTES`), serde_json limits
        // nesting to 128, the payload is read only after the signature
        // verified, and `identity` caps the roles taken from it.
        let claims = jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &validation)
            .map_err(|e| invalid(self.why(e.kind())))?
            .claims;
        let identity = self.identity(&claims)?;
        if let Some(exp) = claims.get("exp").and_then(Value::as_u64) {
            let until = exp.saturating_add(LEEWAY_S);
            self.verified
                .put(token, resource, identity.clone(), until, generation);
        }
        Ok(identity)
    }

    /// What to tell the client about a failed validation; never the token.
    fn why(&self, kind: &ErrorKind) -> String {
        let s = &self.settings;
        match kind {
            ErrorKind::ExpiredSignature => {
                "the token has expired; get a new one from the issuer".into()
            }
            ErrorKind::ImmatureSignature => {
                "the token is not valid yet (its nbf is in the future); check the clocks".into()
            }
            ErrorKind::InvalidAudience => format!(
                "the token is not for this gateway: its audience (aud) must be {} (ask the issuer \
                 for a token for that resource)",
                s.audience
            ),
            ErrorKind::InvalidIssuer => {
                format!(
                    "the token's issuer (iss) is not {}, the issuer this gateway trusts",
                    s.issuer
                )
            }
            ErrorKind::InvalidSignature => "the token's signature does not verify".into(),
            ErrorKind::MissingRequiredClaim(c) => format!("the token has no `{c}` claim"),
            ErrorKind::InvalidAlgorithm => "the token's algorithm does not match its key".into(),
            _ => "the token is not a valid JWT".into(),
        }
    }

    /// `sub` and the roles of verified `claims`.
    fn identity(&self, claims: &Map<String, Value>) -> Result<Identity, AuthError> {
        let principal = claims
            .get("sub")
            .and_then(Value::as_str)
            .filter(|s| {
                !s.is_empty() && s.len() <= MAX_NAME_LEN && !s.chars().any(char::is_control)
            })
            .ok_or_else(|| invalid("the token's subject (sub) is not a usable name".into()))?
            .to_owned();
        let mut roles = BTreeSet::new();
        let mut add = |v: Option<&Value>| {
            for role in names(v) {
                if roles.len() < MAX_ROLES {
                    roles.insert(role);
                }
            }
        };
        add(claim(claims, &self.settings.roles_claim));
        if self.settings.roles_claim != "groups" {
            add(claims.get("groups"));
        }
        if !self.settings.scope_roles.is_empty() {
            let scopes = names(claims.get("scope").or_else(|| claims.get("scp")));
            let mapped: Vec<Value> = scopes
                .iter()
                .filter_map(|s| self.settings.scope_roles.get(s))
                .map(|r| Value::String(r.clone()))
                .collect();
            add(Some(&Value::Array(mapped)));
        }
        Ok(Identity {
            principal,
            roles: roles.into_iter().collect(),
        })
    }
}

/// The claim `name`: a top-level claim of that name, or else a dotted path.
fn claim<'a>(claims: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    claims.get(name).or_else(|| {
        let mut parts = name.split('.');
        let first = claims.get(parts.next()?)?;
        parts.try_fold(first, |v, p| v.get(p))
    })
}

/// Names from a claim: a space-separated string or an array of strings;
/// other values and unusable names are skipped.
fn names(v: Option<&Value>) -> Vec<String> {
    let words: Vec<&str> = match v {
        Some(Value::String(s)) => s.split_whitespace().collect(),
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    words
        .into_iter()
        .filter(|w| !w.is_empty() && w.len() <= MAX_NAME_LEN && !w.chars().any(char::is_control))
        .take(MAX_ROLES)
        .map(str::to_owned)
        .collect()
}

/// The header of `token`, which the caller has already checked is
/// JWT-shaped and of bounded size.
fn read_header(token: &str) -> Result<Header, AuthError> {
    let encoded = token.split('.').next().unwrap_or_default();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(encoded)
        .map_err(|_| invalid("the token's header is not base64url".into()))?;
    serde_json::from_slice(&bytes)
        .map_err(|_| invalid("the token's header is not a JWT header (JSON with alg)".into()))
}

fn invalid(description: String) -> AuthError {
    AuthError::InvalidToken(description)
}

/// A value from a token, safe to show: printable ASCII, at most 64 chars.
fn shown(s: &str) -> String {
    let mut out: String = s
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(64)
        .collect();
    if s.len() > out.len() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn oauth(roles_claim: &str) -> OAuth {
        OAuth::new(OAuthSettings {
            issuer: "https://issuer.test".into(),
            jwks_url: Some("http://127.0.0.1:9/jwks".into()),
            audience: "https://gw.test/mcp".into(),
            roles_claim: roles_claim.into(),
            scope_roles: HashMap::from([("mcp:admin".into(), "admin".into())]),
            min_refetch: Duration::from_secs(10),
        })
    }

    #[test]
    fn roles_come_from_the_claim_groups_and_mapped_scopes() {
        let claims = serde_json::json!({"sub": "alice", "roles": "analyst viewer",
            "groups": ["ops", 7, {"x": 1}], "scope": "openid mcp:admin"});
        let id = oauth("roles")
            .identity(claims.as_object().unwrap())
            .unwrap();
        assert_eq!(id.principal, "alice");
        assert_eq!(id.roles, ["admin", "analyst", "ops", "viewer"]);
        let nested = serde_json::json!({"sub": "bob", "realm_access": {"roles": ["operator"]}});
        let id = oauth("realm_access.roles")
            .identity(nested.as_object().unwrap())
            .unwrap();
        assert_eq!(id.roles, ["operator"]);
    }

    #[test]
    fn none_and_hmac_are_refused_before_any_key_is_looked_up() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        for alg in ["none", "HS256", "nOnE"] {
            let header = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(format!("{{\"alg\":\"{alg}\",\"typ\":\"JWT\"}}"));
            let token = format!("{header}.eyJzdWIiOiJ4In0.");
            let err = rt
                .block_on(oauth("roles").verify(&token, None))
                .unwrap_err();
            assert!(
                matches!(&err, AuthError::InvalidToken(d) if d.contains("not accepted")),
                "{err:?}"
            );
        }
    }
}
