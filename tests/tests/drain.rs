//! Go 1.27's rule for a body closed unread: the rest is read and thrown away — if it
//! is at most 256 KiB, within 50 ms — so the connection is reused; longer, it is
//! closed. `disable_drain_on_close` keeps the old rule (always closed). nginx counts
//! the connections.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use roundtrip_host::Body;
use roundtrip_host::events::EventKind;
use roundtrip_tests::*;

/// Five GETs of a `size`-byte body on one transport, each response dropped unread
/// (a program pausing 100 ms between requests, the drain's 50 ms done by then): the
/// connections nginx saw, and what the transport said of each early close: (body bytes
/// it had taken in for the caller and drained after, saved).
async fn five_closed_unread(size: usize, drain: bool) -> (usize, Vec<(u64, bool)>) {
    let nginx = Nginx::start_counting("location / { }");
    std::fs::write(nginx.root().join("body"), vec![b'x'; size]).unwrap();
    let (transport, recorder) = transport(|c| c.disable_drain_on_close = !drain);
    for _ in 0..5 {
        let request = http::Request::get(nginx.url("/body"))
            .body(Body::empty())
            .unwrap();
        let response = transport.round_trip(request).await.unwrap();
        assert_eq!(response.status(), 200);
        drop(response);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    transport.shutdown().await;
    // nginx logs a request as it ends (a body it could not send: when the client goes).
    assert_eq!(
        nginx.logged(5).await.1,
        5,
        "nginx logged {:?}",
        nginx.connections()
    );
    let early: Vec<(u64, bool)> = recorder
        .events()
        .iter()
        .filter_map(|e| match e.kind {
            EventKind::BodyClosedEarly {
                bytes,
                drained,
                saved,
            } => Some((bytes + drained, saved)),
            _ => None,
        })
        .collect();
    assert_eq!(early.len(), 5, "{early:?}");
    (nginx.connections().0, early)
}

#[tokio::test]
async fn a_small_body_closed_unread_is_drained_and_its_connection_reused() {
    let (connections, early) = five_closed_unread(2 << 10, true).await;
    assert_eq!(connections, 1, "the server's count");
    assert!(
        early.iter().all(|&(drained, saved)| saved && drained > 0),
        "{early:?}"
    );
}

#[tokio::test]
async fn a_body_over_256_kib_closed_unread_costs_its_connection() {
    let (connections, early) = five_closed_unread(2 << 20, true).await;
    assert_eq!(connections, 5, "the server's count");
    assert!(early.iter().all(|&(_, saved)| !saved), "{early:?}");
}

#[tokio::test]
async fn the_old_rule_closes_every_connection_whose_body_is_closed_unread() {
    for size in [2 << 10, 2 << 20] {
        let (connections, early) = five_closed_unread(size, false).await;
        assert_eq!(connections, 5, "{size} bytes: the server's count");
        assert!(early.iter().all(|&(_, saved)| !saved), "{early:?}");
    }
}
