//! One open connection as the driver sees it: the host's socket resource, the outbound
//! stream the host writes to the socket, and the inbound stream it reads from it.
//!
//! Theory of operation. Reads and writes run on the task of whoever holds the
//! connection — the request it carries (its body pump is a future of the same task),
//! or an HTTP/2 connection's drive task — so a reused connection's request wakes no
//! other task: its write of the head completes at once when the host takes it, and
//! the read of the answer wakes the request itself. As in Go's
//! `persistConn.readLoop`, an idle connection is still read, by a watcher task of
//! its own:
//!
//! ```text
//!  busy:  holder ── Writer::write ──► host stream out   (a write the host has not
//!         holder ── Reader::fill ───► host stream in     taken yet is finished first)
//!  idle:  watcher ── read ──┬─ input or end, still idle: removed from the pool, closed
//!                           └─ taken meanwhile: handed to the new holder (one wake)
//! ```
//!
//! A server that closes an idle connection (FIN or RST) or writes to it unasked (an
//! `HTTP/1.1 408` before closing) is not handed to a request: before a pooled
//! connection is reused, the host looks at its socket without waiting
//! (`connection.idle-state`, a `poll` of the socket with a zero timeout: curl's check), and
//! one the server closed is closed instead. The watcher is what sees such a close
//! while nobody asks for the connection, so that it leaves the pool (and the
//! inspector shows it) when it happens. It is asked to read only once a connection
//! has been idle for [`WATCH_AFTER_NS`] (`watch_pooled`, one timer for all): a read
//! started on an idle connection belongs to the watcher's task, so the request that
//! takes the connection back would get its answer through a wake of one task by
//! another — under steady use, twice per request (`docs/performance.md`). A
//! connection whose host cannot look (`unknown`: `wasi:sockets` in a composition) is
//! watched as soon as the task that pooled it has finished its turn, as before.
//!
//! A stream operation is never dropped half-way (wasmtime 48 makes a guest's
//! synchronous cancel wait for the host's next event, and a pending operation
//! belongs to the task that polled it): one left pending when its side goes away is
//! finished by a future spawned on the task that dropped it, and an operation is
//! polled by one task only — a read the watcher started is handed over by the
//! watcher, never taken from it.

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::rc::{Rc, Weak};
use std::task::{Context, Poll, Waker};

use futures::FutureExt;
use futures::future::LocalBoxFuture;
use wit_bindgen::{FutureReader, StreamReader, StreamResult, StreamWriter};

use super::bindings::roundtrip::transport::net::{Connection, IdleState};
use super::bindings::roundtrip::transport::types::ErrorCode;
use super::bindings::wit_stream;
use super::clock;
use crate::core::read_size::ReadSize;

/// Bytes asked for per read from the host.
pub const READ_SIZE: usize = 64 * 1024;

/// How long a pooled connection stays idle before its watcher reads it: a close
/// within that time is seen by the check before reuse, or when the watcher starts.
pub const WATCH_AFTER_NS: u64 = 50_000_000;

/// What the watcher saw while the connection was idle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdleInput {
    /// The server closed the connection, or reading failed.
    Closed,
    /// Bytes arrived that no request asked for (their first line, for the event).
    Unsolicited(String),
}

/// Called by the watcher when input arrives while the connection is idle. Returns
/// whether the connection was indeed idle and has been taken out of the pool (and
/// closed); if not (it was handed to a request meanwhile), the input is passed on.
pub type IdleWatch = Rc<dyn Fn(u64, IdleInput) -> bool>;

pub struct Conn {
    pub id: u64,
    /// Requests this connection has carried, the current one included.
    pub served: u32,
    socket: Connection,
    pub writer: Writer,
    pub reader: Reader,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Conn#{}", self.id)
    }
}

impl Conn {
    /// Starts the host's send and receive pumps on a connected (and, for https,
    /// TLS-wrapped) socket, and the watcher that reads it while it is idle.
    pub fn open(id: u64, socket: Connection, watch: IdleWatch) -> Self {
        let (outbound, host_side) = wit_stream::new::<u8>();
        let send_result = socket.send(host_side);
        let (inbound, receive_result) = socket.receive();
        let io = Rc::new(Io {
            checkable: socket.idle_state() != IdleState::Unknown,
            idle: Cell::new(false),
            idle_since: Cell::new(0),
            listed: Cell::new(false),
            closed: Cell::new(false),
            watcher: RefCell::new(None),
            read: RefCell::new(ReadSide {
                stream: Some(Inbound {
                    inbound,
                    receive_result,
                }),
                in_flight: None,
                size: ReadSize::default(),
                handed: None,
                waiting: None,
            }),
        });
        super::tasks::spawn(watch_idle(Rc::clone(&io), id, watch));
        Self {
            id,
            served: 0,
            socket,
            writer: Writer(Rc::new(RefCell::new(WriteSide {
                stream: Some(Outbound {
                    outbound,
                    send_result,
                }),
                in_flight: None,
                failed: None,
            }))),
            reader: Reader {
                io,
                ended: None,
                buf: Vec::new(),
                pos: 0,
            },
        }
    }

