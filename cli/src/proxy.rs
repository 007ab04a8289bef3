//! `roundtrip proxy`: a forward proxy through the transport, so any program's
//! connections can be watched (`HTTP_PROXY=http://127.0.0.1:3128 your-app`).

use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;
use roundtrip_host::Transport;
use roundtrip_proxy::{ForwardProxy, MetricsServer, Mitm, ProxyOptions};

use super::{EventArgs, PoolArgs, ProxyDefault, usage_error};

#[derive(Args)]
pub struct ProxyArgs {
    /// Address to listen on (port 0 picks a free one).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:3128")]
    listen: String,
    /// Do not print a line per request on stderr.
    #[arg(short, long)]
    quiet: bool,
    /// Terminate TLS from apps (`CONNECT`) with certificates from a local CA, so their
    /// HTTPS requests are seen and pooled; apps must trust the CA (--mitm-ca).
    #[arg(long)]
    mitm: bool,
    /// The MITM CA (certificate and key, PEM): made there when missing, else loaded
    /// [default: ~/.local/share/roundtrip/mitm-ca.pem].
    #[arg(long, value_name = "FILE", requires = "mitm")]
    mitm_ca: Option<std::path::PathBuf>,
    /// Serve Prometheus metrics (pool per key, apps per program) on ADDR, at /metrics.
    #[arg(long, value_name = "ADDR")]
    metrics: Option<String>,
    #[command(flatten)]
    events: EventArgs,
    #[command(flatten)]
    pool: PoolArgs,
}

pub async fn run(args: ProxyArgs) -> ExitCode {
    let (events, metrics) = match args.events.events_and_metrics(args.metrics.is_some()) {
        Ok(both) => both,
        Err(message) => return usage_error(&message),
    };
    let config =
        match args
            .pool
            .config(events, args.events.inspect_from_env(), ProxyDefault::Direct)
        {
            Ok(config) => config,
            Err(message) => return usage_error(&message),
        };
    let tunnel_dial_timeout = config
        .dial_timeout
        .unwrap_or(ProxyOptions::default().tunnel_dial_timeout);
    let transport = match Transport::new(config.clone()) {
        Ok(transport) => transport,
        Err(e) => {
            eprintln!("roundtrip proxy: {e}");
            return ExitCode::from(1);
        }
    };
    let log: Option<roundtrip_proxy::Log> =
        (!args.quiet).then(|| Arc::new(|line: &str| eprintln!("{line}")) as _);
    let mitm = if args.mitm {
        match Mitm::open(args.mitm_ca.as_deref()) {
            Ok(mitm) => Some(Arc::new(mitm)),
            Err(e) => {
                eprintln!("roundtrip proxy: {e}");
                return ExitCode::from(1);
            }
        }
    } else {
        None
    };
    let options = ProxyOptions {
        tunnel_dial_timeout,
        log,
        allow_hosts: config.allow_hosts.clone(),
        mitm: mitm.clone(),
    };
    let proxy = match ForwardProxy::start(&args.listen, transport.clone(), options).await {
        Ok(proxy) => proxy,
        Err(e) => {
            eprintln!("roundtrip proxy: cannot listen on {}: {e}", args.listen);
            return ExitCode::from(1);
        }
    };
    let metrics_server = match (&args.metrics, metrics) {
        (Some(listen), Some(metrics)) => match MetricsServer::start(listen, metrics).await {
            Ok(server) => Some(server),
            Err(e) => {
                eprintln!("roundtrip proxy: cannot serve metrics on {listen}: {e}");
                return ExitCode::from(1);
            }
        },
        _ => None,
    };
    // The first line says where it listens (a script reads the port from it).
    eprintln!(
        "roundtrip proxy: listening on {}\n  try: curl -x {} http://example.com/\n  or:  HTTP_PROXY={} HTTPS_PROXY={} your-program",
        proxy.addr(),
        proxy.url(),
        proxy.url(),
        proxy.url()
    );
    if let Some(mitm) = &mitm {
        eprintln!(
            "  MITM: TLS from apps is terminated here; apps must trust the CA in {}\n  \
             e.g. curl --cacert {} -x {} https://example.com/",
            mitm.path().display(),
            mitm.path().display(),
            proxy.url()
        );
    }
    if let Some(server) = &metrics_server {
        eprintln!("  metrics: {}", server.url());
    }
    match tokio::signal::ctrl_c().await {
        Ok(()) => eprintln!("roundtrip proxy: interrupted; closing connections"),
        Err(e) => eprintln!("roundtrip proxy: cannot wait for Ctrl-C ({e}); stopping"),
    }
    drop(proxy);
    transport.shutdown().await;
    ExitCode::SUCCESS
}
