//! The MessagePack codec: named fields (maps), and human-readable forms for
//! types that have one (a request id is its hyphenated string).

use serde::Serialize;
use serde::de::DeserializeOwned;

/// A value could not be encoded (only possible for values that are not
/// representable in MessagePack, e.g. maps with non-string keys in JSON).
#[derive(Debug, thiserror::Error)]
#[error("could not encode a {what} as MessagePack: {source}")]
pub struct EncodeError {
    what: &'static str,
    #[source]
    source: rmp_serde::encode::Error,
}

/// Bytes on the bus were not a valid envelope.
#[derive(Debug, thiserror::Error)]
#[error("not a valid {what} envelope ({len} bytes): {source}")]
pub struct DecodeError {
    what: &'static str,
    len: usize,
    #[source]
    source: rmp_serde::decode::Error,
}

fn short_name<T>() -> &'static str {
    let full = std::any::type_name::<T>();
    full.rsplit("::").next().unwrap_or(full)
}

/// Encodes an envelope as a MessagePack map with named fields.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, EncodeError> {
    let mut buf = Vec::with_capacity(256);
    let mut ser = rmp_serde::Serializer::new(&mut buf)
        .with_struct_map()
        .with_human_readable();
    value.serialize(&mut ser).map_err(|source| EncodeError {
        what: short_name::<T>(),
        source,
    })?;
    Ok(buf)
}

/// The deepest nesting of maps and arrays accepted in an envelope. Deeper
/// input is refused before any of it is built, so no peer can make a
/// decoder, or whoever walks the value afterwards, overflow its stack.
pub const MAX_DEPTH: usize = 128;

/// Decodes an envelope encoded by [`encode`] (or by any MessagePack library
/// following `docs/protocol.md`), nested at most [`MAX_DEPTH`] deep.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    let mut de = rmp_serde::Deserializer::from_read_ref(bytes).with_human_readable();
    de.set_max_depth(MAX_DEPTH);
    serde::Deserialize::deserialize(&mut de).map_err(|source| DecodeError {
        what: short_name::<T>(),
        len: bytes.len(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::*;
    use serde_json::json;

    #[test]
    fn request_round_trips() {
        let mut req = ToolRequest::new(
            "echo",
            json!({"text": "hi", "n": 3, "nested": {"list": [1.5, null, true]}}),
            30_000,
            Caller {
                principal: "alice".into(),
                session: Some("s1".into()),
                via: "test".into(),
                roles: vec!["analyst".into()],
            },
        );
        req.progress_to = Some("sophia.v1.progress.gw.x".into());
        let bytes = encode(&req).unwrap();
        assert_eq!(decode::<ToolRequest>(&bytes).unwrap(), req);
    }

    #[test]
    fn request_id_is_a_string_and_fields_are_named() {
        let req = ToolRequest::new("echo", json!({}), 1, Caller::default());
        let bytes = encode(&req).unwrap();
        let generic: serde_json::Value = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(generic["id"], json!(req.id.to_string()));
        assert_eq!(generic["tool"], json!("echo"));
        assert_eq!(generic["v"], json!(1));
    }

    #[test]
    fn responses_round_trip_with_binary_content() {
        let ok = ToolResponse::new(
            uuid::Uuid::new_v4(),
            Ok(ToolOutput {
                content: vec![
                    Content::text("t"),
                    Content::Image {
                        data: vec![0, 159, 146, 150],
                        mime_type: "image/png".into(),
                    },
                ],
                structured: Some(json!({"a": 1})),
                is_error: false,
            }),
        );
        assert_eq!(decode::<ToolResponse>(&encode(&ok).unwrap()).unwrap(), ok);
        let err = ToolResponse::new(
            uuid::Uuid::new_v4(),
            Err(WireError::new(ErrorCode::Conflict, "locked").with_data(json!({"by": "x"}))),
        );
        let back = decode::<ToolResponse>(&encode(&err).unwrap()).unwrap();
        assert_eq!(
            back.clone().into_outcome().unwrap_err().code,
            ErrorCode::Conflict
        );
        assert_eq!(back, err);
    }

    #[test]
    fn unknown_error_codes_and_extra_fields_are_tolerated() {
        let raw = json!({"v": 1, "id": uuid::Uuid::new_v4().to_string(),
            "error": {"code": "quota_exceeded", "message": "m"}, "future": 7});
        let bytes = rmp_serde::to_vec_named(&raw).unwrap();
        let resp: ToolResponse = decode(&bytes).unwrap();
        assert_eq!(resp.into_outcome().unwrap_err().code, ErrorCode::Unknown);
    }

    #[test]
    fn garbage_is_a_decode_error_not_a_panic() {
        for bytes in [&b""[..], b"\xc1", b"hello world", b"\x92\x01"] {
            let err = decode::<ToolResponse>(bytes).unwrap_err();
            assert!(err.to_string().contains("ToolResponse"), "{err}");
        }
    }

    #[test]
    fn a_response_with_neither_outcome_is_rejected() {
        let resp = ToolResponse {
            v: 1,
            id: uuid::Uuid::new_v4(),
            result: None,
            error: None,
            progress_sent: 0,
        };
        assert_eq!(
            resp.into_outcome().unwrap_err().code,
            ErrorCode::BadEnvelope
        );
    }
}
