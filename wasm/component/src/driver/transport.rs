//! The exported `transport` resource: shared state, the pool's action loop and event
//! emission.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use futures::channel::oneshot;

use super::bindings::exports::roundtrip::transport::round_tripper::GuestTransport;
use super::bindings::roundtrip::transport::observe::{self, CloseReason, Event, EventKind};
use super::bindings::roundtrip::transport::types::{
    Config, ErrorCode, KeepAlive, KeyStats, PoolStats, Protocols, Request, Response,
};
use super::clock;
use super::conn::{Conn, IdleInput, IdleWatch};
use super::errors::to_code;
use super::h2::H2Pool;
use crate::core::Micros;
use crate::core::decode::Fields;
use crate::core::pool::{Action, Pool, PoolConfig, Release, Source, Ticket};
use crate::core::proxy::Proxies;
use crate::core::request::Target;

/// Knobs the driver reads, durations in nanoseconds.
pub struct Settings {
    pub dial_timeout: Option<u64>,
    pub tls_handshake_timeout: Option<u64>,
    pub response_header_timeout: Option<u64>,
    /// `None`: send a body at once even with `Expect: 100-continue`.
    pub expect_continue_timeout: Option<u64>,
    pub disable_keep_alives: bool,
    /// Close, not drain, an HTTP/1.1 connection whose body was dropped early.
    pub disable_drain_on_close: bool,
    /// TCP keep-alive for every connection dialled.
    pub keep_alive: Option<KeepAlive>,
    /// Happy Eyeballs' delay between attempts; `None`: one after another.
    pub fallback_delay: Option<u64>,
    pub disable_compression: bool,
    pub max_response_header_bytes: usize,
    pub user_agent: String,
    pub proxies: Proxies,
    pub proxy_connect_timeout: Option<u64>,
    /// Headers sent with every `CONNECT`; a block that breaks the `fields` rules fails
    /// each request that would send it, with the cause.
    pub proxy_connect_headers: Result<Fields, ErrorCode>,
    /// Whether the host wants events (`config.emit-events`).
    pub emit_events: bool,
    pub protocols: Protocols,
    pub strict_max_concurrent_streams: bool,
    pub read_idle_timeout: Option<u64>,
    pub ping_timeout: Option<u64>,
    pub write_byte_timeout: Option<u64>,
    /// HTTP/2 limits announced, Go's defaults put in for values out of range.
    pub http2: super::h2::Limits,
}

/// What a waiting request is given.
pub enum Handed {
    /// A connection of its own (HTTP/1.1).
    Conn(Conn),
    /// The key now has an HTTP/2 connection: take a stream of it.
    Shared,
}

/// A request waiting for a connection: where to dial for it, and where to send the
/// connection (or the error of the dial made for it).
pub struct Waiter {
    pub req: u64,
    pub target: Target,
    /// The request's own dial limit (`options.connect-timeout`), if it has one.
    pub connect_timeout: Option<u64>,
    pub reply: oneshot::Sender<Result<Handed, ErrorCode>>,
}

pub struct State {
    pub pool: Pool<Conn>,
    pub waiters: HashMap<Ticket, Waiter>,
    next_conn: u64,
    next_req: u64,
    idle_timer_running: bool,
    shut_down: bool,
}

/// What every task of one transport shares.
pub struct Shared {
    pub settings: Settings,
    pub state: RefCell<State>,
    /// Connections whose response body went out whole with its head, held (as Go
    /// holds one until its body is read) until the host says the body was taken or
    /// dropped (`release`), by connection id.
    pub held: RefCell<HashMap<u64, Held>>,
    /// The HTTP/2 connections, shared by their key's requests.
    pub h2: RefCell<H2Pool>,
    /// Requests the host may cancel, by their `cancel-id`: firing one ends its round
    /// trip (`exchange::round_trip`).
    pub cancels: RefCell<HashMap<u64, oneshot::Sender<()>>>,
    /// Name lookups in flight, shared by the dials that need them.
    pub lookups: super::checkout::Lookups,
    start_ns: u64,
    idle_timeout: Option<Micros>,
}

/// A connection held for a whole body, with what settling it needs.
pub struct Held {
    pub active: super::h1::active::Active,
    pub end: super::h1::body::BodyEnd,
    pub len: u64,
}

/// The connection an `offer` concerns, so its actions carry the request's id.
#[derive(Clone, Copy)]
struct Offered {
    id: u64,
    req: u64,
    from: Source,
}

impl Shared {
    /// Microseconds since the transport was created.
    pub fn now(&self) -> Micros {
        clock::now_ns().saturating_sub(self.start_ns) / 1_000
    }

