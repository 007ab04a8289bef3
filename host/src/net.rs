//! The `net` import: TCP connections over tokio, TLS by rustls, bytes to and from the
//! guest as streams.
//!
//! A connection starts as one socket (`Stage::Whole`) so `start-tls` can wrap it; the
//! first `send` or `receive` splits it into halves. A read of the guest's stream is a
//! socket read straight into the guest's buffer, a write a socket write from it: no
//! task or channel between (`SocketReader`, `SocketWriter`). `close` (or dropping the
//! resource) shuts the socket down through a second handle, which ends pending reads
//! and writes.

use std::io;
use std::net::{Shutdown, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_rustls::TlsConnector;
use wasmtime::StoreContextMut;
use wasmtime::component::{
    Access, Accessor, Destination, FutureReader, HasData, Resource, Source, StreamConsumer,
    StreamProducer, StreamReader, StreamResult,
};

use crate::bindings::roundtrip::transport::net::{
    Host, HostConnection, HostConnectionWithStore, HostWithStore, IdleState, TlsInfo, TlsPeer,
};
use crate::bindings::roundtrip::transport::types::{ErrorCode, KeepAlive};
use crate::pipes::READ_CHUNK;
use crate::state::State;
use crate::tls;

trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}
type BoxedIo = Box<dyn Io>;

enum Stage {
    /// Not yet split: TLS can still wrap it.
    Whole(BoxedIo),
    /// Split for `send`/`receive`; each half is taken once.
    Split {
        reader: Option<ReadHalf<BoxedIo>>,
        writer: Option<WriteHalf<BoxedIo>>,
    },
    /// A TLS handshake owns the socket, or failed with it.
    Gone,
}

/// The host side of the WIT `connection` resource.
pub struct Connection {
    peer: SocketAddr,
    local: SocketAddr,
    /// A second handle on the socket, to shut it down while tasks own the halves.
    shutdown: std::net::TcpStream,
    stage: Stage,
    /// TLS runs on it (`start-tls` succeeded).
    tls: bool,
}

impl Connection {
    /// The connection `stream` to `addr` just made; a socket that cannot be set up is
    /// a failed dial.
    fn new(stream: TcpStream, addr: SocketAddr) -> Result<Self, ErrorCode> {
        let set_up = || -> io::Result<Self> {
            stream.set_nodelay(true)?;
            let peer = stream.peer_addr()?;
            let local = stream.local_addr()?;
            let std_stream = stream.into_std()?;
            let shutdown = std_stream.try_clone()?;
            let stream = TcpStream::from_std(std_stream)?;
            Ok(Self {
                peer,
                local,
                shutdown,
                stage: Stage::Whole(Box::new(stream)),
                tls: false,
            })
        };
        set_up().map_err(|e| ErrorCode::ConnectionFailed(format!("dial tcp {addr}: {e}")))
    }

    fn take_reader(&mut self) -> Option<ReadHalf<BoxedIo>> {
        self.split();
        match &mut self.stage {
            Stage::Split { reader, .. } => reader.take(),
            _ => None,
        }
    }

    fn take_writer(&mut self) -> Option<WriteHalf<BoxedIo>> {
        self.split();
        match &mut self.stage {
            Stage::Split { writer, .. } => writer.take(),
            _ => None,
        }
    }

    fn split(&mut self) {
        match std::mem::replace(&mut self.stage, Stage::Gone) {
            Stage::Whole(io) => {
                let (reader, writer) = tokio::io::split(io);
                self.stage = Stage::Split {
                    reader: Some(reader),
                    writer: Some(writer),
                };
            }
            other => self.stage = other,
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        // Ends the socket tasks; an error only means it is already shut.
        let _ = self.shutdown.shutdown(Shutdown::Both);
    }
}

/// `HasData` marker for the `net` interface.
pub struct Net;

impl HasData for Net {
    type Data<'a> = &'a mut State;
}

impl Host for State {}

impl HostConnection for State {
    fn peer_address(&mut self, conn: Resource<Connection>) -> wasmtime::Result<String> {
        crate::crossings::count(crate::crossings::Crossing::HostCallSync);
        Ok(self.table.get(&conn)?.peer.to_string())
    }

