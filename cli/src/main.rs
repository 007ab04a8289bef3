//! `roundtrip`: the transport component from the command line.
//!
//! Exit codes: 0 success, 1 a request failed (one line naming the cause), 2 usage error.

mod bench;
mod compose;
mod demo;
mod get;
mod narrate;
mod proxy;
mod run;
mod serve;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use roundtrip_host::egress::AllowList;
use roundtrip_host::events::{Events, JsonLines, TcpSink};
use roundtrip_host::{ClientCert, Config, Protocols, ProxyConfig};

#[derive(Parser)]
#[command(
    name = "roundtrip",
    version,
    about = "Go's HTTP transport as a WebAssembly component: requests, pooling and every connection's life"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Send requests on ONE transport, in order, and write the bodies to stdout.
    Get(Box<get::GetArgs>),
    /// Run a classroom scenario against built-in local servers, with narration.
    Demo(demo::DemoArgs),
    /// Forward proxy through the transport: point any program's HTTP_PROXY at it.
    Proxy(Box<proxy::ProxyArgs>),
    /// This transport side by side with hyper-util, the wasi-http default client and a raw socket loop.
    Bench(bench::BenchArgs),
    /// Run a wasi:http 0.3 guest (a command) with this transport as its HTTP client.
    Run(Box<run::RunArgs>),
    /// Plug this transport into a wasi:http guest's `wasi:http/client` import, as one component.
    Compose(compose::ComposeArgs),
    /// Serve HTTP with a wasi:http service (0.3 or 0.2), as `wasmtime serve` does, its
    /// instances' outgoing requests all through one pool.
    Serve(Box<serve::ServeArgs>),
}

async fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Get(args) => get::run(*args).await,
        Command::Demo(args) => demo::run(args).await,
        Command::Proxy(args) => proxy::run(*args).await,
        Command::Bench(args) => bench::run(args).await,
        Command::Run(args) => run::run(*args).await,
        Command::Compose(args) => compose::run(args),
        Command::Serve(args) => serve::run(*args).await,
    }
}

/// Where events go: shared by every subcommand.
#[derive(Args, Clone, Default)]
pub struct EventArgs {
    /// Write lifecycle events as JSON Lines to PATH, or to stdout with `-`.
    #[arg(long, value_name = "PATH|-")]
    events: Option<String>,
    /// Stream lifecycle events to a running inspector (also: env ROUNDTRIP_INSPECT).
    #[arg(long, value_name = "HOST:PORT")]
    inspect: Option<String>,
}

impl EventArgs {
    /// Whether `ROUNDTRIP_INSPECT` applies (not when `--inspect` names an inspector).
    fn inspect_from_env(&self) -> bool {
        self.inspect.is_none()
    }

    /// The sinks asked for (`ROUNDTRIP_INSPECT` is added by the transport unless
    /// `--inspect` names an inspector).
    /// [`EventArgs::events`], and a Prometheus sink beside them when `metrics` (for
    /// `--metrics ADDR`).
    fn events_and_metrics(
        &self,
        metrics: bool,
    ) -> Result<(Events, Option<roundtrip_host::metrics::Metrics>), String> {
        let events = self.events()?;
        Ok(match metrics.then(roundtrip_host::metrics::Metrics::new) {
            Some(metrics) => (events.with(metrics.clone()), Some(metrics)),
            None => (events, None),
        })
    }

    fn events(&self) -> Result<Events, String> {
        let mut events = Events::new();
        match self.events.as_deref() {
            None => {}
            Some("-") => events = events.with(JsonLines::stdout()),
            Some(path) => {
                let sink = JsonLines::create(std::path::Path::new(path))
                    .map_err(|e| format!("cannot write events to {path}: {e}"))?;
                events = events.with(sink);
            }
        }
        Ok(match &self.inspect {
            Some(addr) => events.with(TcpSink::connect(addr)),
            None => events,
        })
    }
}