    /// The monotonic clock's reading when the transport was created, nanoseconds.
    pub fn start_ns(&self) -> u64 {
        self.start_ns
    }

    /// `idle-conn-timeout` in microseconds (`None`: idle connections stay).
    pub fn idle_timeout(&self) -> Option<Micros> {
        self.idle_timeout
    }

    pub fn next_request_id(&self) -> u64 {
        let mut state = self.state.borrow_mut();
        state.next_req += 1;
        state.next_req
    }

    pub fn next_conn_id(&self) -> u64 {
        let mut state = self.state.borrow_mut();
        state.next_conn += 1;
        state.next_conn
    }

    pub fn is_shut_down(&self) -> bool {
        self.state.borrow().shut_down
    }

    pub fn emit(&self, conn: Option<u64>, req: Option<u64>, key: Option<&str>, kind: EventKind) {
        if !self.settings.emit_events {
            return;
        }
        observe::emit(&Event {
            ts_us: self.now(),
            conn,
            req,
            key: key.map(str::to_owned),
            kind,
        });
    }

    /// A dial made for waiter `ticket` of `key` failed with `code`: the waiter, if it
    /// still waits for this dial, gets the error.
    pub fn dial_failed(self: &Rc<Self>, key: &str, ticket: Ticket, code: ErrorCode) {
        let waited = self.state.borrow_mut().pool.dial_failed(key, ticket);
        let waiter = if waited {
            self.state.borrow_mut().waiters.remove(&ticket)
        } else {
            None
        };
        if let Some(waiter) = waiter {
            let _ = waiter.reply.send(Err(code));
        }
        self.run_actions();
    }

    /// Closes a connection the pool no longer counts, saying why.
    pub fn close(&self, conn: Conn, req: Option<u64>, key: &str, reason: CloseReason) {
        self.emit(Some(conn.id), req, Some(key), EventKind::Close(reason));
        conn.close();
    }

    /// Closes an active connection instead of offering it back.
    pub fn close_active(
        self: &Rc<Self>,
        conn: Conn,
        req: Option<u64>,
        key: &str,
        reason: CloseReason,
    ) {
        self.state.borrow_mut().pool.closed_active(key);
        self.close(conn, req, key, reason);
        self.run_actions();
    }

    /// Offers a connection to the pool: a finished dial, or one whose response body
    /// reached its end. It goes to a waiting request, the idle list, or is closed.
    pub fn offer(self: &Rc<Self>, conn: Conn, req: u64, key: &str, from: Source) {
        let offered = Offered {
            id: conn.id,
            req,
            from,
        };
        // From now on, input on it means the server closed or misbehaves.
        conn.set_idle(true);
        if self.is_shut_down() {
            match from {
                Source::Active => self.state.borrow_mut().pool.closed_active(key),
                Source::Dial => self.state.borrow_mut().pool.abandoned_dial(key),
            }
            self.close(conn, Some(req), key, CloseReason::TransportShutdown);
            self.run_actions();
            return;
        }
        let now = self.now();
        self.state
            .borrow_mut()
            .pool
            .offer(key, conn.id, conn, from, now);
        self.drain_actions(Some(offered));
    }

    /// Lets go of connection `conn`, held for a whole body: back to the pool if the
    /// caller took the body (`read`), else closed as a body dropped early is. Unknown
    /// ids are ignored.
    pub fn release_held(&self, conn: u64, read: bool) {
        let held = self.held.borrow_mut().remove(&conn);
        if let Some(Held { active, end, len }) = held {
            if read {
                super::h1::body::settle(active, &end, len, true);
            } else {
                // Read whole already: the drain has nothing left to read (the old
                // rule closes it all the same).
                let drained = end.drain_on_close.then_some(len);
                super::h1::body::settle_dropped(active, &end, 0, drained, true);
            }
        }
    }

    /// The idle watchers' callback for input on an idle connection of `key`: the server
    /// closed it or wrote to it unasked, so it leaves the pool and is closed now. Holds
    /// the transport weakly: connections must not keep it alive.
    pub fn idle_watch(self: &Rc<Self>, key: &str) -> IdleWatch {
        let shared = Rc::downgrade(self);
        let key = key.to_owned();
        Rc::new(move |id, _input: IdleInput| {
            let Some(shared) = shared.upgrade() else {
                return false;
            };
            let removed = shared.state.borrow_mut().pool.remove_idle_conn(&key, id);
            let Some(conn) = removed else {
                return false;
            };
            shared.close(conn, None, &key, CloseReason::ServerClosed);
            shared.run_actions();
            true
        })
    }

