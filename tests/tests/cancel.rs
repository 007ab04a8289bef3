//! Dropping a round trip at any phase: the connection that was mid-request is closed
//! and never reused; other requests on the transport are untouched.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use roundtrip_host::Body;
use roundtrip_host::events::{CloseReason, EventKind};
use roundtrip_servers::LocalServer;
use roundtrip_tests::*;

/// Go: TestTransportCancelRequest / TestClientTimeoutKillsConn_BeforeHeaders.
#[tokio::test]
async fn dropping_a_request_awaiting_headers_closes_its_connection() {
    let server = LocalServer::start().await.unwrap();
    let (transport, recorder) = transport(|_| {});
    let slow = http::Request::get(server.url("/delay/3000"))
        .body(Body::empty())
        .unwrap();
    let gave_up =
        tokio::time::timeout(Duration::from_millis(200), transport.round_trip(slow)).await;
    assert!(gave_up.is_err(), "the caller timed out");
    assert_closed(&recorder, CloseReason::Error).await;
    let stats = transport.stats().await;
    assert!(stats.keys.is_empty(), "{stats:?}");
    // The transport goes on: the next request dials afresh.
    let next = get(&transport, &server.url("/small")).await.unwrap();
    assert!(!next.conn.reused);
    assert_eq!(dials(&recorder.events()), 2);
}

