//! `roundtrip bench`: this transport side by side with its peers, on the same server
//! and the same workloads, in one invocation.
//!
//! ```text
//!  parent: start the server (nginx, or the in-process one)
//!    for each workload × client × repetition:
//!      spawn `roundtrip bench --worker SPEC` ─► the client runs the workload in a
//!      process of its own and prints one JSON measurement (requests, bytes, time,
//!      latencies, its CPU time and peak RSS from /proc)
//!    median per workload × client (by req/s) ─► table, ratios to this transport, JSON
//! ```
//!
//! A process per run keeps CPU time and peak memory apart; the server runs outside
//! the measured process (nginx) or in the parent (the in-process server).

pub mod chart;
mod clients;
mod link;
pub(crate) mod report;
mod serve;
mod server;
mod sockets;
mod wasi_http;

pub use wasi_http::DefaultClient;

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

pub use report::{Report, Row};
pub use server::ServerKind;

/// A client under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Client {
    /// This transport as `Transport::new` runs it: a task of the caller's runtime.
    Roundtrip,
    /// This transport on the caller's thread (`Transport::new_local`).
    RoundtripLocal,
    /// This transport with two shards (`Config::shards`): two store tasks, two pools.
    RoundtripShards2,
    /// hyper-util's legacy pooled client (what reqwest is built on).
    Hyper,
    /// An ordinary wasi:http 0.3 guest in wasmtime with wasmtime-wasi-http's default
    /// client (the wasm peer: a new connection per request).
    WasiHttp,
    /// A keep-alive socket per task writing one pre-built request.
    Raw,
    /// The floor: the host as `Roundtrip` runs it, with `wasm/floor` in place of the
    /// transport (one export call, a write and a read per request; plain HTTP only).
    Floor,
    /// The floor on the caller's thread (`Transport::new_local`).
    FloorLocal,
    /// `--serve`: the relay under `roundtrip serve` (every instance on one pool).
    ServeRoundtrip,
    /// `--serve`: the relay under `roundtrip serve --peer-default-client`: wasmtime
    /// serve's instance rules with wasmtime's default client (a connection per request;
    /// the bench's CA trusted, which stock wasmtime cannot be told).
    ServeDefaultClient,
    /// `--serve`: the relay under the stock `wasmtime serve` binary (plain HTTP only).
    ServeStock,
}

impl Client {
    pub const ALL: [Client; 8] = [
        Client::Roundtrip,
        Client::RoundtripLocal,
        Client::RoundtripShards2,
        Client::Floor,
        Client::FloorLocal,
        Client::Hyper,
        Client::WasiHttp,
        Client::Raw,
    ];

    /// One of this transport's own ways of running.
    pub fn is_ours(self) -> bool {
        matches!(
            self,
            Client::Roundtrip
                | Client::RoundtripLocal
                | Client::RoundtripShards2
                | Client::ServeRoundtrip
        )
    }

    pub fn name(self) -> &'static str {
        match self {
            Client::Roundtrip => "roundtrip",
            Client::RoundtripLocal => "roundtrip local",
            Client::RoundtripShards2 => "roundtrip 2 shards",
            Client::Hyper => "hyper-util",
            Client::WasiHttp => "wasi-http default",
            Client::Raw => "raw loop",
            Client::Floor => "floor",
            Client::FloorLocal => "floor local",
            Client::ServeRoundtrip => "roundtrip serve",
            Client::ServeDefaultClient => "serve, default client",
            Client::ServeStock => "wasmtime serve (stock)",
        }
    }

    /// The floor component, which speaks only plain HTTP/1.1 with small bodies.
    pub fn is_floor(self) -> bool {
        matches!(self, Client::Floor | Client::FloorLocal)
    }

    /// A host of `--serve`.
    pub fn is_serve(self) -> bool {
        matches!(
            self,
            Client::ServeRoundtrip | Client::ServeDefaultClient | Client::ServeStock
        )
    }
}

/// One workload: what to fetch, how often, how many at once.
#[derive(Debug, Clone, PartialEq)]
pub struct Workload {
    pub name: &'static str,
    /// Path on the server: `/small` or the large body.
    pub path: &'static str,
    pub requests: usize,
    pub concurrency: usize,
    /// Over HTTPS (TLS 1.3; one handshake per connection, then reuse).
    pub tls: bool,
    /// Through the delayed link (`link.rs`, 2 ms RTT) instead of straight to the server.
    pub slow_link: bool,
    /// Run for this long instead of for `requests` (the soak), once per client.
    pub seconds: Option<f64>,
    /// To the server's HTTP/2 port (HTTPS, ALPN `h2`); only the clients that speak it.
    pub h2: bool,
}

