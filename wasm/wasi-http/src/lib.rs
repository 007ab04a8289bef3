//! The wasi:http face: `wasi:http/client@0.3.0` on top of the transport.
//!
//! ```text
//!  any wasi:http guest ── client.send(request) ──► this component
//!      request: method, scheme, authority, path, headers, options, body stream and
//!               trailers future
//!        ──► round-tripper.transport.round-trip ──► (pool, net, events)
//!      response ◄── status, headers (hop-by-hop ones dropped), the transport's body
//!                   stream passed through as is, trailers converted when they come
//!      transmit future ◄── the transport's `request-sent`: the body's real outcome
//! ```
//!
//! It behaves as wasmtime-wasi-http 48's own client does where wasi:http leaves a
//! choice (URI checks before any I/O, error codes, `request-options`, trailers, body
//! size); `docs/embedding.md` lists where it differs and why.
//!
//! One transport (one pool) serves every request of the instance, created at the
//! first `send` with Go's `DefaultTransport` knobs, except that up to 100 idle
//! connections are kept per host (Go keeps 2, which makes a concurrent guest dial
//! again and again), with the proxies the guest's environment names (`HTTP_PROXY`,
//! `HTTPS_PROXY`, `NO_PROXY`, `ALL_PROXY`) and the knobs it sets (`ROUNDTRIP_*`, see
//! `convert::config`). The host's `wasi:http/types` resources carry the requests in
//! and the responses out; the body bytes never pass through this component, but for
//! a request body's, which is copied once from the guest's stream to the transport's.

#![cfg(target_arch = "wasm32")]

// Generated glue: the ABI needs `unsafe` and exported symbols.
#[allow(unsafe_code)]
mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "wasi-http-client",
        generate_all,
    });
}

mod convert;

use std::cell::RefCell;
use std::pin::pin;
use std::rc::Rc;

use bindings::exports::roundtrip::transport::pool;
use bindings::exports::wasi::http::client::Guest;
use bindings::roundtrip::transport::round_tripper::Transport;
use bindings::roundtrip::transport::types as rt;
use bindings::wasi::http::types::{ErrorCode, Request, Response, Trailers};
use bindings::{wit_future, wit_stream};
use futures::future::{Either, select};
use wit_bindgen::{FutureReader, StreamReader, StreamResult, StreamWriter};

struct Client;

// The export glue is `unsafe` ABI code too.
#[allow(unsafe_code)]
mod export {
    use super::{Client, bindings};
    bindings::export!(Client with_types_in bindings);
}

thread_local! {
    /// The instance's one pool, or why the guest's environment could not configure it.
    static TRANSPORT: RefCell<Option<Result<Rc<Transport>, String>>> = const { RefCell::new(None) };
}

/// The instance's one pool.
fn transport() -> Result<Rc<Transport>, ErrorCode> {
    TRANSPORT.with(|cell| {
        cell.borrow_mut()
            .get_or_insert_with(|| convert::config().map(|config| Rc::new(Transport::new(&config))))
            .clone()
            .map_err(|why| ErrorCode::InternalError(Some(why)))
    })
}

/// What the guest's body said when it failed: the transport carries it in words, the
/// guest gets its own code back.
type GuestError = Rc<RefCell<Option<ErrorCode>>>;

