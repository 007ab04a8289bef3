//! `roundtrip bench`: this transport beside hyper-util and a raw socket loop, same
//! server, same workloads, one invocation (see `roundtrip_bench`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use roundtrip_bench::{self as bench, Client, Options, ServerKind, Spec};

use super::usage_error;

#[derive(Args)]
pub struct BenchArgs {
    /// The server every client talks to.
    #[arg(long, value_enum, default_value_t = Server::Nginx)]
    server: Server,
    /// Runs per workload and client; the median (by req/s) is reported.
    #[arg(long, default_value_t = 5)]
    repetitions: usize,
    /// A short run (a tenth of the requests), e.g. to check the harness.
    #[arg(long)]
    quick: bool,
    /// Only workloads whose name contains TEXT (e.g. `concurrency 64`).
    #[arg(long, value_name = "TEXT")]
    only: Option<String>,
    /// Idle connections for the memory measurement (0 skips it).
    #[arg(long, value_name = "N", default_value_t = 1000)]
    idle_connections: usize,
    /// Skip the start-up measurement.
    #[arg(long)]
    no_cold_start: bool,
    /// Also run the 60 s soak at concurrency 64 (each client once; 6 s with --quick).
    #[arg(long)]
    soak: bool,
    /// Instead of the clients: the relay service (wasm/examples/relay) under
    /// `roundtrip serve`, under wasmtime serve's rules with wasmtime's default client,
    /// and under the stock `wasmtime serve` where installed (plain HTTP) — req/s,
    /// the host's CPU per request, upstream connections and TIME_WAIT.
    #[arg(long)]
    serve: bool,
    /// Only these clients (comma-separated; default: all).
    #[arg(long, value_enum, value_delimiter = ',', value_name = "CLIENT")]
    clients: Vec<Client>,
    /// Draw the req/s of each client per workload to this PNG (e.g. docs/bench.png).
    #[arg(long, value_name = "PATH")]
    chart: Option<PathBuf>,
    /// Also write the results as JSON to PATH (CSV when PATH ends in `.csv`).
    #[arg(long, value_name = "PATH")]
    out: Option<PathBuf>,
    /// Run one measurement in this process and print it as JSON (used by the parent).
    #[arg(long, hide = true, value_name = "SPEC")]
    worker: Option<String>,
}

#[derive(Clone, Copy, ValueEnum)]
enum Server {
    Nginx,
    InProcess,
}

pub async fn run(args: BenchArgs) -> ExitCode {
    if let Some(spec) = &args.worker {
        return worker(spec);
    }
    if args.repetitions == 0 {
        return usage_error("--repetitions must be at least 1");
    }
    let options = Options {
        server: match args.server {
            Server::Nginx => ServerKind::Nginx,
            Server::InProcess => ServerKind::InProcess,
        },
        repetitions: args.repetitions,
        scale: if args.quick { 0.1 } else { 1.0 },
        clients: if args.clients.is_empty() {
            Client::ALL.to_vec()
        } else {
            args.clients.clone()
        },
        only: args.only.clone(),
        idle_connections: if args.quick {
            args.idle_connections.min(100)
        } else {
            args.idle_connections
        },
        cold_start: !args.no_cold_start,
        soak: args.soak,
        serve: args.serve,
        exe: None,
    };
    let Ok(exe) = std::env::current_exe() else {
        eprintln!("roundtrip bench: cannot find its own executable");
        return ExitCode::from(1);
    };
    let options = bench::Options {
        exe: Some(exe.clone()),
        ..options
    };
    let worker_command = |spec: &Spec| {
        let mut command = std::process::Command::new(&exe);
        command
            .arg("bench")
            .arg("--worker")
            .arg(serde_json::to_string(spec).unwrap_or_default())
            .env_remove("ROUNDTRIP_INSPECT");
        command
    };
    // A bar on a terminal; elsewhere (a log, CI) one line per run.
    let bar = indicatif::ProgressBar::new(bench::planned_runs(&options));
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} {elapsed} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let on_terminal = !bar.is_hidden();
    let progress = |line: &str| {
        bar.inc(1);
        if on_terminal {
            bar.set_message(line.to_owned());
        } else {
            eprintln!("{line}");
        }
    };
    let report = bench::run(&options, worker_command, progress).await;
    bar.finish_and_clear();
    let report = match report {
        Ok(report) => report,
        Err(message) => {
            eprintln!("roundtrip bench: {message}");
            return ExitCode::from(1);
        }
    };
    println!("server: {}\nmachine: {}\n", report.server, report.machine);
    println!("{}", report.table());
    if let Some(path) = &args.out {
        let text = if path.extension().is_some_and(|e| e == "csv") {
            report.csv()
        } else {
            report.json()
        };
        if let Err(e) = std::fs::write(path, text) {
            eprintln!("roundtrip bench: cannot write {}: {e}", path.display());
            return ExitCode::from(1);
        }
    }
    if let Some(path) = &args.chart
        && let Err(message) = bench::chart::draw(&report, path)
    {
        eprintln!("roundtrip bench: cannot draw {}: {message}", path.display());
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}

fn worker(spec: &str) -> ExitCode {
    let spec: Spec = match serde_json::from_str(spec) {
        Ok(spec) => spec,
        Err(e) => return usage_error(&format!("bad --worker spec: {e}")),
    };
    match bench::run_worker(&spec) {
        Ok(measurement) => {
            println!(
                "{}",
                serde_json::to_string(&measurement).unwrap_or_default()
            );
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("{message}");
            ExitCode::from(1)
        }
    }
}
