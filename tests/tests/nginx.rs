//! Against real nginx (Debian's package), started on a free loopback port.

#![allow(clippy::unwrap_used)]

use roundtrip_host::events::{CloseReason, EventKind};
use roundtrip_tests::*;

#[tokio::test]
async fn sequential_requests_reuse_one_nginx_connection() {
    let nginx = Nginx::start("location / { }");
    let (transport, recorder) = transport(|_| {});
    for _ in 0..5 {
        let fetched = get(&transport, &nginx.url("/small")).await.unwrap();
        assert_eq!(fetched.status, 200);
        assert_eq!(fetched.body, "hello, world\n");
    }
    let events = recorder.events();
    assert_eq!(dials(&events), 1);
    assert_eq!(
        count(&events, |k| matches!(
            k,
            EventKind::GotConn { reused: true, .. }
        )),
        4
    );
    let missing = get(&transport, &nginx.url("/nope")).await.unwrap();
    assert_eq!(missing.status, 404);
    assert_eq!(dials(&recorder.events()), 1, "an error status still reuses");
}

#[tokio::test]
async fn keepalive_requests_limit_leads_to_a_clean_new_dial() {
    // nginx answers the 3rd request on a connection with `Connection: close`.
    let nginx = Nginx::start("keepalive_requests 3;\n    location / { }");
    let (transport, recorder) = transport(|_| {});
    for i in 0..7 {
        let fetched = get(&transport, &nginx.url("/small")).await.unwrap();
        assert_eq!(fetched.body, "hello, world\n", "request {i}");
    }
    let events = recorder.events();
    assert_eq!(dials(&events), 3, "connections serve 3, 3 and 1 requests");
    assert_eq!(
        closes(&events),
        [CloseReason::ConnectionClose, CloseReason::ConnectionClose]
    );
    assert_eq!(count(&events, |k| matches!(k, EventKind::Retry { .. })), 0);
    assert!(
        events
            .iter()
            .all(|e| !matches!(e.kind, EventKind::DialDone { error: Some(_), .. }))
    );
}
