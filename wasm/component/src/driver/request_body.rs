//! A request's body as both protocols send it: empty, bytes (replayable on a retry),
//! or the caller's stream — read by a task of its own (`forward_stream`), so giving up
//! on the body never cancels a component-model read, and checked against its declared
//! length — and how a write ended (`WriteError`, `wrote_request`).

use futures::SinkExt;
use futures::channel::mpsc;
use futures::future::LocalBoxFuture;
use wit_bindgen::{FutureReader, StreamResult};

use super::bindings::roundtrip::transport::observe::EventKind;
use super::bindings::roundtrip::transport::types::{BodySize, BodyStream, ErrorCode};
use super::conn::READ_SIZE;
use super::errors::message;
use super::exchange::Failed;
use crate::core::decode::Fields;
use crate::core::encode::{self, BodyFraming};

/// A request body as the exchange holds it between attempts.
pub enum Body {
    Empty,
    /// Kept for a replay.
    Bytes(Vec<u8>),
    /// `None` once it has been read from: it cannot be produced again.
    Stream(Option<BodyStream>),
}

/// What one attempt writes, owned by the write.
pub enum Outgoing {
    Empty,
    Bytes(Vec<u8>),
    Stream(BodyStream),
    /// A stream an earlier attempt already read.
    Spent,
}

impl Body {
    pub fn is_replayable(&self) -> bool {
        !matches!(self, Body::Stream(_))
    }

    /// Whether another attempt can send it: bytes, or a stream no attempt has read.
    pub fn can_send_again(&self) -> bool {
        !matches!(self, Body::Stream(None))
    }

    pub fn is_empty(&self) -> bool {
        match self {
            Body::Empty => true,
            Body::Bytes(bytes) => bytes.is_empty(),
            Body::Stream(_) => false,
        }
    }

    /// How the body is delimited on the wire for a request with `method` and `headers`.
    pub fn framing(&self, method: &str, headers: &Fields) -> Result<BodyFraming, ErrorCode> {
        Ok(match self {
            Body::Empty => encode::framing_for_length(method, 0),
            Body::Bytes(bytes) => encode::framing_for_length(method, bytes.len() as u64),
            Body::Stream(_) => {
                declared_length(headers)?.map_or(BodyFraming::Chunked, BodyFraming::Length)
            }
        })
    }

    /// The body for one attempt: a copy of the bytes, or the stream itself (once).
    pub fn outgoing(&mut self) -> Outgoing {
        match self {
            Body::Empty => Outgoing::Empty,
            Body::Bytes(bytes) => Outgoing::Bytes(bytes.clone()),
            Body::Stream(stream) => stream.take().map_or(Outgoing::Spent, Outgoing::Stream),
        }
    }
}

/// The `Content-Length` a caller declared for a stream body, if any.
pub fn declared_length(headers: &Fields) -> Result<Option<u64>, ErrorCode> {
    let Some((_, value)) = headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
    else {
        return Ok(None);
    };
    std::str::from_utf8(value)
        .ok()
        .and_then(|text| text.trim().parse::<u64>().ok())
        .map(Some)
        .ok_or_else(|| {
            ErrorCode::HttpRequestHeaderInvalid(format!(
                "invalid Content-Length {:?}",
                String::from_utf8_lossy(value)
            ))
        })
}

/// Why a request was not written to its end.
#[derive(Clone)]
pub enum WriteError {
    /// The connection would not take the bytes; `progress` says how far it got.
    Connection(Failed),
    /// The caller's body failed, or did not match its `Content-Length`.
    Body(ErrorCode),
    /// The server refused `Expect: 100-continue` with a final 3xx–5xx: the body was
    /// held back, so the connection is out of step.
    Withheld,
    /// HTTP/2: the server gave the stream no flow-control window for the transport's
    /// `write-byte-timeout`; the stream was reset.
    Stalled(ErrorCode),
}

