//! `roundtrip serve`'s engine (`roundtrip_host::serve::Service`) serving the example
//! relays (`wasm/examples/relay`, a wasi:http 0.3 service; `relay-p2`, a 0.2 proxy)
//! to curl, their outgoing requests going to nginx. The upstream connections are
//! counted by nginx's own log (`$connection`), never by our events.

#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::time::Duration;

use roundtrip_host::events::{CloseReason, EventKind, Recorder};
use roundtrip_host::serve::{Options, Runtimes, Service, World};
use roundtrip_host::{Config, Transport};
use roundtrip_tests::*;
use tokio::sync::oneshot;

/// How long one test's serving may take before it fails.
const LIMIT: Duration = Duration::from_secs(120);

/// A running service on a free loopback port; stopped (gracefully) by `stop`.
struct Served {
    addr: std::net::SocketAddr,
    stop: oneshot::Sender<()>,
    done: tokio::task::JoinHandle<Result<(), String>>,
    recorder: Recorder,
}

impl Served {
    async fn start(guest: &[u8], options: Options) -> Self {
        Self::start_on(guest, options, None).await
    }

    /// Thread per core: served on `runtimes`, the transport a shard on each.
    async fn start_on(guest: &[u8], options: Options, runtimes: Option<&Runtimes>) -> Self {
        let recorder = Recorder::new();
        let config = Config {
            events: roundtrip_host::events::Events::new().with(recorder.clone()),
            inspect_from_env: false,
            // As `roundtrip serve` keeps them: room for every instance's connections.
            max_idle_conns_per_host: 100,
            ..Config::default()
        };
        let transport = match runtimes {
            Some(runtimes) => Transport::new_on(config, runtimes.handles()).unwrap(),
            None => Transport::new(config).unwrap(),
        };
        let service = Service::new(guest, transport, options).unwrap();
        let listener = roundtrip_host::serve::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let handles = runtimes.map_or_else(Vec::new, |r| r.handles().to_vec());
        let done = tokio::spawn(async move {
            service
                .serve_on(
                    listener,
                    async {
                        let _ = stopped.await;
                    },
                    &handles,
                )
                .await
        });
        Self {
            addr,
            stop,
            done,
            recorder,
        }
    }

    async fn stop(self) -> Recorder {
        let _ = self.stop.send(());
        tokio::time::timeout(LIMIT, self.done)
            .await
            .expect("serve did not stop")
            .unwrap()
            .unwrap();
        self.recorder
    }

    fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }
}

/// curl sends `count` requests to `url`, each with `url: upstream`, `parallel` at a
/// time (keeping its connections to the service alive, as a browser does); returns
/// the status codes it got. Bounded by curl's own `--max-time` per request and a
/// limit on the whole run.
async fn curl(url: &str, upstream: &str, count: usize, parallel: usize) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("urls");
    let mut lines = String::new();
    for _ in 0..count {
        lines.push_str(&format!("url = \"{url}\"\noutput = \"/dev/null\"\n"));
    }
    std::fs::write(&config, lines).unwrap();
    let mut command = Command::new("curl");
    command
        .args(["-s", "--max-time", "30", "-w", "%{http_code}\\n"])
        .args(["-H", &format!("url: {upstream}")])
        .arg("--config")
        .arg(&config);
    if parallel > 1 {
        command.args(["--parallel", "--parallel-max", &parallel.to_string()]);
    }
    let output = tokio::task::spawn_blocking(move || command.output().unwrap());
    let output = tokio::time::timeout(LIMIT, output)
        .await
        .expect("curl did not finish")
        .unwrap();
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

fn all_ok(statuses: &[String], count: usize) {
    assert_eq!(statuses.len(), count, "{statuses:?}");
    assert!(statuses.iter().all(|s| s == "200"), "{statuses:?}");
}

/// `count` requests relayed one after another, all answered, on ONE upstream
/// connection by nginx's log (`before`: the requests it had logged already).
async fn sequential_on_one_connection(served: &Served, nginx: &Nginx, count: usize, before: usize) {
    let statuses = curl(&served.url(), &nginx.url("/small"), count, 1).await;
    all_ok(&statuses, count);
    let (connections, requests) = nginx.connections();
    assert_eq!(
        (connections, requests),
        (1, before + count),
        "nginx's (connections, requests)"
    );
}

/// `count` requests relayed 8 at a time, all answered, on at most 8 upstream
/// connections by nginx's log (`before`: the requests it had logged already).
async fn eight_at_a_time_on_at_most_eight(
    served: &Served,
    nginx: &Nginx,
    count: usize,
    before: usize,
) {
    let statuses = curl(&served.url(), &nginx.url("/small"), count, 8).await;
    all_ok(&statuses, count);
    let (connections, requests) = nginx.connections();
    assert_eq!(requests, before + count);
    assert!(
        connections <= 8,
        "{connections} upstream connections for 8 at a time"
    );
}

