//! Guest limits and trap recovery: the host caps the component's memory; a server
//! that makes it grow past the cap traps the instance, the requests in flight fail
//! with `TransportRestarted`, their sockets close, a `transport_restarted` event says
//! so, and a fresh instance serves later requests with ids and times that go on.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use roundtrip_host::ErrorKind;
use roundtrip_host::events::EventKind;
use roundtrip_servers::LocalServer;
use roundtrip_tests::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guest_starts_small_and_its_memory_is_reported() {
    let server = LocalServer::start().await.unwrap();
    let (transport, _) = transport(|_| {});
    get(&transport, &server.url("/small")).await.unwrap();
    let memory = transport.stats().await.guest_memory;
    assert!(memory > 0 && memory < 8 << 20, "{memory} bytes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trap_fails_the_requests_in_flight_and_a_fresh_instance_serves_on() {
    let healthy = LocalServer::start().await.unwrap();
    // A server whose response head never ends: the guest buffers it (the header
    // limit is set far above the memory cap) until it outgrows its memory.
    let flood = RawServer::start(|_, mut socket| async move {
        read_request_head(&mut socket).await;
        let _ = socket.write_all(b"HTTP/1.1 200 OK\r\n").await;
        let line = format!("X-Flood: {}\r\n", "a".repeat(8 * 1024));
        loop {
            if socket.write_all(line.as_bytes()).await.is_err() {
                return;
            }
        }
    })
    .await;
    // A slow server that notices when its connection is closed.
    let closed = Arc::new(AtomicBool::new(false));
    let seen = Arc::clone(&closed);
    let slow = RawServer::start(move |_, mut socket| {
        let seen = Arc::clone(&seen);
        async move {
            read_request_head(&mut socket).await;
            let mut byte = [0u8; 1];
            // Nothing more is sent: a read returns only when the client closes.
            if let Ok(0) | Err(_) = socket.read(&mut byte).await {
                seen.store(true, Ordering::SeqCst);
            }
        }
    })
    .await;
    let (transport, recorder) = transport(|c| {
        c.max_guest_memory = 16 << 20;
        c.max_response_header_bytes = 1 << 30;
    });
    get(&transport, &healthy.url("/small")).await.unwrap();
    let waiting = {
        let transport = transport.clone();
        let url = slow.url("/");
        tokio::spawn(async move { get(&transport, &url).await })
    };
    assert!(wait_for_event(&recorder, |k| matches!(k, EventKind::WroteRequest { .. })).await);
    tokio::time::sleep(Duration::from_millis(50)).await;

    let flooded = get(&transport, &flood.url("/")).await.unwrap_err();
    assert_eq!(flooded.kind, ErrorKind::TransportRestarted, "{flooded}");
    assert!(
        flooded.message.contains("limit is 16777216 bytes"),
        "{flooded}"
    );
    let lost = waiting.await.unwrap().unwrap_err();
    assert_eq!(lost.kind, ErrorKind::TransportRestarted, "{lost}");
    // The lost request's socket was closed with the instance.
    for _ in 0..100 {
        if closed.load(Ordering::SeqCst) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        closed.load(Ordering::SeqCst),
        "the in-flight socket stayed open"
    );

    // A fresh instance serves on, with new ids, and time keeps going forward.
    let after = get(&transport, &healthy.url("/small")).await.unwrap();
    assert_eq!(after.body, "hello, world\n");
    let events = recorder.events();
    let restarted = events
        .iter()
        .position(|e| matches!(&e.kind, EventKind::TransportRestarted { reason } if reason.contains("memory")))
        .expect("a transport_restarted event");
    let old_conns: Vec<u64> = events[..restarted].iter().filter_map(|e| e.conn).collect();
    let new_conns: Vec<u64> = events[restarted..].iter().filter_map(|e| e.conn).collect();
    assert!(!new_conns.is_empty());
    assert!(
        new_conns.iter().min() > old_conns.iter().max(),
        "{old_conns:?} then {new_conns:?}"
    );
    assert_eq!(after.conn.id, *new_conns.iter().min().unwrap());
    assert!(
        events.windows(2).all(|w| w[0].ts_us <= w[1].ts_us + 1_000),
        "time went back"
    );
    assert!(transport.stats().await.guest_memory < 16 << 20);
}
