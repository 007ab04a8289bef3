//! Response decoding: the head (with `httparse`) and the body framing.
//!
//! Theory of operation. A response is read in two steps:
//!
//! ```text
//!  bytes ──► parse_response_head ──► ResponseHead + consumed
//!                                         │
//!             framing(method, head) ──► BodyDecoder ──► data slices … Done(trailers)
//! ```
//!
//! [`BodyDecoder::decode`] takes whatever bytes are at hand and reports how many it
//! consumed and which of them are body data, so the caller can pass data slices on
//! without copying. It never consumes bytes past the end of the message: what follows
//! belongs to the next response on the connection (or is garbage that forbids reuse).

use std::ops::Range;

use super::error::{Error, ErrorKind};

pub use super::fields::Fields;

/// A parsed response head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    pub status: u16,
    pub reason: String,
    /// 1 for HTTP/1.1, 0 for HTTP/1.0.
    pub version_minor: u8,
    pub headers: Fields,
}

impl ResponseHead {
    /// Values of every header named `name`, in order.
    pub fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.headers.values(name)
    }

    /// Whether a comma-separated header named `name` lists `token` (case-insensitive).
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.values(name).any(|v| {
            v.split(|&b| b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
        })
    }

    /// Whether both `Transfer-Encoding` and `Content-Length` are present: the body is
    /// read as chunked (RFC 9112 §6.3), but such a message may be an attempt at
    /// response splitting, so its connection is not used again.
    pub fn has_ambiguous_framing(&self) -> bool {
        self.values("transfer-encoding").next().is_some()
            && self.values("content-length").next().is_some()
    }

    /// Whether this is an interim (1xx) response other than `101 Switching Protocols`.
    pub fn is_interim(&self) -> bool {
        (100..200).contains(&self.status) && self.status != 101
    }

    /// Whether the server lets the connection carry another request afterwards
    /// (RFC 9112 §9.3): HTTP/1.1 unless `Connection: close`, HTTP/1.0 only with
    /// `Connection: keep-alive`.
    pub fn allows_keep_alive(&self) -> bool {
        if self.has_token("connection", "close") {
            return false;
        }
        self.version_minor >= 1 || self.has_token("connection", "keep-alive")
    }
}

/// Interim (1xx) responses accepted before the final one (Go allows 5).
pub const MAX_INTERIM_RESPONSES: usize = 5;

/// Headers allowed in a response head before `httparse` is asked again with more room.
const INITIAL_HEADER_SLOTS: usize = 64;
/// Upper bound on header slots; the byte limit normally stops a flood first.
const MAX_HEADER_SLOTS: usize = 64 * 1024;

/// Parses a response head from the start of `buf`.
///
/// Returns `Ok(None)` while the head is incomplete, and `Ok(Some((head, consumed)))`
/// once it is. `max_bytes` bounds the head (Go's `MaxResponseHeaderBytes`).
pub fn parse_response_head(
    buf: &[u8],
    max_bytes: usize,
) -> Result<Option<(ResponseHead, usize)>, Error> {
    // Most heads fit the slots on the stack; a larger one is asked again with more.
    let mut on_stack = [httparse::EMPTY_HEADER; INITIAL_HEADER_SLOTS];
    let mut on_heap = Vec::new();
    let mut slots = INITIAL_HEADER_SLOTS;
    loop {
        let headers: &mut [httparse::Header<'_>] = if slots == INITIAL_HEADER_SLOTS {
            &mut on_stack
        } else {
            on_heap.resize(slots, httparse::EMPTY_HEADER);
            &mut on_heap
        };
        let mut response = httparse::Response::new(headers);
        // RFC 9112 §5.2: a user agent must accept obs-fold in a response, as SP.
        let mut config = httparse::ParserConfig::default();
        config.allow_obsolete_multiline_headers_in_responses(true);
        match config.parse_response(&mut response, buf) {
            Ok(httparse::Status::Partial) => {
                return if buf.len() > max_bytes {
                    Err(header_too_large(max_bytes))
                } else {
                    Ok(None)
                };
            }
            Ok(httparse::Status::Complete(consumed)) => {
                if consumed > max_bytes {
                    return Err(header_too_large(max_bytes));
                }
                // One buffer for every field: the head's bytes less the status line.
                let mut fields = Fields::with_capacity(consumed, response.headers.len());
                for header in response.headers.iter() {
                    push_unfolded(&mut fields, header.name, header.value);
                }
                let head = ResponseHead {
                    status: response.code.unwrap_or_default(),
                    reason: response.reason.unwrap_or_default().to_owned(),
                    version_minor: response.version.unwrap_or_default(),
                    headers: fields,
                };
                return Ok(Some((head, consumed)));
            }
            Err(httparse::Error::TooManyHeaders) if slots < MAX_HEADER_SLOTS => slots *= 4,
            Err(error) => return Err(head_error(buf, error)),
        }
    }
}

