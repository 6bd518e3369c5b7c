//! Models of providers that are asked rather than listed (`discover = true`
//! in the configuration): the auto-detected local Ollama, or a vLLM whose
//! model loads after this worker starts. What each said last is kept, to
//! route `default` (and models that appeared after start) and to say on
//! `/health` what is missing.

use std::collections::HashMap;
use std::time::Duration;

use parking_lot::Mutex;
use serde_json::Value;

use crate::provider::Provider;

/// How long asking a provider for its models may take.
const ASK_TIMEOUT: Duration = Duration::from_secs(2);

/// What a provider said when last asked for its models.
#[derive(Clone, Debug, PartialEq)]
pub enum Seen {
    /// It answered with these model names (possibly none).
    Models(Vec<String>),
    /// It did not answer, and why.
    Unreachable(String),
}

/// The last answers, by provider name.
#[derive(Debug, Default)]
pub struct Discovery {
    last: Mutex<HashMap<String, Seen>>,
}

impl Discovery {
    /// Asks `provider` for its models now and remembers the answer.
    pub async fn ask(&self, provider: &Provider) -> Seen {
        let seen = match tokio::time::timeout(ASK_TIMEOUT, provider.list_models()).await {
            Ok(Ok(list)) => Seen::Models(model_ids(&list)),
            Ok(Err(e)) => Seen::Unreachable(e.to_string()),
            Err(_) => Seen::Unreachable(format!("no answer within {ASK_TIMEOUT:?}")),
        };
        self.last
            .lock()
            .insert(provider.config.name.clone(), seen.clone());
        seen
    }

    /// What `provider` said last, if it was asked.
    pub fn seen(&self, provider: &str) -> Option<Seen> {
        self.last.lock().get(provider).cloned()
    }
}

/// The model ids of an OpenAI-style `GET /models` answer.
pub fn model_ids(list: &Value) -> Vec<String> {
    list["data"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["id"].as_str().map(str::to_owned))
        .collect()
}
