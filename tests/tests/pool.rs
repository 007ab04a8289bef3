//! The real component in the real host against in-process servers on loopback:
//! keep-alive reuse, body framing, close rules, concurrency, bad input.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use roundtrip_host::events::{CloseReason, EventKind};
use roundtrip_host::{Body, ConnectionInfo, ErrorKind, Transport};
use roundtrip_servers::{LocalServer, body_bytes};
use roundtrip_tests::*;
use tokio::io::AsyncWriteExt;

const TEN_MIB: usize = 10 << 20;

#[tokio::test]
async fn two_sequential_gets_share_one_connection() {
    let server = LocalServer::start().await.unwrap();
    let (transport, recorder) = transport(|_| {});
    let first = get(&transport, &server.url("/small")).await.unwrap();
    let second = get(&transport, &server.url("/small")).await.unwrap();
    assert_eq!(first.body, "hello, world\n");
    assert_eq!(second.body, "hello, world\n");
    assert!(!first.conn.reused);
    assert!(second.conn.reused);
    assert_eq!(first.conn.id, second.conn.id);
    let events = recorder.events();
    assert_eq!(dials(&events), 1);
    assert_eq!(server.connections(), 1, "the server saw one TCP connection");
    let got: Vec<_> = events
        .iter()
        .filter_map(|e| match e.kind {
            EventKind::GotConn {
                reused, was_idle, ..
            } => Some((reused, was_idle)),
            _ => None,
        })
        .collect();
    assert_eq!(got, vec![(false, false), (true, true)]);
    let stats = transport.stats().await;
    assert_eq!((stats.dials, stats.reuses), (1, 1));
    assert_eq!(stats.keys[0].idle, 1);
}

#[tokio::test]
async fn events_carry_ids_keys_and_follow_the_lifecycle() {
    let server = LocalServer::start().await.unwrap();
    let (transport, recorder) = transport(|_| {});
    get(&transport, &server.url("/small")).await.unwrap();
    transport.shutdown().await;
    let events = recorder.events();
    let names: Vec<_> = events.iter().map(|e| e.name()).collect();
    assert_eq!(
        names,
        [
            "get_conn",
            "dial_start",
            "connect_start",
            "connect_done",
            "dial_done",
            "got_conn",
            "wrote_headers",
            "wrote_request",
            "first_byte",
            "response",
            "body_eof",
            "put_idle",
            "close"
        ]
    );
    let key = format!("http://{}", server.addr());
    assert!(
        events
            .iter()
            .all(|e| e.key.as_deref() == Some(key.as_str()))
    );
    assert!(events[1..].iter().all(|e| e.conn == Some(1)));
    assert!(events[..12].iter().all(|e| e.req == Some(1)));
    assert!(events.windows(2).all(|w| w[0].ts_us <= w[1].ts_us));
    assert_eq!(events[10].kind, EventKind::BodyEof { bytes: 13 });
    assert_eq!(closes(&events), [CloseReason::TransportShutdown]);
    // The JSON line follows docs/events.md.
    let line: serde_json::Value = serde_json::from_str(&events[5].to_json()).unwrap();
    assert_eq!(line["event"], "got_conn");
    assert_eq!(line["reused"], false);
    assert_eq!(line["conn"], 1);
    assert!(line["ts_us"].is_u64());
}

#[tokio::test]
async fn ten_mib_bodies_arrive_intact_by_length_chunked_and_until_close() {
    let server = LocalServer::start().await.unwrap();
    let (transport, recorder) = transport(|_| {});
    let expected = body_bytes(TEN_MIB);
    for path in ["bytes", "chunked", "until-close"] {
        let fetched = get(&transport, &server.url(&format!("/{path}/{TEN_MIB}")))
            .await
            .unwrap();
        assert_eq!(fetched.body.len(), TEN_MIB, "{path}");
        assert!(fetched.body == expected, "{path}: body bytes differ");
        if path == "chunked" {
            let trailers = fetched.trailers.expect("chunked trailers");
            assert_eq!(trailers["x-body-len"], TEN_MIB.to_string());
        }
    }
    let events = recorder.events();
    // Length and chunked bodies leave the connection reusable; until-close cannot.
    assert_eq!(dials(&events), 1);
    assert_eq!(closes(&events), [CloseReason::ServerClosed]);
    assert_eq!(
        count(&events, |k| *k
            == EventKind::BodyEof {
                bytes: TEN_MIB as u64
            }),
        3
    );
}