/// Pool and timeout knobs (Go's Transport fields, Go's defaults).
#[derive(Args, Clone)]
pub struct PoolArgs {
    /// Idle connections kept per host (Go MaxIdleConnsPerHost) [default: 2; `serve`: 100,
    /// room for every instance's connections to one upstream]
    #[arg(long, value_name = "N")]
    max_idle_per_host: Option<u32>,
    /// Idle connections kept in all (Go MaxIdleConns; 0 = no limit).
    #[arg(long, value_name = "N", default_value_t = 100)]
    max_idle: u32,
    /// Connections per host, dialing + active + idle; more requests wait (Go MaxConnsPerHost; 0 = no limit).
    #[arg(long, value_name = "N", default_value_t = 0)]
    max_conns_per_host: u32,
    /// Seconds an idle connection is kept (Go IdleConnTimeout; 0 = forever).
    #[arg(long, value_name = "SECS", default_value_t = 90.0)]
    idle_timeout: f64,
    /// Send `Connection: close` and never reuse (Go DisableKeepAlives).
    #[arg(long)]
    no_keepalive: bool,
    /// Close a connection whose body is dropped unread, as Go did before 1.27 (by
    /// default up to 256 KiB of it is drained, within 50 ms, to reuse the connection).
    #[arg(long)]
    no_drain: bool,
    /// Seconds to wait for response headers after the request is sent (Go ResponseHeaderTimeout).
    #[arg(long, value_name = "SECS")]
    response_header_timeout: Option<f64>,
    /// Seconds allowed to open a TCP connection (Go's dialer Timeout).
    #[arg(
        long,
        alias = "connect-timeout",
        value_name = "SECS",
        default_value_t = 30.0
    )]
    dial_timeout: f64,
    /// Happy Eyeballs: seconds before the next address of a name is tried while the
    /// last has not connected (Go Dialer.FallbackDelay; negative = one after another).
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = 0.3,
        allow_negative_numbers = true
    )]
    fallback_delay: f64,
    /// Seconds a connection is idle before TCP keep-alive probes start (Go's
    /// KeepAliveConfig.Idle; its DefaultTransport's Dialer.KeepAlive: 30; curl's name).
    #[arg(long, value_name = "SECS", default_value_t = 30.0)]
    keepalive_time: f64,
    /// Seconds between unanswered TCP keep-alive probes (Go KeepAliveConfig.Interval).
    #[arg(long, value_name = "SECS", default_value_t = 15.0)]
    keepalive_interval: f64,
    /// Unanswered TCP keep-alive probes before the connection is given up (Go
    /// KeepAliveConfig.Count; curl's name).
    #[arg(long, value_name = "N", default_value_t = 9)]
    keepalive_cnt: u32,
    /// Send no TCP keep-alive probes (Go Dialer.KeepAlive < 0; curl's --no-keepalive,
    /// which here names HTTP keep-alive).
    #[arg(long)]
    no_tcp_keepalive: bool,
    /// Seconds to wait for `100 Continue` before sending a body anyway, when the request
    /// has `Expect: 100-continue` (Go ExpectContinueTimeout; 0 = do not wait).
    #[arg(long, value_name = "SECS", default_value_t = 1.0)]
    expect_continue_timeout: f64,
    /// Do not ask for gzip nor decompress (Go DisableCompression).
    #[arg(long)]
    no_compression: bool,
    /// Largest response head accepted, in bytes (Go MaxResponseHeaderBytes).
    #[arg(long, value_name = "N", default_value_t = 10 << 20)]
    max_response_header_bytes: u64,
    /// Instances of the transport, each with its own thread and pool; the caps above
    /// are divided among them. 1: one pool, exactly Go's, which `get` runs on the
    /// thread its requests come from (fastest on few cores).
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    shards: u16,
    #[command(flatten)]
    reach: ReachArgs,
    /// Send requests through this proxy: `[http://][user:password@]host[:port]`,
    /// `https://…` (TLS to the proxy), `socks5://…` (names resolved here) or
    /// `socks5h://…` (by the proxy). `https` requests go through a `CONNECT` tunnel.
    /// Overrides the proxy environment variables.
    #[arg(short = 'x', long, value_name = "URL")]
    proxy: Option<String>,
    /// Hosts to reach without the proxy, comma-separated (`NO_PROXY` syntax: names,
    /// `.suffix`, IPs, CIDRs, `:port`, `*`). Overrides `NO_PROXY`.
    #[arg(long, value_name = "LIST")]
    noproxy: Option<String>,
    /// Extra header for the proxy's `CONNECT`, `Name: value`; repeatable.
    #[arg(long, value_name = "HEADER")]
    proxy_header: Vec<String>,
    #[command(flatten)]
    http: HttpVersionArgs,
    /// HTTP/2: when every stream of a host's connections is taken, wait for one
    /// instead of dialling another connection (Go StrictMaxConcurrentStreams).
    #[arg(long)]
    strict_max_concurrent_streams: bool,
    /// HTTP/2: send a PING after this many seconds without reading anything, to check
    /// the connection (Go ReadIdleTimeout; 0 = never).
    #[arg(long, value_name = "SECS", default_value_t = 0.0)]
    read_idle_timeout: f64,
    /// HTTP/2: seconds a PING may go unanswered before the connection is closed
    /// (Go PingTimeout).
    #[arg(long, value_name = "SECS", default_value_t = 15.0)]
    ping_timeout: f64,
    /// HTTP/2: seconds a request body may wait for the server's flow-control window
    /// without sending a byte before the request fails (Go WriteByteTimeout; 0 = wait
    /// forever).
    #[arg(long, value_name = "SECS", default_value_t = 30.0)]
    write_byte_timeout: f64,
    /// HTTP/2: the largest frame accepted, SETTINGS_MAX_FRAME_SIZE (Go
    /// HTTP2Config.MaxReadFrameSize; 16384..16777215, default 1 MiB).
    #[arg(long, value_name = "BYTES", default_value_t = 1 << 20)]
    max_read_frame_size: u32,
    /// HTTP/2: the connection's receive window (Go
    /// HTTP2Config.MaxReceiveBufferPerConnection; default 1 GiB).
    #[arg(long, value_name = "BYTES", default_value_t = 1 << 30)]
    max_receive_buffer_per_connection: u32,
    /// HTTP/2: each stream's receive window (Go HTTP2Config.MaxReceiveBufferPerStream;
    /// default 4 MiB).
    #[arg(long, value_name = "BYTES", default_value_t = 4 << 20)]
    max_receive_buffer_per_stream: u32,
}

