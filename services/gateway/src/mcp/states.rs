//! The key that seals `requestState` for stateless (2026-07-28) clients
//! and what it seals ([`Sealed`]): [`RequestStates`], an HMAC-SHA256 codec
//! (rmcp's [`RequestStateCodec`]) under a key every gateway replica shares,
//! so that a retry may reach any of them. `rounds.rs` decides what to seal
//! and binds it to the caller and the request.

use rmcp::model::{RequestStateCodec, SealOptions};
use sophia_kit::kv::{Bucket, BucketConfig, KvErrorKind};

use super::*;

/// The bucket holding the key that seals `requestState`.
pub const KEYS_BUCKET: &str = "sophia_gateway_keys";
/// The key's name in [`KEYS_BUCKET`].
const STATE_KEY: &str = "request-state";
/// How long a person may take to answer before the retry is refused.
pub const STATE_TTL: Duration = Duration::from_secs(30 * 60);

/// Seals and opens `requestState`.
#[derive(Clone)]
pub struct RequestStates {
    codec: Arc<RequestStateCodec>,
}

/// Why the sealing key could not be had.
#[derive(Debug, thiserror::Error)]
pub enum StateKeyError {
    /// The OS gave no random bytes.
    #[error("no random bytes for the requestState key: {0}")]
    Random(getrandom::Error),
    /// The key bucket could not be read or written.
    #[error("the requestState key in JetStream KV ({KEYS_BUCKET}): {0}")]
    Store(#[from] sophia_kit::kv::KvError),
    /// The stored key is not one (too short, not base64).
    #[error("the requestState key stored in {KEYS_BUCKET} is unusable: {0}")]
    Corrupt(String),
}

impl RequestStates {
    /// A key of this process alone (stdio, where one process serves the
    /// client); HTTP replicas use [`RequestStates::shared`].
    pub fn ephemeral() -> Result<Self, StateKeyError> {
        Self::from_key(&random_key()?)
    }

    /// The key every gateway replica on the bus shares: the first replica
    /// creates it in [`KEYS_BUCKET`] (`create`: first wins), the others
    /// read it.
    pub async fn shared(client: &async_nats::Client) -> Result<Self, StateKeyError> {
        let config = BucketConfig::new(
            KEYS_BUCKET,
            "Sophia Mesh gateway keys (requestState integrity)",
        );
        let bucket = Bucket::open(client, config).await?;
        let fresh = base64::engine::general_purpose::STANDARD.encode(random_key()?);
        let stored =
            match bucket.create(STATE_KEY, &fresh).await {
                Ok(_) => fresh,
                Err(e) if e.kind() == KvErrorKind::Conflict => bucket
                    .get::<String>(STATE_KEY)
                    .await?
                    .ok_or_else(|| StateKeyError::Corrupt("created, then gone".into()))?,
                Err(e) => return Err(e.into()),
            };
        let key = base64::engine::general_purpose::STANDARD
            .decode(stored)
            .map_err(|e| StateKeyError::Corrupt(e.to_string()))?;
        Self::from_key(&key)
    }

    fn from_key(key: &[u8]) -> Result<Self, StateKeyError> {
        let codec = RequestStateCodec::try_new(key.to_vec())
            .map_err(|e| StateKeyError::Corrupt(e.to_string()))?;
        Ok(Self {
            codec: Arc::new(codec),
        })
    }

    /// Seals `value` bound to `binding`, without expiry (task ids).
    pub(super) fn seal_for<T: serde::Serialize>(
        &self,
        value: &T,
        binding: &[u8],
    ) -> Option<String> {
        let options = SealOptions::new().associated_data(binding);
        self.codec.seal_json_with(value, &options).ok()
    }

    /// Opens what [`RequestStates::seal_for`] sealed with `binding`.
    pub(super) fn open_for<T: serde::de::DeserializeOwned>(
        &self,
        token: &str,
        binding: &[u8],
    ) -> Option<T> {
        self.codec.open_json_with(token, binding).ok()
    }

    pub(super) fn seal(&self, state: &Sealed, binding: &[u8]) -> String {
        let options = SealOptions::new().associated_data(binding).ttl(STATE_TTL);
        self.codec
            .seal_json_with(state, &options)
            // A struct of a bool and JSON always serializes.
            .unwrap_or_default()
    }

    pub(super) fn open(&self, token: &str, binding: &[u8]) -> Result<Sealed, McpError> {
        self.codec.open_json_with(token, binding).map_err(|e| {
            let why = match e {
                rmcp::model::RequestStateError::Expired => format!(
                    "it has expired (an answer is awaited at most {} minutes)",
                    STATE_TTL.as_secs() / 60
                ),
                _ => "this mesh did not issue it for this caller, tool and arguments (it was \
                      altered, forged, or the arguments or caller changed)"
                    .to_owned(),
            };
            McpError::invalid_params(
                format!(
                    "requestState refused: {why}. Call the tool again without requestState and \
                     inputResponses to be asked afresh"
                ),
                None,
            )
        })
    }
}

fn random_key() -> Result<Vec<u8>, StateKeyError> {
    let mut key = vec![0u8; RequestStateCodec::MIN_KEY_LENGTH];
    getrandom::fill(&mut key).map_err(StateKeyError::Random)?;
    Ok(key)
}

/// What `requestState` carries between rounds.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub(super) struct Sealed {
    /// The person confirmed the agent profile's question for this call.
    #[serde(default)]
    pub confirmed: bool,
    /// What the worker kept ([`InputRequired::state`]).
    #[serde(default)]
    pub tool: Option<Value>,
}
