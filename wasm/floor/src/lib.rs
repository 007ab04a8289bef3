//! The floor (bench only): the least a component exporting `round-tripper` can do for
//! one plain-HTTP/1.1 request, so `roundtrip bench` can measure what the boundary
//! itself costs beside hyper-util (docs/performance.md, "The floor").
//!
//! ```text
//!  host ── round-trip (one async export call) ──► take an open connection (dial once)
//!                                                  write the head: one stream write
//!                                                  read until the whole response: the
//!                                                  one wait; httparse, Content-Length
//!       ◄── status, headers, body `whole` ──────── put the connection back
//! ```
//!
//! No pool rules, retries, timeouts, events, tasks, chunked bodies or TLS: what the
//! real transport does beyond this is what it costs beyond the floor. The socket's
//! streams are read and written on the request's own task.

#![cfg(target_arch = "wasm32")]

// Generated glue: the ABI needs `unsafe` and exported symbols.
#[allow(unsafe_code)]
mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "transport",
        generate_all,
    });
}

use std::cell::RefCell;

use bindings::exports::roundtrip::transport::round_tripper::{Guest, GuestTransport};
use bindings::roundtrip::transport::net::{self, Connection};
use bindings::roundtrip::transport::types::{
    Config, ErrorCode, HttpVersion, PoolStats, Request, RequestBody, Response, ResponseBody,
};
use bindings::wit_stream;
use wit_bindgen::{StreamReader, StreamResult, StreamWriter};

struct Floor;

impl Guest for Floor {
    type Transport = Transport;
}

// The export glue is generated `unsafe` ABI code.
#[allow(unsafe_code)]
mod export {
    use super::{Floor, bindings};
    bindings::export!(Floor with_types_in bindings);
}

/// An open connection: the host's socket, the stream it sends from, the stream it
/// receives into, and bytes read past the last response.
struct Open {
    _socket: Connection,
    outbound: StreamWriter<u8>,
    inbound: StreamReader<u8>,
    buffered: Vec<u8>,
}

pub struct Transport {
    idle: RefCell<Vec<Open>>,
}

impl GuestTransport for Transport {
    fn new(_config: Config) -> Self {
        Self {
            idle: RefCell::new(Vec::new()),
        }
    }

    async fn round_trip(&self, req: Request) -> Result<Response, ErrorCode> {
        let (authority, path) = split(&req.url)?;
        let popped = self.idle.borrow_mut().pop();
        let mut open = match popped {
            Some(open) => open,
            None => dial(authority).await?,
        };
        let mut head = Vec::with_capacity(256);
        head.extend_from_slice(req.method.as_bytes());
        head.push(b' ');
        head.extend_from_slice(path.as_bytes());
        head.extend_from_slice(b" HTTP/1.1\r\n");
        if !has_host(&req.headers) {
            head.extend_from_slice(b"Host: ");
            head.extend_from_slice(authority.as_bytes());
            head.extend_from_slice(b"\r\n");
        }
        // The caller's fields are already `name: value` CRLF (the floor trusts them
        // and sends no `Host` of its own when they carry one).
        head.extend_from_slice(&req.headers);
        match &req.body {
            RequestBody::Empty => head.extend_from_slice(b"\r\n"),
            RequestBody::Bytes(bytes) => {
                head.extend_from_slice(
                    format!("Content-Length: {}\r\n\r\n", bytes.len()).as_bytes(),
                );
                head.extend_from_slice(bytes);
            }
            RequestBody::Stream(_) => return Err(unsupported("a streamed request body")),
        }
        if !open.outbound.write_all(head).await.is_empty() {
            return Err(ErrorCode::ConnectionTerminated(
                "the connection would not take the request".into(),
            ));
        }
        let response = read_response(&mut open).await?;
        self.idle.borrow_mut().push(open);
        Ok(response)
    }

    async fn release(&self, _conn: u64, _read: bool) {}

    fn cancel(&self, _cancel_id: u64) {}

    fn close_idle_connections(&self) {
        self.idle.borrow_mut().clear();
    }

    fn stats(&self) -> PoolStats {
        PoolStats {
            keys: Vec::new(),
            dials: 0,
            reuses: 0,
        }
    }
}

/// `http://AUTHORITY/PATH` → (AUTHORITY, /PATH).
fn split(url: &str) -> Result<(&str, &str), ErrorCode> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| unsupported("a URL other than http://"))?;
    Ok(match rest.find('/') {
        Some(at) => (&rest[..at], &rest[at..]),
        None => (rest, "/"),
    })
}

async fn dial(authority: &str) -> Result<Open, ErrorCode> {
    let (host, port) = authority
        .rsplit_once(':')
        .and_then(|(host, port)| Some((host, port.parse().ok()?)))
        .unwrap_or((authority, 80));
    let socket = net::connect(host.to_owned(), port, None).await?;
    let (outbound, host_reads) = wit_stream::new::<u8>();
    // The host reports the streams' ends through these futures; the floor never asks.
    drop(socket.send(host_reads));
    let (inbound, received) = socket.receive();
    drop(received);
    Ok(Open {
        _socket: socket,
        outbound,
        inbound,
        buffered: Vec::with_capacity(16 * 1024),
    })
}

/// Reads one response with a `Content-Length` body from `open`.
async fn read_response(open: &mut Open) -> Result<Response, ErrorCode> {
    loop {
        if let Some(response) = parse(&mut open.buffered)? {
            return Ok(response);
        }
        let mut buffer = std::mem::take(&mut open.buffered);
        buffer.reserve(16 * 1024);
        let (result, filled) = open.inbound.read(buffer).await;
        open.buffered = filled;
        if !matches!(result, StreamResult::Complete(_)) {
            return Err(ErrorCode::HttpResponseIncomplete(
                "the connection closed".into(),
            ));
        }
    }
}

/// Whether a `fields` block has a `Host` line.
fn has_host(fields: &[u8]) -> bool {
    fields
        .split(|&b| b == b'\n')
        .any(|line| line.len() > 5 && line[..5].eq_ignore_ascii_case(b"host:"))
}

/// A whole response at the front of `buffered` (taken out of it), or `None` for more.
fn parse(buffered: &mut Vec<u8>) -> Result<Option<Response>, ErrorCode> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut head = httparse::Response::new(&mut headers);
    let length = match head.parse(buffered) {
        Ok(httparse::Status::Complete(length)) => length,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(ErrorCode::HttpProtocolError(e.to_string())),
    };
    let mut body_length = 0;
    let mut fields = Vec::with_capacity(length);
    for header in head.headers.iter() {
        if header.name.eq_ignore_ascii_case("content-length") {
            body_length = std::str::from_utf8(header.value)
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok())
                .ok_or_else(|| ErrorCode::HttpProtocolError("bad Content-Length".into()))?;
        }
        fields.extend_from_slice(header.name.as_bytes());
        fields.extend_from_slice(b": ");
        fields.extend_from_slice(header.value);
        fields.extend_from_slice(b"\r\n");
    }
    if buffered.len() < length + body_length {
        return Ok(None);
    }
    let response = Response {
        status: head.code.unwrap_or_default(),
        reason: head.reason.unwrap_or_default().to_owned(),
        version: HttpVersion::Http11,
        headers: fields,
        body: ResponseBody::Whole(buffered[length..length + body_length].to_vec()),
        conn: 0,
        reused: true,
        req: 0,
    };
    buffered.drain(..length + body_length);
    Ok(Some(response))
}

fn unsupported(what: &str) -> ErrorCode {
    ErrorCode::InternalError(format!("the floor component does not do {what}"))
}
