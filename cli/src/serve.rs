//! `roundtrip serve SERVICE.wasm`: `wasmtime serve` with one pool for every
//! instance's outgoing requests (see `roundtrip_host::serve`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use roundtrip_host::serve::{Options, Runtimes, Service};
use roundtrip_proxy::MetricsServer;

use super::{EventArgs, PoolArgs, ProxyDefault, usage_error};

/// Idle connections kept per upstream host unless `--max-idle-per-host` says: room
/// for every instance's (hyper-util and reqwest keep any number; Go's 2 would close
/// all but two after every burst and dial them again).
const IDLE_PER_HOST: u32 = 100;

#[derive(Args)]
pub struct ServeArgs {
    #[command(flatten)]
    events: EventArgs,
    #[command(flatten)]
    pool: PoolArgs,
    /// Socket address to serve HTTP on (`wasmtime serve`'s default).
    #[arg(long, value_name = "SOCKADDR", default_value = "0.0.0.0:8080")]
    addr: SocketAddr,
    /// Give the guest the environment variable NAME, set to VALUE, or to this
    /// process's value when `=VALUE` is left out (repeatable).
    #[arg(long, value_name = "NAME[=VALUE]")]
    env: Vec<String>,
    /// Requests an instance serves before it is retired [default: 128 for a 0.3
    /// service, 1 for a 0.2 proxy, as `wasmtime serve`]. Its pool connections stay.
    #[arg(long, value_name = "N")]
    max_instance_reuse_count: Option<usize>,
    /// Requests an instance serves at once [default: 16; a 0.2 proxy: 1].
    #[arg(long, value_name = "N")]
    max_instance_concurrent_reuse_count: Option<usize>,
    /// How long an idle instance is kept for reuse (e.g. `1s`, `250ms`).
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = humantime::parse_duration)]
    idle_instance_timeout: Duration,
    /// Threads serving connections [default: one per core, as `wasmtime serve`].
    /// Each has its own instances and its own shard of the pool (the caps divided
    /// among them, so each still holds in all); a connection, and every request it
    /// causes, stays on one thread: the first with none open, else the next in turn. 1: one
    /// pool, exactly Go's.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    threads: Option<u16>,
    /// Serve Prometheus metrics (the shared pool per upstream host) on ADDR, at /metrics.
    #[arg(long, value_name = "ADDR")]
    metrics: Option<String>,
    /// The bench's peer (`roundtrip bench --serve`): wasmtime's default client (a
    /// connection per request) in place of the pool, trusting `--cacert`.
    #[arg(long, hide = true)]
    peer_default_client: bool,
    /// The service: a component exporting `wasi:http/handler@0.3.0` or
    /// `wasi:http/incoming-handler@0.2.x`.
    service: PathBuf,
}

pub async fn run(args: ServeArgs) -> ExitCode {
    let (events, metrics) = match args.events.events_and_metrics(args.metrics.is_some()) {
        Ok(both) => both,
        Err(message) => return usage_error(&message),
    };
    let mut config = match args.pool.config(
        events,
        args.events.inspect_from_env(),
        ProxyDefault::Environment,
    ) {
        Ok(config) => config,
        Err(message) => return usage_error(&message),
    };
    if args.pool.max_idle_per_host.is_none() {
        config.max_idle_conns_per_host = IDLE_PER_HOST;
    }
    let guest = match std::fs::read(&args.service) {
        Ok(guest) => guest,
        Err(e) => return usage_error(&format!("cannot read {}: {e}", args.service.display())),
    };
    let options = Options {
        max_instance_reuse_count: args.max_instance_reuse_count,
        max_instance_concurrent_reuse_count: args.max_instance_concurrent_reuse_count,
        idle_instance_timeout: args.idle_instance_timeout,
        env: super::run::environment(&args.env),
        max_guest_memory: config.max_guest_memory,
    };
    let threads = match args.threads {
        Some(threads) => usize::from(threads),
        None => std::thread::available_parallelism().map_or(1, usize::from),
    };
    if threads > 1 && config.shards > 1 {
        return usage_error("--shards and --threads: give one (each thread is a shard)");
    }
    let runtimes = match Runtimes::start(threads) {
        Ok(runtimes) => runtimes,
        Err(e) => return fail(&format!("cannot start the serving threads: {e}")),
    };
    let transport = if threads > 1 {
        roundtrip_host::Transport::new_on(config, runtimes.handles())
    } else {
        roundtrip_host::Transport::new(config)
    };
    let transport = match transport {
        Ok(transport) => transport,
        Err(e) => return fail(&e.to_string()),
    };
    let service = if args.peer_default_client {
        let mut pem = String::new();
        for file in &args.pool.reach.cacert {
            pem.push_str(&std::fs::read_to_string(file).unwrap_or_default());
        }
        match roundtrip_bench::DefaultClient::new(&pem) {
            Ok(client) => Service::with_hooks(
                &guest,
                transport,
                options,
                std::sync::Arc::new(move || Box::new(client.clone())),
            ),
            Err(message) => Err(message),
        }
    } else {
        Service::new(&guest, transport, options)
    };
    let service = match service {
        Ok(service) => service,
        Err(message) => return fail(&message),
    };
    let listener = match roundtrip_host::serve::bind(args.addr) {
        Ok(listener) => listener,
        Err(e) => return fail(&format!("cannot listen on {}: {e}", args.addr)),
    };
    let _metrics_server = match (&args.metrics, metrics) {
        (Some(listen), Some(metrics)) => match MetricsServer::start(listen, metrics).await {
            Ok(server) => {
                eprintln!("Metrics on {}", server.url());
                Some(server)
            }
            Err(e) => return fail(&format!("cannot serve metrics on {listen}: {e}")),
        },
        _ => None,
    };
    let addr = listener.local_addr().unwrap_or(args.addr);
    let pool = match service.transport().shard_count() {
        1 => "every instance's requests through one pool".to_owned(),
        n => format!("{n} threads, each with its instances and its shard of the pool"),
    };
    eprintln!(
        "Serving HTTP on http://{addr}/ ({}; {pool})",
        service.world().describe()
    );
    let incoming = service.incoming_count();
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
        eprintln!("roundtrip serve: finishing the requests in flight (Ctrl-C again to quit now)");
    };
    let served = tokio::select! {
        served = service.serve_on(listener, shutdown, runtimes.handles()) => served,
        _ = async {
            let _ = tokio::signal::ctrl_c().await;
            let _ = tokio::signal::ctrl_c().await;
        } => Ok(()),
    };
    // `ROUNDTRIP_CROSSINGS=1`: what each incoming request cost at the boundary
    // (docs/performance.md).
    if roundtrip_host::crossings::is_enabled() {
        let crossings = roundtrip_host::crossings::snapshot();
        eprint!("{}", crossings.per_request(incoming()));
    }
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => fail(&message),
    }
}

fn fail(message: &str) -> ExitCode {
    eprintln!("roundtrip serve: {message}");
    ExitCode::from(1)
}
