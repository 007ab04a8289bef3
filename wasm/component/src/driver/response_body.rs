//! A response body as both protocols hand it to the caller: the stream, its trailers
//! future and `request-sent` (`channels`), each chunk delivered as the caller reads
//! (`deliver`), and how a copy was cut short (`Cut`).

use wit_bindgen::{FutureWriter, StreamResult, StreamWriter};

use super::bindings::roundtrip::transport::types::{ErrorCode, StreamedBody};
use super::bindings::{wit_future, wit_stream};
use super::clock;

/// The largest body returned whole with its head (`response-body.whole`).
pub const WHOLE_BODY_MAX: usize = 64 * 1024;

/// What the trailers future carries: the trailers as one `fields` block.
pub type Trailers = Result<Option<Vec<u8>>, ErrorCode>;

/// How long a write still going when the response has ended may take to finish and
/// keep the connection reusable (Go's `maxWriteWaitBeforeConnReuse`), in nanoseconds.
pub const WRITE_GRACE: u64 = 50_000_000;

/// What `request-sent` carries.
pub type Sent = Result<(), ErrorCode>;

/// How copying the body ended, if not at its end.
pub enum Cut {
    /// The caller dropped the body stream after this many bytes.
    ReaderGone(u64),
    /// The connection or the framing failed.
    Failed(ErrorCode),
}

/// A body that paused longer than the request's between-bytes timeout.
pub fn paused(between_bytes_timeout: Option<u64>) -> ErrorCode {
    ErrorCode::ConnectionReadTimeout(format!(
        "the response body paused longer than the request's between-bytes timeout of {}",
        clock::display(between_bytes_timeout.unwrap_or_default())
    ))
}

/// The streams and futures of a streamed response body: the guest's ends, and the
/// `streamed-body` for the caller.
pub fn channels() -> (
    StreamWriter<u8>,
    FutureWriter<Trailers>,
    FutureWriter<Sent>,
    StreamedBody,
) {
    let (body_tx, body_rx) = wit_stream::new::<u8>();
    let (trailers_tx, trailers_rx) = wit_future::new::<Trailers>(|| {
        Err(ErrorCode::InternalError(
            "the transport dropped the response body".to_owned(),
        ))
    });
    let (sent_tx, sent_rx) = wit_future::new::<Sent>(|| {
        Err(ErrorCode::InternalError(
            "the transport dropped the request".to_owned(),
        ))
    });
    let streamed = StreamedBody {
        contents: body_rx,
        trailers: trailers_rx,
        request_sent: sent_rx,
    };
    (body_tx, trailers_tx, sent_tx, streamed)
}

/// Hands `data` to the caller; `so_far` bytes went before it.
pub async fn deliver(body: &mut StreamWriter<u8>, data: Vec<u8>, so_far: u64) -> Result<u64, Cut> {
    let len = data.len() as u64;
    if len > 0 && !body.write_all(data).await.is_empty() {
        return Err(Cut::ReaderGone(so_far));
    }
    Ok(len)
}

/// Waits until the caller has taken every byte handed over: a zero-length write, which
/// the host completes only then (`pipes::CaughtUp`), a guest reader when it next reads.
/// The host takes chunks a window ahead of its caller's reads; this keeps Go's rule at
/// the body's end: its connection is pooled once the body is read to its end (Go's
/// `Read` returns EOF with a body's last bytes), not once it is buffered.
pub async fn read_to_end(body: &mut StreamWriter<u8>, total: u64) -> Result<(), Cut> {
    match body.write(Vec::new()).await.0 {
        StreamResult::Dropped => Err(Cut::ReaderGone(total)),
        StreamResult::Complete(_) | StreamResult::Cancelled => Ok(()),
    }
}
