//! Go's transport tests (net/http/transport_test.go) not covered elsewhere, ported as
//! black-box tests over real loopback sockets. `docs/conformance.md` maps every Go
//! test name to its test here or in the other files.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use roundtrip_host::events::{CloseReason, EventKind};
use roundtrip_host::{Body, ErrorKind};
use roundtrip_servers::{LocalServer, body_bytes};
use roundtrip_tests::*;
use tokio::io::AsyncWriteExt;

/// Counts `Connection: close` headers in the request the server got.
async fn connection_close_echo() -> RawServer {
    RawServer::start(|_, mut socket| async move {
        while let Some(head) = read_request_head(&mut socket).await {
            let closes = head
                .to_ascii_lowercase()
                .matches("connection: close")
                .count();
            let body = format!("{closes}");
            let reply = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            if socket.write_all(reply.as_bytes()).await.is_err() {
                return;
            }
        }
    })
    .await
}

fn with_close(url: &str) -> http::Request<Body> {
    http::Request::get(url)
        .header("connection", "close")
        .body(Body::empty())
        .unwrap()
}

/// Go: TestTransportConnectionCloseOnRequest.
#[tokio::test]
async fn connection_close_on_request() {
    let server = connection_close_echo().await;
    let (transport, recorder) = transport(|_| {});
    for _ in 0..2 {
        let fetched = fetch(&transport, with_close(&server.url("/")))
            .await
            .unwrap();
        assert_eq!(fetched.body, "1");
    }
    let events = recorder.events();
    assert_eq!(dials(&events), 2);
    assert_eq!(closes(&events), [CloseReason::ConnectionClose; 2]);
}

/// Go: TestTransportConnectionCloseOnRequestDisableKeepAlive.
#[tokio::test]
async fn connection_close_on_request_with_keepalives_disabled_is_sent_once() {
    let server = connection_close_echo().await;
    let (transport, _) = transport(|c| c.disable_keep_alives = true);
    let fetched = fetch(&transport, with_close(&server.url("/")))
        .await
        .unwrap();
    assert_eq!(fetched.body, "1", "exactly one Connection: close");
}

/// Go: TestTransportIdleCacheKeys (and CloseIdleConnections).
#[tokio::test]
async fn idle_cache_keys() {
    let server = LocalServer::start().await.unwrap();
    let (transport, recorder) = transport(|_| {});
    assert!(transport.stats().await.keys.is_empty());
    get(&transport, &server.url("/small")).await.unwrap();
    let stats = transport.stats().await;
    assert_eq!(stats.keys.len(), 1);
    assert_eq!(stats.keys[0].key, format!("http://{}", server.addr()));
    assert_eq!(stats.keys[0].idle, 1);
    transport.close_idle_connections().await;
    assert!(transport.stats().await.keys.is_empty());
    assert_eq!(
        closes(&recorder.events()),
        [CloseReason::CloseIdleConnections]
    );
}

/// Go: TestTransportReuseConnEmptyResponseBody.
#[tokio::test]
async fn reuse_conn_empty_response_body() {
    let server = LocalServer::start().await.unwrap();
    let (transport, recorder) = transport(|_| {});
    for _ in 0..3 {
        let fetched = get(&transport, &server.url("/bytes/0")).await.unwrap();
        assert!(fetched.body.is_empty());
    }
    assert_eq!(dials(&recorder.events()), 1);
}

/// Go: TestChunkedNoContent and TestNoBodyOnChunked304Response: 204 and 304 carry no
/// body even with `Transfer-Encoding: chunked`, and the connection stays reusable.
#[tokio::test]
async fn chunked_no_content_and_304() {
    let server = RawServer::start(|_, socket| async move {
        answer_each(
            socket,
            b"HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\n\r\n",
        )
        .await;
    })
    .await;
    let not_modified = RawServer::start(|_, socket| async move {
        answer_each(
            socket,
            b"HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n",
        )
        .await;
    })
    .await;
    let (transport, recorder) = transport(|_| {});
    for url in [
        server.url("/"),
        server.url("/"),
        not_modified.url("/"),
        not_modified.url("/"),
    ] {
        let fetched = get(&transport, &url).await.unwrap();
        assert!(fetched.body.is_empty());
    }
    assert_eq!(dials(&recorder.events()), 2, "one connection per server");
}

