//! HTTP/2 connections: one per pool key, shared by every request of the key.
//!
//! Theory of operation. A dial that negotiated `h2` (ALPN, or prior knowledge on
//! `http://`) becomes an [`H2Conn`]: the `h2` crate speaks the protocol over the
//! connection's reader and writer ([`H2Io`], tokio's `AsyncRead`/`AsyncWrite`), and one
//! task per connection ([`drive`]) polls its `Connection` — the frames in and out,
//! flow control, pings — for the connection's whole life. A request leases a stream
//! ([`StreamLease`]); the pool counts the connection as one active connection of its key
//! however many streams it carries (Go's `http2.clientConnPool`).
//!
//! ```text
//!  dial (ALPN h2) ─► handshake ─► H2Conn in Shared::h2 ─► every waiter of the key
//!                                    │                     is told to look again
//!  request ─► lease a stream ─► exchange ──► SendRequest ──┐
//!  server bytes ─► H2Io (read by the drive task) ─► FrameWatcher (events) ─► h2 ◄─ drive task
//!  drive ends (error, GOAWAY and no streams, idle timeout, unanswered PING,
//!  close-idle-connections, shutdown) ─► removed, closed, the pool's count freed
//! ```
//!
//! Once a key is known to speak HTTP/2, a request that finds its connection still
//! being dialled waits for it instead of dialling another (better than Go, which
//! dials and then closes the extra one: `addConnIfNeeded`). A dial that finishes
//! while a usable connection exists is closed (`unneeded`).

pub mod exchange;

use std::cell::RefCell;
use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::StreamExt;
use futures::channel::{mpsc, oneshot};
use futures::future::poll_fn;
use h2::client::{Connection as H2Connection, SendRequest};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::core::Micros;
use crate::core::h2_frames::{FrameWatcher, Seen, reason_name};
use crate::core::pool::Ticket;
use crate::driver::bindings::roundtrip::transport::net;
use crate::driver::bindings::roundtrip::transport::observe::{
    CloseReason, EventKind, Goaway, H2Settings, StreamReset,
};
use crate::driver::bindings::roundtrip::transport::types::{ErrorCode, Http2Config};
use crate::driver::clock;
use crate::driver::conn::{Conn, Reader, Writer};
use crate::driver::errors::message;
use crate::driver::transport::{Handed, Shared};

/// Go's per-stream receive window (`transportDefaultStreamFlow`): 4 MiB.
const STREAM_WINDOW: u32 = 4 << 20;
/// Go's connection receive window (`transportDefaultConnFlow`): 1 GiB.
const CONN_WINDOW: u32 = 1 << 30;
/// Streams assumed before the server's `SETTINGS` say (Go's
/// `initialMaxConcurrentStreams`).
const INITIAL_MAX_STREAMS: usize = 100;

/// One HTTP/2 connection of a key.
pub struct H2Conn {
    pub id: u64,
    pub key: String,
    send: RefCell<SendRequest<Bytes>>,
    socket: net::Connection,
    link: Rc<Link>,
    /// Wakes the drive task to look at the state again.
    nudge: mpsc::UnboundedSender<()>,
}

/// What the connection's parts share: the state, and what the wire said.
struct Link {
    shared: Weak<Shared>,
    id: u64,
    key: String,
    state: RefCell<H2State>,
    watcher: RefCell<FrameWatcher>,
    /// The compressed size of the last header block of recent streams.
    header_blocks: RefCell<VecDeque<(u32, usize)>>,
}

/// Streams whose header block size is remembered.
const HEADER_BLOCKS_KEPT: usize = 256;

#[derive(Default)]
struct H2State {
    /// Streams leased now.
    streams: u32,
    /// Requests carried so far.
    served: u32,
    /// The server's `GOAWAY`: its last stream id. No new streams once set.
    goaway: Option<u32>,
    /// Asked to close when it has no streams (`close-idle-connections`), or at once
    /// (shutdown).
    closing: Option<CloseReason>,
    /// The drive task has ended.
    closed: bool,
    /// When the last stream ended (or the connection opened).
    idle_since: Micros,
    /// Transport microseconds of the last read from the server.
    last_read: Micros,
}

