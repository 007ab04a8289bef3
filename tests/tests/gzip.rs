//! Go: TestTransportGzip and friends — transparent gzip only when the transport asked.

#![allow(clippy::unwrap_used)]

use roundtrip_host::{Body, ErrorKind};
use roundtrip_servers::{LocalServer, body_bytes};
use roundtrip_tests::*;
use tokio::io::AsyncWriteExt;

#[tokio::test]
async fn gzip_the_transport_asked_for_is_undone_transparently() {
    let server = LocalServer::start().await.unwrap();
    let (transport, _) = transport(|_| {});
    let fetched = get(&transport, &server.url("/gzip/200000")).await.unwrap();
    assert!(fetched.body == body_bytes(200_000));
    assert!(fetched.headers.get("content-encoding").is_none());
    assert!(fetched.headers.get("content-length").is_none());
    let head = get(&transport, &server.url("/request-head")).await.unwrap();
    assert!(String::from_utf8_lossy(&head.body).contains("Accept-Encoding: gzip\r\n"));
}

#[tokio::test]
async fn a_caller_choosing_an_encoding_gets_the_bytes_as_sent() {
    let server = LocalServer::start().await.unwrap();
    let (transport, _) = transport(|_| {});
    let request = http::Request::get(server.url("/gzip/5000"))
        .header("accept-encoding", "gzip")
        .body(Body::empty())
        .unwrap();
    let fetched = fetch(&transport, request).await.unwrap();
    assert_eq!(fetched.headers["content-encoding"], "gzip");
    assert_eq!(&fetched.body[..2], &[0x1f, 0x8b], "still gzip");
}

#[tokio::test]
async fn no_gzip_for_head_range_or_when_disabled() {
    let server = LocalServer::start().await.unwrap();
    let (transport, _) = transport(|_| {});
    let ranged = http::Request::get(server.url("/request-head"))
        .header("range", "bytes=0-")
        .body(Body::empty())
        .unwrap();
    let head = fetch(&transport, ranged).await.unwrap();
    assert!(!String::from_utf8_lossy(&head.body).contains("Accept-Encoding"));
    let (plain, _) = transport_with_no_compression();
    let head = get(&plain, &server.url("/request-head")).await.unwrap();
    assert!(!String::from_utf8_lossy(&head.body).contains("Accept-Encoding"));
    let fetched = get(&plain, &server.url("/gzip/1000")).await.unwrap();
    assert!(fetched.body == body_bytes(1000), "the server sent it plain");
}

fn transport_with_no_compression() -> (roundtrip_host::Transport, roundtrip_host::events::Recorder)
{
    transport(|c| c.disable_compression = true)
}

#[tokio::test]
async fn a_corrupt_gzip_body_is_an_error_and_the_connection_is_closed() {
    let server = RawServer::start(|_, mut socket| async move {
        read_request_head(&mut socket).await;
        let _ = socket
            .write_all(
                b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 9\r\n\r\nnot gzip!",
            )
            .await;
    })
    .await;
    let (transport, recorder) = transport(|_| {});
    let error = get(&transport, &server.url("/")).await.unwrap_err();
    assert_eq!(error.kind, ErrorKind::ResponseContentCoding, "{error}");
    assert_eq!(
        closes(&recorder.events()),
        [roundtrip_host::events::CloseReason::Error]
    );
}