/// Appends a field whose value may hold obs-folds (CRLF or LF followed by spaces or
/// tabs), each replaced by one space.
fn push_unfolded(fields: &mut Fields, name: &str, value: &[u8]) {
    if !value.contains(&b'\n') {
        fields.push(name, value);
    } else {
        fields.push(name, &unfold(value));
    }
}

/// A header value with each obs-fold (CRLF or LF followed by spaces or tabs)
/// replaced by one space.
fn unfold(value: &[u8]) -> Vec<u8> {
    if !value.contains(&b'\n') {
        return value.to_vec();
    }
    let mut out = Vec::with_capacity(value.len());
    let mut in_fold = false;
    for &byte in value {
        match byte {
            b'\r' | b'\n' => in_fold = true,
            b' ' | b'\t' if in_fold => {}
            _ => {
                if in_fold {
                    if out.last() != Some(&b' ') {
                        out.push(b' ');
                    }
                    in_fold = false;
                }
                out.push(byte);
            }
        }
    }
    out
}

fn header_too_large(max_bytes: usize) -> Error {
    // Go: "net/http: server response headers exceeded %d bytes; aborted"
    Error::new(
        ErrorKind::HeaderSectionTooLarge,
        format!("server response headers exceeded {max_bytes} bytes; aborted"),
    )
}

fn head_error(buf: &[u8], error: httparse::Error) -> Error {
    let line_end = buf
        .iter()
        .position(|&b| b == b'\n')
        .unwrap_or(buf.len())
        .min(64);
    let first_line = String::from_utf8_lossy(&buf[..line_end]);
    let first_line = first_line.trim_end();
    match error {
        httparse::Error::Version | httparse::Error::Status => Error::protocol(format!(
            "malformed HTTP status line {first_line:?} ({error})"
        )),
        _ => Error::protocol(format!("malformed HTTP response head: {error}")),
    }
}

/// How the body of a response is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body: HEAD, interim 1xx, 204, 304.
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Until the server closes the connection (also everything after a
    /// `101 Switching Protocols`: the connection now speaks another protocol).
    UntilClose,
}

impl Framing {
    /// Whether the connection can carry another exchange after a body so framed.
    pub fn is_reusable(self) -> bool {
        self != Framing::UntilClose
    }
}

