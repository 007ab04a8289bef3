//! `roundtrip serve` as a user runs it: the binary serving the example relay to curl,
//! its outgoing requests going to a local origin that counts its connections.

#![allow(clippy::unwrap_used)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use roundtrip_servers::LocalServer;

const RELAY_WASM: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../target/component/wasm32-wasip2/component/roundtrip_example_relay.wasm"
);

/// `roundtrip serve` on a free loopback port with `flags`; killed when dropped.
struct Serve {
    child: Child,
    port: u16,
}

impl Serve {
    fn start(flags: &[&str]) -> Self {
        let port = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_roundtrip"))
            .arg("serve")
            .args(["--addr", &format!("127.0.0.1:{port}")])
            .args(flags)
            .arg(RELAY_WASM)
            .env_remove("ROUNDTRIP_INSPECT")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "roundtrip serve did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self { child, port }
    }

    /// Ctrl-C, and how the process ended (within `limit`).
    fn interrupt(&mut self, limit: Duration) -> std::process::ExitStatus {
        Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .unwrap();
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "roundtrip serve did not stop");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port nothing listens on now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// curl: `count` requests to the relay for `upstream`, `parallel` at a time; the
/// status codes, one a line.
fn curl(port: u16, upstream: &str, count: usize, parallel: usize) -> String {
    let mut command = Command::new("curl");
    command
        .args(["-s", "--max-time", "30", "-w", "%{http_code}\\n"])
        .args(["-H", &format!("url: {upstream}")]);
    if parallel > 1 {
        command.args(["--parallel", "--parallel-max", &parallel.to_string()]);
    }
    for _ in 0..count {
        // `-o` goes with one URL: each its own.
        command.args(["-o", "/dev/null", &format!("http://127.0.0.1:{port}/")]);
    }
    let output = command.output().unwrap();
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_conns_per_host_is_one_quota_across_every_instance() {
    let origin = LocalServer::start().await.unwrap();
    let upstream = origin.url("/delay/5");
    // A new instance every 3 requests, and 8 requests at a time: the quota is the
    // pool's, not an instance's.
    let _serve = Serve::start(&[
        "--max-conns-per-host",
        "2",
        "--max-instance-reuse-count",
        "3",
    ]);
    let port = _serve.port;
    let codes = tokio::task::spawn_blocking(move || curl(port, &upstream, 40, 8))
        .await
        .unwrap();
    assert_eq!(codes, "200\n".repeat(40), "{codes}");
    assert!(
        origin.connections() <= 2,
        "{} connections",
        origin.connections()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_lets_requests_in_flight_finish_and_closes_idle_connections_with_events() {
    let origin = LocalServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.jsonl");
    let mut serve = Serve::start(&["--events", events.to_str().unwrap()]);
    let port = serve.port;
    // One idle pool connection first, then a request that takes 800 ms.
    let quick = origin.url("/small");
    let slow = origin.url("/delay/800");
    let first = tokio::task::spawn_blocking(move || curl(port, &quick, 1, 1))
        .await
        .unwrap();
    assert_eq!(first.trim(), "200");
    let in_flight = tokio::task::spawn_blocking(move || curl(port, &slow, 1, 1));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let status = tokio::task::block_in_place(|| serve.interrupt(Duration::from_secs(20)));
    assert!(status.success(), "{status}");
    // The request in flight was answered before the process ended.
    assert_eq!(in_flight.await.unwrap().trim(), "200");
    // New connections are refused once it has stopped.
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
    let text = std::fs::read_to_string(&events).unwrap();
    let names: Vec<serde_json::Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let closes: Vec<&str> = names
        .iter()
        .filter(|e| e["event"] == "close")
        .map(|e| e["reason"].as_str().unwrap())
        .collect();
    assert!(!closes.is_empty(), "no close events:\n{text}");
    assert!(
        closes.iter().all(|r| *r == "transport_shutdown"),
        "{closes:?}"
    );
    // Every instance was retired first, cleanly.
    let ends: Vec<&serde_json::Value> = names
        .iter()
        .filter(|e| e["event"] == "instance_end")
        .collect();
    assert!(!ends.is_empty());
    assert!(ends.iter().all(|e| e.get("error").is_none()), "{ends:?}");
    let last_end = names
        .iter()
        .rposition(|e| e["event"] == "instance_end")
        .unwrap();
    let first_close = names.iter().position(|e| e["event"] == "close").unwrap();
    assert!(
        last_end < first_close,
        "a connection closed before the instances ended"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_the_shared_pools_dials_and_reuses() {
    let origin = LocalServer::start().await.unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    // An instance per request: three instances, one connection.
    let serve = Serve::start(&["--metrics", &listen, "--max-instance-reuse-count", "1"]);
    let port = serve.port;
    let upstream = origin.url("/small");
    let codes = tokio::task::spawn_blocking(move || curl(port, &upstream, 3, 1))
        .await
        .unwrap();
    assert_eq!(codes, "200\n200\n200\n");
    let metrics = tokio::task::spawn_blocking(move || {
        let output = Command::new("curl")
            .args([
                "-s",
                "--max-time",
                "10",
                &format!("http://{listen}/metrics"),
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stdout).into_owned()
    })
    .await
    .unwrap();
    let key = origin.url("");
    let key = key.trim_end_matches('/');
    for line in [
        format!("roundtrip_dials_total{{key=\"{key}\"}} 1"),
        format!("roundtrip_reuses_total{{key=\"{key}\"}} 2"),
        format!("roundtrip_requests_total{{key=\"{key}\"}} 3"),
    ] {
        assert!(metrics.contains(&line), "no `{line}` in:\n{metrics}");
    }
    assert_eq!(origin.connections(), 1);
}
