//! Body decoders (length, chunked, until close) on any bytes cut at any points:
//! the result never depends on where the reads split the input, and a body is never
//! longer than the input nor, with a length, different from it.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| roundtrip_fuzz::body_decoders(data));
