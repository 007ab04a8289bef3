//! Request and response bodies as `http_body` types.

use std::future::Future as _;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use http::{HeaderMap, HeaderName, HeaderValue};
use http_body::{Body as HttpBody, Frame};
use tokio::sync::{mpsc, oneshot};

use crate::bindings::roundtrip::transport::types::ErrorCode;
use crate::error::Error;
use crate::pipes::CaughtUp;
use crate::state::Continuity;

/// A request body: empty, bytes in memory (sent with `Content-Length` and replayable
/// on a retry), or a stream (sent chunked unless the request has a `Content-Length`).
///
/// A stream keeps going out after the response head has arrived, until it ends: a
/// server may answer at once and read on (an echo). If it fails, the request fails —
/// or, when the head has come, the response body does — and the connection is closed.
pub struct Body(pub(crate) Inner);

/// An error a caller's body stream may end with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

pub(crate) enum Inner {
    Empty,
    Bytes(Bytes),
    Stream(BoxStream<'static, Result<Frame<Bytes>, BoxError>>),
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Inner::Empty => f.write_str("Body::Empty"),
            Inner::Bytes(bytes) => write!(f, "Body::Bytes({} bytes)", bytes.len()),
            Inner::Stream(_) => f.write_str("Body::Stream"),
        }
    }
}

impl Body {
    pub fn empty() -> Self {
        Body(Inner::Empty)
    }

    /// A body produced as it is sent. It cannot be replayed.
    pub fn from_stream(chunks: impl Stream<Item = Bytes> + Send + 'static) -> Self {
        Body(Inner::Stream(
            chunks.map(|chunk| Ok(Frame::data(chunk))).boxed(),
        ))
    }

    /// A body produced as it is sent that may fail half-way: the error fails the
    /// exchange (a chunked body is never ended as if it were complete).
    pub fn from_try_stream<E: Into<BoxError>>(
        chunks: impl Stream<Item = Result<Bytes, E>> + Send + 'static,
    ) -> Self {
        Body(Inner::Stream(
            chunks
                .map(|chunk| chunk.map(Frame::data).map_err(Into::into))
                .boxed(),
        ))
    }

    /// Any `http_body::Body` (hyper's `Incoming`, `http_body_util`'s `StreamBody`…),
    /// streamed: its data, then its trailers (sent in the chunked trailer section), or
    /// its error.
    pub fn wrap<B>(body: B) -> Self
    where
        B: HttpBody + Send + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        Self::wrap_after(None, body)
    }

    /// The bytes to send again (a redirect's, Go's `GetBody`): all of them for an
    /// empty or in-memory body, `None` for a stream, which is read once.
    pub(crate) fn replayable(&self) -> Option<Bytes> {
        match &self.0 {
            Inner::Empty => Some(Bytes::new()),
            Inner::Bytes(bytes) => Some(bytes.clone()),
            Inner::Stream(_) => None,
        }
    }

    /// `body` streamed after `first`, a frame already read from it.
    pub(crate) fn wrap_after<B>(first: Option<Frame<Bytes>>, body: B) -> Self
    where
        B: HttpBody + Send + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        use bytes::Buf as _;
        let rest = http_body_util::BodyStream::new(body).map(|frame| {
            frame
                .map(|frame| frame.map_data(|mut data| data.copy_to_bytes(data.remaining())))
                .map_err(Into::into)
        });
        let frames = futures::stream::iter(first.map(Ok)).chain(rest);
        Body(Inner::Stream(frames.boxed()))
    }
}

/// A `Body` is an `http_body::Body` too, so it goes wherever one is asked for (tower
/// middleware around [`Transport`](crate::Transport), another client).
impl HttpBody for Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut self.0 {
            Inner::Empty => Poll::Ready(None),
            Inner::Bytes(_) => match std::mem::replace(&mut self.0, Inner::Empty) {
                Inner::Bytes(bytes) => Poll::Ready(Some(Ok(Frame::data(bytes)))),
                _ => Poll::Ready(None),
            },
            Inner::Stream(frames) => frames.poll_next_unpin(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.0, Inner::Empty)
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match &self.0 {
            Inner::Empty => http_body::SizeHint::with_exact(0),
            Inner::Bytes(bytes) => http_body::SizeHint::with_exact(bytes.len() as u64),
            Inner::Stream(_) => http_body::SizeHint::default(),
        }
    }
}

