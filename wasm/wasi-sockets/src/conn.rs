//! One `net.connection` over a `wasi:sockets` TCP socket, with `wasi:tls` stacked on
//! it by `start-tls`.
//!
//! `send` and `receive` are synchronous exports, and a task spawned from one may
//! never run (nothing polls it). So every task a connection needs is spawned by the
//! async calls that come first (`connect`, `write`, `start-tls`) and waits on a
//! oneshot channel; `send` only fills that channel:
//!
//! ```text
//!  Direct: nothing written yet. send(data) hands `data` to tcp-socket.send (no copy)
//!          and the socket's result future to the waiting task, which turns its
//!          wasi:sockets error into the transport's.
//!  Piped:  bytes go into `writer` (a pipe into the socket after handshake writes, or
//!          TLS's cleartext side). send(data) hands `data` and `writer` to the
//!          waiting pump, which copies one into the other.
//! ```

use std::cell::RefCell;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use futures::channel::oneshot;
use wit_bindgen::{FutureReader, StreamReader, StreamResult, StreamWriter};

use crate::bindings::exports::roundtrip::transport::net::{
    GuestConnection, IdleState, TlsInfo, TlsPeer,
};
use crate::bindings::exports::roundtrip::transport::types::{ErrorCode, KeepAlive};
use crate::bindings::wasi::clocks::monotonic_clock;
use crate::bindings::wasi::sockets::ip_name_lookup;
use crate::bindings::wasi::sockets::types::{
    ErrorCode as SocketError, IpAddress, IpAddressFamily, IpSocketAddress, Ipv4SocketAddress,
    Ipv6SocketAddress, TcpSocket,
};
use crate::bindings::wasi::tls::client::Connector;
use crate::bindings::{wit_future, wit_stream};
use crate::errors;

type Outcome = FutureReader<Result<(), ErrorCode>>;

pub struct Connection {
    socket: RefCell<Option<TcpSocket>>,
    peer: String,
    local: String,
    state: RefCell<State>,
}

struct State {
    /// What the peer sends (the cleartext once TLS is on), and how that ends.
    incoming: Option<(StreamReader<u8>, Outcome)>,
    outgoing: Outgoing,
}

enum Outgoing {
    Direct {
        socket_result: oneshot::Sender<FutureReader<Result<(), SocketError>>>,
        result: Outcome,
    },
    Piped {
        /// Lent out while a handshake `write` runs.
        writer: Option<StreamWriter<u8>>,
        pump: oneshot::Sender<(StreamReader<u8>, StreamWriter<u8>)>,
        result: Outcome,
    },
    /// `send` was called, or the connection closed.
    Taken,
}

impl Connection {
    /// Resolves `host` and connects to each address in turn, within `timeout`
    /// (nanoseconds) if given, with TCP keep-alive so if `keep_alive` is.
    pub async fn dial(
        host: &str,
        port: u16,
        timeout: Option<u64>,
        keep_alive: Option<KeepAlive>,
    ) -> Result<Self, ErrorCode> {
        let dialing = Self::dial_any(host, port, keep_alive);
        let Some(nanos) = timeout else {
            return dialing.await;
        };
        let deadline = monotonic_clock::wait_for(nanos);
        futures::pin_mut!(dialing, deadline);
        match futures::future::select(dialing, deadline).await {
            futures::future::Either::Left((dialed, _)) => dialed,
            futures::future::Either::Right(((), _)) => Err(ErrorCode::ConnectionTimeout(format!(
                "dial tcp {host}:{port}: i/o timeout after {:?}",
                std::time::Duration::from_nanos(nanos)
            ))),
        }
    }

