//! Any bytes, decoded as every envelope type: no panic, no overflow.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sophia_proto::*;

fuzz_target!(|bytes: &[u8]| {
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
    let _ = decode::<serde_json::Value>(bytes);
});
