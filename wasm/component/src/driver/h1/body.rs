//! The task that pumps a response body to the caller and then decides the
//! connection's fate: back to the pool, or closed with a reason.
//!
//! When the response head came before the request was written to its end, the
//! write goes on here, beside the copy (Go's writeLoop and readLoop):
//!
//! ```text
//!  unfinished write ──┐ select  write ends first: failed body → the response body
//!  copy_body ─────────┘         fails too; otherwise the copy goes on
//!                               copy ends first: the write gets 50 ms more (Go's
//!                               maxWriteWaitBeforeConnReuse), else it is dropped
//! ```
//!
//! The connection is pooled only if the request was written to its end and the
//! response read to its end. `request-sent` reports the write's outcome as soon as it
//! is known, on its own branch of the task, so a caller that never reads it holds up
//! nothing.

use std::pin::pin;

use futures::channel::oneshot;
use futures::future::{Either, join, select};
use wit_bindgen::{FutureWriter, StreamWriter};

use super::active::Active;
use crate::core::compression::Gunzip;
use crate::core::decode::{BodyDecoder, Fields, Framing};
use crate::core::reuse::{self, Heads, NoReuse};
use crate::driver::bindings::roundtrip::transport::observe::{
    BodyClosedEarly, CloseReason, EventKind,
};
use crate::driver::bindings::roundtrip::transport::types::ErrorCode;
use crate::driver::clock;
use crate::driver::errors::{message, to_code};
use crate::driver::request_body::{PendingWrite, WriteError};
use crate::driver::response_body::{
    Cut, Sent, Trailers, WRITE_GRACE, deliver, paused, read_to_end,
};

/// What the body task needs to decide the connection's fate at the end.
pub struct BodyEnd {
    pub disable_keep_alives: bool,
    /// A body dropped early is drained (Go 1.27), not its connection closed.
    pub drain_on_close: bool,
    /// What the reuse decision needs of the request's and the response's heads.
    pub heads: Heads,
    /// The request's write, when the head came before it finished.
    pub unfinished_write: Option<PendingWrite>,
    pub framing: Framing,
    /// Set when the body is gzip the transport asked for: the caller gets it plain.
    pub gunzip: Option<Gunzip>,
    /// Longest wait for each read of the body (the request's `between-bytes-timeout`).
    pub between_bytes_timeout: Option<u64>,
}

pub async fn pump_body(
    active: Active,
    end: BodyEnd,
    body: StreamWriter<u8>,
    trailers: FutureWriter<Trailers>,
    request_sent: FutureWriter<Sent>,
) {
    let (sent, outcome) = oneshot::channel();
    let report = async move {
        let outcome = outcome.await.unwrap_or_else(|_| {
            Err(ErrorCode::InternalError(
                "the body task ended without the request's outcome".to_owned(),
            ))
        });
        // The caller may have dropped `request-sent`; nothing is lost then.
        let _ = request_sent.write(outcome).await;
    };
    join(finish(active, end, body, trailers, sent), report).await;
}