/// Every HTTP/2 connection of a transport, by key.
#[derive(Default)]
pub struct H2Pool {
    conns: HashMap<String, Vec<Rc<H2Conn>>>,
    /// Keys whose server has spoken HTTP/2.
    known: HashSet<String>,
    /// Requests waiting for a key's HTTP/2 connection to open or to free a stream.
    watchers: HashMap<String, Vec<oneshot::Sender<()>>>,
}

/// What a request finds among a key's HTTP/2 connections.
pub enum Pick {
    /// A connection with a free stream.
    Use(Rc<H2Conn>),
    /// Live connections, every one at the server's `MAX_CONCURRENT_STREAMS`.
    Full,
    /// No live connection.
    None,
}

impl H2Pool {
    /// The newest connection of `key` with room for a stream.
    pub fn pick(&self, key: &str) -> Pick {
        let Some(conns) = self.conns.get(key) else {
            return Pick::None;
        };
        let live: Vec<_> = conns.iter().filter(|c| c.is_live()).collect();
        match live.iter().rev().find(|c| c.has_room()) {
            Some(conn) => Pick::Use(Rc::clone(conn)),
            None if live.is_empty() => Pick::None,
            None => Pick::Full,
        }
    }

    /// Whether `key`'s server has spoken HTTP/2 on this transport.
    pub fn is_known(&self, key: &str) -> bool {
        self.known.contains(key)
    }

    /// Resolves when a connection of `key` opens, frees a stream or closes.
    pub fn watch(&mut self, key: &str) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        self.watchers.entry(key.to_owned()).or_default().push(tx);
        rx
    }

    fn notify(&mut self, key: &str) {
        for watcher in self.watchers.remove(key).unwrap_or_default() {
            let _ = watcher.send(());
        }
    }

    /// Every connection, for closing them.
    pub fn all(&self) -> Vec<Rc<H2Conn>> {
        self.conns.values().flatten().cloned().collect()
    }

    /// Connections of `key` with no open stream (for `stats`: they count as idle).
    pub fn idle(&self, key: &str) -> usize {
        let conns = self.conns.get(key).map(Vec::as_slice).unwrap_or_default();
        conns.iter().filter(|c| c.streams() == 0).count()
    }
}

impl H2Conn {
    fn is_live(&self) -> bool {
        let state = self.link.state.borrow();
        !state.closed && state.goaway.is_none() && state.closing.is_none()
    }

    fn has_room(&self) -> bool {
        let max = self.send.borrow().current_max_send_streams();
        (self.streams() as usize) < max
    }

    pub fn streams(&self) -> u32 {
        self.link.state.borrow().streams
    }

    /// The last stream the server's `GOAWAY` says it may have processed.
    pub fn goaway_last_stream(&self) -> Option<u32> {
        self.link.state.borrow().goaway
    }

    /// The compressed size of the last header block the server sent on `stream`.
    pub fn header_block_bytes(&self, stream: u32) -> Option<usize> {
        let blocks = self.link.header_blocks.borrow();
        blocks.iter().find(|(s, _)| *s == stream).map(|(_, b)| *b)
    }

    /// A handle for opening a stream.
    pub fn sender(&self) -> SendRequest<Bytes> {
        self.send.borrow().clone()
    }

    /// Closes the connection now, as the transport shuts down: its close is told
    /// before the instance may go away; its task then ends without a word.
    pub fn shut_down(self: &Rc<Self>, shared: &Rc<Shared>) {
        if self.link.state.borrow().closed {
            return;
        }
        retire(shared, self, End::Closed(CloseReason::TransportShutdown));
        let _ = self.nudge.unbounded_send(());
    }

    /// Closes the connection once its streams have ended (`close-idle-connections`).
    pub fn close_when_idle(&self, reason: CloseReason) {
        self.link.state.borrow_mut().closing = Some(reason);
        let _ = self.nudge.unbounded_send(());
    }
}

/// A stream of an HTTP/2 connection, held by one request; dropping it frees the stream.
pub struct StreamLease {
    shared: Rc<Shared>,
    pub conn: Rc<H2Conn>,
    pub req: u64,
    /// Whether the connection had carried a request before this one.
    pub reused: bool,
    /// Microseconds the connection had no stream before this one, if it had none.
    pub idle_for: Option<Micros>,
}

