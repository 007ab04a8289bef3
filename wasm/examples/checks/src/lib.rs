//! `checks`: a wasi:http 0.3 command that sends one request shaped to test a client
//! and prints what wasi:http reported, line by line, so a test can compare clients
//! (Roundtrip's face under `roundtrip run` or stock wasmtime, wasmtime's own client):
//!
//! ```text
//! checks echo BYTES URL              POST BYTES, written only after `send` returns
//! checks echo-twice BYTES URL        the same, twice in a row
//! checks echo-length BYTES URL       the same with a Content-Length
//! checks fail BYTES URL              BYTES after `send` returns, then its trailers fail
//! checks length DECLARED ACTUAL URL  Content-Length DECLARED, ACTUAL bytes in one write
//! checks trailers URL                a chunked body with an `x-checksum` trailer
//! checks connect-timeout MS URL      GET with that request option (also first-byte-
//! checks first-byte-timeout MS URL   and between-bytes-)
//! checks between-bytes-timeout MS URL
//! checks no-path URL | other-scheme URL | no-authority URL | bad-port URL
//! checks upload ORDER BYTES URL      POST BYTES with a Content-Length; one `join!`
//! checks upload-unread ORDER BYTES URL  awaits `send`, the transmit future and the
//!                                    body (BYTES in one `write_all`, then `Ok(None)`
//!                                    trailers, then the writer dropped), polled in
//!                                    ORDER (a permutation of `send,transmit,body`);
//!                                    the response body is read after the join (or,
//!                                    `-unread`, dropped unread)
//! ```
//!
//! Output: `send: ok STATUS` or `send: err CODE`, then for a response `body: N bytes`
//! (and `echo: intact` or `echo: differs at OFFSET`), `trailers: ok [NAMES]` or
//! `trailers: err CODE`, and last `transmit: ok` or `transmit: err CODE` (the future
//! `request.new` returned). CODE is the `error-code` as Rust debug-prints it, without
//! the type's name, e.g. `HttpRequestBodySize(Some(10))`.

#![cfg(target_arch = "wasm32")]

// Generated glue: the ABI needs `unsafe` and exported symbols.
#[allow(unsafe_code)]
mod bindings {
    wit_bindgen::generate!({
        path: "wit",
        world: "checks",
        generate_all,
    });
}

use bindings::exports::wasi::cli::run::Guest;
use bindings::wasi::cli::{environment, stdout};
use bindings::wasi::http::client;
use bindings::wasi::http::types::{
    ErrorCode, Fields, Request, RequestOptions, Response, Scheme, Trailers,
};
use std::cell::RefCell;

use bindings::{wit_future, wit_stream};
use futures::future::LocalBoxFuture;
use wit_bindgen::{FutureWriter, StreamResult, StreamWriter};

struct Checks;

// The export glue is `unsafe` ABI code too.
#[allow(unsafe_code)]
mod export {
    use super::{Checks, bindings};
    bindings::export!(Checks with_types_in bindings);
}

const USAGE: &str = "usage: checks SCENARIO [ARGS] URL (see the crate's documentation)";

impl Guest for Checks {
    async fn run() -> Result<(), ()> {
        let mut arguments: Vec<String> = environment::get_arguments().into_iter().skip(1).collect();
        // `echo-twice`: the same echo twice, one after the other, on one client.
        let times = if arguments.first().is_some_and(|s| s == "echo-twice") {
            arguments[0] = "echo".to_owned();
            2
        } else {
            1
        };
        let mut outcome = Ok(String::new());
        for _ in 0..times {
            outcome = match (outcome, check(&arguments).await) {
                (Ok(mut all), Ok(report)) => {
                    all.push_str(&report);
                    Ok(all)
                }
                (Err(e), _) | (_, Err(e)) => Err(e),
            };
        }
        match outcome {
            Ok(report) => {
                print(report).await;
                Ok(())
            }
            Err(message) => {
                print(format!("checks: {message}\n{USAGE}\n")).await;
                Err(())
            }
        }
    }
}

/// How the request body is produced.
enum Produce {
    None,
    /// `len` pattern bytes, in writes of at most `write` bytes, then how it ends.
    Bytes {
        len: u64,
        write: usize,
        end: End,
        after_send: bool,
    },
}

/// How the guest ends its request body.
enum End {
    Complete,
    Trailers,
    Fail,
}