#[tokio::test]
async fn server_connection_close_forces_a_new_dial() {
    let server = LocalServer::start().await.unwrap();
    let (transport, recorder) = transport(|_| {});
    for _ in 0..2 {
        let fetched = get(&transport, &server.url("/close/100")).await.unwrap();
        assert_eq!(fetched.body, body_bytes(100));
    }
    let events = recorder.events();
    assert_eq!(dials(&events), 2);
    assert_eq!(
        closes(&events),
        [CloseReason::ConnectionClose, CloseReason::ConnectionClose]
    );
    assert_eq!(
        count(&events, |k| matches!(k, EventKind::PutIdle { .. })),
        0
    );
}

#[tokio::test]
async fn dropping_a_body_early_closes_the_connection_and_the_next_request_dials() {
    let server = LocalServer::start().await.unwrap();
    let (transport, recorder) = transport(|_| {});
    let request = http::Request::get(server.url(&format!("/bytes/{TEN_MIB}")))
        .body(Body::empty())
        .unwrap();
    let response = transport.round_trip(request).await.unwrap();
    let mut body = response.into_body();
    let first = body.frame().await.unwrap().unwrap();
    assert!(first.is_data());
    drop(body);
    assert_closed(&recorder, CloseReason::EarlyBodyClose).await;
    let events = recorder.events();
    assert_eq!(
        count(&events, |k| matches!(k, EventKind::BodyClosedEarly { .. })),
        1
    );
    assert_eq!(
        count(&events, |k| matches!(k, EventKind::BodyEof { .. })),
        0
    );
    let next = get(&transport, &server.url("/small")).await.unwrap();
    assert!(!next.conn.reused);
    assert_eq!(dials(&recorder.events()), 2);
}

#[tokio::test]
async fn fifty_concurrent_requests_on_one_transport_are_all_correct() {
    let server = LocalServer::start().await.unwrap();
    let (transport, recorder) = transport(|_| {});
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let transport = transport.clone();
            let url = server.url(&format!(
                "/{}/{}",
                ["bytes", "chunked"][i % 2],
                1000 + i * 997
            ));
            tokio::spawn(async move { (i, get(&transport, &url).await) })
        })
        .collect();
    for task in tasks {
        let (i, fetched) = task.await.unwrap();
        let fetched = fetched.unwrap();
        assert_eq!(fetched.status, 200);
        assert!(fetched.body == body_bytes(1000 + i * 997), "request {i}");
    }
    let events = recorder.events();
    assert_eq!(
        count(&events, |k| matches!(k, EventKind::BodyEof { .. })),
        50
    );
    // At most two stay idle (MaxIdleConnsPerHost); the rest were refused and closed.
    let stats = transport.stats().await;
    assert_eq!(stats.keys.len(), 1);
    assert!(stats.keys[0].idle <= 2, "{stats:?}");
    assert_eq!(stats.keys[0].active, 0);
    let refused = count(&events, |k| {
        *k == EventKind::PutIdle {
            ok: false,
            reason: Some(CloseReason::MaxIdlePerHost),
        }
    });
    assert_eq!(refused as u64, stats.dials - u64::from(stats.keys[0].idle));
}

#[tokio::test]
async fn max_idle_per_host_keeps_two_of_three() {
    let server = LocalServer::start().await.unwrap();
    let (transport, recorder) = transport(|_| {});
    // Three responses held open at once need three connections.
    let mut bodies = Vec::new();
    for _ in 0..3 {
        let request = http::Request::get(server.url("/small"))
            .body(Body::empty())
            .unwrap();
        bodies.push(transport.round_trip(request).await.unwrap().into_body());
    }
    for body in bodies {
        body.collect().await.unwrap();
    }
    settled(&transport).await;
    let events = recorder.events();
    assert_eq!(dials(&events), 3);
    assert_eq!(
        count(&events, |k| *k
            == EventKind::PutIdle {
                ok: true,
                reason: None
            }),
        2
    );
    assert_eq!(closes(&events), [CloseReason::MaxIdlePerHost]);
    assert_eq!(transport.stats().await.keys[0].idle, 2);
}

#[tokio::test]
async fn idle_connections_time_out() {
    let server = LocalServer::start().await.unwrap();
    let (transport, recorder) =
        transport(|c| c.idle_conn_timeout = Some(Duration::from_millis(100)));
    get(&transport, &server.url("/small")).await.unwrap();
    assert_closed(&recorder, CloseReason::IdleTimeout).await;
    assert!(transport.stats().await.keys.is_empty());
    let next = get(&transport, &server.url("/small")).await.unwrap();
    assert!(!next.conn.reused);
    assert_eq!(server.connections(), 2);
}