/// Copies the body (finishing the request's write beside it), then pools or closes
/// the connection, and ends the trailers future.
async fn finish(
    mut active: Active,
    mut end: BodyEnd,
    mut body: StreamWriter<u8>,
    trailers: FutureWriter<Trailers>,
    sent: oneshot::Sender<Sent>,
) {
    let mut decoder = BodyDecoder::new(end.framing);
    let gunzip = end.gunzip.take();
    let timeout = end.between_bytes_timeout;
    // The write dropped unfinished: its outcome is said after the copy lets go.
    let mut abandoned = None;
    let (outcome, request_complete) = match end.unfinished_write.take() {
        None => {
            let _ = sent.send(Ok(()));
            let copied = copy_body(&mut active, &mut decoder, &mut body, gunzip, timeout).await;
            (copied, true)
        }
        Some(write) => {
            let copy = pin!(copy_body(
                &mut active,
                &mut decoder,
                &mut body,
                gunzip,
                timeout
            ));
            match select(write, copy).await {
                Either::Left((written, copy)) => {
                    let _ = sent.send(written.as_ref().map_err(WriteError::code).copied());
                    match written.as_ref().err().and_then(WriteError::ends_exchange) {
                        // The caller's body failed: so does the response's.
                        Some(code) => (Err(Cut::Failed(code.clone())), false),
                        // Written, or the server stopped reading (or held the body
                        // back): it has answered; its answer is read to the end, and
                        // the connection reused only after a whole write.
                        None => (copy.await, written.is_ok()),
                    }
                }
                Either::Right((copied, write)) => {
                    let written = match copied {
                        Ok(_) => clock::within(Some(WRITE_GRACE), write).await,
                        Err(_) => None,
                    };
                    match written {
                        Some(written) => {
                            let _ = sent.send(written.as_ref().map_err(WriteError::code).copied());
                            (copied, written.is_ok())
                        }
                        None => {
                            abandoned = Some(sent);
                            (copied, false)
                        }
                    }
                }
            }
        }
    };
    if let Some(sent) = abandoned {
        let code = ErrorCode::HttpRequestBodyError(
            "the request was not written to its end: the exchange ended first and its \
             connection is closed"
                .to_owned(),
        );
        active.emit(EventKind::WroteRequest(Some(message(&code).to_owned())));
        let _ = sent.send(Err(code));
    }
    let trailer_value = match outcome {
        Ok(total) => {
            settle(active, &end, total, request_complete);
            Ok(decoder.take_trailers().map(Fields::into_block))
        }
        Err(Cut::ReaderGone(bytes)) => {
            // The caller has let go already: the drain holds up nothing of its.
            let drained = if end.drain_on_close {
                drain(&mut active, &mut decoder, end.framing).await
            } else {
                None
            };
            settle_dropped(active, &end, bytes, drained, request_complete);
            Err(ErrorCode::HttpResponseIncomplete(
                "the response body was closed before its end".to_owned(),
            ))
        }
        Err(Cut::Failed(code)) => {
            active.close(CloseReason::Error);
            Err(code)
        }
    };
    drop(body);
    // The caller may have dropped the trailers future; nothing is lost then.
    let _ = trailers.write(trailer_value).await;
}

/// A body read to its end (`total` bytes): says so, then pools the connection or
/// closes it, by the core's verdict. The connection is back in the pool before the
/// caller sees the end of the body, so a request sent right after reuses it.
pub fn settle(active: Active, end: &BodyEnd, total: u64, request_complete: bool) {
    active.emit(EventKind::BodyEof(total));
    let verdict = reusable(&active, end, request_complete);
    pool_or_close(active, verdict);
}

/// The core's verdict on a connection whose body was read to its end.
fn reusable(active: &Active, end: &BodyEnd, request_complete: bool) -> Result<(), CloseReason> {
    reuse::after_response(&reuse::Finished {
        disable_keep_alives: end.disable_keep_alives,
        heads: end.heads,
        request_complete,
        framing: end.framing,
        trailing_bytes: active.conn().buffered().len(),
    })
    .map_err(close_reason)
}

fn pool_or_close(active: Active, verdict: Result<(), CloseReason>) {
    match verdict {
        Ok(()) => active.put_idle(),
        Err(reason) => active.close(reason),
    }
}

/// Most of a dropped body read and thrown away to save its connection (Go 1.27's
/// `maxPostCloseReadBytes`); a body declared longer is not tried.
pub const DRAIN_MAX_BYTES: u64 = 256 << 10;

/// Longest a drain may take (Go 1.27's `maxPostCloseReadTime`).
pub const DRAIN_MAX_NS: u64 = 50_000_000;

