//! Adapters between component-model streams and tokio channels.
//!
//! Sockets, request bodies and response bodies all cross the wasm boundary as
//! `stream<u8>`. On the host side each is a channel of `Bytes`: a task owns the real
//! I/O (a socket half, a caller's body stream) and these adapters move the bytes
//! between that channel and the guest's buffers, with the channel's capacity as the
//! backpressure.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use futures::StreamExt;
use futures::stream::BoxStream;
use tokio::sync::{mpsc, oneshot};

use crate::bindings::roundtrip::transport::types::ErrorCode;
use futures::task::AtomicWaker;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use tokio_util::sync::PollSender;
use wasmtime::StoreContextMut;
use wasmtime::component::{
    Destination, FutureConsumer, Lift, Source, StreamConsumer, StreamProducer, StreamResult,
};

/// Copies what of `pending` fits straight into the guest's buffer.
fn hand_over<D>(
    pending: &mut Bytes,
    mut store: StoreContextMut<'_, D>,
    dst: Destination<'_, u8, Bytes>,
) -> Poll<wasmtime::Result<StreamResult>> {
    // A zero-length read asks whether bytes are ready; they are.
    if dst.remaining(&mut store) == Some(0) {
        return Poll::Ready(Ok(StreamResult::Completed));
    }
    let mut direct = dst.as_direct(store, pending.len());
    let room = direct.remaining();
    let n = room.len().min(pending.len());
    room[..n].copy_from_slice(&pending[..n]);
    direct.mark_written(n);
    pending.advance(n);
    Poll::Ready(Ok(StreamResult::Completed))
}

/// How a caller's streamed request body ended (its `body-stream.end`; trailers as one
/// `fields` block).
pub type BodyEnd = Result<Option<Vec<u8>>, ErrorCode>;

/// Feeds a guest's read end of a `stream<u8>` from a stream of frames (a caller's
/// request body, a file's chunks): data goes to the guest; trailers, an error or the
/// end go to `end`, when someone waits for it, and the stream ends there.
pub struct FramesProducer {
    frames: BoxStream<'static, Result<http_body::Frame<Bytes>, crate::body::BoxError>>,
    /// Part of a chunk the guest had no room for yet.
    pending: Bytes,
    end: Option<oneshot::Sender<BodyEnd>>,
    ended: bool,
}

impl FramesProducer {
    pub fn new(
        frames: BoxStream<'static, Result<http_body::Frame<Bytes>, crate::body::BoxError>>,
        end: oneshot::Sender<BodyEnd>,
    ) -> Self {
        Self {
            frames,
            pending: Bytes::new(),
            end: Some(end),
            ended: false,
        }
    }

    /// Plain chunks from a channel, whose end nobody needs to hear of.
    pub fn from_channel(mut chunks: mpsc::Receiver<Bytes>) -> Self {
        let frames = futures::stream::poll_fn(move |cx| chunks.poll_recv(cx))
            .map(|chunk| Ok(http_body::Frame::data(chunk)));
        Self {
            frames: frames.boxed(),
            pending: Bytes::new(),
            end: None,
            ended: false,
        }
    }

    fn finish(&mut self, end: BodyEnd) -> Poll<wasmtime::Result<StreamResult>> {
        self.ended = true;
        if let Some(sender) = self.end.take() {
            let _ = sender.send(end);
        }
        Poll::Ready(Ok(StreamResult::Dropped))
    }
}

impl<D> StreamProducer<D> for FramesProducer {
    type Item = u8;
    type Buffer = Bytes;

    fn poll_produce<'a>(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        store: StoreContextMut<'a, D>,
        dst: Destination<'a, Self::Item, Self::Buffer>,
        finish: bool,
    ) -> Poll<wasmtime::Result<StreamResult>> {
        crate::state::note_progress();
        crate::crossings::count(crate::crossings::Crossing::StreamPoll);
        let me = self.get_mut();
        while me.pending.is_empty() {
            if me.ended {
                return Poll::Ready(Ok(StreamResult::Dropped));
            }
            match me.frames.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => me.pending = data,
                    Err(frame) => {
                        let trailers = frame
                            .into_trailers()
                            .ok()
                            .map(|map| crate::body::fields_block(&map));
                        return me.finish(Ok(trailers));
                    }
                },
                Poll::Ready(Some(Err(e))) => {
                    return me.finish(Err(ErrorCode::HttpRequestBodyError(format!(
                        "the request body failed: {e}"
                    ))));
                }
                Poll::Ready(None) => return me.finish(Ok(None)),
                Poll::Pending if finish => return Poll::Ready(Ok(StreamResult::Cancelled)),
                Poll::Pending => return crate::crossings::suspended(),
            }
        }
        hand_over(&mut me.pending, store, dst)
    }
}