/// Decides the body framing of a response to a request with `method`.
pub fn framing(method: &str, head: &ResponseHead) -> Result<Framing, Error> {
    if head.status == 101 {
        return Ok(Framing::UntilClose);
    }
    if method.eq_ignore_ascii_case("HEAD")
        || (100..200).contains(&head.status)
        || head.status == 204
        || head.status == 304
    {
        return Ok(Framing::Empty);
    }
    if head.values("transfer-encoding").next().is_some() {
        let codings: Vec<String> = head
            .values("transfer-encoding")
            .flat_map(|v| v.split(|&b| b == b','))
            .map(|c| String::from_utf8_lossy(c).trim().to_ascii_lowercase())
            .filter(|c| !c.is_empty())
            .collect();
        return match codings.as_slice() {
            [only] if only == "chunked" => Ok(Framing::Chunked),
            _ => Err(Error::new(
                ErrorKind::TransferCoding,
                format!("unsupported transfer encoding: {:?}", codings.join(", ")),
            )),
        };
    }
    let mut length: Option<u64> = None;
    for value in head.values("content-length") {
        for part in value.split(|&b| b == b',') {
            let parsed = parse_content_length(part.trim_ascii())?;
            match length {
                Some(seen) if seen != parsed => {
                    return Err(Error::protocol(format!(
                        "message cannot contain multiple Content-Length headers; got {seen} and {parsed}"
                    )));
                }
                _ => length = Some(parsed),
            }
        }
    }
    Ok(match length {
        Some(0) => Framing::Empty,
        Some(n) => Framing::Length(n),
        None => Framing::UntilClose,
    })
}

fn parse_content_length(text: &[u8]) -> Result<u64, Error> {
    let bad = || {
        Error::protocol(format!(
            "bad Content-Length {:?}",
            String::from_utf8_lossy(text)
        ))
    };
    if text.is_empty() || !text.iter().all(u8::is_ascii_digit) {
        return Err(bad());
    }
    std::str::from_utf8(text)
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or_else(bad)
}

/// Longest chunk-size line (size, extensions) accepted.
const MAX_CHUNK_LINE: usize = 4096;
/// Largest trailer section accepted.
const MAX_TRAILER_BYTES: usize = 64 * 1024;
/// Chunk sizes above this are treated as an attack, not a body.
const MAX_CHUNK_SIZE: u64 = 1 << 62;

/// Where a chunked body is between bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chunk {
    /// Reading hex digits of a chunk size.
    Size { size: u64, digits: usize },
    /// After the size: whitespace or an extension up to CR.
    Extension { size: u64, len: usize },
    /// Expecting LF after the size line's CR.
    SizeLf { size: u64 },
    /// Inside chunk data.
    Data { remaining: u64 },
    /// Expecting CR after chunk data.
    DataCr,
    /// Expecting LF after chunk data.
    DataLf,
    /// After the last chunk: reading the trailer section up to an empty line.
    Trailers { bytes: Vec<u8> },
}

/// Body decoder state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyDecoder {
    Length { remaining: u64 },
    Chunked(Chunk),
    UntilClose,
    Done { trailers: Option<Fields> },
}

/// What one call to [`BodyDecoder::decode`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// Input bytes consumed (framing and data).
    pub consumed: usize,
    /// The body data among them, as a range of the input.
    pub data: Option<Range<usize>>,
}

impl BodyDecoder {
    pub fn new(framing: Framing) -> Self {
        match framing {
            Framing::Empty => BodyDecoder::Done { trailers: None },
            Framing::Length(n) => BodyDecoder::Length { remaining: n },
            Framing::Chunked => BodyDecoder::Chunked(Chunk::Size { size: 0, digits: 0 }),
            Framing::UntilClose => BodyDecoder::UntilClose,
        }
    }

    pub fn is_done(&self) -> bool {
        matches!(self, BodyDecoder::Done { .. })
    }

    /// Body bytes still expected, when the framing says.
    pub fn remaining_hint(&self) -> Option<u64> {
        match self {
            BodyDecoder::Length { remaining } => Some(*remaining),
            BodyDecoder::Chunked(Chunk::Data { remaining }) => Some(*remaining),
            _ => None,
        }
    }

    /// Takes the trailers once the body is done.
    pub fn take_trailers(&mut self) -> Option<Fields> {
        match self {
            BodyDecoder::Done { trailers } => trailers.take(),
            _ => None,
        }
    }

