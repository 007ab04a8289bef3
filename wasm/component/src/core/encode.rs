//! Request encoding: the head and the body framing, as exact wire bytes.

use super::fields::Fields;

/// How the request body is delimited on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body and no framing header.
    None,
    /// `Content-Length: n`.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// Everything that goes into a request head.
#[derive(Debug, Clone)]
pub struct RequestHead<'a> {
    pub method: &'a str,
    /// Origin-form target, e.g. `/path?query`.
    pub target: &'a str,
    /// `Host` value, used unless the caller's headers carry one.
    pub authority: &'a str,
    /// Sent unless empty or the caller's headers carry a `User-Agent`.
    pub user_agent: &'a str,
    /// Caller headers, already checked.
    pub headers: &'a Fields,
    pub framing: BodyFraming,
    /// Add `Connection: close` unless the caller already asked for it.
    pub close: bool,
    /// Add `Accept-Encoding: gzip` (see `compression::should_request_gzip`).
    pub accept_gzip: bool,
}

/// Headers the transport writes itself from the body framing.
fn is_framing_header(name: &str) -> bool {
    name.eq_ignore_ascii_case("content-length") || name.eq_ignore_ascii_case("transfer-encoding")
}

/// Whether `headers` ask for `Connection: close`.
pub fn asks_close(headers: &Fields) -> bool {
    headers.iter().any(|(name, value)| {
        name.eq_ignore_ascii_case("connection")
            && value
                .split(|&b| b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"))
    })
}

/// Appends the request head to `out`.
pub fn encode_head(out: &mut Vec<u8>, head: &RequestHead<'_>) {
    let has = |wanted: &str| head.headers.contains(wanted);
    out.extend_from_slice(head.method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(head.target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    if !has("host") {
        put_header(out, "Host", head.authority.as_bytes());
    }
    if !head.user_agent.is_empty() && !has("user-agent") {
        put_header(out, "User-Agent", head.user_agent.as_bytes());
    }
    if head.headers.iter().any(|(n, _)| is_framing_header(n)) {
        for (name, value) in head.headers.iter().filter(|(n, _)| !is_framing_header(n)) {
            put_header(out, name, value);
        }
    } else {
        // The caller's block is already in wire form.
        out.extend_from_slice(head.headers.as_bytes());
    }
    if head.accept_gzip {
        put_header(out, "Accept-Encoding", b"gzip");
    }
    match head.framing {
        BodyFraming::None => {}
        BodyFraming::Length(n) => {
            let mut digits = itoa::Buffer::new();
            put_header(out, "Content-Length", digits.format(n).as_bytes());
        }
        BodyFraming::Chunked => put_header(out, "Transfer-Encoding", b"chunked"),
    }
    if head.close && !asks_close(head.headers) {
        put_header(out, "Connection", b"close");
    }
    out.extend_from_slice(b"\r\n");
}

fn put_header(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Framing for a body of known length: Go sends `Content-Length: 0` only for methods
/// that normally carry a body.
pub fn framing_for_length(method: &str, length: u64) -> BodyFraming {
    let expects_body = ["POST", "PUT", "PATCH"]
        .iter()
        .any(|m| m.eq_ignore_ascii_case(method));
    if length == 0 && !expects_body {
        BodyFraming::None
    } else {
        BodyFraming::Length(length)
    }
}

/// Appends one chunk of a chunked body; empty data writes nothing (that would end the body).
pub fn encode_chunk(out: &mut Vec<u8>, data: &[u8]) {
    if data.is_empty() {
        return;
    }
    out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// The last chunk with an empty trailer section.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// Appends the last chunk and a trailer section holding `trailers` (already checked
/// like headers; framing fields are not allowed there and are left out, RFC 9110 §6.5.1).
pub fn encode_last_chunk(out: &mut Vec<u8>, trailers: &Fields) {
    out.extend_from_slice(b"0\r\n");
    for (name, value) in trailers.iter().filter(|(n, _)| !is_framing_header(n)) {
        put_header(out, name, value);
    }
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn head_bytes(head: RequestHead<'_>) -> String {
        let mut out = Vec::new();
        encode_head(&mut out, &head);
        String::from_utf8(out).unwrap()
    }

    fn fields(list: &[(&str, &str)]) -> Fields {
        list.iter().map(|(n, v)| (*n, *v)).collect()
    }

    const NONE: &Fields = &Fields::new();

    fn base<'a>(headers: &'a Fields) -> RequestHead<'a> {
        RequestHead {
            method: "GET",
            target: "/a?b=c",
            authority: "example.com:8080",
            user_agent: "roundtrip/0.1",
            headers,
            framing: BodyFraming::None,
            close: false,
            accept_gzip: false,
        }
    }

    #[test]
    fn get_head_is_exact() {
        let headers = fields(&[("Accept", "*/*")]);
        assert_eq!(
            head_bytes(base(&headers)),
            "GET /a?b=c HTTP/1.1\r\nHost: example.com:8080\r\nUser-Agent: roundtrip/0.1\r\nAccept: */*\r\n\r\n"
        );
    }

    #[test]
    fn caller_host_and_user_agent_win_and_framing_headers_are_ours() {
        let headers = fields(&[
            ("host", "other"),
            ("User-Agent", "me"),
            ("Content-Length", "999"),
            ("Transfer-Encoding", "gzip"),
        ]);
        let mut head = base(&headers);
        head.method = "POST";
        head.framing = BodyFraming::Length(3);
        assert_eq!(
            head_bytes(head),
            "POST /a?b=c HTTP/1.1\r\nhost: other\r\nUser-Agent: me\r\nContent-Length: 3\r\n\r\n"
        );
    }

    #[test]
    fn chunked_and_close_headers() {
        let mut head = base(NONE);
        head.user_agent = "";
        head.framing = BodyFraming::Chunked;
        head.close = true;
        assert_eq!(
            head_bytes(head),
            "GET /a?b=c HTTP/1.1\r\nHost: example.com:8080\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        );
    }

    #[test]
    fn accept_gzip_follows_the_caller_headers() {
        let mut head = base(NONE);
        head.accept_gzip = true;
        assert_eq!(
            head_bytes(head),
            "GET /a?b=c HTTP/1.1\r\nHost: example.com:8080\r\nUser-Agent: roundtrip/0.1\r\nAccept-Encoding: gzip\r\n\r\n"
        );
    }

    #[test]
    fn close_is_sent_exactly_once() {
        let headers = fields(&[("Connection", "Close")]);
        let mut head = base(&headers);
        head.close = true;
        assert_eq!(head_bytes(head).matches("onnection").count(), 1);
    }

    #[test]
    fn chunks_are_hex_framed() {
        let mut out = Vec::new();
        encode_chunk(&mut out, &[b'x'; 26]);
        encode_chunk(&mut out, b"");
        out.extend_from_slice(LAST_CHUNK);
        let mut expected = b"1a\r\n".to_vec();
        expected.extend_from_slice(&[b'x'; 26]);
        expected.extend_from_slice(b"\r\n0\r\n\r\n");
        assert_eq!(out, expected);
    }

    #[test]
    fn trailers_follow_the_last_chunk() {
        let mut out = Vec::new();
        encode_last_chunk(&mut out, NONE);
        assert_eq!(out, LAST_CHUNK);
        out.clear();
        let trailers = fields(&[("Checksum", "abc"), ("Content-Length", "3")]);
        encode_last_chunk(&mut out, &trailers);
        assert_eq!(out, b"0\r\nChecksum: abc\r\n\r\n");
    }

    #[test]
    fn zero_length_framing_follows_go() {
        assert_eq!(framing_for_length("GET", 0), BodyFraming::None);
        assert_eq!(framing_for_length("POST", 0), BodyFraming::Length(0));
        assert_eq!(framing_for_length("GET", 5), BodyFraming::Length(5));
    }
}
