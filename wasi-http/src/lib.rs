//! The wasi:http face: `wasi:http/client@0.3.0` on top of the transport.
//!
//! ```text
//!  any wasi:http guest ── client.send(request) ──► this component
//!      request: method, scheme, authority, path, headers, body stream
//!        ──► round-tripper.transport.round-trip ──► (pool, net, events)
//!      response ◄── status, headers (hop-by-hop ones dropped), the transport's body
//!                   stream passed through as is, trailers converted when they come
//! ```
//!
//! One transport (one pool) serves every request of the instance, created at the
//! first `send` with Go's `DefaultTransport` knobs, except that up to 100 idle
//! connections are kept per host (Go keeps 2, which makes a concurrent guest dial
//! again and again), and with the proxies the guest's environment names
//! (`HTTP_PROXY`, `HTTPS_PROXY`, `NO_PROXY`, `ALL_PROXY`). The host's `wasi:http/types` resources carry the requests in and
//! the responses out; the body bytes never pass through this component.

#![cfg(target_arch = "wasm32")]

// Generated glue: the ABI needs `unsafe` and exported symbols.
#[allow(unsafe_code)]
mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "wasi-http-client",
        generate_all,
    });
}

mod convert;

use std::cell::RefCell;
use std::rc::Rc;

use bindings::exports::wasi::http::client::Guest;
use bindings::roundtrip::transport::round_tripper::Transport;
use bindings::roundtrip::transport::types as rt;
use bindings::wasi::http::types::{ErrorCode, Request, Response};
use bindings::{wit_future, wit_stream};
use wit_bindgen::StreamResult;

struct Client;

// The export glue is `unsafe` ABI code too.
#[allow(unsafe_code)]
mod export {
    use super::{Client, bindings};
    bindings::export!(Client with_types_in bindings);
}

thread_local! {
    static TRANSPORT: RefCell<Option<Rc<Transport>>> = const { RefCell::new(None) };
}

/// The instance's one pool.
fn transport() -> Rc<Transport> {
    TRANSPORT.with(|cell| {
        cell.borrow_mut()
            .get_or_insert_with(|| Rc::new(Transport::new(&convert::default_config())))
            .clone()
    })
}

impl Guest for Client {
    async fn send(request: Request) -> Result<Response, ErrorCode> {
        let url = convert::url(&request)?;
        let method = convert::method(request.get_method());
        let headers = request.get_headers().copy_all();
        let (_, handled) = wit_future::new::<Result<(), ErrorCode>>(|| Ok(()));
        let (contents, _trailers) = Request::consume_body(request, handled);
        let body = request_body(contents).await;
        let sent = transport()
            .round_trip(rt::Request {
                method,
                url,
                headers,
                body,
                cancel: None,
            })
            .await
            .map_err(convert::error)?;
        let headers = convert::response_headers(&sent.headers);
        let (trailers_out, trailers_in) = wit_future::new::<
            Result<Option<bindings::wasi::http::types::Trailers>, ErrorCode>,
        >(|| Ok(None));
        let transport_trailers = sent.trailers;
        wit_bindgen::spawn_local(async move {
            let trailers = match transport_trailers.await {
                Ok(None) => Ok(None),
                Ok(Some(fields)) => Ok(Some(convert::response_headers(&fields))),
                Err(e) => Err(convert::error(e)),
            };
            let _ = trailers_out.write(trailers).await;
        });
        let (response, _) = Response::new(headers, Some(sent.body), trailers_in);
        response
            .set_status_code(sent.status)
            .map_err(|()| ErrorCode::HttpProtocolError)?;
        Ok(response)
    }
}

/// The request's body for the transport: `empty` when the stream ends before its
/// first byte (a GET is then sent without a body, not as an empty chunked one),
/// else a stream that starts with the bytes already read.
async fn request_body(mut contents: wit_bindgen::StreamReader<u8>) -> rt::RequestBody {
    let first = loop {
        let (result, chunk) = contents.read(Vec::with_capacity(16 * 1024)).await;
        if !chunk.is_empty() {
            break chunk;
        }
        if !matches!(result, StreamResult::Complete(_)) {
            return rt::RequestBody::Empty;
        }
    };
    let (mut writer, reader) = wit_stream::new::<u8>();
    wit_bindgen::spawn_local(async move {
        let mut chunk = first;
        loop {
            if !writer.write_all(chunk).await.is_empty() {
                // The transport stopped reading: the request has failed.
                return;
            }
            let (result, next) = contents.read(Vec::with_capacity(64 * 1024)).await;
            match result {
                StreamResult::Complete(_) => chunk = next,
                StreamResult::Dropped | StreamResult::Cancelled => return,
            }
        }
    });
    rt::RequestBody::Stream(reader)
}