    /// Decodes from `input`, stopping after the first run of body data, at the end of
    /// the message, or when `input` is used up. Call again with the unconsumed rest.
    pub fn decode(&mut self, input: &[u8]) -> Result<Step, Error> {
        match self {
            BodyDecoder::Done { .. } => Ok(Step {
                consumed: 0,
                data: None,
            }),
            BodyDecoder::UntilClose => Ok(Step {
                consumed: input.len(),
                data: (!input.is_empty()).then_some(0..input.len()),
            }),
            BodyDecoder::Length { remaining } => {
                let take = input
                    .len()
                    .min(usize::try_from(*remaining).unwrap_or(usize::MAX));
                *remaining -= take as u64;
                if *remaining == 0 {
                    *self = BodyDecoder::Done { trailers: None };
                }
                Ok(Step {
                    consumed: take,
                    data: (take > 0).then_some(0..take),
                })
            }
            BodyDecoder::Chunked(_) => self.decode_chunked(input),
        }
    }

    /// The whole body, when `input` already holds all of it and it is at most `max`
    /// bytes with no trailers: its data and the input bytes it took. `None` leaves the
    /// body to be streamed (a body still coming, one ended by EOF, a bigger one, one
    /// with trailers, or a framing error, which the stream then reports).
    pub fn whole(framing: Framing, input: &[u8], max: usize) -> Option<(Vec<u8>, usize)> {
        match framing {
            Framing::UntilClose => return None,
            Framing::Length(n) if n > input.len().min(max) as u64 => return None,
            _ => {}
        }
        let mut decoder = BodyDecoder::new(framing);
        let mut data = Vec::new();
        let mut used = 0;
        while !decoder.is_done() {
            let step = decoder.decode(&input[used..]).ok()?;
            if step.consumed == 0 && !decoder.is_done() {
                return None;
            }
            if let Some(range) = step.data {
                if data.len() + range.len() > max {
                    return None;
                }
                data.extend_from_slice(&input[used..][range]);
            }
            used += step.consumed;
        }
        match decoder {
            BodyDecoder::Done { trailers: None } => Some((data, used)),
            _ => None,
        }
    }

    /// The connection reached EOF. Ends an until-close body; anything else is cut short.
    pub fn finish_at_eof(&mut self) -> Result<(), Error> {
        match self {
            BodyDecoder::UntilClose => {
                *self = BodyDecoder::Done { trailers: None };
                Ok(())
            }
            BodyDecoder::Done { .. } => Ok(()),
            BodyDecoder::Length { remaining } => Err(Error::new(
                ErrorKind::Incomplete,
                format!(
                    "unexpected EOF: connection closed with {remaining} body bytes still expected"
                ),
            )),
            BodyDecoder::Chunked(_) => Err(Error::new(
                ErrorKind::Incomplete,
                "unexpected EOF: connection closed inside a chunked body",
            )),
        }
    }

