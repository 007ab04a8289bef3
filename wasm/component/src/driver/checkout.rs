//! Getting a connection: from the idle list, or by waiting in line while a dial runs.
//!
//! A request that finds nothing idle becomes a waiter of its key. The pool decides
//! whether a dial starts for it (`Action::Dial`, under `max-conns-per-host`); the dial
//! runs as a task of its own, so the request takes whichever connection is ready first
//! — its own dial, or one another request just finished with (Go's socket late binding).
//! A finished dial is offered to the pool like any free connection.

use std::rc::Rc;

use futures::channel::oneshot;

use super::bindings::roundtrip::transport::net;
use super::bindings::roundtrip::transport::observe::{
    CloseReason, EventKind, GotConn, ProxyConnect, TlsSummary,
};
use super::bindings::roundtrip::transport::types::{ErrorCode, HttpVersion, KeepAlive, Protocols};
use super::clock;
use super::conn::Conn;
use super::errors::message;
use super::h1::active::Active;
use super::h2::{Pick, StreamLease};
use super::transport::{Handed, Shared, Waiter};
use super::tunnel;
use crate::core::pool::{Checkout, Source, Ticket, Wait};
use crate::core::proxy::Route;
use crate::core::request::{Scheme, Target};

/// ALPN protocols offered in the TLS handshake: HTTP/1.1 only, or HTTP/2 first (Go's
/// `ForceAttemptHTTP2`).
fn alpn(protocols: Protocols) -> Vec<String> {
    let offered: &[&str] = match protocols {
        Protocols::Http1 => &["http/1.1"],
        Protocols::Http2 | Protocols::Http2PriorKnowledge => &["h2", "http/1.1"],
    };
    offered.iter().map(|p| (*p).to_owned()).collect()
}

/// What a request gets to carry it.
pub enum Acquired {
    /// A connection of its own (HTTP/1.1).
    H1(Active),
    /// A stream of a shared HTTP/2 connection.
    H2(StreamLease),
}

/// Gets a connection for request `req` to `target`; a dial made for it gives up after
/// `connect_timeout` (the transport's `dial-timeout` when `None`).
pub async fn acquire(
    shared: &Rc<Shared>,
    req: u64,
    target: &Target,
    connect_timeout: Option<u64>,
) -> Result<Acquired, ErrorCode> {
    let key = &target.key;
    loop {
        // A stream of the key's HTTP/2 connection, when one has room.
        let pick = shared.h2.borrow().pick(key);
        let known = shared.h2.borrow().is_known(key);
        let wait = match pick {
            Pick::Use(conn) => return Ok(Acquired::H2(StreamLease::new(shared, conn, req))),
            // Every stream taken: wait for one (Go `StrictMaxConcurrentStreams`), or
            // dial another connection below.
            Pick::Full if shared.settings.strict_max_concurrent_streams => {
                Some("max_concurrent_streams")
            }
            // Known to speak HTTP/2 and its connection is being dialled: wait for it
            // rather than dial a second one.
            Pick::None if known && shared.state.borrow().pool.is_dialing(key) => Some("http2_dial"),
            _ => None,
        };
        if let Some(reason) = wait {
            let changed = shared.h2.borrow_mut().watch(key);
            shared.emit(
                None,
                Some(req),
                Some(key),
                EventKind::WaitForConn(reason.to_owned()),
            );
            let _ = changed.await;
            continue;
        }
        match acquire_conn(shared, req, target, connect_timeout).await? {
            Handed::Conn(conn) => {
                return Ok(Acquired::H1(Active::new(
                    Rc::clone(shared),
                    key.clone(),
                    req,
                    conn,
                )));
            }
            // The dial turned out HTTP/2 (or another one did): take a stream of it.
            Handed::Shared => continue,
        }
    }
}