/// The workloads, scaled by `scale` (1.0 = the full run; `--quick` uses less); the
/// 60 s soak only when `soak`.
pub fn workloads(scale: f64, soak: bool) -> Vec<Workload> {
    let n = |full: usize| ((full as f64 * scale).round() as usize).max(1);
    let small = |name, requests, concurrency, tls, slow_link| Workload {
        name,
        path: "/small",
        requests: n(requests),
        concurrency,
        tls,
        slow_link,
        seconds: None,
        h2: false,
    };
    let mut all = vec![
        small("sequential small GET", 10_000, 1, false, false),
        small("concurrency 16", 20_000, 16, false, false),
        small("concurrency 64", 20_000, 64, false, false),
        Workload {
            name: "256 MiB body",
            path: server::LARGE_PATH,
            requests: 1,
            concurrency: 1,
            tls: false,
            slow_link: false,
            seconds: None,
            h2: false,
        },
        small("HTTPS sequential small GET", 10_000, 1, true, false),
        small("HTTPS concurrency 64", 20_000, 64, true, false),
        Workload {
            h2: true,
            ..small("HTTPS concurrency 64 over HTTP/2", 20_000, 64, true, false)
        },
        small("2 ms RTT sequential small GET", 1_000, 1, false, true),
        small("2 ms RTT concurrency 64", 10_000, 64, false, true),
        small("2 ms RTT HTTPS sequential small GET", 1_000, 1, true, true),
        small("2 ms RTT HTTPS concurrency 64", 10_000, 64, true, true),
    ];
    if soak {
        all.push(Workload {
            seconds: Some((60.0 * scale).max(1.0)),
            ..small("60 s soak, concurrency 64", 0, 64, false, false)
        });
    }
    all
}

/// What a worker process is asked to run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Spec {
    pub client: Client,
    pub url: String,
    pub requests: usize,
    pub concurrency: usize,
    #[serde(default)]
    pub mode: Mode,
    /// The CA to trust for `https://` URLs, as PEM.
    #[serde(default)]
    pub ca_pem: String,
    /// Run for this long rather than for `requests`.
    #[serde(default)]
    pub seconds: Option<f64>,
    /// Header fields every request carries (the raw loop's; the relay's `url`).
    #[serde(default)]
    pub headers: Vec<(String, String)>,
}

/// What a worker measures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Run the workload: throughput, latency, CPU, peak RSS.
    #[default]
    Workload,
    /// Open `concurrency` connections at once, let them all go idle, and measure the
    /// memory they hold.
    IdleMemory,
    /// Time `Transport::new` until the instance serves (this transport only).
    ColdStart,
}

/// What a worker process measured.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Measurement {
    pub requests: u64,
    pub errors: u64,
    pub body_bytes: u64,
    pub seconds: f64,
    pub p50_us: u32,
    pub p99_us: u32,
    /// User + system CPU time of the whole worker process.
    pub cpu_seconds: f64,
    /// Peak resident set size of the worker process.
    pub peak_rss_kib: u64,
    /// Most client connections to the server open at once (sampled by the parent).
    #[serde(default)]
    pub peak_open: u64,
    /// Sockets to or from the server's port left in TIME_WAIT by the run.
    #[serde(default)]
    pub time_wait: u64,
    /// `idle-memory`: connections left idle, and the memory they added.
    #[serde(default)]
    pub idle: Option<IdleMemory>,
    /// This transport's component memory (all shards) at the end of the run: wasm
    /// memory never shrinks, so its high-water mark.
    #[serde(default)]
    pub guest_memory_kib: Option<u64>,
    /// `--serve`: connections the upstream accepted during the run (the kernel's
    /// passive opens, less the load's own connections to the host).
    #[serde(default)]
    pub upstream_opened: Option<u64>,
    /// `--serve`: the upstream connections that carried the run's requests, by
    /// nginx's own log (distinct `$connection` serials); in a report's row, the most
    /// of any run.
    #[serde(default)]
    pub upstream_conns: Option<u64>,
    /// `--serve`: the run's requests nginx logged (each relayed request once).
    #[serde(default)]
    pub upstream_requests: Option<u64>,
}

