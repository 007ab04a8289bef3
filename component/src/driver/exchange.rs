//! One round trip: get a connection, write the request, read the response head, then
//! hand the body to a task that pumps it to the caller and returns the connection.
//!
//! ```text
//!  round_trip ─► check ─► acquire (idle | dial [+ TLS]) ─► write head+body ─► read head
//!       ▲                                                       │ failure on a reused
//!       └──────────────── retry (core::reuse::can_retry) ◄──────┘ connection
//!  read head ─► spawn pump_body ─► response returned to the caller
//!  pump_body: decode ─► body stream ─► EOF: put_idle | close(reason); trailers future
//! ```
//!
//! Every decision (framing, reuse, retry) is the core's; this file only moves bytes and
//! reports what happened.

use std::future::IntoFuture;
use std::pin::pin;
use std::rc::Rc;

use futures::future::{Either, select};

use wit_bindgen::{FutureWriter, StreamReader, StreamResult, StreamWriter};

use super::active::Active;
use super::bindings::roundtrip::transport::observe::{CloseReason, EventKind};
use super::bindings::roundtrip::transport::types::{ErrorCode, Request, RequestBody, Response};
use super::bindings::{wit_future, wit_stream};
use super::checkout;
use super::clock;
use super::conn::{Conn, READ_SIZE};
use super::errors::to_code;
use super::transport::Shared;
use crate::core::decode::{self, BodyDecoder, Fields, Framing, ResponseHead};
use crate::core::encode::{self, BodyFraming, RequestHead};
use crate::core::request::{self, Target};
use crate::core::reuse::{self, NoReuse, Progress};

/// What the trailers future carries.
type Trailers = Result<Option<Fields>, ErrorCode>;

/// A request body as the exchange holds it between attempts.
enum Body {
    Empty,
    /// Kept for a replay.
    Bytes(Vec<u8>),
    /// `None` once it has been read from: it cannot be produced again.
    Stream(Option<StreamReader<u8>>),
}

impl Body {
    fn is_replayable(&self) -> bool {
        !matches!(self, Body::Stream(_))
    }
}

/// A failed attempt, and how far it got (which decides whether it may be retried).
struct Failed {
    code: ErrorCode,
    progress: Progress,
}

impl Failed {
    fn at(progress: Progress) -> impl FnOnce(ErrorCode) -> Failed {
        move |code| Failed { code, progress }
    }
}

/// The checked parts of a request.
struct Checked {
    id: u64,
    method: String,
    target: Target,
    headers: Fields,
}

/// Runs one round trip, abandoned at once if the caller's `cancel` future resolves:
/// dropping the work runs every guard (a waiter leaves the line, an active connection
/// is closed).
pub async fn round_trip(shared: Rc<Shared>, req: Request) -> Result<Response, ErrorCode> {
    let Request {
        method,
        url,
        headers,
        body,
        cancel,
    } = req;
    let work = pin!(exchange(shared, method, url, headers, body));
    let Some(cancel) = cancel else {
        return work.await;
    };
    let cancel = pin!(cancel.into_future());
    match select(work, cancel).await {
        Either::Left((result, _)) => result,
        Either::Right(_) => Err(ErrorCode::RequestCanceled(
            "net/http: request canceled".to_owned(),
        )),
    }
}