/// Limits for one request in place of the transport's own, set as an extension of
/// the `http::Request` (wasi:http's `request-options`):
///
/// ```
/// # use std::time::Duration;
/// let mut request = http::Request::get("http://127.0.0.1:1/").body(roundtrip_host::Body::empty()).unwrap();
/// request.extensions_mut().insert(roundtrip_host::RequestOptions {
///     first_byte_timeout: Some(Duration::from_secs(5)),
///     ..Default::default()
/// });
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequestOptions {
    /// Limit for the dial this request makes (else `Config::dial_timeout`):
    /// [`ErrorKind::ConnectionTimeout`](crate::ErrorKind::ConnectionTimeout).
    pub connect_timeout: Option<std::time::Duration>,
    /// Limit from the start of the exchange to the response head:
    /// [`ErrorKind::ReadTimeout`](crate::ErrorKind::ReadTimeout).
    pub first_byte_timeout: Option<std::time::Duration>,
    /// Longest pause between two reads of the response body; the body then ends in
    /// [`ErrorKind::ReadTimeout`](crate::ErrorKind::ReadTimeout).
    pub between_bytes_timeout: Option<std::time::Duration>,
}

impl Default for Body {
    fn default() -> Self {
        Body::empty()
    }
}

impl From<Bytes> for Body {
    fn from(bytes: Bytes) -> Self {
        Body(Inner::Bytes(bytes))
    }
}

impl From<Vec<u8>> for Body {
    fn from(bytes: Vec<u8>) -> Self {
        Body(Inner::Bytes(bytes.into()))
    }
}

impl From<String> for Body {
    fn from(text: String) -> Self {
        Body(Inner::Bytes(text.into()))
    }
}

impl From<&'static str> for Body {
    fn from(text: &'static str) -> Self {
        Body(Inner::Bytes(Bytes::from_static(text.as_bytes())))
    }
}

type Trailers = Result<Option<Vec<u8>>, ErrorCode>;

/// A response body from the component: whole when it came with the head (up to
/// 64 KiB), otherwise streamed. Read a streamed
/// one to its end and the connection goes back to the pool; drop it early and the
/// connection is closed. Chunked trailers arrive as the last frame; a body cut short
/// ends in an error.
pub struct ResponseBody(Source);

enum Source {
    Whole(Whole),
    Streamed(Streamed),
    /// Read against a deadline (a [`Client`](crate::Client)'s timeout).
    Timed(Box<Timed>),
}

/// A body whose reading fails once `deadline` passes (Go's `Client.Timeout`: "the
/// timer remains running after Do returns and will interrupt reading of the body").
struct Timed {
    body: Option<ResponseBody>,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl Timed {
    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let Some(body) = self.body.as_mut() else {
            return Poll::Ready(None);
        };
        if let Poll::Ready(frame) = Pin::new(body).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => {
                // Dropped: the connection closes, as a canceled request's does.
                self.body = None;
                Poll::Ready(Some(Err(Error::new(
                    crate::error::ErrorKind::Timeout,
                    "Client.Timeout exceeded while reading body",
                ))))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// A body that came with its head. Its connection is held (Go's rule: until the body
/// is read) until `release` says whether the bytes were taken or dropped unread.
struct Whole {
    /// `None` once taken.
    bytes: Option<Bytes>,
    /// How to let go of the connection (none for an empty body: nothing was held).
    release: Option<Release>,
}

/// Tells the component, once, whether a whole body was taken (`true`). The release is
/// queued for the store, which lets go of the connection before it handles any later
/// command of the caller's (its next request carries it), so that command finds the
/// connection back in the pool, as Go pools one before its body's `Read` returns EOF.
pub(crate) type Release = Box<dyn FnOnce(bool) + Send + Sync>;

impl Drop for Whole {
    fn drop(&mut self) {
        // Dropped unread: the connection closes, as a streamed body's would.
        if let Some(release) = self.release.take() {
            release(false);
        }
    }
}

impl Whole {
    fn poll_frame(&mut self) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        if let Some(release) = self.release.take() {
            release(true);
        }
        let bytes = self.bytes.take().filter(|b| !b.is_empty());
        Poll::Ready(bytes.map(|b| Ok(Frame::data(b))))
    }
}

struct Streamed {
    data: mpsc::Receiver<Bytes>,
    trailers: Option<oneshot::Receiver<Trailers>>,
    /// Told when the caller has taken every chunk (see
    /// `pipes::BytesConsumer::windowed`): the body's end waits for that.
    caught_up: Arc<CaughtUp>,
    /// To tell a body cut off by a restart (trap) from one cut off by a shutdown.
    continuity: Arc<Mutex<Continuity>>,
    restarts_at_start: u64,
}

impl Drop for Streamed {
    fn drop(&mut self) {
        // Wakes a guest write waiting for the caller: the reader is gone, with every
        // chunk handed to it taken, or not.
        self.caught_up.close(self.data.is_empty());
    }
}

impl std::fmt::Debug for ResponseBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseBody").finish_non_exhaustive()
    }
}

