//! The task that pumps a response body to the caller and then decides the
//! connection's fate: back to the pool, or closed with a reason.

use wit_bindgen::{FutureWriter, StreamWriter};

use super::active::Active;
use super::bindings::roundtrip::transport::observe::{CloseReason, EventKind};
use super::bindings::roundtrip::transport::types::ErrorCode;
use super::errors::to_code;
use crate::core::compression::Gunzip;
use crate::core::decode::{BodyDecoder, Fields, Framing, ResponseHead};
use crate::core::reuse::{self, NoReuse};

/// What the trailers future carries.
pub type Trailers = Result<Option<Fields>, ErrorCode>;

/// What the body task needs to decide the connection's fate at the end.
pub struct BodyEnd {
    pub disable_keep_alives: bool,
    pub request_headers: Fields,
    pub request_complete: bool,
    pub head: ResponseHead,
    pub framing: Framing,
    /// Set when the body is gzip the transport asked for: the caller gets it plain.
    pub gunzip: Option<Gunzip>,
}

/// How copying the body ended, if not at its end.
enum Cut {
    /// The caller dropped the body stream after this many bytes.
    ReaderGone(u64),
    /// The connection or the framing failed.
    Failed(ErrorCode),
}

pub async fn pump_body(
    mut active: Active,
    end: BodyEnd,
    mut body: StreamWriter<u8>,
    trailers: FutureWriter<Trailers>,
) {
    let mut decoder = BodyDecoder::new(end.framing);
    let outcome = copy_body(&mut active, &mut decoder, &mut body, end.gunzip).await;
    let trailer_value = match outcome {
        Ok(total) => {
            active.emit(EventKind::BodyEof(total));
            let verdict = reuse::after_response(&reuse::Finished {
                disable_keep_alives: end.disable_keep_alives,
                request_headers: &end.request_headers,
                request_complete: end.request_complete,
                response: &end.head,
                framing: end.framing,
                trailing_bytes: active.conn().buffered().len(),
            });
            // The connection is back in the pool before the caller sees the end of
            // the body, so a request sent right after reuses it.
            match verdict {
                Ok(()) => active.put_idle(),
                Err(why) => active.close(close_reason(why)),
            }
            Ok(decoder.take_trailers())
        }
        Err(Cut::ReaderGone(bytes)) => {
            active.emit(EventKind::BodyClosedEarly(bytes));
            active.close(CloseReason::EarlyBodyClose);
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

async fn copy_body(
    active: &mut Active,
    decoder: &mut BodyDecoder,
    body: &mut StreamWriter<u8>,
    mut gunzip: Option<Gunzip>,
) -> Result<u64, Cut> {
    let mut total: u64 = 0;
    loop {
        if decoder.is_done() {
            if let Some(gunzip) = gunzip {
                let rest = gunzip.finish().map_err(|e| Cut::Failed(to_code(e)))?;
                total += deliver(body, rest, total).await?;
            }
            return Ok(total);
        }
        if active.conn().buffered().is_empty() {
            let read = active.conn_mut().fill().await.map_err(Cut::Failed)?;
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

/// Writes body bytes to the caller; returns how many, or that the caller is gone.
async fn deliver(body: &mut StreamWriter<u8>, data: Vec<u8>, so_far: u64) -> Result<u64, Cut> {
    let len = data.len() as u64;
    if len > 0 && !body.write_all(data).await.is_empty() {
        return Err(Cut::ReaderGone(so_far));
    }
    Ok(len)
}

fn close_reason(why: NoReuse) -> CloseReason {
    match why {
        NoReuse::KeepAlivesDisabled => CloseReason::KeepalivesDisabled,
        NoReuse::ConnectionClose | NoReuse::RequestIncomplete => CloseReason::ConnectionClose,
        NoReuse::ServerClosed => CloseReason::ServerClosed,
        NoReuse::TrailingBytes | NoReuse::AmbiguousFraming => CloseReason::Error,
    }
}