    async fn dial_any(
        host: &str,
        port: u16,
        keep_alive: Option<KeepAlive>,
    ) -> Result<Self, ErrorCode> {
        // An IP literal needs no lookup (nor the host's permission to look names up).
        let literal = host.trim_start_matches('[').trim_end_matches(']');
        let addresses = match literal.parse::<IpAddr>() {
            Ok(address) => vec![address],
            Err(_) => ip_name_lookup::resolve_addresses(host.to_owned())
                .await
                .map_err(|e| errors::lookup(host, e))?
                .iter()
                .map(ip)
                .collect(),
        };
        let mut last = ErrorCode::DnsError(format!("lookup {host}: no such host"));
        for address in addresses {
            let target = SocketAddr::new(address, port);
            match Self::dial_one(target, keep_alive).await {
                Ok(connection) => return Ok(connection),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    async fn dial_one(
        target: SocketAddr,
        keep_alive: Option<KeepAlive>,
    ) -> Result<Self, ErrorCode> {
        let failed = |e| errors::connect(target, e);
        let family = match target {
            SocketAddr::V4(_) => IpAddressFamily::Ipv4,
            SocketAddr::V6(_) => IpAddressFamily::Ipv6,
        };
        let socket = TcpSocket::create(family).map_err(failed)?;
        // Best effort, as Go's dialer: a runtime that cannot set them still connects.
        if let Some(keep_alive) = keep_alive
            && socket.set_keep_alive_enabled(true).is_ok()
        {
            let _ = socket.set_keep_alive_idle_time(keep_alive.idle);
            let _ = socket.set_keep_alive_interval(keep_alive.interval);
            let _ = socket.set_keep_alive_count(keep_alive.count.max(1));
        }
        socket
            .connect(socket_address(target))
            .await
            .map_err(failed)?;
        let local = socket
            .get_local_address()
            .map(|a| socket_addr(&a).to_string())
            .unwrap_or_default();
        // Both directions are set up now, in this async call (see the module comment).
        let (received, receive_result) = socket.receive();
        let incoming = Some((received, converted(receive_result, errors::receive)));
        let (socket_result, waiting) = oneshot::channel::<FutureReader<Result<(), SocketError>>>();
        let (result_writer, result) = wit_future::new::<Result<(), ErrorCode>>(|| Ok(()));
        wit_bindgen::spawn_local(async move {
            if let Ok(sent) = waiting.await {
                let outcome = sent.await.map_err(errors::send);
                let _ = result_writer.write(outcome).await;
            }
        });
        Ok(Self {
            socket: RefCell::new(Some(socket)),
            peer: target.to_string(),
            local,
            state: RefCell::new(State {
                incoming,
                outgoing: Outgoing::Direct {
                    socket_result,
                    result,
                },
            }),
        })
    }

    /// The writer into the socket for handshake bytes, turning `Direct` into
    /// `Piped`; give it back with [`Connection::put_back`].
    fn pipe(&self) -> Result<StreamWriter<u8>, ErrorCode> {
        let mut state = self.state.borrow_mut();
        match std::mem::replace(&mut state.outgoing, Outgoing::Taken) {
            Outgoing::Direct {
                socket_result,
                result,
            } => {
                let socket = self.socket.borrow();
                let socket = socket.as_ref().ok_or_else(closed)?;
                let (writer, reader) = wit_stream::new::<u8>();
                let _ = socket_result.send(socket.send(reader));
                let (pump, waiting) = oneshot::channel();
                wit_bindgen::spawn_local(pump_when_sent(waiting));
                state.outgoing = Outgoing::Piped {
                    writer: None,
                    pump,
                    result,
                };
                Ok(writer)
            }
            Outgoing::Piped {
                writer: Some(writer),
                pump,
                result,
            } => {
                state.outgoing = Outgoing::Piped {
                    writer: None,
                    pump,
                    result,
                };
                Ok(writer)
            }
            other => {
                state.outgoing = other;
                Err(used("write"))
            }
        }
    }

    fn put_back(&self, writer: StreamWriter<u8>) {
        if let Outgoing::Piped { writer: slot, .. } = &mut self.state.borrow_mut().outgoing {
            *slot = Some(writer);
        }
    }
}

/// Waits for `send`'s stream and copies it into the writer that comes with it; the
/// writer's end (FIN, or TLS close_notify) follows the stream's. A failed write
/// shows in the outcome of what the writer feeds (the socket's, or TLS's).
async fn pump_when_sent(waiting: oneshot::Receiver<(StreamReader<u8>, StreamWriter<u8>)>) {
    let Ok((mut data, mut writer)) = waiting.await else {
        return;
    };
    loop {
        let (status, chunk) = data.read(Vec::with_capacity(64 * 1024)).await;
        if !chunk.is_empty() && !writer.write_all(chunk).await.is_empty() {
            break;
        }
        if !matches!(status, StreamResult::Complete(_)) {
            break;
        }
    }
}

/// The transport's outcome future for a WASI one, converted by a task spawned now.
fn converted<E: 'static>(
    outcome: FutureReader<Result<(), E>>,
    convert: fn(E) -> ErrorCode,
) -> Outcome {
    let (writer, reader) = wit_future::new::<Result<(), ErrorCode>>(|| Ok(()));
    wit_bindgen::spawn_local(async move {
        let _ = writer.write(outcome.await.map_err(convert)).await;
    });
    reader
}

fn closed() -> ErrorCode {
    ErrorCode::ConnectionTerminated("the connection was closed".to_owned())
}

fn used(what: &str) -> ErrorCode {
    ErrorCode::InternalError(format!("{what} called after send, or after close"))
}

impl GuestConnection for Connection {
    async fn start_tls(
        &self,
        server_name: String,
        _alpn: Vec<String>,
        // wasi:tls has one set of roots, the runtime's, for origins and proxies alike.
        _peer: TlsPeer,
    ) -> Result<TlsInfo, ErrorCode> {
        let connector = Connector::new();
        let (clear_writer, clear_reader) = wit_stream::new::<u8>();
        let (ciphertext_out, tls_sent) = connector.send(clear_reader);
        // Ciphertext out: straight into the socket, or through the handshake pipe.
        let direct = matches!(self.state.borrow().outgoing, Outgoing::Direct { .. });
        if direct {
            let mut state = self.state.borrow_mut();
            if let Outgoing::Direct { socket_result, .. } =
                std::mem::replace(&mut state.outgoing, Outgoing::Taken)
            {
                let socket = self.socket.borrow();
                let socket = socket.as_ref().ok_or_else(closed)?;
                let _ = socket_result.send(socket.send(ciphertext_out));
            }
        } else {
            let pipe = self.pipe()?;
            let (pump, waiting) = oneshot::channel();
            wit_bindgen::spawn_local(pump_when_sent(waiting));
            let _ = pump.send((ciphertext_out, pipe));
        }
        // Ciphertext in, cleartext out.
        let (ciphertext_in, _) = self.state.borrow_mut().incoming.take().ok_or_else(closed)?;
        let (cleartext_in, tls_received) = connector.receive(ciphertext_in);
        Connector::connect(connector, server_name.clone())
            .await
            .map_err(|e| errors::tls(&server_name, &e))?;
        let mut state = self.state.borrow_mut();
        state.incoming = Some((cleartext_in, converted(tls_received, errors::tls_stream)));
        let (pump, waiting) = oneshot::channel();
        wit_bindgen::spawn_local(pump_when_sent(waiting));
        state.outgoing = Outgoing::Piped {
            writer: Some(clear_writer),
            pump,
            result: converted(tls_sent, errors::tls_stream),
        };
        Ok(TlsInfo {
            // wasi:tls reports neither; the handshake itself succeeded.
            version: "TLS (wasi:tls)".to_owned(),
            cipher_suite: "not reported by wasi:tls".to_owned(),
            alpn: None,
            resumed: false,
        })
    }

    fn send(&self, data: StreamReader<u8>) -> Outcome {
        let mut state = self.state.borrow_mut();
        match std::mem::replace(&mut state.outgoing, Outgoing::Taken) {
            Outgoing::Direct {
                socket_result,
                result,
            } => match self.socket.borrow().as_ref() {
                Some(socket) => {
                    let _ = socket_result.send(socket.send(data));
                    result
                }
                None => failed_already(),
            },
            Outgoing::Piped {
                writer: Some(writer),
                pump,
                result,
            } => {
                let _ = pump.send((data, writer));
                result
            }
            Outgoing::Piped { writer: None, .. } | Outgoing::Taken => failed_already(),
        }
    }

    fn receive(&self) -> (StreamReader<u8>, Outcome) {
        match self.state.borrow_mut().incoming.take() {
            Some(incoming) => incoming,
            None => {
                let (_, ended) = wit_stream::new::<u8>();
                (ended, failed_already())
            }
        }
    }

    async fn write(&self, data: Vec<u8>) -> Result<(), ErrorCode> {
        let mut writer = self.pipe()?;
        let unwritten = writer.write_all(data).await;
        self.put_back(writer);
        if unwritten.is_empty() {
            Ok(())
        } else {
            Err(ErrorCode::ConnectionTerminated(
                "connection closed while writing".to_owned(),
            ))
        }
    }

    async fn read(&self, max: u32) -> Result<Vec<u8>, ErrorCode> {
        let (mut reader, outcome) = self
            .state
            .borrow_mut()
            .incoming
            .take()
            .ok_or_else(|| used("read"))?;
        let (status, chunk) = reader
            .read(Vec::with_capacity(max.clamp(1, 64 * 1024) as usize))
            .await;
        let ended = !matches!(status, StreamResult::Complete(_)) && chunk.is_empty();
        if ended {
            outcome.await?;
            return Ok(Vec::new());
        }
        self.state.borrow_mut().incoming = Some((reader, outcome));
        Ok(chunk)
    }

    fn peer_address(&self) -> String {
        self.peer.clone()
    }

    fn local_address(&self) -> String {
        self.local.clone()
    }

    /// wasi:sockets has no peek: only a read can tell, and the transport's idle
    /// watcher does that read.
    fn idle_state(&self) -> IdleState {
        IdleState::Unknown
    }

    fn close(&self) {
        let mut state = self.state.borrow_mut();
        state.incoming = None;
        state.outgoing = Outgoing::Taken;
        self.socket.borrow_mut().take();
    }
}

/// An outcome that is already an error: `send` was called twice, or after `close`.
fn failed_already() -> Outcome {
    let (_, reader) = wit_future::new::<Result<(), ErrorCode>>(|| {
        Err(ErrorCode::InternalError(
            "send called twice, or after close".to_owned(),
        ))
    });
    reader
}

pub fn ip(address: &IpAddress) -> IpAddr {
    match *address {
        IpAddress::Ipv4((a, b, c, d)) => IpAddr::V4(Ipv4Addr::new(a, b, c, d)),
        IpAddress::Ipv6((a, b, c, d, e, f, g, h)) => {
            IpAddr::V6(Ipv6Addr::new(a, b, c, d, e, f, g, h))
        }
    }
}

fn socket_addr(address: &IpSocketAddress) -> SocketAddr {
    match address {
        IpSocketAddress::Ipv4(v4) => SocketAddr::new(ip(&IpAddress::Ipv4(v4.address)), v4.port),
        IpSocketAddress::Ipv6(v6) => SocketAddr::new(ip(&IpAddress::Ipv6(v6.address)), v6.port),
    }
}

fn socket_address(address: SocketAddr) -> IpSocketAddress {
    match address {
        SocketAddr::V4(v4) => {
            let [a, b, c, d] = v4.ip().octets();
            IpSocketAddress::Ipv4(Ipv4SocketAddress {
                port: v4.port(),
                address: (a, b, c, d),
            })
        }
        SocketAddr::V6(v6) => {
            let [a, b, c, d, e, f, g, h] = v6.ip().segments();
            IpSocketAddress::Ipv6(Ipv6SocketAddress {
                port: v6.port(),
                flow_info: v6.flowinfo(),
                address: (a, b, c, d, e, f, g, h),
                scope_id: v6.scope_id(),
            })
        }
    }
}