    fn local_address(&mut self, conn: Resource<Connection>) -> wasmtime::Result<String> {
        crate::crossings::count(crate::crossings::Crossing::HostCallSync);
        Ok(self.table.get(&conn)?.local.to_string())
    }

    fn idle_state(&mut self, conn: Resource<Connection>) -> wasmtime::Result<IdleState> {
        crate::crossings::count(crate::crossings::Crossing::HostCallSync);
        let connection = self.table.get(&conn)?;
        Ok(idle_state(&connection.shutdown, connection.tls))
    }

    fn close(&mut self, conn: Resource<Connection>) -> wasmtime::Result<()> {
        crate::crossings::count(crate::crossings::Crossing::HostCallSync);
        let _ = self.table.get(&conn)?.shutdown.shutdown(Shutdown::Both);
        Ok(())
    }

    fn drop(&mut self, conn: Resource<Connection>) -> wasmtime::Result<()> {
        crate::crossings::count(crate::crossings::Crossing::HostCallSync);
        self.table.delete(conn)?;
        Ok(())
    }
}

impl<T: Send> HostWithStore<T> for Net {
    async fn connect(
        accessor: &Accessor<T, Self>,
        host: String,
        port: u16,
        timeout: Option<u64>,
    ) -> wasmtime::Result<Result<Resource<Connection>, ErrorCode>> {
        crate::crossings::count(crate::crossings::Crossing::HostCallAsync);
        crate::state::note_progress();
        let allow = accessor.with(|mut access| access.get().allow_hosts.clone());
        if let Some(allow) = allow
            && !allow.allows(&host, port)
        {
            return Ok(Err(ErrorCode::DestinationDenied(
                allow.refusal(&host, port),
            )));
        }
        let dialled = match timeout {
            Some(ns) => tokio::time::timeout(Duration::from_nanos(ns), dial(&host, port))
                .await
                .unwrap_or_else(|_| {
                    Err(ErrorCode::ConnectionTimeout(format!(
                        "dial tcp {host}:{port}: i/o timeout after {:?}",
                        Duration::from_nanos(ns)
                    )))
                }),
            None => dial(&host, port).await,
        };
        match dialled {
            Ok(conn) => Ok(Ok(
                accessor.with(|mut access| access.get().table.push(conn))?
            )),
            Err(code) => Ok(Err(code)),
        }
    }

    async fn connect_address(
        accessor: &Accessor<T, Self>,
        host: String,
        address: String,
        port: u16,
        timeout: Option<u64>,
        keep_alive: Option<KeepAlive>,
    ) -> wasmtime::Result<Result<Resource<Connection>, ErrorCode>> {
        crate::crossings::count(crate::crossings::Crossing::HostCallAsync);
        crate::state::note_progress();
        let ip = address.parse::<std::net::IpAddr>().ok();
        let (allow, known) = accessor.with(|mut access| {
            let state = access.get();
            let known = ip.is_some_and(|ip| state.resolved.knows(&host, ip));
            (state.allow_hosts.clone(), known)
        });
        if let Some(allow) = allow
            && !allow.allows(&host, port)
        {
            return Ok(Err(ErrorCode::DestinationDenied(
                allow.refusal(&host, port),
            )));
        }
        let (Some(ip), true) = (ip, known) else {
            return Ok(Err(ErrorCode::DestinationDenied(format!(
                "{address} is not an address of {host} (resolve it first)"
            ))));
        };
        let addr = SocketAddr::new(ip, port);
        let connect = async {
            let stream = connect_to(addr).await?;
            if let Some(keep_alive) = keep_alive {
                // Best effort, as Go's dialer: the connection is made either way.
                let _ = set_keep_alive(&stream, keep_alive);
            }
            Connection::new(stream, addr)
        };
        let dialled = match timeout {
            Some(ns) => tokio::time::timeout(Duration::from_nanos(ns), connect)
                .await
                .unwrap_or_else(|_| {
                    Err(ErrorCode::ConnectionTimeout(format!(
                        "dial tcp {addr}: i/o timeout after {:?}",
                        Duration::from_nanos(ns)
                    )))
                }),
            None => connect.await,
        };
        match dialled {
            Ok(conn) => Ok(Ok(
                accessor.with(|mut access| access.get().table.push(conn))?
            )),
            Err(code) => Ok(Err(code)),
        }
    }