/// Memory held by idle connections, measured against the same process after one
/// request (one connection).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct IdleMemory {
    pub connections: u64,
    /// Resident memory added, per idle connection (the whole process: host side and
    /// the component's linear memory).
    pub rss_bytes_per_conn: u64,
    /// The component's linear memory added, per idle connection (wasm memory never
    /// shrinks: this is the high-water mark of opening them all at once).
    pub guest_bytes_per_conn: u64,
}

impl Measurement {
    pub fn requests_per_second(&self) -> f64 {
        self.requests as f64 / self.seconds.max(1e-9)
    }

    pub fn megabytes_per_second(&self) -> f64 {
        self.body_bytes as f64 / 1e6 / self.seconds.max(1e-9)
    }

    /// CPU seconds per 10 000 requests.
    pub fn cpu_per_10k(&self) -> f64 {
        self.cpu_seconds * 10_000.0 / (self.requests.max(1) as f64)
    }
}

/// Runs `spec` in this process (the worker side), on a current-thread runtime of its
/// own, the same for every client (`roundtrip` adds its store thread; `roundtrip
/// local` runs it on this one); call it from a plain thread.
pub fn run_worker(spec: &Spec) -> Result<Measurement, String> {
    let spec = spec.clone();
    let mut outcome = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let local = tokio::task::LocalSet::new();
        local.block_on(&runtime, async {
            match spec.mode {
                Mode::Workload => clients::run(&spec).await,
                Mode::IdleMemory => clients::idle_memory(&spec).await,
                Mode::ColdStart => clients::cold_start().await,
            }
        })
    })
    .join()
    .map_err(|_| "the bench worker panicked".to_owned())??;
    outcome.latencies_us.sort_unstable();
    let percentile = |p: f64| -> u32 {
        if let Some((p50, p99)) = outcome.percentiles_us {
            return if p < 0.9 { p50 } else { p99 };
        }
        let all = &outcome.latencies_us;
        if all.is_empty() {
            return 0;
        }
        all[((all.len() - 1) as f64 * p).round() as usize]
    };
    let (cpu_seconds, peak_rss_kib) = process_usage();
    Ok(Measurement {
        requests: outcome.requests,
        errors: outcome.errors,
        body_bytes: outcome.body_bytes,
        seconds: outcome.elapsed.as_secs_f64(),
        p50_us: percentile(0.50),
        p99_us: percentile(0.99),
        cpu_seconds,
        peak_rss_kib,
        idle: outcome.idle,
        guest_memory_kib: outcome.guest_memory.map(|bytes| bytes as u64 / 1024),
        ..Measurement::default()
    })
}

/// CPU seconds (user + system) and peak RSS of this process, from Linux's /proc
/// (`/proc/self/stat` counts in USER_HZ, 100 per second on Linux's ABI).
fn process_usage() -> (f64, u64) {
    let cpu = cpu_seconds("self");
    let rss = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
            line.split_whitespace().nth(1)?.parse().ok()
        })
        .unwrap_or(0);
    (cpu, rss)
}

/// User + system CPU seconds of process `pid` (`self`: this one) so far, from
/// `/proc/PID/stat` (in USER_HZ, 100 per second on Linux's ABI); 0 when unreadable.
pub(crate) fn cpu_seconds(pid: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            // Fields after the command name, which is in parentheses and may hold spaces.
            let rest = stat.rsplit_once(')')?.1;
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let user: f64 = fields.get(11)?.parse().ok()?;
            let system: f64 = fields.get(12)?.parse().ok()?;
            Some((user + system) / 100.0)
        })
        .unwrap_or(0.0)
}

/// How a whole benchmark runs.
#[derive(Debug, Clone)]
pub struct Options {
    pub server: ServerKind,
    pub repetitions: usize,
    /// Workload size factor (1.0 = full).
    pub scale: f64,
    pub clients: Vec<Client>,
    /// Only workloads whose name contains this.
    pub only: Option<String>,
    /// Idle connections for the memory measurement (0 skips it).
    pub idle_connections: usize,
    /// Measure start-up with and without the compiled-component cache.
    pub cold_start: bool,
    /// Add the 60 s soak at concurrency 64 (each client once).
    pub soak: bool,
    /// Run the serve workloads (`serve::workloads`) instead: the relay under
    /// `roundtrip serve` and under wasmtime serve with its default client.
    pub serve: bool,
    /// The `roundtrip` executable (the serve hosts run it).
    pub exe: Option<std::path::PathBuf>,
}

