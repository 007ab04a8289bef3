//! Writing a request: the head, then the body (bytes or a caller's stream), waiting
//! for `100 Continue` first when the request asks for it.
//!
//! Theory of operation. The write is a future that owns everything it writes (a clone
//! of the connection's writer, the body), so it does not have to finish before the
//! response head is read:
//!
//! ```text
//!  exchange::attempt ── select ─┬─ write_request ── head, [100-continue], body, end
//!                               └─ read_head
//!   head first? the unfinished write goes to the body task (body::pump_body), which
//!   keeps sending while it copies the response (Go's writeLoop): a server that
//!   answers at once and reads on — an echo — gets the whole body.
//! ```
//!
//! The write ends with `wrote_request` whenever it ends, and says how: the connection
//! is pooled only if it finished (Go's `persistConn.wroteRequest`).

use futures::channel::{mpsc, oneshot};
use futures::future::LocalBoxFuture;
use futures::{SinkExt, StreamExt};
use wit_bindgen::{FutureReader, StreamResult};

use super::bindings::roundtrip::transport::observe::EventKind;
use super::bindings::roundtrip::transport::types::{BodySize, BodyStream, ErrorCode};
use super::clock;
use super::conn::{READ_SIZE, Writer};
use super::errors::{message, to_code};
use super::exchange::{Emitter, Failed};
use crate::core::decode::Fields;
use crate::core::encode::{self, BodyFraming};
use crate::core::request;
use crate::core::reuse::Progress;

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

/// Small bodies go out in the same write as the head.
const COALESCE_LIMIT: usize = 16 * 1024;

/// `Expect: 100-continue`: wait this long (nanoseconds) for the server's go-ahead
/// (`100 Continue` or a final 2xx), signalled on `go`, before sending the body anyway.
/// `go` dropped unsignalled means a final refusal (3xx–5xx) came first.
pub struct Continue {
    pub timeout: u64,
    pub go: oneshot::Receiver<()>,
}

/// Writes the head and the body, then reports `wrote_request`.
pub async fn write_request(
    mut writer: Writer,
    emitter: Emitter,
    wire: Vec<u8>,
    body: Outgoing,
    framing: BodyFraming,
    wait_for_continue: Option<Continue>,
) -> Result<(), WriteError> {
    let written = match write_all(
        &mut writer,
        &emitter,
        wire,
        body,
        framing,
        wait_for_continue,
    )
    .await
    {
        // Written when the host has taken the last byte (and a write is never left
        // pending on a connection going back to the pool).
        Ok(()) => writer
            .flush()
            .await
            .map_err(|code| connection(Progress::NoResponse, code)),
        failed => failed,
    };
    emitter.emit(wrote_request(&written));
    written
}

/// The `wrote_request` event of a write that ended `written`.
pub fn wrote_request(written: &Result<(), WriteError>) -> EventKind {
    EventKind::WroteRequest(
        written
            .as_ref()
            .err()
            .map(|e| message(&e.code()).to_owned()),
    )
}

async fn write_all(
    writer: &mut Writer,
    emitter: &Emitter,
    mut wire: Vec<u8>,
    body: Outgoing,
    framing: BodyFraming,
    wait_for_continue: Option<Continue>,
) -> Result<(), WriteError> {
    let coalesced = wait_for_continue.is_none()
        && matches!(&body, Outgoing::Bytes(bytes) if bytes.len() <= COALESCE_LIMIT);
    if let (true, Outgoing::Bytes(bytes)) = (coalesced, &body) {
        wire.extend_from_slice(bytes);
    }
    let nothing_written = |code| connection(Progress::NothingWritten, code);
    writer.write(wire).await.map_err(nothing_written)?;
    if coalesced || matches!(body, Outgoing::Empty) {
        // The head is all there is: written when the host has taken it.
        writer.flush().await.map_err(nothing_written)?;
    }
    emitter.emit(EventKind::WroteHeaders);
    if coalesced {
        return Ok(());
    }
    if let Some(Continue { timeout, go }) = wait_for_continue {
        // A `100 Continue`, or silence until the timeout: send the body either way
        // (Go's rule). A final answer first: hold it back.
        if let Some(Err(oneshot::Canceled)) = clock::within(Some(timeout), go).await {
            return Err(WriteError::Withheld);
        }
    }
    let sent = |result: Result<(), ErrorCode>| {
        result.map_err(|code| connection(Progress::NoResponse, code))
    };
    match body {
        Outgoing::Empty => Ok(()),
        Outgoing::Bytes(bytes) => sent(writer.write(bytes).await),
        Outgoing::Stream(stream) => write_stream(writer, stream, framing).await,
        Outgoing::Spent => Err(WriteError::Body(ErrorCode::HttpRequestBodyError(
            "the request body is a stream that was already read; it cannot be replayed".to_owned(),
        ))),
    }
}

fn connection(progress: Progress, code: ErrorCode) -> WriteError {
    WriteError::Connection(Failed { code, progress })
}

/// What the task reading the caller's stream passes on.
pub enum Piece {
    Data(Vec<u8>),
    /// The body's end: complete (with trailers, maybe), or failed.
    End(Result<Option<Fields>, ErrorCode>),
}

/// Copies a caller's body stream to the connection, chunked (with its trailers) or
/// exactly its declared length.
async fn write_stream(
    writer: &mut Writer,
    stream: BodyStream,
    framing: BodyFraming,
) -> Result<(), WriteError> {
    // A task owns the caller's stream, so giving up on the body (a cancelled request,
    // a connection closed) never cancels a component-model read (see `conn`).
    let (forward, mut pieces) = mpsc::channel(1);
    let declared = match framing {
        BodyFraming::Length(declared) => Some(declared),
        _ => None,
    };
    super::tasks::spawn(forward_stream(stream, declared, forward));
    let on_wire = |code| connection(Progress::NoResponse, code);
    while let Some(piece) = pieces.next().await {
        match piece {
            Piece::Data(chunk) if framing == BodyFraming::Chunked => {
                let mut framed = Vec::with_capacity(chunk.len() + 16);
                encode::encode_chunk(&mut framed, &chunk);
                writer.write(framed).await.map_err(on_wire)?;
            }
            Piece::Data(chunk) => writer.write(chunk).await.map_err(on_wire)?,
            Piece::End(Err(code)) => return Err(WriteError::Body(code)),
            Piece::End(Ok(trailers)) => {
                let trailers = trailers.unwrap_or_default();
                if framing != BodyFraming::Chunked {
                    if trailers.is_empty() {
                        return Ok(());
                    }
                    return Err(WriteError::Body(ErrorCode::HttpRequestBodyError(
                        "trailers cannot follow a body sent with a Content-Length; \
                         leave the length out to send it chunked"
                            .to_owned(),
                    )));
                }
                for (name, value) in &trailers {
                    request::check_header(name, value).map_err(|e| WriteError::Body(to_code(e)))?;
                }
                let mut last = Vec::with_capacity(64);
                encode::encode_last_chunk(&mut last, &trailers);
                return writer.write(last).await.map_err(on_wire);
            }
        }
    }
    Err(WriteError::Body(ErrorCode::InternalError(
        "the request body's reader stopped before its end".to_owned(),
    )))
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
    end: FutureReader<Result<Option<Fields>, ErrorCode>>,
    declared: Option<u64>,
    seen: u64,
) -> Result<Option<Fields>, ErrorCode> {
    let verdict = end.await?;
    match declared {
        Some(declared) if seen < declared => Err(size_mismatch(declared, seen)),
        _ => Ok(verdict),
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