impl Guest for Client {
    async fn send(request: Request) -> Result<Response, ErrorCode> {
        // Checked before any I/O, as wasmtime-wasi-http does.
        let url = convert::url(&request);
        let method = convert::method(request.get_method());
        let headers = request.get_headers().copy_all();
        let options = convert::options(request.get_options());
        let (transmitted, transmit) = wit_future::new::<Result<(), ErrorCode>>(|| Ok(()));
        let (contents, trailers) = Request::consume_body(request, transmit);
        let ready = transport().and_then(|transport| url.map(|url| (transport, url)));
        let (transport, url) = match ready {
            Ok(ready) => ready,
            Err(code) => {
                // Nothing was sent: the transmit future says why.
                report(transmitted, Err(code.clone()));
                return Err(code);
            }
        };
        let guest_error = GuestError::default();
        let body = request_body(&method, &headers, contents, trailers, &guest_error).await;
        let sent = transport
            .round_trip(rt::Request {
                method,
                url,
                headers: convert::block(&headers),
                body,
                options,
                cancel_id: 0,
                releases: Vec::new(),
            })
            .await
            .map_err(|e| restore(&guest_error, e));
        let sent = match sent {
            Ok(sent) => sent,
            Err(code) => {
                report(transmitted, Err(code.clone()));
                return Err(code);
            }
        };
        let headers = convert::response_headers(&sent.headers);
        let (trailers_out, trailers_in) =
            wit_future::new::<Result<Option<Trailers>, ErrorCode>>(|| Ok(None));
        let contents = match sent.body {
            rt::ResponseBody::Whole(bytes) => {
                // It came whole: the request went out, and there are no trailers. Its
                // connection is let go once the guest has taken the bytes (or dropped
                // the body).
                let (mut writer, contents) = wit_stream::new::<u8>();
                // An HTTP/2 body held nothing: its stream is over.
                let holds = sent.conn != 0 && sent.version != rt::HttpVersion::Http2;
                let conn = sent.conn;
                // Each end when it is read: a guest may read the body before (or
                // without ever) reading its transmit future.
                wit_bindgen::spawn_local(async move {
                    let transmit = async {
                        let _ = transmitted.write(Ok(())).await;
                    };
                    let body = async {
                        if !bytes.is_empty() {
                            let read = writer.write_all(bytes).await.is_empty();
                            if holds {
                                transport.release(conn, read).await;
                            }
                        }
                        drop(writer);
                        let _ = trailers_out.write(Ok(None)).await;
                    };
                    futures::join!(transmit, body);
                });
                contents
            }
            rt::ResponseBody::Streamed(body) => {
                let errors = Rc::clone(&guest_error);
                // One task reports both ends: the request's (the transmit future) and
                // the response body's (its trailers), each when it comes.
                wit_bindgen::spawn_local(async move {
                    let transmit = async {
                        let outcome = body.request_sent.await.map_err(|e| restore(&errors, e));
                        let _ = transmitted.write(outcome).await;
                    };
                    let trailers = async {
                        let trailers = match body.trailers.await {
                            Ok(None) => Ok(None),
                            Ok(Some(fields)) => Ok(Some(convert::response_headers(&fields))),
                            Err(e) => Err(restore(&guest_error, e)),
                        };
                        let _ = trailers_out.write(trailers).await;
                    };
                    futures::join!(transmit, trailers);
                });
                body.contents
            }
        };
        let (response, _) = Response::new(headers, Some(contents), trailers_in);
        response
            .set_status_code(sent.status)
            .map_err(|()| ErrorCode::HttpProtocolError)?;
        Ok(response)
    }
}

impl pool::Guest for Client {
    fn close_idle_connections() {
        let transport = TRANSPORT.with(|cell| cell.borrow().clone());
        if let Some(Ok(transport)) = transport {
            transport.close_idle_connections();
        }
    }
}

/// Resolves the guest's transmit future without holding up the caller.
fn report(
    transmitted: wit_bindgen::FutureWriter<Result<(), ErrorCode>>,
    outcome: Result<(), ErrorCode>,
) {
    wit_bindgen::spawn_local(async move {
        let _ = transmitted.write(outcome).await;
    });
}

/// The transport's error as wasi:http's, or the guest's own code when it was its body
/// that failed.
fn restore(guest_error: &GuestError, error: rt::ErrorCode) -> ErrorCode {
    if matches!(error, rt::ErrorCode::HttpRequestBodyError(_))
        && let Some(code) = guest_error.borrow().clone()
    {
        return code;
    }
    convert::error(error)
}

/// Methods whose requests carry no body unless they say so.
const BODYLESS: [&str; 5] = ["GET", "HEAD", "DELETE", "OPTIONS", "TRACE"];