/// Drains a guest's write end of a `stream<u8>` into a channel of chunks. When the
/// channel's receiver is gone, the guest's writes fail: that is how it learns the
/// reader went away (e.g. a response body dropped early).
///
/// A window of chunks: the guest's writes complete while the channel has room
/// (`BODY_CHUNKS`), so the caller's reads and the guest's writes overlap and the caller
/// wakes the store only when it frees a full window. Go's rule stays honest through the
/// body's last step: before it pools the connection, the component makes a zero-length
/// write, and that completes only once the caller has taken every chunk
/// ([`CaughtUp`]): the body is read to its end (Go's `Read` returns EOF with a
/// body's last bytes), not merely buffered.
pub struct BytesConsumer {
    chunks: PollSender<Bytes>,
    caught_up: Arc<CaughtUp>,
}

/// The caller's side of a body's end: the zero-length write waiting for the caller to
/// take the last chunk, woken when it does or when the caller goes away.
pub struct CaughtUp {
    /// The reader is gone.
    closed: AtomicBool,
    /// The store's count of bodies read to their end whose component has yet to
    /// take it in (`Settling`); this body's place in it (`END_*`).
    settling: Arc<Settling>,
    end: AtomicU8,
    /// It went having taken every chunk handed to it: had the body's end come, it had
    /// read it all (hyper's server, for one, drops a body once its `Content-Length`
    /// is written, without asking for an end it knows is there).
    drained_when_closed: AtomicBool,
    /// The store's side, waiting in a zero-length write.
    waker: AtomicWaker,
}

impl CaughtUp {
    /// For a body of a store that counts its `settling` ends.
    pub fn counting(settling: Arc<Settling>) -> Self {
        Self {
            closed: AtomicBool::new(false),
            settling,
            end: AtomicU8::new(END_OPEN),
            drained_when_closed: AtomicBool::new(false),
            waker: AtomicWaker::new(),
        }
    }

    /// The caller took the last chunk in the window.
    pub fn drained(&self) {
        if let Some(waker) = self.waker.take() {
            // The component waits at the body's end (it writes nothing more before
            // the caller has taken every chunk): the body is read to its end.
            self.count_in();
            crate::crossings::count(crate::crossings::Crossing::CallerToStore);
            waker.wake();
        }
    }

    /// The reader is gone — having taken every chunk (`drained`) or not: a write
    /// waiting for it ends.
    pub fn close(&self, drained: bool) {
        self.drained_when_closed.store(drained, Ordering::Release);
        self.closed.store(true, Ordering::Release);
        // Counted in whether or not the component waits at the end yet: a caller
        // that knows the body's length (hyper's server) goes with its last chunk,
        // and its next request may come before the component has even reached
        // the end, which it then finds read.
        if drained {
            self.count_in();
        }
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }

    /// The component has taken the body's end in (its trailers came, or never will).
    pub fn settled(&self) {
        if self.end.swap(END_SETTLED, Ordering::AcqRel) == END_COUNTED {
            self.settling.pending.fetch_sub(1, Ordering::AcqRel);
            self.settling.settled.notify_waiters();
        }
    }

    /// Counts the body in as settling, once, unless the component has taken its end
    /// in already (a reader that read the end, then went).
    fn count_in(&self) {
        if self
            .end
            .compare_exchange(END_OPEN, END_COUNTED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.settling.pending.fetch_add(1, Ordering::AcqRel);
        }
    }
}

/// A body's end, as `Settling` counts it: not yet read, …
const END_OPEN: u8 = 0;
/// … read (or its reader gone with every byte), counted in `Settling::pending`, …
const END_COUNTED: u8 = 1;
/// … taken in by the component: never counted again.
const END_SETTLED: u8 = 2;

