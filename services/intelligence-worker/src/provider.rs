//! One OpenAI-compatible provider: a single HTTP attempt, its failures
//! sorted by what the router can do about them.

use std::time::Duration;

use futures::StreamExt;
use serde_json::Value;

use crate::chat::{Assembler, Delta};
use crate::config::ProviderConfig;

/// How one attempt at a provider failed.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum ProviderError {
    /// No answer within the provider's timeout.
    #[error("{provider} did not answer within {timeout:?}")]
    Timeout {
        /// Provider name.
        provider: String,
        /// Its timeout.
        timeout: Duration,
    },
    /// 429: the provider asks us to slow down.
    #[error("{provider} is rate limiting (429){}", retry_after.map(|d| format!("; retry after {d:?}")).unwrap_or_default())]
    RateLimited {
        /// Provider name.
        provider: String,
        /// From the `Retry-After` header.
        retry_after: Option<Duration>,
    },
    /// 5xx, or a connection that failed.
    #[error("{provider} failed: {detail}")]
    Unavailable {
        /// Provider name.
        provider: String,
        /// Status and body excerpt, or the connection error.
        detail: String,
    },
    /// 4xx other than 408 and 429: the request itself is wrong; another
    /// provider would refuse it too.
    #[error("{provider} rejected the request ({status}): {body}")]
    Rejected {
        /// Provider name.
        provider: String,
        /// HTTP status.
        status: u16,
        /// Body excerpt.
        body: String,
    },
    /// The response could not be understood (bad JSON or SSE).
    #[error("{provider} sent a malformed response: {detail}")]
    Malformed {
        /// Provider name.
        provider: String,
        /// What was wrong.
        detail: String,
    },
    /// A stream ended before the model finished.
    #[error("{provider}'s stream was cut off after {chunks} chunks, before the model finished")]
    CutOff {
        /// Provider name.
        provider: String,
        /// Chunks received.
        chunks: usize,
    },
    /// The API key's environment variable is not set.
    #[error("{provider} needs an API key: set the environment variable {var}")]
    MissingKey {
        /// Provider name.
        provider: String,
        /// The variable.
        var: String,
    },
}

impl ProviderError {
    /// Whether another attempt (here later, or at another provider) may work.
    pub fn is_retryable(&self) -> bool {
        !matches!(self, ProviderError::Rejected { .. })
    }

    /// Whether the failure counts against the provider's breaker.
    pub fn counts_against_provider(&self) -> bool {
        !matches!(
            self,
            ProviderError::Rejected { .. } | ProviderError::MissingKey { .. }
        )
    }
}

/// A configured provider with its HTTP client.
#[derive(Debug, Clone)]
pub struct Provider {
    /// Its configuration.
    pub config: ProviderConfig,
    http: reqwest::Client,
    api_key: Option<String>,
}

fn excerpt(body: &str) -> String {
    let mut s: String = body.chars().take(300).collect();
    if body.len() > s.len() {
        s.push('…');
    }
    s
}

/// The longest `Retry-After` honoured: a provider's number is not trusted
/// to hold a provider back (or overflow a clock) for longer.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// `Retry-After` as seconds (the HTTP-date form is treated as absent),
/// capped at [`MAX_RETRY_AFTER`]; `inf`, `NaN` or `1e300` never panic.
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    retry_after_secs(headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?)
}

/// A `Retry-After` value as seconds, bounded as [`retry_after`] says.
pub(crate) fn retry_after_secs(v: &str) -> Option<Duration> {
    let secs = v.trim().parse::<f64>().ok().filter(|s| *s >= 0.0)?;
    Some(Duration::try_from_secs_f64(secs).map_or(MAX_RETRY_AFTER, |d| d.min(MAX_RETRY_AFTER)))
}

impl Provider {
    /// A provider; its API key is read from the environment now.
    pub fn new(config: ProviderConfig) -> Self {
        // reqwest is built without a default crypto provider; use ring, as NATS does.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let api_key = config
            .api_key_env
            .as_ref()
            .and_then(|var| std::env::var(var).ok())
            .filter(|k| !k.is_empty());
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        Self {
            config,
            http,
            api_key,
        }
    }