impl ResponseBody {
    /// This body, failing with [`ErrorKind::Timeout`](crate::ErrorKind::Timeout) if it
    /// is not read to its end by `deadline`.
    pub(crate) fn with_deadline(self, deadline: tokio::time::Instant) -> Self {
        ResponseBody(Source::Timed(Box::new(Timed {
            body: Some(self),
            deadline: Box::pin(tokio::time::sleep_until(deadline)),
        })))
    }

    /// A body that came whole; `release` lets go of the connection it holds, if any.
    pub(crate) fn whole(bytes: Bytes, release: Option<Release>) -> Self {
        ResponseBody(Source::Whole(Whole {
            bytes: Some(bytes),
            release,
        }))
    }

    pub(crate) fn streamed(
        data: mpsc::Receiver<Bytes>,
        trailers: oneshot::Receiver<Trailers>,
        caught_up: Arc<CaughtUp>,
        continuity: Arc<Mutex<Continuity>>,
    ) -> Self {
        let restarts_at_start = continuity.lock().map_or(0, |c| c.restarts);
        ResponseBody(Source::Streamed(Streamed {
            data,
            trailers: Some(trailers),
            caught_up,
            continuity,
            restarts_at_start,
        }))
    }
}

impl Streamed {
    /// Why the body ended without its end: a restart, or a shutdown.
    fn cut_off(&self) -> Error {
        match self.continuity.lock() {
            Ok(c) if c.restarts != self.restarts_at_start => Error::restarted(&c.last_failure),
            _ => Error::shutdown(),
        }
    }

    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let full = self.data.len() == self.data.max_capacity();
        match self.data.poll_recv(cx) {
            Poll::Ready(Some(chunk)) => {
                if full {
                    // Room in a full window wakes the store's waiting write.
                    crate::crossings::count(crate::crossings::Crossing::CallerToStore);
                }
                if self.data.is_empty() {
                    // Every chunk taken: a body's end may be waiting for that.
                    self.caught_up.drained();
                }
                return Poll::Ready(Some(Ok(Frame::data(chunk))));
            }
            Poll::Ready(None) => {}
            Poll::Pending => return Poll::Pending,
        }
        let Some(trailers) = self.trailers.as_mut() else {
            return Poll::Ready(None);
        };
        let outcome = match Pin::new(trailers).poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(outcome) => outcome,
        };
        self.trailers = None;
        Poll::Ready(match outcome {
            Ok(Ok(None)) => None,
            Ok(Ok(Some(fields))) => Some(Ok(Frame::trailers(header_map(fields)))),
            Ok(Err(code)) => Some(Err(code.into())),
            Err(_) => Some(Err(self.cut_off())),
        })
    }
}

impl HttpBody for ResponseBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        match &mut self.0 {
            // Taken: the connection goes back before the store handles anything else
            // of the caller's, so a request sent right after reuses it.
            Source::Whole(whole) => whole.poll_frame(),
            Source::Streamed(streamed) => streamed.poll_frame(cx),
            Source::Timed(timed) => timed.poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.0 {
            Source::Whole(whole) => whole.bytes.as_ref().is_none_or(Bytes::is_empty),
            Source::Streamed(streamed) => streamed.trailers.is_none(),
            Source::Timed(timed) => timed.body.as_ref().is_none_or(HttpBody::is_end_stream),
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match &self.0 {
            Source::Whole(whole) => {
                http_body::SizeHint::with_exact(whole.bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            Source::Streamed(_) => http_body::SizeHint::default(),
            Source::Timed(timed) => timed
                .body
                .as_ref()
                .map_or_else(|| http_body::SizeHint::with_exact(0), HttpBody::size_hint),
        }
    }
}

/// A `fields` block (`name: value` CRLF each, in wire order) into a map whose values
/// are slices of the one buffer, not copies; fields `http` cannot hold are skipped.
pub(crate) fn header_map(block: Vec<u8>) -> HeaderMap {
    let block = Bytes::from(block);
    let lines = block.iter().filter(|&&b| b == b'\n').count();
    let mut map = HeaderMap::with_capacity(lines);
    for (name, value) in roundtrip_fields::Fields::iter_block(&block) {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_maybe_shared(block.slice_ref(value)),
        ) {
            map.append(name, value);
        }
    }
    map
}

/// A map as one `fields` block for the component: one buffer, sized once.
pub(crate) fn fields_block(map: &HeaderMap) -> Vec<u8> {
    roundtrip_fields::block_of(|| map.iter().map(|(n, v)| (n.as_str(), v.as_bytes())))
}