/// A store's bodies that its callers have read to their end while the component
/// waited at the end (`response_body::read_to_end`): the component pools their
/// connections on its next turns. A request the store takes meanwhile waits for
/// those turns first (`Settling::wait`, bounded), so that it finds those connections
/// idle, as a Go caller's next request finds a connection its last `Read` returned
/// EOF on.
#[derive(Default)]
pub struct Settling {
    pending: AtomicUsize,
    settled: tokio::sync::Notify,
}

impl Settling {
    pub fn pending(&self) -> bool {
        self.pending.load(Ordering::Acquire) > 0
    }

    /// Waits until no body is settling, or until `deadline`: the component takes a
    /// body's end in on a turn of its own, which a busy store may give it only after
    /// many others' (seen at 64 requests at once: a 65th connection dialled for a
    /// request that came while the body before it settled).
    pub async fn wait(&self, deadline: tokio::time::Instant) {
        loop {
            let settled = self.settled.notified();
            tokio::pin!(settled);
            settled.as_mut().enable();
            if !self.pending() {
                return;
            }
            if tokio::time::timeout_at(deadline, settled).await.is_err() {
                return;
            }
        }
    }
}

/// The trailers of a body whose end `caught_up` may have counted in: it is settled
/// once they come, or once the component drops their future.
pub struct TrailersConsumer<T> {
    pub inner: OneshotConsumer<T>,
    pub caught_up: Arc<CaughtUp>,
}

impl<D, T: Lift + Send + 'static> FutureConsumer<D> for TrailersConsumer<T> {
    type Item = T;

    fn poll_consume(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        store: StoreContextMut<D>,
        source: Source<'_, T>,
        finish: bool,
    ) -> Poll<wasmtime::Result<()>> {
        let me = self.get_mut();
        let done = Pin::new(&mut me.inner).poll_consume(cx, store, source, finish);
        me.caught_up.settled();
        done
    }
}

impl<T> Drop for TrailersConsumer<T> {
    fn drop(&mut self) {
        self.caught_up.settled();
    }
}

impl BytesConsumer {
    pub fn windowed(chunks: mpsc::Sender<Bytes>, caught_up: Arc<CaughtUp>) -> Self {
        Self {
            chunks: PollSender::new(chunks),
            caught_up,
        }
    }

    /// A zero-length write: ready once the caller has taken every chunk. The
    /// component makes it only when the body's last byte has been handed over, so a
    /// reader gone after taking every chunk read the body to its end (Go's `Read`
    /// returns EOF with the last bytes): that completes it too.
    fn poll_caught_up(&self, cx: &mut Context<'_>, finish: bool) -> Poll<StreamResult> {
        let ready = || {
            let gone = self.caught_up.closed.load(Ordering::Acquire);
            match self.chunks.get_ref() {
                Some(tx) if !gone && !tx.is_closed() => {
                    (tx.capacity() == tx.max_capacity()).then_some(StreamResult::Completed)
                }
                _ if self.caught_up.drained_when_closed.load(Ordering::Acquire) => {
                    Some(StreamResult::Completed)
                }
                _ => Some(StreamResult::Dropped),
            }
        };
        if let Some(result) = ready() {
            return Poll::Ready(result);
        }
        self.caught_up.waker.register(cx.waker());
        match ready() {
            Some(result) => Poll::Ready(result),
            None if finish => Poll::Ready(StreamResult::Cancelled),
            None => Poll::Pending,
        }
    }
}

impl<D> StreamConsumer<D> for BytesConsumer {
    type Item = u8;

    fn poll_consume(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        store: StoreContextMut<D>,
        source: Source<Self::Item>,
        finish: bool,
    ) -> Poll<wasmtime::Result<StreamResult>> {
        crate::state::note_progress();
        crate::crossings::count(crate::crossings::Crossing::StreamPoll);
        let me = self.get_mut();
        let mut source = source.as_direct(store);
        if source.remaining().is_empty() {
            return match me.poll_caught_up(cx, finish) {
                Poll::Ready(result) => Poll::Ready(Ok(result)),
                Poll::Pending => crate::crossings::suspended(),
            };
        }
        match me.chunks.poll_reserve(cx) {
            Poll::Ready(Ok(())) => {}
            Poll::Ready(Err(_)) => return Poll::Ready(Ok(StreamResult::Dropped)),
            Poll::Pending if finish => return Poll::Ready(Ok(StreamResult::Cancelled)),
            Poll::Pending => return crate::crossings::suspended(),
        }
        let chunk = Bytes::copy_from_slice(source.remaining());
        let n = chunk.len();
        if me.chunks.send_item(chunk).is_err() {
            return Poll::Ready(Ok(StreamResult::Dropped));
        }
        crate::crossings::count(crate::crossings::Crossing::StoreToCaller);
        source.mark_read(n);
        Poll::Ready(Ok(StreamResult::Completed))
    }
}

