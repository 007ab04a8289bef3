//! Full-duplex request bodies: a server that answers as soon as the head arrives and
//! echoes the body as it reads it (hyper's echo) gets the whole body; a body that
//! fails half-way fails the response body; request trailers and per-request
//! timeouts (`RequestOptions`).

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use roundtrip_host::events::{CloseReason, Event, EventKind};
use roundtrip_host::{Body, ErrorKind, RequestOptions};
use roundtrip_servers::EchoServer;
use roundtrip_tests::*;
use tokio::io::AsyncWriteExt;

const EIGHT_MB: usize = 8 * 1024 * 1024;

/// Deterministic body bytes.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| ((i * 31) ^ (i >> 11)) as u8).collect()
}

/// `bytes` as a stream of 64 KiB chunks.
fn chunks(bytes: &[u8]) -> impl futures::Stream<Item = Bytes> + Send + 'static {
    let chunks: Vec<Bytes> = bytes
        .chunks(64 * 1024)
        .map(Bytes::copy_from_slice)
        .collect();
    futures::stream::iter(chunks)
}

fn position(events: &[Event], wanted: impl Fn(&EventKind) -> bool) -> Option<usize> {
    events.iter().position(|e| wanted(&e.kind))
}

/// A test fails rather than hangs.
async fn bounded<T>(work: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), work)
        .await
        .expect("no hang: the exchange ended")
}