async fn check(arguments: &[String]) -> Result<String, String> {
    let (scenario, rest) = arguments.split_first().ok_or("no scenario")?;
    if scenario.starts_with("upload") {
        return upload(scenario == "upload", rest).await;
    }
    let (url, values) = rest.split_last().ok_or("no URL")?;
    let number = |i: usize| -> Result<u64, String> {
        values
            .get(i)
            .and_then(|v| v.parse().ok())
            .ok_or(format!("{scenario} needs a number"))
    };
    let target = Target::parse(url)?;
    let mut headers: Vec<(String, Vec<u8>)> = Vec::new();
    let mut method = "POST";
    let mut options = None;
    let mut report = String::new();
    let produce = match scenario.as_str() {
        "echo" | "echo-length" => {
            let len = number(0)?;
            if scenario == "echo-length" {
                headers.push(("content-length".into(), len.to_string().into_bytes()));
            }
            Produce::Bytes {
                len,
                write: 64 * 1024,
                end: End::Complete,
                after_send: true,
            }
        }
        // Written, and failed, after `send` returns: the failure comes after the head.
        "fail" => Produce::Bytes {
            len: number(0)?,
            write: 64 * 1024,
            end: End::Fail,
            after_send: true,
        },
        "length" => {
            headers.push(("content-length".into(), number(0)?.to_string().into_bytes()));
            let len = number(1)?;
            Produce::Bytes {
                len,
                write: len as usize,
                end: End::Complete,
                after_send: false,
            }
        }
        "trailers" => Produce::Bytes {
            len: 3,
            write: 3,
            end: End::Trailers,
            after_send: false,
        },
        "connect-timeout" | "first-byte-timeout" | "between-bytes-timeout" => {
            method = "GET";
            let limit = Some(number(0)? * 1_000_000);
            let set = RequestOptions::new();
            let accepted = match scenario.as_str() {
                "connect-timeout" => set.set_connect_timeout(limit),
                "first-byte-timeout" => set.set_first_byte_timeout(limit),
                _ => set.set_between_bytes_timeout(limit),
            };
            report.push_str(match accepted {
                Ok(()) => "options: set\n",
                Err(_) => "options: refused\n",
            });
            options = Some(set);
            Produce::None
        }
        "no-path" | "other-scheme" | "no-authority" | "bad-port" => {
            method = "GET";
            Produce::None
        }
        other => return Err(format!("unknown scenario {other:?}")),
    };

    let fields = Fields::from_list(&headers).map_err(|e| format!("headers: {e:?}"))?;
    let (contents, body_writer) = match produce {
        Produce::None => (None, None),
        Produce::Bytes { .. } => {
            let (writer, reader) = wit_stream::new::<u8>();
            (Some(reader), Some(writer))
        }
    };
    let (trailers_tx, trailers_rx) =
        wit_future::new::<Result<Option<Trailers>, ErrorCode>>(|| Ok(None));
    let (request, transmit) = Request::new(fields, contents, trailers_rx, options);
    if method == "GET" {
        request
            .set_method(&bindings::wasi::http::types::Method::Get)
            .map_err(|()| "the host refused GET")?;
    } else {
        request
            .set_method(&bindings::wasi::http::types::Method::Post)
            .map_err(|()| "the host refused POST")?;
    }
    match scenario.as_str() {
        "other-scheme" => set(request.set_scheme(Some(&Scheme::Other("ftp".into()))))?,
        _ => set(request.set_scheme(Some(&target.scheme)))?,
    }
    match scenario.as_str() {
        "no-authority" => {}
        "bad-port" => {
            let host = target.authority.split(':').next().unwrap_or_default();
            if request
                .set_authority(Some(&format!("{host}:port")))
                .is_err()
            {
                report.push_str("set-authority: refused\n");
            }
            set(request.set_authority(Some(&target.authority)))?;
        }
        _ => set(request.set_authority(Some(&target.authority)))?,
    }
    if scenario != "no-path" {
        set(request.set_path_with_query(Some(&target.path)))?;
    }

    let mut trailers_tx = Some(trailers_tx);
    let mut later = None;
    if let (
        Some(writer),
        Produce::Bytes {
            len,
            write,
            end,
            after_send,
        },
    ) = (body_writer, produce)
    {
        let trailers = trailers_tx.take();
        let job = write_body(writer, trailers, len, write, end);
        if after_send {
            later = Some(job);
        } else {
            wit_bindgen::spawn_local(job);
        }
    }
    let sent = client::send(request).await;
    if let Some(job) = later {
        wit_bindgen::spawn_local(job);
    }
    drop(trailers_tx);
    match sent {
        Err(code) => report.push_str(&format!("send: err {}\n", name(&code))),
        Ok(response) => {
            report.push_str(&format!("send: ok {}\n", response.get_status_code()));
            read_response(response, scenario.starts_with("echo"), &mut report).await;
        }
    }
    match transmit.await {
        Ok(()) => report.push_str("transmit: ok\n"),
        Err(code) => report.push_str(&format!("transmit: err {}\n", name(&code))),
    }
    Ok(report)
}

