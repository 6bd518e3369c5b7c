//! Any string through the subject helpers: no panic, and a model token is
//! always a single subject token.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sophia_proto::subject;

fuzz_target!(|text: &str| {
    let _ = subject::validate_tool_name(text);
    let _ = subject::request_id_of_progress(text);
    let _ = subject::is_reply_subject(text);
    let token = subject::model_token(text);
    assert!(!token.contains('.') && !token.contains('*') && !token.contains('>'));
});
