//! Large tool results for HTTP clients, in parts every official client
//! accepts.
//!
//! Over Streamable HTTP a tool result is one SSE event, and clients cap
//! events: the official Python SDK refuses any over 1 MiB. So when a
//! result's JSON is larger than [`INLINE_LIMIT`], the gateway keeps the
//! small content blocks inline and replaces each large one by
//! `resource_link` blocks, one per part of at most [`PART_BYTES`] (as JSON):
//!
//! ```text
//! sophia://results/<id>/<block>/<part>
//! ```
//!
//! `<block>` is the block's index in the tool's own result (the index one
//! past the last block stands for `structuredContent`, sent as JSON text),
//! `<part>` counts from 0. The client reads each link with
//! `resources/read` and joins the parts of a block in order: text parts
//! concatenate to the text, blob parts (base64, cut at multiples of 4)
//! concatenate to the base64 of the data. A text block first in the result
//! says so in words, for a model reading it.
//!
//! Parts live on a JetStream KV bucket ([`RESULTS_BUCKET`]) for
//! [`GatewayConfig::result_ttl_s`](crate::GatewayConfig), so any gateway
//! replica serves them, and only to the principal who made the call. Over
//! stdio results stay whole (a pipe has no event limit).

use std::time::Duration;

use rmcp::ErrorData as McpError;
use rmcp::model::{CallToolResult, ReadResourceResult, ResourceContents};
use serde_json::{Value, json};
use sophia_kit::kv::{Bucket, BucketConfig};

/// The bucket holding the parts.
pub const RESULTS_BUCKET: &str = "sophia_results";
/// The scheme and prefix of a part's URI.
pub const URI_PREFIX: &str = "sophia://results/";
/// By default, a result whose JSON is larger is sent in parts: under the
/// 1 MiB event limit of the official Python SDK, with room for the JSON-RPC
/// envelope (`SOPHIA_INLINE_RESULT_BYTES`).
pub const INLINE_LIMIT: usize = 768 * 1024;
/// The most JSON (escaped text) one part carries.
pub const PART_BYTES: usize = 512 * 1024;
/// The JSON around a block's text or data (`{"type":"text","text":""}`).
const BLOCK_FRAMING: usize = 32;
/// Blocks smaller than this stay inline: a link is about this size.
const LINK_BYTES: usize = 1024;

/// The parts store, shared by the gateway replicas.
#[derive(Clone)]
pub struct LargeResults {
    kv: Bucket,
    ttl: Duration,
    inline_limit: usize,
    part_bytes: usize,
}

/// What is known of one stored result: who may read it and how its parts
/// are typed.
#[derive(serde::Serialize, serde::Deserialize)]
struct Manifest {
    owner: String,
    /// Per offloaded block (by index): its parts' MIME type, and whether
    /// they are base64 (`blob`) rather than text.
    blocks: std::collections::BTreeMap<usize, BlockParts>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct BlockParts {
    mime: String,
    blob: bool,
    parts: usize,
}

/// One large block taken out of a result.
struct Offload {
    block: usize,
    mime: String,
    blob: bool,
    data: String,
}

impl LargeResults {
    /// Opens (creating if needed) the bucket; results over `inline_limit`
    /// bytes go in parts, which expire `ttl` after the call.
    pub async fn open(
        client: async_nats::Client,
        ttl: Duration,
        inline_limit: usize,
    ) -> Result<Self, String> {
        // A part must fit in one NATS message.
        let part_bytes = PART_BYTES.min(client.server_info().max_payload.saturating_sub(8 * 1024));
        let kv = Bucket::open(
            &client,
            BucketConfig::new(
                RESULTS_BUCKET,
                "Sophia Mesh: large tool results, in parts for HTTP clients",
            )
            .max_age(ttl),
        )
        .await
        .map_err(|e| e.to_string())?;
        Ok(Self {
            kv,
            ttl,
            inline_limit,
            part_bytes: part_bytes.max(1024),
        })
    }

    /// `result` as it may be sent to an HTTP client: unchanged when small;
    /// else with its large blocks stored in parts and linked. If the parts
    /// cannot be stored (the bus is down), the result goes whole, and the
    /// gateway logs why.
    pub async fn fit(&self, result: CallToolResult, owner: &str) -> CallToolResult {
        // Most results are far under the limit: no serializing for those.
        if bulk(&result) < self.inline_limit / 8 {
            return result;
        }
        let Ok(mut value) = serde_json::to_value(&result) else {
            return result;
        };
        let total = json_len(&value);
        if total <= self.inline_limit {
            return result;
        }
        let offloads = choose(&mut value, total, self.inline_limit);
        if offloads.is_empty() {
            return result;
        }
        let id = uuid::Uuid::new_v4().simple().to_string();
        match self.store(&id, owner, &offloads).await {
            Ok(links) => {
                let why = Why {
                    total,
                    limit: self.inline_limit,
                    ttl: self.ttl,
                };
                replace(&mut value, &id, &offloads, links, why);
                match serde_json::from_value(value) {
                    Ok(fitted) => fitted,
                    Err(e) => {
                        tracing::error!(error = %e, "a result split into parts did not parse back; sending it whole");
                        result
                    }
                }
            }
            Err(e) => {
                tracing::warn!(bytes = total, error = %e, "a large result could not be stored in parts; sending it whole, which clients that cap SSE events (the Python SDK: 1 MiB) refuse");
                result
            }
        }
    }

