//! Prometheus metrics of a transport, kept by a [`Sink`]: what a fleet's dashboards
//! and alerts need from the pool (dials, reuses, closes by reason, how many
//! connections are idle, in use or dialing, requests waiting, request latency) and,
//! behind `roundtrip proxy`, from the apps (connections opened, requests, reuses, per
//! program).
//!
//! ```
//! use roundtrip_host::events::{Event, EventKind, Events};
//! use roundtrip_host::metrics::Metrics;
//! let metrics = Metrics::new();
//! let events = Events::new().with(metrics.clone()); // Config { events, .. }
//! events.emit(&Event {
//!     ts_us: 0,
//!     kind: EventKind::DialStart { addr: "127.0.0.1:80".into() },
//!     conn: Some(1),
//!     req: Some(1),
//!     key: Some("http://127.0.0.1:80".into()),
//!     tunnel: None,
//!     app_conn: None,
//! });
//! let text = metrics.encode(); // serve it on GET /metrics
//! assert!(text.contains(r#"roundtrip_dials_total{key="http://127.0.0.1:80"} 1"#));
//! ```
//!
//! Series (OpenMetrics text, [`Metrics::CONTENT_TYPE`]); `key` is the pool key
//! (`scheme://host:port`), `program` the app's command name (its pid is left out:
//! a short-lived process per series would grow the series without end):
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `roundtrip_requests_total` | counter | key |
//! | `roundtrip_dials_total`, `roundtrip_dial_errors_total` | counter | key |
//! | `roundtrip_reuses_total` | counter | key |
//! | `roundtrip_closes_total` | counter | key, reason (`close.reason`) |
//! | `roundtrip_connections` | gauge | key, state (`dialing`, `in_use`, `idle`) |
//! | `roundtrip_waiting_requests` | gauge | key |
//! | `roundtrip_request_duration_seconds` | histogram | key — asking for a connection to the body's end |
//! | `roundtrip_app_connections_total`, `roundtrip_app_open_connections` | counter, gauge | program |
//! | `roundtrip_app_requests_total`, `roundtrip_app_reused_requests_total` | counter | program |

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::events::{Event, EventKind, Sink};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Key {
    key: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KeyReason {
    key: String,
    reason: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KeyState {
    key: String,
    state: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Program {
    program: String,
}

/// What a connection is doing, for `roundtrip_connections{state}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Dialing,
    InUse,
    Idle,
}

impl State {
    fn label(self) -> &'static str {
        match self {
            State::Dialing => "dialing",
            State::InUse => "in_use",
            State::Idle => "idle",
        }
    }
}

/// Requests tracked for the histogram before the oldest are forgotten …
const MAX_TRACKED: usize = 10_000;
/// … those asked for longer ago than this (a request that failed before it got a
/// connection ends with no event of its own).
const FORGET_AFTER_US: u64 = 600_000_000;

type Latency = Family<Key, Histogram, fn() -> Histogram>;

/// A sink keeping Prometheus metrics; clones share them (one goes to `Events`, one
/// serves `GET /metrics`).
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    requests: Family<Key, Counter>,
    dials: Family<Key, Counter>,
    dial_errors: Family<Key, Counter>,
    reuses: Family<Key, Counter>,
    closes: Family<KeyReason, Counter>,
    connections: Family<KeyState, Gauge>,
    waiting: Family<Key, Gauge>,
    latency: Latency,
    app_connections: Family<Program, Counter>,
    app_open: Family<Program, Gauge>,
    app_requests: Family<Program, Counter>,
    app_reused: Family<Program, Counter>,
    tracked: Mutex<Tracked>,
}

/// What the gauges and the histogram need to remember between events.
#[derive(Default)]
struct Tracked {
    /// Open connections: key and state.
    conns: HashMap<u64, (String, State)>,
    /// Requests asked for and not ended: key, `ts_us` of `get_conn`, the connection.
    requests: HashMap<u64, (String, u64, Option<u64>)>,
    /// Requests waiting in line: key.
    waiting: HashMap<u64, String>,
    /// Open app connections: program, and whether one request was seen on it.
    apps: HashMap<u64, (String, bool)>,
}

impl Metrics {
    /// What `GET /metrics` answers with.
    pub const CONTENT_TYPE: &'static str =
        "application/openmetrics-text; version=1.0.0; charset=utf-8";

