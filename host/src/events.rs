//! Lifecycle events: the JSON Lines schema of `docs/events.md` and the sinks that
//! receive it (a file or stdout, a TCP stream to an inspector, a callback, memory,
//! `tracing`).

use std::io::{BufWriter, Write};
use std::net::TcpStream;
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::bindings::roundtrip::transport::observe as wit;

/// One lifecycle event, as one JSON object per line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Microseconds since the transport started (monotonic).
    pub ts_us: u64,
    #[serde(flatten)]
    pub kind: EventKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conn: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub req: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Tunnel id, for the `tunnel_*` events of `roundtrip proxy` (ids of their own,
    /// apart from `conn`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tunnel: Option<u64>,
    /// The app's connection to `roundtrip proxy` (`app_*` events, and the `tunnel_*`
    /// events of a `CONNECT` it sent), counting from 1 per proxy; under `watch`, a
    /// watched process's TCP connection (`socket_*` events).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_conn: Option<u64>,
}

/// The event name (`event` field) and the fields that belong to it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum EventKind {
    GetConn {
        #[serde(default)]
        method: String,
        #[serde(default)]
        url: String,
    },
    WaitForConn {
        reason: String,
    },
    DialStart {
        addr: String,
    },
    /// The dial's lookup of `host` started (not for an IP literal).
    DnsStart {
        host: String,
    },
    /// The lookup ended: `addrs`, or `error`; `coalesced` when the answer was another
    /// dial's lookup of the name, in flight at the time (Go's `DNSDoneInfo.Coalesced`).
    DnsDone {
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        addrs: Vec<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        coalesced: bool,
    },
    /// One address of the dial is tried (`addr`, `ip:port`).
    ConnectStart {
        addr: String,
    },
    /// That attempt ended: connected, or `error` (another address won: `canceled: …`).
    ConnectDone {
        addr: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    DialDone {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        addr: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// A proxy opened the tunnel to `target` (`CONNECT` or SOCKS5), or could not (`error`);
    /// its answer to `CONNECT` (Go's `OnProxyConnectResponse`).
    ProxyConnect {
        proxy: String,
        target: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        response: Option<ProxyResponse>,
    },
    /// A TLS handshake with `server` starts: the origin, or an `https://` proxy.
    TlsStart {
        #[serde(default)]
        server: String,
    },
    TlsDone {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        version: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cipher_suite: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        alpn: Option<String>,
        #[serde(default)]
        resumed: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    GotConn {
        reused: bool,
        was_idle: bool,
        idle_us: u64,
        /// The connection's protocol (files written before HTTP/2 have none: HTTP/1.1).
        #[serde(default)]
        proto: Proto,
        /// HTTP/2: the request's stream id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stream: Option<u32>,
    },
    WroteHeaders,
    WroteRequest {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    FirstByte,
    #[serde(rename = "got_1xx")]
    Got1xx {
        status: u16,
    },
    Response {
        status: u16,
    },
    BodyEof {
        bytes: u64,
    },
    /// The caller dropped the body after `bytes`; `drained` bytes more were read and
    /// thrown away; `saved`: the connection goes on (pooled after the drain, or an
    /// HTTP/2 stream reset). Recordings from before the drain have neither: closed.
    BodyClosedEarly {
        bytes: u64,
        #[serde(default, skip_serializing_if = "is_zero")]
        drained: u64,
        #[serde(default)]
        saved: bool,
    },
    PutIdle {
        ok: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<CloseReason>,
    },
    Retry {
        reason: String,
    },
    Close {
        reason: CloseReason,
    },
    /// HTTP/2: the server's `SETTINGS` (the values it set).
    H2Settings {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max_concurrent_streams: Option<u32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        initial_window: Option<u32>,
    },
    /// HTTP/2: the server sent `GOAWAY`; streams above `last_stream` were not processed.
    Goaway {
        last_stream: u32,
        code: String,
    },
    /// HTTP/2: a health-check `PING` went out (`read_idle_timeout`).
    Ping,
    /// HTTP/2: the `PING` was not answered within `ping_timeout`.
    PingTimeout,
    /// HTTP/2: a stream was reset, by the server (`by_peer`) or by the transport.
    StreamReset {
        stream: u32,
        code: String,
        by_peer: bool,
    },
    /// `roundtrip proxy` got a `CONNECT` and dials its target.
    TunnelStart {
        addr: String,
    },
    /// The tunnel's target answered (`addr`) or could not be reached (`error`).
    TunnelDone {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        addr: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// The tunnel ended; bytes relayed each way.
    TunnelClose {
        bytes_up: u64,
        bytes_down: u64,
    },
    /// Bytes relayed through a tunnel since its last `tunnel_activity` (one event per
    /// quarter second with traffic).
    TunnelActivity {
        bytes_up: u64,
        bytes_down: u64,
    },
    /// The component trapped (`reason`): its connections are closed, its requests
    /// failed, and a fresh instance took over.
    TransportRestarted {
        reason: String,
    },
    /// An app connected to `roundtrip proxy`: its address, and the local process that
    /// owns the socket when it is on this machine (from `/proc`).
    AppConnOpen {
        peer: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pid: Option<u32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        process: Option<String>,
    },
    /// One request the app sent on its connection, when its answer ended (or failed):
    /// `elapsed_us` since the proxy read its head; `bytes_out` of request body from
    /// the app, `bytes_in` of response body to it. `conn` and `req` name the upstream
    /// connection and request it became, when it got that far.
    AppRequest {
        method: String,
        url: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        status: Option<u16>,
        bytes_in: u64,
        bytes_out: u64,
        elapsed_us: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// The app's connection ended: closed by the app, by the proxy, or by an error.
    AppConnClose {
        reason: AppCloseReason,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// `roundtrip serve`: a guest instance was made (ids count from 1).
    InstanceStart {
        instance: u64,
    },
    /// `roundtrip serve`: an instance was retired (its reuse limit, idle timeout, or a
    /// trap: `error`) after `requests` incoming requests. The pool's connections are
    /// not its own: none closes with it.
    InstanceEnd {
        instance: u64,
        requests: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// `roundtrip serve`: an incoming request (`incoming` counts from 1) was handed to
    /// instance `instance`.
    IncomingStart {
        incoming: u64,
        instance: u64,
        method: String,
        path: String,
    },
    /// `roundtrip serve`: the guest answered an incoming request (`status`, its head)
    /// or failed to (`error`), `elapsed_us` after it came.
    IncomingDone {
        incoming: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        status: Option<u16>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
        elapsed_us: u64,
    },
    /// A guest's outgoing request through the hooks, when its head came (`status`,
    /// with `conn` and `req`) or it failed (`error`): the instance that sent it and the
    /// incoming request it served (absent when the instance was handling several at
    /// once).
    Outgoing {
        instance: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        incoming: Option<u64>,
        method: String,
        url: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        status: Option<u16>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
        elapsed_us: u64,
    },
    /// `watch`: a TCP connection of a watched process, from the kernel's socket table
    /// (no proxy): its two ends and the process that holds it.
    SocketOpen {
        local: String,
        peer: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pid: Option<u32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        process: Option<String>,
    },
    /// `watch`: payload bytes the socket sent and received in the `interval_us`
    /// before `ts_us` (one per sample in which bytes moved).
    SocketActivity {
        bytes_up: u64,
        bytes_down: u64,
        interval_us: u64,
    },
    /// `watch`: the socket left the watched processes (closed, or they exited); bytes
    /// each way as last sampled.
    SocketClose {
        bytes_up: u64,
        bytes_down: u64,
    },
    /// `watch`: watching process `pid` and its descendants began, in `mode`; `misses`
    /// says what that mode cannot see.
    WatchStart {
        pid: u32,
        mode: WatchMode,
        misses: String,
    },
}

/// How `watch` learns of connections (`watch_start.mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WatchMode {
    /// The kernel's trace events: every connection, as it happens.
    Trace,
    /// The kernel's socket table, every 50 ms.
    Sample,
}

impl WatchMode {
    pub fn as_str(self) -> &'static str {
        match self {
            WatchMode::Trace => "trace",
            WatchMode::Sample => "sample",
        }
    }
}

/// Serde: a zero count is left out.
fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Who ended an app's connection to the proxy (`app_conn_close.reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AppCloseReason {
    /// The app closed it (or asked to, with `Connection: close`).
    App,
    /// The proxy did: the app sent something that does not parse (answered `400`).
    Proxy,
    /// Reading from or writing to the app failed (e.g. a reset).
    Error,
}

impl AppCloseReason {
    pub fn as_str(self) -> &'static str {
        match self {
            AppCloseReason::App => "app",
            AppCloseReason::Proxy => "proxy",
            AppCloseReason::Error => "error",
        }
    }
}

/// An HTTP proxy's answer to `CONNECT` (`proxy_connect.response`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProxyResponse {
    /// `HTTP/1.1` or `HTTP/1.0`.
    pub version: String,
    pub status: u16,
    pub reason: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<(String, String)>,
}

/// The protocol of a connection (`got_conn.proto`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum Proto {
    #[default]
    #[serde(rename = "http/1.1")]
    Http11,
    #[serde(rename = "h2")]
    H2,
}

impl Proto {
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Http11 => "http/1.1",
            Proto::H2 => "h2",
        }
    }
}

