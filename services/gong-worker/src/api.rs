//! Gong's REST API v2 request and response bodies, as its published
//! reference (help.gong.io/apidocs, "Gong API V2") names them: `GET
//! /v2/calls`, `POST /v2/calls/extensive`, `POST /v2/calls/transcript`, and
//! the error body `{requestId, errors}`.
//!
//! Reading is lenient where Gong's answers may vary without being wrong: an
//! id may come as a string or a number, a list or object may be `null` or
//! missing, unknown fields are ignored. Anything else is refused as
//! malformed, never a panic.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Number, Value, json};

/// `records`: paging information of a list answer.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Records {
    /// Total number of records matching the filter.
    pub total_records: Option<u64>,
    /// Records in this page.
    pub current_page_size: Option<u64>,
    /// This page's number.
    pub current_page_number: Option<u64>,
    /// Present only when there are more records: pass it to get the next page.
    pub cursor: Option<String>,
}

/// A call's metadata: an item of `/v2/calls`'s `calls`, or an extensive
/// call's `metaData`. Serialized back with Gong's field names.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct CallMeta {
    /// Gong's numeric call id (up to 20 digits), as a string.
    #[serde(deserialize_with = "id")]
    pub id: Option<String>,
    /// The call's page in Gong's web application.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The title.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Scheduled start (ISO-8601).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scheduled: Option<String>,
    /// When recording started (ISO-8601).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started: Option<String>,
    /// Length in seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration: Option<Number>,
    /// The user who hosted the call.
    #[serde(deserialize_with = "id", skip_serializing_if = "Option::is_none")]
    pub primary_user_id: Option<String>,
    /// Inbound, Outbound, Conference or Unknown.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub direction: Option<String>,
    /// The system the call was made with (e.g. Zoom).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    /// Internal, External or Unknown.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// Audio or Video.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub media: Option<String>,
    /// The language code, e.g. `eng`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    /// The workspace.
    #[serde(deserialize_with = "id", skip_serializing_if = "Option::is_none")]
    pub workspace_id: Option<String>,
}

/// `GET /v2/calls`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct CallsPage {
    /// Paging.
    #[serde(deserialize_with = "nullable")]
    pub records: Records,
    /// The calls of this page.
    #[serde(deserialize_with = "nullable")]
    pub calls: Vec<CallMeta>,
}

/// A participant of a call (`parties` of an extensive call).
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Party {
    /// The party's id in the call.
    #[serde(deserialize_with = "id", skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Email address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email_address: Option<String>,
    /// Name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Job title.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// The Gong user, for the company's own people.
    #[serde(deserialize_with = "id", skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// The id the transcript's monologues name.
    #[serde(deserialize_with = "id", skip_serializing_if = "Option::is_none")]
    pub speaker_id: Option<String>,
    /// Internal, External or Unknown.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub affiliation: Option<String>,
    /// Phone number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phone_number: Option<String>,
}

/// A topic discussed, and for how long (seconds).
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct Topic {
    /// The topic.
    pub name: Option<String>,
    /// Seconds spent on it.
    pub duration: Option<Number>,
}

/// An extensive call's `content` (what `contentSelector` asked for).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct Content {
    /// Topics.
    #[serde(deserialize_with = "nullable")]
    pub topics: Vec<Topic>,
    /// Gong's generated summary of the call.
    pub brief: Option<String>,
}

/// An item of `/v2/calls/extensive`'s `calls`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ExtensiveCall {
    /// The call's metadata.
    #[serde(deserialize_with = "nullable")]
    pub meta_data: CallMeta,
    /// Participants.
    #[serde(deserialize_with = "nullable")]
    pub parties: Vec<Party>,
    /// Topics and brief.
    #[serde(deserialize_with = "nullable")]
    pub content: Content,
}

/// `POST /v2/calls/extensive`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct ExtensivePage {
    /// The calls.
    #[serde(deserialize_with = "nullable")]
    pub calls: Vec<ExtensiveCall>,
}

/// A sentence of a monologue; times in milliseconds from the call's start.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct Sentence {
    /// Start, ms.
    pub start: Option<Number>,
    /// End, ms.
    pub end: Option<Number>,
    /// The words.
    #[serde(deserialize_with = "nullable")]
    pub text: String,
}