async fn exchange(
    shared: Rc<Shared>,
    method: String,
    url: String,
    headers: Fields,
    body: RequestBody,
) -> Result<Response, ErrorCode> {
    // Nothing reaches the network before the whole request checks out.
    let target = request::target(&url).map_err(to_code)?;
    request::check_method(&method).map_err(to_code)?;
    for (name, value) in &headers {
        request::check_header(name, value).map_err(to_code)?;
    }
    let req = Checked {
        id: shared.next_request_id(),
        method,
        target,
        headers,
    };
    let mut body = match body {
        RequestBody::Empty => Body::Empty,
        RequestBody::Bytes(bytes) => Body::Bytes(bytes),
        RequestBody::Stream(stream) => Body::Stream(Some(stream)),
    };
    let key = req.target.key.clone();
    loop {
        shared.emit(None, Some(req.id), Some(&key), EventKind::GetConn);
        let mut active = checkout::acquire(&shared, req.id, &req.target).await?;
        let reused = active.conn().served > 0;
        active.conn_mut().served += 1;
        match attempt(&shared, &mut active, &req, &mut body).await {
            Ok(head) => return Ok(respond(active, &shared, &req, head, reused)),
            Err(failed) => {
                let replayable =
                    reuse::is_replayable(&req.method, &req.headers, body.is_replayable());
                active.close(CloseReason::Error);
                if !reuse::can_retry(reused, failed.progress, replayable) {
                    return Err(failed.code);
                }
                let reason = format!("reused connection failed: {}", describe(&failed.code));
                shared.emit(None, Some(req.id), Some(&key), EventKind::Retry(reason));
            }
        }
    }
}

/// Writes the request and reads up to the final response head.
async fn attempt(
    shared: &Rc<Shared>,
    active: &mut Active,
    req: &Checked,
    body: &mut Body,
) -> Result<ResponseHead, Failed> {
    let settings = &shared.settings;
    let framing = match body {
        Body::Empty => encode::framing_for_length(&req.method, 0),
        Body::Bytes(bytes) => encode::framing_for_length(&req.method, bytes.len() as u64),
        Body::Stream(_) => declared_length(&req.headers)
            .map_err(Failed::at(Progress::NothingWritten))?
            .map_or(BodyFraming::Chunked, BodyFraming::Length),
    };
    let mut wire = Vec::with_capacity(512);
    encode::encode_head(
        &mut wire,
        &RequestHead {
            method: &req.method,
            target: &req.target.path_and_query,
            authority: &req.target.authority,
            user_agent: &settings.user_agent,
            headers: &req.headers,
            framing,
            close: settings.disable_keep_alives,
        },
    );
    let written = write_request(active, wire, body, framing).await;
    let error = written.as_ref().err().map(|f| describe(&f.code));
    active.emit(EventKind::WroteRequest(error));
    written?;

    let read = read_head(active, &req.method, settings.max_response_header_bytes);
    match clock::within(settings.response_header_timeout, read).await {
        Some(head) => head,
        None => Err(Failed {
            code: ErrorCode::HttpResponseTimeout("timeout awaiting response headers".to_owned()),
            progress: Progress::ResponseStarted,
        }),
    }
}

/// The `Content-Length` a caller declared for a stream body, if any.
fn declared_length(headers: &Fields) -> Result<Option<u64>, ErrorCode> {
    let Some((_, value)) = headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
    else {
        return Ok(None);
    };
    std::str::from_utf8(value)
        .ok()
        .and_then(|text| text.trim().parse::<u64>().ok())
        .map(Some)
        .ok_or_else(|| {
            ErrorCode::HttpRequestHeaderInvalid(format!(
                "invalid Content-Length {:?}",
                String::from_utf8_lossy(value)
            ))
        })
}

/// Small bodies go out in the same write as the head.
const COALESCE_LIMIT: usize = 16 * 1024;

async fn write_request(
    active: &mut Active,
    mut wire: Vec<u8>,
    body: &mut Body,
    framing: BodyFraming,
) -> Result<(), Failed> {
    let coalesced = matches!(body, Body::Bytes(bytes) if bytes.len() <= COALESCE_LIMIT);
    if let (true, Body::Bytes(bytes)) = (coalesced, &body) {
        wire.extend_from_slice(bytes);
    }
    active
        .conn_mut()
        .write(wire)
        .await
        .map_err(Failed::at(Progress::NothingWritten))?;
    active.emit(EventKind::WroteHeaders);
    if coalesced {
        return Ok(());
    }
    let sent = match body {
        Body::Empty => Ok(()),
        Body::Bytes(bytes) => active.conn_mut().write(bytes.clone()).await,
        Body::Stream(stream) => match stream.take() {
            Some(stream) => write_stream(active.conn_mut(), stream, framing).await,
            None => Err(ErrorCode::HttpRequestBodyError(
                "the request body is a stream that was already read; it cannot be replayed"
                    .to_owned(),
            )),
        },
    };
    sent.map_err(Failed::at(Progress::NoResponse))
}

