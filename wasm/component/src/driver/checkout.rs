//! Getting a connection: from the idle list, or by waiting in line while a dial runs.
//!
//! A request that finds nothing idle becomes a waiter of its key. The pool decides
//! whether a dial starts for it (`Action::Dial`, under `max-conns-per-host`); the dial
//! runs as a task of its own, so the request takes whichever connection is ready first
//! — its own dial, or one another request just finished with (Go's socket late binding).
//! A finished dial is offered to the pool like any free connection.

use std::cell::RefCell;
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::rc::Rc;

use futures::channel::oneshot;
use futures::future::{Either, select};

use super::bindings::roundtrip::transport::net::{self, TlsPeer};
use super::bindings::roundtrip::transport::observe::{
    CloseReason, ConnectDone, DnsDone, EventKind, GotConn, ProxyConnect, ProxyResponse, TlsSummary,
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

/// Opens a connection: to the target, or to its proxy (TLS to an `https://` one) and
/// through the tunnel; then TLS to the target for `https`.
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
    let socket = match connect(shared, &emit, host, port, dial_timeout).await {
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
    if let Some(proxy) = target.route.proxy().filter(|p| p.tls) {
        // An `https://` proxy: TLS to it first; it speaks HTTP/1.1 to us.
        let alpn = vec!["http/1.1".to_owned()];
        if let Err(code) =
            handshake(shared, &emit, &socket, &proxy.host, alpn, TlsPeer::Proxy).await
        {
            return fail(via_proxy(code, &proxy.display), socket);
        }
    }
    if let Route::Tunnel(proxy) | Route::Socks(proxy) = &target.route {
        let mut answer = None;
        let opened = tunnel::open(&shared.settings, &socket, target, &mut answer).await;
        emit(EventKind::ProxyConnect(ProxyConnect {
            proxy: proxy.display.clone(),
            target: target.host_port(),
            error: opened.as_ref().err().map(|code| message(code).to_owned()),
            response: answer.map(|head| ProxyResponse {
                version_minor: head.version_minor,
                status: head.status,
                reason: head.reason,
                headers: head.headers.into_block(),
            }),
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
        let alpn = alpn(shared.settings.protocols);
        match handshake(shared, &emit, &socket, &target.host, alpn, TlsPeer::Origin).await {
            Ok(agreed) => h2 = agreed.as_deref() == Some("h2"),
            Err(code) => return fail(code, socket),
        }
    }
    Ok((Conn::open(id, socket, shared.idle_watch(key)), h2))
}

/// A TLS handshake on `socket` with `server` (the origin, or an `https://` proxy),
/// within `tls-handshake-timeout`, shown as `tls_start`/`tls_done`; the ALPN protocol
/// agreed.
async fn handshake(
    shared: &Shared,
    emit: &dyn Fn(EventKind),
    socket: &net::Connection,
    server: &str,
    alpn: Vec<String>,
    peer: TlsPeer,
) -> Result<Option<String>, ErrorCode> {
    emit(EventKind::TlsStart(server.to_owned()));
    let handshake = clock::within(
        shared.settings.tls_handshake_timeout,
        socket.start_tls(server.to_owned(), alpn, peer),
    )
    .await
    .unwrap_or_else(|| {
        Err(ErrorCode::TlsProtocolError(
            "TLS handshake timeout".to_owned(),
        ))
    });
    match handshake {
        Ok(info) => {
            let agreed = info.alpn.clone();
            emit(EventKind::TlsDone(Ok(TlsSummary {
                version: info.version,
                cipher_suite: info.cipher_suite,
                alpn: info.alpn,
                resumed: info.resumed,
            })));
            Ok(agreed)
        }
        Err(code) => {
            emit(EventKind::TlsDone(Err(message(&code).to_owned())));
            Err(code)
        }
    }
}

/// The TCP part of a dial, as Go's dialer does it: `host`'s lookup (shown as
/// `dns_start`/`dns_done`; none for an IP literal), then its addresses — raced, Happy
/// Eyeballs, or one after another ([`race`]) — all within `limit`.
async fn connect(
    shared: &Shared,
    emit: &dyn Fn(EventKind),
    host: &str,
    port: u16,
    limit: Option<u64>,
) -> Result<net::Connection, ErrorCode> {
    let settings = &shared.settings;
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
        let (looked_up, coalesced) = clock::within(limit, shared.lookups.resolve(host))
            .await
            .unwrap_or_else(|| (Err(timed_out(format!("dial tcp: lookup {host}"))), false));
        emit(EventKind::DnsDone(DnsDone {
            addrs: looked_up.clone().map_err(|code| message(&code).to_owned()),
            coalesced,
        }));
        looked_up?
    };
    let attempts = Attempts {
        emit,
        host,
        port,
        deadline,
        keep_alive: settings.keep_alive,
    };
    race(&attempts, interleaved(addresses), settings.fallback_delay)
        .await
        .map_err(|code| match code {
            ErrorCode::ConnectionTimeout(_) if deadline.is_some_and(|d| clock::now_ns() >= d) => {
                timed_out(format!("dial tcp {}", host_port(host, port)))
            }
            code => code,
        })
}

type Lookup = Result<Vec<String>, ErrorCode>;

/// Name lookups in flight, by name: a dial that needs a name another dial is looking
/// up waits for that answer instead of asking again (Go's resolver shares lookups:
/// `singleflight`; httptrace's `DNSDoneInfo.Coalesced`).
#[derive(Default)]
pub struct Lookups(RefCell<HashMap<String, Vec<oneshot::Sender<Lookup>>>>);

impl Lookups {
    /// `host`'s addresses (`net.resolve`), and whether they came from another dial's
    /// lookup. A lookup given up on (its dial dropped, or timed out) leaves those
    /// waiting for it to look up for themselves.
    async fn resolve(&self, host: &str) -> (Lookup, bool) {
        let waiting = match self.0.borrow_mut().entry(host.to_owned()) {
            Entry::Occupied(mut waiters) => {
                let (answer, waiting) = oneshot::channel();
                waiters.get_mut().push(answer);
                Some(waiting)
            }
            Entry::Vacant(vacant) => {
                vacant.insert(Vec::new());
                None
            }
        };
        if let Some(waiting) = waiting {
            return match waiting.await {
                Ok(answer) => (answer, true),
                Err(_) => (net::resolve(host.to_owned()).await, false),
            };
        }
        let mut leading = Leading {
            lookups: self,
            host,
            answer: None,
        };
        let answer = net::resolve(host.to_owned()).await;
        leading.answer = Some(answer.clone());
        (answer, false)
    }
}

/// The dial doing a lookup others wait for. When it goes, so does the lookup's entry:
/// its waiters get the answer, or — given up before it came — their senders dropped,
/// which sends each to look up for itself.
struct Leading<'a> {
    lookups: &'a Lookups,
    host: &'a str,
    answer: Option<Lookup>,
}

impl Drop for Leading<'_> {
    fn drop(&mut self) {
        let waiters = self.lookups.0.borrow_mut().remove(self.host);
        if let Some(answer) = &self.answer {
            for waiter in waiters.unwrap_or_default() {
                let _ = waiter.send(answer.clone());
            }
        }
    }
}

/// RFC 8305 §4: the addresses with their families taking turns, the first address's
/// family first.
fn interleaved(addresses: Vec<String>) -> Vec<String> {
    let is_v6 = |a: &String| a.contains(':');
    let Some(first) = addresses.first().map(is_v6) else {
        return addresses;
    };
    let (mut ours, mut theirs): (Vec<String>, Vec<String>) =
        addresses.into_iter().partition(|a| is_v6(a) == first);
    let mut order = Vec::with_capacity(ours.len() + theirs.len());
    ours.reverse();
    theirs.reverse();
    while let Some(next) = ours.pop() {
        order.push(next);
        if let Some(other) = theirs.pop() {
            order.push(other);
        }
    }
    theirs.reverse();
    order.extend(theirs);
    order
}

/// What each address's connect needs.
struct Attempts<'a> {
    emit: &'a dyn Fn(EventKind),
    host: &'a str,
    port: u16,
    deadline: Option<u64>,
    keep_alive: Option<KeepAlive>,
}

