//! One open connection as the driver sees it: the host's socket resource, the
//! outbound stream the host writes to the socket, the inbound stream it fills
//! from the socket, and the bytes received but not yet decoded.

use wit_bindgen::{FutureReader, StreamReader, StreamResult, StreamWriter};

use super::bindings::roundtrip::transport::net::Connection;
use super::bindings::roundtrip::transport::types::ErrorCode;
use super::bindings::wit_stream;

/// Bytes asked for per read from the host.
pub const READ_SIZE: usize = 64 * 1024;

pub struct Conn {
    pub id: u64,
    /// Requests this connection has carried, the current one included.
    pub served: u32,
    socket: Connection,
    outbound: StreamWriter<u8>,
    inbound: StreamReader<u8>,
    send_result: Option<FutureReader<Result<(), ErrorCode>>>,
    receive_result: Option<FutureReader<Result<(), ErrorCode>>>,
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
    /// TLS-wrapped) socket.
    pub fn open(id: u64, socket: Connection) -> Self {
        let (outbound, host_side) = wit_stream::new::<u8>();
        let send_result = socket.send(host_side);
        let (inbound, receive_result) = socket.receive();
        Self {
            id,
            served: 0,
            socket,
            outbound,
            inbound,
            send_result: Some(send_result),
            receive_result: Some(receive_result),
            buf: Vec::new(),
            pos: 0,
        }
    }

    /// Writes all of `bytes`; fails if the host could not.
    pub async fn write(&mut self, bytes: Vec<u8>) -> Result<(), ErrorCode> {
        if bytes.is_empty() {
            return Ok(());
        }
        let unsent = self.outbound.write_all(bytes).await;
        if unsent.is_empty() {
            return Ok(());
        }
        Err(match self.send_result.take() {
            Some(result) => match result.await {
                Err(code) => code,
                Ok(()) => closed_while("writing the request"),
            },
            None => closed_while("writing the request"),
        })
    }

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
        if self.pos > 0 && self.pos * 2 >= self.buf.len() {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.reserve(READ_SIZE);
        let buf = std::mem::take(&mut self.buf);
        let before = buf.len();
        let (result, buf) = self.inbound.read(buf).await;
        self.buf = buf;
        let read = self.buf.len() - before;
        self.finish_read(result, read).await
    }

    async fn finish_read(&mut self, result: StreamResult, read: usize) -> Result<usize, ErrorCode> {
        match result {
            StreamResult::Dropped if read == 0 => match self.receive_result.take() {
                Some(outcome) => outcome.await.map(|()| 0),
                None => Ok(0),
            },
            _ => Ok(read),
        }
    }

    /// Shuts the socket down; dropping `self` then releases the streams.
    pub fn close(self) {
        self.socket.close();
    }
}

fn closed_while(doing: &str) -> ErrorCode {
    ErrorCode::ConnectionTerminated(format!("connection closed by peer while {doing}"))
}