/// Why a connection was closed (`close.reason`, `put_idle.reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CloseReason {
    IdleTimeout,
    MaxIdle,
    MaxIdlePerHost,
    ServerClosed,
    ConnectionClose,
    EarlyBodyClose,
    Error,
    KeepalivesDisabled,
    CloseIdleConnections,
    TransportShutdown,
    /// HTTP/2: the server's `GOAWAY`, once the connection's last stream ended.
    Goaway,
    /// HTTP/2: a health-check `PING` went unanswered.
    PingTimeout,
    /// HTTP/2: the key already had a usable connection (the dial was not needed).
    Unneeded,
}

impl CloseReason {
    /// The name used on the wire, e.g. `early_body_close`.
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::IdleTimeout => "idle_timeout",
            CloseReason::MaxIdle => "max_idle",
            CloseReason::MaxIdlePerHost => "max_idle_per_host",
            CloseReason::ServerClosed => "server_closed",
            CloseReason::ConnectionClose => "connection_close",
            CloseReason::EarlyBodyClose => "early_body_close",
            CloseReason::Error => "error",
            CloseReason::KeepalivesDisabled => "keepalives_disabled",
            CloseReason::CloseIdleConnections => "close_idle_connections",
            CloseReason::TransportShutdown => "transport_shutdown",
            CloseReason::Goaway => "goaway",
            CloseReason::PingTimeout => "ping_timeout",
            CloseReason::Unneeded => "unneeded",
        }
    }
}