/// `upload ORDER BYTES URL`: the request's `send`, its transmit future and its body
/// awaited in one join, in ORDER, as wasmtime's own p3 tests drive an upload. The
/// body ends with its trailers written before its writer is dropped, and nothing of
/// the response is read until all three have ended.
async fn upload(read_body: bool, arguments: &[String]) -> Result<String, String> {
    let [order, bytes, url] = arguments else {
        return Err("upload needs ORDER BYTES URL".to_owned());
    };
    let len: u64 = bytes
        .parse()
        .map_err(|_| "upload needs a number of bytes")?;
    let target = Target::parse(url)?;
    let fields = Fields::from_list(&[("content-length".to_owned(), len.to_string().into_bytes())])
        .map_err(|e| format!("headers: {e:?}"))?;
    let (mut writer, contents) = wit_stream::new::<u8>();
    let (trailers_tx, trailers_rx) =
        wit_future::new::<Result<Option<Trailers>, ErrorCode>>(|| Ok(None));
    let (request, transmit) = Request::new(fields, Some(contents), trailers_rx, None);
    request
        .set_method(&bindings::wasi::http::types::Method::Post)
        .map_err(|()| "the host refused POST")?;
    set(request.set_scheme(Some(&target.scheme)))?;
    set(request.set_authority(Some(&target.authority)))?;
    set(request.set_path_with_query(Some(&target.path)))?;

    let sent = RefCell::new(None);
    let transmitted = RefCell::new(None);
    let unwritten = RefCell::new(0);
    {
        let mut send: Option<LocalBoxFuture<'_, ()>> = Some(Box::pin(async {
            *sent.borrow_mut() = Some(client::send(request).await);
        }));
        let mut transmit: Option<LocalBoxFuture<'_, ()>> = Some(Box::pin(async {
            *transmitted.borrow_mut() = Some(transmit.await);
        }));
        let mut body: Option<LocalBoxFuture<'_, ()>> = Some(Box::pin(async {
            let chunk: Vec<u8> = (0..len).map(pattern).collect();
            *unwritten.borrow_mut() = writer.write_all(chunk).await.len();
            let _ = trailers_tx.write(Ok(None)).await;
            drop(writer);
        }));
        // `join_all` polls its futures in the order given.
        let joined: Option<Vec<_>> = order
            .split(',')
            .map(|name| match name {
                "send" => send.take(),
                "transmit" => transmit.take(),
                "body" => body.take(),
                _ => None,
            })
            .collect();
        match joined {
            Some(joined) if joined.len() == 3 => futures::future::join_all(joined).await,
            _ => return Err("ORDER names each of send, transmit, body once".to_owned()),
        };
    }

    let mut report = String::new();
    let unwritten = unwritten.into_inner();
    if unwritten > 0 {
        report.push_str(&format!("body: {unwritten} bytes not taken\n"));
    }
    match sent.into_inner() {
        Some(Ok(response)) => {
            report.push_str(&format!("send: ok {}\n", response.get_status_code()));
            if read_body {
                read_response(response, true, &mut report).await;
            }
        }
        Some(Err(code)) => report.push_str(&format!("send: err {}\n", name(&code))),
        None => report.push_str("send: never ended\n"),
    }
    match transmitted.into_inner() {
        Some(Ok(())) => report.push_str("transmit: ok\n"),
        Some(Err(code)) => report.push_str(&format!("transmit: err {}\n", name(&code))),
        None => report.push_str("transmit: never ended\n"),
    }
    Ok(report)
}