    /// Marks the connection as sitting in the idle pool (or taken out of it). A pooled
    /// one is looked at once the current turn is over (`watch_pooled`).
    pub fn set_idle(&self, idle: bool) {
        self.reader.io.idle.set(idle);
        if idle {
            POOLED.with(|pooled| pooled.borrow_mut().push(Rc::clone(&self.reader.io)));
        }
    }

    /// Whether the server closed this pooled connection, or wrote to it unasked, as far
    /// as the host can tell at once (curl's check before reuse); `false` if it cannot.
    pub fn peer_gone(&self) -> bool {
        self.reader.io.checkable
            && matches!(
                self.socket.idle_state(),
                IdleState::Closed | IdleState::Input
            )
    }

    /// Received bytes not consumed yet.
    pub fn buffered(&self) -> &[u8] {
        self.reader.buffered()
    }

    pub fn consume(&mut self, n: usize) {
        self.reader.consume(n);
    }

    /// Reads more bytes into the buffer; `Ok(0)` means the peer closed.
    pub async fn fill(&mut self) -> Result<usize, ErrorCode> {
        self.reader.fill().await
    }

    /// Shuts the socket down; dropping `self` then finishes what was in flight, and
    /// the watcher ends.
    pub fn close(self) {
        self.socket.close();
    }

    /// The socket and both halves, for a protocol that drives them itself (HTTP/2).
    /// The connection never counts as idle again: every input is the protocol's.
    pub fn into_parts(self) -> (Connection, Reader, Writer) {
        self.reader.io.idle.set(false);
        (self.socket, self.reader, self.writer)
    }
}

thread_local! {
    /// Connections pooled during the current turn of a task, to look at when it ends.
    static POOLED: RefCell<Vec<Rc<Io>>> = const { RefCell::new(Vec::new()) };
    /// Idle connections whose watcher waits for [`WATCH_AFTER_NS`] to pass.
    static UNWATCHED: RefCell<Vec<Weak<Io>>> = const { RefCell::new(Vec::new()) };
    /// Whether the timer that starts their watchers runs.
    static WATCH_TIMER: Cell<bool> = const { Cell::new(false) };
}

/// At the end of a task's turn (`tasks`): the connections it pooled that are still
/// idle start their wait for [`WATCH_AFTER_NS`] (their watcher reads at once if the
/// host cannot look at them). One taken back in the same turn (a sequential caller's
/// next request) costs nothing.
pub fn watch_pooled() {
    let pooled = POOLED.with(|pooled| {
        let mut pooled = pooled.borrow_mut();
        if pooled.is_empty() {
            return Vec::new();
        }
        std::mem::take(&mut *pooled)
    });
    let mut now = None;
    for io in pooled {
        if !io.idle.get() || io.closed.get() {
            continue;
        }
        if !io.checkable {
            io.wake_watcher();
            continue;
        }
        let now = *now.get_or_insert_with(clock::now_ns);
        io.idle_since.set(now);
        if !io.listed.replace(true) {
            UNWATCHED.with(|unwatched| unwatched.borrow_mut().push(Rc::downgrade(&io)));
        }
        if !WATCH_TIMER.replace(true) {
            super::tasks::spawn(start_watchers(now + WATCH_AFTER_NS));
        }
    }
}

