//! `roundtrip bench --serve`: the relay service (`wasm/examples/relay`: each request
//! forwarded to the URL in its `url` header) served by different hosts to the same
//! load (the raw keep-alive loop in a worker process), its upstream the bench's
//! server — straight, over HTTPS, or through the 2 ms-RTT link.
//!
//! ```text
//!  worker (raw loop, C sockets) ──► host: the relay ──► upstream (nginx)
//!                                   roundtrip serve            ▲ counted here:
//!                                   serve + default client     │ peak open, TIME_WAIT
//!                                   wasmtime serve (stock)
//! ```
//!
//! Each host is a process of its own; its CPU per request is read from
//! `/proc/PID/stat` around each run, and the upstream sockets are counted on the
//! server's port. A warm-up run (discarded) goes first: the instances' compile and the
//! first connections are not what is measured.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::server::{LOG_FLUSH, Server};
use super::{Client, Measurement, Mode, Options, Report, Row, Spec};

/// One serve workload.
struct Workload {
    name: &'static str,
    requests: usize,
    concurrency: usize,
    tls: bool,
    slow_link: bool,
}

fn workloads(scale: f64) -> Vec<Workload> {
    let n = |full: usize| ((full as f64 * scale).round() as usize).max(1);
    let relay = |name, requests, concurrency, tls, slow_link| Workload {
        name,
        requests: n(requests),
        concurrency,
        tls,
        slow_link,
    };
    vec![
        relay("relay sequential", 3_000, 1, false, false),
        relay("relay concurrency 64", 20_000, 64, false, false),
        relay("relay HTTPS sequential", 2_000, 1, true, false),
        relay("relay HTTPS concurrency 64", 10_000, 64, true, false),
        relay("relay 2 ms RTT sequential", 500, 1, false, true),
        relay("relay 2 ms RTT concurrency 64", 5_000, 64, false, true),
    ]
}

/// The hosts compared on `workload`: the stock binary only on plain HTTP (it
/// trusts only the public web roots) and only where it is installed.
fn hosts(workload: &Workload, stock: Option<&Path>) -> Vec<Client> {
    let mut hosts = vec![Client::ServeRoundtrip, Client::ServeDefaultClient];
    if !workload.tls && stock.is_some() {
        hosts.push(Client::ServeStock);
    }
    hosts
}

/// The stock `wasmtime` CLI with `serve` (`WASMTIME`, else on the `PATH`).
fn stock_wasmtime() -> Option<PathBuf> {
    let binary = std::env::var("WASMTIME").unwrap_or_else(|_| "wasmtime".to_owned());
    let output = Command::new(&binary).arg("serve").output().ok()?;
    let said = String::from_utf8_lossy(&output.stderr);
    // Built without `serve`, it takes `serve` for a file name.
    (!said.contains("failed to open wasm module")).then(|| PathBuf::from(binary))
}

fn selected<'a>(options: &'a Options, all: Vec<Workload>) -> impl Iterator<Item = Workload> + 'a {
    all.into_iter().filter(|w| {
        options
            .only
            .as_deref()
            .is_none_or(|only| w.name.contains(only))
    })
}

pub fn planned_runs(options: &Options) -> u64 {
    let stock = stock_wasmtime();
    selected(options, workloads(options.scale))
        .map(|w| hosts(&w, stock.as_deref()).len() * options.repetitions)
        .sum::<usize>() as u64
}

/// A host serving the relay on a free loopback port; killed when dropped.
struct Host {
    child: Child,
    port: u16,
}