/// How many worker runs `options` makes (for a progress bar).
pub fn planned_runs(options: &Options) -> u64 {
    if options.serve {
        return serve::planned_runs(options);
    }
    let measured: usize = workloads(options.scale, options.soak)
        .iter()
        .filter(|w| {
            options
                .only
                .as_deref()
                .is_none_or(|only| w.name.contains(only))
        })
        .map(|w| options.clients.len() * repetitions(options, w))
        .sum();
    let idle = if options.idle_connections > 0 { 2 } else { 0 };
    let cold = if options.cold_start {
        2 * (options.repetitions + 1)
    } else {
        0
    };
    (measured + idle + cold) as u64
}

/// Runs every workload with every client `repetitions` times, each in a worker
/// process (`worker` builds its command line), and keeps the median run by req/s.
/// `progress` hears about each run as it ends.
pub async fn run(
    options: &Options,
    worker: impl Fn(&Spec) -> std::process::Command,
    mut progress: impl FnMut(&str),
) -> Result<Report, String> {
    let server = server::Server::start(options.server, options.serve).await?;
    if options.serve {
        return serve::run(options, &server, worker, progress).await;
    }
    // The delayed links, one per server port, started when a workload needs one.
    let mut links = Vec::new();
    let mut rows = Vec::new();
    for workload in workloads(options.scale, options.soak) {
        if options
            .only
            .as_deref()
            .is_some_and(|only| !workload.name.contains(only))
        {
            continue;
        }
        let mut url = if workload.h2 {
            server.h2_url(workload.path)
        } else {
            server.url(workload.path, workload.tls)
        };
        if workload.slow_link {
            url = through_link(&url, &mut links).await?;
        }
        for &client in &options.clients {
            // HTTP/2: this transport and hyper-util speak it; the others would fall
            // back to HTTP/1.1 and measure something else.
            if workload.h2 && !(client.is_ours() || client == Client::Hyper) {
                continue;
            }
            if client.is_floor() && (workload.tls || workload.path != "/small") {
                continue;
            }
            let spec = Spec {
                client,
                url: url.clone(),
                requests: workload.requests,
                concurrency: workload.concurrency,
                mode: Mode::Workload,
                ca_pem: server.ca_pem(),
                seconds: workload.seconds,
                headers: Vec::new(),
            };
            let mut runs = Vec::new();
            let repetitions = repetitions(options, &workload);
            for rep in 0..repetitions {
                let measured = run_in_worker(&worker, &spec).await?;
                progress(&format!(
                    "{:<22} {:<10} run {}/{}: {:.0} req/s",
                    workload.name,
                    client.name(),
                    rep + 1,
                    repetitions,
                    measured.requests_per_second()
                ));
                runs.push(measured);
            }
            runs.sort_by(|a, b| a.requests_per_second().total_cmp(&b.requests_per_second()));
            let median = runs[runs.len() / 2].clone();
            rows.push(Row {
                workload: workload.name.to_owned(),
                client,
                runs: runs.len(),
                median,
            });
        }
    }
    let mut idle = Vec::new();
    if options.idle_connections > 0 {
        for client in [Client::Roundtrip, Client::Hyper] {
            let spec = Spec {
                client,
                url: server.url("/small", false),
                requests: 0,
                concurrency: options.idle_connections,
                mode: Mode::IdleMemory,
                ca_pem: String::new(),
                seconds: None,
                headers: Vec::new(),
            };
            let measured = run_in_worker(&worker, &spec).await?;
            if let Some(memory) = measured.idle {
                progress(&format!(
                    "idle memory {:<10} {} connections: {} B each",
                    client.name(),
                    memory.connections,
                    memory.rss_bytes_per_conn
                ));
                idle.push((client, memory));
            }
        }
    }
    let mut cold_start = Vec::new();
    if options.cold_start {
        for cache in [true, false] {
            let spec = Spec {
                client: Client::Roundtrip,
                url: String::new(),
                requests: 0,
                concurrency: 1,
                mode: Mode::ColdStart,
                ca_pem: String::new(),
                seconds: None,
                headers: Vec::new(),
            };
            let command = |spec: &Spec| {
                let mut command = worker(spec);
                if !cache {
                    command.env("ROUNDTRIP_COMPILE_CACHE", "0");
                }
                command
            };
            // The first start with the cache fills it.
            run_in_worker(&command, &spec).await?;
            progress("cold start: warm-up");
            let mut times = Vec::new();
            for rep in 0..options.repetitions {
                let millis = run_in_worker(&command, &spec).await?.seconds * 1000.0;
                progress(&format!(
                    "cold start, cache {}, run {}/{}: {millis:.1} ms",
                    if cache { "on" } else { "off" },
                    rep + 1,
                    options.repetitions
                ));
                times.push(millis);
            }
            times.sort_by(f64::total_cmp);
            let median = times[times.len() / 2];
            progress(&format!(
                "cold start, cache {}: {median:.1} ms",
                if cache { "on" } else { "off" }
            ));
            cold_start.push((cache, median));
        }
    }
    Ok(Report {
        server: server.describe(),
        machine: report::machine(),
        rows,
        idle,
        cold_start,
    })
}

