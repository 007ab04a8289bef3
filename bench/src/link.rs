//! A slow link in user space: a loopback TCP relay in front of the server that holds
//! every byte for a one-way delay in each direction, so a round trip costs an RTT.
//!
//! ```text
//!  client ──► relay port ──(+1 ms)──► server
//!  client ◄──(+1 ms)────── relay ◄─── server
//! ```
//!
//! Why not `tc netem` on a veth pair: this machine's kernel is built without
//! `sch_netem`, so the delay is added here instead. A new connection also waits one
//! RTT before its first bytes go on (the SYN / SYN-ACK exchange a real link costs).
//!
//! A real link costs the machine nothing; this one is made to cost little, so that
//! what it measures is not itself. It runs on a thread of its own (nothing of the
//! bench's stalls it), and every chunk of every connection waits in ONE delay line:
//! the delay is the same for all, so the line is in order of due time, and a single
//! `timerfd` (nanosecond deadlines, woken by epoll; tokio's timers tick once a
//! millisecond, too coarse for a 1 ms hop) sends whatever is due when it fires,
//! straight into the socket.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustix::time::{
    Itimerspec, TimerfdClockId, TimerfdFlags, TimerfdTimerFlags, Timespec, timerfd_create,
    timerfd_settime,
};
use tokio::io::AsyncReadExt;
use tokio::io::unix::AsyncFd;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, mpsc, oneshot};

/// The round trip the link adds.
pub const RTT: Duration = Duration::from_millis(2);