#[tokio::test]
async fn no_keepalive_sends_connection_close_and_never_pools() {
    let server = RawServer::start(|_, mut socket| async move {
        let head = read_request_head(&mut socket).await.unwrap();
        let closes = head
            .to_ascii_lowercase()
            .matches("connection: close")
            .count();
        let body = format!("{closes}");
        let response = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        socket.write_all(response.as_bytes()).await.unwrap();
    })
    .await;
    let (transport, recorder) = transport(|c| c.disable_keep_alives = true);
    let fetched = get(&transport, &server.url("/")).await.unwrap();
    assert_eq!(fetched.body, "1", "exactly one Connection: close header");
    assert_eq!(
        closes(&recorder.events()),
        [CloseReason::KeepalivesDisabled]
    );
}

#[tokio::test]
async fn head_204_and_1xx_have_no_body_and_keep_the_connection() {
    let server = LocalServer::start().await.unwrap();
    let (transport, recorder) = transport(|_| {});
    let head = fetch(
        &transport,
        http::Request::head(server.url("/bytes/5000"))
            .body(Body::empty())
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(head.headers["content-length"], "5000");
    assert!(head.body.is_empty());
    let no_content = get(&transport, &server.url("/head-only")).await.unwrap();
    assert_eq!(no_content.status, 204);
    let hinted = get(&transport, &server.url("/continue")).await.unwrap();
    assert_eq!(hinted.status, 200);
    assert_eq!(hinted.body, "hello, world\n");
    let events = recorder.events();
    assert_eq!(
        count(&events, |k| *k == EventKind::Got1xx { status: 103 }),
        1
    );
    assert_eq!(dials(&events), 1, "all three shared one connection");
}

#[tokio::test]
async fn request_bodies_by_length_and_streamed_chunked() {
    let server = LocalServer::start().await.unwrap();
    let (transport, _) = transport(|_| {});
    let payload = body_bytes(300_000);
    let echoed = fetch(
        &transport,
        http::Request::post(server.url("/echo"))
            .body(Body::from(payload.clone()))
            .unwrap(),
    )
    .await
    .unwrap();
    assert!(echoed.body == payload);
    let chunks: Vec<Bytes> = payload.chunks(70_000).map(Bytes::copy_from_slice).collect();
    let streamed = fetch(
        &transport,
        http::Request::put(server.url("/echo"))
            .body(Body::from_stream(futures::stream::iter(chunks)))
            .unwrap(),
    )
    .await
    .unwrap();
    assert!(
        streamed.body == payload,
        "chunked request body echoed intact"
    );
}

#[tokio::test]
async fn invalid_requests_are_rejected_before_any_dial() {
    let server = LocalServer::start().await.unwrap();
    let (transport, recorder) = transport(|_| {});
    // (The `http` crate already refuses CR, LF and NUL in header values; the
    // component's own check is covered by the core's unit tests.)
    let cases: Vec<(http::Request<Body>, ErrorKind)> = vec![
        (
            http::Request::get("ftp://127.0.0.1/")
                .body(Body::empty())
                .unwrap(),
            ErrorKind::UriInvalid,
        ),
        (
            http::Request::get("/relative").body(Body::empty()).unwrap(),
            ErrorKind::UriInvalid,
        ),
    ];
    for (request, kind) in cases {
        let error = transport.round_trip(request).await.unwrap_err();
        assert_eq!(error.kind, kind, "{error}");
    }
    assert_eq!(dials(&recorder.events()), 0);
    assert_eq!(server.connections(), 0);
}

#[tokio::test]
async fn refused_connections_are_named() {
    let port = free_port();
    let (transport, _) = transport(|_| {});
    let error = get(&transport, &format!("http://127.0.0.1:{port}/"))
        .await
        .unwrap_err();
    assert_eq!(error.kind, ErrorKind::ConnectionRefused);
    assert!(error.message.contains("connection refused"), "{error}");
}

#[tokio::test]
async fn malformed_and_truncated_responses_fail_and_are_never_reused() {
    let server = RawServer::start(|_, mut socket| async move {
        let Some(head) = read_request_head(&mut socket).await else {
            return;
        };
        let reply: &[u8] = if head.starts_with("GET /garbage") {
            b"HTTP/1.1 2000 Nope\r\n\r\n"
        } else if head.starts_with("GET /short") {
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"
        } else {
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
        };
        let _ = socket.write_all(reply).await;
        let _ = socket.shutdown().await;
    })
    .await;
    let (transport, recorder) = transport(|_| {});
    let error = get(&transport, &server.url("/garbage")).await.unwrap_err();
    assert_eq!(error.kind, ErrorKind::ProtocolError, "{error}");
    let error = get(&transport, &server.url("/short")).await.unwrap_err();
    assert_eq!(error.kind, ErrorKind::ResponseIncomplete, "{error}");
    assert!(error.message.contains("7 body bytes"), "{error}");
    let events = recorder.events();
    assert_eq!(closes(&events), [CloseReason::Error, CloseReason::Error]);
    assert_eq!(
        count(&events, |k| matches!(k, EventKind::PutIdle { .. })),
        0
    );
}

/// A server that answers the first request on each connection, then reads the second
/// and closes without answering: a reused connection that fails after the write.
async fn drops_second_request() -> RawServer {
    RawServer::start(|_, mut socket| async move {
        read_request_head(&mut socket).await;
        let _ = socket
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            .await;
        read_request_head(&mut socket).await;
        let _ = socket.shutdown().await;
    })
    .await
}

#[tokio::test]
async fn a_reused_connection_that_fails_is_retried_for_replayable_requests() {
    let server = drops_second_request().await;
    let (transport, recorder) = transport(|_| {});
    assert_eq!(get(&transport, &server.url("/")).await.unwrap().body, "ok");
    let again = get(&transport, &server.url("/")).await.unwrap();
    assert_eq!(again.body, "ok");
    assert!(!again.conn.reused, "served by a fresh connection");
    let events = recorder.events();
    assert_eq!(count(&events, |k| matches!(k, EventKind::Retry { .. })), 1);
    assert_eq!(dials(&events), 2);
}

#[tokio::test]
async fn a_post_without_idempotency_key_is_not_retried() {
    let server = drops_second_request().await;
    let (transport, recorder) = transport(|_| {});
    get(&transport, &server.url("/")).await.unwrap();
    let post = http::Request::post(server.url("/"))
        .body(Body::from("x"))
        .unwrap();
    let error = fetch(&transport, post).await.unwrap_err();
    assert_eq!(error.kind, ErrorKind::ResponseIncomplete, "{error}");
    assert_eq!(
        count(&recorder.events(), |k| matches!(k, EventKind::Retry { .. })),
        0
    );
    // With an idempotency key it is replayable.
    get(&transport, &server.url("/")).await.unwrap();
    let keyed = http::Request::post(server.url("/"))
        .header("Idempotency-Key", "abc")
        .body(Body::from("x"))
        .unwrap();
    assert_eq!(fetch(&transport, keyed).await.unwrap().body, "ok");
    assert_eq!(
        count(&recorder.events(), |k| matches!(k, EventKind::Retry { .. })),
        1
    );
}

/// Go: TestTransportIgnores408.
#[tokio::test]
async fn an_unsolicited_408_on_an_idle_connection_closes_it_quietly() {
    let server = RawServer::start(|_, mut socket| async move {
        read_request_head(&mut socket).await;
        let _ = socket
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            .await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        let _ = socket
            .write_all(b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\n\r\n")
            .await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    })
    .await;
    let (transport, recorder) = transport(|_| {});
    get(&transport, &server.url("/")).await.unwrap();
    assert_closed(&recorder, CloseReason::ServerClosed).await;
    let next = get(&transport, &server.url("/")).await.unwrap();
    assert_eq!(next.body, "ok");
    assert!(!next.conn.reused);
}

#[tokio::test]
async fn response_header_timeout_names_the_cause() {
    let server = LocalServer::start().await.unwrap();
    let (transport, recorder) =
        transport(|c| c.response_header_timeout = Some(Duration::from_millis(100)));
    let error = get(&transport, &server.url("/delay/2000"))
        .await
        .unwrap_err();
    assert_eq!(error.kind, ErrorKind::ResponseTimeout);
    assert_eq!(closes(&recorder.events()), [CloseReason::Error]);
}

#[tokio::test]
async fn events_stream_to_an_inspector_over_tcp() {
    use tokio::io::AsyncBufReadExt;
    let inspector = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = inspector.local_addr().unwrap().to_string();
    let server = LocalServer::start().await.unwrap();
    let (transport, _) = transport(move |c| {
        c.events = roundtrip_host::events::Events::new()
            .with(roundtrip_host::events::TcpSink::connect(&addr));
    });
    let (socket, _) = inspector.accept().await.unwrap();
    get(&transport, &server.url("/small")).await.unwrap();
    get(&transport, &server.url("/small")).await.unwrap();
    let mut lines = tokio::io::BufReader::new(socket).lines();
    // Each connection opens with who is speaking.
    let first = lines.next_line().await.unwrap().unwrap();
    let hello = roundtrip_host::events::Hello::parse(&first).unwrap();
    assert_eq!(hello.pid, std::process::id());
    assert!(hello.sink >= 1);
    let mut names = Vec::new();
    // 10 events for the first request, 8 for the reused one (no dial).
    while names.len() < 18 {
        let line = tokio::time::timeout(Duration::from_secs(5), lines.next_line())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let event: roundtrip_host::events::Event = serde_json::from_str(&line).unwrap();
        names.push(event.name());
    }
    assert_eq!(names[0], "get_conn");
    assert_eq!(names.iter().filter(|n| **n == "got_conn").count(), 2);
    assert_eq!(names.iter().filter(|n| **n == "dial_start").count(), 1);
}

/// A server that answers one request, then ends the idle connection: with a clean
/// close (FIN), or a reset (RST).
async fn answers_once_then_ends(reset: bool) -> RawServer {
    RawServer::start(move |_, mut socket| async move {
        read_request_head(&mut socket).await;
        let _ = socket
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            .await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        if reset {
            // Linger 0: dropping the socket sends RST.
            let _ = socket.set_zero_linger();
        } else {
            let _ = socket.shutdown().await;
        }
    })
    .await
}

/// Go: TestTransportRemovesDeadIdleConnections / TestTransportServerClosingUnexpectedly.
#[tokio::test]
async fn an_idle_connection_the_server_closes_leaves_the_pool_at_once() {
    let server = answers_once_then_ends(false).await;
    let (transport, recorder) = transport(|_| {});
    get(&transport, &server.url("/")).await.unwrap();
    assert_closed(&recorder, CloseReason::ServerClosed).await;
    assert!(
        transport.stats().await.keys.is_empty(),
        "nothing idle, nothing counted"
    );
    let next = get(&transport, &server.url("/")).await.unwrap();
    assert!(!next.conn.reused);
    assert_eq!(
        count(&recorder.events(), |k| matches!(k, EventKind::Retry { .. })),
        0
    );
}

/// The same with a reset (RST) instead of a clean close.
#[tokio::test]
async fn an_idle_connection_the_server_resets_leaves_the_pool_at_once() {
    let server = answers_once_then_ends(true).await;
    let (transport, recorder) = transport(|_| {});
    get(&transport, &server.url("/")).await.unwrap();
    assert_closed(&recorder, CloseReason::ServerClosed).await;
    assert!(transport.stats().await.keys.is_empty());
}

/// curl's check before reuse: a server that ends the connection right after its
/// answer (before the idle watcher starts reading it, `WATCH_AFTER_NS`) gets the next
/// request on a new connection — nothing is written to the dead one, nothing retried.
#[tokio::test]
async fn a_connection_the_server_ends_right_after_its_answer_is_not_reused() {
    for reset in [false, true] {
        let (ended, mut ends) = tokio::sync::mpsc::unbounded_channel::<()>();
        let server = RawServer::start(move |_, mut socket| {
            let ended = ended.clone();
            async move {
                if read_request_head(&mut socket).await.is_none() {
                    return;
                }
                let _ = socket
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    .await;
                if reset {
                    let _ = socket.set_zero_linger();
                    drop(socket);
                } else {
                    let _ = socket.shutdown().await;
                }
                let _ = ended.send(());
            }
        })
        .await;
        let (transport, recorder) = transport(|_| {});
        let first = get(&transport, &server.url("/")).await.unwrap();
        tokio::time::timeout(Duration::from_secs(5), ends.recv())
            .await
            .unwrap();
        let next = get(&transport, &server.url("/")).await.unwrap();
        assert_eq!(next.body, "ok");
        assert!(!next.conn.reused, "reset: {reset}");
        assert_ne!(next.conn.id, first.conn.id);
        let events = recorder.events();
        assert_eq!(
            count(&events, |k| matches!(k, EventKind::Retry { .. })),
            0,
            "reset: {reset}: {:?}",
            recorder.names()
        );
        assert_eq!(dials(&events), 2);
        assert_eq!(closes(&events), [CloseReason::ServerClosed]);
    }
}

#[tokio::test]
async fn shards_divide_go_s_caps_and_never_share_an_id() {
    let server = LocalServer::start().await.unwrap();
    // Two shards: MaxConnsPerHost 3 → 2 + 1, MaxIdleConnsPerHost 2 → 1 + 1.
    let (transport, recorder) = transport(|c| {
        c.shards = 2;
        c.max_conns_per_host = 3;
        c.max_idle_conns_per_host = 2;
    });
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let transport = transport.clone();
            let url = server.url("/delay/200");
            tokio::spawn(async move { get(&transport, &url).await })
        })
        .collect();
    let mut ids = std::collections::BTreeSet::new();
    for task in tasks {
        let fetched = task.await.unwrap().unwrap();
        assert_eq!(fetched.body, "hello, world\n");
        ids.insert(fetched.conn.id);
    }
    // Never more than the cap open at once: 3 dials served all 8, as the server saw.
    assert_eq!(
        server.connections(),
        3,
        "the server saw the cap's connections"
    );
    let events = recorder.events();
    assert_eq!(dials(&events), 3);
    let dialled: std::collections::BTreeSet<u64> = events
        .iter()
        .filter(|e| matches!(e.kind, EventKind::DialStart { .. }))
        .filter_map(|e| e.conn)
        .collect();
    assert_eq!(
        dialled.len(),
        3,
        "each shard's connections have ids of their own"
    );
    assert_eq!(ids, dialled);
    let stats = transport.stats().await;
    assert_eq!(stats.dials, 3);
    // Each shard keeps its share idle: one each, the third refused.
    assert_eq!(stats.keys[0].idle, 2, "{stats:?}");
    assert_eq!(closes(&events), [CloseReason::MaxIdlePerHost]);
    // A caller's sequential requests stay on one shard, and so on one connection.
    let first = get(&transport, &server.url("/small")).await.unwrap();
    let second = get(&transport, &server.url("/small")).await.unwrap();
    assert!(first.conn.reused && second.conn.reused);
    assert_eq!(first.conn.id, second.conn.id);
    assert_eq!(server.connections(), 3);
}

