//! Dropping a round trip at any phase: the connection that was mid-request is closed
//! and never reused; other requests on the transport are untouched.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use roundtrip_host::Body;
use roundtrip_host::events::{CloseReason, EventKind};
use roundtrip_host::local_server::LocalServer;
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
    assert!(
        wait_for_event(&recorder, |k| *k
            == EventKind::Close {
                reason: CloseReason::Error
            })
        .await,
        "{:?}",
        recorder.names()
    );
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
    assert!(
        wait_for_event(&recorder, |k| *k
            == EventKind::Close {
                reason: CloseReason::EarlyBodyClose
            })
        .await
    );
}