    async fn resolve(
        accessor: &Accessor<T, Self>,
        host: String,
    ) -> wasmtime::Result<Result<Vec<String>, ErrorCode>> {
        crate::crossings::count(crate::crossings::Crossing::HostCallAsync);
        crate::state::note_progress();
        let found = lookup(&host, 0).await;
        if let Ok(addrs) = &found {
            let ips = addrs.iter().map(SocketAddr::ip).collect();
            accessor.with(|mut access| access.get().resolved.note(&host, ips));
        }
        Ok(found.map(|addrs| addrs.iter().map(|a| a.ip().to_string()).collect()))
    }
}

/// Resolves `host` (an IP literal resolves to itself).
async fn lookup(host: &str, port: u16) -> Result<Vec<SocketAddr>, ErrorCode> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| ErrorCode::DnsError(format!("lookup {host}: {e}")))?
        .collect();
    if addrs.is_empty() {
        return Err(ErrorCode::DnsError(format!("lookup {host}: no such host")));
    }
    Ok(addrs)
}

/// What the kernel says of a socket nobody reads, asked without waiting (a `poll` with
/// a zero timeout: what curl does before reusing a connection). The peer's FIN shows
/// as `POLLRDHUP` even behind unread bytes, a reset as `POLLHUP`/`POLLERR`. Unread
/// bytes are `input` on plain TCP; under TLS they may be records the server may send
/// at any time (a TLS 1.3 session ticket), which only a read can tell from data.
fn idle_state(socket: &std::net::TcpStream, tls: bool) -> IdleState {
    use rustix::event::{PollFd, PollFlags, Timespec};
    let mut fds = [PollFd::new(socket, PollFlags::IN | PollFlags::RDHUP)];
    let now = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    if rustix::event::poll(&mut fds, Some(&now)).is_err() {
        return IdleState::Unknown;
    }
    let seen = fds[0].revents();
    if seen.intersects(PollFlags::RDHUP | PollFlags::HUP | PollFlags::ERR) {
        IdleState::Closed
    } else if seen.contains(PollFlags::IN) && !tls {
        IdleState::Input
    } else {
        IdleState::Quiet
    }
}

/// Resolves `host` and connects to each address in turn, as Go's dialer does.
async fn dial(host: &str, port: u16) -> Result<Connection, ErrorCode> {
    let addrs = lookup(host, port).await?;
    let mut last_error = ErrorCode::DnsError(format!("lookup {host}: no such host"));
    for addr in addrs {
        match connect_to(addr).await {
            Ok(stream) => return Connection::new(stream, addr),
            Err(e) => last_error = e,
        }
    }
    Err(last_error)
}

/// Turns on TCP keep-alive probes on `stream`, as `keep_alive` sets them.
fn set_keep_alive(stream: &TcpStream, keep_alive: KeepAlive) -> io::Result<()> {
    use rustix::net::sockopt;
    // The kernel counts in whole seconds, at least one.
    let seconds = |ns: u64| Duration::from_secs((ns / 1_000_000_000).max(1));
    sockopt::set_socket_keepalive(stream, true)?;
    sockopt::set_tcp_keepidle(stream, seconds(keep_alive.idle))?;
    sockopt::set_tcp_keepintvl(stream, seconds(keep_alive.interval))?;
    sockopt::set_tcp_keepcnt(stream, keep_alive.count.max(1))?;
    Ok(())
}