    pub fn new() -> Self {
        let mut registry = Registry::default();
        let mut counter = |name: &str, help: &str| {
            let family = Family::<Key, Counter>::default();
            registry.register(name, help, family.clone());
            family
        };
        let requests = counter("roundtrip_requests", "Requests that asked for a connection");
        let dials = counter("roundtrip_dials", "Connections dialed");
        let dial_errors = counter("roundtrip_dial_errors", "Dials that failed");
        let reuses = counter("roundtrip_reuses", "Requests that got a reused connection");
        let closes = Family::<KeyReason, Counter>::default();
        registry.register(
            "roundtrip_closes",
            "Connections closed, by reason",
            closes.clone(),
        );
        let connections = Family::<KeyState, Gauge>::default();
        registry.register(
            "roundtrip_connections",
            "Open connections by state (dialing, in_use, idle)",
            connections.clone(),
        );
        let waiting = Family::<Key, Gauge>::default();
        registry.register(
            "roundtrip_waiting_requests",
            "Requests waiting for a connection (MaxConnsPerHost)",
            waiting.clone(),
        );
        // 100 µs to ~6.5 s.
        let latency: Latency =
            Family::new_with_constructor(|| Histogram::new(exponential_buckets(1e-4, 2.0, 17)));
        registry.register(
            "roundtrip_request_duration_seconds",
            "From asking for a connection to the response body's end",
            latency.clone(),
        );
        let mut program_counter = |name: &str, help: &str| {
            let family = Family::<Program, Counter>::default();
            registry.register(name, help, family.clone());
            family
        };
        let app_connections = program_counter(
            "roundtrip_app_connections",
            "Connections apps opened to the proxy",
        );
        let app_requests = program_counter("roundtrip_app_requests", "Requests apps sent");
        let app_reused = program_counter(
            "roundtrip_app_reused_requests",
            "App requests sent on a connection that had carried one before",
        );
        let app_open = Family::<Program, Gauge>::default();
        registry.register(
            "roundtrip_app_open_connections",
            "Apps' connections to the proxy open now",
            app_open.clone(),
        );
        Self {
            inner: Arc::new(Inner {
                registry,
                requests,
                dials,
                dial_errors,
                reuses,
                closes,
                connections,
                waiting,
                latency,
                app_connections,
                app_open,
                app_requests,
                app_reused,
                tracked: Mutex::default(),
            }),
        }
    }