/// The HTTP version, as curl's flags name it.
#[derive(Args, Clone, Copy, Default)]
#[group(multiple = false)]
pub struct HttpVersionArgs {
    /// Speak HTTP/1.1 only (https offers only `http/1.1` in ALPN).
    #[arg(long = "http1.1")]
    http1_1: bool,
    /// HTTP/2 for https when the server agrees in ALPN, else HTTP/1.1 (the default, as
    /// Go's DefaultTransport).
    #[arg(long = "http2")]
    http2: bool,
    /// As --http2, and HTTP/2 from the first byte on plain http:// (h2c, no upgrade).
    #[arg(long = "http2-prior-knowledge")]
    http2_prior_knowledge: bool,
}

impl HttpVersionArgs {
    pub fn protocols(self) -> Protocols {
        if self.http1_1 {
            Protocols::Http1
        } else if self.http2_prior_knowledge {
            Protocols::Http2PriorKnowledge
        } else {
            Protocols::Http2
        }
    }
}

/// Where proxy settings come from when `--proxy` is not given.
#[derive(Clone, Copy, PartialEq, Eq)]
enum ProxyDefault {
    /// `HTTP_PROXY` and friends, as curl and Go read them.
    Environment,
    /// No proxy (a proxy server must not send its own traffic to itself).
    Direct,
}

impl PoolArgs {
    fn proxy_config(&self, default: ProxyDefault) -> Result<ProxyConfig, String> {
        let mut config = match (&self.proxy, default) {
            (Some(url), _) => ProxyConfig::all(url, ""),
            (None, ProxyDefault::Environment) => ProxyConfig::from_env(),
            (None, ProxyDefault::Direct) => ProxyConfig::default(),
        };
        if let Some(list) = &self.noproxy {
            config.no_proxy = list.clone();
        }
        self.reach.proxy_trust(&mut config);
        for header in &self.proxy_header {
            let (name, value) = header
                .split_once(':')
                .ok_or_else(|| format!("bad --proxy-header {header:?}: expected `Name: value`"))?;
            config
                .connect_headers
                .push((name.trim().to_owned(), value.trim().to_owned()));
        }
        Ok(config)
    }

    fn config(
        &self,
        events: Events,
        inspect_from_env: bool,
        proxy: ProxyDefault,
    ) -> Result<Config, String> {
        let seconds = |name: &str, value: f64| {
            Duration::try_from_secs_f64(value)
                .map_err(|_| format!("--{name}: {value} is not a number of seconds"))
        };
        let idle = seconds("idle-timeout", self.idle_timeout)?;
        let expect = seconds("expect-continue-timeout", self.expect_continue_timeout)?;
        let read_idle = seconds("read-idle-timeout", self.read_idle_timeout)?;
        let ping = seconds("ping-timeout", self.ping_timeout)?;
        let write_byte = seconds("write-byte-timeout", self.write_byte_timeout)?;
        Ok(Config {
            max_idle_conns: self.max_idle,
            max_idle_conns_per_host: self.max_idle_per_host.unwrap_or(2),
            max_conns_per_host: self.max_conns_per_host,
            idle_conn_timeout: (!idle.is_zero()).then_some(idle),
            dial_timeout: Some(seconds("dial-timeout", self.dial_timeout)?),
            fallback_delay: if self.fallback_delay < 0.0 {
                None
            } else {
                Some(seconds("fallback-delay", self.fallback_delay)?)
            },
            keep_alive: if self.no_tcp_keepalive {
                None
            } else {
                Some(roundtrip_host::KeepAlive {
                    idle: seconds("keepalive-time", self.keepalive_time)?,
                    interval: seconds("keepalive-interval", self.keepalive_interval)?,
                    count: self.keepalive_cnt,
                })
            },
            expect_continue_timeout: (!expect.is_zero()).then_some(expect),
            disable_compression: self.no_compression,
            max_response_header_bytes: self.max_response_header_bytes,
            response_header_timeout: self
                .response_header_timeout
                .map(|s| seconds("response-header-timeout", s))
                .transpose()?,
            disable_keep_alives: self.no_keepalive,
            disable_drain_on_close: self.no_drain,
            shards: usize::from(self.shards),
            proxy: self.proxy_config(proxy)?,
            protocols: self.http.protocols(),
            strict_max_concurrent_streams: self.strict_max_concurrent_streams,
            read_idle_timeout: (!read_idle.is_zero()).then_some(read_idle),
            ping_timeout: (!ping.is_zero()).then_some(ping),
            write_byte_timeout: (!write_byte.is_zero()).then_some(write_byte),
            http2: roundtrip_host::Http2Config {
                max_read_frame_size: self.max_read_frame_size,
                max_receive_buffer_per_connection: self.max_receive_buffer_per_connection,
                max_receive_buffer_per_stream: self.max_receive_buffer_per_stream,
                max_decoder_header_table_size: 0,
            },
            ..self.reach.config(events, inspect_from_env)?
        })
    }
}