    /// Stores the offloaded blocks' parts and the manifest; returns each
    /// block's part count.
    async fn store(
        &self,
        id: &str,
        owner: &str,
        offloads: &[Offload],
    ) -> Result<Vec<usize>, String> {
        let mut manifest = Manifest {
            owner: owner.to_owned(),
            blocks: Default::default(),
        };
        let mut puts = Vec::new();
        let mut counts = Vec::new();
        for o in offloads {
            let parts = if o.blob {
                split_base64(&o.data, self.part_bytes)
            } else {
                split_text(&o.data, self.part_bytes)
            };
            counts.push(parts.len());
            manifest.blocks.insert(
                o.block,
                BlockParts {
                    mime: o.mime.clone(),
                    blob: o.blob,
                    parts: parts.len(),
                },
            );
            for (n, part) in parts.into_iter().enumerate() {
                let key = format!("{id}.{}.{n}", o.block);
                let bytes = bytes::Bytes::copy_from_slice(part.as_bytes());
                puts.push(async move { self.kv.put_bytes(&key, bytes).await });
            }
        }
        futures::future::try_join_all(puts)
            .await
            .map_err(|e| e.to_string())?;
        self.kv
            .put(&format!("{id}.manifest"), &manifest)
            .await
            .map_err(|e| e.to_string())?;
        Ok(counts)
    }

    /// `resources/read` of a part's URI, for `reader`.
    pub async fn read(&self, uri: &str, reader: &str) -> Result<ReadResourceResult, McpError> {
        let not_found = || {
            McpError::resource_not_found(
                format!(
                    "no result part {}: parts are kept for {} s after the call, for the caller who made it; call the tool again",
                    sophia_kit::vetting::shown(uri),
                    self.ttl.as_secs()
                ),
                None,
            )
        };
        let (id, block, part) = parse_uri(uri).ok_or_else(not_found)?;
        let unavailable = |e: String| {
            McpError::internal_error(
                format!("could not read result part {uri}: {e}; retry shortly (see /health)"),
                None,
            )
        };
        let manifest: Manifest = self
            .kv
            .get(&format!("{id}.manifest"))
            .await
            .map_err(|e| unavailable(e.to_string()))?
            .ok_or_else(not_found)?;
        if manifest.owner != reader {
            return Err(not_found());
        }
        let meta = manifest.blocks.get(&block).ok_or_else(not_found)?;
        let data = self
            .kv
            .get_bytes(&format!("{id}.{block}.{part}"))
            .await
            .map_err(|e| unavailable(e.to_string()))?
            .ok_or_else(not_found)?;
        let data = String::from_utf8(data.to_vec()).map_err(|e| unavailable(e.to_string()))?;
        let contents = if meta.blob {
            ResourceContents::BlobResourceContents {
                uri: uri.to_owned(),
                mime_type: Some(meta.mime.clone()),
                blob: data,
                meta: None,
            }
        } else {
            ResourceContents::TextResourceContents {
                uri: uri.to_owned(),
                mime_type: Some(meta.mime.clone()),
                text: data,
                meta: None,
            }
        };
        Ok(ReadResourceResult::new(vec![contents]))
    }
}

/// Whether `uri` names a result part (and so is served by the gateway).
pub fn is_part(uri: &str) -> bool {
    uri.starts_with(URI_PREFIX)
}

/// `(id, block, part)` of a part's URI; `None` when malformed.
fn parse_uri(uri: &str) -> Option<(String, usize, usize)> {
    let mut it = uri.strip_prefix(URI_PREFIX)?.split('/');
    let id = it.next()?;
    let block = it.next()?.parse().ok()?;
    let part = it.next()?.parse().ok()?;
    let well_formed = it.next().is_none()
        && id.len() == 32
        && id
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase());
    well_formed.then(|| (id.to_owned(), block, part))
}