/// A whole body's release rides on the caller's next request; a caller that sends
/// nothing more still has its connection pooled (the store flushes the release on its
/// own), and the next request carries it: one `round-trip` call, the same connection.
#[tokio::test]
async fn a_taken_whole_body_is_pooled_without_a_later_request_and_rides_on_one() {
    let server = LocalServer::start().await.unwrap();
    let (transport, recorder) = transport(|_| {});
    let request = || {
        http::Request::get(server.url("/small"))
            .body(Body::empty())
            .unwrap()
    };
    // Taken in full, within the test's own limit (no `fetch`: it asks for `stats`).
    let taken = |request| {
        let transport = transport.clone();
        async move {
            let exchange = async {
                let response = transport.round_trip(request).await.unwrap();
                let conn = *response.extensions().get::<ConnectionInfo>().unwrap();
                response.into_body().collect().await.unwrap();
                conn
            };
            tokio::time::timeout(FETCH_LIMIT, exchange)
                .await
                .expect("no whole answer in time")
        }
    };
    let first = taken(request()).await;
    // Nothing else is sent: the release reaches the component by itself.
    let pooled = wait_for_event(&recorder, |k| {
        *k == EventKind::PutIdle {
            ok: true,
            reason: None,
        }
    })
    .await;
    assert!(pooled, "never pooled: {:?}", recorder.names());
    // Taken and at once followed by a request: it rides on it and the connection is
    // reused.
    for _ in 0..20 {
        let response = transport.round_trip(request()).await.unwrap();
        let conn = *response.extensions().get::<ConnectionInfo>().unwrap();
        assert!(
            conn.reused && conn.id == first.id,
            "{conn:?} after {first:?}"
        );
        response.into_body().collect().await.unwrap();
    }
    settled(&transport).await;
    let events = recorder.events();
    assert_eq!(dials(&events), 1);
    assert_eq!(
        count(&events, |k| matches!(
            k,
            EventKind::PutIdle { ok: true, .. }
        )),
        21
    );
    assert_eq!(transport.stats().await.keys[0].idle, 1);
    assert_eq!(server.connections(), 1);
}

