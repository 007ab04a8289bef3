//! One open connection as the driver sees it: the host's socket resource, the outbound
//! stream the host writes to the socket, and the input its reader task forwards.
//!
//! Theory of operation. As in Go's `persistConn.readLoop`, every connection has a
//! reader task that is always reading from the host, whether a request is using the
//! connection or it sits idle in the pool:
//!
//! ```text
//!  host socket ─► inbound stream ─► reader task ─┬─ busy: ─► channel ─► Conn::fill
//!                                                └─ idle: ─► the connection is dead:
//!                                                   removed from the pool and closed
//! ```
//!
//! A server that closes an idle connection (FIN or RST) or writes to it unasked (e.g. an
//! `HTTP/1.1 408` before closing) is noticed at once, so a dead connection is never
//! handed to a request. The channel holds one chunk, so the reader reads at most one
//! chunk ahead of the exchange.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::task::{Context, Poll};

use futures::SinkExt;
use futures::StreamExt;
use futures::channel::mpsc;
use wit_bindgen::{FutureReader, StreamReader, StreamResult, StreamWriter};

use super::bindings::roundtrip::transport::net::Connection;
use super::bindings::roundtrip::transport::types::ErrorCode;
use super::bindings::wit_stream;
use crate::core::read_size::ReadSize;

/// Bytes asked for per read from the host.
pub const READ_SIZE: usize = 64 * 1024;

/// What the reader task saw while the connection was idle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdleInput {
    /// The server closed the connection, or reading failed.
    Closed,
    /// Bytes arrived that no request asked for (their first line, for the event).
    Unsolicited(String),
}

/// Called by the reader task when input arrives while the connection is idle. Returns
/// whether the connection was indeed idle and has been taken out of the pool; if not
/// (it was handed to a request meanwhile), the input is passed on as usual.
pub type IdleWatch = Rc<dyn Fn(u64, IdleInput) -> bool>;

/// Input from the reader task.
enum Input {
    Data(Vec<u8>),
    /// The stream ended: cleanly, or with the host's error.
    End(Result<(), ErrorCode>),
}

pub struct Conn {
    pub id: u64,
    /// Requests this connection has carried, the current one included.
    pub served: u32,
    socket: Connection,
    /// Shared with the reader task: whether the connection sits in the idle pool.
    idle: Rc<Cell<bool>>,
    pub writer: Writer,
    pub reader: Reader,
}

/// The sending half. Bytes go through a writer task that owns the host's stream, so a
/// write dropped half-way (an early response, a cancelled request) never cancels a
/// component-model stream operation: wasmtime 48 makes a guest's synchronous cancel
/// wait for the host side's next event.
#[derive(Clone)]
pub struct Writer {
    chunks: mpsc::Sender<Vec<u8>>,
    /// Set by the writer task when the host could not write.
    failed: Rc<RefCell<Option<ErrorCode>>>,
}

/// The receiving half: input from the reader task, and bytes not yet decoded.
pub struct Reader {
    input: mpsc::Receiver<Input>,
    /// Set once the input has ended; later fills report the same end.
    ended: Option<Result<(), ErrorCode>>,
    /// Received bytes; `buf[pos..]` are not consumed yet.
    buf: Vec<u8>,
    pos: usize,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Conn#{}", self.id)
    }
}

impl Conn {
    /// Starts the host's send and receive pumps on a connected (and, for https,
    /// TLS-wrapped) socket, and the reader task that watches it.
    pub fn open(id: u64, socket: Connection, watch: IdleWatch) -> Self {
        let (outbound, host_side) = wit_stream::new::<u8>();
        let send_result = socket.send(host_side);
        let (chunks, to_write) = mpsc::channel(1);
        let failed = Rc::new(RefCell::new(None));
        super::tasks::spawn(write_loop(
            outbound,
            send_result,
            to_write,
            Rc::clone(&failed),
        ));
        let (inbound, receive_result) = socket.receive();
        let (sender, input) = mpsc::channel(1);
        let idle = Rc::new(Cell::new(false));
        super::tasks::spawn(read_loop(
            id,
            inbound,
            receive_result,
            sender,
            Rc::clone(&idle),
            watch,
        ));
        Self {
            id,
            served: 0,
            socket,
            idle,
            writer: Writer { chunks, failed },
            reader: Reader {
                input,
                ended: None,
                buf: Vec::new(),
                pos: 0,
            },
        }
    }

