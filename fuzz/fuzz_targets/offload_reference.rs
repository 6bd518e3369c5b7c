//! Any body of a message marked as offloaded: only a reference to the mesh's
//! own bucket and a UUID-named object is ever accepted.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sophia_proto::{headers, payload};

fuzz_target!(|bytes: &[u8]| {
    let mut h = async_nats::HeaderMap::new();
    h.insert(headers::PAYLOAD, headers::OFFLOADED);
    if let Ok(Some(r)) = payload::reference(Some(&h), bytes) {
        assert_eq!(r.bucket, payload::BUCKET);
    }
});
