//! Requests through real proxies from Debian packages: tinyproxy (HTTP and `CONNECT`),
//! nginx as a keep-alive forward proxy, microsocks (SOCKS5).

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use roundtrip_host::egress::AllowList;
use roundtrip_host::events::{Event, EventKind};
use roundtrip_host::{ErrorKind, ProxyConfig};
use roundtrip_servers::LocalServer;
use roundtrip_tests::*;

fn dial_addresses(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::DialStart { addr } => Some(addr.clone()),
            _ => None,
        })
        .collect()
}

fn proxy_connects(events: &[Event]) -> Vec<(String, String, Option<String>)> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::ProxyConnect {
                proxy,
                target,
                error,
                ..
            } => Some((proxy.clone(), target.clone(), error.clone())),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_through_tinyproxy_sends_absolute_form_and_basic_auth() {
    let origin = Nginx::start("");
    let proxy = Daemon::tinyproxy("BasicAuth alice s3cret");
    let (transport, recorder) = transport(|c| {
        c.proxy = ProxyConfig::all(&proxy.url("http", Some("alice:s3cret")), "");
    });
    let fetched = get(&transport, &origin.url("/small")).await.unwrap();
    assert_eq!(
        (fetched.status, &fetched.body[..]),
        (200, &b"hello, world\n"[..])
    );
    let events = recorder.events();
    // The dial went to the proxy; the key names it, without the password.
    assert_eq!(
        dial_addresses(&events),
        [format!("127.0.0.1:{}", proxy.port)]
    );
    let key = format!("http://alice@127.0.0.1:{}|http", proxy.port);
    assert!(
        events
            .iter()
            .all(|e| e.key.as_deref().is_none_or(|k| k == key))
    );
    assert!(!events.iter().any(|e| e.to_json().contains("s3cret")));

    // A wrong password, or none: the proxy's refusal is the response, as in Go
    // (tinyproxy 1.11 answers 401 where RFC 9110 says 407).
    for user_info in [Some("alice:wrong"), None] {
        let (refused, _) = roundtrip_tests::transport(|c| {
            c.proxy = ProxyConfig::all(&proxy.url("http", user_info), "");
        });
        let status = get(&refused, &origin.url("/small")).await.unwrap().status;
        assert!(matches!(status, 401 | 407), "{user_info:?}: {status}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_forward_proxy_connection_serves_many_targets() {
    let first = Nginx::start("");
    let second = LocalServer::start().await.unwrap();
    // nginx as a forward proxy: it keeps client connections alive, tinyproxy does not.
    let proxy = Nginx::start("location / { proxy_pass http://$http_host; }");
    let (transport, recorder) = transport(|c| {
        c.proxy = ProxyConfig::all(&format!("127.0.0.1:{}", proxy.port), "");
    });
    for _ in 0..2 {
        let a = get(&transport, &first.url("/small")).await.unwrap();
        let b = get(&transport, &second.url("/small")).await.unwrap();
        assert_eq!(
            (&a.body[..], &b.body[..]),
            (&b"hello, world\n"[..], &b"hello, world\n"[..])
        );
    }
    let events = recorder.events();
    assert_eq!(dials(&events), 1, "{events:#?}");
    assert_eq!(
        dial_addresses(&events),
        [format!("127.0.0.1:{}", proxy.port)]
    );
    let reused = count(&events, |k| {
        matches!(k, EventKind::GotConn { reused: true, .. })
    });
    assert_eq!(reused, 3);
    // The direct server saw only the proxy's connection(s), never ours.
    assert!(second.connections() >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_through_connect_runs_tls_inside_the_tunnel_and_reuses_it() {
    let pki = pki(&["127.0.0.1"]);
    let origin = tls_server(pki.server_config.clone()).await;
    let proxy = Daemon::tinyproxy("");
    let (transport, recorder) = transport(|c| {
        c.proxy = ProxyConfig::all(&proxy.url("http", None), "");
        c.extra_ca_files = vec![pki.ca_file.path().to_owned()];
    });
    let url = format!("https://{}/", origin.addr);
    for _ in 0..2 {
        let fetched = get(&transport, &url).await.unwrap();
        assert_eq!((fetched.status, &fetched.body[..]), (200, &b"hello"[..]));
    }
    let events = recorder.events();
    assert_eq!(
        dial_addresses(&events),
        [format!("127.0.0.1:{}", proxy.port)]
    );
    let proxy_url = format!("http://127.0.0.1:{}", proxy.port);
    assert_eq!(
        proxy_connects(&events),
        [(proxy_url.clone(), origin.addr.to_string(), None)]
    );
    // TLS to the origin ran after the tunnel opened, on the same connection.
    let names: Vec<&str> = events.iter().map(Event::name).collect();
    let tunnel = names.iter().position(|n| *n == "proxy_connect").unwrap();
    let tls = names.iter().position(|n| *n == "tls_done").unwrap();
    assert!(tunnel < tls, "{names:?}");
    assert!(
        events
            .iter()
            .any(|e| matches!(&e.kind, EventKind::TlsDone { error: None, .. }))
    );
    assert_eq!(
        count(&events, |k| matches!(
            k,
            EventKind::GotConn { reused: true, .. }
        )),
        1
    );
    let key = format!("{proxy_url}|https://{}", origin.addr);
    assert!(
        events
            .iter()
            .all(|e| e.key.as_deref().is_none_or(|k| k == key))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_refusing_connect_fails_with_its_status_text() {
    let pki = pki(&["127.0.0.1"]);
    let origin = tls_server(pki.server_config.clone()).await;
    // tinyproxy allows CONNECT to port 443 only: ours is elsewhere.
    let proxy = Daemon::tinyproxy("ConnectPort 443");
    let (transport, recorder) = transport(|c| {
        c.proxy = ProxyConfig::all(&proxy.url("http", None), "");
        c.extra_ca_files = vec![pki.ca_file.path().to_owned()];
    });
    let error = get(&transport, &format!("https://{}/", origin.addr))
        .await
        .unwrap_err();
    assert_eq!(error.kind, ErrorKind::ProxyRefused, "{error}");
    let expected = format!(
        "proxy http://127.0.0.1:{} refused CONNECT to {}: 403 Access violation",
        proxy.port, origin.addr
    );
    assert_eq!(error.message, expected);
    let events = recorder.events();
    let (_, _, reported) = proxy_connects(&events).pop().unwrap();
    assert_eq!(reported.as_deref(), Some(expected.as_str()));
    // The connection is closed, not pooled, and no TLS was tried.
    assert!(closes(&events).contains(&roundtrip_host::events::CloseReason::Error));
    assert_eq!(
        count(&events, |k| matches!(k, EventKind::TlsStart { .. })),
        0
    );
    assert_eq!(transport.stats().await.keys.len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_headers_reach_the_proxy() {
    // A proxy that answers 407 unless our configured header arrived with CONNECT.
    let proxy = RawServer::start(|_, mut socket| async move {
        let head = read_request_head(&mut socket).await.unwrap_or_default();
        let answer: &[u8] = if head.starts_with("CONNECT example.test:443 HTTP/1.1\r\n")
            && head.contains("\r\nX-Tenant: blue\r\n")
        {
            b"HTTP/1.1 599 Header Seen\r\n\r\n"
        } else {
            b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n"
        };
        let _ = tokio::io::AsyncWriteExt::write_all(&mut socket, answer).await;
    })
    .await;
    let (transport, _) = transport(|c| {
        c.proxy = ProxyConfig::all(&format!("http://{}", proxy.addr), "");
        c.proxy.connect_headers = vec![("X-Tenant".to_owned(), "blue".to_owned())];
    });
    let error = get(&transport, "https://example.test/").await.unwrap_err();
    assert_eq!(error.kind, ErrorKind::ProxyRefused);
    assert!(error.message.ends_with(": 599 Header Seen"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_proxy_is_given_up_on_after_the_connect_timeout() {
    let silent = RawServer::start(|_, socket| async move {
        tokio::time::sleep(Duration::from_secs(30)).await;
        drop(socket);
    })
    .await;
    let (transport, recorder) = transport(|c| {
        c.proxy = ProxyConfig::all(&format!("http://{}", silent.addr), "");
        c.proxy_connect_timeout = Some(Duration::from_millis(300));
    });
    let started = std::time::Instant::now();
    let error = get(&transport, "https://example.test/").await.unwrap_err();
    assert_eq!(error.kind, ErrorKind::ConnectionTimeout, "{error}");
    assert_eq!(
        error.message,
        format!(
            "proxy http://{} did not open a tunnel to example.test:443 within 300ms",
            silent.addr
        )
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(closes(&recorder.events()).contains(&roundtrip_host::events::CloseReason::Error));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socks5_without_auth_for_http_and_https() {
    let origin = Nginx::start("");
    let pki = pki(&["127.0.0.1"]);
    let tls_origin = tls_server(pki.server_config.clone()).await;
    let socks = Daemon::microsocks(None);
    for scheme in ["socks5", "socks5h"] {
        let (transport, recorder) = transport(|c| {
            c.proxy = ProxyConfig::all(&socks.url(scheme, None), "");
            c.extra_ca_files = vec![pki.ca_file.path().to_owned()];
        });
        // `localhost`: resolved by the host for socks5, by microsocks for socks5h.
        let plain = format!("http://localhost:{}/small", origin.port);
        assert_eq!(
            get(&transport, &plain).await.unwrap().body,
            "hello, world\n"
        );
        let secure = format!("https://{}/", tls_origin.addr);
        assert_eq!(get(&transport, &secure).await.unwrap().body, "hello");
        let events = recorder.events();
        let proxy = socks.url(scheme, None);
        assert_eq!(
            proxy_connects(&events),
            [
                (proxy.clone(), format!("localhost:{}", origin.port), None),
                (proxy, tls_origin.addr.to_string(), None)
            ],
            "{scheme}"
        );
        assert_eq!(
            dial_addresses(&events),
            vec![format!("127.0.0.1:{}", socks.port); 2]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socks5_with_username_and_password() {
    let origin = Nginx::start("");
    let socks = Daemon::microsocks(Some(("alice", "s3cret")));
    let attempt = |user_info: Option<&str>| {
        let (transport, _) = transport(|c| {
            c.proxy = ProxyConfig::all(&socks.url("socks5h", user_info), "");
        });
        let url = origin.url("/small");
        async move { get(&transport, &url).await }
    };
    assert_eq!(
        attempt(Some("alice:s3cret")).await.unwrap().body,
        "hello, world\n"
    );
    let wrong = attempt(Some("alice:nope")).await.unwrap_err();
    assert_eq!(wrong.kind, ErrorKind::ProxyRefused);
    assert!(
        wrong.message.contains("rejected the username and password"),
        "{wrong}"
    );
    let missing = attempt(None).await.unwrap_err();
    assert_eq!(missing.kind, ErrorKind::ProxyRefused);
    assert!(
        missing.message.contains("requires a username and password"),
        "{missing}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_proxy_and_loopback_go_direct() {
    let origin = Nginx::start("");
    let proxy = Daemon::tinyproxy("");
    // From the environment (Go's rule): loopback goes direct whatever the proxy.
    let (from_env, recorder) = transport(|c| {
        c.proxy = ProxyConfig::from_lookup(|name| {
            (name == "HTTP_PROXY").then(|| proxy.url("http", None))
        });
    });
    get(&from_env, &origin.url("/small")).await.unwrap();
    assert_eq!(
        dial_addresses(&recorder.events()),
        [format!("127.0.0.1:{}", origin.port)]
    );
    // An explicit proxy takes loopback too, unless NO_PROXY names it.
    let (listed, recorder) = transport(|c| {
        c.proxy = ProxyConfig::all(
            &proxy.url("http", None),
            &format!("127.0.0.1:{}", origin.port),
        );
    });
    get(&listed, &origin.url("/small")).await.unwrap();
    assert_eq!(
        dial_addresses(&recorder.events()),
        [format!("127.0.0.1:{}", origin.port)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_must_be_on_the_allow_list() {
    let origin = LocalServer::start().await.unwrap();
    let proxy = Daemon::tinyproxy("");
    let (transport, recorder) = transport(|c| {
        c.proxy = ProxyConfig::all(&proxy.url("http", None), "");
        c.allow_hosts = Some(AllowList::parse(&[&origin.addr().to_string()]).unwrap());
    });
    let error = get(&transport, &origin.url("/small")).await.unwrap_err();
    assert_eq!(error.kind, ErrorKind::DestinationDenied);
    assert!(
        error.message.starts_with(&format!(
            "proxyconnect http://127.0.0.1:{}: connecting to 127.0.0.1:{} is not allowed",
            proxy.port, proxy.port
        )),
        "{error}"
    );
    assert_eq!(origin.connections(), 0);
    assert_eq!(dials(&recorder.events()), 1);
}

/// An `https://` proxy made of real parts: stunnel's TLS (a certificate for
/// `127.0.0.1` from a CA of its own) in front of tinyproxy.
fn https_proxy() -> (Daemon, Daemon, TestPki) {
    let pki = pki(&["127.0.0.1"]);
    let tinyproxy = Daemon::tinyproxy("");
    let stunnel = Daemon::stunnel(&pki, tinyproxy.port);
    (stunnel, tinyproxy, pki)
}

fn tls_servers(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::TlsStart { server } => Some(server.clone()),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_proxy_carries_h2_to_the_origin_inside_its_own_tls() {
    let (stunnel, _tinyproxy, proxy_pki) = https_proxy();
    let (origin, origin_pki) = tls_nginx("location / { }");
    let proxy_url = format!("https://127.0.0.1:{}", stunnel.port);
    let (transport, recorder) = transport(|c| {
        c.proxy = ProxyConfig::all(&proxy_url, "");
        c.proxy.ca_files = vec![proxy_pki.ca_file.path().to_owned()];
        c.extra_ca_files = vec![origin_pki.ca_file.path().to_owned()];
    });
    let url = format!("https://localhost:{}/small", origin.port);
    for _ in 0..3 {
        let fetched = get(&transport, &url).await.unwrap();
        assert_eq!(
            (fetched.status, &fetched.body[..]),
            (200, &b"hello, world\n"[..])
        );
    }
    settled(&transport).await;
    // nginx's account: one connection (the tunnel tinyproxy opened), three requests
    // over HTTP/2.
    assert_eq!(origin.logged(3).await, (1, 3));
    assert_eq!(origin.protocols(), ["HTTP/2.0"; 3]);
    let events = recorder.events();
    assert_eq!(
        dial_addresses(&events),
        [format!("127.0.0.1:{}", stunnel.port)]
    );
    // TLS to the proxy, the CONNECT inside it, then TLS to the origin inside that.
    assert_eq!(tls_servers(&events), ["127.0.0.1", "localhost"]);
    let names: Vec<&str> = events.iter().map(Event::name).collect();
    let tunnel = names.iter().position(|n| *n == "proxy_connect").unwrap();
    let tls: Vec<usize> = (0..names.len())
        .filter(|&i| names[i] == "tls_done")
        .collect();
    assert!(tls[0] < tunnel && tunnel < tls[1], "{names:?}");
    // The CONNECT answer, as Go's OnProxyConnectResponse sees it.
    let answer = events
        .iter()
        .find_map(|e| match &e.kind {
            EventKind::ProxyConnect {
                response,
                error: None,
                ..
            } => response.clone(),
            _ => None,
        })
        .unwrap();
    assert_eq!(
        (
            answer.version.as_str(),
            answer.status,
            answer.reason.as_str()
        ),
        ("HTTP/1.0", 200, "Connection established")
    );
    assert!(
        answer
            .headers
            .iter()
            .any(|(n, v)| n == "Proxy-agent" && v.starts_with("tinyproxy")),
        "{:?}",
        answer.headers
    );
    let protos: Vec<_> = events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::GotConn { proto, reused, .. } => Some((*proto, *reused)),
            _ => None,
        })
        .collect();
    use roundtrip_host::events::Proto::H2;
    assert_eq!(protos, [(H2, false), (H2, true), (H2, true)]);
    let key = format!("{proxy_url}|https://localhost:{}", origin.port);
    assert!(
        events
            .iter()
            .all(|e| e.key.as_deref().is_none_or(|k| k == key))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_proxy_is_checked_against_its_own_roots() {
    let (stunnel, _tinyproxy, proxy_pki) = https_proxy();
    let (origin, origin_pki) = tls_nginx("location / { }");
    let proxy_url = format!("https://127.0.0.1:{}", stunnel.port);
    let url = format!("https://localhost:{}/small", origin.port);
    // The servers' CAs (`--cacert`) are not the proxy's (`--proxy-cacert`), as in curl.
    let (transport, recorder) = transport(|c| {
        c.proxy = ProxyConfig::all(&proxy_url, "");
        c.extra_ca_files = vec![
            origin_pki.ca_file.path().to_owned(),
            proxy_pki.ca_file.path().to_owned(),
        ];
    });
    let error = get(&transport, &url).await.unwrap_err();
    assert_eq!(
        error.kind,
        ErrorKind::TlsCertificateUnknownIssuer,
        "{error}"
    );
    assert!(
        error
            .message
            .starts_with(&format!("proxyconnect {proxy_url}: ")),
        "{error}"
    );
    let events = recorder.events();
    assert_eq!(tls_servers(&events), ["127.0.0.1"]);
    assert!(proxy_connects(&events).is_empty());
    assert_eq!(origin.connections(), (0, 0));
    // Told not to check the proxy (curl's --proxy-insecure), the origin is still
    // checked: with its CA it is reached, without it not.
    for (origin_ca, reached) in [(true, true), (false, false)] {
        let (unchecked, _) = roundtrip_tests::transport(|c| {
            c.proxy = ProxyConfig::all(&proxy_url, "");
            c.proxy.insecure = true;
            if origin_ca {
                c.extra_ca_files = vec![origin_pki.ca_file.path().to_owned()];
            }
        });
        let fetched = get(&unchecked, &url).await;
        assert_eq!(fetched.is_ok(), reached, "{:?}", fetched.err());
    }
    assert_eq!(origin.logged(1).await.1, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_through_an_https_proxy_is_sent_in_absolute_form_inside_tls() {
    let (stunnel, _tinyproxy, proxy_pki) = https_proxy();
    let origin = Nginx::start_counting("location / { }");
    let (transport, recorder) = transport(|c| {
        c.proxy = ProxyConfig::all(&format!("https://127.0.0.1:{}", stunnel.port), "");
        c.proxy.ca_files = vec![proxy_pki.ca_file.path().to_owned()];
    });
    let fetched = get(&transport, &origin.url("/small")).await.unwrap();
    assert_eq!(
        (fetched.status, &fetched.body[..]),
        (200, &b"hello, world\n"[..])
    );
    // tinyproxy forwarded it (its Via), having read it through stunnel's TLS.
    assert!(
        fetched
            .headers
            .get("via")
            .unwrap()
            .to_str()
            .unwrap()
            .contains("tinyproxy")
    );
    assert_eq!(origin.logged(1).await, (1, 1));
    let events = recorder.events();
    assert_eq!(tls_servers(&events), ["127.0.0.1"]);
    assert!(proxy_connects(&events).is_empty());
}
