//! `roundtrip proxy --mitm`: curl's HTTPS requests through the proxy, TLS from curl
//! terminated with a certificate from the proxy's CA, the requests inside sent on to
//! nginx over TLS the transport verifies — and seen as `app_request`s with their
//! `https://` URLs. A client that does not trust the CA fails cleanly and the proxy
//! keeps serving.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use roundtrip_host::events::{AppCloseReason, EventKind, Recorder};
use roundtrip_proxy::{ForwardProxy, Mitm, ProxyOptions};
use roundtrip_servers::ServerTls;
use roundtrip_tests::{Nginx, dials, free_port, transport};

/// nginx serving HTTPS (a certificate for 127.0.0.1 and localhost from `tls`'s CA) on
/// the returned port, keep-alive as usual.
fn nginx_tls(tls: &ServerTls, dir: &std::path::Path) -> (Nginx, u16) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, &tls.cert_pem).unwrap();
    std::fs::write(&key, &tls.key_pem).unwrap();
    let port = free_port();
    let nginx = Nginx::start(&format!(
        "listen 127.0.0.1:{port} ssl; ssl_certificate {}; ssl_certificate_key {};",
        cert.display(),
        key.display()
    ));
    roundtrip_tests::wait_for_port(port, "nginx (TLS)");
    (nginx, port)
}

async fn curl(args: &[&str]) -> std::process::Output {
    tokio::time::timeout(
        Duration::from_secs(30),
        tokio::process::Command::new("curl")
            .args(args)
            .env_remove("HTTPS_PROXY")
            .env_remove("https_proxy")
            .output(),
    )
    .await
    .expect("curl finishes")
    .unwrap()
}

/// The `app_conn_close`s seen so far, once `n` of them have arrived (up to 5 s).
async fn closes(recorder: &Recorder, n: usize) -> Vec<(AppCloseReason, Option<String>)> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let closes: Vec<_> = recorder
            .events()
            .into_iter()
            .filter_map(|e| match e.kind {
                EventKind::AppConnClose { reason, error } => Some((reason, error)),
                _ => None,
            })
            .collect();
        if closes.len() >= n || Instant::now() > deadline {
            return closes;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_s_https_requests_are_seen_inside_the_connect_and_pooled() {
    let dir = tempfile::tempdir().unwrap();
    let tls = ServerTls::generate().unwrap();
    let (_nginx, port) = nginx_tls(&tls, dir.path());
    let ca = dir.path().join("mitm/ca.pem");
    let mitm = Arc::new(Mitm::load_or_create(&ca).unwrap());
    let (pool, recorder) = transport(|config| config.extra_ca_certs = vec![tls.ca_cert.clone()]);
    let options = ProxyOptions {
        mitm: Some(mitm),
        ..ProxyOptions::default()
    };
    let proxy = ForwardProxy::start("127.0.0.1:0", pool, options)
        .await
        .unwrap();
    let url = format!("https://localhost:{port}/small");
    let ca_arg = ca.display().to_string();

    // Trusting the CA: two requests on one connection to the proxy, both seen.
    let trusted = curl(&["-sS", "--cacert", &ca_arg, "-x", &proxy.url(), &url, &url]).await;
    assert!(
        trusted.status.success(),
        "{}",
        String::from_utf8_lossy(&trusted.stderr)
    );
    assert_eq!(trusted.stdout, b"hello, world\nhello, world\n");
    assert_eq!(closes(&recorder, 1).await, [(AppCloseReason::App, None)]);
    let events = recorder.events();
    let requests: Vec<_> = events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::AppRequest {
                url,
                status,
                bytes_in,
                ..
            } => Some((e.app_conn, url.clone(), *status, *bytes_in, e.req)),
            _ => None,
        })
        .collect();
    assert_eq!(requests.len(), 2, "{requests:?}");
    for (app_conn, seen, status, bytes_in, req) in &requests {
        assert_eq!(*app_conn, Some(1));
        assert_eq!(seen, &url);
        assert_eq!(*status, Some(200));
        assert_eq!(*bytes_in, 13);
        assert!(req.is_some(), "linked to the upstream request");
    }
    // Upstream: one TLS connection to nginx, verified against its CA, reused.
    assert_eq!(dials(&events), 1);
    let tls_ok = events
        .iter()
        .filter(|e| matches!(e.kind, EventKind::TlsDone { error: None, .. }))
        .count();
    assert_eq!(tls_ok, 1);
    // No tunnel: nothing was relayed blind.
    assert!(
        !events
            .iter()
            .any(|e| matches!(e.kind, EventKind::TunnelStart { .. }))
    );

    // Not trusting the CA: curl fails its handshake (exit 60), the proxy says why…
    let untrusted = curl(&["-sS", "-x", &proxy.url(), &url]).await;
    assert_eq!(untrusted.status.code(), Some(60), "{untrusted:?}");
    let closed = closes(&recorder, 2).await;
    assert_eq!(closed.len(), 2, "{closed:?}");
    assert_eq!(closed[1].0, AppCloseReason::Error);
    let why = closed[1].1.as_deref().unwrap_or_default();
    assert!(why.contains("TLS handshake failed"), "{why}");
    // … and keeps serving.
    let again = curl(&["-sS", "--cacert", &ca_arg, "-x", &proxy.url(), &url]).await;
    assert!(again.status.success(), "{again:?}");
    assert_eq!(again.stdout, b"hello, world\n");
}