/// One TCP connect, its error as Go words it.
async fn connect_to(addr: SocketAddr) -> Result<TcpStream, ErrorCode> {
    match TcpStream::connect(addr).await {
        Ok(stream) => Ok(stream),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => Err(
            ErrorCode::ConnectionRefused(format!("dial tcp {addr}: connect: connection refused")),
        ),
        Err(e) => Err(ErrorCode::ConnectionFailed(format!(
            "dial tcp {addr}: connect: {e}"
        ))),
    }
}

impl<T: Send> HostConnectionWithStore<T> for Net {
    async fn start_tls(
        accessor: &Accessor<T, Self>,
        conn: Resource<Connection>,
        server_name: String,
        alpn: Vec<String>,
        peer: TlsPeer,
    ) -> wasmtime::Result<Result<TlsInfo, ErrorCode>> {
        crate::crossings::count(crate::crossings::Crossing::HostCallAsync);
        let (stage, tls) = accessor.with(|mut access| {
            let state = access.get();
            let stage = std::mem::replace(&mut state.table.get_mut(&conn)?.stage, Stage::Gone);
            Ok::<_, wasmtime::Error>((stage, state.tls.clone()))
        })?;
        let (config, insecure) = match peer {
            TlsPeer::Origin => (tls.origin, tls.insecure.then_some("--insecure")),
            TlsPeer::Proxy => (tls.proxy, tls.proxy_insecure.then_some("--proxy-insecure")),
        };
        if let Some(flag) = insecure {
            eprintln!(
                "roundtrip: WARNING: {flag}: the certificate of {server_name} is not checked; \
                 anyone on the path can read and change this connection"
            );
        }
        let Stage::Whole(io) = stage else {
            return Ok(Err(ErrorCode::InternalError(
                "start-tls called after send or receive".to_owned(),
            )));
        };
        let name = match rustls::pki_types::ServerName::try_from(server_name.clone()) {
            Ok(name) => name,
            Err(e) => {
                return Ok(Err(ErrorCode::TlsProtocolError(format!(
                    "invalid TLS server name {server_name:?}: {e}"
                ))));
            }
        };
        let offered: Vec<Vec<u8>> = alpn.into_iter().map(String::into_bytes).collect();
        let config = if offered == config.alpn_protocols {
            config
        } else {
            let mut custom = (*config).clone();
            custom.alpn_protocols = offered;
            std::sync::Arc::new(custom)
        };
        let tls = match TlsConnector::from(config).connect(name, io).await {
            Ok(tls) => tls,
            Err(e) => return Ok(Err(tls::classify(&e, &server_name))),
        };
        let session = tls.get_ref().1;
        let info = TlsInfo {
            version: session
                .protocol_version()
                .and_then(|v| v.as_str())
                .unwrap_or("unknown")
                .replace("TLSv1_", "TLSv1.")
                .to_owned(),
            cipher_suite: session
                .negotiated_cipher_suite()
                .and_then(|s| s.suite().as_str())
                .unwrap_or("unknown")
                .to_owned(),
            alpn: session
                .alpn_protocol()
                .map(|p| String::from_utf8_lossy(p).into_owned()),
            resumed: session.handshake_kind() == Some(rustls::HandshakeKind::Resumed),
        };
        accessor.with(|mut access| {
            let connection = access.get().table.get_mut(&conn)?;
            connection.stage = Stage::Whole(Box::new(tls));
            connection.tls = true;
            Ok::<_, wasmtime::Error>(())
        })?;
        Ok(Ok(info))
    }

    async fn write(
        accessor: &Accessor<T, Self>,
        conn: Resource<Connection>,
        data: Vec<u8>,
    ) -> wasmtime::Result<Result<(), ErrorCode>> {
        crate::crossings::count(crate::crossings::Crossing::HostCallAsync);
        crate::state::note_progress();
        let Some(mut io) = take_whole(accessor, &conn)? else {
            return Ok(Err(handshake_too_late("write")));
        };
        let outcome = async {
            io.write_all(&data).await?;
            io.flush().await
        }
        .await;
        put_whole(accessor, &conn, io)?;
        Ok(outcome.map_err(|e| terminated(&e, "writing")))
    }