/// An HTTP/1.1 connection (idle, or by waiting in line), or word that the key's dial
/// turned out HTTP/2.
async fn acquire_conn(
    shared: &Rc<Shared>,
    req: u64,
    target: &Target,
    connect_timeout: Option<u64>,
) -> Result<Handed, ErrorCode> {
    let key = &target.key;
    let now = shared.now();
    // curl's check before reuse: one the server closed since it was pooled (before
    // its watcher read it) is closed, and the next idle one taken, or a dial.
    let checkout = shared
        .state
        .borrow_mut()
        .pool
        .checkout_live(key, now, |conn| !conn.peer_gone());
    let (ticket, wait) = match checkout {
        Checkout::Idle(reused) => {
            // Input on it is the request's from now on, not a sign of a dead connection.
            reused.conn.set_idle(false);
            // Closes whatever timed out, or was found closed, before the checkout.
            shared.run_actions();
            shared.emit(
                Some(reused.id),
                Some(req),
                Some(key),
                EventKind::GotConn(GotConn {
                    reused: true,
                    was_idle: true,
                    idle_us: reused.idle_for,
                    proto: HttpVersion::Http11,
                    stream: None,
                }),
            );
            return Ok(Handed::Conn(reused.conn));
        }
        Checkout::Waiting { ticket, wait } => (ticket, wait),
    };
    // The waiter is registered before the pool's actions run: its dial needs it.
    let (reply, handed) = oneshot::channel();
    shared.state.borrow_mut().waiters.insert(
        ticket,
        Waiter {
            req,
            target: target.clone(),
            connect_timeout,
            reply,
        },
    );
    let guard = WaitGuard {
        shared: Rc::clone(shared),
        key: key.clone(),
        ticket,
        done: false,
    };
    let reason = match wait {
        Wait::Dial => None,
        Wait::SpareDial => Some("dial_in_progress"),
        Wait::AtCap => Some("max_conns_per_host"),
    };
    if let Some(reason) = reason {
        shared.emit(
            None,
            Some(req),
            Some(key),
            EventKind::WaitForConn(reason.to_owned()),
        );
    }
    shared.run_actions();
    let handed = handed.await.unwrap_or_else(|_| {
        Err(ErrorCode::InternalError(
            "the pool dropped a waiting request".to_owned(),
        ))
    });
    guard.done();
    let conn = match handed? {
        Handed::Conn(conn) => conn,
        Handed::Shared => return Ok(Handed::Shared),
    };
    conn.set_idle(false);
    shared.emit(
        Some(conn.id),
        Some(req),
        Some(key),
        EventKind::GotConn(GotConn {
            reused: conn.served > 0,
            was_idle: false,
            idle_us: 0,
            proto: HttpVersion::Http11,
            stream: None,
        }),
    );
    Ok(Handed::Conn(conn))
}

/// Takes a waiting request out of line if it is dropped (cancelled) before it is served.
struct WaitGuard {
    shared: Rc<Shared>,
    key: String,
    ticket: Ticket,
    done: bool,
}

impl WaitGuard {
    fn done(mut self) {
        self.done = true;
    }
}

impl Drop for WaitGuard {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        self.shared.state.borrow_mut().waiters.remove(&self.ticket);
        self.shared
            .state
            .borrow_mut()
            .pool
            .cancel(&self.key, self.ticket);
        self.shared.run_actions();
    }
}

/// Starts the dial the pool asked for on behalf of waiter `ticket`.
pub fn start_dial(shared: &Rc<Shared>, key: String, ticket: Ticket) {
    let waiter = shared
        .state
        .borrow()
        .waiters
        .get(&ticket)
        .map(|w| (w.req, w.target.clone(), w.connect_timeout));
    let Some((req, target, connect_timeout)) = waiter else {
        // The waiter left before its dial could start: nothing to dial for.
        shared.state.borrow_mut().pool.abandoned_dial(&key);
        shared.run_actions();
        return;
    };
    let shared = Rc::clone(shared);
    super::tasks::spawn(async move {
        let limit = connect_timeout.or(shared.settings.dial_timeout);
        match dial(&shared, req, &target, limit).await {
            Ok((conn, false)) => shared.offer(conn, req, &key, Source::Dial),
            Ok((conn, true)) => super::h2::start(shared, conn, req, key, ticket).await,
            Err(code) => shared.dial_failed(&key, ticket, code),
        }
    });
}