/// Go: TestTransportMaxConnsPerHostDialCancellation (the waiting side).
#[tokio::test]
async fn dropping_a_waiting_request_frees_its_place_at_once() {
    let server = LocalServer::start().await.unwrap();
    let (transport, recorder) = transport(|c| c.max_conns_per_host = 1);
    let first = {
        let (transport, url) = (transport.clone(), server.url("/delay/300"));
        tokio::spawn(async move { get(&transport, &url).await.unwrap() })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let waiting = http::Request::get(server.url("/small"))
        .body(Body::empty())
        .unwrap();
    let gave_up =
        tokio::time::timeout(Duration::from_millis(50), transport.round_trip(waiting)).await;
    assert!(gave_up.is_err());
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(transport.stats().await.keys[0].waiting, 0);
    assert_eq!(first.await.unwrap().body, "hello, world\n");
    // The connection the canceled request would have had serves the next one.
    let third = get(&transport, &server.url("/small")).await.unwrap();
    assert!(third.conn.reused);
    assert_eq!(dials(&recorder.events()), 1);
}

/// Go: TestClientTimeoutKillsConn_AfterHeaders — dropping the body mid-way.
#[tokio::test]
async fn dropping_a_response_mid_body_closes_the_connection_only() {
    let server = LocalServer::start().await.unwrap();
    let (transport, recorder) = transport(|_| {});
    let other = {
        let (transport, url) = (transport.clone(), server.url("/bytes/3000000"));
        tokio::spawn(async move { get(&transport, &url).await.unwrap() })
    };
    let response = transport
        .round_trip(
            http::Request::get(server.url("/bytes/3000000"))
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    drop(response);
    assert_eq!(
        other.await.unwrap().body.len(),
        3_000_000,
        "the other request is untouched"
    );
    assert_closed(&recorder, CloseReason::EarlyBodyClose).await;
}

/// A body stream that yields one chunk and then never ends.
fn endless_body() -> (Body, tokio::sync::mpsc::Sender<bytes::Bytes>) {
    let (chunks, pending) = tokio::sync::mpsc::channel::<bytes::Bytes>(1);
    chunks
        .try_send(bytes::Bytes::from_static(b"first chunk"))
        .unwrap();
    let body = futures::stream::unfold(pending, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    });
    (Body::from_stream(body), chunks)
}

/// Cancelling while the request body is being written closes that connection.
#[tokio::test]
async fn dropping_a_request_while_writing_its_body_closes_its_connection() {
    let server = LocalServer::start().await.unwrap();
    let (transport, recorder) = transport(|_| {});
    let (body, _keep_open) = endless_body();
    let request = http::Request::post(server.url("/echo")).body(body).unwrap();
    let gave_up =
        tokio::time::timeout(Duration::from_millis(200), transport.round_trip(request)).await;
    assert!(gave_up.is_err());
    assert_closed(&recorder, CloseReason::Error).await;
    assert!(transport.stats().await.keys.is_empty());
    assert_eq!(
        get(&transport, &server.url("/small")).await.unwrap().body,
        "hello, world\n"
    );
}

/// Cancelling while dialing returns at once; the dial goes on and its connection is
/// pooled for the next request (a deliberate difference from Go, see
/// docs/conformance.md).
#[tokio::test]
async fn dropping_a_request_while_dialing_leaves_the_dial_to_the_pool() {
    let pki = pki(&["localhost"]);
    let server =
        tls_server_slow_handshake(pki.server_config.clone(), 0, Duration::from_millis(500)).await;
    let ca = pki.ca_file.path().to_owned();
    let (transport, recorder) = transport(move |c| c.extra_ca_files = vec![ca]);
    let url = format!("https://localhost:{}/", server.addr.port());
    let request = http::Request::get(url.as_str())
        .body(Body::empty())
        .unwrap();
    let gave_up =
        tokio::time::timeout(Duration::from_millis(100), transport.round_trip(request)).await;
    assert!(gave_up.is_err());
    // The cancellation reaches the component a moment after the caller gives up.
    let mut stats = transport.stats().await;
    for _ in 0..100 {
        if stats.keys[0].waiting == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
        stats = transport.stats().await;
    }
    assert_eq!((stats.keys[0].waiting, stats.keys[0].dialing), (0, 1));
    assert!(
        wait_for_event(&recorder, |k| *k
            == EventKind::PutIdle {
                ok: true,
                reason: None
            })
        .await
    );
    let next = get(&transport, &url).await.unwrap();
    assert_eq!(next.body, "hello");
    assert_eq!(dials(&recorder.events()), 1, "the earlier dial served it");
}

/// A stream body that was read cannot be rewound for a retry, and the error says so.
#[tokio::test]
async fn a_read_stream_body_is_not_rewound_and_the_error_says_so() {
    let server = RawServer::start(|_, mut socket| async move {
        read_request_head(&mut socket).await;
        let _ = tokio::io::AsyncWriteExt::write_all(
            &mut socket,
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        )
        .await;
        read_request_head(&mut socket).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        let _ = tokio::io::AsyncWriteExt::shutdown(&mut socket).await;
    })
    .await;
    let (transport, recorder) = transport(|_| {});
    get(&transport, &server.url("/")).await.unwrap();
    let body = Body::from_stream(futures::stream::iter([bytes::Bytes::from_static(b"data")]));
    let request = http::Request::post(server.url("/"))
        .header("idempotency-key", "k1")
        .body(body)
        .unwrap();
    let error = fetch(&transport, request).await.unwrap_err();
    assert!(error.message.contains("cannot be rewound"), "{error}");
    assert_eq!(
        count(&recorder.events(), |k| matches!(k, EventKind::Retry { .. })),
        0
    );
}

/// A shutdown right after a caller gave up on a request (as a `Client`'s timeout
/// does) waits for the component to drop that request, then closes the idle
/// connections as every shutdown does.
#[tokio::test]
async fn a_shutdown_right_after_a_dropped_request_still_closes_the_idle_connections() {
    let idle = LocalServer::start().await.unwrap();
    let server = LocalServer::start().await.unwrap();
    let (transport, recorder) = transport(|_| {});
    get(&transport, &idle.url("/small")).await.unwrap();
    let slow = http::Request::get(server.url("/delay/3000"))
        .body(Body::empty())
        .unwrap();
    let gave_up =
        tokio::time::timeout(Duration::from_millis(100), transport.round_trip(slow)).await;
    assert!(gave_up.is_err(), "the caller timed out");
    tokio::time::timeout(FETCH_LIMIT, transport.shutdown())
        .await
        .unwrap();
    assert!(
        closes(&recorder.events()).contains(&CloseReason::TransportShutdown),
        "{:?}",
        recorder.events()
    );
}
