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
    /// Limit for the TLS handshake (Go `TLSHandshakeTimeout`: 10 s).
    pub tls_handshake_timeout: Option<Duration>,
    /// Limit from the end of the request to the response head (Go `ResponseHeaderTimeout`: none).
    pub response_header_timeout: Option<Duration>,
    /// With `Expect: 100-continue`, how long to wait for `100 Continue` before sending
    /// the body anyway (Go `ExpectContinueTimeout`: 1 s; `None` sends it at once).
    pub expect_continue_timeout: Option<Duration>,
    /// Send `Connection: close` and never pool (Go `DisableKeepAlives`).
    pub disable_keep_alives: bool,
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
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_idle_conns: 100,
            max_idle_conns_per_host: 2,
            max_conns_per_host: 0,
            idle_conn_timeout: Some(Duration::from_secs(90)),
            dial_timeout: Some(Duration::from_secs(30)),
            tls_handshake_timeout: Some(Duration::from_secs(10)),
            response_header_timeout: None,
            expect_continue_timeout: Some(Duration::from_secs(1)),
            disable_keep_alives: false,
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
        }
    }
}

impl Config {
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
            disable_compression: self.disable_compression,
            max_response_header_bytes: self.max_response_header_bytes,
            user_agent: self.user_agent.clone(),
            proxy: self.proxy.to_wit(),
            proxy_connect_timeout: nanos(self.proxy_connect_timeout),
            // No sink, no events: the guest skips the calls (docs/performance.md).
            emit_events: !self.events.is_empty(),
        }
    }
}