/// Opens a connection: to the target, or to its proxy and through the tunnel; then
/// TLS to the target for `https`.
async fn dial(
    shared: &Rc<Shared>,
    req: u64,
    target: &Target,
    dial_timeout: Option<u64>,
) -> Result<(Conn, bool), ErrorCode> {
    let key = &target.key;
    let id = shared.next_conn_id();
    let emit = |kind| shared.emit(Some(id), Some(req), Some(key), kind);
    let (host, port) = match target.route.proxy() {
        Some(proxy) => (&proxy.host, proxy.port),
        None => (&target.host, target.port),
    };
    emit(EventKind::DialStart(host_port(host, port)));
    let socket = match connect(&emit, host, port, dial_timeout, shared.settings.keep_alive).await {
        Ok(socket) => socket,
        Err(code) => {
            let code = match target.route.proxy() {
                Some(proxy) => via_proxy(code, &proxy.display),
                None => code,
            };
            emit(EventKind::DialDone(Err(message(&code).to_owned())));
            return Err(code);
        }
    };
    emit(EventKind::DialDone(Ok(socket.peer_address())));
    let fail = |code: ErrorCode, socket: net::Connection| {
        emit(EventKind::Close(CloseReason::Error));
        socket.close();
        Err(code)
    };
    if let Route::Tunnel(proxy) | Route::Socks(proxy) = &target.route {
        let opened = tunnel::open(&shared.settings, &socket, target).await;
        emit(EventKind::ProxyConnect(ProxyConnect {
            proxy: proxy.display.clone(),
            target: target.host_port(),
            error: opened.as_ref().err().map(|code| message(code).to_owned()),
        }));
        if let Err(code) = opened {
            return fail(code, socket);
        }
    }
    // HTTP/2 by prior knowledge: plain `http://` reached directly or through SOCKS
    // (an HTTP proxy speaks HTTP/1.1 to us).
    let mut h2 = target.scheme == Scheme::Http
        && shared.settings.protocols == Protocols::Http2PriorKnowledge
        && !matches!(target.route, Route::Forward(_));
    if target.scheme == Scheme::Https {
        emit(EventKind::TlsStart);
        let handshake = clock::within(
            shared.settings.tls_handshake_timeout,
            socket.start_tls(target.host.clone(), alpn(shared.settings.protocols)),
        )
        .await
        .unwrap_or_else(|| {
            Err(ErrorCode::TlsProtocolError(
                "TLS handshake timeout".to_owned(),
            ))
        });
        match handshake {
            Ok(info) => {
                h2 = info.alpn.as_deref() == Some("h2");
                emit(EventKind::TlsDone(Ok(TlsSummary {
                    version: info.version,
                    cipher_suite: info.cipher_suite,
                    alpn: info.alpn,
                    resumed: info.resumed,
                })));
            }
            Err(code) => {
                emit(EventKind::TlsDone(Err(message(&code).to_owned())));
                return fail(code, socket);
            }
        }
    }
    Ok((Conn::open(id, socket, shared.idle_watch(key)), h2))
}

/// `host:port`, IPv6 bracketed.
/// The TCP part of a dial, as Go's dialer does it: `host`'s lookup (shown as
/// `dns_start`/`dns_done`; none for an IP literal), then each address in turn, all
/// within `limit`.
async fn connect(
    emit: &dyn Fn(EventKind),
    host: &str,
    port: u16,
    limit: Option<u64>,
    keep_alive: Option<KeepAlive>,
) -> Result<net::Connection, ErrorCode> {
    let deadline = limit.map(|ns| clock::now_ns().saturating_add(ns));
    let timed_out = |what: String| {
        ErrorCode::ConnectionTimeout(format!(
            "{what}: i/o timeout after {}",
            clock::display(limit.unwrap_or_default())
        ))
    };
    let addresses = if host.parse::<std::net::IpAddr>().is_ok() {
        vec![host.to_owned()]
    } else {
        emit(EventKind::DnsStart(host.to_owned()));
        let looked_up = clock::within(limit, net::resolve(host.to_owned()))
            .await
            .unwrap_or_else(|| Err(timed_out(format!("dial tcp: lookup {host}"))));
        emit(EventKind::DnsDone(
            looked_up.clone().map_err(|code| message(&code).to_owned()),
        ));
        looked_up?
    };
    let mut last = ErrorCode::DnsError(format!("lookup {host}: no such host"));
    for address in addresses {
        let left = match deadline {
            Some(deadline) => match deadline.checked_sub(clock::now_ns()) {
                Some(left) if left > 0 => Some(left),
                _ => return Err(timed_out(format!("dial tcp {}", host_port(host, port)))),
            },
            None => None,
        };
        match net::connect_address(host.to_owned(), address, port, left, keep_alive).await {
            Ok(socket) => return Ok(socket),
            Err(code) => last = code,
        }
    }
    Err(last)
}

fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// A failed dial of a proxy says so, as Go's `proxyconnect tcp:` does.
fn via_proxy(code: ErrorCode, proxy: &str) -> ErrorCode {
    let why = format!("proxyconnect {proxy}: {}", message(&code));
    match code {
        ErrorCode::DnsError(_) => ErrorCode::DnsError(why),
        ErrorCode::ConnectionRefused(_) => ErrorCode::ConnectionRefused(why),
        ErrorCode::ConnectionTimeout(_) => ErrorCode::ConnectionTimeout(why),
        ErrorCode::DestinationDenied(_) => ErrorCode::DestinationDenied(why),
        other => other,
    }
}
