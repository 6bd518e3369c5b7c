//! Gong's REST API v2 over HTTP: Basic auth with an access key and its
//! secret, bounded retries of 429s as `Retry-After` says, and every failure
//! sorted into a [`GongError`] that says what the user can do.

use std::time::{Duration, SystemTime};

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::time::Instant;

use crate::api::ErrorBody;

/// The environment variable holding the access key.
pub const ACCESS_KEY_ENV: &str = "GONG_ACCESS_KEY";
/// The environment variable holding the access key's secret.
pub const ACCESS_KEY_SECRET_ENV: &str = "GONG_ACCESS_KEY_SECRET";

/// How a request to Gong failed, by what the user can do about it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GongError {
    /// The worker was started without credentials.
    #[error(
        "the gong-worker has no Gong credentials: set {} (from Gong's Company settings → API) and restart it",
        .missing.join(" and ")
    )]
    MissingCredentials {
        /// The environment variables to set.
        missing: Vec<&'static str>,
    },
    /// 401 or 403: the key or secret is wrong, or lacks a scope.
    #[error(
        "Gong refused the credentials (HTTP {status}{}): check GONG_ACCESS_KEY and \
         GONG_ACCESS_KEY_SECRET, and that the key has the scope {scope}",
        detail_suffix(.detail)
    )]
    Unauthorized {
        /// 401 or 403.
        status: u16,
        /// The authorization scope the request needs.
        scope: &'static str,
        /// Gong's `errors`, if it sent any.
        detail: String,
    },
    /// 404: nothing matched, e.g. an unknown call id.
    #[error(
        "{what} was not found in Gong{}; check the id (gong_list_calls lists the calls)",
        detail_suffix(.detail)
    )]
    NotFound {
        /// What was asked for, e.g. `call 7782342274025937895`.
        what: String,
        /// Gong's `errors`.
        detail: String,
    },
    /// 429 after the retries, or with a `Retry-After` longer than the
    /// worker waits.
    #[error("Gong is rate limiting this API key (HTTP 429){}", retry_hint(*.retry_after))]
    RateLimited {
        /// How long Gong asked to wait, if it said.
        retry_after: Option<Duration>,
    },
    /// Any other 4xx: Gong rejected the request as asked.
    #[error("Gong rejected the request (HTTP {status}){}", detail_suffix(.detail))]
    Rejected {
        /// The status.
        status: u16,
        /// Gong's `errors`.
        detail: String,
    },
    /// 5xx, or Gong could not be reached.
    #[error("Gong is unavailable ({detail}); try again in a minute")]
    Unavailable {
        /// The status and body excerpt, or the connection error.
        detail: String,
    },
    /// No answer in time.
    #[error("Gong did not answer within {after:?}; try again, or a narrower request")]
    Timeout {
        /// The request timeout.
        after: Duration,
    },
    /// A 200 whose body is not what Gong documents.
    #[error("Gong sent a response this worker cannot read ({detail})")]
    Malformed {
        /// What was wrong.
        detail: String,
    },
}

fn detail_suffix(detail: &str) -> String {
    if detail.is_empty() {
        String::new()
    } else {
        format!(": {detail}")
    }
}

fn retry_hint(after: Option<Duration>) -> String {
    match after {
        Some(d) => format!("; retry in {} s", d.as_secs_f64().ceil() as u64),
        None => "; retry in a few seconds".into(),
    }
}

/// The credentials, kept out of `Debug` output.
#[derive(Clone)]
struct Credentials {
    key: String,
    secret: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credentials(..)")
    }
}

/// How the client talks to Gong. Its `Debug` output leaves out the
/// credentials.
#[derive(Clone)]
pub struct ClientConfig {
    /// E.g. `https://api.gong.io` (without `/v2`).
    pub base_url: String,
    /// The access key, if set.
    pub access_key: Option<String>,
    /// The access key's secret, if set. Never logged.
    pub access_key_secret: Option<String>,
    /// Each HTTP request's timeout.
    pub timeout: Duration,
    /// How many times a 429 is retried.
    pub max_retries: u32,
    /// The longest `Retry-After` the worker waits out; a longer one is
    /// returned to the caller at once.
    pub max_retry_wait: Duration,
}

impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig")
            .field("base_url", &self.base_url)
            .field("access_key", &self.access_key.as_ref().map(|_| ".."))
            .field("timeout", &self.timeout)
            .field("max_retries", &self.max_retries)
            .field("max_retry_wait", &self.max_retry_wait)
            .finish_non_exhaustive()
    }
}

/// A client of one Gong account.
#[derive(Clone, Debug)]
pub struct GongClient {
    http: reqwest::Client,
    config: ClientConfig,
    credentials: Option<Credentials>,
}

/// A request: `GET` with a query, or `POST` with a JSON body.
pub enum Request<'a, B: Serialize> {
    /// `GET path?query`.
    Get(&'a [(&'a str, String)]),
    /// `POST path` with `body`.
    Post(&'a B),
}

impl GongClient {
    /// A client; credentials that are missing or empty are reported by
    /// [`GongClient::missing_credentials`] and fail every request.
    pub fn new(config: ClientConfig) -> Self {
        // reqwest is built without a default crypto provider; use ring, as NATS does.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(config.timeout)
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        let credentials = match (&config.access_key, &config.access_key_secret) {
            (Some(k), Some(s)) if !k.trim().is_empty() && !s.trim().is_empty() => {
                Some(Credentials {
                    key: k.trim().to_owned(),
                    secret: s.trim().to_owned(),
                })
            }
            _ => None,
        };
        Self {
            http,
            config,
            credentials,
        }
    }

    /// The environment variables still to set (empty when both are).
    pub fn missing_credentials(&self) -> Vec<&'static str> {
        let unset = |v: &Option<String>| v.as_deref().is_none_or(|v| v.trim().is_empty());
        let mut missing = Vec::new();
        if unset(&self.config.access_key) {
            missing.push(ACCESS_KEY_ENV);
        }
        if unset(&self.config.access_key_secret) {
            missing.push(ACCESS_KEY_SECRET_ENV);
        }
        missing
    }

    /// Sends `request` to `path` (e.g. `/v2/calls`), retrying 429s, and
    /// decodes the answer. `scope` is the authorization scope the endpoint
    /// needs (named in a 401/403); `what` names the object asked for (named
    /// in a 404). `deadline` is when the caller stops waiting: a
    /// `Retry-After` that ends later is returned instead of waited out.
    pub async fn send<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        request: Request<'_, B>,
        scope: &'static str,
        what: &str,
        deadline: Instant,
    ) -> Result<T, GongError> {
        let Some(creds) = &self.credentials else {
            return Err(GongError::MissingCredentials {
                missing: self.missing_credentials(),
            });
        };
        let url = format!("{}{path}", self.config.base_url.trim_end_matches('/'));
        let mut attempt = 0;
        loop {
            let req = match &request {
                // reqwest's `query` needs a feature the workspace leaves
                // off; `Url` encodes the same.
                Request::Get(query) => match reqwest::Url::parse_with_params(&url, query.iter()) {
                    Ok(u) => self.http.get(u),
                    Err(e) => {
                        return Err(GongError::Unavailable {
                            detail: format!("GONG_BASE_URL is not a URL ({e})"),
                        });
                    }
                },
                Request::Post(body) => self.http.post(&url).json(body),
            };
            let req = req.basic_auth(&creds.key, Some(&creds.secret));
            match self.attempt(req, scope, what).await {
                Err(GongError::RateLimited { retry_after }) => {
                    let wait = retry_after.unwrap_or(DEFAULT_RETRY_WAIT);
                    let in_time = Instant::now() + wait < deadline;
                    if attempt >= self.config.max_retries
                        || wait > self.config.max_retry_wait
                        || !in_time
                    {
                        return Err(GongError::RateLimited { retry_after });
                    }
                    attempt += 1;
                    tracing::info!(
                        path,
                        attempt,
                        wait_ms = wait.as_millis() as u64,
                        "Gong answered 429; retrying"
                    );
                    tokio::time::sleep(wait).await;
                }
                other => return other,
            }
        }
    }

    async fn attempt<T: DeserializeOwned>(
        &self,
        req: reqwest::RequestBuilder,
        scope: &'static str,
        what: &str,
    ) -> Result<T, GongError> {
        let response = req.send().await.map_err(|e| self.transport(e))?;
        let status = response.status().as_u16();
        let retry_after = retry_after(response.headers());
        let body = response.bytes().await.map_err(|e| self.transport(e))?;
        if (200..300).contains(&status) {
            return serde_json::from_slice(&body).map_err(|e| GongError::Malformed {
                detail: format!("the body is not Gong's JSON ({e})"),
            });
        }
        let detail = error_detail(&body);
        Err(match status {
            401 | 403 => GongError::Unauthorized {
                status,
                scope,
                detail,
            },
            404 => GongError::NotFound {
                what: what.to_owned(),
                detail,
            },
            429 => GongError::RateLimited { retry_after },
            408 | 500..=599 => GongError::Unavailable {
                detail: format!("HTTP {status}{}", detail_suffix(&detail)),
            },
            _ => GongError::Rejected { status, detail },
        })
    }

    fn transport(&self, e: reqwest::Error) -> GongError {
        if e.is_timeout() {
            GongError::Timeout {
                after: self.config.timeout,
            }
        } else {
            // Without the URL: it is ours, and the error says enough.
            GongError::Unavailable {
                detail: e.without_url().to_string(),
            }
        }
    }
}