/// The one timer: when a connection has been idle for [`WATCH_AFTER_NS`], its watcher
/// starts reading. Under steady use it fires once per [`WATCH_AFTER_NS`] and finds
/// every connection taken back meanwhile; it ends when none waits.
async fn start_watchers(mut due: u64) {
    loop {
        clock::sleep_until(due).await;
        let now = clock::now_ns();
        let next = UNWATCHED.with(|unwatched| {
            let mut unwatched = unwatched.borrow_mut();
            unwatched.retain(|io| {
                let Some(io) = io.upgrade() else { return false };
                let idle = io.idle.get() && !io.closed.get();
                if idle && io.idle_since.get() + WATCH_AFTER_NS > now {
                    return true;
                }
                // Taken back (its next pooling lists it again), or due now.
                io.listed.set(false);
                if idle {
                    io.wake_watcher();
                }
                false
            });
            unwatched
                .iter()
                .filter_map(Weak::upgrade)
                .map(|io| io.idle_since.get() + WATCH_AFTER_NS)
                .min()
        });
        match next {
            Some(next) => due = next,
            None => break,
        }
    }
    WATCH_TIMER.with(|running| running.set(false));
}

/// What the holder's side and the watcher share.
struct Io {
    /// Whether the host can look at the socket without reading (`idle-state`).
    checkable: bool,
    /// Whether the connection sits in the idle pool.
    idle: Cell<bool>,
    /// When it was last pooled (ns on the monotonic clock), once its task's turn ended.
    idle_since: Cell<u64>,
    /// Whether it is in `UNWATCHED`.
    listed: Cell<bool>,
    /// The holder's side is gone: the watcher finishes its read, if any, and ends.
    closed: Cell<bool>,
    /// The watcher, while it waits to be asked.
    watcher: RefCell<Option<Waker>>,
    read: RefCell<ReadSide>,
}

impl Io {
    fn wake_watcher(&self) {
        let watcher = self.watcher.borrow_mut().take();
        if let Some(watcher) = watcher {
            watcher.wake();
        }
    }
}

/// The host's inbound stream and what says how it ended.
struct Inbound {
    inbound: StreamReader<u8>,
    receive_result: FutureReader<Result<(), ErrorCode>>,
}

struct ReadSide {
    /// `None` while a read is in flight (it owns the stream) or once it has ended.
    stream: Option<Inbound>,
    in_flight: Option<InFlightRead>,
    size: ReadSize,
    /// What the watcher read for a holder that took the connection meanwhile.
    handed: Option<Input>,
    /// A holder waiting for the watcher's read.
    waiting: Option<Waker>,
}

/// A read in flight and who polls it: only that one ever does.
struct InFlightRead {
    by_watcher: bool,
    read: LocalBoxFuture<'static, Read>,
}

/// One finished read: the stream back (unless it ended), and what it gave.
struct Read {
    stream: Option<Inbound>,
    input: Option<Input>,
}

/// What a read gave: bytes, or the end of the stream (cleanly, or the host's error).
enum Input {
    Data(Vec<u8>),
    End(Result<(), ErrorCode>),
}

/// A read of up to `size` bytes that owns the stream while it is in flight.
fn read(stream: Inbound, size: usize) -> LocalBoxFuture<'static, Read> {
    async move {
        let Inbound {
            mut inbound,
            receive_result,
        } = stream;
        let (result, chunk) = inbound.read(Vec::with_capacity(size)).await;
        if !chunk.is_empty() {
            let stream = Some(Inbound {
                inbound,
                receive_result,
            });
            return Read {
                stream,
                input: Some(Input::Data(chunk)),
            };
        }
        match result {
            StreamResult::Dropped => {
                drop(inbound);
                Read {
                    stream: None,
                    input: Some(Input::End(receive_result.await)),
                }
            }
            // Nothing this time; ask again.
            _ => Read {
                stream: Some(Inbound {
                    inbound,
                    receive_result,
                }),
                input: None,
            },
        }
    }
    .boxed_local()
}

impl ReadSide {
    /// Polls the read in flight, if it is `by_watcher`'s to poll; `None`: there is
    /// none of theirs. A finished read gives its stream back.
    fn poll_own(&mut self, by_watcher: bool, cx: &mut Context<'_>) -> Option<Poll<Option<Input>>> {
        let in_flight = self.in_flight.as_mut()?;
        if in_flight.by_watcher != by_watcher {
            return None;
        }
        let read = match in_flight.read.poll_unpin(cx) {
            Poll::Pending => return Some(Poll::Pending),
            Poll::Ready(read) => read,
        };
        self.in_flight = None;
        self.stream = read.stream;
        if let Some(Input::Data(chunk)) = &read.input {
            self.size.record(chunk.len());
        }
        Some(Poll::Ready(read.input))
    }

    /// Starts a read for `by_watcher`'s side; `false` if the stream has ended.
    fn start(&mut self, by_watcher: bool) -> bool {
        let Some(stream) = self.stream.take() else {
            return false;
        };
        self.in_flight = Some(InFlightRead {
            by_watcher,
            read: read(stream, self.size.next()),
        });
        true
    }
}