/// A whole body (read with its head) keeps its connection busy until the caller takes
/// it or drops it. Dropped unread, Go 1.27's rule pools the connection (nothing is
/// left to drain); the old rule (`disable_drain_on_close`) closes it.
#[tokio::test]
async fn a_whole_body_holds_its_connection_until_taken_or_dropped() {
    for drain in [true, false] {
        let server = LocalServer::start().await.unwrap();
        let (transport, recorder) = transport(|c| c.disable_drain_on_close = !drain);
        let request = http::Request::get(server.url("/small"))
            .body(Body::empty())
            .unwrap();
        let response = transport.round_trip(request).await.unwrap();
        // It came with its head, but the connection stays busy until the body is read.
        let stats = transport.stats().await;
        assert_eq!((stats.keys[0].active, stats.keys[0].idle), (1, 0));
        drop(response);
        if drain {
            assert!(
                wait_for_event(&recorder, |k| matches!(
                    k,
                    EventKind::PutIdle { ok: true, .. }
                ))
                .await,
                "{:?}",
                recorder.names()
            );
        } else {
            assert_closed(&recorder, CloseReason::EarlyBodyClose).await;
        }
        let events = recorder.events();
        assert_eq!(
            count(&events, |k| matches!(k, EventKind::BodyEof { .. })),
            0
        );
        assert_eq!(
            count(&events, |k| matches!(
                k,
                EventKind::BodyClosedEarly { bytes: 0, drained, saved }
                    if *saved == drain && (*drained > 0) == drain
            )),
            1,
            "drain: {drain}"
        );
        // Taken: back in the pool before the caller has the bytes.
        let taken = get(&transport, &server.url("/small")).await.unwrap();
        assert_eq!(taken.conn.reused, drain);
        assert_eq!(transport.stats().await.keys[0].idle, 1);
        assert_eq!(server.connections(), if drain { 1 } else { 2 });
    }
}

