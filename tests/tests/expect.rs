//! A server that answers before the body is sent, and `Expect: 100-continue`.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use roundtrip_host::Body;
use roundtrip_host::events::{CloseReason, EventKind};
use roundtrip_tests::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Reads what arrives within `wait`, returning the byte count.
async fn drain_for(socket: &mut tokio::net::TcpStream, wait: Duration) -> usize {
    let mut total = 0;
    let mut buf = vec![0u8; 64 * 1024];
    while let Ok(Ok(n)) = tokio::time::timeout(wait, socket.read(&mut buf)).await {
        if n == 0 {
            break;
        }
        total += n;
    }
    total
}

/// Go: TestTransportNoReuseAfterEarlyResponse.
#[tokio::test]
async fn an_early_response_is_heard_and_its_connection_not_reused() {
    let server = RawServer::start(|_, mut socket| async move {
        let head = read_request_head(&mut socket).await.unwrap();
        if head.starts_with("POST") {
            // Answer at once, without reading the body.
            socket
                .write_all(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 5\r\n\r\nearly")
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_secs(2)).await;
        } else {
            let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
            socket.write_all(ok).await.unwrap();
            answer_each(socket, ok).await;
        }
    })
    .await;
    let (transport, recorder) = transport(|_| {});
    // As in Go's test, the body is still being written when the answer comes: its
    // stream yields one chunk and then stays open.
    let (chunks, pending) = tokio::sync::mpsc::channel::<bytes::Bytes>(1);
    chunks
        .send(bytes::Bytes::from(vec![b'x'; 1000]))
        .await
        .unwrap();
    let body = futures::stream::unfold(pending, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    });
    let request = http::Request::post(server.url("/upload"))
        .body(Body::from_stream(body))
        .unwrap();
    let answered = tokio::time::timeout(Duration::from_secs(5), fetch(&transport, request))
        .await
        .expect("the answer is heard while the body is unfinished")
        .unwrap();
    drop(chunks);
    assert_eq!(
        (answered.status, answered.body.as_ref()),
        (413, &b"early"[..])
    );
    assert_closed(&recorder, CloseReason::ConnectionClose).await;
    // The write went on beside the answer, and says it never finished.
    assert_eq!(
        count(&recorder.events(), |k| matches!(
            k,
            EventKind::WroteRequest { error: Some(why) } if why.contains("not written to its end")
        )),
        1
    );
    let next = get(&transport, &server.url("/")).await.unwrap();
    assert!(
        !next.conn.reused,
        "the early-answered connection was not reused"
    );
}

/// Reads a 5-byte body and answers with it.
async fn echo_five_bytes(mut socket: tokio::net::TcpStream) {
    let mut body = [0u8; 5];
    socket.read_exact(&mut body).await.unwrap();
    let reply = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n{}",
        String::from_utf8_lossy(&body)
    );
    socket.write_all(reply.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
}

fn expect_continue(url: &str, body: &'static str) -> http::Request<Body> {
    http::Request::put(url)
        .header("expect", "100-continue")
        .body(Body::from(body))
        .unwrap()
}

/// Go: TestTransportExpect100Continue (server approves).
#[tokio::test]
async fn expect_continue_sends_the_body_after_100() {
    let server = RawServer::start(|_, mut socket| async move {
        read_request_head(&mut socket).await.unwrap();
        // Nothing of the body comes before the go-ahead.
        assert_eq!(drain_for(&mut socket, Duration::from_millis(150)).await, 0);
        socket
            .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
            .await
            .unwrap();
        echo_five_bytes(socket).await;
    })
    .await;
    let (transport, recorder) =
        transport(|c| c.expect_continue_timeout = Some(Duration::from_secs(5)));
    let answered = fetch(&transport, expect_continue(&server.url("/"), "hello"))
        .await
        .unwrap();
    assert_eq!(answered.body, "hello");
    assert_eq!(
        count(&recorder.events(), |k| *k
            == EventKind::Got1xx { status: 100 }),
        1
    );
}

/// Go: TestTransportExpect100Continue (server refuses): the body is never sent.
#[tokio::test]
async fn expect_continue_with_a_final_answer_never_sends_the_body() {
    let body_bytes_seen = Arc::new(AtomicUsize::new(usize::MAX));
    let seen = Arc::clone(&body_bytes_seen);
    let server = RawServer::start(move |_, mut socket| {
        let seen = Arc::clone(&seen);
        async move {
            read_request_head(&mut socket).await.unwrap();
            socket
                .write_all(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n")
                .await
                .unwrap();
            seen.store(
                drain_for(&mut socket, Duration::from_millis(300)).await,
                Ordering::SeqCst,
            );
        }
    })
    .await;
    let (transport, _) = transport(|c| c.expect_continue_timeout = Some(Duration::from_secs(5)));
    let answered = fetch(&transport, expect_continue(&server.url("/"), "secret"))
        .await
        .unwrap();
    assert_eq!(answered.status, 401);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        body_bytes_seen.load(Ordering::SeqCst),
        0,
        "the body stayed home"
    );
}

/// Go: TestTransportExpect100Continue (silent server): the body goes after the timeout.
#[tokio::test]
async fn expect_continue_sends_the_body_after_the_timeout() {
    let server = RawServer::start(|_, mut socket| async move {
        read_request_head(&mut socket).await.unwrap();
        echo_five_bytes(socket).await;
    })
    .await;
    let (transport, recorder) =
        transport(|c| c.expect_continue_timeout = Some(Duration::from_millis(100)));
    let answered = fetch(&transport, expect_continue(&server.url("/"), "hello"))
        .await
        .unwrap();
    assert_eq!(answered.body, "hello");
    assert_eq!(
        count(&recorder.events(), |k| matches!(
            k,
            EventKind::Got1xx { .. }
        )),
        0
    );
}