impl Host {
    fn start(
        client: Client,
        exe: &Path,
        stock: Option<&Path>,
        relay: &Path,
        ca: &Path,
    ) -> Result<Self, String> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let addr = format!("127.0.0.1:{port}");
        let mut command = match client {
            Client::ServeStock => {
                let mut command = Command::new(stock.ok_or("no stock wasmtime")?);
                command
                    .args(["serve", "-Scli", "-Sp3", "-Wcomponent-model-async=y"])
                    .args(["-Sinherit-network", "-Sallow-ip-name-lookup"]);
                command
            }
            _ => {
                let mut command = Command::new(exe);
                command.arg("serve").arg("--cacert").arg(ca);
                if client == Client::ServeDefaultClient {
                    command.arg("--peer-default-client");
                }
                command
            }
        };
        let child = command
            .args(["--addr", &addr])
            .arg(relay)
            .env_remove("ROUNDTRIP_INSPECT")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", client.name()))?;
        let host = Host { child, port };
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(&addr).is_err() {
            if Instant::now() > deadline {
                return Err(format!("{} did not listen within a minute", client.name()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(host)
    }

    /// User + system CPU seconds of the host process so far.
    fn cpu_seconds(&self) -> f64 {
        super::cpu_seconds(&self.child.id().to_string())
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub async fn run(
    options: &Options,
    server: &Server,
    worker: impl Fn(&Spec) -> Command,
    mut progress: impl FnMut(&str),
) -> Result<Report, String> {
    let exe = options
        .exe
        .clone()
        .ok_or("no roundtrip executable to serve with")?;
    let stock = stock_wasmtime();
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let relay = dir.path().join("relay.wasm");
    std::fs::write(&relay, roundtrip_wasm::EXAMPLE_RELAY).map_err(|e| e.to_string())?;
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, server.ca_pem()).map_err(|e| e.to_string())?;
    let mut links = Vec::new();
    let mut rows = Vec::new();
    for workload in selected(options, workloads(options.scale)) {
        let mut upstream = server.url("/small", workload.tls);
        if workload.slow_link {
            upstream = super::through_link(&upstream, &mut links).await?;
        }
        let upstream_port = upstream
            .parse::<http::Uri>()
            .ok()
            .and_then(|uri| uri.port_u16());
        // Every host up first, and the repetitions taken in turn: a slow minute of
        // the machine weighs on each host alike.
        let hosts: Vec<(Client, Host)> = hosts(&workload, stock.as_deref())
            .into_iter()
            // `--clients` naming serve hosts narrows the run to them.
            .filter(|client| {
                !options.clients.iter().any(|c| c.is_serve()) || options.clients.contains(client)
            })
            .map(|client| {
                Ok((
                    client,
                    Host::start(client, &exe, stock.as_deref(), &relay, &ca)?,
                ))
            })
            .collect::<Result<_, String>>()?;
        let spec = |host: &Host, requests| Spec {
            client: Client::Raw,
            url: format!("http://127.0.0.1:{}/", host.port),
            requests,
            concurrency: workload.concurrency,
            mode: Mode::Workload,
            ca_pem: String::new(),
            seconds: None,
            headers: vec![("url".to_owned(), upstream.clone())],
        };
        // Warm-up: instances made and compiled, first connections dialled.
        for (_, host) in &hosts {
            super::run_in_worker_on(
                &worker,
                &spec(host, workload.concurrency * 4),
                upstream_port,
                Some(host.child.id()),
            )
            .await?;
        }
        // Where each run's lines start in nginx's log: its end once the warm-up's
        // lines are flushed, then wherever the run before left it.
        let log = server.connection_log();
        let mut logged = match &log {
            Some(log) => {
                tokio::time::sleep(LOG_FLUSH * 2).await;
                std::fs::metadata(log).map_or(0, |m| m.len())
            }
            None => 0,
        };
        let mut runs: Vec<Vec<Measurement>> = vec![Vec::new(); hosts.len()];
        for rep in 0..options.repetitions {
            for (i, (client, host)) in hosts.iter().enumerate() {
                let cpu = host.cpu_seconds();
                let opens = passive_opens();
                let mut measured = super::run_in_worker_on(
                    &worker,
                    &spec(host, workload.requests),
                    upstream_port,
                    Some(host.child.id()),
                )
                .await?;
                // The host's CPU, not the load generator's.
                measured.cpu_seconds = host.cpu_seconds() - cpu;
                // Accepted: the load's connections to the host, then the upstream's
                // (through the link, each one twice: by the link, then by nginx).
                let accepted = passive_opens().saturating_sub(opens);
                let upstream = accepted.saturating_sub(workload.concurrency as u64);
                measured.upstream_opened = Some(if workload.slow_link {
                    upstream / 2
                } else {
                    upstream
                });
                if let Some(log) = &log {
                    tokio::time::sleep(LOG_FLUSH * 2).await;
                    let serials = Serials::read(log, logged)?;
                    logged = serials.end;
                    if serials.requests != measured.requests {
                        progress(&format!(
                            "{}: nginx logged {} requests of a run of {}",
                            client.name(),
                            serials.requests,
                            measured.requests
                        ));
                    }
                    measured.upstream_conns = Some(serials.connections);
                    measured.upstream_requests = Some(serials.requests);
                }
                progress(&format!(
                    "{:<30} {:<24} run {}/{}: {:.0} req/s, upstream: {} conns opened, \
                     peak {} open (sampled), nginx's log: {} requests on {} conns, {} errors",
                    workload.name,
                    client.name(),
                    rep + 1,
                    options.repetitions,
                    measured.requests_per_second(),
                    measured.upstream_opened.unwrap_or_default(),
                    measured.peak_open,
                    measured.upstream_requests.unwrap_or_default(),
                    measured.upstream_conns.unwrap_or_default(),
                    measured.errors
                ));
                runs[i].push(measured);
            }
        }
        for ((client, _), mut runs) in hosts.into_iter().zip(runs) {
            runs.sort_by(|a, b| a.requests_per_second().total_cmp(&b.requests_per_second()));
            let mut median = runs[runs.len() / 2].clone();
            // A bound on upstream connections holds only if it holds in every run.
            median.upstream_conns = runs.iter().filter_map(|r| r.upstream_conns).max();
            rows.push(Row {
                workload: workload.name.to_owned(),
                client,
                runs: runs.len(),
                median,
            });
        }
    }
    Ok(Report {
        server: format!(
            "{} (upstream); hosts serve wasm/examples/relay; load: the raw keep-alive loop",
            server.describe()
        ),
        machine: super::report::machine(),
        rows,
        idle: Vec::new(),
        cold_start: Vec::new(),
    })
}

/// What nginx's connection log says of one run: its lines from an offset on.
struct Serials {
    /// Requests logged.
    requests: u64,
    /// Distinct connections they came on.
    connections: u64,
    /// The log's length as read: where the next run's lines start.
    end: u64,
}

impl Serials {
    fn read(log: &Path, from: u64) -> Result<Self, String> {
        use std::io::{Read, Seek, SeekFrom};
        let failed = |e: std::io::Error| format!("cannot read {}: {e}", log.display());
        let mut file = std::fs::File::open(log).map_err(failed)?;
        file.seek(SeekFrom::Start(from)).map_err(failed)?;
        let mut run = String::new();
        file.read_to_string(&mut run).map_err(failed)?;
        let lines: Vec<&str> = run.lines().map(str::trim).collect();
        let connections = lines.iter().collect::<std::collections::HashSet<_>>().len();
        Ok(Serials {
            requests: lines.len() as u64,
            connections: connections as u64,
            end: from + run.len() as u64,
        })
    }
}

/// TCP connections this machine has accepted so far (`Tcp: PassiveOpens` of
/// `/proc/net/snmp`): the bench is all that accepts while it runs.
fn passive_opens() -> u64 {
    let snmp = std::fs::read_to_string("/proc/net/snmp").unwrap_or_default();
    let mut tcp = snmp.lines().filter(|line| line.starts_with("Tcp:"));
    let (Some(names), Some(values)) = (tcp.next(), tcp.next()) else {
        return 0;
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(name, _)| *name == "PassiveOpens")
        .and_then(|(_, value)| value.parse().ok())
        .unwrap_or(0)
}