impl StreamLease {
    pub fn new(shared: &Rc<Shared>, conn: Rc<H2Conn>, req: u64) -> Self {
        let now = shared.now();
        let (reused, idle_for) = {
            let mut state = conn.link.state.borrow_mut();
            let reused = state.served > 0;
            let idle_for = (state.streams == 0 && reused).then(|| now - state.idle_since);
            state.streams += 1;
            state.served += 1;
            (reused, idle_for)
        };
        if reused {
            shared.state.borrow_mut().pool.count_reuse();
        }
        Self {
            shared: Rc::clone(shared),
            conn,
            req,
            reused,
            idle_for,
        }
    }

    pub fn emit(&self, kind: EventKind) {
        self.shared.emit(
            Some(self.conn.id),
            Some(self.req),
            Some(&self.conn.key),
            kind,
        );
    }
}

impl Drop for StreamLease {
    fn drop(&mut self) {
        let now = self.shared.now();
        let idle = {
            let mut state = self.conn.link.state.borrow_mut();
            state.streams = state.streams.saturating_sub(1);
            if state.streams == 0 {
                state.idle_since = now;
            }
            state.streams == 0
        };
        if idle {
            // Its last stream ended: the connection is idle (its drive task keeps the
            // idle clock).
            if self.conn.is_live() {
                self.emit(EventKind::PutIdle(None));
            }
            let _ = self.conn.nudge.unbounded_send(());
        }
        stream_freed(&self.shared, &self.conn.key);
    }
}

/// A stream of `key` freed or a connection opened: requests waiting on the key look
/// again, and so do those held at `max-conns-per-host`.
fn stream_freed(shared: &Rc<Shared>, key: &str) {
    shared.h2.borrow_mut().notify(key);
    if !matches!(shared.h2.borrow().pick(key), Pick::Use(_)) {
        return;
    }
    let tickets = shared.state.borrow_mut().pool.take_blocked_waiters(key);
    reply_shared(shared, tickets);
}

/// Tells waiting requests to take a stream of the key's HTTP/2 connection.
fn reply_shared(shared: &Rc<Shared>, tickets: Vec<Ticket>) {
    for ticket in tickets {
        let waiter = shared.state.borrow_mut().waiters.remove(&ticket);
        if let Some(waiter) = waiter {
            let _ = waiter.reply.send(Ok(Handed::Shared));
        }
    }
}

/// What this end announces (Go's `HTTP2Config`, with its client defaults for values
/// out of range).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_read_frame_size: u32,
    pub connection_window: u32,
    pub stream_window: u32,
    pub header_table_size: u32,
}

impl Limits {
    /// Go's `setConfigDefaults` for a client.
    pub fn of(config: &Http2Config) -> Self {
        let within = |value: u32, least: u32, most: u32, default: u32| {
            if (least..=most).contains(&value) {
                value
            } else {
                default
            }
        };
        Self {
            max_read_frame_size: within(
                config.max_read_frame_size,
                16 << 10,
                (1 << 24) - 1,
                1 << 20,
            ),
            connection_window: within(
                config.max_receive_buffer_per_connection,
                65_535,
                i32::MAX as u32,
                CONN_WINDOW,
            ),
            stream_window: within(
                config.max_receive_buffer_per_stream,
                1,
                i32::MAX as u32,
                STREAM_WINDOW,
            ),
            header_table_size: within(
                config.max_decoder_header_table_size,
                1,
                i32::MAX as u32,
                4096,
            ),
        }
    }
}

/// The `h2` client settings: Go's (or the `http2` config's) windows, frame size and
/// HPACK table, and the response header limit as `SETTINGS_MAX_HEADER_LIST_SIZE`.
fn builder(shared: &Shared) -> h2::client::Builder {
    let limits = shared.settings.http2;
    let mut builder = h2::client::Builder::new();
    builder
        .initial_window_size(limits.stream_window)
        .initial_connection_window_size(limits.connection_window)
        .max_frame_size(limits.max_read_frame_size)
        .initial_max_send_streams(INITIAL_MAX_STREAMS)
        .max_header_list_size(
            u32::try_from(shared.settings.max_response_header_bytes).unwrap_or(u32::MAX),
        )
        .enable_push(false);
    // As Go: announced only when it is not the protocol's 4096.
    if limits.header_table_size != 4096 {
        builder.header_table_size(limits.header_table_size);
    }
    builder
}