impl Event {
    /// The event name, e.g. `got_conn`.
    pub fn name(&self) -> &'static str {
        match &self.kind {
            EventKind::GetConn { .. } => "get_conn",
            EventKind::WaitForConn { .. } => "wait_for_conn",
            EventKind::DialStart { .. } => "dial_start",
            EventKind::DnsStart { .. } => "dns_start",
            EventKind::DnsDone { .. } => "dns_done",
            EventKind::ConnectStart { .. } => "connect_start",
            EventKind::ConnectDone { .. } => "connect_done",
            EventKind::DialDone { .. } => "dial_done",
            EventKind::ProxyConnect { .. } => "proxy_connect",
            EventKind::TlsStart { .. } => "tls_start",
            EventKind::TlsDone { .. } => "tls_done",
            EventKind::GotConn { .. } => "got_conn",
            EventKind::WroteHeaders => "wrote_headers",
            EventKind::WroteRequest { .. } => "wrote_request",
            EventKind::FirstByte => "first_byte",
            EventKind::Got1xx { .. } => "got_1xx",
            EventKind::Response { .. } => "response",
            EventKind::BodyEof { .. } => "body_eof",
            EventKind::BodyClosedEarly { .. } => "body_closed_early",
            EventKind::PutIdle { .. } => "put_idle",
            EventKind::Retry { .. } => "retry",
            EventKind::Close { .. } => "close",
            EventKind::H2Settings { .. } => "h2_settings",
            EventKind::Goaway { .. } => "goaway",
            EventKind::Ping => "ping",
            EventKind::PingTimeout => "ping_timeout",
            EventKind::StreamReset { .. } => "stream_reset",
            EventKind::TunnelStart { .. } => "tunnel_start",
            EventKind::TunnelDone { .. } => "tunnel_done",
            EventKind::TunnelClose { .. } => "tunnel_close",
            EventKind::TunnelActivity { .. } => "tunnel_activity",
            EventKind::TransportRestarted { .. } => "transport_restarted",
            EventKind::AppConnOpen { .. } => "app_conn_open",
            EventKind::AppRequest { .. } => "app_request",
            EventKind::AppConnClose { .. } => "app_conn_close",
            EventKind::SocketOpen { .. } => "socket_open",
            EventKind::SocketActivity { .. } => "socket_activity",
            EventKind::SocketClose { .. } => "socket_close",
            EventKind::WatchStart { .. } => "watch_start",
            EventKind::InstanceStart { .. } => "instance_start",
            EventKind::InstanceEnd { .. } => "instance_end",
            EventKind::IncomingStart { .. } => "incoming_start",
            EventKind::IncomingDone { .. } => "incoming_done",
            EventKind::Outgoing { .. } => "outgoing",
        }
    }

    /// One JSON line, without the newline.
    pub fn to_json(&self) -> String {
        // Serialising plain data into a string cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

impl From<wit::CloseReason> for CloseReason {
    fn from(reason: wit::CloseReason) -> Self {
        match reason {
            wit::CloseReason::IdleTimeout => CloseReason::IdleTimeout,
            wit::CloseReason::MaxIdle => CloseReason::MaxIdle,
            wit::CloseReason::MaxIdlePerHost => CloseReason::MaxIdlePerHost,
            wit::CloseReason::ServerClosed => CloseReason::ServerClosed,
            wit::CloseReason::ConnectionClose => CloseReason::ConnectionClose,
            wit::CloseReason::EarlyBodyClose => CloseReason::EarlyBodyClose,
            wit::CloseReason::Error => CloseReason::Error,
            wit::CloseReason::KeepalivesDisabled => CloseReason::KeepalivesDisabled,
            wit::CloseReason::CloseIdleConnections => CloseReason::CloseIdleConnections,
            wit::CloseReason::TransportShutdown => CloseReason::TransportShutdown,
            wit::CloseReason::Goaway => CloseReason::Goaway,
            wit::CloseReason::PingTimeout => CloseReason::PingTimeout,
            wit::CloseReason::Unneeded => CloseReason::Unneeded,
        }
    }
}

impl From<wit::Event> for Event {
    fn from(event: wit::Event) -> Self {
        use wit::EventKind as W;
        let kind = match event.kind {
            W::GetConn(summary) => EventKind::GetConn {
                method: summary.method,
                url: summary.url,
            },
            W::WaitForConn(reason) => EventKind::WaitForConn { reason },
            W::DialStart(addr) => EventKind::DialStart { addr },
            W::DnsStart(host) => EventKind::DnsStart { host },
            W::DnsDone(done) => {
                let (addrs, error) = match done.addrs {
                    Ok(addrs) => (addrs, None),
                    Err(error) => (Vec::new(), Some(error)),
                };
                EventKind::DnsDone {
                    addrs,
                    error,
                    coalesced: done.coalesced,
                }
            }
            W::ConnectStart(addr) => EventKind::ConnectStart { addr },
            W::ConnectDone(done) => EventKind::ConnectDone {
                addr: done.addr,
                error: done.error,
            },
            W::DialDone(Ok(addr)) => EventKind::DialDone {
                addr: Some(addr),
                error: None,
            },
            W::DialDone(Err(error)) => EventKind::DialDone {
                addr: None,
                error: Some(error),
            },
            W::ProxyConnect(p) => EventKind::ProxyConnect {
                proxy: p.proxy,
                target: p.target,
                error: p.error,
                response: p.response.map(|r| ProxyResponse {
                    version: format!("HTTP/1.{}", r.version_minor),
                    status: r.status,
                    reason: r.reason,
                    headers: roundtrip_fields::Fields::iter_block(&r.headers)
                        .map(|(name, value)| {
                            (name.to_owned(), String::from_utf8_lossy(value).into_owned())
                        })
                        .collect(),
                }),
            },
            W::TlsStart(server) => EventKind::TlsStart { server },
            W::TlsDone(Ok(tls)) => EventKind::TlsDone {
                version: Some(tls.version),
                cipher_suite: Some(tls.cipher_suite),
                alpn: tls.alpn,
                resumed: tls.resumed,
                error: None,
            },
            W::TlsDone(Err(error)) => EventKind::TlsDone {
                version: None,
                cipher_suite: None,
                alpn: None,
                resumed: false,
                error: Some(error),
            },
            W::GotConn(got) => EventKind::GotConn {
                reused: got.reused,
                was_idle: got.was_idle,
                idle_us: got.idle_us,
                proto: match got.proto {
                    crate::bindings::roundtrip::transport::types::HttpVersion::Http2 => Proto::H2,
                    _ => Proto::Http11,
                },
                stream: got.stream,
            },
            W::WroteHeaders => EventKind::WroteHeaders,
            W::WroteRequest(error) => EventKind::WroteRequest { error },
            W::FirstByte => EventKind::FirstByte,
            W::Got1xx(status) => EventKind::Got1xx { status },
            W::Response(status) => EventKind::Response { status },
            W::BodyEof(bytes) => EventKind::BodyEof { bytes },
            W::BodyClosedEarly(early) => EventKind::BodyClosedEarly {
                bytes: early.bytes,
                drained: early.drained,
                saved: early.saved,
            },
            W::PutIdle(refused) => EventKind::PutIdle {
                ok: refused.is_none(),
                reason: refused.map(CloseReason::from),
            },
            W::Retry(reason) => EventKind::Retry { reason },
            W::Close(reason) => EventKind::Close {
                reason: reason.into(),
            },
            W::H2Settings(settings) => EventKind::H2Settings {
                max_concurrent_streams: settings.max_concurrent_streams,
                initial_window: settings.initial_window,
            },
            W::Goaway(goaway) => EventKind::Goaway {
                last_stream: goaway.last_stream,
                code: goaway.code,
            },
            W::Ping => EventKind::Ping,
            W::PingTimeout => EventKind::PingTimeout,
            W::StreamReset(reset) => EventKind::StreamReset {
                stream: reset.stream,
                code: reset.code,
                by_peer: reset.by_peer,
            },
        };
        Event {
            ts_us: event.ts_us,
            kind,
            conn: event.conn,
            req: event.req,
            key: event.key,
            tunnel: None,
            app_conn: None,
        }
    }
}

/// Somewhere events go. `emit` is called on the transport's thread and must not block.
pub trait Sink: Send + Sync {
    fn emit(&self, event: &Event);
}

/// The sinks of one transport.
#[derive(Clone, Default)]
pub struct Events {
    sinks: Vec<Arc<dyn Sink>>,
}

impl Events {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a sink.
    pub fn with(mut self, sink: impl Sink + 'static) -> Self {
        self.sinks.push(Arc::new(sink));
        self
    }

    /// Adds a TCP sink to the inspector named by `ROUNDTRIP_INSPECT=HOST:PORT`, if set.
    pub fn with_env_inspector(self) -> Self {
        match std::env::var("ROUNDTRIP_INSPECT") {
            Ok(addr) if !addr.trim().is_empty() => self.with(TcpSink::connect(addr.trim())),
            _ => self,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.sinks.is_empty()
    }

    pub fn emit(&self, event: &Event) {
        for sink in &self.sinks {
            sink.emit(event);
        }
    }
}

/// Events as `tracing` events, so an app's subscriber (installed globally, as apps
/// do: the sink runs on the transport's thread) sees dials, reuses and closes beside
/// its own logs. `Events::new().with(events::Tracing)`.
///
/// Targets, for filters such as `RUST_LOG=roundtrip::conn=debug`:
/// - `roundtrip::conn`: a connection's life — `dial_start`, `dial_done`,
///   `proxy_connect`, `tls_start`, `tls_done`, `got_conn`, `put_idle`, `close`;
/// - `roundtrip::request`: a request's steps — `get_conn`, `wait_for_conn`,
///   `wrote_headers`, `wrote_request`, `first_byte`, `got_1xx`, `response`,
///   `body_eof`, `body_closed_early`, `retry`;
/// - `roundtrip::tunnel`: `roundtrip proxy`'s `CONNECT` relays;
/// - `roundtrip::transport`: `transport_restarted`.
///
/// The message is the event's name; every event carries `ts_us` and, when set,
/// `conn`, `req`, `key` and `tunnel`, then the fields `docs/events.md` lists for it
/// (`reused`, `idle_us`, `status`, `bytes`, `reason`, `error`…). Levels: `warn` for a
/// failure (a dial, a TLS handshake, a tunnel, a write that did not end, a close for
/// an error, a restart), `trace` for the fine steps of a request (`wrote_headers`,
/// `wrote_request`, `first_byte`, `got_1xx`), `debug` for the rest.
#[derive(Debug, Clone, Copy, Default)]
pub struct Tracing;

/// One `tracing::event!` with the fields every event shares.
macro_rules! traced {
    ($target:literal, $level:ident, $event:expr $(, $($field:tt)+)?) => {
        tracing::event!(
            target: $target,
            tracing::Level::$level,
            ts_us = $event.ts_us,
            conn = $event.conn,
            req = $event.req,
            key = $event.key.as_deref(),
            tunnel = $event.tunnel,
            app_conn = $event.app_conn,
            $($($field)+,)?
            "{}",
            $event.name()
        )
    };
}

impl Sink for Tracing {
    fn emit(&self, event: &Event) {
        match &event.kind {
            EventKind::GetConn { method, url } => {
                traced!("roundtrip::request", DEBUG, event, method = %method, url = %url)
            }
            EventKind::WaitForConn { reason } => {
                traced!("roundtrip::request", DEBUG, event, reason = %reason)
            }
            EventKind::DialStart { addr } => traced!("roundtrip::conn", DEBUG, event, addr = %addr),
            EventKind::DnsStart { host } => traced!("roundtrip::conn", DEBUG, event, host = %host),
            EventKind::ConnectStart { addr } => {
                traced!("roundtrip::conn", DEBUG, event, addr = %addr)
            }
            EventKind::ConnectDone { addr, error } => traced!(
                "roundtrip::conn",
                DEBUG,
                event,
                addr = %addr,
                error = error.as_deref()
            ),
            EventKind::DnsDone {
                addrs,
                error: None,
                coalesced,
            } => traced!("roundtrip::conn", DEBUG, event, addrs = ?addrs, coalesced = coalesced),
            EventKind::DnsDone {
                error: Some(error), ..
            } => traced!("roundtrip::conn", WARN, event, error = %error),
            EventKind::DialDone { addr, error: None } => {
                traced!("roundtrip::conn", DEBUG, event, addr = addr.as_deref())
            }
            EventKind::DialDone {
                addr,
                error: Some(error),
            } => {
                traced!("roundtrip::conn", WARN, event, addr = addr.as_deref(), error = %error)
            }
            EventKind::ProxyConnect {
                proxy,
                target,
                error: None,
                response,
            } => traced!(
                "roundtrip::conn", DEBUG, event, proxy = %proxy, target = %target,
                status = response.as_ref().map(|r| r.status)
            ),
            EventKind::ProxyConnect {
                proxy,
                target,
                error: Some(error),
                response,
            } => traced!(
                "roundtrip::conn", WARN, event, proxy = %proxy, target = %target,
                status = response.as_ref().map(|r| r.status), error = %error
            ),
            EventKind::TlsStart { server } => {
                traced!("roundtrip::conn", DEBUG, event, server = %server)
            }
            EventKind::TlsDone {
                version,
                cipher_suite,
                alpn,
                resumed,
                error: None,
            } => traced!(
                "roundtrip::conn",
                DEBUG,
                event,
                version = version.as_deref(),
                cipher_suite = cipher_suite.as_deref(),
                alpn = alpn.as_deref(),
                resumed = *resumed
            ),
            EventKind::TlsDone {
                error: Some(error), ..
            } => {
                traced!("roundtrip::conn", WARN, event, error = %error)
            }
            EventKind::GotConn {
                reused,
                was_idle,
                idle_us,
                proto,
                stream,
            } => traced!(
                "roundtrip::conn",
                DEBUG,
                event,
                reused = *reused,
                was_idle = *was_idle,
                idle_us = *idle_us,
                proto = proto.as_str(),
                stream = *stream
            ),
            EventKind::H2Settings {
                max_concurrent_streams,
                initial_window,
            } => traced!(
                "roundtrip::conn",
                DEBUG,
                event,
                max_concurrent_streams = *max_concurrent_streams,
                initial_window = *initial_window
            ),
            EventKind::Goaway { last_stream, code } => traced!(
                "roundtrip::conn",
                DEBUG,
                event,
                last_stream = *last_stream,
                code = %code
            ),
            EventKind::Ping => traced!("roundtrip::conn", DEBUG, event),
            EventKind::PingTimeout => traced!("roundtrip::conn", WARN, event),
            EventKind::StreamReset {
                stream,
                code,
                by_peer,
            } => traced!(
                "roundtrip::request",
                DEBUG,
                event,
                stream = *stream,
                code = %code,
                by_peer = *by_peer
            ),
            EventKind::WroteHeaders => traced!("roundtrip::request", TRACE, event),
            EventKind::WroteRequest { error: None } => traced!("roundtrip::request", TRACE, event),
            EventKind::WroteRequest { error: Some(error) } => {
                traced!("roundtrip::request", WARN, event, error = %error)
            }
            EventKind::FirstByte => traced!("roundtrip::request", TRACE, event),
            EventKind::Got1xx { status } => {
                traced!("roundtrip::request", TRACE, event, status = *status)
            }
            EventKind::Response { status } => {
                traced!("roundtrip::request", DEBUG, event, status = *status)
            }
            EventKind::BodyEof { bytes } => {
                traced!("roundtrip::request", DEBUG, event, bytes = *bytes)
            }
            EventKind::BodyClosedEarly {
                bytes,
                drained,
                saved,
            } => traced!(
                "roundtrip::request",
                DEBUG,
                event,
                bytes = *bytes,
                drained = *drained,
                saved = *saved
            ),
            EventKind::PutIdle { ok, reason } => traced!(
                "roundtrip::conn",
                DEBUG,
                event,
                ok = *ok,
                reason = reason.map(CloseReason::as_str)
            ),
            EventKind::Retry { reason } => {
                traced!("roundtrip::request", DEBUG, event, reason = %reason)
            }
            EventKind::Close {
                reason: CloseReason::Error,
            } => {
                traced!(
                    "roundtrip::conn",
                    WARN,
                    event,
                    reason = CloseReason::Error.as_str()
                )
            }
            EventKind::Close { reason } => {
                traced!("roundtrip::conn", DEBUG, event, reason = reason.as_str())
            }
            EventKind::TunnelStart { addr } => {
                traced!("roundtrip::tunnel", DEBUG, event, addr = %addr)
            }
            EventKind::TunnelDone { addr, error: None } => {
                traced!("roundtrip::tunnel", DEBUG, event, addr = addr.as_deref())
            }
            EventKind::TunnelDone {
                addr,
                error: Some(error),
            } => {
                traced!("roundtrip::tunnel", WARN, event, addr = addr.as_deref(), error = %error)
            }
            EventKind::TunnelClose {
                bytes_up,
                bytes_down,
            } => traced!(
                "roundtrip::tunnel",
                DEBUG,
                event,
                bytes_up = *bytes_up,
                bytes_down = *bytes_down
            ),
            EventKind::TunnelActivity {
                bytes_up,
                bytes_down,
            } => traced!(
                "roundtrip::tunnel",
                TRACE,
                event,
                bytes_up = *bytes_up,
                bytes_down = *bytes_down
            ),
            EventKind::TransportRestarted { reason } => {
                traced!("roundtrip::transport", WARN, event, reason = %reason)
            }
            EventKind::AppConnOpen { peer, pid, process } => traced!(
                "roundtrip::app",
                DEBUG,
                event,
                peer = %peer,
                pid = *pid,
                process = process.as_deref()
            ),
            EventKind::AppRequest {
                method,
                url,
                status,
                bytes_in,
                bytes_out,
                elapsed_us,
                error,
            } => traced!(
                "roundtrip::app",
                DEBUG,
                event,
                method = %method,
                url = %url,
                status = *status,
                bytes_in = *bytes_in,
                bytes_out = *bytes_out,
                elapsed_us = *elapsed_us,
                error = error.as_deref()
            ),
            EventKind::AppConnClose { reason, error } => traced!(
                "roundtrip::app",
                DEBUG,
                event,
                reason = reason.as_str(),
                error = error.as_deref()
            ),
            EventKind::SocketOpen {
                local,
                peer,
                pid,
                process,
            } => traced!(
                "roundtrip::socket",
                DEBUG,
                event,
                local = %local,
                peer = %peer,
                pid = *pid,
                process = process.as_deref()
            ),
            EventKind::SocketActivity {
                bytes_up,
                bytes_down,
                interval_us,
            } => traced!(
                "roundtrip::socket",
                TRACE,
                event,
                bytes_up = *bytes_up,
                bytes_down = *bytes_down,
                interval_us = *interval_us
            ),
            EventKind::SocketClose {
                bytes_up,
                bytes_down,
            } => traced!(
                "roundtrip::socket",
                DEBUG,
                event,
                bytes_up = *bytes_up,
                bytes_down = *bytes_down
            ),
            EventKind::WatchStart { pid, mode, misses } => traced!(
                "roundtrip::socket",
                DEBUG,
                event,
                pid = *pid,
                mode = mode.as_str(),
                misses = %misses
            ),
            EventKind::InstanceStart { instance } => {
                traced!("roundtrip::serve", DEBUG, event, instance = *instance)
            }
            EventKind::InstanceEnd {
                instance,
                requests,
                error,
            } => traced!(
                "roundtrip::serve",
                DEBUG,
                event,
                instance = *instance,
                requests = *requests,
                error = error.as_deref()
            ),
            EventKind::IncomingStart {
                incoming,
                instance,
                method,
                path,
            } => traced!(
                "roundtrip::serve",
                DEBUG,
                event,
                incoming = *incoming,
                instance = *instance,
                method = %method,
                path = %path
            ),
            EventKind::IncomingDone {
                incoming,
                status,
                error,
                elapsed_us,
            } => traced!(
                "roundtrip::serve",
                DEBUG,
                event,
                incoming = *incoming,
                status = *status,
                error = error.as_deref(),
                elapsed_us = *elapsed_us
            ),
            EventKind::Outgoing {
                instance,
                incoming,
                method,
                url,
                status,
                error,
                elapsed_us,
            } => traced!(
                "roundtrip::serve",
                DEBUG,
                event,
                instance = *instance,
                incoming = *incoming,
                method = %method,
                url = %url,
                status = *status,
                error = error.as_deref(),
                elapsed_us = *elapsed_us
            ),
        }
    }
}

/// JSON Lines to any writer (a file, stdout), each line flushed as it is written so
/// a reader following the file sees events as they happen.
pub struct JsonLines {
    out: Mutex<Box<dyn Write + Send>>,
}

impl JsonLines {
    pub fn new(out: impl Write + Send + 'static) -> Self {
        Self {
            out: Mutex::new(Box::new(BufWriter::new(out))),
        }
    }

    pub fn stdout() -> Self {
        Self::new(std::io::stdout())
    }

    pub fn create(path: &std::path::Path) -> std::io::Result<Self> {
        Ok(Self::new(std::fs::File::create(path)?))
    }
}

impl Sink for JsonLines {
    fn emit(&self, event: &Event) {
        if let Ok(mut out) = self.out.lock() {
            let _ = writeln!(out, "{}", event.to_json());
            let _ = out.flush();
        }
    }
}

/// Calls a function for each event (e.g. `roundtrip get -v` narration).
pub struct Callback<F>(pub F);

impl<F: Fn(&Event) + Send + Sync> Sink for Callback<F> {
    fn emit(&self, event: &Event) {
        (self.0)(event)
    }
}

/// Keeps every event in memory; clones share the list.
#[derive(Clone, Default)]
pub struct Recorder {
    events: Arc<Mutex<Vec<Event>>>,
}

impl Recorder {
    pub fn new() -> Self {
        Self::default()
    }

    /// A copy of the events so far.
    pub fn events(&self) -> Vec<Event> {
        self.events.lock().map(|e| e.clone()).unwrap_or_default()
    }

    /// Names of the events so far, in order.
    pub fn names(&self) -> Vec<&'static str> {
        self.events().iter().map(Event::name).collect()
    }
}

impl Sink for Recorder {
    fn emit(&self, event: &Event) {
        if let Ok(mut events) = self.events.lock() {
            events.push(event.clone());
        }
    }
}

/// Events buffered for a slow or absent inspector before new ones are dropped.
const TCP_QUEUE: usize = 64 * 1024;

/// JSON Lines over TCP to a running inspector. A background thread connects,
/// reconnects once a second while the inspector is away, and never blocks the
/// transport: when its queue is full, events are dropped. When the sink is dropped it
/// waits (up to [`TCP_DRAIN`]) for the queued events to go out, so a short program's
/// last events are not lost at exit.
pub struct TcpSink {
    queue: Option<SyncSender<String>>,
    /// Signalled when the forwarding thread has sent everything (a `Mutex` only to be
    /// `Sync`; it is touched once, in `drop`).
    finished: Mutex<Option<Receiver<()>>>,
}

/// How long dropping a [`TcpSink`] waits for its queue to drain.
pub const TCP_DRAIN: Duration = Duration::from_secs(5);

/// The first line on each connection of a [`TcpSink`]: which program and which sink
/// the events come from, so an inspector keeps one view per sink across reconnects.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Hello {
    /// The program's name (its executable's file name).
    pub program: String,
    pub pid: u32,
    /// Counts the TCP sinks of one process from 1.
    pub sink: u64,
}

