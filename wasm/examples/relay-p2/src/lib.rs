//! `relay-p2`: the relay (`wasm/examples/relay`) as a wasi:http **0.2** `proxy`
//! component, written the 0.2 way: blocking reads and writes on `wasi:io` streams.
//! It forwards each request — method, headers but `url`, body — to the URL in its
//! `url` header and answers with the status, headers and body that came back.
//! Without the header: `400`; a failed request: its `error-code` (the host answers
//! `500`).

#![cfg(target_arch = "wasm32")]

// Generated glue: the ABI needs `unsafe` and exported symbols.
#[allow(unsafe_code)]
mod bindings {
    wit_bindgen::generate!({
        path: "wit",
        world: "relay-p2",
        generate_all,
    });
}

use bindings::exports::wasi::http::incoming_handler::Guest;
use bindings::wasi::http::outgoing_handler;
use bindings::wasi::http::types::{
    ErrorCode, Fields, IncomingBody, IncomingRequest, OutgoingBody, OutgoingRequest,
    OutgoingResponse, ResponseOutparam, Scheme,
};
use bindings::wasi::io::streams::{InputStream, OutputStream, StreamError};

struct Relay;

// The export glue is `unsafe` ABI code too.
#[allow(unsafe_code)]
mod export {
    use super::{Relay, bindings};
    bindings::export!(Relay with_types_in bindings);
}

/// Fields a guest may not set (wasmtime-wasi-http's `DEFAULT_FORBIDDEN_HEADERS`),
/// and the `url` instruction itself: not forwarded.
const NOT_FORWARDED: [&str; 10] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "host",
    "http2-settings",
    "url",
];

impl Guest for Relay {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        match relay(request) {
            Ok(Some((response, body))) => {
                let Ok(sink) = response.body() else {
                    ResponseOutparam::set(out, Err(internal("response body taken")));
                    return;
                };
                ResponseOutparam::set(out, Ok(response));
                let copied = copy_body(body, &sink);
                let _ = OutgoingBody::finish(sink, None);
                let _ = copied;
            }
            Ok(None) => {
                let response = OutgoingResponse::new(Fields::new());
                let _ = response.set_status_code(400);
                let body = response.body();
                ResponseOutparam::set(out, Ok(response));
                if let Ok(body) = body {
                    let _ = OutgoingBody::finish(body, None);
                }
            }
            Err(code) => ResponseOutparam::set(out, Err(code)),
        }
    }
}

/// Sends `request` on to its `url`; the response head to answer with and the body
/// to copy, or `None` when there is no usable `url`.
fn relay(request: IncomingRequest) -> Result<Option<(OutgoingResponse, IncomingBody)>, ErrorCode> {
    let entries = request.headers().entries();
    let Some(url) = entries
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("url"))
        .and_then(|(_, value)| std::str::from_utf8(value).ok())
        .and_then(|value| url::Url::parse(value).ok())
    else {
        return Ok(None);
    };
    let headers =
        Fields::from_list(&forwarded(entries)).map_err(|e| internal(&format!("{e:?}")))?;
    let outgoing = OutgoingRequest::new(headers);
    let scheme = match url.scheme() {
        "http" => Scheme::Http,
        "https" => Scheme::Https,
        other => Scheme::Other(other.to_owned()),
    };
    let path = match url.query() {
        Some(query) => format!("{}?{query}", url.path()),
        None => url.path().to_owned(),
    };
    let set = outgoing
        .set_method(&request.method())
        .and_then(|()| outgoing.set_scheme(Some(&scheme)))
        .and_then(|()| outgoing.set_authority(Some(url.authority())))
        .and_then(|()| outgoing.set_path_with_query(Some(&path)));
    if set.is_err() {
        return Ok(None);
    }
    let sink = outgoing
        .body()
        .map_err(|()| internal("request body taken"))?;
    let pending = outgoing_handler::handle(outgoing, None)?;
    // The request body goes out before the response is awaited: a blocking guest
    // cannot do both at once (an echo of a large body would need two tasks).
    let source = request
        .consume()
        .map_err(|()| internal("request body taken"))?;
    copy_body(source, &sink)?;
    OutgoingBody::finish(sink, None)?;
    pending.subscribe().block();
    let response = match pending.get() {
        Some(Ok(response)) => response?,
        Some(Err(())) | None => return Err(internal("response taken or not ready")),
    };
    let headers = Fields::from_list(&forwarded(response.headers().entries()))
        .map_err(|e| internal(&format!("{e:?}")))?;
    let answer = OutgoingResponse::new(headers);
    let _ = answer.set_status_code(response.status());
    let body = response
        .consume()
        .map_err(|()| internal("response body taken"))?;
    Ok(Some((answer, body)))
}

fn forwarded(entries: Vec<(String, Vec<u8>)>) -> Vec<(String, Vec<u8>)> {
    entries
        .into_iter()
        .filter(|(name, _)| !NOT_FORWARDED.iter().any(|n| name.eq_ignore_ascii_case(n)))
        .collect()
}

/// Copies `source` into `sink` to its end.
fn copy_body(source: IncomingBody, sink: &OutgoingBody) -> Result<(), ErrorCode> {
    let input = source
        .stream()
        .map_err(|()| internal("body stream taken"))?;
    let output = sink.write().map_err(|()| internal("body stream taken"))?;
    let copied = copy(&input, &output);
    drop(input);
    drop(output);
    drop(IncomingBody::finish(source));
    copied
}

fn copy(input: &InputStream, output: &OutputStream) -> Result<(), ErrorCode> {
    loop {
        let chunk = match input.blocking_read(64 * 1024) {
            Ok(chunk) => chunk,
            Err(StreamError::Closed) => return Ok(()),
            Err(StreamError::LastOperationFailed(e)) => return Err(internal(&e.to_debug_string())),
        };
        // `blocking-write-and-flush` takes at most 4096 bytes a call.
        for piece in chunk.chunks(4096) {
            output
                .blocking_write_and_flush(piece)
                .map_err(|_| internal("write failed"))?;
        }
    }
}

fn internal(what: &str) -> ErrorCode {
    ErrorCode::InternalError(Some(what.to_owned()))
}