    fn decode_chunked(&mut self, input: &[u8]) -> Result<Step, Error> {
        let mut at = 0;
        while at < input.len() {
            let BodyDecoder::Chunked(state) = self else {
                break;
            };
            let byte = input[at];
            match state {
                Chunk::Data { remaining } => {
                    let take =
                        (input.len() - at).min(usize::try_from(*remaining).unwrap_or(usize::MAX));
                    *remaining -= take as u64;
                    if *remaining == 0 {
                        *state = Chunk::DataCr;
                    }
                    return Ok(Step {
                        consumed: at + take,
                        data: Some(at..at + take),
                    });
                }
                Chunk::Size { size, digits } => {
                    if let Some(value) = (byte as char).to_digit(16) {
                        *size = size
                            .checked_mul(16)
                            .map(|s| s + u64::from(value))
                            .filter(|s| *s <= MAX_CHUNK_SIZE)
                            .ok_or_else(|| Error::protocol("chunk size overflows"))?;
                        *digits += 1;
                        if *digits > 16 {
                            return Err(Error::protocol("chunk size overflows"));
                        }
                    } else if *digits == 0 {
                        return Err(invalid_chunk_size(byte));
                    } else if byte == b'\r' {
                        *state = Chunk::SizeLf { size: *size };
                    } else if byte == b';' || byte == b' ' || byte == b'\t' {
                        *state = Chunk::Extension {
                            size: *size,
                            len: 1,
                        };
                    } else {
                        return Err(invalid_chunk_size(byte));
                    }
                }
                Chunk::Extension { size, len } => {
                    *len += 1;
                    if *len > MAX_CHUNK_LINE {
                        return Err(Error::protocol("chunk extension too long"));
                    }
                    match byte {
                        b'\r' => *state = Chunk::SizeLf { size: *size },
                        b'\n' | 0 => {
                            return Err(Error::protocol("invalid byte in chunk extension"));
                        }
                        _ => {}
                    }
                }
                Chunk::SizeLf { size } => {
                    if byte != b'\n' {
                        return Err(Error::protocol("chunk size line not ended by CRLF"));
                    }
                    *state = if *size == 0 {
                        Chunk::Trailers { bytes: Vec::new() }
                    } else {
                        Chunk::Data { remaining: *size }
                    };
                }
                Chunk::DataCr => {
                    if byte != b'\r' {
                        return Err(Error::protocol("chunk data not followed by CRLF"));
                    }
                    *state = Chunk::DataLf;
                }
                Chunk::DataLf => {
                    if byte != b'\n' {
                        return Err(Error::protocol("chunk data not followed by CRLF"));
                    }
                    *state = Chunk::Size { size: 0, digits: 0 };
                }
                Chunk::Trailers { bytes } => {
                    bytes.push(byte);
                    if bytes.len() > MAX_TRAILER_BYTES {
                        return Err(Error::new(
                            ErrorKind::HeaderSectionTooLarge,
                            format!("trailer section exceeds {MAX_TRAILER_BYTES} bytes"),
                        ));
                    }
                    if let Some(trailers) = parse_trailers(bytes)? {
                        *self = BodyDecoder::Done { trailers };
                    }
                }
            }
            at += 1;
        }
        Ok(Step {
            consumed: at,
            data: None,
        })
    }
}

fn invalid_chunk_size(byte: u8) -> Error {
    Error::protocol(format!("invalid byte {:?} in chunk size", byte as char))
}