    /// Marks the connection as sitting in the idle pool (or taken out of it).
    pub fn set_idle(&self, idle: bool) {
        self.idle.set(idle);
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

    /// Shuts the socket down; dropping `self` then releases the streams, and the reader
    /// task ends.
    pub fn close(self) {
        self.socket.close();
    }

    /// The socket and both halves, for a protocol that drives them itself (HTTP/2).
    /// The connection never counts as idle again: every input is the protocol's.
    pub fn into_parts(self) -> (Connection, Reader, Writer) {
        self.idle.set(false);
        (self.socket, self.reader, self.writer)
    }
}

impl Writer {
    /// Queues `bytes` for the socket (at most one chunk waits); fails once the host
    /// could not write.
    pub async fn write(&mut self, bytes: Vec<u8>) -> Result<(), ErrorCode> {
        if let Some(code) = self.failed.borrow().clone() {
            return Err(code);
        }
        if bytes.is_empty() {
            return Ok(());
        }
        if self.chunks.send(bytes).await.is_err() {
            let failed = self.failed.borrow().clone();
            return Err(failed.unwrap_or_else(|| closed_while("writing the request")));
        }
        Ok(())
    }
}

impl Writer {
    /// Whether a chunk can be queued now; an error once the host could not write or
    /// the writer task has ended.
    pub fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ErrorCode>> {
        if let Some(code) = self.failed.borrow().clone() {
            return Poll::Ready(Err(code));
        }
        match self.chunks.poll_ready(cx) {
            Poll::Ready(Ok(())) => Poll::Ready(Ok(())),
            Poll::Ready(Err(_)) => Poll::Ready(Err(self.gone())),
            Poll::Pending => Poll::Pending,
        }
    }

    /// Queues `bytes` once `poll_ready` said there is room.
    pub fn start_send(&mut self, bytes: Vec<u8>) -> Result<(), ErrorCode> {
        self.chunks.start_send(bytes).map_err(|_| self.gone())
    }

    fn gone(&self) -> ErrorCode {
        let failed = self.failed.borrow().clone();
        failed.unwrap_or_else(|| closed_while("writing"))
    }
}

/// The writer task: the only user of the outbound stream.
async fn write_loop(
    mut outbound: StreamWriter<u8>,
    send_result: FutureReader<Result<(), ErrorCode>>,
    mut chunks: mpsc::Receiver<Vec<u8>>,
    failed: Rc<RefCell<Option<ErrorCode>>>,
) {
    while let Some(chunk) = chunks.next().await {
        if !outbound.write_all(chunk).await.is_empty() {
            let code = match send_result.await {
                Err(code) => code,
                Ok(()) => closed_while("writing the request"),
            };
            *failed.borrow_mut() = Some(code);
            return;
        }
    }
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
        futures::future::poll_fn(|cx| self.poll_fill(cx)).await
    }

    /// `fill` as a poll: for a protocol driven through `AsyncRead` (HTTP/2).
    pub fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<Result<usize, ErrorCode>> {
        if let Some(end) = &self.ended {
            return Poll::Ready(end.clone().map(|()| 0));
        }
        let input = match self.input.poll_next_unpin(cx) {
            Poll::Ready(input) => input.unwrap_or(Input::End(Ok(()))),
            Poll::Pending => return Poll::Pending,
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

/// The reader task (Go's `readLoop`).
async fn read_loop(
    id: u64,
    mut inbound: StreamReader<u8>,
    receive_result: FutureReader<Result<(), ErrorCode>>,
    mut sender: mpsc::Sender<Input>,
    idle: Rc<Cell<bool>>,
    watch: IdleWatch,
) {
    // Small while idle (the pending read holds its buffer), large for big bodies.
    let mut size = ReadSize::default();
    let end = loop {
        let (result, chunk) = inbound.read(Vec::with_capacity(size.next())).await;
        size.record(chunk.len());
        if chunk.is_empty() {
            match result {
                StreamResult::Dropped => break receive_result.await,
                _ => continue,
            }
        }
        if idle.get() && watch(id, IdleInput::Unsolicited(first_line(&chunk))) {
            return;
        }
        if sender.send(Input::Data(chunk)).await.is_err() {
            // The connection was dropped: nobody reads any more.
            return;
        }
    };
    if idle.get() && watch(id, IdleInput::Closed) {
        return;
    }
    let _ = sender.send(Input::End(end)).await;
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