impl WriteError {
    /// The error that ends the whole exchange — the caller's body failed, or an HTTP/2
    /// stream got no window and was reset — rather than the write alone (the server
    /// stopped reading, or held the body back: its answer is still read).
    pub fn ends_exchange(&self) -> Option<&ErrorCode> {
        match self {
            WriteError::Body(code) | WriteError::Stalled(code) => Some(code),
            WriteError::Connection(_) | WriteError::Withheld => None,
        }
    }

    /// The error as the caller sees it (`response.request-sent`).
    pub fn code(&self) -> ErrorCode {
        match self {
            WriteError::Connection(failed) => failed.code.clone(),
            WriteError::Body(code) | WriteError::Stalled(code) => code.clone(),
            WriteError::Withheld => ErrorCode::HttpRequestBodyError(
                "the body was not sent: the server refused `Expect: 100-continue` with a \
                 final status"
                    .to_owned(),
            ),
        }
    }
}

/// A request write that may outlive the exchange's wait for the head.
pub type PendingWrite = LocalBoxFuture<'static, Result<(), WriteError>>;

/// The `wrote_request` event of a write that ended `written`.
pub fn wrote_request(written: &Result<(), WriteError>) -> EventKind {
    EventKind::WroteRequest(
        written
            .as_ref()
            .err()
            .map(|e| message(&e.code()).to_owned()),
    )
}

/// What the task reading the caller's stream passes on.
pub enum Piece {
    Data(Vec<u8>),
    /// The body's end: complete (with trailers, maybe), or failed.
    End(Result<Option<Fields>, ErrorCode>),
}

/// Reads the caller's body stream until it ends (then its `end` future) or nobody
/// wants more. With a declared length, no byte past it is taken: one more fails it.
pub async fn forward_stream(
    stream: BodyStream,
    declared: Option<u64>,
    mut forward: mpsc::Sender<Piece>,
) {
    let BodyStream { mut contents, end } = stream;
    let mut seen: u64 = 0;
    let outcome = loop {
        // Never past the declared length; once there, one more read tells whether the
        // body goes on (and how far: wasmtime-wasi-http counts the offending write).
        let room = match declared {
            Some(declared) if declared > seen => (declared - seen).min(READ_SIZE as u64) as usize,
            _ => READ_SIZE,
        };
        let (result, chunk) = contents.read(Vec::with_capacity(room)).await;
        if chunk.is_empty() {
            match result {
                StreamResult::Dropped => break None,
                _ => continue,
            }
        }
        seen += chunk.len() as u64;
        if let Some(declared) = declared
            && seen > declared
        {
            break Some(size_mismatch(declared, seen));
        }
        if forward.send(Piece::Data(chunk)).await.is_err() {
            return;
        }
    };
    drop(contents);
    let end = match outcome {
        Some(too_long) => Err(too_long),
        None => ended(end, declared, seen).await,
    };
    let _ = forward.send(Piece::End(end)).await;
}

/// The caller's verdict on a body that ended after `seen` bytes.
async fn ended(
    end: FutureReader<Result<Option<Vec<u8>>, ErrorCode>>,
    declared: Option<u64>,
    seen: u64,
) -> Result<Option<Fields>, ErrorCode> {
    let verdict = end.await?;
    match declared {
        Some(declared) if seen < declared => Err(size_mismatch(declared, seen)),
        // Trailers are checked like headers before a byte of them is sent.
        _ => verdict
            .map(Fields::from_block)
            .transpose()
            .map_err(super::errors::to_code),
    }
}

fn size_mismatch(declared: u64, actual: u64) -> ErrorCode {
    let message = if actual > declared {
        format!("request body longer than its Content-Length of {declared} bytes")
    } else {
        format!("request body ended after {actual} of its {declared} declared bytes")
    };
    ErrorCode::HttpRequestBodySize(BodySize {
        declared,
        actual,
        message,
    })
}