/// Reads the rest of a body the caller dropped and throws it away, as Go 1.27 does
/// on `Body.Close`: only a body of known length at most [`DRAIN_MAX_BYTES`], or a
/// chunked one; at most that many bytes, within [`DRAIN_MAX_NS`]. The bytes thrown
/// away when the body ended in time; `None` when it did not (or was not tried).
async fn drain(active: &mut Active, decoder: &mut BodyDecoder, framing: Framing) -> Option<u64> {
    match framing {
        Framing::Length(length) if length <= DRAIN_MAX_BYTES => {}
        Framing::Chunked | Framing::Empty => {}
        // Longer, or ended by the server's close (never reusable).
        _ => return None,
    }
    let work = async {
        let mut drained: u64 = 0;
        while !decoder.is_done() {
            if active.conn().buffered().is_empty() {
                let read = active.conn_mut().fill().await.ok()?;
                if read == 0 {
                    return None;
                }
            }
            let conn = active.conn_mut();
            let step = decoder.decode(conn.buffered()).ok()?;
            drained += step.data.map_or(0, |range| range.len() as u64);
            conn.consume(step.consumed);
            if drained > DRAIN_MAX_BYTES {
                return None;
            }
        }
        Some(drained)
    };
    clock::within(Some(DRAIN_MAX_NS), work).await.flatten()
}

/// A body the caller dropped after `bytes`: said (`body_closed_early`, with what was
/// `drained` and whether the connection was saved), then the connection pooled — when
/// it was drained to its end and the core allows — or closed.
pub fn settle_dropped(
    active: Active,
    end: &BodyEnd,
    bytes: u64,
    drained: Option<u64>,
    request_complete: bool,
) {
    let verdict = match drained {
        Some(_) => reusable(&active, end, request_complete),
        None => Err(CloseReason::EarlyBodyClose),
    };
    active.emit(EventKind::BodyClosedEarly(BodyClosedEarly {
        bytes,
        drained: drained.unwrap_or_default(),
        saved: verdict.is_ok(),
    }));
    pool_or_close(active, verdict);
}

async fn copy_body(
    active: &mut Active,
    decoder: &mut BodyDecoder,
    body: &mut StreamWriter<u8>,
    mut gunzip: Option<Gunzip>,
    between_bytes_timeout: Option<u64>,
) -> Result<u64, Cut> {
    let mut total: u64 = 0;
    loop {
        if decoder.is_done() {
            if let Some(gunzip) = gunzip {
                let rest = gunzip.finish().map_err(|e| Cut::Failed(to_code(e)))?;
                total += deliver(body, rest, total).await?;
            }
            read_to_end(body, total).await?;
            return Ok(total);
        }
        if active.conn().buffered().is_empty() {
            let read = clock::within(between_bytes_timeout, active.conn_mut().fill())
                .await
                .ok_or_else(|| Cut::Failed(paused(between_bytes_timeout)))?
                .map_err(Cut::Failed)?;
            if read == 0 {
                decoder
                    .finish_at_eof()
                    .map_err(|e| Cut::Failed(to_code(e)))?;
                continue;
            }
        }
        let conn = active.conn_mut();
        let step = decoder
            .decode(conn.buffered())
            .map_err(|e| Cut::Failed(to_code(e)))?;
        let data = step.data.map(|range| conn.buffered()[range].to_vec());
        conn.consume(step.consumed);
        if let Some(data) = data {
            let data = match gunzip.as_mut() {
                Some(gunzip) => gunzip.feed(&data).map_err(|e| Cut::Failed(to_code(e)))?,
                None => data,
            };
            total += deliver(body, data, total).await?;
        }
    }
}

fn close_reason(why: NoReuse) -> CloseReason {
    match why {
        NoReuse::KeepAlivesDisabled => CloseReason::KeepalivesDisabled,
        NoReuse::ConnectionClose | NoReuse::RequestIncomplete => CloseReason::ConnectionClose,
        NoReuse::ServerClosed => CloseReason::ServerClosed,
        NoReuse::TrailingBytes | NoReuse::AmbiguousFraming => CloseReason::Error,
    }
}