/// The request's body for the transport. With a `Content-Length`, or for a method
/// that normally carries a body, the stream is passed on at once, so the head goes out
/// before the guest writes a byte (a guest may write only after `send` returns, as
/// with an echo). For a GET-like method without a length, the first read decides:
/// `empty` when the stream ends before a byte (no empty chunked body is sent, and the
/// trailers future is not waited for: a guest may write it only after `send`), else a
/// stream that starts with the bytes already read.
async fn request_body(
    method: &str,
    headers: &[(String, Vec<u8>)],
    mut contents: StreamReader<u8>,
    trailers: FutureReader<Result<Option<Trailers>, ErrorCode>>,
    guest_error: &GuestError,
) -> rt::RequestBody {
    let declared = headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("content-length"));
    let mut first = Vec::new();
    if !declared && BODYLESS.contains(&method) {
        first = loop {
            let (result, chunk) = contents.read(Vec::with_capacity(16 * 1024)).await;
            if !chunk.is_empty() {
                break chunk;
            }
            if !matches!(result, StreamResult::Complete(_)) {
                return rt::RequestBody::Empty;
            }
        };
    }
    stream_body(first, contents, trailers, guest_error)
}

/// A transport body stream fed from the guest's: `first`, then the rest of
/// `contents`, then the guest's trailers.
///
/// The trailers future is read as soon as the guest writes it, beside the copy of
/// `contents` (as wasmtime-wasi-http reads it): a guest may write its trailers before
/// it drops its body writer, and waiting for the stream's end first would hold both
/// sides forever. The transport hears of them when the stream has ended; a failure
/// ends the stream at once.
fn stream_body(
    first: Vec<u8>,
    contents: StreamReader<u8>,
    trailers: FutureReader<Result<Option<Trailers>, ErrorCode>>,
    guest_error: &GuestError,
) -> rt::RequestBody {
    let (writer, reader) = wit_stream::new::<u8>();
    let (end_tx, end_rx) = wit_future::new::<Result<Option<rt::Fields>, rt::ErrorCode>>(|| {
        Err(rt::ErrorCode::HttpRequestBodyError(
            "the wasi:http face stopped before the body's end".to_owned(),
        ))
    });
    let guest_error = Rc::clone(guest_error);
    wit_bindgen::spawn_local(async move {
        let end = async {
            match trailers.await {
                Ok(None) => Ok(None),
                Ok(Some(fields)) => Ok(Some(convert::block(&fields.copy_all()))),
                Err(code) => {
                    let words = format!("the guest's request body failed: {code:?}");
                    *guest_error.borrow_mut() = Some(code);
                    Err(rt::ErrorCode::HttpRequestBodyError(words))
                }
            }
        };
        let copy = copy_contents(first, contents, writer);
        let end = match select(pin!(copy), pin!(end)).await {
            Either::Left((true, end)) => end.await,
            // The transport stopped reading: the request has failed or refused the
            // rest (past its `Content-Length`); the guest's writes fail now.
            Either::Left((false, _)) => return,
            Either::Right((Ok(trailers), copy)) => {
                if !copy.await {
                    return;
                }
                Ok(trailers)
            }
            // Dropping the copy ends the transport's stream: it reads the failure next.
            Either::Right((Err(code), _)) => Err(code),
        };
        let _ = end_tx.write(end).await;
    });
    rt::RequestBody::Stream(rt::BodyStream {
        contents: reader,
        end: end_rx,
    })
}

/// Copies `first`, then the rest of the guest's `contents`, to the transport's stream
/// and ends it: `true` when the guest's stream ended, `false` when the transport
/// stopped reading.
async fn copy_contents(
    mut chunk: Vec<u8>,
    mut contents: StreamReader<u8>,
    mut writer: StreamWriter<u8>,
) -> bool {
    loop {
        if !chunk.is_empty() && !writer.write_all(chunk).await.is_empty() {
            return false;
        }
        let (result, next) = contents.read(Vec::with_capacity(64 * 1024)).await;
        match result {
            StreamResult::Complete(_) => chunk = next,
            StreamResult::Dropped | StreamResult::Cancelled => return true,
        }
    }
}
