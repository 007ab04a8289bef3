//! `roundtrip run`: an unmodified wasi:http 0.3 guest (`examples/fetch`), composed
//! with the transport through the wasi:http face, against real local servers.

#![allow(clippy::unwrap_used)]

use std::process::{Command, Output};

use roundtrip_host::local_server::{LocalServer, ServerTls};

/// The example guest, as `host/build.rs` leaves it.
const FETCH_WASM: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../target/component/wasm32-wasip2/component/roundtrip_example_fetch.wasm"
);

fn roundtrip(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_roundtrip"))
        .args(args)
        .env_remove("ROUNDTRIP_INSPECT")
        .output()
        .unwrap()
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