/// A monologue: one speaker's consecutive sentences.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Monologue {
    /// Matches a party's `speakerId`.
    #[serde(deserialize_with = "id")]
    pub speaker_id: Option<String>,
    /// The topic Gong put it under.
    pub topic: Option<String>,
    /// The sentences.
    #[serde(deserialize_with = "nullable")]
    pub sentences: Vec<Sentence>,
}

/// One call's transcript.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct CallTranscript {
    /// The call.
    #[serde(deserialize_with = "id")]
    pub call_id: Option<String>,
    /// Its monologues, in order.
    #[serde(deserialize_with = "nullable")]
    pub transcript: Vec<Monologue>,
}

/// `POST /v2/calls/transcript`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TranscriptPage {
    /// One entry per call.
    #[serde(deserialize_with = "nullable")]
    pub call_transcripts: Vec<CallTranscript>,
}

/// An error answer: `{"requestId": "...", "errors": ["..."]}`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct ErrorBody {
    /// What went wrong.
    #[serde(deserialize_with = "nullable")]
    pub errors: Vec<String>,
}

/// The body of `/v2/calls/extensive` for these calls: their metadata,
/// parties, topics and brief.
pub fn extensive_request(call_ids: &[&str]) -> Value {
    json!({
        "filter": {"callIds": call_ids},
        "contentSelector": {
            "exposedFields": {"parties": true, "content": {"topics": true, "brief": true}}
        }
    })
}

/// The body of `/v2/calls/transcript` for these calls.
pub fn transcript_request(call_ids: &[&str]) -> Value {
    json!({"filter": {"callIds": call_ids}})
}

/// An id given as a string or a number (or null).
fn id<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Option::<Value>::deserialize(d)? {
        Some(Value::String(s)) => Some(s),
        Some(Value::Number(n)) => Some(n.to_string()),
        Some(Value::Null) | None => None,
        Some(other) => {
            return Err(serde::de::Error::custom(format!(
                "an id is neither a string nor a number: {other}"
            )));
        }
    })
}

/// `null` read as the default (an empty list, an empty object).
fn nullable<'de, D: Deserializer<'de>, T: Default + Deserialize<'de>>(d: D) -> Result<T, D::Error> {
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_gongs_published_examples_and_tolerates_nulls() {
        let page: CallsPage = serde_json::from_value(json!({
            "requestId": "4al018gzaztcr8nbukw",
            "records": {"totalRecords": 263, "currentPageSize": 100, "currentPageNumber": 0,
                        "cursor": "eyJhbGciOiJIUzI1NiJ9"},
            "calls": [{"id": "7782342274025937895", "url": "https://app.gong.io/call?id=7782342274025937895",
                       "title": "Example call", "duration": 460, "primaryUserId": 234599484848423_u64,
                       "workspaceId": null, "customData": "ignored"}]
        }))
        .unwrap();
        assert_eq!(page.records.cursor.as_deref(), Some("eyJhbGciOiJIUzI1NiJ9"));
        assert_eq!(
            page.calls[0].primary_user_id.as_deref(),
            Some("234599484848423")
        );
        let out = serde_json::to_value(&page.calls[0]).unwrap();
        assert_eq!(out["duration"], 460);
        assert!(out.get("workspaceId").is_none() && out.get("customData").is_none());

        let t: TranscriptPage = serde_json::from_value(json!({
            "callTranscripts": [{"callId": "1", "transcript": [
                {"speakerId": "6432345678555530067", "topic": null, "sentences": null}]}]
        }))
        .unwrap();
        assert!(t.call_transcripts[0].transcript[0].sentences.is_empty());
        let e: ExtensivePage = serde_json::from_value(
            json!({"calls": [{"metaData": null, "parties": null, "content": null}]}),
        )
        .unwrap();
        assert!(e.calls[0].parties.is_empty());
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for junk in [
            json!({"calls": "many"}),
            json!({"calls": [{"id": {"nested": true}}]}),
            json!({"records": 7}),
            json!([1, 2]),
        ] {
            assert!(
                serde_json::from_value::<CallsPage>(junk.clone()).is_err(),
                "{junk}"
            );
        }
    }
}