/// The watcher (Go's `readLoop` for an idle connection): waits to be asked, reads
/// while the connection is idle, and ends when the connection is closed for what it
/// read, or when the holder's side is gone and its own read has finished.
async fn watch_idle(io: Rc<Io>, id: u64, watch: IdleWatch) {
    loop {
        let input = poll_fn(|cx| poll_watch(&io, cx)).await;
        let Some(input) = input else { return };
        let seen = match &input {
            Input::Data(chunk) => IdleInput::Unsolicited(first_line(chunk)),
            Input::End(_) => IdleInput::Closed,
        };
        if io.idle.get() && watch(id, seen) {
            return;
        }
        // Taken meanwhile: the new holder reads it.
        let waiting = {
            let mut side = io.read.borrow_mut();
            side.handed = Some(input);
            side.waiting.take()
        };
        if let Some(waiting) = waiting {
            waiting.wake();
        }
    }
}

/// The watcher's turn: `Some(input)` its read gave, `None` when it should end.
fn poll_watch(io: &Io, cx: &mut Context<'_>) -> Poll<Option<Input>> {
    loop {
        let mut side = io.read.borrow_mut();
        match side.poll_own(true, cx) {
            Some(Poll::Pending) => return Poll::Pending,
            Some(Poll::Ready(Some(input))) if !io.closed.get() => return Poll::Ready(Some(input)),
            Some(Poll::Ready(Some(_))) => return Poll::Ready(None),
            Some(Poll::Ready(None)) => continue,
            None => {}
        }
        if io.closed.get() {
            return Poll::Ready(None);
        }
        // Read only for an idle connection, and only when no holder's read is out.
        let free = side.in_flight.is_none() && side.handed.is_none();
        if io.idle.get() && free && side.start(true) {
            continue;
        }
        drop(side);
        *io.watcher.borrow_mut() = Some(cx.waker().clone());
        return Poll::Pending;
    }
}

/// The receiving half: reads on the holder's task, and bytes not yet decoded.
pub struct Reader {
    io: Rc<Io>,
    /// Set once the input has ended; later fills report the same end.
    ended: Option<Result<(), ErrorCode>>,
    /// Received bytes; `buf[pos..]` are not consumed yet.
    buf: Vec<u8>,
    pos: usize,
}

impl Reader {
    /// Received bytes not consumed yet.
    pub fn buffered(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    pub fn consume(&mut self, n: usize) {
        self.pos = (self.pos + n).min(self.buf.len());
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
    }

    /// Reads more bytes into the buffer; `Ok(0)` means the peer closed.
    pub async fn fill(&mut self) -> Result<usize, ErrorCode> {
        poll_fn(|cx| self.poll_fill(cx)).await
    }

    /// `fill` as a poll: for a protocol driven through `AsyncRead` (HTTP/2).
    pub fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<Result<usize, ErrorCode>> {
        if let Some(end) = &self.ended {
            return Poll::Ready(end.clone().map(|()| 0));
        }
        let input = loop {
            let mut side = self.io.read.borrow_mut();
            if let Some(input) = side.handed.take() {
                break input;
            }
            match side.poll_own(false, cx) {
                Some(Poll::Pending) => return Poll::Pending,
                Some(Poll::Ready(Some(input))) => break input,
                Some(Poll::Ready(None)) => continue,
                None => {}
            }
            if side.in_flight.is_some() {
                // The watcher's read: it hands over what it gets.
                side.waiting = Some(cx.waker().clone());
                return Poll::Pending;
            }
            if !side.start(false) {
                break Input::End(Ok(()));
            }
        };
        Poll::Ready(match input {
            Input::Data(data) => {
                if self.pos > 0 && self.pos * 2 >= self.buf.len() {
                    self.buf.drain(..self.pos);
                    self.pos = 0;
                }
                if self.buf.is_empty() {
                    self.buf = data;
                } else {
                    self.buf.extend_from_slice(&data);
                }
                Ok(self.buf.len() - self.pos)
            }
            Input::End(end) => {
                self.ended = Some(end.clone());
                end.map(|()| 0)
            }
        })
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        // The connection is gone: a read of the holder's is finished on this task,
        // the watcher's by the watcher, which then ends.
        self.io.closed.set(true);
        let mut side = self.io.read.borrow_mut();
        if side.in_flight.as_ref().is_some_and(|f| !f.by_watcher)
            && let Some(in_flight) = side.in_flight.take()
        {
            super::tasks::spawn(async move {
                in_flight.read.await;
            });
        }
        drop(side);
        self.io.wake_watcher();
    }
}

/// The host's outbound stream and what says why it failed.
struct Outbound {
    outbound: StreamWriter<u8>,
    send_result: FutureReader<Result<(), ErrorCode>>,
}

/// The sending half, on the holder's task; clones share it. A write is started at
/// once and usually completes at once (the host takes the bytes); one that does not
/// is finished by the next write or `flush`.
#[derive(Clone)]
pub struct Writer(Rc<RefCell<WriteSide>>);

struct WriteSide {
    /// `None` while a write is in flight (it owns the stream) or once it failed.
    stream: Option<Outbound>,
    in_flight: Option<LocalBoxFuture<'static, Result<Outbound, ErrorCode>>>,
    /// Set once the host could not write.
    failed: Option<ErrorCode>,
}

/// Writes `bytes`, owning the stream while in flight; on failure, the host's reason.
fn write(stream: Outbound, bytes: Vec<u8>) -> LocalBoxFuture<'static, Result<Outbound, ErrorCode>> {
    async move {
        let Outbound {
            mut outbound,
            send_result,
        } = stream;
        if outbound.write_all(bytes).await.is_empty() {
            return Ok(Outbound {
                outbound,
                send_result,
            });
        }
        drop(outbound);
        Err(match send_result.await {
            Err(code) => code,
            Ok(()) => closed_while("writing the request"),
        })
    }
    .boxed_local()
}