    async fn read(
        accessor: &Accessor<T, Self>,
        conn: Resource<Connection>,
        max: u32,
    ) -> wasmtime::Result<Result<Vec<u8>, ErrorCode>> {
        crate::crossings::count(crate::crossings::Crossing::HostCallAsync);
        crate::state::note_progress();
        let Some(mut io) = take_whole(accessor, &conn)? else {
            return Ok(Err(handshake_too_late("read")));
        };
        let mut buf = vec![0; usize::try_from(max).unwrap_or(READ_CHUNK).min(READ_CHUNK)];
        let outcome = io.read(&mut buf).await;
        put_whole(accessor, &conn, io)?;
        Ok(match outcome {
            Ok(n) => {
                buf.truncate(n);
                Ok(buf)
            }
            Err(e) => Err(terminated(&e, "reading")),
        })
    }

    fn send(
        mut store: Access<T, Self>,
        conn: Resource<Connection>,
        mut data: StreamReader<u8>,
    ) -> wasmtime::Result<FutureReader<Result<(), ErrorCode>>> {
        crate::crossings::count(crate::crossings::Crossing::HostCallSync);
        let Some(writer) = store.get().table.get_mut(&conn)?.take_writer() else {
            data.close(&mut store)?;
            return FutureReader::new(&mut store, async {
                Ok::<_, wasmtime::Error>(Err(ErrorCode::InternalError(
                    "send called twice, or after a failed start-tls".to_owned(),
                )))
            });
        };
        let (done_tx, done_rx) = oneshot::channel();
        data.pipe(&mut store, SocketWriter::new(writer, done_tx))?;
        FutureReader::new(&mut store, done_rx)
    }

    fn receive(
        mut store: Access<T, Self>,
        conn: Resource<Connection>,
    ) -> wasmtime::Result<(StreamReader<u8>, FutureReader<Result<(), ErrorCode>>)> {
        crate::crossings::count(crate::crossings::Crossing::HostCallSync);
        let Some(reader) = store.get().table.get_mut(&conn)?.take_reader() else {
            let empty = StreamReader::new(&mut store, std::iter::empty())?;
            let failed = FutureReader::new(&mut store, async {
                Ok::<_, wasmtime::Error>(Err(ErrorCode::InternalError(
                    "receive called twice, or after a failed start-tls".to_owned(),
                )))
            })?;
            return Ok((empty, failed));
        };
        let (done_tx, done_rx) = oneshot::channel();
        Ok((
            StreamReader::new(&mut store, SocketReader::new(reader, done_tx))?,
            FutureReader::new(&mut store, done_rx)?,
        ))
    }
}

/// Takes the unsplit socket out of its resource for a handshake read or write (`None`
/// once `send`/`receive` split it). While it is out, a concurrent call finds `Gone`.
fn take_whole<T: Send>(
    accessor: &Accessor<T, Net>,
    conn: &Resource<Connection>,
) -> wasmtime::Result<Option<BoxedIo>> {
    accessor.with(|mut access| {
        let connection = access.get().table.get_mut(conn)?;
        Ok(
            match std::mem::replace(&mut connection.stage, Stage::Gone) {
                Stage::Whole(io) => Some(io),
                other => {
                    connection.stage = other;
                    None
                }
            },
        )
    })
}

fn put_whole<T: Send>(
    accessor: &Accessor<T, Net>,
    conn: &Resource<Connection>,
    io: BoxedIo,
) -> wasmtime::Result<()> {
    accessor.with(|mut access| {
        access.get().table.get_mut(conn)?.stage = Stage::Whole(io);
        Ok(())
    })
}

