//! Property tests: whatever bytes arrive on the bus, decoding them never
//! panics. Arbitrary bytes, and valid envelopes mutated (bytes flipped,
//! cut, inserted), for every envelope type; the offload reference; and the
//! subject helpers on arbitrary strings. Thousands of cases per property
//! (`PROPTEST_CASES` raises it); `fuzz/` has cargo-fuzz targets for longer
//! runs (docs/protocol.md, "Fuzzing").

use async_nats::HeaderMap;
use proptest::prelude::*;
use serde_json::json;
use sophia_proto::payload::{self, ObjectRef};
use sophia_proto::*;

const CASES: u32 = 4_096;

/// Decodes `bytes` as every envelope type; any outcome but a panic is fine.
fn decode_all(bytes: &[u8]) {
    let _ = decode::<ToolRequest>(bytes);
    let _ = decode::<ToolResponse>(bytes);
    let _ = decode::<Progress>(bytes);
    let _ = decode::<Cancel>(bytes);
    let _ = decode::<Announce>(bytes);
    let _ = decode::<Leave>(bytes);
    let _ = decode::<Discover>(bytes);
    let _ = decode::<Ask>(bytes);
    let _ = decode::<AskReply>(bytes);
    let _ = decode::<ResourceUpdated>(bytes);
    let _ = decode::<ObjectRef>(bytes);
    let _ = decode::<serde_json::Value>(bytes);
}

/// Valid encodings of each envelope type, to mutate.
fn valid() -> Vec<Vec<u8>> {
    let mut request = ToolRequest::new(
        "echo",
        json!({"text": "hi", "n": [1, 2.5, null, {"deep": [true]}]}),
        5_000,
        Caller::default(),
    );
    request.progress_to = Some("sophia.v1.progress.gw.1".into());
    let response = ToolResponse::new(request.id, Ok(ToolOutput::text("hi")));
    let failed = ToolResponse::new(
        request.id,
        Err(WireError::invalid_arguments("no").with_data(json!({"errors": ["x"]}))),
    );
    let announce: Announce = serde_json::from_value(json!({
        "v": 1, "instance": "i", "service": "s", "version": "1.0.0", "heartbeat_ms": 1000,
        "tools": [{"name": "echo", "description": "d", "category": "code_generation",
            "input_schema": {"type": "object"}, "hints": {}}],
        "offers": {"prompts": [{"name": "p"}]}, "degraded": ["x"], "acks": true
    }))
    .unwrap();
    let reference = ObjectRef {
        bucket: payload::BUCKET.into(),
        name: uuid::Uuid::new_v4().to_string(),
        size: 3,
    };
    vec![
        encode(&request).unwrap(),
        encode(&response).unwrap(),
        encode(&failed).unwrap(),
        encode(&announce).unwrap(),
        encode(&reference).unwrap(),
    ]
}

#[derive(Clone, Debug)]
enum Mutation {
    Flip(usize, u8),
    Cut(usize),
    Insert(usize, Vec<u8>),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Flip(i, b)),
        any::<usize>().prop_map(Mutation::Cut),
        (
            any::<usize>(),
            proptest::collection::vec(any::<u8>(), 1..16)
        )
            .prop_map(|(i, b)| Mutation::Insert(i, b)),
    ]
}

fn mutate(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        if bytes.is_empty() {
            break;
        }
        match m {
            Mutation::Flip(i, b) => {
                let i = i % bytes.len();
                bytes[i] ^= b;
            }
            Mutation::Cut(i) => bytes.truncate(i % bytes.len()),
            Mutation::Insert(i, b) => {
                let i = i % bytes.len();
                bytes.splice(i..i, b.iter().copied());
            }
        }
    }
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn arbitrary_bytes_never_panic_a_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        decode_all(&bytes);
    }

    #[test]
    fn mutated_envelopes_never_panic_a_decoder(
        which in 0usize..5,
        mutations in proptest::collection::vec(mutation(), 1..8),
    ) {
        let bytes = mutate(valid()[which].clone(), &mutations);
        decode_all(&bytes);
    }

    #[test]
    fn deep_nesting_is_refused_not_overflowed(depth in 100usize..5_000, array in any::<bool>()) {
        // fixarray(1) or fixmap(1) with key "" , `depth` times, then nil.
        let mut bytes = Vec::new();
        for _ in 0..depth {
            if array { bytes.push(0x91) } else { bytes.extend([0x81, 0xa0]) }
        }
        bytes.push(0xc0);
        decode_all(&bytes);
        prop_assert!(depth <= codec::MAX_DEPTH || decode::<serde_json::Value>(&bytes).is_err());
    }

    #[test]
    fn an_offload_reference_names_only_the_mesh_bucket(
        body in proptest::collection::vec(any::<u8>(), 0..512),
        bucket in ".{0,40}",
        name in ".{0,60}",
        offloaded in any::<bool>(),
    ) {
        let mut h = HeaderMap::new();
        if offloaded {
            h.insert(headers::PAYLOAD, headers::OFFLOADED);
        }
        let _ = payload::reference(Some(&h), &body);
        let made_up = encode(&ObjectRef { bucket: bucket.clone(), name: name.clone(), size: 1 }).unwrap();
        match payload::reference(Some(&h), &made_up) {
            Ok(Some(r)) => {
                prop_assert_eq!(r.bucket.as_str(), payload::BUCKET);
                prop_assert!(uuid::Uuid::parse_str(&r.name).is_ok());
            }
            Ok(None) => prop_assert!(!offloaded),
            Err(_) => prop_assert!(offloaded),
        }
    }

    #[test]
    fn subject_helpers_take_any_string(s in "\\PC{0,300}", raw in proptest::collection::vec(any::<u8>(), 0..300)) {
        let lossy = String::from_utf8_lossy(&raw).into_owned();
        for text in [s.as_str(), lossy.as_str()] {
            let _ = subject::validate_tool_name(text);
            let _ = subject::request_id_of_progress(text);
            let _ = text.parse::<Category>();
            // A model token is always one subject token.
            let token = subject::model_token(text);
            prop_assert!(!token.contains('.') && !token.contains('*') && !token.contains('>'));
            prop_assert!(!token.bytes().any(|b| b.is_ascii_whitespace()));
            if subject::is_reply_subject(text) {
                prop_assert!(text.len() <= subject::MAX_REPLY_SUBJECT_LEN);
                prop_assert!(!text.contains('*') && !text.contains('>') && !text.contains(' '));
            }
            let _ = subject::alive(text);
        }
    }
}