/// Copies a caller's body stream to the connection, chunked or checked against the
/// declared length.
async fn write_stream(
    conn: &mut Conn,
    mut stream: StreamReader<u8>,
    framing: BodyFraming,
) -> Result<(), ErrorCode> {
    let mut sent: u64 = 0;
    loop {
        let (result, chunk) = stream.read(Vec::with_capacity(READ_SIZE)).await;
        if chunk.is_empty() {
            match result {
                StreamResult::Dropped => break,
                _ => continue,
            }
        }
        sent += chunk.len() as u64;
        match framing {
            BodyFraming::Chunked => {
                let mut framed = Vec::with_capacity(chunk.len() + 16);
                encode::encode_chunk(&mut framed, &chunk);
                conn.write(framed).await?;
            }
            BodyFraming::Length(declared) if sent > declared => {
                return Err(ErrorCode::HttpRequestBodyError(format!(
                    "request body longer than its Content-Length of {declared} bytes"
                )));
            }
            _ => conn.write(chunk).await?,
        }
    }
    match framing {
        BodyFraming::Chunked => conn.write(encode::LAST_CHUNK.to_vec()).await,
        BodyFraming::Length(declared) if sent != declared => Err(ErrorCode::HttpRequestBodyError(
            format!("request body ended after {sent} of its {declared} declared bytes"),
        )),
        _ => Ok(()),
    }
}

/// Reads up to the final (non-1xx) response head.
async fn read_head(
    active: &mut Active,
    method: &str,
    max_bytes: usize,
) -> Result<ResponseHead, Failed> {
    let mut got_first_byte = false;
    let mut interim = 0;
    loop {
        if !active.conn().buffered().is_empty() {
            if !got_first_byte {
                got_first_byte = true;
                active.emit(EventKind::FirstByte);
            }
            let parsed = decode::parse_response_head(active.conn().buffered(), max_bytes)
                .map_err(|e| Failed::at(Progress::ResponseStarted)(to_code(e)))?;
            if let Some((head, consumed)) = parsed {
                active.conn_mut().consume(consumed);
                if !head.is_interim() {
                    // Validate framing now so a bad head fails the round trip itself.
                    decode::framing(method, &head)
                        .map_err(|e| Failed::at(Progress::ResponseStarted)(to_code(e)))?;
                    return Ok(head);
                }
                interim += 1;
                if interim > decode::MAX_INTERIM_RESPONSES {
                    return Err(Failed::at(Progress::ResponseStarted)(
                        ErrorCode::HttpProtocolError(
                            "too many 1xx informational responses".to_owned(),
                        ),
                    ));
                }
                active.emit(EventKind::Got1xx(head.status));
                continue;
            }
        }
        let progress = if got_first_byte {
            Progress::ResponseStarted
        } else {
            Progress::NoResponse
        };
        let read = active
            .conn_mut()
            .fill()
            .await
            .map_err(Failed::at(progress))?;
        if read == 0 {
            let why = if got_first_byte {
                "connection closed before the response head was complete"
            } else {
                "empty reply from server: connection closed before any response byte"
            };
            return Err(Failed::at(progress)(ErrorCode::HttpResponseIncomplete(
                why.to_owned(),
            )));
        }
    }
}

/// Builds the response and starts the task that pumps its body.
fn respond(
    active: Active,
    shared: &Rc<Shared>,
    req: &Checked,
    head: ResponseHead,
    reused: bool,
) -> Response {
    active.emit(EventKind::Response(head.status));
    // `read_head` checked the framing already.
    let framing = decode::framing(&req.method, &head).unwrap_or(Framing::UntilClose);
    let (body_tx, body_rx) = wit_stream::new::<u8>();
    let (trailers_tx, trailers_rx) = wit_future::new::<Trailers>(|| {
        Err(ErrorCode::InternalError(
            "the transport dropped the response body".to_owned(),
        ))
    });
    let response = Response {
        status: head.status,
        reason: head.reason.clone(),
        version_minor: head.version_minor,
        headers: head.headers.clone(),
        body: body_rx,
        trailers: trailers_rx,
        conn: active.conn().id,
        reused,
    };
    let finish = BodyEnd {
        disable_keep_alives: shared.settings.disable_keep_alives,
        request_headers: req.headers.clone(),
        head,
        framing,
    };
    wit_bindgen::spawn_local(pump_body(active, finish, body_tx, trailers_tx));
    response
}