#[tokio::test]
async fn a_03_relay_sends_300_sequential_requests_on_one_upstream_connection() {
    let nginx = Nginx::start_counting("location / { }");
    let served = Served::start(roundtrip_wasm::EXAMPLE_RELAY, Options::default()).await;
    sequential_on_one_connection(&served, &nginx, 300, 0).await;
    let events = served.stop().await.events();
    // Every outgoing request names the instance and the incoming request it served.
    let outgoing: Vec<_> = events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Outgoing { incoming, .. } => Some(*incoming),
            _ => None,
        })
        .collect();
    assert_eq!(outgoing.len(), 300);
    let mut labels: Vec<u64> = outgoing.iter().map(|i| i.unwrap()).collect();
    labels.sort_unstable();
    labels.dedup();
    assert_eq!(labels.len(), 300, "one outgoing request per incoming one");
    // Stopped: the idle connection closed with its event.
    assert_eq!(closes(&events), vec![CloseReason::TransportShutdown]);
}

#[tokio::test]
async fn a_03_relay_at_concurrency_8_uses_at_most_8_upstream_connections() {
    let nginx = Nginx::start_counting("location / { }");
    let served = Served::start(roundtrip_wasm::EXAMPLE_RELAY, Options::default()).await;
    eight_at_a_time_on_at_most_eight(&served, &nginx, 300, 0).await;
    served.stop().await;
}

/// Thread per core (`roundtrip serve` on more than one core): each thread's
/// instances send through that thread's own shard, and the upstream connections
/// still number no more than the requests at once.
#[tokio::test]
async fn thread_per_core_keeps_each_instances_requests_on_its_own_threads_shard() {
    let nginx = Nginx::start_counting("location / { }");
    let runtimes = Runtimes::start(2).unwrap();
    let served = Served::start_on(
        roundtrip_wasm::EXAMPLE_RELAY,
        Options::default(),
        Some(&runtimes),
    )
    .await;
    eight_at_a_time_on_at_most_eight(&served, &nginx, 300, 0).await;
    let recorder = served.stop().await;
    // A connection's id tells its shard: shard `i` of 2 numbers its connections
    // i + 1, i + 3, …
    let mut shards_of_instance: std::collections::HashMap<u64, Vec<u64>> = Default::default();
    for event in recorder.events() {
        if let (EventKind::Outgoing { instance, .. }, Some(conn)) = (&event.kind, event.conn) {
            shards_of_instance
                .entry(*instance)
                .or_default()
                .push((conn - 1) % 2);
        }
    }
    let requests: usize = shards_of_instance.values().map(Vec::len).sum();
    assert_eq!(requests, 300, "outgoing events");
    for (instance, shards) in &shards_of_instance {
        assert!(
            shards.iter().all(|&s| s == shards[0]),
            "instance {instance} sent through both shards: {shards:?}"
        );
    }
    let used: std::collections::HashSet<u64> = shards_of_instance
        .values()
        .map(|shards| shards[0])
        .collect();
    assert_eq!(used.len(), 2, "both threads served: {shards_of_instance:?}");
    drop(runtimes);
}

#[tokio::test]
async fn retiring_instances_closes_none_of_the_pools_connections() {
    let nginx = Nginx::start_counting("location / { }");
    let options = Options {
        // A new instance every 5 requests, 2 at once: dozens retired during the run.
        max_instance_reuse_count: Some(5),
        max_instance_concurrent_reuse_count: Some(2),
        ..Options::default()
    };
    let served = Served::start(roundtrip_wasm::EXAMPLE_RELAY, options).await;
    eight_at_a_time_on_at_most_eight(&served, &nginx, 300, 0).await;
    let events = served.stop().await.events();
    let retired = count(&events, |k| {
        matches!(k, EventKind::InstanceEnd { error: None, .. })
    });
    assert!(retired >= 300 / 5, "only {retired} instances retired");
    assert!(
        closes(&events)
            .iter()
            .all(|reason| *reason == CloseReason::TransportShutdown),
        "a connection closed before shutdown: {:?}",
        closes(&events)
    );
}

#[tokio::test]
async fn a_02_relay_a_new_instance_per_request_still_shares_one_pool() {
    let nginx = Nginx::start_counting("location / { }");
    let served = Served::start(roundtrip_wasm::EXAMPLE_RELAY_P2, Options::default()).await;
    sequential_on_one_connection(&served, &nginx, 300, 0).await;
    eight_at_a_time_on_at_most_eight(&served, &nginx, 300, 300).await;
    let events = served.stop().await.events();
    // wasmtime serve's rule for 0.2: one instance per request.
    assert_eq!(
        count(&events, |k| matches!(k, EventKind::InstanceStart { .. })),
        600
    );
}

