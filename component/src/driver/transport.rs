//! The exported `transport` resource: shared state, pool access and event emission.

use std::cell::RefCell;
use std::rc::Rc;

use super::bindings::exports::roundtrip::transport::round_tripper::GuestTransport;
use super::bindings::roundtrip::transport::observe::{self, CloseReason, Event, EventKind};
use super::bindings::roundtrip::transport::types::{
    Config, ErrorCode, KeyStats, PoolStats, Request, Response,
};
use super::clock;
use super::conn::Conn;
use crate::core::Micros;
use crate::core::pool::{Evicted, Pool, PoolConfig, Release};

/// Knobs the driver reads, durations in nanoseconds.
pub struct Settings {
    pub dial_timeout: Option<u64>,
    pub tls_handshake_timeout: Option<u64>,
    pub response_header_timeout: Option<u64>,
    pub disable_keep_alives: bool,
    pub max_response_header_bytes: usize,
    pub user_agent: String,
}

pub struct State {
    pub pool: Pool<Conn>,
    next_conn: u64,
    next_req: u64,
    idle_timer_running: bool,
    shut_down: bool,
}

/// What every task of one transport shares.
pub struct Shared {
    pub settings: Settings,
    pub state: RefCell<State>,
    start_ns: u64,
}

impl Shared {
    /// Microseconds since the transport was created.
    pub fn now(&self) -> Micros {
        clock::now_ns().saturating_sub(self.start_ns) / 1_000
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

    pub fn emit(&self, conn: Option<u64>, req: Option<u64>, key: Option<&str>, kind: EventKind) {
        observe::emit(&Event {
            ts_us: self.now(),
            conn,
            req,
            key: key.map(str::to_owned),
            kind,
        });
    }

    /// Closes a connection the pool no longer counts, saying why.
    pub fn close(&self, conn: Conn, req: Option<u64>, key: &str, reason: CloseReason) {
        self.emit(Some(conn.id), req, Some(key), EventKind::Close(reason));
        conn.close();
    }

    /// Closes an active connection instead of offering it back.
    pub fn close_active(&self, conn: Conn, req: Option<u64>, key: &str, reason: CloseReason) {
        self.state.borrow_mut().pool.release_active(key);
        self.close(conn, req, key, reason);
    }

    /// Closes whatever the pool let go of.
    pub fn close_evicted(&self, evicted: Vec<Evicted<Conn>>) {
        for e in evicted {
            self.close(e.conn, None, &e.key, close_reason(e.reason));
        }
    }

    /// Offers a connection whose response body reached EOF back to the pool.
    pub fn put_idle(self: &Rc<Self>, conn: Conn, req: u64, key: &str) {
        let now = self.now();
        let id = conn.id;
        let offered = {
            let mut state = self.state.borrow_mut();
            if state.shut_down {
                state.pool.release_active(key);
                Err(conn)
            } else {
                Ok(state.pool.put_idle(key, id, conn, now))
            }
        };
        match offered {
            Err(conn) => self.close(conn, Some(req), key, CloseReason::TransportShutdown),
            Ok(Ok(evicted)) => {
                self.emit(Some(id), Some(req), Some(key), EventKind::PutIdle(None));
                self.close_evicted(evicted);
                self.ensure_idle_timer();
            }
            Ok(Err(refused)) => {
                let reason = close_reason(refused.reason);
                self.emit(
                    Some(id),
                    Some(req),
                    Some(key),
                    EventKind::PutIdle(Some(reason)),
                );
                self.close(refused.conn, Some(req), key, reason);
            }
        }
    }

    /// Takes an idle connection for `key`, closing any that timed out first.
    pub fn take_idle(&self, key: &str) -> Option<(Conn, Micros)> {
        let now = self.now();
        let (expired, reused) = {
            let mut state = self.state.borrow_mut();
            let expired = state.pool.expire(now);
            (expired, state.pool.take_idle(key, now))
        };
        self.close_evicted(expired);
        reused.map(|r| (r.conn, r.idle_for))
    }

    /// One timer task per transport closes idle connections as they time out. All idle
    /// connections share one timeout, so a later put never needs an earlier wake-up.
    fn ensure_idle_timer(self: &Rc<Self>) {
        {
            let mut state = self.state.borrow_mut();
            if state.idle_timer_running || state.pool.next_deadline().is_none() {
                return;
            }
            state.idle_timer_running = true;
        }
        let shared = Rc::clone(self);
        wit_bindgen::spawn_local(async move {
            loop {
                let deadline = shared.state.borrow().pool.next_deadline();
                let Some(deadline) = deadline else {
                    shared.state.borrow_mut().idle_timer_running = false;
                    return;
                };
                clock::sleep_until(shared.start_ns + deadline * 1_000).await;
                let expired = shared.state.borrow_mut().pool.expire(shared.now());
                shared.close_evicted(expired);
            }
        });
    }
}

pub fn close_reason(release: Release) -> CloseReason {
    match release {
        Release::IdleTimeout => CloseReason::IdleTimeout,
        Release::MaxIdle => CloseReason::MaxIdle,
        Release::MaxIdlePerKey => CloseReason::MaxIdlePerHost,
        Release::CloseIdleConnections => CloseReason::CloseIdleConnections,
    }
}

/// The exported resource.
pub struct Transport {
    shared: Rc<Shared>,
}

impl GuestTransport for Transport {
    fn new(config: Config) -> Self {
        let micros = |ns: Option<u64>| ns.map(|n| n / 1_000);
        let pool = Pool::new(PoolConfig {
            max_idle: config.max_idle_conns as usize,
            max_idle_per_key: config.max_idle_conns_per_host as usize,
            idle_timeout: micros(config.idle_conn_timeout).filter(|t| *t > 0),
        });
        let settings = Settings {
            dial_timeout: config.dial_timeout,
            tls_handshake_timeout: config.tls_handshake_timeout,
            response_header_timeout: config.response_header_timeout,
            disable_keep_alives: config.disable_keep_alives,
            max_response_header_bytes: usize::try_from(config.max_response_header_bytes)
                .unwrap_or(usize::MAX),
            user_agent: config.user_agent,
        };
        Self {
            shared: Rc::new(Shared {
                settings,
                state: RefCell::new(State {
                    pool,
                    next_conn: 0,
                    next_req: 0,
                    idle_timer_running: false,
                    shut_down: false,
                }),
                start_ns: clock::now_ns(),
            }),
        }
    }

    async fn round_trip(&self, req: Request) -> Result<Response, ErrorCode> {
        super::exchange::round_trip(Rc::clone(&self.shared), req).await
    }

    fn close_idle_connections(&self) {
        let drained = self.shared.state.borrow_mut().pool.drain_idle();
        self.shared.close_evicted(drained);
    }

    fn stats(&self) -> PoolStats {
        let state = self.shared.state.borrow();
        let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        PoolStats {
            keys: state
                .pool
                .counts()
                .into_iter()
                .map(|(key, c)| KeyStats {
                    key,
                    idle: count(c.idle),
                    active: count(c.active),
                    dialing: count(c.dialing),
                })
                .collect(),
            dials: state.pool.dials(),
            reuses: state.pool.reuses(),
        }
    }
}

impl Drop for Transport {
    fn drop(&mut self) {
        let drained = {
            let mut state = self.shared.state.borrow_mut();
            state.shut_down = true;
            state.pool.drain_idle()
        };
        for e in drained {
            self.shared
                .close(e.conn, None, &e.key, CloseReason::TransportShutdown);
        }
    }
}