    /// Carries out what the pool decided.
    pub fn run_actions(self: &Rc<Self>) {
        self.drain_actions(None);
    }

    fn drain_actions(self: &Rc<Self>, offered: Option<Offered>) {
        loop {
            // The borrow ends before the action runs: actions call back into the pool.
            let action = self.state.borrow_mut().pool.poll_action();
            let Some(action) = action else { break };
            self.act(action, offered);
        }
    }

    fn act(self: &Rc<Self>, action: Action<Conn>, offered: Option<Offered>) {
        let req_of = |id: u64| offered.filter(|o| o.id == id).map(|o| o.req);
        match action {
            Action::Dial { key, ticket } => super::checkout::start_dial(self, key, ticket),
            Action::Hand {
                ticket,
                key,
                id,
                conn,
                ..
            } => {
                // A connection whose body ended, handed straight on, counts as put idle.
                if let Some(o) = offered.filter(|o| o.id == id && o.from == Source::Active) {
                    self.emit(Some(id), Some(o.req), Some(&key), EventKind::PutIdle(None));
                }
                // Handed on, it is not idle: nothing is to watch it.
                conn.set_idle(false);
                let waiter = self.state.borrow_mut().waiters.remove(&ticket);
                let undelivered = match waiter {
                    Some(waiter) => waiter.reply.send(Ok(Handed::Conn(conn))).err(),
                    None => Some(Ok(Handed::Conn(conn))),
                };
                // The waiter left after the hand was decided: give the connection back.
                if let Some(Ok(Handed::Conn(conn))) = undelivered {
                    conn.set_idle(true);
                    let now = self.now();
                    self.state
                        .borrow_mut()
                        .pool
                        .offer(&key, id, conn, Source::Active, now);
                }
            }
            Action::Idled { key, id } => {
                self.emit(Some(id), req_of(id), Some(&key), EventKind::PutIdle(None));
                self.ensure_idle_timer();
            }
            Action::Refused(refused) => {
                let reason = self.close_reason(refused.reason);
                let req = req_of(refused.id);
                self.emit(
                    Some(refused.id),
                    req,
                    Some(&refused.key),
                    EventKind::PutIdle(Some(reason)),
                );
                self.close(refused.conn, req, &refused.key, reason);
            }
            Action::Close(evicted) => {
                let reason = self.close_reason(evicted.reason);
                self.close(evicted.conn, None, &evicted.key, reason);
            }
        }
    }

    fn close_reason(&self, release: Release) -> CloseReason {
        if self.is_shut_down() {
            return CloseReason::TransportShutdown;
        }
        match release {
            Release::PeerGone => CloseReason::ServerClosed,
            Release::IdleTimeout => CloseReason::IdleTimeout,
            Release::MaxIdle => CloseReason::MaxIdle,
            Release::MaxIdlePerKey => CloseReason::MaxIdlePerHost,
            Release::CloseIdleConnections => CloseReason::CloseIdleConnections,
        }
    }

    /// One timer task per transport closes idle connections as they time out. All idle
    /// connections share one timeout, so a later put never needs an earlier wake-up.
    /// The task sleeps until the deadline it was started for even if that connection
    /// is taken again meanwhile (as a sequential caller's is, at once): under steady
    /// use it is started once per idle timeout, not once per request.
    fn ensure_idle_timer(self: &Rc<Self>) {
        let first = {
            let mut state = self.state.borrow_mut();
            if state.idle_timer_running {
                return;
            }
            let Some(first) = state.pool.next_deadline() else {
                return;
            };
            state.idle_timer_running = true;
            first
        };
        let shared = Rc::clone(self);
        super::tasks::spawn(async move {
            let mut deadline = Some(first);
            while let Some(due) = deadline {
                clock::sleep_until(shared.start_ns + due * 1_000).await;
                let now = shared.now();
                shared.state.borrow_mut().pool.expire(now);
                shared.run_actions();
                deadline = shared.state.borrow().pool.next_deadline();
            }
            shared.state.borrow_mut().idle_timer_running = false;
        });
    }
}

/// The exported resource.
pub struct Transport {
    shared: Rc<Shared>,
}