/// How long to wait after a 429 that names no time.
const DEFAULT_RETRY_WAIT: Duration = Duration::from_secs(1);

/// The longest `Retry-After` believed: a larger number (or `inf`) is
/// reported as this, never slept on or overflowed.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

/// `Retry-After` as a duration: seconds (fractions tolerated) or an
/// HTTP-date; absent, negative, `NaN` or unreadable values are `None`.
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    parse_retry_after(headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?)
}

/// A `Retry-After` value, bounded as [`retry_after`] says.
pub(crate) fn parse_retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<f64>() {
        if secs.is_nan() || secs < 0.0 {
            return None;
        }
        return Some(
            Duration::try_from_secs_f64(secs).map_or(MAX_RETRY_AFTER, |d| d.min(MAX_RETRY_AFTER)),
        );
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(
        at.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO)
            .min(MAX_RETRY_AFTER),
    )
}

/// Gong's `{"requestId", "errors": [..]}` as one line (at most 300
/// characters), or an excerpt of a body that is not that.
fn error_detail(body: &[u8]) -> String {
    let text = match serde_json::from_slice::<ErrorBody>(body) {
        Ok(e) if !e.errors.is_empty() => e.errors.join("; "),
        _ => String::from_utf8_lossy(body).trim().to_owned(),
    };
    let mut s: String = text.chars().take(300).collect();
    if text.chars().count() > 300 {
        s.push('…');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_retry_after_is_bounded_and_never_panics() {
        assert_eq!(parse_retry_after("2"), Some(Duration::from_secs(2)));
        assert_eq!(parse_retry_after(" 0.5 "), Some(Duration::from_millis(500)));
        for huge in ["inf", "1e300", "18446744073709551616"] {
            assert_eq!(parse_retry_after(huge), Some(MAX_RETRY_AFTER), "{huge}");
        }
        for junk in ["NaN", "-1", "soon", ""] {
            assert_eq!(parse_retry_after(junk), None, "{junk}");
        }
        // A date in the past means now.
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn gongs_error_bodies_become_one_line() {
        let body = br#"{"requestId":"x","errors":["No calls found corresponding to the provided filters"]}"#;
        assert_eq!(
            error_detail(body),
            "No calls found corresponding to the provided filters"
        );
        assert_eq!(error_detail(b"<html>oops</html>"), "<html>oops</html>");
        assert_eq!(error_detail(&[0xff; 400]).chars().count(), 301);
    }

    #[test]
    fn credentials_never_show_in_debug_output() {
        let client = GongClient::new(ClientConfig {
            base_url: "http://127.0.0.1:9".into(),
            access_key: Some("key-123".into()),
            access_key_secret: Some("secret-456".into()),
            timeout: Duration::from_secs(1),
            max_retries: 1,
            max_retry_wait: Duration::from_secs(1),
        });
        let debug = format!("{client:?}");
        assert!(
            !debug.contains("secret-456") && !debug.contains("key-123"),
            "{debug}"
        );
        assert!(client.missing_credentials().is_empty());
    }
}