/// A finished dial that negotiated HTTP/2, made for waiter `ticket` of `key`: the
/// handshake, then the connection serves every waiter of the key.
pub async fn start(shared: Rc<Shared>, conn: Conn, req: u64, key: String, ticket: Ticket) {
    if shared.is_shut_down() {
        shared.state.borrow_mut().pool.abandoned_dial(&key);
        shared.close(conn, Some(req), &key, CloseReason::TransportShutdown);
        shared.run_actions();
        return;
    }
    // Go's `addConnIfNeeded`: a usable connection of the key exists; this one is not needed.
    if let Pick::Use(_) = shared.h2.borrow().pick(&key) {
        shared.close(conn, Some(req), &key, CloseReason::Unneeded);
        let tickets = {
            let mut state = shared.state.borrow_mut();
            let tickets = state.pool.became_shared(&key);
            state.pool.closed_active(&key);
            tickets
        };
        reply_shared(&shared, tickets);
        shared.run_actions();
        return;
    }
    let id = conn.id;
    let (socket, reader, writer) = conn.into_parts();
    let now = shared.now();
    let link = Rc::new(Link {
        shared: Rc::downgrade(&shared),
        id,
        key: key.clone(),
        state: RefCell::new(H2State {
            idle_since: now,
            last_read: now,
            ..H2State::default()
        }),
        watcher: RefCell::new(FrameWatcher::default()),
        header_blocks: RefCell::new(VecDeque::new()),
    });
    let io = H2Io {
        reader,
        writer,
        link: Rc::clone(&link),
    };
    let handshake = builder(&shared).handshake::<_, Bytes>(io).await;
    let (send, connection) = match handshake {
        Ok(parts) => parts,
        Err(error) => {
            let code = ErrorCode::ConnectionFailed(format!("http2: handshake failed: {error}"));
            shared.emit(
                Some(id),
                Some(req),
                Some(&key),
                EventKind::Close(CloseReason::Error),
            );
            socket.close();
            shared.dial_failed(&key, ticket, code);
            return;
        }
    };
    let (nudge, nudges) = mpsc::unbounded();
    let conn = Rc::new(H2Conn {
        id,
        key: key.clone(),
        send: RefCell::new(send),
        socket,
        link,
        nudge,
    });
    {
        let mut h2 = shared.h2.borrow_mut();
        h2.conns
            .entry(key.clone())
            .or_default()
            .push(Rc::clone(&conn));
        h2.known.insert(key.clone());
    }
    crate::driver::tasks::spawn(drive(
        Rc::clone(&shared),
        Rc::clone(&conn),
        connection,
        nudges,
    ));
    let tickets = shared.state.borrow_mut().pool.became_shared(&key);
    reply_shared(&shared, tickets);
    shared.h2.borrow_mut().notify(&key);
    shared.run_actions();
}

/// Why the drive task ended.
enum End {
    Closed(CloseReason),
    /// Closed already (the transport shut down).
    Retired,
    Failed,
}

/// A timer armed for one deadline.
struct Timer {
    at: u64,
    sleep: Pin<Box<dyn Future<Output = ()>>>,
}