    fn name(&self) -> String {
        self.config.name.clone()
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.config.timeout_ms)
    }

    /// Runs one step of an attempt within the provider's timeout; a transport
    /// failure means the provider is unavailable.
    async fn timed<T>(
        &self,
        step: impl std::future::Future<Output = Result<T, reqwest::Error>>,
    ) -> Result<T, ProviderError> {
        match tokio::time::timeout(self.timeout(), step).await {
            Err(_) => Err(ProviderError::Timeout {
                provider: self.name(),
                timeout: self.timeout(),
            }),
            Ok(Err(e)) => Err(ProviderError::Unavailable {
                provider: self.name(),
                detail: e.to_string(),
            }),
            Ok(Ok(v)) => Ok(v),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}/{}", self.config.base_url.trim_end_matches('/'), path)
    }

    fn request(&self, path: &str, body: &Value) -> Result<reqwest::RequestBuilder, ProviderError> {
        let mut req = self.http.post(self.url(path)).json(body);
        match (&self.config.api_key_env, &self.api_key) {
            (Some(_), Some(key)) => req = req.bearer_auth(key),
            (Some(var), None) => {
                return Err(ProviderError::MissingKey {
                    provider: self.name(),
                    var: var.clone(),
                });
            }
            (None, _) => {}
        }
        Ok(req)
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<reqwest::Response, ProviderError> {
        let response = self.timed(req.send()).await?;
        let status = response.status().as_u16();
        if response.status().is_success() {
            return Ok(response);
        }
        let after = retry_after(response.headers());
        let body = excerpt(&response.text().await.unwrap_or_default());
        Err(match status {
            429 => ProviderError::RateLimited {
                provider: self.name(),
                retry_after: after,
            },
            408 | 500..=599 => ProviderError::Unavailable {
                provider: self.name(),
                detail: format!("HTTP {status}: {body}"),
            },
            _ => ProviderError::Rejected {
                provider: self.name(),
                status,
                body,
            },
        })
    }

    /// POSTs `body` to `path` (e.g. `chat/completions`, `embeddings`) and
    /// returns the JSON response.
    pub async fn post_json(&self, path: &str, body: &Value) -> Result<Value, ProviderError> {
        let response = self.send(self.request(path, body)?).await?;
        let bytes = self.timed(response.bytes()).await?;
        serde_json::from_slice(&bytes).map_err(|e| ProviderError::Malformed {
            provider: self.name(),
            detail: format!("not JSON ({e})"),
        })
    }

    /// Streams a chat completion (`stream: true`, usage included), calling
    /// `on_delta` as text and tool-call fragments arrive, and returns the
    /// assembled completion. `relayed` is set once anything was relayed, so
    /// the caller knows a retry elsewhere would repeat output.
    pub async fn chat_stream(
        &self,
        body: &Value,
        on_delta: &mut (dyn FnMut(Delta) + Send),
        relayed: &mut bool,
    ) -> Result<Value, ProviderError> {
        let mut body = body.clone();
        body["stream"] = Value::Bool(true);
        body["stream_options"] = serde_json::json!({"include_usage": true});
        let response = self.send(self.request("chat/completions", &body)?).await?;
        let mut events = sse_stream::SseStream::from_bytes_stream(response.bytes_stream());
        let mut assembler = Assembler::new();
        loop {
            let next = match tokio::time::timeout(self.timeout(), events.next()).await {
                Err(_) => {
                    return Err(ProviderError::Timeout {
                        provider: self.name(),
                        timeout: self.timeout(),
                    });
                }
                Ok(next) => next,
            };
            let event = match next {
                None => break,
                Some(Err(e)) => {
                    return Err(ProviderError::Malformed {
                        provider: self.name(),
                        detail: format!("bad SSE ({e})"),
                    });
                }
                Some(Ok(event)) => event,
            };
            let Some(data) = event.data else { continue };
            let data = data.trim();
            if data.is_empty() {
                continue;
            }
            if data == "[DONE]" {
                return Ok(assembler.finish());
            }
            let chunk: Value =
                serde_json::from_str(data).map_err(|e| ProviderError::Malformed {
                    provider: self.name(),
                    detail: format!("an SSE event is not JSON ({e})"),
                })?;
            for delta in assembler.push(&chunk) {
                *relayed = true;
                on_delta(delta);
            }
        }
        // No [DONE]: complete only if the model said it finished.
        if assembler.finished() {
            Ok(assembler.finish())
        } else {
            Err(ProviderError::CutOff {
                provider: self.name(),
                chunks: assembler.chunks(),
            })
        }
    }

    /// `GET /models`: whether the provider answers, and what it lists.
    pub async fn list_models(&self) -> Result<Value, ProviderError> {
        let mut req = self.http.get(self.url("models"));
        if let Some(key) = &self.api_key {
            req = req.bearer_auth(key);
        }
        let response = self.send(req).await?;
        response.json().await.map_err(|e| ProviderError::Malformed {
            provider: self.name(),
            detail: e.to_string(),
        })
    }
}

#[cfg(test)]
mod retry_after_tests {
    use super::*;

    #[test]
    fn any_retry_after_a_provider_sends_is_bounded() {
        let with = |v: &str| {
            let mut h = reqwest::header::HeaderMap::new();
            h.insert(reqwest::header::RETRY_AFTER, v.parse().unwrap());
            retry_after(&h)
        };
        assert_eq!(with("1.5"), Some(Duration::from_millis(1500)));
        for huge in ["inf", "1e300", "18446744073709551616"] {
            assert_eq!(with(huge), Some(MAX_RETRY_AFTER), "{huge}");
        }
        assert_eq!(with("NaN"), None);
        assert_eq!(with("-1"), None);
        assert_eq!(with("Wed, 21 Oct 2015 07:28:00 GMT"), None);
    }
}
