//! The transport's knobs, named and defaulted like Go's `net/http.Transport`.

use std::path::PathBuf;
use std::time::Duration;

use rustls::pki_types::CertificateDer;

use crate::bindings::roundtrip::transport::types as wit;
use crate::egress::AllowList;
use crate::events::Events;
use crate::proxies::ProxyConfig;
use crate::tls::ClientCert;

#[derive(Clone)]
pub struct Config {
    /// Most idle connections kept across all hosts (Go `MaxIdleConns`: 100; 0 = no limit).
    pub max_idle_conns: u32,
    /// Most idle connections kept per host (Go `MaxIdleConnsPerHost`: 2).
    pub max_idle_conns_per_host: u32,
    /// Connections per host, dialing + active + idle; more requests wait in line
    /// (Go `MaxConnsPerHost`: 0 = no limit).
    pub max_conns_per_host: u32,
    /// How long a connection may sit idle (Go `IdleConnTimeout`: 90 s; `None` = forever).
    pub idle_conn_timeout: Option<Duration>,
    /// Limit for opening the TCP connection (Go's dialer: 30 s).
    pub dial_timeout: Option<Duration>,
    /// TCP keep-alive probes on every connection dialled (Go's dialer, as its
    /// DefaultTransport sets it: idle 30 s, interval 15 s, 9 probes); `None` sends
    /// none (Go `Dialer.KeepAlive < 0`).
    pub keep_alive: Option<KeepAlive>,
    /// Happy Eyeballs: the next address of a name is tried this long after the last
    /// if none has connected (Go `Dialer.FallbackDelay`: 300 ms); `None` tries them
    /// one after another (Go `FallbackDelay < 0`).
    pub fallback_delay: Option<Duration>,
    /// Limit for the TLS handshake (Go `TLSHandshakeTimeout`: 10 s).
    pub tls_handshake_timeout: Option<Duration>,
    /// Limit from the end of the request to the response head (Go `ResponseHeaderTimeout`: none).
    pub response_header_timeout: Option<Duration>,
    /// With `Expect: 100-continue`, how long to wait for `100 Continue` before sending
    /// the body anyway (Go `ExpectContinueTimeout`: 1 s; `None` sends it at once).
    pub expect_continue_timeout: Option<Duration>,
    /// Send `Connection: close` and never pool (Go `DisableKeepAlives`).
    pub disable_keep_alives: bool,
    /// Close a connection whose body was dropped unread, as Go did before 1.27; by
    /// default the rest (at most 256 KiB, within 50 ms) is drained so it can be reused.
    pub disable_drain_on_close: bool,
    /// Do not add `Accept-Encoding: gzip` nor decompress (Go `DisableCompression`).
    pub disable_compression: bool,
    /// Largest response head accepted (Go `MaxResponseHeaderBytes`: 10 MiB).
    pub max_response_header_bytes: u64,
    /// `User-Agent` sent when a request has none; empty sends none.
    pub user_agent: String,
    /// PEM files with CA certificates trusted besides the system roots.
    pub extra_ca_files: Vec<PathBuf>,
    /// CA certificates (DER) trusted besides the system roots, e.g. a local test CA.
    pub extra_ca_certs: Vec<CertificateDer<'static>>,
    /// A client certificate for servers that ask for one (`--cert`, `--key`).
    pub client_cert: Option<ClientCert>,
    /// Accept any server certificate (`--insecure`). A warning is printed for every
    /// connection: anyone on the path can read and change such a connection.
    pub insecure_skip_verify: bool,
    /// Most linear memory the component may use; past it the instance traps and is
    /// replaced (its requests fail with `TransportRestarted`). Default 256 MiB.
    pub max_guest_memory: usize,
    /// Longest the component may keep running without making progress (moving bytes,
    /// emitting an event, dialing); past it the instance is stuck, and is stopped and
    /// replaced. It yields to the host every 10 ms either way. Default 10 s.
    pub max_guest_busy: Duration,
    /// Directories whose files `file://` URLs may read (`--allow-dir`); none by default,
    /// so `file://` is refused with `DestinationDenied`. (`http::Uri` needs a host:
    /// write `file://localhost/path`.)
    pub allow_dirs: Vec<PathBuf>,
    /// Which requests go through a proxy ([`ProxyConfig::from_env`] for the
    /// environment's); none by default.
    pub proxy: ProxyConfig,
    /// Longest wait for a proxy to open a tunnel (`CONNECT` answer, SOCKS5 handshake;
    /// Go: 1 min).
    pub proxy_connect_timeout: Option<Duration>,
    /// The hosts the component may connect to (`--allow-host`); `None` allows every
    /// host, as Go, curl and reqwest do. A connect outside the list fails with
    /// `DestinationDenied` and opens no socket. A proxy must be on the list to be used;
    /// what it reaches beyond is up to the proxy.
    pub allow_hosts: Option<AllowList>,
    /// Where lifecycle events go.
    pub events: Events,
    /// Also stream events to the inspector named by the environment variable
    /// `ROUNDTRIP_INSPECT=HOST:PORT`, when it is set (so any program built on this
    /// library can be watched without changing it).
    pub inspect_from_env: bool,
    /// Instances of the component, each a task of the runtime (or a thread) of its own
    /// with a pool of its own
    /// (Envoy's pool per worker), requests going to the one with the fewest in flight
    /// (the first on a tie, so one caller's sequential requests stay on one pool).
    /// Default 1: one pool, exactly Go's. With more, Go's caps are divided (see
    /// [`Config::shard`]). [`Transport::new_local`](crate::Transport::new_local)
    /// always runs one.
    pub shards: usize,
    /// The HTTP versions spoken: HTTP/2 for `https` where the server agrees, as Go's
    /// DefaultTransport (curl `--http2`, the default); [`Protocols::Http1`] never speaks
    /// it (`--http1.1`); [`Protocols::Http2PriorKnowledge`] also speaks it on `http://`
    /// without asking (h2c, `--http2-prior-knowledge`).
    pub protocols: Protocols,
    /// On HTTP/2, when each connection of a host carries the server's
    /// `MAX_CONCURRENT_STREAMS`, wait for a stream instead of dialling another
    /// connection (Go `StrictMaxConcurrentStreams`: false).
    pub strict_max_concurrent_streams: bool,
    /// On HTTP/2, send a health-check `PING` when nothing was read for this long
    /// (Go `ReadIdleTimeout`: none, no health check).
    pub read_idle_timeout: Option<Duration>,
    /// How long that `PING` may go unanswered before the connection is closed
    /// (Go `PingTimeout`: 15 s).
    pub ping_timeout: Option<Duration>,
    /// On HTTP/2, how long a request body may wait for flow-control window without a
    /// byte going out before its stream is reset and the request fails with
    /// [`ErrorKind::WriteTimeout`](crate::ErrorKind::WriteTimeout) (Go
    /// `HTTP2Config.WriteByteTimeout`: 30 s here, none in Go; `None` waits forever).
    pub write_byte_timeout: Option<Duration>,
    /// HTTP/2 limits this end announces (Go's `HTTP2Config`; 0 = Go's default).
    pub http2: Http2Config,
    /// The component to run in place of Roundtrip's transport: one that exports the
    /// same `round-tripper` (`None`: `roundtrip_wasm::TRANSPORT`). `roundtrip bench`
    /// runs `roundtrip_wasm::FLOOR` here to measure what the boundary alone costs.
    pub component: Option<&'static [u8]>,
}