/// `Ok(Some(trailers))` once `bytes` holds a whole trailer section ending in an empty line.
fn parse_trailers(bytes: &[u8]) -> Result<Option<Option<Fields>>, Error> {
    if bytes == b"\r\n" {
        return Ok(Some(None));
    }
    if !bytes.ends_with(b"\r\n\r\n") {
        if bytes.starts_with(b"\n") || bytes.ends_with(b"\n\n") {
            return Err(Error::protocol("trailer section not ended by CRLF"));
        }
        return Ok(None);
    }
    let mut headers = vec![httparse::EMPTY_HEADER; 64];
    match httparse::parse_headers(bytes, &mut headers) {
        Ok(httparse::Status::Complete((_, parsed))) => Ok(Some(Some(
            parsed.iter().map(|h| (h.name, h.value)).collect(),
        ))),
        Ok(httparse::Status::Partial) => Ok(None),
        Err(error) => Err(Error::protocol(format!(
            "malformed trailer section: {error}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const MAX: usize = 10 << 20;

    fn head(raw: &str) -> ResponseHead {
        parse_response_head(raw.as_bytes(), MAX).unwrap().unwrap().0
    }

    /// Feeds `parts` one after another the way a connection would (unconsumed bytes
    /// carried over), returning the body, the trailers and the bytes left over.
    /// Body, trailers and leftover bytes of one decoding run.
    type Decoded = (Vec<u8>, Option<Fields>, Vec<u8>);

    fn run(framing: Framing, parts: &[&[u8]], eof: bool) -> Result<Decoded, Error> {
        let mut decoder = BodyDecoder::new(framing);
        let mut pending = Vec::new();
        let mut body = Vec::new();
        for part in parts {
            pending.extend_from_slice(part);
            loop {
                let step = decoder.decode(&pending)?;
                if let Some(range) = step.data.clone() {
                    body.extend_from_slice(&pending[range]);
                }
                pending.drain(..step.consumed);
                if step.consumed == 0 || pending.is_empty() || decoder.is_done() {
                    break;
                }
            }
        }
        if eof {
            decoder.finish_at_eof()?;
        }
        assert!(decoder.is_done(), "decoder not done: {decoder:?}");
        let trailers = decoder.take_trailers();
        Ok((body, trailers, pending))
    }

    /// The three ways STYLE.md asks for: whole, every split point, and trailing bytes.
    fn check_all_ways(
        framing: Framing,
        wire: &[u8],
        eof: bool,
        body: &[u8],
        trailers: Option<Fields>,
    ) {
        let (got, got_trailers, rest) = run(framing, &[wire], eof).unwrap();
        assert_eq!(got, body, "whole input");
        assert_eq!(got_trailers, trailers);
        assert!(rest.is_empty());
        for split in 0..=wire.len() {
            let (got, got_trailers, rest) =
                run(framing, &[&wire[..split], &wire[split..]], eof).unwrap();
            assert_eq!(got, body, "split at {split}");
            assert_eq!(got_trailers, trailers, "split at {split}");
            assert!(rest.is_empty());
        }
        let one_byte_parts: Vec<&[u8]> = wire.chunks(1).collect();
        assert_eq!(
            run(framing, &one_byte_parts, eof).unwrap().0,
            body,
            "byte by byte"
        );
        if !eof {
            let mut extra = wire.to_vec();
            extra.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
            let (got, _, rest) = run(framing, &[&extra], false).unwrap();
            assert_eq!(got, body, "with trailing bytes");
            assert_eq!(
                rest, b"HTTP/1.1 200 OK\r\n",
                "trailing bytes left unconsumed"
            );
        }
    }

    #[test]
    fn content_length_body() {
        check_all_ways(
            Framing::Length(11),
            b"hello world",
            false,
            b"hello world",
            None,
        );
    }

    #[test]
    fn chunked_body_with_extensions_and_trailers() {
        let wire = b"5;name=value\r\nhello\r\n6 ; ext\r\n world\r\n0\r\nExpires: never\r\nX-Sum: 42\r\n\r\n";
        check_all_ways(
            Framing::Chunked,
            wire,
            false,
            b"hello world",
            Some(
                [("Expires", "never"), ("X-Sum", "42")]
                    .into_iter()
                    .collect(),
            ),
        );
    }

    #[test]
    fn chunked_body_without_trailers() {
        check_all_ways(
            Framing::Chunked,
            b"A\r\n0123456789\r\n0\r\n\r\n",
            false,
            b"0123456789",
            None,
        );
    }

    #[test]
    fn until_close_body_ends_at_eof() {
        check_all_ways(Framing::UntilClose, b"all of it", true, b"all of it", None);
    }

    #[test]
    fn empty_body_consumes_nothing() {
        let (body, _, rest) = run(Framing::Empty, &[b"HTTP/1.1 200 OK\r\n"], false).unwrap();
        assert!(body.is_empty());
        assert_eq!(rest, b"HTTP/1.1 200 OK\r\n");
    }

    #[test]
    fn truncated_bodies_are_incomplete() {
        let error = run(Framing::Length(10), &[b"short"], true).unwrap_err();
        assert_eq!(error.kind, ErrorKind::Incomplete);
        assert!(error.message.contains("5 body bytes"), "{error}");
        let error = run(Framing::Chunked, &[b"5\r\nhel"], true).unwrap_err();
        assert_eq!(error.kind, ErrorKind::Incomplete);
    }

    #[test]
    fn bad_chunk_sizes_are_protocol_errors() {
        for wire in [
            &b"x\r\n"[..],
            b"\r\n",
            b"5\n",
            b"-1\r\n",
            b"5\r\nhelloXX",
            b"11111111111111111\r\n",
        ] {
            let error = run(Framing::Chunked, &[wire], false).unwrap_err();
            assert_eq!(error.kind, ErrorKind::Protocol, "{wire:?}");
        }
    }

    #[test]
    fn head_parses_whole_split_and_with_body_after() {
        let wire = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b\r\n\r\nhello";
        let head_len = wire.len() - 5;
        for split in 0..head_len {
            assert_eq!(
                parse_response_head(&wire[..split], MAX).unwrap(),
                None,
                "split {split}"
            );
        }
        let (parsed, consumed) = parse_response_head(wire, MAX).unwrap().unwrap();
        assert_eq!(consumed, head_len);
        assert_eq!(parsed.status, 200);
        assert_eq!(parsed.reason, "OK");
        assert_eq!(parsed.version_minor, 1);
        assert_eq!(parsed.headers.iter().nth(1), Some(("X-A", &b"b"[..])));
    }

    #[test]
    fn head_over_the_limit_is_rejected_even_when_partial() {
        let wire = format!("HTTP/1.1 200 OK\r\nX-Big: {}\r\n", "a".repeat(200));
        let error = parse_response_head(wire.as_bytes(), 100).unwrap_err();
        assert_eq!(error.kind, ErrorKind::HeaderSectionTooLarge);
        assert_eq!(
            error.message,
            "server response headers exceeded 100 bytes; aborted"
        );
    }

    #[test]
    fn obs_fold_is_read_as_one_space() {
        let raw = b"HTTP/1.1 200 OK\r\nX-A: one\r\n  two\r\n\tthree\r\nX-B: b\r\n\r\n";
        let (head, consumed) = parse_response_head(raw, 1 << 20).unwrap().unwrap();
        assert_eq!(consumed, raw.len());
        assert_eq!(head.values("x-a").next(), Some(&b"one two three"[..]));
        assert_eq!(head.values("x-b").next(), Some(&b"b"[..]));
    }

    #[test]
    fn many_headers_are_accepted() {
        let mut wire = String::from("HTTP/1.1 200 OK\r\n");
        for i in 0..500 {
            wire.push_str(&format!("X-{i}: {i}\r\n"));
        }
        wire.push_str("\r\n");
        assert_eq!(head(&wire).headers.len(), 500);
    }

    #[test]
    fn non_http1_status_lines_are_protocol_errors() {
        for wire in [
            "HTTP/2 200 OK\r\n\r\n",
            "HTTP/1.1 2000 OK\r\n\r\n",
            "hello\r\n\r\n",
        ] {
            let error = parse_response_head(wire.as_bytes(), MAX).unwrap_err();
            assert_eq!(error.kind, ErrorKind::Protocol, "{wire}");
        }
    }

    #[test]
    fn framing_follows_rfc9112() {
        let ok = head("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n");
        assert_eq!(framing("GET", &ok).unwrap(), Framing::Length(5));
        assert_eq!(framing("HEAD", &ok).unwrap(), Framing::Empty);
        for status in ["204 No Content", "304 Not Modified", "100 Continue"] {
            let h = head(&format!(
                "HTTP/1.1 {status}\r\nTransfer-Encoding: chunked\r\n\r\n"
            ));
            assert_eq!(framing("GET", &h).unwrap(), Framing::Empty, "{status}");
        }
        let chunked =
            head("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n");
        assert_eq!(framing("GET", &chunked).unwrap(), Framing::Chunked);
        let none = head("HTTP/1.1 200 OK\r\n\r\n");
        assert_eq!(framing("GET", &none).unwrap(), Framing::UntilClose);
        let same = head("HTTP/1.1 200 OK\r\nContent-Length: 3, 3\r\nContent-Length: 3\r\n\r\n");
        assert_eq!(framing("GET", &same).unwrap(), Framing::Length(3));
        let switching = head("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n");
        assert_eq!(framing("GET", &switching).unwrap(), Framing::UntilClose);
        let zero = head("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(framing("GET", &zero).unwrap(), Framing::Empty);
    }

    #[test]
    fn bad_framing_headers_are_rejected() {
        for (raw, kind) in [
            ("Content-Length: +3", ErrorKind::Protocol),
            ("Content-Length: -3", ErrorKind::Protocol),
            (
                "Content-Length: 3\r\nContent-Length: 4",
                ErrorKind::Protocol,
            ),
            (
                "Content-Length: 99999999999999999999999",
                ErrorKind::Protocol,
            ),
            (
                "Transfer-Encoding: gzip, chunked",
                ErrorKind::TransferCoding,
            ),
            ("Transfer-Encoding: identity", ErrorKind::TransferCoding),
        ] {
            let h = head(&format!("HTTP/1.1 200 OK\r\n{raw}\r\n\r\n"));
            assert_eq!(framing("GET", &h).unwrap_err().kind, kind, "{raw}");
        }
    }

    #[test]
    fn keep_alive_depends_on_version_and_connection_header() {
        assert!(head("HTTP/1.1 200 OK\r\n\r\n").allows_keep_alive());
        assert!(!head("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n").allows_keep_alive());
        assert!(!head("HTTP/1.1 200 OK\r\nConnection: foo, Close\r\n\r\n").allows_keep_alive());
        assert!(!head("HTTP/1.0 200 OK\r\n\r\n").allows_keep_alive());
        assert!(head("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n\r\n").allows_keep_alive());
    }

    #[test]
    fn interim_responses_exclude_101() {
        assert!(head("HTTP/1.1 100 Continue\r\n\r\n").is_interim());
        assert!(head("HTTP/1.1 103 Early Hints\r\n\r\n").is_interim());
        assert!(!head("HTTP/1.1 101 Switching Protocols\r\n\r\n").is_interim());
        assert!(!head("HTTP/1.1 200 OK\r\n\r\n").is_interim());
    }

    #[test]
    fn a_body_that_came_whole_with_its_head_is_taken_whole() {
        let rest = b"HTTP/1.1 200 OK\r\n";
        let mut wire = b"hello".to_vec();
        wire.extend_from_slice(rest);
        assert_eq!(
            BodyDecoder::whole(Framing::Length(5), &wire, 64),
            Some((b"hello".to_vec(), 5))
        );
        assert_eq!(
            BodyDecoder::whole(Framing::Length(0), b"", 64),
            Some((vec![], 0))
        );
        assert_eq!(
            BodyDecoder::whole(Framing::Empty, b"x", 64),
            Some((vec![], 0))
        );
        let chunked = b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\nnext";
        assert_eq!(
            BodyDecoder::whole(Framing::Chunked, chunked, 64),
            Some((b"hello world".to_vec(), chunked.len() - 4))
        );
    }

    #[test]
    fn a_body_still_coming_too_big_with_trailers_or_broken_is_left_to_the_stream() {
        assert_eq!(BodyDecoder::whole(Framing::Length(6), b"hello", 64), None);
        assert_eq!(BodyDecoder::whole(Framing::Length(5), b"hello", 4), None);
        assert_eq!(BodyDecoder::whole(Framing::UntilClose, b"hello", 64), None);
        assert_eq!(
            BodyDecoder::whole(Framing::Chunked, b"5\r\nhello\r\n", 64),
            None
        );
        assert_eq!(
            BodyDecoder::whole(
                Framing::Chunked,
                b"5\r\nhello\r\n5\r\nworld\r\n0\r\n\r\n",
                8
            ),
            None
        );
        let with_trailers = b"5\r\nhello\r\n0\r\nx-sum: 1\r\n\r\n";
        assert_eq!(
            BodyDecoder::whole(Framing::Chunked, with_trailers, 64),
            None
        );
        assert_eq!(BodyDecoder::whole(Framing::Chunked, b"zz\r\n", 64), None);
    }
}
