//! The stock `wasmtime` CLI (48.x) runs an unmodified wasi:http guest composed with
//! the standalone client (`roundtrip compose`), and its requests reuse connections.
//!
//! Ignored by plain `cargo test`: it needs the `wasmtime` binary, which
//! `scripts/stock-wasmtime` installs (`cargo install wasmtime-cli`) and then runs
//! these with `--ignored`. `WASMTIME` may name another binary.

#![allow(clippy::unwrap_used)]

use std::process::{Command, Output};

mod common;

use common::{JOIN_ORDERS, output_within, silent_server, stalling_server};
use roundtrip_servers::{LocalServer, ServerTls};

const FETCH_WASM: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../target/component/wasm32-wasip2/component/roundtrip_example_fetch.wasm"
);

const CHECKS_WASM: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../target/component/wasm32-wasip2/component/roundtrip_example_checks.wasm"
);

/// The example guest with the transport plugged in, as `roundtrip compose` makes it.
fn composed(dir: &std::path::Path) -> std::path::PathBuf {
    compose(FETCH_WASM, &dir.join("fetch-composed.wasm"))
}

fn compose(guest: &str, out: &std::path::Path) -> std::path::PathBuf {
    let status = Command::new(env!("CARGO_BIN_EXE_roundtrip"))
        .args(["compose", guest, "-o", out.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(status.success());
    out.to_owned()
}

fn wasmtime() -> String {
    let binary = std::env::var("WASMTIME").unwrap_or_else(|_| "wasmtime".to_owned());
    let version = Command::new(&binary)
        .arg("--version")
        .output()
        .unwrap_or_else(|e| panic!("{binary} cannot run ({e}): run scripts/stock-wasmtime"));
    let version = String::from_utf8_lossy(&version.stdout);
    assert!(version.starts_with("wasmtime 48."), "{version}");
    binary
}

/// `wasmtime run` with WASI 0.3, the component-model async ABI, the host's network
/// and name lookups, wasi:http types and wasi:tls, events on stderr.
/// Fails the test if it has not ended within a minute.
fn run(app: &std::path::Path, args: &[&str]) -> Output {
    output_within(
        Command::new(wasmtime())
            .args(["run", "-S", "p3", "-W", "component-model-async=y"])
            .args(["-S", "inherit-network", "-S", "allow-ip-name-lookup"])
            .args(["-S", "http", "-S", "tls"])
            .args(["--env", "ROUNDTRIP_EVENTS=1"])
            .arg(app)
            .args(args),
        std::time::Duration::from_secs(60),
    )
}

fn count(text: &str, needle: &str) -> usize {
    text.matches(needle).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the wasmtime CLI: scripts/stock-wasmtime"]
async fn stock_wasmtime_runs_the_composed_guest_on_one_connection() {
    let server = LocalServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let app = composed(dir.path());
    // A host name, looked up through wasi:sockets (`localhost` may give ::1 first,
    // where nothing listens: the next address is tried).
    let url = server.url("/small").replace("127.0.0.1", "localhost");
    let output = run(&app, &["--count", "3", &url]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}{stderr}");
    assert!(
        stdout.starts_with("3 requests, 0 errors, 39 body bytes"),
        "{stdout}"
    );
    assert_eq!(count(&stderr, "EventKind::DialStart"), 1, "{stderr}");
    assert_eq!(count(&stderr, "reused: true"), 2, "{stderr}");
    assert_eq!(server.connections(), 1);
    assert_eq!(server.requests(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the wasmtime CLI: scripts/stock-wasmtime"]
async fn tls_goes_through_wasi_tls_and_its_verdict_is_named() {
    // wasmtime's wasi:tls trusts the public web roots only: a loopback server's
    // certificate is refused, after a real handshake over the socket.
    let tls = ServerTls::generate().unwrap();
    let server = LocalServer::start_tls(&tls, std::time::Duration::ZERO)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let app = composed(dir.path());
    let output = run(&app, &[&server.url("/small")]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stdout}{stderr}");
    assert!(stdout.contains("TlsCertificateError"), "{stdout}");
    assert!(
        stderr.contains(
            "TlsDone(Err(\"tls handshake with 127.0.0.1: invalid peer certificate: UnknownIssuer"
        ),
        "{stderr}"
    );
    assert_eq!(server.connections(), 1);
    assert_eq!(server.requests(), 0);
}

#[test]
#[ignore = "needs the wasmtime CLI: scripts/stock-wasmtime"]
fn a_refused_connection_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let app = composed(dir.path());
    let output = run(&app, &["http://127.0.0.1:1/"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("ConnectionRefused"),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("connection refused"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// `checks ARGS` (wasm/examples/checks) composed and run under stock wasmtime: the same
/// wasi:http behaviour as under `roundtrip run` (cli/tests/run.rs).
fn checks(app: &std::path::Path, args: &[&str]) -> String {
    let output = run(app, args);
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the wasmtime CLI: scripts/stock-wasmtime"]
async fn stock_wasmtime_gives_the_face_wasmtimes_own_semantics() {
    use roundtrip_servers::EchoServer;
    let dir = tempfile::tempdir().unwrap();
    let app = compose(CHECKS_WASM, &dir.path().join("checks-composed.wasm"));
    // Duplex: 8 MB written after `send` returned come back whole.
    let echo = EchoServer::start().await.unwrap();
    assert_eq!(
        checks(&app, &["echo", "8388608", &echo.url("/echo")]),
        "send: ok 200\nbody: 8388608 bytes\necho: intact\ntrailers: ok []\ntransmit: ok\n"
    );
    // Trailers reach the server.
    let report = checks(&app, &["trailers", &echo.url("/echo")]);
    assert!(report.ends_with("transmit: ok\n"), "{report}");
    assert_eq!(echo.received()[1].trailers, vec!["x-checksum".to_owned()]);
    // Length mismatches, before any answer.
    let (silent, _silent) = silent_server().await;
    assert_eq!(
        checks(&app, &["length", "5", "10", &silent]),
        "send: err HttpRequestBodySize(Some(10))\ntransmit: err HttpRequestBodySize(Some(10))\n"
    );
    assert_eq!(
        checks(&app, &["first-byte-timeout", "300", &silent]),
        "options: set\nsend: err ConnectionReadTimeout\ntransmit: err ConnectionReadTimeout\n"
    );
    // A body that fails half-way: both ends hear the guest's own code.
    let report = checks(&app, &["fail", "1048576", &echo.url("/echo")]);
    let gave_up = "InternalError(Some(\"the guest gave up\"))";
    assert!(report.starts_with("send: ok 200\nbody: "), "{report}");
    assert!(
        report.ends_with(&format!(
            "trailers: err {gave_up}\ntransmit: err {gave_up}\n"
        )),
        "{report}"
    );
    // A body that pauses too long.
    let (stalling_url, _stalling) = stalling_server().await;
    assert_eq!(
        checks(&app, &["between-bytes-timeout", "300", &stalling_url]),
        "options: set\nsend: ok 200\nbody: 4 bytes\ntrailers: err ConnectionReadTimeout\ntransmit: ok\n"
    );
    // URIs, checked before any I/O.
    assert_eq!(
        checks(&app, &["no-path", &silent]),
        "send: err HttpRequestUriInvalid\ntransmit: err HttpRequestUriInvalid\n"
    );
    assert_eq!(
        checks(&app, &["other-scheme", &silent]),
        "send: err HttpProtocolError\ntransmit: err HttpProtocolError\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the wasmtime CLI: scripts/stock-wasmtime"]
async fn an_upload_ends_in_every_join_order_as_with_wasmtimes_own_client() {
    use roundtrip_servers::EchoServer;
    let dir = tempfile::tempdir().unwrap();
    let composed = compose(CHECKS_WASM, &dir.path().join("checks-composed.wasm"));
    // The guest as it is runs on wasmtime's own client: the reference.
    let own = std::path::PathBuf::from(CHECKS_WASM);
    let server = EchoServer::start_closing().await.unwrap();
    let url = server.url("/echo");
    for app in [&own, &composed] {
        for order in JOIN_ORDERS {
            assert_eq!(
                checks(app, &["upload", order, "11", &url]),
                "send: ok 200\nbody: 11 bytes\necho: intact\ntrailers: ok []\ntransmit: ok\n",
                "{order} {app:?}"
            );
            assert_eq!(
                checks(app, &["upload-unread", order, "11", &url]),
                "send: ok 200\ntransmit: ok\n",
                "{order} {app:?}"
            );
        }
    }
    // Every body echoed back was read whole by the server (odd connections; a response
    // dropped unread may close its connection before the server reads the body).
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert_eq!(server.connections(), 24);
    let read_back: Vec<_> = server
        .received()
        .into_iter()
        .filter(|r| r.connection % 2 == 1)
        .collect();
    assert_eq!(read_back.len(), 12, "{read_back:?}");
    assert!(
        read_back.iter().all(|r| r.bytes == 11 && r.complete),
        "{read_back:?}"
    );
}