impl Attempts<'_> {
    /// Connects to `address` within `left` (`connect_start`; its `connect_done` is
    /// the caller's).
    fn start(
        &self,
        address: String,
        left: Option<u64>,
    ) -> impl std::future::Future<Output = (String, Result<net::Connection, ErrorCode>)> + use<>
    {
        let addr = host_port(&address, self.port);
        (self.emit)(EventKind::ConnectStart(addr.clone()));
        let connecting = net::connect_address(
            self.host.to_owned(),
            address,
            self.port,
            left,
            self.keep_alive,
        );
        async move { (addr, connecting.await) }
    }

    fn done(&self, addr: String, error: Option<String>) {
        (self.emit)(EventKind::ConnectDone(ConnectDone { addr, error }));
    }

    /// Nanoseconds left before the deadline (`None`: no deadline); `Some(0)` once past.
    fn left(&self) -> Option<u64> {
        self.deadline.map(|d| d.saturating_sub(clock::now_ns()))
    }
}

/// Tries `addresses` in order: with a `delay`, the next starts when that long has
/// passed since the last start with none connected, or at once when every attempt in
/// flight has failed (RFC 8305, Go's `dialParallel`); the first to connect wins and
/// the rest are dropped. Without, one after another, each given an equal share of
/// the time left but at least 2 s (Go's `partialDeadline`). The last error when none
/// connects.
async fn race(
    attempts: &Attempts<'_>,
    addresses: Vec<String>,
    delay: Option<u64>,
) -> Result<net::Connection, ErrorCode> {
    use futures::stream::{FuturesUnordered, StreamExt};
    // One address (an IP literal, most often): nothing to race.
    if let [address] = addresses.as_slice() {
        let (addr, connected) = attempts.start(address.clone(), attempts.left()).await;
        attempts.done(
            addr,
            connected.as_ref().err().map(|c| message(c).to_owned()),
        );
        return connected;
    }
    let mut queue = addresses.into_iter();
    let total = queue.len();
    let mut started = 0usize;
    let mut in_flight: Vec<String> = Vec::new();
    let mut pending = FuturesUnordered::new();
    let mut last = ErrorCode::DnsError(format!("lookup {}: no such host", attempts.host));
    loop {
        if pending.is_empty() {
            let Some(address) = queue.next() else {
                return Err(last);
            };
            let left = match (attempts.left(), delay) {
                (Some(0), _) => return Err(ErrorCode::ConnectionTimeout(String::new())),
                // One after another: a share of what is left.
                (Some(left), None) => {
                    let share = left / (total - started) as u64;
                    Some(share.max(left.min(2_000_000_000)))
                }
                (left, _) => left,
            };
            started += 1;
            in_flight.push(host_port(&address, attempts.port));
            pending.push(attempts.start(address, left));
            continue;
        }
        let more = delay.filter(|_| started < total);
        let next_start = async {
            match more {
                Some(delay) => clock::sleep_until(clock::now_ns().saturating_add(delay)).await,
                None => std::future::pending().await,
            }
        };
        match select(pending.next(), std::pin::pin!(next_start)).await {
            Either::Left((Some((addr, Ok(socket))), _)) => {
                in_flight.retain(|a| *a != addr);
                attempts.done(addr, None);
                for lost in in_flight {
                    attempts.done(
                        lost,
                        Some("canceled: another address connected first".to_owned()),
                    );
                }
                return Ok(socket);
            }
            Either::Left((Some((addr, Err(code))), _)) => {
                in_flight.retain(|a| *a != addr);
                attempts.done(addr, Some(message(&code).to_owned()));
                last = code;
            }
            Either::Left((None, _)) => {}
            Either::Right(((), _)) => {
                if let Some(address) = queue.next() {
                    started += 1;
                    in_flight.push(host_port(&address, attempts.port));
                    pending.push(attempts.start(address, attempts.left()));
                }
            }
        }
    }
}

/// `host:port`, IPv6 bracketed.
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
        // TLS to an `https://` proxy.
        ErrorCode::TlsCertificateUnknownIssuer(_) => ErrorCode::TlsCertificateUnknownIssuer(why),
        ErrorCode::TlsCertificateNameMismatch(_) => ErrorCode::TlsCertificateNameMismatch(why),
        ErrorCode::TlsCertificateExpired(_) => ErrorCode::TlsCertificateExpired(why),
        ErrorCode::TlsCertificateError(_) => ErrorCode::TlsCertificateError(why),
        ErrorCode::TlsAlertReceived(_) => ErrorCode::TlsAlertReceived(why),
        ErrorCode::TlsProtocolError(_) => ErrorCode::TlsProtocolError(why),
        other => other,
    }
}
