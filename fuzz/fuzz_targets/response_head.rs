//! Any bytes as a response head: no panic; a parsed head never claims more bytes
//! than it was given, and its framing decision never panics either.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| roundtrip_fuzz::response_head(data));