/// The connection's task: polls `h2`'s `Connection` until the connection ends, and
/// keeps its clocks (idle timeout, health-check pings).
async fn drive(
    shared: Rc<Shared>,
    conn: Rc<H2Conn>,
    mut connection: H2Connection<H2Io, Bytes>,
    mut nudges: mpsc::UnboundedReceiver<()>,
) {
    let mut ping_pong = connection.ping_pong();
    let idle_timeout = shared.idle_timeout();
    let read_idle = shared.settings.read_idle_timeout.map(|ns| ns / 1_000);
    let ping_timeout = shared.settings.ping_timeout.map(|ns| ns / 1_000);
    let mut ping_sent: Option<Micros> = None;
    let mut timer: Option<Timer> = None;
    let end = poll_fn(|cx| {
        loop {
            if conn.link.state.borrow().closed {
                return Poll::Ready(End::Retired);
            }
            match Pin::new(&mut connection).poll(cx) {
                Poll::Ready(Ok(())) => {
                    let goaway = conn.link.state.borrow().goaway.is_some();
                    return Poll::Ready(End::Closed(if goaway {
                        CloseReason::Goaway
                    } else {
                        CloseReason::ServerClosed
                    }));
                }
                Poll::Ready(Err(error)) => {
                    if error.is_go_away() && error.is_remote() {
                        return Poll::Ready(End::Closed(CloseReason::Goaway));
                    }
                    if error.is_io() {
                        return Poll::Ready(End::Closed(CloseReason::ServerClosed));
                    }
                    return Poll::Ready(End::Failed);
                }
                Poll::Pending => {}
            }
            while let Poll::Ready(Some(())) = nudges.poll_next_unpin(cx) {}
            let now = shared.now();
            let (streams, closing, goaway, idle_since, last_read) = {
                let s = conn.link.state.borrow();
                (s.streams, s.closing, s.goaway, s.idle_since, s.last_read)
            };
            match closing {
                Some(CloseReason::TransportShutdown) => {
                    return Poll::Ready(End::Closed(CloseReason::TransportShutdown));
                }
                Some(reason) if streams == 0 => return Poll::Ready(End::Closed(reason)),
                _ => {}
            }
            if goaway.is_some() && streams == 0 {
                return Poll::Ready(End::Closed(CloseReason::Goaway));
            }
            let mut next: Option<Micros> = None;
            let mut arm = |at: Micros| next = Some(next.map_or(at, |n: Micros| n.min(at)));
            if streams == 0
                && let Some(timeout) = idle_timeout
            {
                if now >= idle_since + timeout {
                    return Poll::Ready(End::Closed(CloseReason::IdleTimeout));
                }
                arm(idle_since + timeout);
            }
            if let (Some(read_idle), Some(pings)) = (read_idle, ping_pong.as_mut()) {
                match ping_sent {
                    Some(sent) => match pings.poll_pong(cx) {
                        Poll::Ready(Ok(_)) => {
                            ping_sent = None;
                            continue;
                        }
                        Poll::Ready(Err(_)) => return Poll::Ready(End::Failed),
                        Poll::Pending => {
                            if let Some(timeout) = ping_timeout {
                                if now >= sent + timeout {
                                    shared.emit(
                                        Some(conn.id),
                                        None,
                                        Some(&conn.key),
                                        EventKind::PingTimeout,
                                    );
                                    return Poll::Ready(End::Closed(CloseReason::PingTimeout));
                                }
                                arm(sent + timeout);
                            }
                        }
                    },
                    None if now >= last_read + read_idle => {
                        if pings.send_ping(h2::Ping::opaque()).is_ok() {
                            shared.emit(Some(conn.id), None, Some(&conn.key), EventKind::Ping);
                            ping_sent = Some(now);
                            continue;
                        }
                    }
                    None => arm(last_read + read_idle),
                }
            }
            let Some(at) = next else {
                timer = None;
                return Poll::Pending;
            };
            let at_ns = shared.start_ns() + at * 1_000;
            if timer.as_ref().is_none_or(|t| t.at != at_ns) {
                timer = Some(Timer {
                    at: at_ns,
                    sleep: Box::pin(clock::sleep_until(at_ns)),
                });
            }
            let Some(t) = timer.as_mut() else {
                return Poll::Pending;
            };
            if t.sleep.as_mut().poll(cx).is_ready() {
                timer = None;
                continue;
            }
            return Poll::Pending;
        }
    })
    .await;
    drop(connection);
    retire(&shared, &conn, end);
}