#[tokio::test]
async fn both_worlds_are_recognised_and_a_command_is_refused_by_name() {
    let (transport, _) = transport(|_| {});
    let p3 = Service::new(
        roundtrip_wasm::EXAMPLE_RELAY,
        transport.clone(),
        Options::default(),
    );
    assert_eq!(p3.unwrap().world(), World::P3);
    let p2 = Service::new(
        roundtrip_wasm::EXAMPLE_RELAY_P2,
        transport.clone(),
        Options::default(),
    );
    assert_eq!(p2.unwrap().world(), World::P2);
    let Err(message) = Service::new(roundtrip_wasm::EXAMPLE_FETCH, transport, Options::default())
    else {
        panic!("a command was taken for a service");
    };
    assert!(message.contains("not a wasi:http service"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_02_guest_built_by_componentize_py_shares_one_pool() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("relay-py.wasm");
    let guest = tokio::task::spawn_blocking(move || {
        componentize_py(
            "relay-py",
            "../relay-p2/wit",
            "wasi:http/proxy@0.2.12",
            &out,
        )
    })
    .await
    .unwrap();
    let nginx = Nginx::start_counting("location / { }");
    let served = Served::start(&guest, Options::default()).await;
    sequential_on_one_connection(&served, &nginx, 50, 0).await;
    eight_at_a_time_on_at_most_eight(&served, &nginx, 100, 50).await;
    served.stop().await;
}

/// Stock `wasmtime serve` (48, installed by `scripts/stock-wasmtime` with the `serve`
/// feature) on a free port, killed when dropped.
struct StockServe {
    child: std::process::Child,
    port: u16,
}

impl StockServe {
    fn start(component: &std::path::Path) -> Self {
        let binary = std::env::var("WASMTIME").unwrap_or_else(|_| "wasmtime".to_owned());
        let port = free_port();
        let child = Command::new(&binary)
            .args(["serve", "-Scli", "-Sp3", "-Wcomponent-model-async=y"])
            .args(["-Sinherit-network", "-Sallow-ip-name-lookup"])
            .args(["--addr", &format!("127.0.0.1:{port}")])
            .arg(component)
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{binary} cannot run ({e}): run scripts/stock-wasmtime"));
        wait_for_port(port, "wasmtime serve");
        Self { child, port }
    }
}

impl Drop for StockServe {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the wasmtime CLI with `serve`: scripts/stock-wasmtime"]
async fn stock_wasmtime_serve_runs_the_composed_relay_with_a_pool_per_instance() {
    use roundtrip_host::run::{Composition, compose};
    let dir = tempfile::tempdir().unwrap();
    let composed = dir.path().join("relay-plain.wasm");
    // `roundtrip compose --no-tls`: stock serve links no wasi:tls.
    let bytes = compose(roundtrip_wasm::EXAMPLE_RELAY, Composition::NoTls).unwrap();
    std::fs::write(&composed, bytes).unwrap();
    let imports = roundtrip_wasm::compose::imports(&std::fs::read(&composed).unwrap()).unwrap();
    assert!(
        !imports.iter().any(|i| i.starts_with("wasi:tls")),
        "{imports:?}"
    );
    let serve = StockServe::start(&composed);
    let url = format!("http://127.0.0.1:{}/", serve.port);
    let nginx = Nginx::start_counting("location / { }");
    all_ok(&curl(&url, &nginx.url("/small"), 300, 1).await, 300);
    let (sequential, requests) = nginx.connections();
    assert_eq!(requests, 300);
    all_ok(&curl(&url, &nginx.url("/small"), 300, 8).await, 300);
    let (total, requests) = nginx.connections();
    assert_eq!(requests, 600);
    eprintln!(
        "stock wasmtime serve, composed relay: 300 sequential on {sequential} upstream \
         connections, 300 at 8 on {}",
        total - sequential
    );
    // A pool per instance: an instance serves up to 128 requests, so at least three
    // served the sequential ones, each on a connection of its own (measured 3, and 5
    // on a busy machine, where an instance idle for its 1 s is retired); at 8 at once,
    // serve runs several instances, each dialling its own (measured 8 to 18).
    // Wasmtime's own client: 300 each; `roundtrip serve`'s one pool: 1 and at most 8.
    assert!((3..30).contains(&sequential), "{sequential}");
    assert!(total - sequential < 100, "{}", total - sequential);
    // https: the composition has no TLS, and says so.
    let statuses = curl(&url, "https://127.0.0.1:9/", 1, 1).await;
    assert_eq!(statuses, ["500"]);
}
