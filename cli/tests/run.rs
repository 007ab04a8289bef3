//! `roundtrip run`: an unmodified wasi:http 0.3 guest (`wasm/examples/fetch`), composed
//! with the transport through the wasi:http face, against real local servers.

#![allow(clippy::unwrap_used)]

use std::process::{Command, Output};

mod common;

use common::{JOIN_ORDERS, output_within, silent_server, stalling_server, unanswered_dial};
use roundtrip_servers::{LocalServer, ServerTls};

/// The example guest, as `wasm/build.rs` leaves it.
const FETCH_WASM: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../target/component/wasm32-wasip2/component/roundtrip_example_fetch.wasm"
);

/// `roundtrip ARGS`, failing the test if it has not ended within a minute.
fn roundtrip(args: &[&str]) -> Output {
    output_within(
        Command::new(env!("CARGO_BIN_EXE_roundtrip"))
            .args(args)
            .env_remove("ROUNDTRIP_INSPECT"),
        std::time::Duration::from_secs(60),
    )
}

fn events_named(path: &std::path::Path, name: &str) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
        .filter(|event| event["event"] == name)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_composed_guest_fetches_twice_on_one_connection() {
    let server = LocalServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.jsonl");
    let output = roundtrip(&[
        "run",
        "--events",
        events.to_str().unwrap(),
        FETCH_WASM,
        "--count",
        "2",
        &server.url("/small"),
    ]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.starts_with("2 requests, 0 errors, 26 body bytes"),
        "{stdout}"
    );
    // One dial and one reuse, in the events and at the server.
    assert_eq!(events_named(&events, "dial_start").len(), 1);
    let got: Vec<bool> = events_named(&events, "got_conn")
        .iter()
        .map(|e| e["reused"].as_bool().unwrap())
        .collect();
    assert_eq!(got, [false, true]);
    assert_eq!(events_named(&events, "body_eof").len(), 2);
    assert_eq!(server.connections(), 1);
    assert_eq!(server.requests(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_fetch_writes_the_body_and_https_uses_the_hosts_tls() {
    let tls = ServerTls::generate().unwrap();
    let server = LocalServer::start_tls(&tls, std::time::Duration::ZERO)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &tls.ca_pem).unwrap();
    let events = dir.path().join("events.jsonl");
    let output = roundtrip(&[
        "run",
        "--cacert",
        ca.to_str().unwrap(),
        "--events",
        events.to_str().unwrap(),
        FETCH_WASM,
        &server.url("/small"),
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&output.stdout), "hello, world\n");
    let tls_done = events_named(&events, "tls_done");
    assert_eq!(tls_done.len(), 1, "{tls_done:?}");
    assert!(tls_done[0].get("error").is_none(), "{tls_done:?}");
    // Without the CA the certificate is refused, and the guest hears of it.
    let output = roundtrip(&["run", FETCH_WASM, &server.url("/small")]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("TlsCertificateError"),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
}

#[test]
fn failures_reach_the_guest_as_wasi_http_errors() {
    // Nothing listens on port 1; an allow-list keeps the guest from 127.0.0.1.
    let refused = roundtrip(&["run", FETCH_WASM, "http://127.0.0.1:1/"]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&refused.stdout)
            .contains("first error: ErrorCode::ConnectionRefused"),
        "{}",
        String::from_utf8_lossy(&refused.stdout)
    );
    let denied = roundtrip(&[
        "run",
        "--allow-host",
        "example.org",
        FETCH_WASM,
        "http://127.0.0.1:1/",
    ]);
    assert!(
        String::from_utf8_lossy(&denied.stdout).contains("DestinationIpProhibited"),
        "{}",
        String::from_utf8_lossy(&denied.stdout)
    );
}

#[test]
fn a_file_that_is_not_a_component_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let not_wasm = dir.path().join("guest.wasm");
    std::fs::write(&not_wasm, b"hello").unwrap();
    let output = roundtrip(&["run", not_wasm.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("is not a binary-encoded WebAssembly component"),
        "{stderr}"
    );
    let missing = roundtrip(&["run", "/nonexistent/guest.wasm"]);
    assert_eq!(missing.status.code(), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guests_environment_names_its_proxy() {
    // A hyper server answers absolute-form requests too: it stands in for a forward
    // proxy. `example.invalid` never resolves, so an answer proves the proxy was used.
    let proxy = LocalServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.jsonl");
    let proxy_url = format!("http://{}", proxy.addr());
    let output = roundtrip(&[
        "run",
        "--events",
        events.to_str().unwrap(),
        "--env",
        &format!("HTTP_PROXY={proxy_url}"),
        FETCH_WASM,
        "http://example.invalid/small",
    ]);
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&output.stdout), "hello, world\n");
    let dials = events_named(&events, "dial_start");
    assert_eq!(dials.len(), 1);
    assert_eq!(dials[0]["addr"], proxy.addr().to_string());
    assert_eq!(proxy.requests(), 1);
    // Without it, the name is looked up, and fails.
    let output = roundtrip(&["run", FETCH_WASM, "http://example.invalid/small"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("DnsError"),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
}

/// Guests of this repository's own (`wasm/examples/checks`, `wasm/examples/hello`).
const CHECKS_WASM: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../target/component/wasm32-wasip2/component/roundtrip_example_checks.wasm"
);
const HELLO_WASM: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../target/component/wasm32-wasip2/component/roundtrip_example_hello.wasm"
);

/// What `checks ARGS` printed under `roundtrip run` (with `extra` flags before it),
/// the same with either client: the transport plugged into the guest, and the host's
/// wasi:http with the hooks (`--client host`, what `roundtrip serve` gives services).
fn checks(extra: &[&str], args: &[&str]) -> String {
    let plugged = checks_with("plugged", extra, args);
    let host = checks_with("host", extra, args);
    assert_eq!(
        comparable(&host),
        comparable(&as_wasmtimes_own(&plugged)),
        "the two clients disagree on {args:?}"
    );
    plugged
}

/// The report as wasmtime's own client gives it (checked with the stock CLI running
/// the guest as it is): a request that failed before its response head leaves the
/// transmit future `ok` — unless its own body failed it — where the plugged face
/// reports the failure there too.
fn as_wasmtimes_own(report: &str) -> String {
    let sent = report
        .lines()
        .find_map(|line| line.strip_prefix("send: err "))
        .filter(|code| !code.starts_with("HttpRequestBodySize"));
    match sent {
        Some(code) => report.replace(&format!("transmit: err {code}"), "transmit: ok"),
        None => report.to_owned(),
    }
}

/// How many body bytes came before a failure depends on timing: not compared.
fn comparable(report: &str) -> String {
    if !report.contains("trailers: err") {
        return report.to_owned();
    }
    report
        .lines()
        .map(|line| {
            if line.starts_with("body: ") {
                "body: …"
            } else {
                line
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn checks_with(client: &str, extra: &[&str], args: &[&str]) -> String {
    let mut all = vec!["run", "--client", client];
    all.extend_from_slice(extra);
    all.push(CHECKS_WASM);
    all.extend_from_slice(args);
    // Called from async tests whose servers run on the same runtime: the waiting
    // worker hands its tasks to another one first (its LIFO slot is not stolen).
    let output = match tokio::runtime::Handle::try_current() {
        Ok(_) => tokio::task::block_in_place(|| roundtrip(&all)),
        Err(_) => roundtrip(&all),
    };
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "--client {client}: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_streams_a_duplex_echo_written_after_send_returns() {
    use roundtrip_servers::EchoServer;
    let server = EchoServer::start().await.unwrap();
    let eight_mb = (8 * 1024 * 1024).to_string();
    let once = "send: ok 200\nbody: 8388608 bytes\necho: intact\ntrailers: ok []\ntransmit: ok\n";
    let report = checks(&[], &["echo-length", &eight_mb, &server.url("/echo")]);
    assert_eq!(report, once);
    // Twice in a row: the second one reuses the connection the first one finished.
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.jsonl");
    let report = checks(
        &["--events", events.to_str().unwrap()],
        &["echo-twice", &eight_mb, &server.url("/echo")],
    );
    assert_eq!(report, once.repeat(2));
    let reused: Vec<bool> = events_named(&events, "got_conn")
        .iter()
        .map(|e| e["reused"].as_bool().unwrap())
        .collect();
    assert_eq!(reused, [false, true]);
    assert_eq!(
        server.connections(),
        4,
        "one for each guest run, with each client"
    );
    let received = server.received();
    assert_eq!(received.len(), 6);
    assert!(received.iter().all(|r| r.bytes == 8_388_608 && r.complete));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_ends_whichever_of_send_transmit_and_body_the_guest_polls_first() {
    use roundtrip_servers::EchoServer;
    // The server answers at the head, echoes the body, and closes after it: the
    // response comes before the body is written, and the guest writes its trailers
    // before it drops its body writer.
    let server = EchoServer::start_closing().await.unwrap();
    let url = server.url("/echo");
    let mut runs = 0;
    for order in JOIN_ORDERS {
        assert_eq!(
            checks(&[], &["upload", order, "11", &url]),
            "send: ok 200\nbody: 11 bytes\necho: intact\ntrailers: ok []\ntransmit: ok\n",
            "{order}"
        );
        assert_eq!(
            checks(&[], &["upload-unread", order, "11", &url]),
            "send: ok 200\ntransmit: ok\n",
            "{order}"
        );
        runs += 2;
    }
    // One connection each, with each client (plugged, then host); the server read
    // every body whole that was echoed back (the first two of every four). A response
    // dropped unread closes its connection, which may come before the server has read
    // the body it was sent (transmit said `ok`: the bytes were written).
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert_eq!(server.connections(), 2 * runs as u64);
    let read_back: Vec<_> = server
        .received()
        .into_iter()
        .filter(|r| (r.connection - 1) % 4 < 2)
        .collect();
    assert_eq!(read_back.len(), runs, "{read_back:?}");
    assert!(
        read_back.iter().all(|r| r.bytes == 11 && r.complete),
        "{read_back:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_guest_body_fails_the_response_and_the_transmit_with_its_own_code() {
    use roundtrip_servers::EchoServer;
    let server = EchoServer::start().await.unwrap();
    let report = checks(&[], &["fail", "1048576", &server.url("/echo")]);
    let lines: Vec<&str> = report.lines().collect();
    let gave_up = "InternalError(Some(\"the guest gave up\"))";
    assert_eq!(lines[0], "send: ok 200", "{report}");
    assert!(lines[1].starts_with("body: "), "{report}");
    assert_eq!(lines[2], format!("trailers: err {gave_up}"), "{report}");
    assert_eq!(lines[3], format!("transmit: err {gave_up}"), "{report}");
    // The server never saw the body end.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(!server.received()[0].complete);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_breaks_its_content_length_is_named_with_its_size() {
    let (url, _server) = silent_server().await;
    // Longer: the offending write counts whole, as wasmtime-wasi-http counts it.
    assert_eq!(
        checks(&[], &["length", "5", "10", &url]),
        "send: err HttpRequestBodySize(Some(10))\ntransmit: err HttpRequestBodySize(Some(10))\n"
    );
    // Shorter: the bytes that came.
    assert_eq!(
        checks(&[], &["length", "10", "4", &url]),
        "send: err HttpRequestBodySize(Some(4))\ntransmit: err HttpRequestBodySize(Some(4))\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guests_request_trailers_are_sent() {
    use roundtrip_servers::EchoServer;
    let server = EchoServer::start().await.unwrap();
    let report = checks(&[], &["trailers", &server.url("/echo")]);
    assert!(
        report.starts_with("send: ok 200\nbody: 3 bytes\n"),
        "{report}"
    );
    assert!(report.ends_with("transmit: ok\n"), "{report}");
    let received = server.received();
    assert_eq!(received[0].trailers, vec!["x-checksum".to_owned()]);
    assert!(received[0].complete);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_options_bound_the_connect_the_first_byte_and_the_gaps() {
    let (hanging, _fillers, _listener) = unanswered_dial().await;
    assert_eq!(
        checks(&[], &["connect-timeout", "300", &hanging]),
        "options: set\nsend: err ConnectionTimeout\ntransmit: err ConnectionTimeout\n"
    );
    let (silent, _server) = silent_server().await;
    assert_eq!(
        checks(&[], &["first-byte-timeout", "300", &silent]),
        "options: set\nsend: err ConnectionReadTimeout\ntransmit: err ConnectionReadTimeout\n"
    );
    let (stalling, _server) = stalling_server().await;
    assert_eq!(
        checks(&[], &["between-bytes-timeout", "300", &stalling]),
        "options: set\nsend: ok 200\nbody: 4 bytes\ntrailers: err ConnectionReadTimeout\ntransmit: ok\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uris_are_checked_before_any_io_as_wasmtime_checks_them() {
    let server = LocalServer::start().await.unwrap();
    let url = server.url("/small");
    assert_eq!(
        checks(&[], &["no-path", &url]),
        "send: err HttpRequestUriInvalid\ntransmit: err HttpRequestUriInvalid\n"
    );
    assert_eq!(
        checks(&[], &["no-authority", &url]),
        "send: err HttpRequestUriInvalid\ntransmit: err HttpRequestUriInvalid\n"
    );
    assert_eq!(
        checks(&[], &["other-scheme", &url]),
        "send: err HttpProtocolError\ntransmit: err HttpProtocolError\n"
    );
    assert_eq!(server.connections(), 0, "nothing was dialled");
    // The host's setter refuses a bad port; the good one then works.
    assert_eq!(
        checks(&[], &["bad-port", &url]),
        "set-authority: refused\nsend: ok 200\nbody: 13 bytes\ntrailers: ok []\ntransmit: ok\n"
    );
}

#[test]
fn a_command_without_wasi_http_runs_as_it_is() {
    let output = roundtrip(&["run", HELLO_WASM, "class"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&output.stdout), "hello, class\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_close_at_exit_and_the_guests_environment_sets_the_knobs() {
    let server = LocalServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.jsonl");
    let output = roundtrip(&[
        "run",
        "--events",
        events.to_str().unwrap(),
        FETCH_WASM,
        "--count",
        "3",
        "--concurrency",
        "2",
        &server.url("/small"),
    ]);
    assert!(output.status.success());
    // Two connections, both idle at the end: both closed when the guest returned.
    assert_eq!(events_named(&events, "dial_start").len(), 2);
    let closes = events_named(&events, "close");
    assert_eq!(closes.len(), 2, "{closes:?}");
    assert!(
        closes
            .iter()
            .all(|c| c["reason"] == "close_idle_connections")
    );

    // No idle connection kept: every request dials.
    let events = dir.path().join("no-idle.jsonl");
    let output = roundtrip(&[
        "run",
        "--events",
        events.to_str().unwrap(),
        "--env",
        "ROUNDTRIP_MAX_IDLE_CONNS_PER_HOST=0",
        FETCH_WASM,
        "--count",
        "3",
        &server.url("/small"),
    ]);
    assert!(output.status.success());
    assert_eq!(events_named(&events, "dial_start").len(), 3);
    // A value that does not parse is named.
    let output = roundtrip(&[
        "run",
        "--env",
        "ROUNDTRIP_DIAL_TIMEOUT=soon",
        FETCH_WASM,
        &server.url("/small"),
    ]);
    assert_eq!(output.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("ROUNDTRIP_DIAL_TIMEOUT=soon: not a duration"),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wasi_http_guest_gets_http2_and_shares_one_connection() {
    // The guest knows nothing of HTTP/2: the face's transport speaks it where TLS
    // agrees, and eight concurrent fetches share one connection as streams.
    let tls = ServerTls::generate().unwrap();
    let server = roundtrip_servers::H2Server::start(&tls).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &tls.ca_pem).unwrap();
    let events = dir.path().join("events.jsonl");
    let output = roundtrip(&[
        "run",
        "--cacert",
        ca.to_str().unwrap(),
        "--events",
        events.to_str().unwrap(),
        FETCH_WASM,
        "--count",
        "40",
        "--concurrency",
        "8",
        &server.url("/delay/20"),
    ]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.starts_with("40 requests, 0 errors"), "{stdout}");
    let got = events_named(&events, "got_conn");
    assert_eq!(got.len(), 40);
    assert!(got.iter().all(|e| e["proto"] == "h2"), "{got:?}");
    let conns: std::collections::HashSet<&serde_json::Value> =
        got.iter().map(|e| &e["conn"]).collect();
    assert_eq!(conns.len(), 1, "{conns:?}");
    // The first eight raced to dial before the server was known to speak h2: every
    // dial but one was closed unused (`unneeded`), and the server saw as many.
    let dials = events_named(&events, "dial_start").len();
    let unneeded = events_named(&events, "close")
        .iter()
        .filter(|e| e["reason"] == "unneeded")
        .count();
    assert_eq!(unneeded, dials - 1);
    let counters = server.counters();
    let seen = counters
        .connections
        .load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(seen as usize, dials);
    assert!(
        counters
            .peak_streams
            .load(std::sync::atomic::Ordering::SeqCst)
            > 1
    );
}
