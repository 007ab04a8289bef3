//! `relay`: a wasi:http 0.3 service that forwards each request — method, body and
//! trailers — to the URL in its `url` header and answers with what came back, the
//! response passed on as it is (its body streams through untouched). Without the
//! header: `400`.
//!
//! The service of `roundtrip serve`'s tests and bench, and of the stock
//! `wasmtime serve` comparison (composed with `roundtrip compose --no-tls`).

#![cfg(target_arch = "wasm32")]

// Generated glue: the ABI needs `unsafe` and exported symbols.
#[allow(unsafe_code)]
mod bindings {
    wit_bindgen::generate!({
        path: "wit",
        world: "relay",
        generate_all,
    });
}

use bindings::exports::wasi::http::handler::Guest;
use bindings::wasi::http::client;
use bindings::wasi::http::types::{ErrorCode, Fields, Request, Response, Scheme};
use bindings::wit_future;

struct Relay;

// The export glue is `unsafe` ABI code too.
#[allow(unsafe_code)]
mod export {
    use super::{Relay, bindings};
    bindings::export!(Relay with_types_in bindings);
}

impl Guest for Relay {
    async fn handle(request: Request) -> Result<Response, ErrorCode> {
        let Some(url) = target(&request) else {
            return Ok(answer(400));
        };
        let method = request.get_method();
        let (body, trailers) = Request::consume_body(request, wit_future::new(|| Ok(())).1);
        let (outgoing, _transmitted) = Request::new(Fields::new(), Some(body), trailers, None);
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
            .set_method(&method)
            .and_then(|()| outgoing.set_scheme(Some(&scheme)))
            .and_then(|()| outgoing.set_authority(Some(url.authority())))
            .and_then(|()| outgoing.set_path_with_query(Some(&path)));
        if set.is_err() {
            return Ok(answer(400));
        }
        client::send(outgoing).await
    }
}

/// The `url` header's value, when it is an absolute URL.
fn target(request: &Request) -> Option<url::Url> {
    let value = request.get_headers().get("url").into_iter().next()?;
    url::Url::parse(std::str::from_utf8(&value).ok()?).ok()
}

/// An empty response with `status`.
fn answer(status: u16) -> Response {
    let (response, _) = Response::new(Fields::new(), None, wit_future::new(|| Ok(None)).1);
    let _ = response.set_status_code(status);
    response
}