/// A running relay on a thread of its own; it stops when dropped.
pub struct Link {
    port: u16,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Link {
    /// Relays connections on a free loopback port to `upstream`, `RTT / 2` each way.
    pub async fn start(upstream: SocketAddr) -> Result<Link, String> {
        let failed = |e: std::io::Error| format!("cannot open the delayed link: {e}");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(failed)?;
        listener.set_nonblocking(true).map_err(failed)?;
        let port = listener.local_addr().map_err(failed)?.port();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("bench-link".into())
            .spawn(move || {
                let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                    .enable_io()
                    .build()
                else {
                    return;
                };
                runtime.block_on(async move {
                    let Ok(listener) = TcpListener::from_std(listener) else {
                        return;
                    };
                    let line = Arc::new(Line::default());
                    tokio::spawn(Arc::clone(&line).run());
                    let accepting = async {
                        while let Ok((client, _)) = listener.accept().await {
                            tokio::spawn(relay(client, upstream, Arc::clone(&line)));
                        }
                    };
                    tokio::select! {
                        _ = stopped => {}
                        () = accepting => {}
                    }
                });
            })
            .map_err(failed)?;
        Ok(Link {
            port,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn relay(client: TcpStream, upstream: SocketAddr, line: Arc<Line>) {
    // The handshake's round trip.
    let Ok(mut timer) = Timer::new() else {
        return;
    };
    if timer.wait_until(Instant::now() + RTT).await.is_err() {
        return;
    }
    drop(timer);
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    tokio::join!(
        delayed(client_read, Direction::start(server_write), &line),
        delayed(server_read, Direction::start(client_write), &line)
    );
}

/// Reads `from` into the delay line, each chunk due one one-way delay after it was
/// read; the end of the stream goes the same way (an empty chunk).
async fn delayed(mut from: OwnedReadHalf, to: Arc<Direction>, line: &Line) {
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let n = from.read(&mut buffer).await.unwrap_or(0);
        line.push(Due {
            at: Instant::now() + RTT / 2,
            chunk: buffer[..n].to_vec(),
            to: Arc::clone(&to),
        });
        if n == 0 {
            break;
        }
    }
}

/// Every chunk on its way, in order of due time (the delay is the same for all).
#[derive(Default)]
struct Line {
    queue: Mutex<VecDeque<Due>>,
    pushed: Notify,
}

struct Due {
    at: Instant,
    /// Empty: the end of the stream.
    chunk: Vec<u8>,
    to: Arc<Direction>,
}

impl Line {
    fn push(&self, due: Due) {
        let first = match self.queue.lock() {
            Ok(mut queue) => {
                queue.push_back(due);
                queue.len() == 1
            }
            Err(_) => return,
        };
        if first {
            self.pushed.notify_one();
        }
    }

    /// Sends each chunk when it is due, whatever connection it belongs to.
    async fn run(self: Arc<Self>) {
        let Ok(mut timer) = Timer::new() else {
            return;
        };
        loop {
            let next = self.queue.lock().ok().and_then(|q| q.front().map(|d| d.at));
            match next {
                None => self.pushed.notified().await,
                Some(at) if at > Instant::now() => {
                    if timer.wait_until(at).await.is_err() {
                        return;
                    }
                }
                Some(_) => {}
            }
            let now = Instant::now();
            loop {
                let due = match self.queue.lock() {
                    Ok(mut queue) if queue.front().is_some_and(|d| d.at <= now) => {
                        queue.pop_front()
                    }
                    _ => None,
                };
                let Some(due) = due else { break };
                due.to.send(due.chunk);
            }
        }
    }
}

/// One direction's sending side: a due chunk goes straight into the socket when the
/// socket takes it whole, else (and after that, until it has caught up) to a writer
/// task that waits for room, so the direction's bytes keep their order.
struct Direction {
    socket: Arc<OwnedWriteHalf>,
    /// Chunks the writer has not written yet (the line and the writer share one
    /// thread, so no chunk overtakes them).
    backlogged: Arc<AtomicBool>,
    writer: mpsc::UnboundedSender<Vec<u8>>,
}

impl Direction {
    /// The writer drains what it was given even after the direction is gone, then
    /// lets go of the socket (its write half closes when the last holder drops it).
    fn start(socket: OwnedWriteHalf) -> Arc<Direction> {
        let (writer, mut backlog) = mpsc::unbounded_channel::<Vec<u8>>();
        let socket = Arc::new(socket);
        let backlogged = Arc::new(AtomicBool::new(false));
        let (own_socket, caught_up) = (Arc::clone(&socket), Arc::clone(&backlogged));
        tokio::spawn(async move {
            while let Some(chunk) = backlog.recv().await {
                if !write(&own_socket, &chunk).await {
                    return;
                }
                if backlog.is_empty() {
                    caught_up.store(false, Ordering::Relaxed);
                }
            }
        });
        Arc::new(Direction {
            socket,
            backlogged,
            writer,
        })
    }

    fn send(&self, chunk: Vec<u8>) {
        if !chunk.is_empty() && !self.backlogged.load(Ordering::Relaxed) {
            match self.socket.try_write(&chunk) {
                Ok(n) if n == chunk.len() => return,
                Ok(n) => return self.queue(chunk[n..].to_vec()),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                // The peer is gone: the other direction's read ends the relay.
                Err(_) => return,
            }
        }
        self.queue(chunk);
    }

    fn queue(&self, chunk: Vec<u8>) {
        self.backlogged.store(true, Ordering::Relaxed);
        let _ = self.writer.send(chunk);
    }
}

/// Writes `chunk` whole, or (empty) ends the stream; `false` once the socket is
/// done with.
async fn write(socket: &OwnedWriteHalf, chunk: &[u8]) -> bool {
    if chunk.is_empty() {
        let _ = shutdown(socket);
        return false;
    }
    let mut written = 0;
    while written < chunk.len() {
        if socket.writable().await.is_err() {
            return false;
        }
        match socket.try_write(&chunk[written..]) {
            Ok(n) => written += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => return false,
        }
    }
    true
}

/// The write side's FIN (what `AsyncWriteExt::shutdown` of the half does).
fn shutdown(socket: &OwnedWriteHalf) -> std::io::Result<()> {
    let socket = socket.as_ref();
    let fd = std::os::fd::AsFd::as_fd(socket);
    rustix::net::shutdown(fd, rustix::net::Shutdown::Write).map_err(Into::into)
}

/// A one-shot monotonic timer with nanosecond deadlines.
struct Timer {
    fd: AsyncFd<OwnedFd>,
}

impl Timer {
    fn new() -> std::io::Result<Timer> {
        let fd = timerfd_create(
            TimerfdClockId::Monotonic,
            TimerfdFlags::NONBLOCK | TimerfdFlags::CLOEXEC,
        )?;
        // SAFETY: the `OwnedFd` is moved into the `AsyncFd` and owned by it alone: it
        // stays open, and is the same descriptor, until the `AsyncFd` is dropped.
        #[allow(unsafe_code)]
        let fd = unsafe { AsyncFd::register(fd) }.map_err(std::io::Error::from)?;
        Ok(Timer { fd })
    }

    async fn wait_until(&mut self, at: Instant) -> std::io::Result<()> {
        let left = at.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(());
        }
        let zero = Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        let value = Timespec {
            tv_sec: left.as_secs() as _,
            tv_nsec: left.subsec_nanos() as _,
        };
        timerfd_settime(
            self.fd.get_ref(),
            TimerfdTimerFlags::empty(),
            &Itimerspec {
                it_interval: zero,
                it_value: value,
            },
        )?;
        loop {
            let mut ready = self.fd.readable().await?;
            // The timer's expiry count; nothing to read yet means a spurious wake-up.
            let mut expirations = [0u8; 8];
            match rustix::io::read(ready.get_inner(), &mut expirations) {
                Ok(_) => return Ok(()),
                Err(rustix::io::Errno::AGAIN) => ready.clear_ready(),
                Err(e) => return Err(e.into()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;

    use super::*;

    /// The link's delay is a lower bound: an exchange through it can never be faster
    /// than the handshake's RTT plus the exchange's RTT.
    #[tokio::test]
    async fn an_exchange_through_the_link_costs_the_handshake_and_one_round_trip() {
        let echo = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let upstream = echo.local_addr().expect("addr");
        tokio::spawn(async move {
            let (mut socket, _) = echo.accept().await.expect("accept");
            let mut buffer = [0u8; 4];
            socket.read_exact(&mut buffer).await.expect("read");
            socket.write_all(&buffer).await.expect("write");
        });
        let link = Link::start(upstream).await.expect("link");
        let started = Instant::now();
        let mut client = TcpStream::connect(("127.0.0.1", link.port()))
            .await
            .expect("connect");
        client.write_all(b"ping").await.expect("write");
        let mut answer = [0u8; 4];
        client.read_exact(&mut answer).await.expect("read");
        assert_eq!(&answer, b"ping");
        assert!(started.elapsed() >= 2 * RTT, "{:?}", started.elapsed());
        // The end of the stream is passed on too.
        assert_eq!(client.read(&mut answer).await.expect("eof"), 0);
    }

    /// Bytes keep their order and none is lost when a socket cannot take a chunk
    /// whole (the writer's backlog), on several connections at once.
    #[tokio::test]
    async fn megabytes_on_several_connections_come_back_whole_and_in_order() {
        let echo = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let upstream = echo.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((socket, _)) = echo.accept().await {
                tokio::spawn(async move {
                    let (mut read, mut write) = socket.into_split();
                    let _ = tokio::io::copy(&mut read, &mut write).await;
                });
            }
        });
        let link = Link::start(upstream).await.expect("link");
        let port = link.port();
        let exchanges: Vec<_> = (0..4u8)
            .map(|seed| {
                tokio::spawn(async move {
                    let sent: Vec<u8> = (0..4 << 20).map(|i: u32| (i % 251) as u8 ^ seed).collect();
                    let client = TcpStream::connect(("127.0.0.1", port))
                        .await
                        .expect("connect");
                    let (mut read, mut write) = client.into_split();
                    let writing = {
                        let sent = sent.clone();
                        tokio::spawn(async move {
                            write.write_all(&sent).await.expect("write");
                            write.shutdown().await.expect("shutdown");
                        })
                    };
                    let mut back = Vec::new();
                    read.read_to_end(&mut back).await.expect("read");
                    writing.await.expect("writer");
                    assert!(back == sent, "{} bytes back of {}", back.len(), sent.len());
                })
            })
            .collect();
        tokio::time::timeout(Duration::from_secs(60), async {
            for exchange in exchanges {
                exchange.await.expect("an exchange failed");
            }
        })
        .await
        .expect("the exchanges did not finish");
    }
}
