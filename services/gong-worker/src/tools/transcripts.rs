//! Transcripts: `gong_get_transcript`, its speakers named from the call's
//! parties (`/v2/calls/extensive`), as Gong's reference says to match them.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Value, json};
use sophia_kit::{Call, Category, Tool, ToolOutput, ToolResult};

use super::{Ctx, call_id, call_id_schema, calls, clock, gong_error};
use crate::api::{CallTranscript, ExtensiveCall, Party, TranscriptPage, transcript_request};
use crate::client::{GongError, Request};

/// `gong_get_transcript`: a call's transcript, who said what and when.
pub(super) fn get_transcript(ctx: &Arc<Ctx>) -> Tool {
    let nullable = json!({"type": ["string", "null"]});
    Tool::new(
        "gong_get_transcript",
        Category::BusinessIntelligence,
        "A Gong call's transcript as readable text, one line per monologue: time, speaker (named \
         from the call's parties, internal or external) and what they said.",
    )
    .title("Get a Gong call's transcript")
    .input_schema(
        json!({"type": "object", "properties": {"call_id": call_id_schema()},
                         "required": ["call_id"], "additionalProperties": false}),
    )
    .output_schema(json!({"type": "object", "properties": {
        "call_id": {"type": "string"},
        "title": nullable,
        "speakers": {"type": "array", "items": {"type": "object", "properties": {
            "speaker_id": {"type": "string"}, "name": {"type": "string"},
            "affiliation": nullable, "email_address": nullable, "title": nullable}}},
        "monologues": {"type": "array", "items": {"type": "object", "properties": {
            "speaker_id": nullable, "speaker": {"type": "string"}, "topic": nullable,
            "start_ms": {"type": ["number", "null"]}, "end_ms": {"type": ["number", "null"]},
            "text": {"type": "string"}}}},
        "note": {"type": "string", "description": "Why speakers are not named, if they are not"}
    }, "required": ["call_id", "speakers", "monologues"]}))
    .read_only()
    .idempotent()
    .open_world()
    .timeout_ms(60_000)
    .with_ctx(ctx, run_get_transcript)
}

async fn run_get_transcript(c: Arc<Ctx>, call: Call) -> ToolResult {
    let id = call_id(&call)?;
    let (transcript, details) =
        tokio::join!(transcript(&c, &call, &id), calls::extensive(&c, &call, &id));
    let transcript = transcript.map_err(gong_error)?;
    let (details, note) = match details {
        Ok(d) => (Some(d), None),
        Err(e) => {
            tracing::info!(call_id = %id, cause = %e, "speakers left unnamed");
            (None, Some(format!("speakers are not named: {e}")))
        }
    };
    let parties: &[Party] = details.as_ref().map_or(&[], |d| &d.parties);
    let speakers = Speakers::new(parties);
    let title = details
        .as_ref()
        .and_then(|d: &ExtensiveCall| d.meta_data.title.clone());
    let monologues: Vec<Value> = transcript
        .transcript
        .iter()
        .map(|m| {
            let text: Vec<&str> = m
                .sentences
                .iter()
                .map(|s| s.text.trim())
                .filter(|t| !t.is_empty())
                .collect();
            let ms = |n: Option<&serde_json::Number>| n.and_then(|n| n.as_f64());
            json!({"speaker_id": m.speaker_id, "speaker": speakers.label(m.speaker_id.as_deref()),
                   "topic": m.topic,
                   "start_ms": ms(m.sentences.first().and_then(|s| s.start.as_ref())),
                   "end_ms": ms(m.sentences.last().and_then(|s| s.end.as_ref())),
                   "text": text.join(" ")})
        })
        .collect();
    let text = render(&id, title.as_deref(), &monologues, note.as_deref());
    let mut out = json!({"call_id": id, "title": title, "speakers": speakers.listed(),
                         "monologues": monologues});
    if let Some(note) = note {
        out["note"] = json!(note);
    }
    let mut output = ToolOutput::text(text);
    output.structured = Some(out);
    Ok(output)
}