/// Which HTTP versions a transport speaks (curl's flags).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocols {
    /// HTTP/1.1 only (`--http1.1`).
    Http1,
    /// HTTP/2 for `https` when ALPN agrees on `h2`, else HTTP/1.1 (`--http2`).
    #[default]
    Http2,
    /// As `Http2`, and HTTP/2 from the first byte on direct `http://` (h2c,
    /// `--http2-prior-knowledge`).
    Http2PriorKnowledge,
}

impl Protocols {
    fn to_wit(self) -> wit::Protocols {
        match self {
            Protocols::Http1 => wit::Protocols::Http1,
            Protocols::Http2 => wit::Protocols::Http2,
            Protocols::Http2PriorKnowledge => wit::Protocols::Http2PriorKnowledge,
        }
    }
}

/// HTTP/2 limits this end announces, named as Go's `HTTP2Config` names them. A value
/// out of its range (0 among them) means Go's default for a client.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Http2Config {
    /// Largest frame read, `SETTINGS_MAX_FRAME_SIZE` (16 KiB..16 MiB; default 1 MiB).
    pub max_read_frame_size: u32,
    /// The connection's receive window (at least 65 535; default 1 GiB).
    pub max_receive_buffer_per_connection: u32,
    /// Each stream's receive window, `SETTINGS_INITIAL_WINDOW_SIZE` (default 4 MiB).
    pub max_receive_buffer_per_stream: u32,
    /// The HPACK table decoded with, `SETTINGS_HEADER_TABLE_SIZE` (default 4096).
    pub max_decoder_header_table_size: u32,
}

