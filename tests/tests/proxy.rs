//! `roundtrip proxy` (the library's `ForwardProxy`) with real curl as the client.

#![allow(clippy::unwrap_used)]

use roundtrip_host::events::EventKind;
use roundtrip_proxy::{ForwardProxy, ProxyOptions};
use roundtrip_servers::LocalServer;
use roundtrip_tests::{count, dials, pki, tls_server, transport, wait_for_event};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A proxy on a free loopback port in front of `transport`.
async fn proxy_for(transport: roundtrip_host::Transport) -> ForwardProxy {
    ForwardProxy::start("127.0.0.1:0", transport, ProxyOptions::default())
        .await
        .unwrap()
}

/// Runs curl with `args`; returns (exit ok, stdout, stderr).
async fn curl(args: &[&str]) -> (bool, String, String) {
    let output = tokio::process::Command::new("curl")
        .args(["--silent", "--show-error", "--max-time", "20"])
        .args(args)
        .env_remove("http_proxy")
        .env_remove("HTTPS_PROXY")
        .env_remove("https_proxy")
        .env_remove("ALL_PROXY")
        .output()
        .await
        .expect("curl is installed (scripts/test installs it)");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Sends raw bytes to the proxy and reads until it closes (or 5 s pass).
async fn raw_exchange(proxy: &ForwardProxy, request: &[u8]) -> String {
    let mut socket = TcpStream::connect(proxy.addr()).await.unwrap();
    socket.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        socket.read_to_end(&mut answer),
    )
    .await;
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_twice_through_the_proxy_dials_the_origin_once() {
    let origin = LocalServer::start().await.unwrap();
    let (transport, recorder) = transport(|_| {});
    let proxy = proxy_for(transport).await;
    for _ in 0..2 {
        let (ok, body, err) = curl(&["-x", &proxy.url(), &origin.url("/small")]).await;
        assert!(ok, "{err}");
        assert_eq!(body, "hello, world\n");
    }
    let events = recorder.events();
    assert_eq!(dials(&events), 1, "{:?}", recorder.names());
    assert_eq!(
        count(&events, |k| matches!(
            k,
            EventKind::GotConn { reused: true, .. }
        )),
        1
    );
    assert_eq!(origin.connections(), 1);
    assert_eq!(origin.requests(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_fields_stop_at_the_proxy_and_via_is_added() {
    let origin = LocalServer::start().await.unwrap();
    let (transport, _recorder) = transport(|_| {});
    let proxy = proxy_for(transport).await;
    let (ok, head, err) = curl(&[
        "-x",
        &proxy.url(),
        "-H",
        "Connection: X-Secret",
        "-H",
        "X-Secret: 1",
        "-H",
        "Proxy-Authorization: Basic Zm9vOmJhcg==",
        "-H",
        "X-End-To-End: kept",
        &origin.url("/request-head"),
    ])
    .await;
    assert!(ok, "{err}");
    let head = head.to_ascii_lowercase();
    assert!(head.starts_with("get /request-head http/1.1\r\n"), "{head}");
    assert!(head.contains("x-end-to-end: kept\r\n"), "{head}");
    assert!(head.contains("via: 1.1 roundtrip\r\n"), "{head}");
    for gone in ["x-secret", "proxy-authorization", "proxy-connection"] {
        assert!(!head.contains(gone), "{gone} was forwarded: {head}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_client_requests_get_400_and_the_proxy_keeps_serving() {
    let origin = LocalServer::start().await.unwrap();
    let (transport, _recorder) = transport(|_| {});
    let proxy = proxy_for(transport).await;
    let garbage = raw_exchange(&proxy, b"GET\x01 nonsense\r\n\r\n").await;
    assert!(garbage.starts_with("HTTP/1.1 400"), "{garbage:?}");
    let origin_form = raw_exchange(
        &proxy,
        b"GET /small HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(origin_form.starts_with("HTTP/1.1 400"), "{origin_form:?}");
    assert!(
        origin_form.contains("not an absolute http:// URL"),
        "{origin_form}"
    );
    let (ok, body, err) = curl(&["-x", &proxy.url(), &origin.url("/small")]).await;
    assert!(ok, "{err}");
    assert_eq!(body, "hello, world\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_origin_is_a_502_naming_the_cause() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/", closed.local_addr().unwrap());
    drop(closed);
    let (transport, _recorder) = transport(|_| {});
    let proxy = proxy_for(transport).await;
    let (_, head, err) = curl(&["-x", &proxy.url(), "-i", &url]).await;
    assert!(head.starts_with("HTTP/1.1 502"), "{head} {err}");
    assert!(
        head.to_ascii_lowercase()
            .contains("proxy-status: roundtrip; error=connection_refused"),
        "{head}"
    );
    assert!(head.contains("refused"), "{head}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_tunnels_tls_end_to_end_with_tunnel_events() {
    let pki = pki(&["localhost"]);
    let origin = tls_server(pki.server_config.clone()).await;
    let (transport, recorder) = transport(|_| {});
    let proxy = proxy_for(transport).await;
    let url = format!("https://localhost:{}/", origin.addr.port());
    let (ok, body, err) = curl(&[
        "-x",
        &proxy.url(),
        "--cacert",
        pki.ca_file.path().to_str().unwrap(),
        &url,
    ])
    .await;
    assert!(ok, "{err}");
    assert_eq!(body, "hello");
    assert!(wait_for_event(&recorder, |k| matches!(k, EventKind::AppConnClose { .. })).await);
    let all = recorder.events();
    // The app's connection around it, then the tunnel's own events.
    assert_eq!(all.first().map(|e| e.name()), Some("app_conn_open"));
    assert_eq!(all.last().map(|e| e.name()), Some("app_conn_close"));
    assert!(all.iter().all(|e| e.app_conn == Some(1)));
    let events: Vec<_> = all
        .into_iter()
        .filter(|e| e.tunnel.is_some() && e.name() != "tunnel_activity")
        .collect();
    let names: Vec<_> = events.iter().map(|e| e.name()).collect();
    assert_eq!(names, ["tunnel_start", "tunnel_done", "tunnel_close"]);
    assert!(events.iter().all(|e| e.tunnel == Some(1)));
    let EventKind::TunnelClose {
        bytes_up,
        bytes_down,
    } = events[2].kind
    else {
        unreachable!()
    };
    // A TLS handshake and one exchange each way, encrypted.
    assert!(
        bytes_up > 300 && bytes_down > 300,
        "{bytes_up} {bytes_down}"
    );
    assert_eq!(
        events[0].key.as_deref(),
        Some(format!("connect://localhost:{}", origin.addr.port()).as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_to_a_closed_port_is_a_502_and_a_tunnel_error_event() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let target = closed.local_addr().unwrap().to_string();
    drop(closed);
    let (transport, recorder) = transport(|_| {});
    let proxy = proxy_for(transport).await;
    let answer = raw_exchange(
        &proxy,
        format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 502"), "{answer}");
    assert!(
        answer.contains(&format!("cannot reach {target}")),
        "{answer}"
    );
    let events = recorder.events();
    assert!(
        matches!(
            &events[2].kind,
            EventKind::TunnelDone { error: Some(e), .. } if e.contains("refused")
        ),
        "{events:?}"
    );
    // No tunnel: the app's connection ends as any other (`Connection: close`).
    assert!(wait_for_event(&recorder, |k| matches!(k, EventKind::AppConnClose { .. })).await);
    let names: Vec<_> = recorder.events().iter().map(|e| e.name()).collect();
    assert_eq!(
        names,
        [
            "app_conn_open",
            "tunnel_start",
            "tunnel_done",
            "app_conn_close"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_connection_to_the_proxy_is_kept_alive_across_requests() {
    let origin = LocalServer::start().await.unwrap();
    let (transport, recorder) = transport(|_| {});
    let proxy = proxy_for(transport).await;
    // curl reuses its connection to the proxy for several URLs in one run.
    let (ok, body, err) = curl(&[
        "-v",
        "-x",
        &proxy.url(),
        &origin.url("/small"),
        &origin.url("/small?second"),
        &origin.url("/small?third"),
    ])
    .await;
    assert!(ok, "{err}");
    assert_eq!(body, "hello, world\n".repeat(3));
    assert_eq!(
        err.matches("Re-using existing connection").count(),
        2,
        "{err}"
    );
    assert_eq!(dials(&recorder.events()), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_timeout_is_a_504() {
    let origin = LocalServer::start().await.unwrap();
    let (transport, _recorder) = transport(|c| {
        c.response_header_timeout = Some(std::time::Duration::from_millis(100));
    });
    let proxy = proxy_for(transport).await;
    let (_, head, err) = curl(&["-i", "-x", &proxy.url(), &origin.url("/delay/2000")]).await;
    assert!(head.starts_with("HTTP/1.1 504"), "{head} {err}");
    assert!(
        head.to_ascii_lowercase()
            .contains("proxy-status: roundtrip; error=http_response_timeout"),
        "{head}"
    );
    // The proxy goes on serving.
    let (ok, body, err) = curl(&["-x", &proxy.url(), &origin.url("/small")]).await;
    assert!(ok, "{err}");
    assert_eq!(body, "hello, world\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_uploads_through_the_proxy_to_an_echo_that_answers_first() {
    use roundtrip_servers::EchoServer;
    let origin = EchoServer::start().await.unwrap();
    let (transport, _) = transport(|_| {});
    let proxy = proxy_for(transport).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("upload.bin");
    let sent = roundtrip_servers::body_bytes(4 * 1024 * 1024);
    std::fs::write(&file, &sent).unwrap();
    let out = dir.path().join("echoed.bin");
    // Chunked, so the proxy streams it upstream instead of buffering it.
    let (ok, _, err) = curl(&[
        "-x",
        &proxy.url(),
        "-H",
        "Transfer-Encoding: chunked",
        "-T",
        file.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        &origin.url("/echo"),
    ])
    .await;
    assert!(ok, "{err}");
    assert!(
        std::fs::read(&out).unwrap() == sent,
        "the echo came back whole"
    );
    let received = origin.received();
    assert_eq!(received.len(), 1);
    assert_eq!((received[0].bytes, received[0].complete), (4 << 20, true));
}