/// Go: TestTransportMaxIdleConns: the global cap evicts the least recently used.
#[tokio::test]
async fn max_idle_conns_evicts_the_least_recently_used() {
    let servers = [
        LocalServer::start().await.unwrap(),
        LocalServer::start().await.unwrap(),
        LocalServer::start().await.unwrap(),
    ];
    let (transport, recorder) = transport(|c| c.max_idle_conns = 2);
    for server in &servers {
        get(&transport, &server.url("/small")).await.unwrap();
    }
    let events = recorder.events();
    assert_eq!(closes(&events), [CloseReason::MaxIdle]);
    let evicted = events
        .iter()
        .find(|e| {
            e.kind
                == EventKind::Close {
                    reason: CloseReason::MaxIdle,
                }
        })
        .unwrap();
    assert_eq!(
        evicted.key.as_deref(),
        Some(format!("http://{}", servers[0].addr()).as_str())
    );
    let stats = transport.stats().await;
    assert_eq!(stats.keys.iter().map(|k| k.idle).sum::<u32>(), 2);
}

/// Go: TestTransportConcurrency — 500 requests from 50 workers on one transport.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_500_requests() {
    let server = LocalServer::start().await.unwrap();
    let (transport, recorder) = transport(|c| c.max_idle_conns_per_host = 50);
    let workers: Vec<_> = (0..50)
        .map(|w| {
            let (transport, base) = (transport.clone(), server.url(""));
            tokio::spawn(async move {
                for i in 0..10 {
                    let len = 100 + (w * 10 + i) * 37;
                    let fetched = get(&transport, &format!("{base}/bytes/{len}"))
                        .await
                        .unwrap();
                    assert!(fetched.body == body_bytes(len), "worker {w} request {i}");
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.unwrap();
    }
    let events = recorder.events();
    assert_eq!(
        count(&events, |k| matches!(k, EventKind::BodyEof { .. })),
        500
    );
    let closes = closes(&events);
    // One connection per worker, give or take late binding: a request that waited
    // for a dial may take a connection freed meanwhile, and the late dial then goes
    // idle as a spare (Go does the same), so a loaded machine sees a few more.
    assert!(
        dials(&events) <= 100,
        "connections are reused, about one per worker: {} dials, closes {closes:?}",
        dials(&events)
    );
}

/// Go: TestStressSurpriseServerCloses — a server that closes every connection right
/// after answering, without saying so. Every request still succeeds: dead idle
/// connections are noticed, and a request that hits one is retried.
#[tokio::test]
async fn stress_surprise_server_closes() {
    let server = RawServer::start(|_, mut socket| async move {
        if read_request_head(&mut socket).await.is_some() {
            let _ = socket
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                .await;
        }
    })
    .await;
    let (transport, _) = transport(|_| {});
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let (transport, url) = (transport.clone(), server.url("/"));
            tokio::spawn(async move {
                for _ in 0..50 {
                    assert_eq!(get(&transport, &url).await.unwrap().body, "ok");
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.unwrap();
    }
}

/// Go: TestTransportPersistConnLeak — whatever happens to requests, every connection
/// dialled is accounted for and closed in the end.
#[tokio::test]
async fn persist_conn_leak() {
    let server = LocalServer::start().await.unwrap();
    let (transport, recorder) = transport(|_| {});
    for i in 0..30 {
        let path = ["/small", "/nope", "/close/10", "/bytes/100000"][i % 4];
        let response = transport
            .round_trip(
                http::Request::get(server.url(path))
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        if i % 8 == 3 {
            drop(response); // an early close
        } else {
            http_body_util::BodyExt::collect(response.into_body())
                .await
                .unwrap();
        }
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    transport.close_idle_connections().await;
    assert!(
        transport.stats().await.keys.is_empty(),
        "nothing active or idle is left"
    );
    let events = recorder.events();
    assert_eq!(
        closes(&events).len(),
        dials(&events),
        "every dialled connection was closed"
    );
}

/// Go: TestTransportIgnore1xxResponses — and a flood of them is refused.
#[tokio::test]
async fn ignore_1xx_responses_but_not_a_flood() {
    let server = RawServer::start(|_, mut socket| async move {
        let Some(head) = read_request_head(&mut socket).await else {
            return;
        };
        let interim = if head.starts_with("GET /flood") { 6 } else { 2 };
        let mut reply = "HTTP/1.1 123 OneTwoThree\r\nFoo: bar\r\n\r\n".repeat(interim);
        reply.push_str("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello");
        let _ = socket.write_all(reply.as_bytes()).await;
    })
    .await;
    let (transport, recorder) = transport(|_| {});
    let fetched = get(&transport, &server.url("/")).await.unwrap();
    assert_eq!(
        (fetched.status, fetched.body.as_ref()),
        (200, &b"hello"[..])
    );
    assert_eq!(
        count(&recorder.events(), |k| *k
            == EventKind::Got1xx { status: 123 }),
        2
    );
    let error = get(&transport, &server.url("/flood")).await.unwrap_err();
    assert_eq!(error.kind, ErrorKind::ProtocolError);
    assert!(error.message.contains("too many 1xx"), "{error}");
}

/// Go: TestTransportTreat101Terminal — a 101 ends the exchange; what follows is the
/// new protocol's bytes, delivered as the body, and the connection is not reused.
#[tokio::test]
async fn treat_101_terminal() {
    let server = RawServer::start(|_, mut socket| async move {
        read_request_head(&mut socket).await;
        let _ = socket
            .write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: foo\r\nConnection: upgrade\r\n\r\nfoo-protocol bytes")
            .await;
    })
    .await;
    let (transport, recorder) = transport(|_| {});
    let fetched = get(&transport, &server.url("/")).await.unwrap();
    assert_eq!(fetched.status, 101);
    assert_eq!(fetched.body, "foo-protocol bytes");
    assert_eq!(
        count(&recorder.events(), |k| matches!(
            k,
            EventKind::PutIdle { .. }
        )),
        0
    );
}

/// Go: TestTransportResponseHeaderLength — Go's error text.
#[tokio::test]
async fn response_header_length() {
    let server = RawServer::start(|_, mut socket| async move {
        read_request_head(&mut socket).await;
        let big = format!("HTTP/1.1 200 OK\r\nX-Big: {}\r\n\r\n", "a".repeat(20_000));
        let _ = socket.write_all(big.as_bytes()).await;
    })
    .await;
    let (transport, recorder) = transport(|c| c.max_response_header_bytes = 10_000);
    let error = get(&transport, &server.url("/")).await.unwrap_err();
    assert_eq!(error.kind, ErrorKind::ResponseHeaderSectionSize);
    assert_eq!(
        error.message,
        "server response headers exceeded 10000 bytes; aborted"
    );
    assert_eq!(closes(&recorder.events()), [CloseReason::Error]);
}

/// Go: TestTransportRejectsSignInContentLength.
#[tokio::test]
async fn rejects_sign_in_content_length() {
    let server = RawServer::start(|_, mut socket| async move {
        read_request_head(&mut socket).await;
        let _ = socket
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: +3\r\n\r\nabc")
            .await;
    })
    .await;
    let (transport, _) = transport(|_| {});
    let error = get(&transport, &server.url("/")).await.unwrap_err();
    assert_eq!(error.kind, ErrorKind::ProtocolError);
    assert!(
        error.message.contains("bad Content-Length \"+3\""),
        "{error}"
    );
}