/// TCP keep-alive probes (Go's `net.KeepAliveConfig`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeepAlive {
    /// Idle time before the first probe (Go `Idle`).
    pub idle: Duration,
    /// Between unanswered probes (Go `Interval`).
    pub interval: Duration,
    /// Unanswered probes before the connection is given up (Go `Count`).
    pub count: u32,
}

impl Default for KeepAlive {
    /// Go's DefaultTransport: `Dialer.KeepAlive` 30 s as the idle time, and
    /// `KeepAliveConfig`'s defaults for the rest (15 s, 9).
    fn default() -> Self {
        Self {
            idle: Duration::from_secs(30),
            interval: Duration::from_secs(15),
            count: 9,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_idle_conns: 100,
            max_idle_conns_per_host: 2,
            max_conns_per_host: 0,
            idle_conn_timeout: Some(Duration::from_secs(90)),
            dial_timeout: Some(Duration::from_secs(30)),
            keep_alive: Some(KeepAlive::default()),
            fallback_delay: Some(Duration::from_millis(300)),
            tls_handshake_timeout: Some(Duration::from_secs(10)),
            response_header_timeout: None,
            expect_continue_timeout: Some(Duration::from_secs(1)),
            disable_keep_alives: false,
            disable_drain_on_close: false,
            disable_compression: false,
            max_response_header_bytes: 10 << 20,
            user_agent: concat!("roundtrip/", env!("CARGO_PKG_VERSION")).to_owned(),
            extra_ca_files: Vec::new(),
            extra_ca_certs: Vec::new(),
            client_cert: None,
            insecure_skip_verify: false,
            max_guest_memory: 256 << 20,
            max_guest_busy: Duration::from_secs(10),
            allow_dirs: Vec::new(),
            proxy: ProxyConfig::default(),
            proxy_connect_timeout: Some(Duration::from_secs(60)),
            allow_hosts: None,
            events: Events::new(),
            inspect_from_env: true,
            shards: 1,
            protocols: Protocols::default(),
            strict_max_concurrent_streams: false,
            read_idle_timeout: None,
            ping_timeout: Some(Duration::from_secs(15)),
            write_byte_timeout: Some(Duration::from_secs(30)),
            http2: Http2Config::default(),
            component: None,
        }
    }
}

impl Config {
    /// The shards this config runs: `shards` (at least 1), lowered to the smallest
    /// positive cap among `max_conns_per_host`, `max_idle_conns_per_host` and
    /// `max_idle_conns`, so that no shard gets none of a cap.
    pub fn effective_shards(&self) -> usize {
        [
            self.max_conns_per_host,
            self.max_idle_conns_per_host,
            self.max_idle_conns,
        ]
        .into_iter()
        .filter(|cap| *cap > 0)
        .fold(self.shards.max(1), |n, cap| n.min(cap as usize))
    }