fn handshake_too_late(what: &str) -> ErrorCode {
    ErrorCode::InternalError(format!(
        "{what} called after send or receive, or during another handshake call"
    ))
}

/// Socket → guest: each read of the guest is a read of the socket straight into the
/// guest's buffer (no task, no channel, no copy on the host). Ends at EOF or on error,
/// which `done` reports.
struct SocketReader {
    reader: ReadHalf<BoxedIo>,
    done: Option<oneshot::Sender<Result<(), ErrorCode>>>,
}

impl SocketReader {
    fn new(reader: ReadHalf<BoxedIo>, done: oneshot::Sender<Result<(), ErrorCode>>) -> Self {
        Self {
            reader,
            done: Some(done),
        }
    }

    fn end(&mut self, outcome: Result<(), ErrorCode>) -> Poll<wasmtime::Result<StreamResult>> {
        if let Some(done) = self.done.take() {
            let _ = done.send(outcome);
        }
        Poll::Ready(Ok(StreamResult::Dropped))
    }
}

impl Drop for SocketReader {
    fn drop(&mut self) {
        // The guest dropped its end first: nothing went wrong.
        if let Some(done) = self.done.take() {
            let _ = done.send(Ok(()));
        }
    }
}

impl<D> StreamProducer<D> for SocketReader {
    type Item = u8;
    type Buffer = Option<u8>;

    fn poll_produce<'a>(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut store: StoreContextMut<'a, D>,
        dst: Destination<'a, Self::Item, Self::Buffer>,
        finish: bool,
    ) -> Poll<wasmtime::Result<StreamResult>> {
        crate::state::note_progress();
        crate::crossings::count(crate::crossings::Crossing::StreamPoll);
        let me = self.get_mut();
        if me.done.is_none() {
            return Poll::Ready(Ok(StreamResult::Dropped));
        }
        // A zero-length read asks whether bytes are ready: answer when they are.
        let mut probe = [0u8; 0];
        let wants_bytes = dst.remaining(&mut store) != Some(0);
        let mut direct = dst.as_direct(store, READ_CHUNK);
        let room: &mut [u8] = if wants_bytes {
            direct.remaining()
        } else {
            &mut probe
        };
        let mut buf = ReadBuf::new(room);
        match Pin::new(&mut me.reader).poll_read(cx, &mut buf) {
            Poll::Ready(Ok(())) => {
                let n = buf.filled().len();
                if n == 0 && wants_bytes {
                    return me.end(Ok(()));
                }
                direct.mark_written(n);
                Poll::Ready(Ok(StreamResult::Completed))
            }
            // A peer that closes TLS without close_notify: treat as end of stream,
            // as curl and browsers do; body framing still catches truncation.
            Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => me.end(Ok(())),
            Poll::Ready(Err(e)) => me.end(Err(terminated(&e, "reading"))),
            Poll::Pending if finish => Poll::Ready(Ok(StreamResult::Cancelled)),
            Poll::Pending => crate::crossings::suspended(),
        }
    }
}

/// Guest → socket: each write of the guest is written (and flushed: TLS records) to
/// the socket from the guest's buffer. When the guest drops its end, the socket's
/// writing side is shut down; a failed write is reported on `done`.
struct SocketWriter {
    writer: Option<WriteHalf<BoxedIo>>,
    /// Bytes were written but not yet flushed (TLS records still buffered).
    unflushed: bool,
    done: Option<oneshot::Sender<Result<(), ErrorCode>>>,
}

impl SocketWriter {
    fn new(writer: WriteHalf<BoxedIo>, done: oneshot::Sender<Result<(), ErrorCode>>) -> Self {
        Self {
            writer: Some(writer),
            unflushed: false,
            done: Some(done),
        }
    }

    fn fail(&mut self, error: &io::Error) -> Poll<wasmtime::Result<StreamResult>> {
        self.writer = None;
        if let Some(done) = self.done.take() {
            let _ = done.send(Err(terminated(error, "writing")));
        }
        Poll::Ready(Ok(StreamResult::Dropped))
    }
}