/// A streamed body comes a window of chunks ahead of the caller's reads, but its
/// connection is pooled only once the caller has taken the last of them (Go's `Read`
/// returns EOF with a body's last bytes): a body the host holds whole in its window
/// and the caller drops after one chunk still closes its connection.
#[tokio::test]
async fn a_windowed_body_pools_its_connection_only_once_the_caller_has_taken_it_all() {
    const SIZE: usize = 300_000; // five 64 KiB chunks: streamed, and within the window.
    let server = LocalServer::start().await.unwrap();
    let (transport, recorder) = transport(|_| {});
    let url = server.url(&format!("/bytes/{SIZE}"));
    let exchange = async {
        // Read to the last byte, and not one poll further.
        let response = transport
            .round_trip(http::Request::get(&url).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let first = *response.extensions().get::<ConnectionInfo>().unwrap();
        let mut body = response.into_body();
        let mut read = 0;
        while read < SIZE {
            let frame = body.frame().await.unwrap().unwrap();
            read += frame.into_data().unwrap().len();
        }
        let pooled = wait_for_event(&recorder, |k| {
            matches!(k, EventKind::PutIdle { ok: true, .. })
        })
        .await;
        assert!(
            pooled,
            "not pooled at its last byte: {:?}",
            recorder.names()
        );
        drop(body);

        // Taken one chunk of; the rest waits in the window, the connection busy.
        let response = transport
            .round_trip(http::Request::get(&url).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let second = *response.extensions().get::<ConnectionInfo>().unwrap();
        assert!(
            second.reused && second.id == first.id,
            "{second:?} after {first:?}"
        );
        let mut body = response.into_body();
        assert!(body.frame().await.unwrap().unwrap().is_data());
        tokio::time::sleep(Duration::from_millis(300)).await;
        let stats = transport.stats().await;
        assert_eq!((stats.keys[0].active, stats.keys[0].idle), (1, 0));
        assert_eq!(
            count(&recorder.events(), |k| matches!(
                k,
                EventKind::BodyEof { .. }
            )),
            1
        );
        drop(body);
        assert_closed(&recorder, CloseReason::EarlyBodyClose).await;
        let next = get(&transport, &server.url("/small")).await.unwrap();
        assert!(!next.conn.reused);
    };
    tokio::time::timeout(FETCH_LIMIT, exchange)
        .await
        .expect("the exchanges did not end in time");
    assert_eq!(server.connections(), 2);
}

/// Threads of this process named for a transport's store (the kernel's list:
/// `/proc/self/task/*/comm`, which keeps 15 bytes of a name).
fn store_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .filter(|name| name.trim_end() == "roundtrip-trans")
        .count()
}

/// `Transport::new` called within a runtime serves from a task of that runtime (no
/// thread of its own); outside one, from a thread of its own. Either way it serves
/// callers on other threads and runtimes, and reuses its connection.
#[test]
fn the_store_is_a_task_of_the_callers_runtime_and_a_thread_only_outside_one() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let server = runtime.block_on(LocalServer::start()).unwrap();
    let url = server.url("/small");
    let config = || roundtrip_host::Config {
        inspect_from_env: false,
        ..roundtrip_host::Config::default()
    };
    let in_runtime = runtime
        .block_on(async { Transport::new(config()) })
        .unwrap();
    assert_eq!(store_threads(), 0, "a task of the runtime, no thread");
    let outside = Transport::new(config()).unwrap();
    assert_eq!(store_threads(), 1, "outside a runtime: a thread of its own");
    for transport in [in_runtime, outside] {
        let (url, transport) = (url.clone(), transport.clone());
        // From another thread, on a runtime of its own.
        let conns = std::thread::spawn(move || {
            let caller = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            caller.block_on(async {
                let first = get(&transport, &url).await.unwrap().conn;
                let second = get(&transport, &url).await.unwrap().conn;
                (first, second)
            })
        })
        .join()
        .unwrap();
        assert!(!conns.0.reused && conns.1.reused && conns.0.id == conns.1.id);
    }
    assert_eq!(server.connections(), 2);
}

