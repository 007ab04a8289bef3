//! HTTP/2 (issue 20) against real servers: nginx (`listen … ssl http2`, and plain
//! `http2` for h2c), nghttpd, and a scripted server on Python's `h2` for what a
//! well-behaved server never does.

#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::sync::Arc;

use roundtrip_host::events::Recorder;
use roundtrip_host::events::{CloseReason, Event, EventKind, Proto};
use roundtrip_host::{Config, Protocols};
use roundtrip_tests::*;

/// nginx speaking HTTP/2 over TLS for `localhost`, with its CA trusted by `config`.
fn tls_nginx(directives: &str) -> (Nginx, TestPki) {
    let pki = pki(&["localhost"]);
    let nginx = Nginx::start_listening(
        "ssl http2",
        &format!(
            "ssl_certificate {};\n    ssl_certificate_key {};\n    {directives}",
            pki.cert_file.path().display(),
            pki.key_file.path().display()
        ),
    );
    (nginx, pki)
}

fn https(nginx: &Nginx, path: &str) -> String {
    format!("https://localhost:{}{path}", nginx.port)
}

fn trusting(pki: &TestPki) -> impl FnOnce(&mut Config) + '_ {
    |config| config.extra_ca_files = vec![pki.ca_file.path().to_owned()]
}

/// The connection ids requests were served on (`got_conn`).
fn served_on(events: &[Event]) -> HashSet<u64> {
    events
        .iter()
        .filter(|e| matches!(e.kind, EventKind::GotConn { .. }))
        .filter_map(|e| e.conn)
        .collect()
}

fn protos(events: &[Event]) -> HashSet<Proto> {
    events
        .iter()
        .filter_map(|e| match e.kind {
            EventKind::GotConn { proto, .. } => Some(proto),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_workers_share_one_h2_connection_to_nginx() {
    let (nginx, pki) = tls_nginx("keepalive_requests 100000;\n    location / { }");
    let (transport, recorder) = transport(trusting(&pki));
    let transport = Arc::new(transport);
    let url = https(&nginx, "/small");
    let mut workers = Vec::new();
    for _ in 0..16 {
        let (transport, url) = (Arc::clone(&transport), url.clone());
        workers.push(tokio::spawn(async move {
            for _ in 0..400 {
                let fetched = get(&transport, &url).await.unwrap();
                assert_eq!(fetched.status, 200);
                assert_eq!(fetched.body, "hello, world\n");
            }
        }));
    }
    for worker in workers {
        worker.await.unwrap();
    }
    let events = recorder.events();
    assert_eq!(
        count(&events, |k| matches!(k, EventKind::GotConn { .. })),
        16 * 400
    );
    assert_eq!(protos(&events), HashSet::from([Proto::H2]));
    assert_eq!(
        served_on(&events).len(),
        1,
        "every request on one connection"
    );
    // The first requests raced to dial before anyone knew the server speaks h2; every
    // dial but the one kept was closed as not needed, and none started after it.
    let extra = dials(&events) - 1;
    assert_eq!(
        closes(&events)
            .iter()
            .filter(|r| **r == CloseReason::Unneeded)
            .count(),
        extra
    );
    let first_h2 = events
        .iter()
        .position(|e| matches!(&e.kind, EventKind::TlsDone { alpn: Some(a), .. } if a == "h2"))
        .unwrap();
    let (_, after) = events.split_at(first_h2);
    let settled = after
        .iter()
        .position(|e| matches!(e.kind, EventKind::GotConn { .. }))
        .unwrap();
    assert_eq!(dials(&after[settled..]), 0, "no dial once the key spoke h2");
    let version = transport
        .round_trip(
            http::Request::get(&url)
                .body(roundtrip_host::Body::empty())
                .unwrap(),
        )
        .await
        .unwrap()
        .version();
    assert_eq!(version, http::Version::HTTP_2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_goaway_after_its_request_limit_is_retried_on_a_new_connection() {
    // nginx ends an h2 connection with GOAWAY(NO_ERROR) after `keepalive_requests`
    // streams; the streams above its last one go again, on a new connection.
    let (nginx, pki) = tls_nginx("keepalive_requests 50;\n    location / { }");
    let (transport, recorder) = transport(trusting(&pki));
    let transport = Arc::new(transport);
    let url = https(&nginx, "/small");
    warm_up(&transport, &url, &recorder).await;
    let mut workers = Vec::new();
    for _ in 0..8 {
        let (transport, url) = (Arc::clone(&transport), url.clone());
        workers.push(tokio::spawn(async move {
            for _ in 0..40 {
                let fetched = get(&transport, &url).await.unwrap();
                assert_eq!(fetched.body, "hello, world\n");
            }
        }));
    }
    for worker in workers {
        worker.await.unwrap();
    }
    let events = recorder.events();
    let goaways = count(
        &events,
        |k| matches!(k, EventKind::Goaway { code, .. } if code == "NO_ERROR"),
    );
    assert!(
        goaways >= 6,
        "321 requests at 50 a connection: {goaways} GOAWAYs"
    );
    assert!(
        count(
            &events,
            |k| matches!(k, EventKind::Retry { reason } if reason.contains("GOAWAY"))
        ) > 0
    );
    assert_eq!(
        closes(&events)
            .iter()
            .filter(|r| **r == CloseReason::Goaway)
            .count(),
        goaways
    );
    assert!(closes(&events).iter().all(|r| *r == CloseReason::Goaway));
}

/// One request, so that the key is known to speak h2 before the test's load starts.
async fn warm_up(transport: &roundtrip_host::Transport, url: &str, recorder: &Recorder) {
    let fetched = get(transport, url).await.unwrap();
    assert_eq!(fetched.status, 200);
    assert_eq!(protos(&recorder.events()), HashSet::from([Proto::H2]));
}