/// The connection ended: it leaves the pool, its count is freed, and it is closed.
fn retire(shared: &Rc<Shared>, conn: &Rc<H2Conn>, end: End) {
    if matches!(end, End::Retired) || conn.link.state.borrow().closed {
        return;
    }
    conn.link.state.borrow_mut().closed = true;
    {
        let mut h2 = shared.h2.borrow_mut();
        if let Some(conns) = h2.conns.get_mut(&conn.key) {
            conns.retain(|c| !Rc::ptr_eq(c, conn));
            if conns.is_empty() {
                h2.conns.remove(&conn.key);
            }
        }
    }
    let reason = match end {
        End::Closed(reason) if shared.is_shut_down() => {
            let _ = reason;
            CloseReason::TransportShutdown
        }
        End::Closed(reason) => reason,
        End::Failed | End::Retired => CloseReason::Error,
    };
    shared.emit(
        Some(conn.id),
        None,
        Some(&conn.key),
        EventKind::Close(reason),
    );
    conn.socket.close();
    shared.state.borrow_mut().pool.closed_active(&conn.key);
    shared.h2.borrow_mut().notify(&conn.key);
    shared.run_actions();
}

/// The connection's reader and writer as tokio's I/O traits, for `h2`. Every byte the
/// server sends passes the frame watcher first, which turns what `h2` does not report
/// into events.
pub struct H2Io {
    reader: Reader,
    writer: Writer,
    link: Rc<Link>,
}

impl Link {
    fn saw(&self, bytes: &[u8]) {
        let seen = self.watcher.borrow_mut().feed(bytes);
        let Some(shared) = self.shared.upgrade() else {
            return;
        };
        self.state.borrow_mut().last_read = shared.now();
        for frame in seen {
            let kind = match frame {
                Seen::Settings {
                    max_concurrent_streams,
                    initial_window,
                } => EventKind::H2Settings(H2Settings {
                    max_concurrent_streams,
                    initial_window,
                }),
                Seen::GoAway { last_stream, code } => {
                    self.state.borrow_mut().goaway = Some(last_stream);
                    EventKind::Goaway(Goaway {
                        last_stream,
                        code: reason_name(code),
                    })
                }
                Seen::Reset { stream, code } => EventKind::StreamReset(StreamReset {
                    stream,
                    code: reason_name(code),
                    by_peer: true,
                }),
                Seen::PingAck => continue,
                Seen::HeaderBlock {
                    stream,
                    bytes,
                    continued,
                } => {
                    let mut blocks = self.header_blocks.borrow_mut();
                    match blocks.iter_mut().find(|(s, _)| *s == stream) {
                        Some(block) if continued => block.1 += bytes,
                        Some(block) => block.1 = bytes,
                        None => {
                            if blocks.len() == HEADER_BLOCKS_KEPT {
                                blocks.pop_front();
                            }
                            blocks.push_back((stream, bytes));
                        }
                    }
                    continue;
                }
            };
            shared.emit(Some(self.id), None, Some(&self.key), kind);
        }
    }
}

fn io_error(code: &ErrorCode) -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionReset, message(code).to_owned())
}

impl AsyncRead for H2Io {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.reader.buffered().is_empty() {
            match this.reader.poll_fill(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(code)) => return Poll::Ready(Err(io_error(&code))),
                Poll::Ready(Ok(0)) => return Poll::Ready(Ok(())),
                Poll::Ready(Ok(_)) => this.link.saw(this.reader.buffered()),
            }
        }
        let take = this.reader.buffered().len().min(buf.remaining());
        buf.put_slice(&this.reader.buffered()[..take]);
        this.reader.consume(take);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for H2Io {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let writer = &mut self.writer;
        match writer.poll_ready(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(code)) => Poll::Ready(Err(io_error(&code))),
            Poll::Ready(Ok(())) => match writer.start_send(buf.to_vec()) {
                Ok(()) => {
                    // Started now; usually done at once. If not, the next write or
                    // flush finishes it.
                    if let Poll::Ready(Err(code)) = writer.poll_flush(cx) {
                        return Poll::Ready(Err(io_error(&code)));
                    }
                    Poll::Ready(Ok(buf.len()))
                }
                Err(code) => Poll::Ready(Err(io_error(&code))),
            },
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.writer.poll_flush(cx).map_err(|code| io_error(&code))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