/// Go's `Read` returns EOF with a body's last bytes: a caller that drops the body
/// once it has every byte (hyper's server writing a `Content-Length` body does) read
/// it to its end, and the connection goes back to the pool.
#[tokio::test]
async fn a_body_dropped_right_after_its_last_byte_was_read_to_its_end() {
    let server = roundtrip_servers::LocalServer::start().await.unwrap();
    let (transport, recorder) = transport(|_| {});
    let length = 200_000; // past the whole-body limit: streamed
    let body = every_byte_of(&transport, &server.url(&format!("/bytes/{length}")), length).await;
    // Every byte taken; the end never asked for. The component pools the connection
    // as it learns the caller is gone (the same turn a read of the end would have).
    drop(body);
    assert!(
        wait_for_event(&recorder, |k| matches!(
            k,
            EventKind::PutIdle { ok: true, .. }
        ))
        .await,
        "the connection was not pooled"
    );
    let again = get(&transport, &server.url("/small")).await.unwrap();
    assert!(again.conn.reused, "the connection was not pooled");
    let events = recorder.events();
    assert_eq!(
        count(&events, |k| matches!(k, EventKind::BodyClosedEarly { .. })),
        0
    );
    assert_eq!(
        count(
            &events,
            |k| matches!(k, EventKind::BodyEof { bytes } if *bytes == length as u64)
        ),
        1
    );
    assert_eq!(server.connections(), 1);
}