/// A `Hello` as it travels: `{"hello":{…}}`.
#[derive(Serialize, Deserialize)]
struct HelloLine {
    hello: Hello,
}

impl Hello {
    fn new() -> Self {
        static SINKS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let program = std::env::args_os()
            .next()
            .map(std::path::PathBuf::from)
            .and_then(|path| path.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "?".to_owned());
        Self {
            program,
            pid: std::process::id(),
            sink: SINKS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1,
        }
    }

    /// The JSON line.
    pub fn to_json(&self) -> String {
        serde_json::to_string(&HelloLine {
            hello: self.clone(),
        })
        .unwrap_or_default()
    }

    /// Reads a hello line; `None` for anything else.
    pub fn parse(line: &str) -> Option<Self> {
        serde_json::from_str::<HelloLine>(line)
            .ok()
            .map(|line| line.hello)
    }
}

impl TcpSink {
    pub fn connect(addr: &str) -> Self {
        let (queue, lines) = mpsc::sync_channel(TCP_QUEUE);
        let (done, finished) = mpsc::channel();
        let addr = addr.to_owned();
        let hello = Hello::new().to_json();
        let started = std::thread::Builder::new()
            .name("roundtrip-inspect".into())
            .spawn(move || {
                forward_lines(&addr, &hello, &lines);
                let _ = done.send(());
            });
        if let Err(e) = started {
            eprintln!("roundtrip: cannot start the inspector sink: {e}");
        }
        Self {
            queue: Some(queue),
            finished: Mutex::new(Some(finished)),
        }
    }
}