    /// The config of shard `index` of `count`: each cap divided, shard `i` taking
    /// `⌊cap / count⌋` plus one while `i < cap mod count`, so the shards' caps add up
    /// to the cap exactly (0, "no limit", stays 0). Go's `MaxConnsPerHost` then holds
    /// across shards; each shard keeps at most its share idle.
    pub fn shard(&self, index: usize, count: usize) -> Config {
        let share = |cap: u32| {
            let (count, index) = (count.max(1) as u32, index as u32);
            cap / count + u32::from(index < cap % count)
        };
        Config {
            max_conns_per_host: share(self.max_conns_per_host),
            max_idle_conns_per_host: share(self.max_idle_conns_per_host),
            max_idle_conns: share(self.max_idle_conns),
            shards: 1,
            ..self.clone()
        }
    }

    pub(crate) fn to_wit(&self) -> wit::Config {
        let nanos =
            |d: Option<Duration>| d.map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        wit::Config {
            max_idle_conns: self.max_idle_conns,
            max_idle_conns_per_host: self.max_idle_conns_per_host,
            max_conns_per_host: self.max_conns_per_host,
            idle_conn_timeout: nanos(self.idle_conn_timeout),
            dial_timeout: nanos(self.dial_timeout),
            tls_handshake_timeout: nanos(self.tls_handshake_timeout),
            response_header_timeout: nanos(self.response_header_timeout),
            expect_continue_timeout: nanos(self.expect_continue_timeout),
            disable_keep_alives: self.disable_keep_alives,
            disable_drain_on_close: self.disable_drain_on_close,
            fallback_delay: nanos(self.fallback_delay),
            keep_alive: self.keep_alive.map(|k| wit::KeepAlive {
                idle: nanos(Some(k.idle)).unwrap_or_default(),
                interval: nanos(Some(k.interval)).unwrap_or_default(),
                count: k.count,
            }),
            disable_compression: self.disable_compression,
            max_response_header_bytes: self.max_response_header_bytes,
            user_agent: self.user_agent.clone(),
            proxy: self.proxy.to_wit(),
            proxy_connect_timeout: nanos(self.proxy_connect_timeout),
            // No sink, no events: the guest skips the calls (docs/performance.md).
            emit_events: !self.events.is_empty(),
            count_crossings: crate::crossings::is_enabled(),
            protocols: self.protocols.to_wit(),
            strict_max_concurrent_streams: self.strict_max_concurrent_streams,
            read_idle_timeout: nanos(self.read_idle_timeout),
            ping_timeout: nanos(self.ping_timeout),
            write_byte_timeout: nanos(self.write_byte_timeout),
            http2: wit::Http2Config {
                max_read_frame_size: self.http2.max_read_frame_size,
                max_receive_buffer_per_connection: self.http2.max_receive_buffer_per_connection,
                max_receive_buffer_per_stream: self.http2.max_receive_buffer_per_stream,
                max_decoder_header_table_size: self.http2.max_decoder_header_table_size,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_add_up_to_each_cap_and_none_gets_nothing() {
        for cap in [1u32, 2, 3, 7, 64, 100] {
            for count in 1..=5usize {
                let config = Config {
                    max_conns_per_host: cap,
                    max_idle_conns_per_host: cap,
                    max_idle_conns: cap,
                    shards: count,
                    ..Config::default()
                };
                let n = config.effective_shards();
                assert_eq!(n, count.min(cap as usize));
                let shares: Vec<Config> = (0..n).map(|i| config.shard(i, n)).collect();
                let sum = |f: fn(&Config) -> u32| shares.iter().map(f).sum::<u32>();
                assert_eq!(sum(|c| c.max_conns_per_host), cap, "{cap} over {n}");
                assert_eq!(sum(|c| c.max_idle_conns_per_host), cap);
                assert_eq!(sum(|c| c.max_idle_conns), cap);
                assert!(
                    shares
                        .iter()
                        .all(|c| c.max_conns_per_host > 0 && c.shards == 1)
                );
            }
        }
        // "No limit" stays no limit in every shard; Go's defaults allow two shards.
        let defaults = Config {
            shards: 4,
            ..Config::default()
        };
        assert_eq!(defaults.effective_shards(), 2);
        assert_eq!(defaults.shard(1, 2).max_conns_per_host, 0);
        assert_eq!(defaults.shard(1, 2).max_idle_conns, 50);
    }
}