/// A request sent the moment the last body was read to its end (or dropped with
/// every byte taken) finds that body's connection idle, with no wait for the pool to
/// hear of it: Go pools a connection before its body's last `Read` returns EOF. Each
/// of 50 rounds reads a streamed body and sends the next request at once; the server
/// counts the connections.
#[tokio::test]
async fn a_request_right_after_a_body_was_read_to_its_end_reuses_its_connection() {
    let server = roundtrip_servers::LocalServer::start().await.unwrap();
    let (transport, _recorder) = transport(|_| {});
    let length = 100_000; // past the whole-body limit: streamed
    let url = server.url(&format!("/bytes/{length}"));
    for round in 0..50 {
        let mut body = every_byte_of(&transport, &url, length).await;
        // Half the rounds read the end too; the others drop the body with every
        // byte taken, as hyper's server does.
        if round % 2 == 0 {
            let end = tokio::time::timeout(FETCH_LIMIT, body.frame())
                .await
                .unwrap();
            assert!(end.is_none_or(|frame| frame.is_ok_and(|f| f.is_trailers())));
        }
        drop(body);
    }
    assert_eq!(
        server.connections(),
        1,
        "connections for 50 requests one after another"
    );
}

/// The same under load, as `roundtrip serve` meets it at 64 requests at once: while 16
/// other callers keep the store busy, one takes a streamed body's last bytes and drops
/// it (hyper's server does, once its `Content-Length` is written: it never asks for the
/// end), then sends its next request at once. The component may not even have reached
/// the body's end yet; the request still waits for it and finds the connection pooled
/// instead of dialling one more (seen before: 65 upstream connections for 64 callers).
#[tokio::test]
async fn a_request_right_after_its_last_body_under_load_reuses_its_connection() {
    let server = roundtrip_servers::LocalServer::start().await.unwrap();
    let (transport, _recorder) = transport(|config| config.max_idle_conns_per_host = 64);
    let length = 100_000; // past the whole-body limit: streamed
    let url = server.url(&format!("/bytes/{length}"));
    let small = server.url("/bytes/100");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let noise: Vec<_> = (0..16)
        .map(|_| {
            let (transport, small, stop) = (transport.clone(), small.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let request = http::Request::get(&small).body(Body::empty()).unwrap();
                    let _ = fetch(&transport, request).await;
                }
            })
        })
        .collect();
    for _ in 0..200 {
        drop(every_byte_of(&transport, &url, length).await);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for task in noise {
        tokio::time::timeout(FETCH_LIMIT, task)
            .await
            .unwrap()
            .unwrap();
    }
    assert!(
        server.connections() <= 17,
        "{} connections for 17 callers",
        server.connections()
    );
}

/// GETs `url` and takes the `length` bytes of its body, frame by frame, without
/// asking for its end; returns the body.
async fn every_byte_of(
    transport: &roundtrip_host::Transport,
    url: &str,
    length: usize,
) -> roundtrip_host::ResponseBody {
    let request = http::Request::get(url)
        .body(roundtrip_host::Body::empty())
        .unwrap();
    let response = tokio::time::timeout(FETCH_LIMIT, transport.round_trip(request))
        .await
        .unwrap()
        .unwrap();
    let mut body = response.into_body();
    let mut read = 0;
    while read < length {
        let frame = tokio::time::timeout(FETCH_LIMIT, body.frame())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        read += frame.into_data().map_or(0, |data| data.len());
    }
    body
}