impl Writer {
    /// Starts writing `bytes`; returns once they are written, or once the host has
    /// them in hand. Fails once the host could not write.
    pub async fn write(&mut self, bytes: Vec<u8>) -> Result<(), ErrorCode> {
        if bytes.is_empty() {
            return match self.0.borrow().failed.clone() {
                Some(code) => Err(code),
                None => Ok(()),
            };
        }
        poll_fn(|cx| self.poll_ready(cx)).await?;
        self.start_send(bytes)?;
        // Polled once, the write is started: done at once, or finished by the next
        // write or `flush`.
        poll_fn(|cx| match self.poll_flush(cx) {
            Poll::Ready(Err(code)) => Poll::Ready(Err(code)),
            _ => Poll::Ready(Ok(())),
        })
        .await
    }

    /// Waits until every write has completed.
    pub async fn flush(&mut self) -> Result<(), ErrorCode> {
        poll_fn(|cx| self.poll_flush(cx)).await
    }

    /// Whether a write can be started now (none is in flight); an error once the host
    /// could not write.
    pub fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ErrorCode>> {
        self.poll_flush(cx)
    }

    /// Finishes the write in flight, if any.
    pub fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ErrorCode>> {
        let mut side = self.0.borrow_mut();
        if let Some(in_flight) = side.in_flight.as_mut() {
            let written = std::task::ready!(in_flight.poll_unpin(cx));
            side.in_flight = None;
            match written {
                Ok(stream) => side.stream = Some(stream),
                Err(code) => side.failed = Some(code),
            }
        }
        match &side.failed {
            Some(code) => Poll::Ready(Err(code.clone())),
            None => Poll::Ready(Ok(())),
        }
    }

    /// Starts writing `bytes` once `poll_ready` said there is room; the next
    /// `poll_flush` (or `poll_ready`) polls it.
    pub fn start_send(&mut self, bytes: Vec<u8>) -> Result<(), ErrorCode> {
        let mut side = self.0.borrow_mut();
        if let Some(code) = &side.failed {
            return Err(code.clone());
        }
        let stream = side.stream.take().ok_or_else(|| closed_while("writing"))?;
        side.in_flight = Some(write(stream, bytes));
        Ok(())
    }
}

impl Drop for WriteSide {
    fn drop(&mut self) {
        // Never dropped half-way: finished on the task that let go of it.
        if let Some(in_flight) = self.in_flight.take() {
            super::tasks::spawn(async move {
                let _ = in_flight.await;
            });
        }
    }
}

/// The start of unsolicited input, for the event that reports it.
fn first_line(bytes: &[u8]) -> String {
    let line = bytes.split(|&b| b == b'\n').next().unwrap_or_default();
    String::from_utf8_lossy(&line[..line.len().min(64)])
        .trim_end()
        .to_owned()
}

fn closed_while(doing: &str) -> ErrorCode {
    ErrorCode::ConnectionTerminated(format!("connection closed by peer while {doing}"))
}
