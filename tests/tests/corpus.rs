//! A corpus of raw responses — valid, malformed and ambiguous — each sent by a real
//! socket to the real transport, with the outcome it must have: the exact body, or a
//! named error kind. After each one a second request on the same transport proves
//! what became of the connection: a response whose framing was fully understood
//! leaves it reusable; a connection that saw an error (or was delimited by the
//! server closing) is never reused. The choices where RFC 9112 allows two behaviours
//! are in `docs/robustness.md`.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use roundtrip_host::ErrorKind;
use roundtrip_tests::{RawServer, answer_each, get, read_request_head, transport};
use tokio::io::AsyncWriteExt;

#[derive(Clone, Copy)]
enum After {
    /// The server keeps the connection and answers later requests on it.
    KeepOpen,
    /// The server closes the connection after writing.
    Close,
}

#[derive(Clone)]
enum Outcome {
    /// This body, and whether the next request reuses the connection.
    Body(&'static [u8], bool),
    /// The round trip or the body read fails with this kind.
    Fails(ErrorKind),
}

struct Case {
    name: &'static str,
    response: Vec<u8>,
    after: After,
    outcome: Outcome,
}

fn case(name: &'static str, response: impl Into<Vec<u8>>, after: After, outcome: Outcome) -> Case {
    Case {
        name,
        response: response.into(),
        after,
        outcome,
    }
}

const NEXT: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nnext";

fn corpus() -> Vec<Case> {
    use After::{Close, KeepOpen};
    use ErrorKind as E;
    use Outcome::{Body, Fails};
    let ok = |head: &str, body: &str| format!("HTTP/1.1 200 OK\r\n{head}\r\n{body}");
    let chunked = |body: &str| ok("Transfer-Encoding: chunked\r\n", body);
    let many_headers: String = (0..2_000).map(|i| format!("X-H{i}: {i}\r\n")).collect();
    let huge_header = format!("X-Big: {}\r\n", "a".repeat(100 * 1024));
    vec![
        // Valid.
        case(
            "content-length",
            ok("Content-Length: 5\r\n", "hello"),
            KeepOpen,
            Body(b"hello", true),
        ),
        case(
            "chunked",
            chunked("5\r\nhello\r\n0\r\n\r\n"),
            KeepOpen,
            Body(b"hello", true),
        ),
        case(
            "chunked, several chunks",
            chunked("2\r\nhe\r\n3\r\nllo\r\n0\r\n\r\n"),
            KeepOpen,
            Body(b"hello", true),
        ),
        case(
            "chunk extensions",
            chunked("5;a=1;b=\"x y\"\r\nhello\r\n0;c\r\n\r\n"),
            KeepOpen,
            Body(b"hello", true),
        ),
        case(
            "chunked trailers",
            chunked("5\r\nhello\r\n0\r\nX-Sum: 5\r\nX-More: y\r\n\r\n"),
            KeepOpen,
            Body(b"hello", true),
        ),
        case(
            "upper-case chunk size",
            chunked("A\r\n0123456789\r\n0\r\n\r\n"),
            KeepOpen,
            Body(b"0123456789", true),
        ),
        case(
            "until close",
            "HTTP/1.1 200 OK\r\n\r\nhello",
            Close,
            Body(b"hello", false),
        ),
        case(
            "HTTP/1.0 with length",
            "HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nhello",
            Close,
            Body(b"hello", false),
        ),
        case(
            "HTTP/1.0 keep-alive",
            "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 5\r\n\r\nhello",
            KeepOpen,
            Body(b"hello", true),
        ),
        case(
            "HTTP/1.0 until close",
            "HTTP/1.0 200 OK\r\n\r\nhello",
            Close,
            Body(b"hello", false),
        ),
        case(
            "204 no content",
            "HTTP/1.1 204 No Content\r\n\r\n",
            KeepOpen,
            Body(b"", true),
        ),
        case(
            "304 with a length it does not send",
            "HTTP/1.1 304 Not Modified\r\nContent-Length: 50\r\n\r\n",
            KeepOpen,
            Body(b"", true),
        ),
        case(
            "content-length 0",
            ok("Content-Length: 0\r\n", ""),
            KeepOpen,
            Body(b"", true),
        ),
        case(
            "repeated equal content-length",
            ok("Content-Length: 5\r\nContent-Length: 5\r\n", "hello"),
            KeepOpen,
            Body(b"hello", true),
        ),
        case(
            "content-length list of equal values",
            ok("Content-Length: 5, 5\r\n", "hello"),
            KeepOpen,
            Body(b"hello", true),
        ),
        case(
            "header names in any case",
            "HTTP/1.1 200 OK\r\ncOnTeNt-TyPe: text/plain\r\ntransfer-ENCODING: Chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            KeepOpen,
            Body(b"hello", true),
        ),
        case(
            "1xx before the answer",
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi",
            KeepOpen,
            Body(b"hi", true),
        ),
        case(
            "obs-fold in a header",
            ok("X-Folded: a\r\n  b\r\nContent-Length: 5\r\n", "hello"),
            KeepOpen,
            Body(b"hello", true),
        ),
        case(
            "empty reason phrase",
            "HTTP/1.1 200 \r\nContent-Length: 2\r\n\r\nhi",
            KeepOpen,
            Body(b"hi", true),
        ),
        case(
            "no reason phrase",
            "HTTP/1.1 200\r\nContent-Length: 2\r\n\r\nhi",
            KeepOpen,
            Body(b"hi", true),
        ),
        case(
            "bare LF line ends in the head",
            "HTTP/1.1 200 OK\nContent-Length: 2\n\nhi",
            KeepOpen,
            Body(b"hi", true),
        ),
        case(
            "2000 header fields",
            ok(&format!("{many_headers}Content-Length: 2\r\n"), "hi"),
            KeepOpen,
            Body(b"hi", true),
        ),
        case(
            "unknown status 999",
            "HTTP/1.1 999 Odd\r\nContent-Length: 2\r\n\r\nhi",
            KeepOpen,
            Body(b"hi", true),
        ),
        case(
            "gzip body left alone when not asked for",
            ok("Content-Encoding: identity\r\nContent-Length: 2\r\n", "hi"),
            KeepOpen,
            Body(b"hi", true),
        ),
        // Ambiguous: understood, but the connection is not trusted again.
        case(
            "content-length and chunked",
            ok(
                "Content-Length: 3\r\nTransfer-Encoding: chunked\r\n",
                "5\r\nhello\r\n0\r\n\r\n",
            ),
            KeepOpen,
            Body(b"hello", false),
        ),
        case(
            "bytes after the end of the body",
            ok("Content-Length: 5\r\n", "helloGARBAGE"),
            KeepOpen,
            Body(b"hello", false),
        ),
        // Malformed framing.
        case(
            "conflicting content-length",
            ok("Content-Length: 5\r\nContent-Length: 6\r\n", "hello!"),
            KeepOpen,
            Fails(E::ProtocolError),
        ),
        case(
            "content-length list of different values",
            ok("Content-Length: 5, 6\r\n", "hello!"),
            KeepOpen,
            Fails(E::ProtocolError),
        ),
        case(
            "content-length with a plus sign",
            ok("Content-Length: +5\r\n", "hello"),
            KeepOpen,
            Fails(E::ProtocolError),
        ),
        case(
            "negative content-length",
            ok("Content-Length: -1\r\n", "hello"),
            KeepOpen,
            Fails(E::ProtocolError),
        ),
        case(
            "content-length with inner space",
            ok("Content-Length: 5 5\r\n", "hello"),
            KeepOpen,
            Fails(E::ProtocolError),
        ),
        case(
            "content-length in hex",
            ok("Content-Length: 0x5\r\n", "hello"),
            KeepOpen,
            Fails(E::ProtocolError),
        ),
        case(
            "content-length overflowing u64",
            ok("Content-Length: 99999999999999999999999\r\n", "hello"),
            KeepOpen,
            Fails(E::ProtocolError),
        ),
        case(
            "empty content-length",
            ok("Content-Length: \r\n", "hello"),
            KeepOpen,
            Fails(E::ProtocolError),
        ),
        case(
            "transfer-encoding gzip, chunked",
            ok("Transfer-Encoding: gzip, chunked\r\n", "0\r\n\r\n"),
            KeepOpen,
            Fails(E::ResponseTransferCoding),
        ),
        case(
            "transfer-encoding identity",
            ok("Transfer-Encoding: identity\r\n", "hello"),
            KeepOpen,
            Fails(E::ResponseTransferCoding),
        ),
        case(
            "chunked twice",
            ok("Transfer-Encoding: chunked, chunked\r\n", "0\r\n\r\n"),
            KeepOpen,
            Fails(E::ResponseTransferCoding),
        ),
        case(
            "bad chunk size",
            chunked("zz\r\nhello\r\n0\r\n\r\n"),
            KeepOpen,
            Fails(E::ProtocolError),
        ),
        case(
            "negative chunk size",
            chunked("-5\r\nhello\r\n0\r\n\r\n"),
            KeepOpen,
            Fails(E::ProtocolError),
        ),
        case(
            "chunk size overflowing",
            chunked("fffffffffffffffffff\r\nhello\r\n0\r\n\r\n"),
            KeepOpen,
            Fails(E::ProtocolError),
        ),
        case(
            "chunk data without CRLF",
            chunked("5\r\nhelloX0\r\n\r\n"),
            KeepOpen,
            Fails(E::ProtocolError),
        ),
        case(
            "chunk size line ended by bare LF",
            chunked("5\nhello\r\n0\r\n\r\n"),
            KeepOpen,
            Fails(E::ProtocolError),
        ),
        case(
            "chunk size line too long",
            chunked(&format!("5;{}\r\nhello\r\n0\r\n\r\n", "x".repeat(5_000))),
            KeepOpen,
            Fails(E::ProtocolError),
        ),
        // Truncated.
        case(
            "body shorter than its length",
            ok("Content-Length: 10\r\n", "hello"),
            Close,
            Fails(E::ResponseIncomplete),
        ),
        case(
            "chunked body cut mid-chunk",
            chunked("a\r\nhello"),
            Close,
            Fails(E::ResponseIncomplete),
        ),
        case(
            "chunked body without its last chunk",
            chunked("5\r\nhello\r\n"),
            Close,
            Fails(E::ResponseIncomplete),
        ),
        case(
            "head cut off",
            "HTTP/1.1 200 OK\r\nContent-Le",
            Close,
            Fails(E::ResponseIncomplete),
        ),
        case("empty reply", "", Close, Fails(E::ResponseIncomplete)),
        // Malformed heads.
        case(
            "NUL in a header value",
            ok("X-A: a\0b\r\nContent-Length: 2\r\n", "hi"),
            KeepOpen,
            Fails(E::ProtocolError),
        ),
        case(
            "bare CR in a header value",
            ok("X-A: a\rb\r\nContent-Length: 2\r\n", "hi"),
            KeepOpen,
            Fails(E::ProtocolError),
        ),
        case(
            "header line without a colon",
            ok("NoColonHere\r\nContent-Length: 2\r\n", "hi"),
            KeepOpen,
            Fails(E::ProtocolError),
        ),
        case(
            "space before the colon",
            ok("Content-Length : 2\r\n", "hi"),
            KeepOpen,
            Fails(E::ProtocolError),
        ),
        case(
            "header section over the limit",
            ok(&format!("{huge_header}Content-Length: 2\r\n"), "hi"),
            KeepOpen,
            Fails(E::ResponseHeaderSectionSize),
        ),
        case(
            "a flood of 1xx",
            format!(
                "{}HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi",
                "HTTP/1.1 100 Continue\r\n\r\n".repeat(1_000)
            ),
            KeepOpen,
            Fails(E::ProtocolError),
        ),
        case(
            "HTTP/0.9 (no status line)",
            "hello world\r\n",
            Close,
            Fails(E::ProtocolError),
        ),
        case(
            "HTTP/2 status line",
            "HTTP/2 200 OK\r\nContent-Length: 2\r\n\r\nhi",
            KeepOpen,
            Fails(E::ProtocolError),
        ),
        case(
            "HTTP/2 frames",
            b"\x00\x00\x12\x04\x00\x00\x00\x00\x00\x00\x03\x00\x00\x00\x64".to_vec(),
            KeepOpen,
            Fails(E::ProtocolError),
        ),
        case(
            "lower-case protocol name",
            "http/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi",
            KeepOpen,
            Fails(E::ProtocolError),
        ),
        case(
            "four-digit status",
            "HTTP/1.1 2000 OK\r\nContent-Length: 2\r\n\r\nhi",
            KeepOpen,
            Fails(E::ProtocolError),
        ),
        case(
            "TLS alert to a plain request",
            b"\x15\x03\x01\x00\x02\x02\x46".to_vec(),
            Close,
            Fails(E::ProtocolError),
        ),
    ]
}

/// Sends `case.response` on the first connection; later connections answer `NEXT`.
async fn server_for(case: &Case) -> RawServer {
    let response = Arc::new(case.response.clone());
    let after = case.after;
    RawServer::start(move |index, mut socket| {
        let response = Arc::clone(&response);
        async move {
            if index > 0 {
                answer_each(socket, NEXT).await;
                return;
            }
            if read_request_head(&mut socket).await.is_none() {
                return;
            }
            if socket.write_all(&response).await.is_err() {
                return;
            }
            match after {
                After::KeepOpen => answer_each(socket, NEXT).await,
                After::Close => {
                    let _ = socket.shutdown().await;
                }
            }
        }
    })
    .await
}

/// Runs one case; `Err` says how it went differently.
async fn check(case: &Case) -> Result<(), String> {
    let server = server_for(case).await;
    let (transport, _recorder) = transport(|c| c.max_response_header_bytes = 64 * 1024);
    let got = get(&transport, &server.url("/case")).await;
    let next = get(&transport, &server.url("/next"))
        .await
        .map_err(|e| format!("the next request failed: {e}"))?;
    if next.body.as_ref() != b"next" {
        return Err(format!("the next request read {:?}", next.body));
    }
    match (&case.outcome, got) {
        (Outcome::Body(body, reused), Ok(fetched)) => {
            if fetched.body.as_ref() != *body {
                return Err(format!("body {:?}, expected {:?}", fetched.body, body));
            }
            if next.conn.reused != *reused {
                return Err(format!(
                    "the next request {} the connection",
                    if next.conn.reused {
                        "reused"
                    } else {
                        "did not reuse"
                    }
                ));
            }
            Ok(())
        }
        (Outcome::Fails(kind), Err(error)) => {
            if error.kind != *kind {
                return Err(format!(
                    "failed with {:?} ({error}), expected {kind:?}",
                    error.kind
                ));
            }
            if next.conn.reused {
                return Err("a connection that saw an error was reused".to_owned());
            }
            if error.message.trim().is_empty() {
                return Err("the error has no message".to_owned());
            }
            Ok(())
        }
        (Outcome::Body(..), Err(error)) => Err(format!("failed: {:?}: {error}", error.kind)),
        (Outcome::Fails(kind), Ok(fetched)) => Err(format!(
            "succeeded with {} {:?}, expected {kind:?}",
            fetched.status, fetched.body
        )),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_response_in_the_corpus_has_its_outcome() {
    let corpus = corpus();
    assert!(corpus.len() >= 40, "the corpus has {} cases", corpus.len());
    let mut failures = Vec::new();
    for case in &corpus {
        if let Err(why) = check(case).await {
            failures.push(format!("{}: {why}", case.name));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases went wrong:\n{}",
        failures.len(),
        corpus.len(),
        failures.join("\n")
    );
}