impl GuestTransport for Transport {
    fn new(config: Config) -> Self {
        if config.count_crossings {
            super::tasks::count_crossings();
        }
        let micros = |ns: Option<u64>| ns.map(|n| n / 1_000);
        let idle_timeout = micros(config.idle_conn_timeout).filter(|t| *t > 0);
        let pool = Pool::new(PoolConfig {
            max_idle: config.max_idle_conns as usize,
            max_idle_per_key: config.max_idle_conns_per_host as usize,
            max_conns_per_key: config.max_conns_per_host as usize,
            idle_timeout,
        });
        let settings = Settings {
            dial_timeout: config.dial_timeout,
            tls_handshake_timeout: config.tls_handshake_timeout,
            response_header_timeout: config.response_header_timeout,
            expect_continue_timeout: config.expect_continue_timeout.filter(|t| *t > 0),
            disable_keep_alives: config.disable_keep_alives,
            disable_drain_on_close: config.disable_drain_on_close,
            keep_alive: config.keep_alive,
            fallback_delay: config.fallback_delay,
            disable_compression: config.disable_compression,
            max_response_header_bytes: usize::try_from(config.max_response_header_bytes)
                .unwrap_or(usize::MAX),
            user_agent: config.user_agent,
            proxies: Proxies::new(
                config.proxy.http_proxy.as_deref(),
                config.proxy.https_proxy.as_deref(),
                &config.proxy.no_proxy,
                config.proxy.loopback_direct,
            ),
            proxy_connect_timeout: config.proxy_connect_timeout,
            emit_events: config.emit_events,
            proxy_connect_headers: Fields::from_block(config.proxy.connect_headers)
                .map_err(to_code),
            protocols: config.protocols,
            strict_max_concurrent_streams: config.strict_max_concurrent_streams,
            read_idle_timeout: config.read_idle_timeout.filter(|t| *t > 0),
            ping_timeout: config.ping_timeout.filter(|t| *t > 0),
            write_byte_timeout: config.write_byte_timeout.filter(|t| *t > 0),
            http2: super::h2::Limits::of(&config.http2),
        };
        Self {
            shared: Rc::new(Shared {
                settings,
                state: RefCell::new(State {
                    pool,
                    waiters: HashMap::new(),
                    next_conn: 0,
                    next_req: 0,
                    idle_timer_running: false,
                    shut_down: false,
                }),
                held: RefCell::new(HashMap::new()),
                h2: RefCell::new(H2Pool::default()),
                cancels: RefCell::new(HashMap::new()),
                lookups: Default::default(),
                start_ns: clock::now_ns(),
                idle_timeout,
            }),
        }
    }

    async fn round_trip(&self, req: Request) -> Result<Response, ErrorCode> {
        super::tasks::export(super::exchange::round_trip(Rc::clone(&self.shared), req)).await
    }

    fn close_idle_connections(&self) {
        self.shared.state.borrow_mut().pool.drain_idle();
        self.shared.run_actions();
        // An HTTP/2 connection closes once its streams have ended (Go's
        // `closeIfIdle`: at once when it has none).
        let h2 = self.shared.h2.borrow().all();
        for conn in h2 {
            conn.close_when_idle(CloseReason::CloseIdleConnections);
        }
    }

    async fn release(&self, conn: u64, read: bool) {
        super::tasks::export(async { self.shared.release_held(conn, read) }).await;
    }

    fn cancel(&self, cancel_id: u64) {
        let trigger = self.shared.cancels.borrow_mut().remove(&cancel_id);
        if let Some(trigger) = trigger {
            let _ = trigger.send(());
        }
    }

    fn stats(&self) -> PoolStats {
        let state = self.shared.state.borrow();
        let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        PoolStats {
            keys: state
                .pool
                .counts()
                .into_iter()
                .map(|(key, c)| {
                    // An HTTP/2 connection with no stream counts as idle.
                    let h2_idle = self.shared.h2.borrow().idle(&key);
                    KeyStats {
                        idle: count(c.idle + h2_idle),
                        active: count(c.active.saturating_sub(h2_idle)),
                        dialing: count(c.dialing),
                        waiting: count(c.waiting),
                        key,
                    }
                })
                .collect(),
            dials: state.pool.dials(),
            reuses: state.pool.reuses(),
        }
    }
}

impl Drop for Transport {
    fn drop(&mut self) {
        // Held connections close (and let go of `shared`, which they point to).
        let held: Vec<Held> = self
            .shared
            .held
            .borrow_mut()
            .drain()
            .map(|(_, h)| h)
            .collect();
        drop(held);
        self.shared.state.borrow_mut().shut_down = true;
        self.shared.state.borrow_mut().pool.drain_idle();
        self.shared.run_actions();
        let h2 = self.shared.h2.borrow().all();
        for conn in h2 {
            conn.shut_down(&self.shared);
        }
    }
}