/// A cheap estimate of `result`'s JSON length, at least a sixth of it
/// (escaping multiplies text by at most 6): the bytes of its texts and
/// data, and a block's framing.
fn bulk(result: &CallToolResult) -> usize {
    use rmcp::model::ContentBlock;
    let content: usize = result
        .content
        .iter()
        .map(|c| {
            BLOCK_FRAMING
                + match c {
                    ContentBlock::Text(t) => t.text.len(),
                    ContentBlock::Image(i) => i.data.len(),
                    ContentBlock::Audio(a) => a.data.len(),
                    ContentBlock::Resource(r) => match &r.resource {
                        ResourceContents::TextResourceContents { text, .. } => text.len(),
                        ResourceContents::BlobResourceContents { blob, .. } => blob.len(),
                        _ => LINK_BYTES,
                    },
                    _ => LINK_BYTES,
                }
        })
        .sum();
    let structured = result
        .structured_content
        .as_ref()
        .map_or(0, |s| serde_json::to_vec(s).map_or(0, |v| v.len()));
    content + structured
}

/// The length of `value` as JSON.
fn json_len(value: &Value) -> usize {
    serde_json::to_vec(value).map(|v| v.len()).unwrap_or(0)
}

/// Takes the largest blocks out of `result` (a `CallToolResult` as JSON,
/// `total` bytes) until what is left fits `limit`.
fn choose(result: &mut Value, total: usize, limit: usize) -> Vec<Offload> {
    let mut sized: Vec<(usize, usize)> = Vec::new(); // (size, block)
    let content = result["content"].as_array().cloned().unwrap_or_default();
    for (i, block) in content.iter().enumerate() {
        sized.push((json_len(block), i));
    }
    let structured_at = content.len();
    if let Some(s) = result.get("structuredContent").filter(|s| !s.is_null()) {
        sized.push((json_len(s), structured_at));
    }
    sized.sort_unstable_by(|a, b| b.cmp(a));
    let mut left = total;
    let mut offloads = Vec::new();
    for (size, i) in sized {
        if left <= limit || size < LINK_BYTES {
            break;
        }
        let taken = if i == structured_at {
            result
                .as_object_mut()
                .and_then(|o| o.remove("structuredContent"))
                .map(|s| ("application/json".to_owned(), false, s.to_string()))
        } else {
            take_data(&content[i])
        };
        if let Some((mime, blob, data)) = taken {
            left = left.saturating_sub(size) + LINK_BYTES;
            offloads.push(Offload {
                block: i,
                mime,
                blob,
                data,
            });
        }
    }
    offloads.sort_unstable_by_key(|o| o.block);
    offloads
}

/// The data of a content block that can go in parts: (MIME type, whether
/// base64, the data).
fn take_data(block: &Value) -> Option<(String, bool, String)> {
    let mime = |v: &Value, default: &str| v["mimeType"].as_str().unwrap_or(default).to_owned();
    match block["type"].as_str()? {
        "text" => Some((
            "text/plain".into(),
            false,
            block["text"].as_str()?.to_owned(),
        )),
        "image" | "audio" => Some((
            mime(block, "application/octet-stream"),
            true,
            block["data"].as_str()?.to_owned(),
        )),
        "resource" => {
            let r = &block["resource"];
            if let Some(text) = r["text"].as_str() {
                Some((mime(r, "text/plain"), false, text.to_owned()))
            } else {
                Some((
                    mime(r, "application/octet-stream"),
                    true,
                    r["blob"].as_str()?.to_owned(),
                ))
            }
        }
        _ => None,
    }
}

/// What the explanation says: the result's size, the limit, how long the
/// parts last.
struct Why {
    total: usize,
    limit: usize,
    ttl: Duration,
}

/// Puts the links in place of the offloaded blocks, and the explanation
/// first.
fn replace(result: &mut Value, id: &str, offloads: &[Offload], counts: Vec<usize>, why: Why) {
    let content = result["content"].as_array().cloned().unwrap_or_default();
    let links_of = |o: &Offload, n: usize| -> Vec<Value> {
        (0..n)
            .map(|p| {
                json!({
                    "type": "resource_link",
                    "uri": format!("{URI_PREFIX}{id}/{}/{p}", o.block),
                    "name": format!("result-{id}-{}-{p}", o.block),
                    "title": format!("Part {} of {n} of result block {}", p + 1, o.block),
                    "mimeType": o.mime,
                })
            })
            .collect()
    };
    let mut out = vec![json!({
        "type": "text",
        "text": format!(
            "This result is {:.1} MiB, more than one HTTP response here carries ({} KiB), \
             so its large parts follow as resource links. Read each with resources/read, in \
             order, within {} s, and join the parts of each block.",
            why.total as f64 / (1024.0 * 1024.0),
            why.limit / 1024,
            why.ttl.as_secs()
        )
    })];
    let mut parts = offloads.iter().zip(counts).peekable();
    for (i, block) in content.into_iter().enumerate() {
        match parts.peek() {
            Some((o, n)) if o.block == i => {
                out.extend(links_of(o, *n));
                parts.next();
            }
            _ => out.push(block),
        }
    }
    for (o, n) in parts {
        out.extend(links_of(o, n)); // structuredContent, one past the last block
    }
    result["content"] = Value::Array(out);
}

