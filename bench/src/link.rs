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
//! tokio's timers tick once a millisecond, too coarse for a 1 ms hop, so each
//! direction waits on a `timerfd` of its own (nanosecond deadlines, woken by epoll).

use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use rustix::time::{
    Itimerspec, TimerfdClockId, TimerfdFlags, TimerfdTimerFlags, Timespec, timerfd_create,
    timerfd_settime,
};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// The round trip the link adds.
pub const RTT: Duration = Duration::from_millis(2);

/// A running relay; it stops when dropped.
pub struct Link {
    port: u16,
    accepting: tokio::task::JoinHandle<()>,
}

impl Link {
    /// Relays connections on a free loopback port to `upstream`, `RTT / 2` each way.
    pub async fn start(upstream: SocketAddr) -> Result<Link, String> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| format!("cannot open the delayed link: {e}"))?;
        let port = listener.local_addr().map_err(|e| e.to_string())?.port();
        let accepting = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(relay(client, upstream));
            }
        });
        Ok(Link { port, accepting })
    }

    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

async fn relay(client: TcpStream, upstream: SocketAddr) {
    let Ok(mut timer) = Timer::new() else {
        return;
    };
    // The handshake's round trip.
    if timer.wait_until(Instant::now() + RTT).await.is_err() {
        return;
    }
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    tokio::join!(
        delayed_copy(client_read, server_write),
        delayed_copy(server_read, client_write)
    );
}

/// Copies `from` to `to`, each chunk sent one one-way delay after it was read; the
/// end of the stream is passed on the same way.
async fn delayed_copy(mut from: OwnedReadHalf, mut to: OwnedWriteHalf) {
    let (queue, mut due) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let reading = async move {
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            let n = from.read(&mut buffer).await.unwrap_or(0);
            // An empty chunk carries the end of the stream.
            let chunk = buffer[..n].to_vec();
            if queue.send((Instant::now() + RTT / 2, chunk)).is_err() || n == 0 {
                break;
            }
        }
    };
    let writing = async move {
        let Ok(mut timer) = Timer::new() else {
            return;
        };
        while let Some((at, chunk)) = due.recv().await {
            if timer.wait_until(at).await.is_err()
                || chunk.is_empty()
                || to.write_all(&chunk).await.is_err()
            {
                break;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reading, writing);
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
}
