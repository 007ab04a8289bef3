//! The request encoder against an independent parser (httparse): any method, target,
//! headers and body that pass the transport's checks come out the other side as
//! they went in, and the body decodes back to the same bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| roundtrip_fuzz::request_roundtrip(data));
