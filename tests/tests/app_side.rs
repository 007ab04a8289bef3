//! The app's side of `roundtrip proxy`: real clients whose connection behaviour is
//! known (Python's urllib, `http.client`, `requests.Session`, curl) through the proxy
//! to nginx with keep-alive, so that the proxy's upstream pool — which reuses its
//! connection whatever the app does — cannot explain what the `app_*` events say.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use roundtrip_host::events::{AppCloseReason, Event, EventKind, Recorder};
use roundtrip_proxy::{ForwardProxy, ProxyOptions};
use roundtrip_servers::PythonHttpServer;
use roundtrip_tests::{Nginx, dials, run_app, transport};

/// Debian's Python, which has Debian's `python3-requests` (`scripts/test` installs it).
const PYTHON: &str = "/usr/bin/python3";

/// An `app_request`: its `app_conn`, URL, status, bytes in and upstream `req`.
type RequestSeen = (u64, String, Option<u16>, u64, Option<u64>);

/// What the `app_*` events say about the app's connections.
#[derive(Debug)]
struct AppView {
    /// `app_conn` of each `app_conn_open`, with its peer, pid and process.
    opened: Vec<(u64, String, Option<u32>, Option<String>)>,
    /// `app_conn` of each `app_request`, with its URL, status and bytes in.
    requests: Vec<RequestSeen>,
    closed: Vec<(u64, AppCloseReason)>,
}

fn app_view(events: &[Event]) -> AppView {
    let mut view = AppView {
        opened: Vec::new(),
        requests: Vec::new(),
        closed: Vec::new(),
    };
    for event in events {
        let app = event.app_conn.unwrap_or_default();
        match &event.kind {
            EventKind::AppConnOpen { peer, pid, process } => {
                view.opened.push((app, peer.clone(), *pid, process.clone()));
            }
            EventKind::AppRequest {
                url,
                status,
                bytes_in,
                ..
            } => view
                .requests
                .push((app, url.clone(), *status, *bytes_in, event.req)),
            EventKind::AppConnClose { reason, .. } => view.closed.push((app, *reason)),
            _ => {}
        }
    }
    view
}

/// Runs curl through `proxy` for `url` twice on one command line, with `extra`
/// options; returns its pid.
async fn curl_twice(proxy: &ForwardProxy, extra: &[&str], url: &str) -> u32 {
    let proxy_url = proxy.url();
    let mut args = vec!["--silent", "--show-error", "-x", &proxy_url];
    args.extend_from_slice(extra);
    args.extend([url, url]);
    run_app(proxy, "curl", &args).await
}