/// An error code as Rust debug-prints it, without the type's name.
fn name(code: &ErrorCode) -> String {
    let text = format!("{code:?}");
    text.strip_prefix("ErrorCode::").unwrap_or(&text).to_owned()
}

fn set(result: Result<(), ()>) -> Result<(), String> {
    result.map_err(|()| "the host refused part of the URL".to_owned())
}

/// Reads the response body and its trailers into the report; checks an echo.
async fn read_response(response: Response, echo: bool, report: &mut String) {
    let (_, handled) = wit_future::new::<Result<(), ErrorCode>>(|| Ok(()));
    let (mut body, trailers) = Response::consume_body(response, handled);
    let mut length: u64 = 0;
    let mut differs = None;
    let mut buffer = Vec::with_capacity(64 * 1024);
    loop {
        let (result, chunk) = body.read(buffer).await;
        match result {
            StreamResult::Complete(_) => {
                if differs.is_none()
                    && let Some(i) =
                        (0..chunk.len()).find(|&i| chunk[i] != pattern(length + i as u64))
                {
                    differs = Some(length + i as u64);
                }
                length += chunk.len() as u64;
                buffer = chunk;
                buffer.clear();
            }
            StreamResult::Dropped | StreamResult::Cancelled => break,
        }
    }
    report.push_str(&format!("body: {length} bytes\n"));
    if echo {
        match differs {
            None => report.push_str("echo: intact\n"),
            Some(at) => report.push_str(&format!("echo: differs at {at}\n")),
        }
    }
    match trailers.await {
        Ok(None) => report.push_str("trailers: ok []\n"),
        Ok(Some(fields)) => {
            let names: Vec<String> = fields.copy_all().into_iter().map(|(n, _)| n).collect();
            report.push_str(&format!("trailers: ok {names:?}\n"));
        }
        Err(code) => report.push_str(&format!("trailers: err {}\n", name(&code))),
    }
}

/// Writes `len` pattern bytes, `write` at a time, then ends the body as `end` says.
async fn write_body(
    mut writer: StreamWriter<u8>,
    trailers: Option<FutureWriter<Result<Option<Trailers>, ErrorCode>>>,
    len: u64,
    write: usize,
    end: End,
) {
    let mut at: u64 = 0;
    while at < len {
        let n = (len - at).min(write.max(1) as u64);
        let chunk: Vec<u8> = (at..at + n).map(pattern).collect();
        if !writer.write_all(chunk).await.is_empty() {
            // The client stopped reading: it has what it will take.
            break;
        }
        at += n;
    }
    drop(writer);
    let Some(trailers) = trailers else { return };
    let value = match end {
        End::Complete => Ok(None),
        End::Trailers => Fields::from_list(&[("x-checksum".to_owned(), b"42".to_vec())])
            .map(Some)
            .map_err(|_| ErrorCode::InternalError(Some("trailers".to_owned()))),
        End::Fail => Err(ErrorCode::InternalError(Some(
            "the guest gave up".to_owned(),
        ))),
    };
    let _ = trailers.write(value).await;
}

/// The byte at `offset` of every body this guest sends.
fn pattern(offset: u64) -> u8 {
    (offset.wrapping_mul(31) ^ (offset >> 11)) as u8
}

struct Target {
    scheme: Scheme,
    authority: String,
    path: String,
}

impl Target {
    fn parse(url: &str) -> Result<Target, String> {
        let parsed = url::Url::parse(url).map_err(|e| format!("bad URL {url:?}: {e}"))?;
        let scheme = match parsed.scheme() {
            "http" => Scheme::Http,
            "https" => Scheme::Https,
            other => return Err(format!("unsupported scheme {other:?}")),
        };
        let host = parsed.host_str().ok_or("no host")?;
        let authority = match parsed.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_owned(),
        };
        let path = match parsed.query() {
            Some(query) => format!("{}?{query}", parsed.path()),
            None => parsed.path().to_owned(),
        };
        Ok(Target {
            scheme,
            authority,
            path,
        })
    }
}

/// Writes `text` to stdout through the P3 stream interface.
async fn print(text: String) {
    let (mut writer, reader) = wit_stream::new::<u8>();
    let done = stdout::write_via_stream(reader);
    writer.write_all(text.into_bytes()).await;
    drop(writer);
    // Nothing more can be said if stdout itself has failed.
    let _ = done.await;
}