    /// The metrics now, in OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.inner.registry);
        text
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Sink for Metrics {
    fn emit(&self, event: &Event) {
        let m = &*self.inner;
        let mut tracked = m.tracked.lock().unwrap_or_else(PoisonError::into_inner);
        let t = &mut *tracked;
        let key = || Key {
            key: event.key.clone().unwrap_or_default(),
        };
        match &event.kind {
            EventKind::GetConn { .. } => {
                if let Some(req) = event.req
                    && !t.requests.contains_key(&req)
                {
                    let key = key();
                    m.requests.get_or_create(&key).inc();
                    for zero in [&m.dials, &m.dial_errors, &m.reuses] {
                        drop(zero.get_or_create(&key));
                    }
                    t.requests.insert(req, (key.key, event.ts_us, None));
                    if t.requests.len() > MAX_TRACKED {
                        // Requests that failed end with no event of their own.
                        let recent = event.ts_us.saturating_sub(FORGET_AFTER_US);
                        t.requests.retain(|_, (_, start, _)| *start >= recent);
                    }
                }
            }
            EventKind::WaitForConn { .. } => {
                if let Some(req) = event.req
                    && t.waiting.insert(req, key().key).is_none()
                {
                    m.waiting.get_or_create(&key()).inc();
                }
            }
            EventKind::DialStart { .. } => {
                m.dials.get_or_create(&key()).inc();
                if let Some(conn) = event.conn {
                    m.enter(t, conn, &key().key, Some(State::Dialing));
                }
            }
            EventKind::DialDone { error: Some(_), .. } => {
                m.dial_errors.get_or_create(&key()).inc();
                if let Some(conn) = event.conn {
                    m.enter(t, conn, &key().key, None);
                }
            }
            EventKind::GotConn { reused, .. } => {
                if let Some(waited) = event.req.and_then(|r| t.waiting.remove(&r)) {
                    m.waiting.get_or_create(&Key { key: waited }).dec();
                }
                if *reused {
                    m.reuses.get_or_create(&key()).inc();
                }
                if let Some(conn) = event.conn {
                    m.enter(t, conn, &key().key, Some(State::InUse));
                    if let Some(request) = event.req.and_then(|r| t.requests.get_mut(&r)) {
                        request.2 = Some(conn);
                    }
                }
            }
            EventKind::PutIdle { ok: true, .. } => {
                if let Some(conn) = event.conn {
                    m.enter(t, conn, &key().key, Some(State::Idle));
                }
            }
            EventKind::BodyEof { .. } | EventKind::BodyClosedEarly { .. } => {
                if let Some((key, start, _)) = event.req.and_then(|r| t.requests.remove(&r)) {
                    let seconds = event.ts_us.saturating_sub(start) as f64 / 1e6;
                    m.latency.get_or_create(&Key { key }).observe(seconds);
                }
            }
            EventKind::Close { reason } => {
                if let Some(conn) = event.conn
                    && t.conns.contains_key(&conn)
                {
                    let key = t.conns[&conn].0.clone();
                    m.closes
                        .get_or_create(&KeyReason {
                            key: key.clone(),
                            reason: reason.as_str().to_owned(),
                        })
                        .inc();
                    m.enter(t, conn, &key, None);
                    // A request still on it failed with it.
                    t.requests.retain(|_, (_, _, on)| *on != Some(conn));
                }
            }
            EventKind::TransportRestarted { .. } => {
                let open: Vec<(u64, String)> =
                    t.conns.iter().map(|(c, (k, _))| (*c, k.clone())).collect();
                for (conn, key) in open {
                    m.closes
                        .get_or_create(&KeyReason {
                            key: key.clone(),
                            reason: "transport_restarted".to_owned(),
                        })
                        .inc();
                    m.enter(t, conn, &key, None);
                }
                t.requests.clear();
            }
            EventKind::AppConnOpen { process, .. } => {
                let Some(app) = event.app_conn else { return };
                let program = Program {
                    program: program(process.as_deref()),
                };
                m.app_connections.get_or_create(&program).inc();
                m.app_open.get_or_create(&program).inc();
                // Series at 0 rather than absent, so rates and ratios read from the start.
                drop(m.app_requests.get_or_create(&program));
                drop(m.app_reused.get_or_create(&program));
                t.apps.insert(app, (program.program, false));
            }
            EventKind::AppRequest { .. } => {
                let Some((program, used)) = event.app_conn.and_then(|a| t.apps.get_mut(&a)) else {
                    return;
                };
                let program = Program {
                    program: program.clone(),
                };
                m.app_requests.get_or_create(&program).inc();
                if *used {
                    m.app_reused.get_or_create(&program).inc();
                }
                *used = true;
            }
            EventKind::AppConnClose { .. } => {
                if let Some((program, _)) = event.app_conn.and_then(|a| t.apps.remove(&a)) {
                    m.app_open.get_or_create(&Program { program }).dec();
                }
            }
            _ => {}
        }
    }
}

impl Inner {
    /// Moves connection `conn` of `key` to `state` (`None`: closed), keeping the gauges.
    fn enter(&self, t: &mut Tracked, conn: u64, key: &str, state: Option<State>) {
        let before = match state {
            Some(state) => t.conns.insert(conn, (key.to_owned(), state)),
            None => t.conns.remove(&conn),
        };
        if let Some((key, before)) = before {
            self.gauge(&key, before).dec();
        }
        if let Some(state) = state {
            self.gauge(key, state).inc();
        }
    }

    fn gauge(&self, key: &str, state: State) -> impl std::ops::Deref<Target = Gauge> + '_ {
        self.connections.get_or_create(&KeyState {
            key: key.to_owned(),
            state: state.label(),
        })
    }
}

/// The program an app ran: the file name of its command's first word.
fn program(process: Option<&str>) -> String {
    let first = process.and_then(|p| p.split(' ').next()).unwrap_or("");
    match first.rsplit('/').next() {
        Some(name) if !name.is_empty() => name.to_owned(),
        _ => "unknown".to_owned(),
    }
}