impl Sink for TcpSink {
    fn emit(&self, event: &Event) {
        if let Some(queue) = &self.queue {
            // Full or disconnected: the event is dropped rather than block the transport.
            let _ = queue.try_send(event.to_json());
        }
    }
}

impl Drop for TcpSink {
    fn drop(&mut self) {
        drop(self.queue.take());
        let finished = self.finished.get_mut().ok().and_then(Option::take);
        if let Some(finished) = finished {
            let _ = finished.recv_timeout(TCP_DRAIN);
        }
    }
}

/// Sends queued lines until the queue is closed and empty, each connection opening
/// with `hello`.
fn forward_lines(addr: &str, hello: &str, lines: &Receiver<String>) {
    let mut warned = false;
    let mut held: Option<String> = None;
    let mut backoff = Duration::from_millis(50);
    loop {
        let stream = match TcpStream::connect(addr) {
            Ok(stream) => stream,
            Err(e) => {
                if !warned {
                    eprintln!("roundtrip: inspector at {addr} not reachable ({e}); retrying");
                    warned = true;
                }
                // Stop retrying once the transport is gone and nothing is queued.
                if held.is_none() {
                    match lines.recv_timeout(backoff) {
                        Ok(line) => held = Some(line),
                        Err(mpsc::RecvTimeoutError::Disconnected) => return,
                        Err(mpsc::RecvTimeoutError::Timeout) => {}
                    }
                } else {
                    std::thread::sleep(backoff);
                }
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        backoff = Duration::from_millis(50);
        let _ = stream.set_nodelay(true);
        let mut out = BufWriter::new(stream);
        if writeln!(out, "{hello}").is_err() {
            continue;
        }
        loop {
            let line = match held.take() {
                Some(line) => line,
                None => match lines.recv() {
                    Ok(line) => line,
                    Err(_) => {
                        let _ = out.flush();
                        return;
                    }
                },
            };
            let sent = writeln!(out, "{line}").and_then(|()| match lines.try_recv() {
                Ok(next) => {
                    held = Some(next);
                    Ok(())
                }
                Err(_) => out.flush(),
            });
            if sent.is_err() {
                break;
            }
        }
    }
}
