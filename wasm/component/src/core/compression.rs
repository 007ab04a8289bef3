//! Transparent gzip, by Go's rule: the transport asks for gzip only when the caller did
//! not choose an encoding itself, and then it alone undoes it.
//!
//! `Accept-Encoding: gzip` is added unless compression is disabled, the caller sent
//! `Accept-Encoding` or `Range`, or the method is HEAD. A response to such a request
//! with `Content-Encoding: gzip` is decompressed as it streams, and loses its
//! `Content-Encoding` and `Content-Length` headers (they describe the wire, not what
//! the caller reads).

use std::io::Write;

use flate2::write::GzDecoder;

use super::decode::{Fields, ResponseHead};
use super::error::{Error, ErrorKind};

/// Whether the transport should add `Accept-Encoding: gzip` to this request.
pub fn should_request_gzip(disabled: bool, method: &str, headers: &Fields) -> bool {
    !disabled
        && !method.eq_ignore_ascii_case("HEAD")
        && !headers.contains("accept-encoding")
        && !headers.contains("range")
}

/// Whether a response to a request that asked for gzip carries a gzip body.
pub fn is_gzipped(head: &ResponseHead) -> bool {
    head.values("content-encoding")
        .any(|v| v.trim_ascii().eq_ignore_ascii_case(b"gzip"))
}

/// The headers the caller sees for a body the transport decompressed.
pub fn decompressed_headers(mut headers: Fields) -> Fields {
    headers.retain(|n, _| {
        !n.eq_ignore_ascii_case("content-encoding") && !n.eq_ignore_ascii_case("content-length")
    });
    headers
}

/// A streaming gzip decoder: compressed bytes in, plain bytes out.
pub struct Gunzip {
    decoder: GzDecoder<Vec<u8>>,
}

impl Default for Gunzip {
    fn default() -> Self {
        Self::new()
    }
}

impl Gunzip {
    pub fn new() -> Self {
        Self {
            decoder: GzDecoder::new(Vec::new()),
        }
    }

    /// Feeds compressed bytes; returns the plain bytes they completed.
    pub fn feed(&mut self, compressed: &[u8]) -> Result<Vec<u8>, Error> {
        self.decoder.write_all(compressed).map_err(corrupt)?;
        Ok(std::mem::take(self.decoder.get_mut()))
    }

    /// The compressed body ended: returns the last plain bytes, or an error if the
    /// gzip stream was cut short.
    pub fn finish(mut self) -> Result<Vec<u8>, Error> {
        self.decoder.try_finish().map_err(corrupt)?;
        Ok(std::mem::take(self.decoder.get_mut()))
    }
}

fn corrupt(error: std::io::Error) -> Error {
    Error::new(
        ErrorKind::ContentCoding,
        format!("gzip: invalid compressed response body: {error}"),
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::core::decode::parse_response_head;
    use flate2::Compression;
    use flate2::write::GzEncoder;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    fn headers(list: &[(&str, &str)]) -> Fields {
        list.iter().map(|(n, v)| (*n, *v)).collect()
    }

    #[test]
    fn gzip_is_requested_only_when_the_caller_left_it_to_us() {
        assert!(should_request_gzip(false, "GET", &Fields::new()));
        assert!(
            !should_request_gzip(true, "GET", &Fields::new()),
            "disabled"
        );
        assert!(!should_request_gzip(false, "HEAD", &Fields::new()));
        assert!(!should_request_gzip(
            false,
            "GET",
            &headers(&[("Accept-Encoding", "br")])
        ));
        assert!(!should_request_gzip(
            false,
            "GET",
            &headers(&[("Range", "bytes=0-9")])
        ));
    }

    #[test]
    fn gunzip_whole_and_at_every_split_point() {
        let plain: Vec<u8> = (0..5000u32).flat_map(|i| i.to_le_bytes()).collect();
        let wire = gzip(&plain);
        for split in 0..=wire.len() {
            let mut gunzip = Gunzip::new();
            let mut out = gunzip.feed(&wire[..split]).unwrap();
            out.extend(gunzip.feed(&wire[split..]).unwrap());
            out.extend(gunzip.finish().unwrap());
            assert_eq!(out, plain, "split at {split}");
        }
    }

    #[test]
    fn a_truncated_or_corrupt_gzip_body_is_an_error() {
        let wire = gzip(b"hello hello hello hello");
        let mut gunzip = Gunzip::new();
        gunzip.feed(&wire[..wire.len() - 4]).unwrap();
        assert_eq!(gunzip.finish().unwrap_err().kind, ErrorKind::ContentCoding);
        let mut gunzip = Gunzip::new();
        assert_eq!(
            gunzip.feed(b"not gzip at all").unwrap_err().kind,
            ErrorKind::ContentCoding
        );
    }

    #[test]
    fn decompressed_responses_lose_their_wire_headers() {
        let head = parse_response_head(
            b"HTTP/1.1 200 OK\r\nContent-Encoding: GZIP\r\nContent-Length: 10\r\nX-A: b\r\n\r\n",
            1 << 20,
        )
        .unwrap()
        .unwrap()
        .0;
        assert!(is_gzipped(&head));
        assert_eq!(
            decompressed_headers(head.headers.clone()),
            headers(&[("X-A", "b")])
        );
    }
}