/// The soak is long: each client runs it once.
fn repetitions(options: &Options, workload: &Workload) -> usize {
    if workload.seconds.is_some() {
        1
    } else {
        options.repetitions
    }
}

/// `url` with its port swapped for a delayed link's in front of it.
pub(crate) async fn through_link(
    url: &str,
    links: &mut Vec<(u16, link::Link)>,
) -> Result<String, String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("bad URL {url}: {e}"))?;
    let port = uri.port_u16().ok_or(format!("no port in {url}"))?;
    let link = match links.iter().find(|(to, _)| *to == port) {
        Some((_, link)) => link.port(),
        None => {
            let link = link::Link::start(([127, 0, 0, 1], port).into()).await?;
            let relay = link.port();
            links.push((port, link));
            relay
        }
    };
    Ok(url.replacen(&format!(":{port}/"), &format!(":{link}/"), 1))
}

async fn run_in_worker(
    worker: &impl Fn(&Spec) -> std::process::Command,
    spec: &Spec,
) -> Result<Measurement, String> {
    let port = spec
        .url
        .parse::<http::Uri>()
        .ok()
        .and_then(|uri| uri.port_u16());
    run_in_worker_on(worker, spec, port, None).await
}

/// [`run_in_worker`], counting the sockets of `port` (the server's, or a serve
/// host's upstream); the open ones only `owner`'s when given.
pub(crate) async fn run_in_worker_on(
    worker: &impl Fn(&Spec) -> std::process::Command,
    spec: &Spec,
    port: Option<u16>,
    owner: Option<u32>,
) -> Result<Measurement, String> {
    let mut command = tokio::process::Command::from(worker(spec));
    command.kill_on_drop(true);
    let before = port.map(sockets::count).unwrap_or_default();
    let mut peak_open = 0;
    let output = tokio::time::timeout(Duration::from_secs(600), async {
        let mut output = std::pin::pin!(command.output());
        let mut pause = Duration::ZERO;
        loop {
            tokio::select! {
                done = &mut output => break done,
                () = tokio::time::sleep(pause), if port.is_some() => {
                    // The kernel walks every socket it has for a sample, the tens
                    // of thousands earlier runs left in TIME_WAIT too: the pause
                    // keeps the sampling under 1% of a core of the machine measured.
                    let started = Instant::now();
                    let open = port.map_or(0, |port| sockets::open_to(port, owner));
                    peak_open = peak_open.max(open);
                    pause = (started.elapsed() * 100).max(Duration::from_millis(100));
                }
            }
        }
    })
    .await
    .map_err(|_| format!("{} did not finish within 10 minutes", spec.client.name()))?
    .map_err(|e| format!("cannot start a bench worker: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "bench worker for {} failed: {}",
            spec.client.name(),
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    let mut measured: Measurement = serde_json::from_slice(&output.stdout).map_err(|e| {
        format!(
            "bench worker for {} printed no measurement: {e}",
            spec.client.name()
        )
    })?;
    if let Some(port) = port {
        let after = sockets::count_of(port, owner);
        measured.peak_open = peak_open.max(after.open);
        measured.time_wait = after.time_wait.saturating_sub(before.time_wait);
    }
    Ok(measured)
}