impl Drop for SocketWriter {
    fn drop(&mut self) {
        // FIN (and TLS close_notify) once the guest has no more to send. Without a
        // runtime (the store torn down with it), the socket's own close will do.
        if let Some(mut writer) = self.writer.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let done = self.done.take();
            runtime.spawn(async move {
                let outcome = writer.shutdown().await;
                if let Some(done) = done {
                    let _ = done.send(outcome.map_err(|e| terminated(&e, "writing")));
                }
            });
        }
        if let Some(done) = self.done.take() {
            let _ = done.send(Ok(()));
        }
    }
}

impl<D> StreamConsumer<D> for SocketWriter {
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
        let Some(writer) = me.writer.as_mut() else {
            return Poll::Ready(Ok(StreamResult::Dropped));
        };
        let mut source = source.as_direct(store);
        loop {
            if me.unflushed {
                match Pin::new(&mut *writer).poll_flush(cx) {
                    Poll::Ready(Ok(())) => me.unflushed = false,
                    Poll::Ready(Err(e)) => return me.fail(&e),
                    Poll::Pending if finish => return Poll::Ready(Ok(StreamResult::Cancelled)),
                    Poll::Pending => return crate::crossings::suspended(),
                }
            }
            let data = source.remaining();
            if data.is_empty() {
                return Poll::Ready(Ok(StreamResult::Completed));
            }
            match Pin::new(&mut *writer).poll_write(cx, data) {
                Poll::Ready(Ok(0)) => {
                    return me.fail(&io::Error::from(io::ErrorKind::WriteZero));
                }
                Poll::Ready(Ok(n)) => {
                    source.mark_read(n);
                    me.unflushed = true;
                }
                Poll::Ready(Err(e)) => return me.fail(&e),
                Poll::Pending if finish => return Poll::Ready(Ok(StreamResult::Cancelled)),
                Poll::Pending => return crate::crossings::suspended(),
            }
        }
    }
}

fn terminated(error: &io::Error, doing: &str) -> ErrorCode {
    tls::alert_after_handshake(error, doing).unwrap_or_else(|| {
        ErrorCode::ConnectionTerminated(format!("connection broken while {doing}: {error}"))
    })
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    /// A connected pair of loopback sockets: (ours, the peer's).
    fn pair() -> (std::net::TcpStream, std::net::TcpStream) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let ours =
            std::net::TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (peer, _) = listener.accept().expect("accept");
        (ours, peer)
    }

    /// Waits (up to 5 s) until the kernel tells `wanted` of `socket`.
    fn settles_to(socket: &std::net::TcpStream, tls: bool, wanted: IdleState) -> bool {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::time::Instant::now() < deadline {
            if idle_state(socket, tls) == wanted {
                return true;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        false
    }

    #[test]
    fn the_idle_state_tells_quiet_input_and_a_close_even_behind_unread_bytes() {
        let (ours, mut peer) = pair();
        assert_eq!(idle_state(&ours, false), IdleState::Quiet);
        peer.write_all(b"HTTP/1.1 408 Request Timeout\r\n\r\n")
            .expect("write");
        assert!(settles_to(&ours, false, IdleState::Input));
        // Under TLS, unread bytes may be a session ticket: not a sign by themselves.
        assert_eq!(idle_state(&ours, true), IdleState::Quiet);
        peer.shutdown(Shutdown::Write).expect("shutdown");
        assert!(settles_to(&ours, false, IdleState::Closed));
        assert_eq!(idle_state(&ours, true), IdleState::Closed);
    }

    #[tokio::test]
    async fn a_reset_is_a_close() {
        let (ours, peer) = pair();
        peer.set_nonblocking(true).expect("non-blocking");
        let peer = TcpStream::from_std(peer).expect("tokio");
        // Linger 0: dropping the socket sends RST.
        peer.set_zero_linger().expect("linger");
        drop(peer);
        assert!(settles_to(&ours, true, IdleState::Closed));
    }
}
