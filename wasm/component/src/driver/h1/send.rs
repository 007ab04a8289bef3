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

use futures::StreamExt;
use futures::channel::{mpsc, oneshot};

use crate::core::encode::{self, BodyFraming};
use crate::core::reuse::Progress;
use crate::driver::bindings::roundtrip::transport::observe::EventKind;
use crate::driver::bindings::roundtrip::transport::types::{BodyStream, ErrorCode};
use crate::driver::clock;
use crate::driver::conn::Writer;
use crate::driver::exchange::{Emitter, Failed};
use crate::driver::request_body::{Outgoing, Piece, WriteError, forward_stream, wrote_request};

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
    crate::driver::tasks::spawn(forward_stream(stream, declared, forward));
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