/// TLS trust and where the transport may reach: shared by `get`, `proxy` and `run`.
#[derive(Args, Clone)]
pub struct ReachArgs {
    /// Trust the CA certificates in this PEM file too.
    #[arg(long, value_name = "FILE")]
    cacert: Vec<PathBuf>,
    /// Client certificate chain (PEM) for servers that ask for one; with --key.
    #[arg(long, value_name = "FILE", requires = "key")]
    cert: Option<PathBuf>,
    /// Private key (PEM) of --cert.
    #[arg(long, value_name = "FILE", requires = "cert")]
    key: Option<PathBuf>,
    /// Do not check server certificates (dangerous: warns on every connection).
    #[arg(short = 'k', long)]
    insecure: bool,
    /// CA certificates (PEM) to trust for an `https://` proxy, beside the system's;
    /// repeatable. `--cacert` is for servers only, as in curl.
    #[arg(long, value_name = "FILE")]
    proxy_cacert: Vec<PathBuf>,
    /// Do not check an `https://` proxy's certificate.
    #[arg(long)]
    proxy_insecure: bool,
    /// Allow connections only to these hosts (repeatable): `host`, `*.suffix`, `*`, an
    /// IP (`[::1]` for IPv6), each with an optional `:port`. Without it, any host.
    #[arg(long, value_name = "PATTERN")]
    allow_host: Vec<String>,
    /// Let `file://` URLs read files under DIR (repeatable); without it they are refused.
    #[arg(long, value_name = "DIR")]
    allow_dir: Vec<PathBuf>,
}

impl ReachArgs {
    /// Whom `https://` proxies are trusted as (`--proxy-cacert`, `--proxy-insecure`).
    fn proxy_trust(&self, proxy: &mut ProxyConfig) {
        proxy.ca_files = self.proxy_cacert.clone();
        proxy.insecure = self.proxy_insecure;
    }

    /// Go's defaults with these settings, `events` and `inspect_from_env`.
    fn config(&self, events: Events, inspect_from_env: bool) -> Result<Config, String> {
        let mut proxy = ProxyConfig::default();
        self.proxy_trust(&mut proxy);
        Ok(Config {
            proxy,
            extra_ca_files: self.cacert.clone(),
            client_cert: match (&self.cert, &self.key) {
                (Some(cert), Some(key)) => Some(ClientCert {
                    cert: cert.clone(),
                    key: key.clone(),
                }),
                _ => None,
            },
            insecure_skip_verify: self.insecure,
            allow_hosts: (!self.allow_host.is_empty())
                .then(|| AllowList::parse(&self.allow_host))
                .transpose()?,
            allow_dirs: self.allow_dir.clone(),
            inspect_from_env,
            events,
            ..Config::default()
        })
    }
}

/// Prints a usage-style error and returns exit code 2.
fn usage_error(message: &str) -> ExitCode {
    eprintln!("roundtrip: {message}");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let args = Cli::parse();
    // One thread is enough: the transport is a task of this runtime (or of the
    // caller's `LocalSet`), and workers of `--concurrency` only wait on it. `serve`
    // adds a current-thread runtime per further core, each with its own shard of the
    // transport (`serve::Runtimes`): on tokio's multi-thread runtime every relayed
    // round trip woke the transport's task from another thread.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("roundtrip: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(run(args))
}
