//! Go's MaxConnsPerHost, dials in progress and socket late binding, over real sockets.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use http_body_util::BodyExt;
use roundtrip_host::Body;
use roundtrip_host::events::EventKind;
use roundtrip_servers::LocalServer;
use roundtrip_tests::*;

/// Go: TestTransportMaxConnsPerHost.
#[tokio::test]
async fn max_conns_per_host_queues_requests_on_one_connection() {
    let server = LocalServer::start().await.unwrap();
    let (transport, recorder) = transport(|c| c.max_conns_per_host = 1);
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let transport = transport.clone();
            let url = server.url("/delay/50");
            tokio::spawn(async move { get(&transport, &url).await.unwrap() })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap().body, "hello, world\n");
    }
    let events = recorder.events();
    assert_eq!(dials(&events), 1);
    assert_eq!(server.connections(), 1);
    let waits = count(
        &events,
        |k| matches!(k, EventKind::WaitForConn { reason } if reason == "max_conns_per_host"),
    );
    assert_eq!(waits, 3);
    let stats = transport.stats().await;
    assert_eq!((stats.keys[0].idle, stats.keys[0].waiting), (1, 0));
}

/// Go: TestTransportMaxConnsPerHostIncludeDialInProgress.
#[tokio::test]
async fn a_dial_in_progress_counts_against_max_conns_per_host() {
    let pki = pki(&["localhost"]);
    let server =
        tls_server_slow_handshake(pki.server_config.clone(), 0, Duration::from_millis(300)).await;
    let ca = pki.ca_file.path().to_owned();
    let (transport, recorder) = transport(move |c| {
        c.extra_ca_files = vec![ca];
        c.max_conns_per_host = 1;
    });
    let url = format!("https://localhost:{}/", server.addr.port());
    let first = {
        let (transport, url) = (transport.clone(), url.clone());
        tokio::spawn(async move { get(&transport, &url).await.unwrap() })
    };
    // While the first dial is still in its handshake, a second request must wait.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let stats = transport.stats().await;
    assert_eq!((stats.keys[0].dialing, stats.keys[0].waiting), (1, 1));
    let second = get(&transport, &url).await.unwrap();
    assert_eq!(first.await.unwrap().body, "hello");
    assert_eq!(second.body, "hello");
    assert!(second.conn.reused);
    assert_eq!(dials(&recorder.events()), 1);
}

/// Go: TestTransportSocketLateBinding.
#[tokio::test]
async fn a_waiting_request_takes_the_connection_that_frees_up_first() {
    let pki = pki(&["localhost"]);
    // The second connection's handshake takes a second: its dial is still running
    // when the first connection becomes free.
    let server =
        tls_server_slow_handshake(pki.server_config.clone(), 1, Duration::from_secs(1)).await;
    let ca = pki.ca_file.path().to_owned();
    let (transport, recorder) = transport(move |c| c.extra_ca_files = vec![ca]);
    let url = format!("https://localhost:{}/", server.addr.port());
    let first = transport
        .round_trip(
            http::Request::get(url.as_str())
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    let first_conn = first
        .extensions()
        .get::<roundtrip_host::ConnectionInfo>()
        .unwrap()
        .id;
    let second = {
        let (transport, url) = (transport.clone(), url.clone());
        tokio::spawn(async move { get(&transport, &url).await.unwrap() })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        transport.stats().await.keys[0].dialing,
        1,
        "the second request is dialing"
    );
    // Reading the first body to its end frees connection 1: the waiting request takes it.
    first.into_body().collect().await.unwrap();
    let second = tokio::time::timeout(Duration::from_millis(700), second)
        .await
        .expect("served before its own dial finished")
        .unwrap();
    assert_eq!(second.conn.id, first_conn);
    assert!(second.conn.reused);
    // The late dial ends in the idle list, ready for the next request.
    let late = second.conn.id + 1;
    assert!(
        wait_for(&recorder, |e| e.conn == Some(late)
            && e.kind
                == EventKind::PutIdle {
                    ok: true,
                    reason: None
                })
        .await
    );
    assert_eq!(transport.stats().await.keys[0].idle, 2);
}

/// Chromium's rule for socket late binding: dials in progress never outnumber the
/// requests waiting. A request that finds no idle connection, while a dial is under
/// way whose own request was served by a connection that freed up first, waits for
/// that dial instead of opening another: connections never outnumber the requests
/// at once. (Go would dial a third connection here.) Counted by the server.
#[tokio::test]
async fn a_request_waits_for_a_dial_no_one_needs_instead_of_dialling_another() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let pki = pki(&["localhost"]);
    let accepted = Arc::new(AtomicUsize::new(0));
    let server = {
        let acceptor = tokio_rustls::TlsAcceptor::from(pki.server_config.clone());
        let accepted = Arc::clone(&accepted);
        RawServer::start(move |index, socket| {
            accepted.fetch_add(1, Ordering::SeqCst);
            let acceptor = acceptor.clone();
            async move {
                // The second connection's handshake takes a second.
                if index == 1 {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                if let Ok(tls) = acceptor.accept(socket).await {
                    answer_hello(tls).await;
                }
            }
        })
        .await
    };
    let ca = pki.ca_file.path().to_owned();
    let (transport, recorder) = transport(move |c| c.extra_ca_files = vec![ca]);
    let url = format!("https://localhost:{}/", server.addr.port());
    let request = || {
        http::Request::get(url.as_str())
            .body(Body::empty())
            .unwrap()
    };
    let limit = Duration::from_secs(10);
    let first = tokio::time::timeout(limit, transport.round_trip(request()))
        .await
        .unwrap()
        .unwrap();
    // The second request dials (slowly)...
    let second = tokio::spawn({
        let (transport, request) = (transport.clone(), request());
        async move { transport.round_trip(request).await.unwrap() }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stats = tokio::time::timeout(limit, transport.stats())
        .await
        .unwrap();
    assert_eq!(stats.keys[0].dialing, 1);
    // ...and is served by connection 1 once the first body is read; it keeps its
    // body unread, so connection 1 stays busy.
    tokio::time::timeout(limit, first.into_body().collect())
        .await
        .unwrap()
        .unwrap();
    let second = tokio::time::timeout(Duration::from_millis(700), second)
        .await
        .expect("served before its own dial finished")
        .unwrap();
    // The third request finds nothing idle and the second's dial needed by no one.
    let third = tokio::spawn({
        let (transport, url) = (transport.clone(), url.clone());
        async move { get(&transport, &url).await.unwrap() }
    });
    assert!(
        wait_for(&recorder, |e| e.kind
            == EventKind::WaitForConn {
                reason: "dial_in_progress".into()
            })
        .await,
        "the third request waits for the dial under way"
    );
    let third = tokio::time::timeout(limit, third)
        .await
        .expect("the third request was not served")
        .unwrap();
    assert_eq!(third.body, "hello");
    drop(second);
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        2,
        "connections the server accepted for at most two requests at once"
    );
}