/// Takes the value of a guest-written `future<T>` into a oneshot channel.
pub struct OneshotConsumer<T>(pub Option<oneshot::Sender<T>>);

impl<D, T: Lift + Send + 'static> FutureConsumer<D> for OneshotConsumer<T> {
    type Item = T;

    fn poll_consume(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        store: StoreContextMut<D>,
        mut source: Source<'_, T>,
        _finish: bool,
    ) -> Poll<wasmtime::Result<()>> {
        let mut value = None;
        source.read(store, &mut value)?;
        if let (Some(sender), Some(value)) = (self.get_mut().0.take(), value) {
            let _ = sender.send(value);
        }
        Poll::Ready(Ok(()))
    }
}

/// Reads `reader` into `chunks` until its end, an error, or the receiver is gone, then
/// reports how it ended on `done`. `on_error` names an error, or returns `Ok` to take
/// it as a clean end.
pub async fn pump_reads<R: tokio::io::AsyncRead + Unpin>(
    mut reader: R,
    chunks: mpsc::Sender<Bytes>,
    done: oneshot::Sender<Result<(), ErrorCode>>,
    on_error: impl Fn(std::io::Error) -> Result<(), ErrorCode>,
) {
    use tokio::io::AsyncReadExt;
    // As the component does (`core/read_size.rs`): small reads while little comes, so an
    // idle connection's pending read holds 4 KiB, not 64; doubled after a full read.
    let mut size = READ_MIN;
    let outcome = loop {
        let mut buf = bytes::BytesMut::with_capacity(size);
        match reader.read_buf(&mut buf).await {
            Ok(0) => break Ok(()),
            Ok(n) => {
                size = if n >= size {
                    (size * 2).min(READ_CHUNK)
                } else if n <= size / 4 {
                    (size / 2).max(READ_MIN)
                } else {
                    size
                };
                if chunks.send(buf.freeze()).await.is_err() {
                    break Ok(());
                }
            }
            Err(e) => break on_error(e),
        }
    };
    drop(chunks);
    let _ = done.send(outcome);
}

/// Most bytes read from a socket or a file at a time.
pub const READ_CHUNK: usize = 64 * 1024;
/// Fewest bytes asked for by a read.
const READ_MIN: usize = 4 * 1024;

#[cfg(test)]
mod tests {
    use super::*;

    /// Each order the reader and the component can meet a body's end in leaves the
    /// store's count as it found it: a body counted stays counted until taken in, and
    /// one taken in is never counted again (else every later request would wait).
    #[test]
    fn a_body_counts_as_settling_only_between_its_read_end_and_the_component_taking_it() {
        let settling = Arc::new(Settling::default());
        // hyper's server: gone with every byte before the component reached the end.
        let early = CaughtUp::counting(Arc::clone(&settling));
        early.close(true);
        assert!(settling.pending());
        early.settled();
        assert!(!settling.pending());
        // A reader that read the end (the component took it in first), then went.
        let late = CaughtUp::counting(Arc::clone(&settling));
        late.settled();
        late.close(true);
        assert!(!settling.pending());
        // A reader gone mid-body, having taken nothing more than it was handed:
        // counted, and let go when the component ends the body.
        let cut = CaughtUp::counting(Arc::clone(&settling));
        cut.close(true);
        cut.close(true);
        assert!(settling.pending());
        cut.settled();
        cut.settled();
        assert!(!settling.pending());
        // One dropped unread is never counted.
        let unread = CaughtUp::counting(Arc::clone(&settling));
        unread.close(false);
        unread.settled();
        assert!(!settling.pending());
    }
}