/// `/v2/calls/transcript` for call `id`.
async fn transcript(c: &Ctx, call: &Call, id: &str) -> Result<CallTranscript, GongError> {
    let body = transcript_request(&[id]);
    let what = format!("call {id}");
    let page: TranscriptPage = c
        .send(
            call,
            "/v2/calls/transcript",
            Request::Post(&body),
            "api:calls:read:transcript",
            &what,
        )
        .await?;
    page.call_transcripts
        .into_iter()
        .find(|t| t.call_id.as_deref().is_none_or(|got| got == id))
        .ok_or(GongError::NotFound {
            what,
            detail: String::new(),
        })
}

/// The call's parties by speaker id.
struct Speakers<'a> {
    by_id: HashMap<&'a str, &'a Party>,
}

impl<'a> Speakers<'a> {
    fn new(parties: &'a [Party]) -> Self {
        let by_id = parties
            .iter()
            .filter_map(|p| Some((p.speaker_id.as_deref()?, p)))
            .collect();
        Self { by_id }
    }

    /// `Name (Affiliation)`, or `Speaker <id>` when no party has that id.
    fn label(&self, speaker_id: Option<&str>) -> String {
        let Some(id) = speaker_id else {
            return "Unknown speaker".into();
        };
        match self.by_id.get(id) {
            Some(p) => {
                let name = p
                    .name
                    .clone()
                    .or(p.email_address.clone())
                    .unwrap_or_else(|| format!("Speaker {id}"));
                match &p.affiliation {
                    Some(a) => format!("{name} ({a})"),
                    None => name,
                }
            }
            None => format!("Speaker {id}"),
        }
    }

    /// The parties who spoke, sorted by speaker id.
    fn listed(&self) -> Vec<Value> {
        let mut ids: Vec<&&str> = self.by_id.keys().collect();
        ids.sort();
        ids.into_iter()
            .map(|id| {
                let p = self.by_id[*id];
                json!({"speaker_id": id, "name": self.label(Some(id)), "affiliation": p.affiliation,
                       "email_address": p.email_address, "title": p.title})
            })
            .collect()
    }
}

/// The transcript as text: a heading, then `[m:ss] Speaker: words` lines.
fn render(id: &str, title: Option<&str>, monologues: &[Value], note: Option<&str>) -> String {
    let mut text = format!("Transcript of Gong call {id}");
    if let Some(t) = title {
        text.push_str(&format!(": {t}"));
    }
    if let Some(n) = note {
        text.push_str(&format!("\n({n})"));
    }
    if monologues.is_empty() {
        text.push_str("\nThe call has no transcript (yet).");
    }
    for m in monologues {
        let at = m["start_ms"]
            .as_f64()
            .map(|ms| clock(ms / 1000.0))
            .unwrap_or_else(|| "?".into());
        text.push_str(&format!(
            "\n[{at}] {}: {}",
            m["speaker"].as_str().unwrap_or_default(),
            m["text"].as_str().unwrap_or_default()
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn speakers_are_named_from_parties_or_by_id() {
        let parties = vec![Party {
            speaker_id: Some("11".into()),
            name: Some("Ada Lovelace".into()),
            affiliation: Some("Internal".into()),
            ..Default::default()
        }];
        let s = Speakers::new(&parties);
        assert_eq!(s.label(Some("11")), "Ada Lovelace (Internal)");
        assert_eq!(s.label(Some("22")), "Speaker 22");
        assert_eq!(s.label(None), "Unknown speaker");
        let m = vec![
            json!({"start_ms": 65_000.0, "speaker": "Ada Lovelace (Internal)", "text": "Hi."}),
        ];
        assert_eq!(
            render("1", Some("Demo"), &m, None),
            "Transcript of Gong call 1: Demo\n[1:05] Ada Lovelace (Internal): Hi."
        );
    }
}