async fn streams_whole_through_the_echo(declare_length: bool) {
    let server = EchoServer::start().await.unwrap();
    let (transport, recorder) = transport(|_| {});
    let sent = pattern(EIGHT_MB);
    let mut request = http::Request::post(server.url("/echo"));
    if declare_length {
        request = request.header("content-length", EIGHT_MB);
    }
    let request = request.body(Body::from_stream(chunks(&sent))).unwrap();
    let answered = bounded(fetch(&transport, request)).await.unwrap();
    assert_eq!(answered.status, 200);
    assert_eq!(answered.body.len(), EIGHT_MB);
    assert!(answered.body == sent, "the echo came back byte for byte");
    // The server read the whole body, ended as its framing says.
    let received = server.received();
    assert_eq!(received.len(), 1);
    assert_eq!(
        (received[0].bytes, received[0].complete),
        (EIGHT_MB as u64, true)
    );
    // `wrote_request` came when the body really ended: after the response head.
    let events = recorder.events();
    let response = position(&events, |k| matches!(k, EventKind::Response { .. })).unwrap();
    let wrote = position(&events, |k| matches!(k, EventKind::WroteRequest { .. })).unwrap();
    assert!(
        response < wrote,
        "response at {response}, wrote_request at {wrote}"
    );
    assert_eq!(
        events[wrote].kind,
        EventKind::WroteRequest { error: None },
        "the write finished"
    );
    // Written to its end and read to its end: the connection is reused.
    let again = bounded(fetch(
        &transport,
        http::Request::post(server.url("/echo"))
            .body(Body::from_stream(chunks(b"again")))
            .unwrap(),
    ))
    .await
    .unwrap();
    assert_eq!(again.body, "again");
    assert!(again.conn.reused);
    assert_eq!(server.connections(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_stream_keeps_going_after_the_echo_answers() {
    streams_whole_through_the_echo(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_with_a_length_keeps_going_after_the_echo_answers() {
    streams_whole_through_the_echo(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_failing_half_way_fails_the_response_body_and_closes_the_connection() {
    let server = EchoServer::start().await.unwrap();
    let (transport, recorder) = transport(|_| {});
    // A megabyte, then (once the echo has answered) the failure.
    let body = futures::stream::unfold(0, |step| async move {
        match step {
            0 => Some((Ok(Bytes::from(pattern(1024 * 1024))), 1)),
            1 => {
                tokio::time::sleep(Duration::from_millis(300)).await;
                Some((Err(std::io::Error::other("the disk went away")), 2))
            }
            _ => None,
        }
    });
    let request = http::Request::post(server.url("/echo"))
        .body(Body::from_try_stream(body))
        .unwrap();
    let response = bounded(transport.round_trip(request)).await.unwrap();
    assert_eq!(response.status(), 200, "the echo answered at the head");
    let failed = bounded(response.into_body().collect()).await.unwrap_err();
    assert_eq!(failed.kind, ErrorKind::RequestBodyError);
    assert!(failed.message.contains("the disk went away"), "{failed}");
    assert_closed(&recorder, CloseReason::Error).await;
    let events = recorder.events();
    assert!(events.iter().any(|e| matches!(
        &e.kind,
        EventKind::WroteRequest { error: Some(why) } if why.contains("the disk went away")
    )));
    // The server never saw the body end: the chunked body was not terminated.
    assert!(
        wait_until(|| server.received().len() == 1).await,
        "the server saw the connection go"
    );
    assert!(!server.received()[0].complete);
    // The next request dials afresh.
    let next = bounded(fetch(
        &transport,
        http::Request::post(server.url("/echo"))
            .body(Body::from("ok"))
            .unwrap(),
    ))
    .await
    .unwrap();
    assert!(!next.conn.reused);
    assert_eq!(server.connections(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_shorter_than_its_length_fails_with_its_size() {
    let server = EchoServer::start().await.unwrap();
    let (transport, recorder) = transport(|_| {});
    // 1500 bytes, then (once the echo has answered) the end.
    let short = futures::stream::unfold(0, |step| async move {
        match step {
            0 => Some((Bytes::from(pattern(1500)), 1)),
            _ => {
                tokio::time::sleep(Duration::from_millis(300)).await;
                None
            }
        }
    });
    let request = http::Request::post(server.url("/echo"))
        .header("content-length", 2000)
        .body(Body::from_stream(short))
        .unwrap();
    let response = bounded(transport.round_trip(request)).await.unwrap();
    let failed = bounded(response.into_body().collect()).await.unwrap_err();
    assert_eq!(failed.kind, ErrorKind::RequestBodySize);
    assert!(
        failed
            .message
            .contains("ended after 1500 of its 2000 declared bytes"),
        "{failed}"
    );
    assert_closed(&recorder, CloseReason::Error).await;
    // Before any answer, the round trip itself fails.
    let silent = RawServer::start(|_, mut socket| async move {
        read_request_head(&mut socket).await;
        tokio::time::sleep(Duration::from_secs(5)).await;
    })
    .await;
    let request = http::Request::post(silent.url("/"))
        .header("content-length", 2000)
        .body(Body::from_stream(chunks(&pattern(1500))))
        .unwrap();
    let failed = bounded(transport.round_trip(request)).await.unwrap_err();
    assert_eq!(failed.kind, ErrorKind::RequestBodySize);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_past_the_declared_length_are_refused_before_the_head() {
    // A server that reads the head and stays silent: the failure is the request's.
    let server = RawServer::start(|_, mut socket| async move {
        read_request_head(&mut socket).await;
        tokio::time::sleep(Duration::from_secs(5)).await;
    })
    .await;
    let (transport, _) = transport(|_| {});
    let request = http::Request::post(server.url("/"))
        .header("content-length", 5)
        .body(Body::from_stream(futures::stream::iter(vec![Bytes::from(
            "helloworld",
        )])))
        .unwrap();
    let failed = bounded(transport.round_trip(request)).await.unwrap_err();
    assert_eq!(failed.kind, ErrorKind::RequestBodySize);
    assert!(
        failed
            .message
            .contains("longer than its Content-Length of 5"),
        "{failed}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_trailers_follow_a_chunked_body() {
    let server = EchoServer::start().await.unwrap();
    let (transport, _) = transport(|_| {});
    let mut trailers = http::HeaderMap::new();
    trailers.insert("x-checksum", "42".parse().unwrap());
    let frames = futures::stream::iter(vec![
        Ok::<_, std::io::Error>(http_body::Frame::data(Bytes::from("abc"))),
        Ok(http_body::Frame::trailers(trailers)),
    ]);
    let request = http::Request::post(server.url("/echo"))
        .body(Body::wrap(http_body_util::StreamBody::new(frames)))
        .unwrap();
    let answered = bounded(fetch(&transport, request)).await.unwrap();
    assert_eq!(answered.body, "abc");
    let received = server.received();
    assert_eq!(received[0].trailers, vec!["x-checksum".to_owned()]);
    assert!(received[0].complete);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_byte_timeout_names_the_read_that_did_not_come() {
    let server = RawServer::start(|_, mut socket| async move {
        read_request_head(&mut socket).await;
        tokio::time::sleep(Duration::from_secs(5)).await;
    })
    .await;
    let (transport, recorder) = transport(|_| {});
    let mut request = http::Request::get(server.url("/"))
        .body(Body::empty())
        .unwrap();
    request.extensions_mut().insert(RequestOptions {
        first_byte_timeout: Some(Duration::from_millis(200)),
        ..Default::default()
    });
    let failed = bounded(transport.round_trip(request)).await.unwrap_err();
    assert_eq!(failed.kind, ErrorKind::ReadTimeout);
    assert!(
        failed.message.contains("first-byte timeout of 200ms"),
        "{failed}"
    );
    assert_closed(&recorder, CloseReason::Error).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_between_bytes_timeout_ends_a_stalled_body() {
    let server = RawServer::start(|_, mut socket| async move {
        read_request_head(&mut socket).await;
        socket
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_secs(5)).await;
    })
    .await;
    let (transport, _) = transport(|_| {});
    let mut request = http::Request::get(server.url("/"))
        .body(Body::empty())
        .unwrap();
    request.extensions_mut().insert(RequestOptions {
        between_bytes_timeout: Some(Duration::from_millis(200)),
        ..Default::default()
    });
    let response = bounded(transport.round_trip(request)).await.unwrap();
    let failed = bounded(response.into_body().collect()).await.unwrap_err();
    assert_eq!(failed.kind, ErrorKind::ReadTimeout);
    assert!(failed.message.contains("between-bytes"), "{failed}");
}

/// Polls `done` for up to five seconds.
async fn wait_until(done: impl Fn() -> bool) -> bool {
    for _ in 0..500 {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

/// curl's rule, not Go's: a final 2xx to `Expect: 100-continue` lets the body go (the
/// server took the request; an echo reads on), where Go holds it back and hangs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_final_2xx_to_expect_continue_lets_the_body_go() {
    let server = EchoServer::start().await.unwrap();
    let (transport, _) = transport(|c| c.expect_continue_timeout = Some(Duration::from_secs(30)));
    let sent = pattern(1024 * 1024);
    let request = http::Request::post(server.url("/echo"))
        .header("expect", "100-continue")
        .body(Body::from_stream(chunks(&sent)))
        .unwrap();
    let answered = bounded(fetch(&transport, request)).await.unwrap();
    assert!(answered.body == sent, "the body went and came back");
}