/// What the body task needs to decide the connection's fate at the end.
struct BodyEnd {
    disable_keep_alives: bool,
    request_headers: Fields,
    head: ResponseHead,
    framing: Framing,
}

/// How copying the body ended, if not at its end.
enum Cut {
    /// The caller dropped the body stream after this many bytes.
    ReaderGone(u64),
    /// The connection or the framing failed.
    Failed(ErrorCode),
}

async fn pump_body(
    mut active: Active,
    end: BodyEnd,
    mut body: StreamWriter<u8>,
    trailers: FutureWriter<Trailers>,
) {
    let mut decoder = BodyDecoder::new(end.framing);
    let outcome = copy_body(&mut active, &mut decoder, &mut body).await;
    let trailer_value = match outcome {
        Ok(total) => {
            active.emit(EventKind::BodyEof(total));
            let verdict = reuse::after_response(&reuse::Finished {
                disable_keep_alives: end.disable_keep_alives,
                request_headers: &end.request_headers,
                response: &end.head,
                framing: end.framing,
                trailing_bytes: active.conn().buffered().len(),
            });
            // The connection is back in the pool before the caller sees the end of
            // the body, so a request sent right after reuses it.
            match verdict {
                Ok(()) => active.put_idle(),
                Err(why) => active.close(close_reason(why)),
            }
            Ok(decoder.take_trailers())
        }
        Err(Cut::ReaderGone(bytes)) => {
            active.emit(EventKind::BodyClosedEarly(bytes));
            active.close(CloseReason::EarlyBodyClose);
            Err(ErrorCode::HttpResponseIncomplete(
                "the response body was closed before its end".to_owned(),
            ))
        }
        Err(Cut::Failed(code)) => {
            active.close(CloseReason::Error);
            Err(code)
        }
    };
    drop(body);
    // The caller may have dropped the trailers future; nothing is lost then.
    let _ = trailers.write(trailer_value).await;
}

async fn copy_body(
    active: &mut Active,
    decoder: &mut BodyDecoder,
    body: &mut StreamWriter<u8>,
) -> Result<u64, Cut> {
    let mut total: u64 = 0;
    loop {
        if decoder.is_done() {
            return Ok(total);
        }
        if active.conn().buffered().is_empty() {
            let read = active.conn_mut().fill().await.map_err(Cut::Failed)?;
            if read == 0 {
                decoder
                    .finish_at_eof()
                    .map_err(|e| Cut::Failed(to_code(e)))?;
                continue;
            }
        }
        let conn = active.conn_mut();
        let step = decoder
            .decode(conn.buffered())
            .map_err(|e| Cut::Failed(to_code(e)))?;
        let data = step.data.map(|range| conn.buffered()[range].to_vec());
        conn.consume(step.consumed);
        if let Some(data) = data {
            let len = data.len() as u64;
            if !body.write_all(data).await.is_empty() {
                return Err(Cut::ReaderGone(total));
            }
            total += len;
        }
    }
}

fn close_reason(why: NoReuse) -> CloseReason {
    match why {
        NoReuse::KeepAlivesDisabled => CloseReason::KeepalivesDisabled,
        NoReuse::ConnectionClose => CloseReason::ConnectionClose,
        NoReuse::ServerClosed => CloseReason::ServerClosed,
        NoReuse::TrailingBytes => CloseReason::Error,
    }
}

/// The message inside an error code, for events.
pub fn describe(code: &ErrorCode) -> String {
    super::errors::message(code).to_owned()
}