/// Waits (up to 5 s) until `n` app connections have closed.
async fn wait_for_closes(recorder: &Recorder, n: usize) -> AppView {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let view = app_view(&recorder.events());
        if view.closed.len() >= n || Instant::now() > deadline {
            return view;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Checks the view for `connections` app connections carrying `requests` requests in
/// all, every one opened by `pid` running `program`, each request a 200 with nginx's
/// 13-byte body, linked to an upstream request, every connection closed by the app.
fn assert_app(view: &AppView, pid: u32, program: &str, connections: usize, requests: usize) {
    assert_eq!(view.opened.len(), connections, "{view:#?}");
    let peers: BTreeSet<&String> = view.opened.iter().map(|(_, peer, ..)| peer).collect();
    assert_eq!(
        peers.len(),
        connections,
        "each connection its own client port"
    );
    for (_, _, owner, process) in &view.opened {
        assert_eq!(*owner, Some(pid), "{view:#?}");
        assert!(
            process.as_deref().is_some_and(|p| p.contains(program)),
            "{process:?}"
        );
    }
    assert_eq!(view.requests.len(), requests, "{view:#?}");
    let used: BTreeSet<u64> = view.requests.iter().map(|(app, ..)| *app).collect();
    assert_eq!(used.len(), connections, "{view:#?}");
    for (_, url, status, bytes_in, req) in &view.requests {
        assert!(url.ends_with("/small"), "{url}");
        assert_eq!(*status, Some(200));
        assert_eq!(*bytes_in, 13);
        assert!(req.is_some(), "linked to its upstream request");
    }
    assert_eq!(view.closed.len(), connections, "{view:#?}");
    assert!(
        view.closed.iter().all(|(_, r)| *r == AppCloseReason::App),
        "{view:#?}"
    );
}

async fn proxy_with_recorder() -> (ForwardProxy, Recorder) {
    let (transport, recorder) = transport(|_| {});
    let proxy = ForwardProxy::start("127.0.0.1:0", transport, ProxyOptions::default())
        .await
        .unwrap();
    (proxy, recorder)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn urllib_without_a_session_opens_a_connection_per_request() {
    let nginx = Nginx::start("");
    let (proxy, recorder) = proxy_with_recorder().await;
    let script = format!(
        "import urllib.request\nfor _ in range(5):\n    urllib.request.urlopen({:?}).read()\n",
        nginx.url("/small")
    );
    let pid = run_app(&proxy, PYTHON, &["-c", &script]).await;
    let view = wait_for_closes(&recorder, 5).await;
    assert_app(&view, pid, "python3", 5, 5);
    // Upstream the pool reused one connection: that is not what the app did.
    assert_eq!(dials(&recorder.events()), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_client_keeps_one_connection_for_five_requests() {
    let nginx = Nginx::start("");
    let (proxy, recorder) = proxy_with_recorder().await;
    let addr = proxy.addr();
    let script = format!(
        "import http.client\nc = http.client.HTTPConnection({:?}, {})\n\
         for _ in range(5):\n    c.request('GET', {:?})\n    c.getresponse().read()\nc.close()\n",
        addr.ip().to_string(),
        addr.port(),
        nginx.url("/small")
    );
    let pid = run_app(&proxy, PYTHON, &["-c", &script]).await;
    let view = wait_for_closes(&recorder, 1).await;
    assert_app(&view, pid, "python3", 1, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_requests_session_reuses_its_connection() {
    let nginx = Nginx::start("");
    let (proxy, recorder) = proxy_with_recorder().await;
    let script = format!(
        "import requests\ns = requests.Session()\nfor _ in range(5):\n    s.get({:?}).content\ns.close()\n",
        nginx.url("/small")
    );
    let pid = run_app(&proxy, PYTHON, &["-c", &script]).await;
    let view = wait_for_closes(&recorder, 1).await;
    assert_app(&view, pid, "python3", 1, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_with_two_urls_sends_both_on_one_connection() {
    let nginx = Nginx::start("");
    let (proxy, recorder) = proxy_with_recorder().await;
    let url = nginx.url("/small");
    let pid = curl_twice(&proxy, &[], &url).await;
    let view = wait_for_closes(&recorder, 1).await;
    assert_app(&view, pid, "curl", 1, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_1_0_origin_does_not_make_the_app_close_its_connection() {
    // The proxy answers in its own version, HTTP/1.1: curl keeps its connection to the
    // proxy for the second URL although the origin closed after the first.
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("small"), "hello, world\n").unwrap();
    let origin = PythonHttpServer::start(root.path()).unwrap();
    let (proxy, recorder) = proxy_with_recorder().await;
    let url = origin.url("/small");
    let pid = curl_twice(&proxy, &[], &url).await;
    let view = wait_for_closes(&recorder, 1).await;
    assert_app(&view, pid, "curl", 1, 2);
    // Upstream the origin's way: a connection per request.
    assert_eq!(dials(&recorder.events()), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connect_tunnel_is_the_app_s_connection_with_its_activity() {
    // A TLS-less "tunnel": curl asked to tunnel plain HTTP (`--proxytunnel`) carries
    // two exchanges over one CONNECT.
    let nginx = Nginx::start("");
    let (proxy, recorder) = proxy_with_recorder().await;
    let url = nginx.url("/small");
    let pid = curl_twice(&proxy, &["--proxytunnel"], &url).await;
    let view = wait_for_closes(&recorder, 1).await;
    assert_eq!(view.opened.len(), 1, "{view:#?}");
    assert_eq!(view.opened[0].2, Some(pid));
    // The proxy cannot see inside a tunnel: no app_request, but its bytes.
    assert!(view.requests.is_empty(), "{view:#?}");
    let events = recorder.events();
    let app = view.opened[0].0;
    let activity: (u64, u64) = events
        .iter()
        .filter(|e| e.app_conn == Some(app))
        .filter_map(|e| match e.kind {
            EventKind::TunnelActivity {
                bytes_up,
                bytes_down,
            } => Some((bytes_up, bytes_down)),
            _ => None,
        })
        .fold((0, 0), |(u, d), (a, b)| (u + a, d + b));
    let closed = events
        .iter()
        .find_map(|e| match e.kind {
            EventKind::TunnelClose {
                bytes_up,
                bytes_down,
            } if e.app_conn == Some(app) => Some((bytes_up, bytes_down)),
            _ => None,
        })
        .expect("tunnel_close on the app's connection");
    assert_eq!(activity, closed, "activity adds up to the tunnel's totals");
    // Two answers of nginx came down the tunnel.
    assert!(closed.1 > 2 * 13, "{closed:?}");
    let names: Vec<&str> = events
        .iter()
        .filter(|e| e.app_conn == Some(app))
        .map(Event::name)
        .collect();
    assert_eq!(names.first(), Some(&"app_conn_open"));
    assert_eq!(names.last(), Some(&"app_conn_close"), "{names:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_does_not_parse_is_closed_by_the_proxy() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (proxy, recorder) = proxy_with_recorder().await;
    let mut socket = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
    socket.write_all(b"NOT HTTP AT ALL\r\n\r\n").await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), socket.read_to_end(&mut answer)).await;
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 400"));
    let view = wait_for_closes(&recorder, 1).await;
    assert_eq!(view.closed, vec![(1, AppCloseReason::Proxy)]);
    // This test's own process owns the socket.
    assert_eq!(view.opened[0].2, Some(std::process::id()));
}