/// The length of `c` inside a JSON string.
fn escaped_len(c: char) -> usize {
    match c {
        '"' | '\\' | '\n' | '\r' | '\t' | '\u{8}' | '\u{c}' => 2,
        c if (c as u32) < 0x20 => 6,
        c => c.len_utf8(),
    }
}

/// `text` cut on character boundaries into parts of at most `max` bytes
/// once escaped as JSON.
fn split_text(text: &str, max: usize) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut start, mut size) = (0, 0);
    for (i, c) in text.char_indices() {
        let n = escaped_len(c);
        if size + n > max && i > start {
            parts.push(&text[start..i]);
            (start, size) = (i, 0);
        }
        size += n;
    }
    if start < text.len() || parts.is_empty() {
        parts.push(&text[start..]);
    }
    parts
}

/// Base64 `data` cut into parts of at most `max` bytes, each a multiple of
/// 4 characters so that every part but the last decodes on its own and the
/// concatenation is the original.
fn split_base64(data: &str, max: usize) -> Vec<&str> {
    let step = (max / 4).max(1) * 4;
    if !data.is_ascii() {
        return vec![data];
    }
    let mut parts: Vec<&str> = (0..data.len())
        .step_by(step)
        .map(|i| &data[i..(i + step).min(data.len())])
        .collect();
    if parts.is_empty() {
        parts.push("");
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_parts_join_to_the_text_and_each_fits_once_escaped() {
        let text = "ab\"c\u{1}é\n".repeat(10_000);
        let parts = split_text(&text, 1000);
        assert!(parts.len() > 1);
        assert_eq!(parts.concat(), text);
        for p in &parts {
            assert!(serde_json::to_string(p).unwrap().len() <= 1000 + 2);
        }
    }

    #[test]
    fn base64_parts_are_whole_quads() {
        let data = "QUJD".repeat(1000) + "QQ==";
        let parts = split_base64(&data, 1001);
        assert_eq!(parts.concat(), data);
        assert!(parts.iter().all(|p| p.len() % 4 == 0));
    }

    #[test]
    fn a_large_text_block_is_linked_and_small_ones_stay() {
        let big = "x".repeat(INLINE_LIMIT + 10);
        let mut result = json!({
            "content": [{"type": "text", "text": "small"}, {"type": "text", "text": big}],
            "isError": false
        });
        let total = json_len(&result);
        let offloads = choose(&mut result, total, INLINE_LIMIT);
        assert_eq!(offloads.len(), 1);
        assert_eq!(offloads[0].block, 1);
        let why = Why {
            total,
            limit: INLINE_LIMIT,
            ttl: Duration::from_secs(60),
        };
        replace(&mut result, &"a".repeat(32), &offloads, vec![2], why);
        let content = result["content"].as_array().unwrap();
        assert_eq!(content.len(), 4, "explanation, small block, two links");
        assert_eq!(content[1]["text"], "small");
        assert_eq!(
            content[3]["uri"],
            format!("{URI_PREFIX}{}/1/1", "a".repeat(32))
        );
        let fitted: CallToolResult = serde_json::from_value(result).unwrap();
        assert_eq!(fitted.content.len(), 4);
    }

    #[test]
    fn structured_content_goes_as_json_text_past_the_last_block() {
        let mut result = json!({
            "content": [{"type": "text", "text": "see structured"}],
            "structuredContent": {"rows": "y".repeat(INLINE_LIMIT)},
            "isError": false
        });
        let total = json_len(&result);
        let offloads = choose(&mut result, total, INLINE_LIMIT);
        assert_eq!(offloads[0].block, 1);
        assert_eq!(offloads[0].mime, "application/json");
        assert!(result.get("structuredContent").is_none());
    }

    #[test]
    fn part_uris_are_checked() {
        let id = "0123456789abcdef0123456789abcdef";
        assert_eq!(
            parse_uri(&format!("{URI_PREFIX}{id}/2/3")),
            Some((id.to_owned(), 2, 3))
        );
        for bad in [
            format!("{URI_PREFIX}{id}/2"),
            format!("{URI_PREFIX}{id}/2/3/4"),
            format!("{URI_PREFIX}../../x/1/1"),
            format!("{URI_PREFIX}{}/1/1", "A".repeat(32)),
            format!("{URI_PREFIX}{id}/-1/0"),
        ] {
            assert_eq!(parse_uri(&bad), None, "{bad}");
        }
    }
}
