//! One round trip on a stream of an HTTP/2 connection.
//!
//! ```text
//!  lease ─► SendRequest::poll_ready ─► send_request (HEADERS) ─► got_conn{proto h2, stream}
//!     ├─ write: DATA as the window allows (reserve/poll capacity), trailers or
//!     │         END_STREAM; a failing body resets the stream (CANCEL)
//!     └─ read: the response head ─► whole (END_STREAM with the head) or a task that
//!              pumps DATA to the caller, releasing window as it goes; trailers
//!  dropped body ─► RST_STREAM(CANCEL) for this stream only; the connection stays
//! ```
//!
//! Failures say whether Go's `canRetryError` would retry them: a connection that
//! could not take the stream, a stream the server's `GOAWAY` left unprocessed, a
//! stream the server refused (`REFUSED_STREAM`) or reset with `PROTOCOL_ERROR`.

use std::pin::pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use futures::StreamExt;
use futures::channel::{mpsc, oneshot};
use futures::future::{Either, join, poll_fn, select};
use h2::{Reason, RecvStream, SendStream};
use http::{HeaderMap, HeaderName, HeaderValue};
use wit_bindgen::{FutureWriter, StreamWriter};

use super::StreamLease;
use crate::core::compression::{Gunzip, decompressed_headers, is_gzipped};
use crate::core::decode::{Fields, ResponseHead};
use crate::core::encode::BodyFraming;
use crate::core::h2_frames::reason_name;
use crate::core::reuse::Progress;
use crate::driver::bindings::roundtrip::transport::observe::{
    BodyClosedEarly, EventKind, GotConn, StreamReset,
};
use crate::driver::bindings::roundtrip::transport::types::{
    ErrorCode, HttpVersion, Response, ResponseBody, StreamedBody,
};
use crate::driver::clock;
use crate::driver::conn::READ_SIZE;
use crate::driver::errors::to_code;
use crate::driver::exchange::{Checked, Failed, first_byte_timeout};
use crate::driver::request_body::{self as send, Body, Outgoing, PendingWrite, Piece, WriteError};
use crate::driver::response_body::{self as body, Cut, Trailers, WHOLE_BODY_MAX, WRITE_GRACE};
use crate::driver::transport::Shared;

/// A failed attempt on HTTP/2, and whether Go would retry it on another connection.
pub struct H2Failed {
    pub code: ErrorCode,
    pub retry: bool,
}

impl H2Failed {
    fn fatal(code: ErrorCode) -> Self {
        Self { code, retry: false }
    }
}

/// Request headers HTTP/2 forbids (RFC 9113 §8.2.2), and those it carries as
/// pseudo-headers or sets itself.
const NOT_SENT: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
];

/// Runs the request on a stream of `lease`'s connection.
pub async fn round_trip(
    shared: &Rc<Shared>,
    lease: StreamLease,
    req: &Checked,
    body: &mut Body,
) -> Result<Response, H2Failed> {
    let limit = req.options.first_byte_timeout;
    let head = match clock::within(limit, exchange_head(shared, &lease, req, body)).await {
        Some(head) => head?,
        None => return Err(H2Failed::fatal(first_byte_timeout(limit))),
    };
    Ok(respond(lease, req, head))
}

/// A response head, the write if it was still going, and what the body needs.
struct Head {
    response: http::Response<RecvStream>,
    unfinished_write: Option<PendingWrite>,
    accept_gzip: bool,
}

async fn exchange_head(
    shared: &Rc<Shared>,
    lease: &StreamLease,
    req: &Checked,
    body: &mut Body,
) -> Result<Head, H2Failed> {
    let settings = &shared.settings;
    let (framing, accept_gzip) = req.framing(body, settings).map_err(H2Failed::fatal)?;
    let request = build_request(shared, req, framing, accept_gzip).map_err(H2Failed::fatal)?;
    let mut sender = lease.conn.sender();
    // A connection that cannot take a stream now (it is going away) is Go's
    // `errClientConnUnusable`: retried on another.
    poll_fn(|cx| sender.poll_ready(cx))
        .await
        .map_err(|e| unusable(&e))?;
    let end_of_stream = body.is_empty();
    let (response, stream) = sender
        .send_request(request, end_of_stream)
        .map_err(|e| unusable(&e))?;
    let id = response.stream_id().as_u32();
    lease.emit(EventKind::GotConn(GotConn {
        reused: lease.reused,
        was_idle: lease.idle_for.is_some(),
        idle_us: lease.idle_for.unwrap_or_default(),
        proto: HttpVersion::Http2,
        stream: Some(id),
    }));
    lease.emit(EventKind::WroteHeaders);
    let emitter = StreamEmitter {
        shared: Rc::clone(shared),
        conn: lease.conn.id,
        req: lease.req,
        key: lease.conn.key.clone(),
        stream: id,
    };
    let write: PendingWrite = Box::pin(write_body(
        stream,
        body.outgoing(),
        framing,
        end_of_stream,
        settings.write_byte_timeout,
        emitter,
    ));
    let goaway = || lease.conn.goaway_last_stream();
    let limit = settings.max_response_header_bytes;
    // `h2` resets a stream whose response head is over `SETTINGS_MAX_HEADER_LIST_SIZE`
    // with PROTOCOL_ERROR, as it does one that is malformed: a header block of at
    // least half the limit, compressed, is the one that was too large.
    let head_error = |e: &h2::Error| {
        let failed = classify(e, id, goaway());
        let oversize = e.is_reset()
            && !e.is_remote()
            && e.reason() == Some(Reason::PROTOCOL_ERROR)
            && lease
                .conn
                .header_block_bytes(id)
                .is_some_and(|bytes| bytes.saturating_mul(2) >= limit);
        if oversize {
            return H2Failed::fatal(ErrorCode::HttpResponseHeaderSectionSize(format!(
                "http2: the response head on stream {id} is larger than \
                 max-response-header-bytes ({limit} bytes)"
            )));
        }
        failed
    };
    let response = pin!(response);
    match select(write, response).await {
        Either::Left((written, response)) => {
            if let Some(code) = written.as_ref().err().and_then(WriteError::ends_exchange) {
                return Err(H2Failed::fatal(code.clone()));
            }
            match clock::within(settings.response_header_timeout, response).await {
                Some(Ok(response)) => Ok(Head {
                    response,
                    unfinished_write: None,
                    accept_gzip,
                }),
                Some(Err(e)) => Err(head_error(&e)),
                None => Err(H2Failed::fatal(ErrorCode::HttpResponseTimeout(
                    "timeout awaiting response headers".to_owned(),
                ))),
            }
        }
        Either::Right((Ok(response), write)) => Ok(Head {
            response,
            unfinished_write: Some(write),
            accept_gzip,
        }),
        Either::Right((Err(e), _)) => Err(head_error(&e)),
    }
}

/// The request's head as `h2` takes it: lowercase names, no connection-specific
/// fields, `User-Agent`, `Accept-Encoding: gzip` and `Content-Length` as for HTTP/1.1.
fn build_request(
    shared: &Shared,
    req: &Checked,
    framing: BodyFraming,
    accept_gzip: bool,
) -> Result<http::Request<()>, ErrorCode> {
    let uri = format!(
        "{}://{}{}",
        req.target.scheme.as_str(),
        req.target.authority,
        req.target.path_and_query
    );
    let mut builder = http::Request::builder()
        .method(req.method.as_str())
        .uri(uri.as_str())
        .version(http::Version::HTTP_2);
    let invalid = |what: String| ErrorCode::HttpRequestHeaderInvalid(what);
    let mut headers = HeaderMap::new();
    let mut has_user_agent = false;
    for (name, value) in &req.headers {
        let lower = name.to_ascii_lowercase();
        if NOT_SENT.contains(&lower.as_str()) {
            continue;
        }
        // `TE` is allowed with `trailers` only.
        if lower == "te" && !value.trim_ascii().eq_ignore_ascii_case(b"trailers") {
            continue;
        }
        has_user_agent |= lower == "user-agent";
        let name = HeaderName::from_bytes(lower.as_bytes())
            .map_err(|_| invalid(format!("invalid header name {name:?}")))?;
        let value = HeaderValue::from_bytes(value)
            .map_err(|_| invalid(format!("invalid value of header {name}")))?;
        headers.append(name, value);
    }
    let settings = &shared.settings;
    if !has_user_agent
        && !settings.user_agent.is_empty()
        && let Ok(agent) = HeaderValue::from_str(&settings.user_agent)
    {
        headers.insert(http::header::USER_AGENT, agent);
    }
    if accept_gzip {
        headers.insert(
            http::header::ACCEPT_ENCODING,
            HeaderValue::from_static("gzip"),
        );
    }
    if let BodyFraming::Length(length) = framing {
        headers.insert(http::header::CONTENT_LENGTH, HeaderValue::from(length));
    }
    if let Some(map) = builder.headers_mut() {
        *map = headers;
    }
    builder
        .body(())
        .map_err(|e| ErrorCode::HttpRequestUriInvalid(format!("{uri}: {e}")))
}

/// Events of one stream.
#[derive(Clone)]
struct StreamEmitter {
    shared: Rc<Shared>,
    conn: u64,
    req: u64,
    key: String,
    stream: u32,
}

impl StreamEmitter {
    fn emit(&self, kind: EventKind) {
        self.shared
            .emit(Some(self.conn), Some(self.req), Some(&self.key), kind);
    }

    /// The transport reset the stream with `CANCEL`.
    fn cancelled(&self) {
        self.emit(EventKind::StreamReset(StreamReset {
            stream: self.stream,
            code: reason_name(u32::from(Reason::CANCEL)),
            by_peer: false,
        }));
    }
}

/// Sends the body as DATA frames (as much as the windows allow at a time), then
/// trailers or the end of the stream; reports `wrote_request`. A body that fails, or
/// that gets no window for `write_byte_timeout`, resets its stream (`CANCEL`).
async fn write_body(
    mut stream: SendStream<Bytes>,
    body: Outgoing,
    framing: BodyFraming,
    already_ended: bool,
    write_byte_timeout: Option<u64>,
    emitter: StreamEmitter,
) -> Result<(), WriteError> {
    let limit = write_byte_timeout;
    let written = match body {
        _ if already_ended => Ok(()),
        Outgoing::Empty => send_data(&mut stream, limit, Bytes::new(), true).await,
        Outgoing::Bytes(bytes) => send_data(&mut stream, limit, Bytes::from(bytes), true).await,
        Outgoing::Stream(body) => write_stream(&mut stream, limit, body, framing).await,
        Outgoing::Spent => Err(WriteError::Body(ErrorCode::HttpRequestBodyError(
            "the request body is a stream that was already read; it cannot be replayed".to_owned(),
        ))),
    };
    if written.as_ref().is_err_and(|e| e.ends_exchange().is_some()) {
        stream.send_reset(Reason::CANCEL);
        emitter.cancelled();
    }
    emitter.emit(send::wrote_request(&written));
    written
}

async fn write_stream(
    stream: &mut SendStream<Bytes>,
    limit: Option<u64>,
    body: crate::driver::bindings::roundtrip::transport::types::BodyStream,
    framing: BodyFraming,
) -> Result<(), WriteError> {
    let declared = match framing {
        BodyFraming::Length(declared) => Some(declared),
        _ => None,
    };
    let (forward, mut pieces) = mpsc::channel(1);
    crate::driver::tasks::spawn(send::forward_stream(body, declared, forward));
    while let Some(piece) = pieces.next().await {
        match piece {
            Piece::Data(chunk) => send_data(stream, limit, Bytes::from(chunk), false).await?,
            Piece::End(Err(code)) => return Err(WriteError::Body(code)),
            Piece::End(Ok(trailers)) => {
                let trailers = trailers.unwrap_or_default();
                if trailers.is_empty() {
                    return send_data(stream, limit, Bytes::new(), true).await;
                }
                let mut map = HeaderMap::new();
                for (name, value) in &trailers {
                    let (Ok(name), Ok(value)) = (
                        HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes()),
                        HeaderValue::from_bytes(value),
                    ) else {
                        return Err(WriteError::Body(ErrorCode::HttpRequestHeaderInvalid(
                            format!("invalid trailer {name:?}"),
                        )));
                    };
                    map.append(name, value);
                }
                return stream.send_trailers(map).map_err(|e| on_wire(&e));
            }
        }
    }
    Err(WriteError::Body(ErrorCode::InternalError(
        "the request body's reader stopped before its end".to_owned(),
    )))
}

/// Sends `data` as the stream's and the connection's windows allow; `END_STREAM`
/// goes with its last bytes (or alone, on an empty frame, when there are none). No
/// window for `write_byte_timeout`: [`WriteError::Stalled`].
async fn send_data(
    stream: &mut SendStream<Bytes>,
    write_byte_timeout: Option<u64>,
    mut data: Bytes,
    end_of_stream: bool,
) -> Result<(), WriteError> {
    if data.is_empty() {
        return stream
            .send_data(data, end_of_stream)
            .map_err(|e| on_wire(&e));
    }
    while !data.is_empty() {
        stream.reserve_capacity(data.len());
        let window = clock::within(write_byte_timeout, poll_fn(|cx| stream.poll_capacity(cx)));
        let capacity = match window.await {
            Some(Some(Ok(capacity))) => capacity,
            Some(Some(Err(e))) => return Err(on_wire(&e)),
            Some(None) => {
                return Err(WriteError::Connection(Failed {
                    code: ErrorCode::ConnectionTerminated(
                        "http2: the stream closed while the request body was being sent".to_owned(),
                    ),
                    progress: Progress::NoResponse,
                }));
            }
            None => {
                return Err(WriteError::Stalled(ErrorCode::ConnectionWriteTimeout(
                    format!(
                        "http2: the server gave stream {} no flow-control window to send the \
                     request body for {} (write-byte-timeout); the stream was reset",
                        stream.stream_id().as_u32(),
                        clock::display(write_byte_timeout.unwrap_or_default())
                    ),
                )));
            }
        };
        if capacity == 0 {
            continue;
        }
        let chunk = data.split_to(capacity.min(data.len()));
        stream
            .send_data(chunk, end_of_stream && data.is_empty())
            .map_err(|e| on_wire(&e))?;
    }
    Ok(())
}

fn on_wire(e: &h2::Error) -> WriteError {
    WriteError::Connection(Failed {
        code: ErrorCode::ConnectionTerminated(format!("http2: {e}")),
        progress: Progress::NoResponse,
    })
}

/// The connection could not take the stream: Go's `errClientConnUnusable`, retried.
fn unusable(e: &h2::Error) -> H2Failed {
    H2Failed {
        code: ErrorCode::ConnectionTerminated(format!(
            "http2: the connection cannot take a new stream: {e}"
        )),
        retry: true,
    }
}

/// Maps `h2`'s error on stream `id` to an error code, and Go's `canRetryError`.
fn classify(e: &h2::Error, id: u32, goaway: Option<u32>) -> H2Failed {
    let reason = e.reason().map(|r| reason_name(u32::from(r)));
    let reason = reason.as_deref().unwrap_or("");
    if e.is_go_away() && e.is_remote() {
        // Streams above the GOAWAY's last stream were never processed.
        let unprocessed = goaway.is_none_or(|last| id > last);
        let last = goaway.map_or_else(|| "?".to_owned(), |l| l.to_string());
        return H2Failed {
            code: ErrorCode::ConnectionTerminated(format!(
                "http2: server sent GOAWAY ({reason}, last stream {last}) \
                 {} stream {id}",
                if unprocessed {
                    "before processing"
                } else {
                    "while answering"
                }
            )),
            retry: unprocessed,
        };
    }
    if e.is_reset() && e.is_remote() {
        let refused = e.reason() == Some(Reason::REFUSED_STREAM);
        let protocol = e.reason() == Some(Reason::PROTOCOL_ERROR);
        let code = if refused {
            ErrorCode::ConnectionTerminated(format!(
                "http2: server refused stream {id} (REFUSED_STREAM)"
            ))
        } else {
            ErrorCode::HttpProtocolError(format!(
                "http2: stream {id} reset by the server: {reason}"
            ))
        };
        return H2Failed {
            code,
            retry: refused || protocol,
        };
    }
    if e.is_io() {
        return H2Failed::fatal(ErrorCode::ConnectionTerminated(format!(
            "http2: the connection failed during stream {id}: {e}"
        )));
    }
    H2Failed::fatal(ErrorCode::HttpProtocolError(format!(
        "http2: stream {id}: {e}"
    )))
}

/// A header map as one block (an `http` value holds no CR or LF).
fn fields_of(map: &HeaderMap) -> Fields {
    Fields::from_pairs(|| map.iter().map(|(n, v)| (n.as_str(), v.as_bytes())))
}

/// Builds the response; its body whole when the head ended the stream.
fn respond(lease: StreamLease, req: &Checked, head: Head) -> Response {
    let Head {
        response,
        unfinished_write,
        accept_gzip,
    } = head;
    let (parts, mut recv) = response.into_parts();
    let status = parts.status.as_u16();
    let fields = fields_of(&parts.headers);
    let head = ResponseHead {
        status,
        reason: parts.status.canonical_reason().unwrap_or("").to_owned(),
        version_minor: 1,
        headers: fields,
    };
    lease.emit(EventKind::FirstByte);
    lease.emit(EventKind::Response(status));
    let gunzip = (accept_gzip && is_gzipped(&head) && req.method != "HEAD").then(Gunzip::new);
    let ResponseHead {
        reason, headers, ..
    } = head;
    let headers = if gunzip.is_some() {
        decompressed_headers(headers)
    } else {
        headers
    };
    let conn = lease.conn.id;
    let reused = lease.reused;
    let req_id = lease.req;
    let taken = if recv.is_end_stream() && unfinished_write.is_none() {
        Ok(Vec::new())
    } else if unfinished_write.is_none() && gunzip.is_none() {
        take_whole(&mut recv)
    } else {
        Err(Taken::default())
    };
    let body = match taken {
        // All of it is here: no stream and no task, as HTTP/1.1's whole bodies (and
        // the stream is over, so nothing is held).
        Ok(bytes) => {
            lease.emit(EventKind::BodyEof(bytes.len() as u64));
            drop(recv);
            drop(lease);
            ResponseBody::Whole(bytes)
        }
        Err(taken) => ResponseBody::Streamed(stream_body(
            lease,
            recv,
            taken,
            gunzip,
            req.options.between_bytes_timeout,
            unfinished_write,
        )),
    };
    Response {
        status,
        reason,
        version: HttpVersion::Http2,
        headers: headers.into_block(),
        body,
        conn,
        reused,
        req: req_id,
    }
}

/// What `take_whole` took of a body that is not all here yet (or failed): the pump
/// sends it first.
#[derive(Default)]
struct Taken {
    bytes: Vec<u8>,
    failed: Option<h2::Error>,
    /// The trailers, when they were taken too (`poll_trailers` gives them once).
    trailers: Option<Result<Option<HeaderMap>, h2::Error>>,
}

/// The whole body, when all of it (up to `WHOLE_BODY_MAX`) has already arrived, ending
/// the stream with no trailers: taken without waiting. Otherwise what was taken so far.
fn take_whole(recv: &mut RecvStream) -> Result<Vec<u8>, Taken> {
    // A pump polls the stream at once if this does not take it all, so the no-op
    // waker loses no wake-up.
    let mut cx = Context::from_waker(Waker::noop());
    let mut bytes = Vec::new();
    loop {
        match recv.poll_data(&mut cx) {
            Poll::Ready(Some(Ok(data))) => {
                let _ = recv.flow_control().release_capacity(data.len());
                bytes.extend_from_slice(&data);
                if bytes.len() > WHOLE_BODY_MAX {
                    return Err(Taken {
                        bytes,
                        ..Taken::default()
                    });
                }
            }
            Poll::Ready(None) => break,
            Poll::Ready(Some(Err(e))) => {
                return Err(Taken {
                    bytes,
                    failed: Some(e),
                    trailers: None,
                });
            }
            Poll::Pending => {
                return Err(Taken {
                    bytes,
                    ..Taken::default()
                });
            }
        }
    }
    match recv.poll_trailers(&mut cx) {
        Poll::Ready(Ok(None)) => Ok(bytes),
        // Trailers (or their error) are the pump's to hand over; so is their wait.
        Poll::Ready(trailers) => Err(Taken {
            bytes,
            failed: None,
            trailers: Some(trailers),
        }),
        Poll::Pending => Err(Taken {
            bytes,
            ..Taken::default()
        }),
    }
}

fn stream_body(
    lease: StreamLease,
    recv: RecvStream,
    taken: Taken,
    gunzip: Option<Gunzip>,
    between_bytes_timeout: Option<u64>,
    unfinished_write: Option<PendingWrite>,
) -> StreamedBody {
    let (body_tx, trailers_tx, sent_tx, streamed) = body::channels();
    crate::driver::tasks::spawn(pump(
        lease,
        recv,
        taken,
        gunzip,
        between_bytes_timeout,
        unfinished_write,
        body_tx,
        trailers_tx,
        sent_tx,
    ));
    streamed
}

#[allow(clippy::too_many_arguments)]
async fn pump(
    lease: StreamLease,
    mut recv: RecvStream,
    taken: Taken,
    gunzip: Option<Gunzip>,
    between_bytes_timeout: Option<u64>,
    unfinished_write: Option<PendingWrite>,
    mut body: StreamWriter<u8>,
    trailers: FutureWriter<Trailers>,
    request_sent: FutureWriter<Result<(), ErrorCode>>,
) {
    let (sent, outcome) = oneshot::channel::<Result<(), ErrorCode>>();
    let report = async move {
        let outcome = outcome.await.unwrap_or_else(|_| {
            Err(ErrorCode::HttpRequestBodyError(
                "the request was not written to its end: the response ended first and its \
                 stream was reset"
                    .to_owned(),
            ))
        });
        let _ = request_sent.write(outcome).await;
    };
    let mut taken = taken;
    let taken_trailers = taken.trailers.take();
    let copy = async {
        let copy = copy_body(
            &lease,
            &mut recv,
            taken,
            &mut body,
            gunzip,
            between_bytes_timeout,
        );
        let Some(write) = unfinished_write else {
            let _ = sent.send(Ok(()));
            return copy.await;
        };
        let copy = pin!(copy);
        match select(write, copy).await {
            Either::Left((written, copy)) => {
                let _ = sent.send(written.as_ref().map_err(WriteError::code).copied());
                match written.as_ref().err().and_then(WriteError::ends_exchange) {
                    Some(code) => Err(Cut::Failed(code.clone())),
                    None => copy.await,
                }
            }
            Either::Right((copied, write)) => {
                if copied.is_ok()
                    && let Some(written) = clock::within(Some(WRITE_GRACE), write).await
                {
                    let _ = sent.send(written.as_ref().map_err(WriteError::code).copied());
                }
                copied
            }
        }
    };
    let (outcome, ()) = join(copy, report).await;
    let id = recv.stream_id().as_u32();
    let trailer_value = match outcome {
        Ok(total) => {
            let trailers = match taken_trailers {
                Some(trailers) => trailers,
                None => poll_fn(|cx| recv.poll_trailers(cx)).await,
            };
            lease.emit(EventKind::BodyEof(total));
            match trailers {
                Ok(map) => Ok(map.map(|map| fields_of(&map).into_block())),
                Err(e) => Err(classify(&e, id, lease.conn.goaway_last_stream()).code),
            }
        }
        Err(Cut::ReaderGone(bytes)) => {
            // Only the stream ends: the connection is saved.
            lease.emit(EventKind::BodyClosedEarly(BodyClosedEarly {
                bytes,
                drained: 0,
                saved: true,
            }));
            // Dropping the stream's last handle resets it (CANCEL); the connection and
            // its other streams go on.
            lease.emit(EventKind::StreamReset(StreamReset {
                stream: id,
                code: reason_name(u32::from(Reason::CANCEL)),
                by_peer: false,
            }));
            Err(ErrorCode::HttpResponseIncomplete(
                "the response body was closed before its end".to_owned(),
            ))
        }
        Err(Cut::Failed(code)) => Err(code),
    };
    drop(recv);
    drop(body);
    drop(lease);
    let _ = trailers.write(trailer_value).await;
}

/// DATA frames gathered into one chunk for the caller, and what came after them.
struct Gathered {
    data: Vec<u8>,
    then: Then,
}

/// What the stream said after the gathered frames.
enum Then {
    /// Nothing yet (or the chunk is full): wait for more.
    More,
    /// The body's end.
    End,
    /// The stream failed; the frames before it go to the caller first.
    Failed(h2::Error),
}

/// `first` and the DATA frames already read from the socket behind it, up to
/// `READ_SIZE` bytes: one write to the caller per batch, not one per frame (nginx
/// sends 8 KiB frames; a 16 MiB body took 2 041 writes). Polled with a no-op waker,
/// as `take_whole` is: the next wait registers the real one. Each frame's window is
/// released as it is taken (Go releases it as the body is read).
fn gather(recv: &mut RecvStream, first: Bytes) -> Gathered {
    let _ = recv.flow_control().release_capacity(first.len());
    let mut data = Vec::with_capacity(first.len().max(READ_SIZE.min(first.len() * 8)));
    data.extend_from_slice(&first);
    let mut cx = Context::from_waker(Waker::noop());
    let then = loop {
        if data.len() >= READ_SIZE {
            break Then::More;
        }
        match recv.poll_data(&mut cx) {
            Poll::Ready(Some(Ok(more))) => {
                let _ = recv.flow_control().release_capacity(more.len());
                data.extend_from_slice(&more);
            }
            Poll::Ready(Some(Err(e))) => break Then::Failed(e),
            Poll::Ready(None) => break Then::End,
            Poll::Pending => break Then::More,
        }
    };
    Gathered { data, then }
}

async fn copy_body(
    lease: &StreamLease,
    recv: &mut RecvStream,
    taken: Taken,
    body: &mut StreamWriter<u8>,
    mut gunzip: Option<Gunzip>,
    between_bytes_timeout: Option<u64>,
) -> Result<u64, Cut> {
    let mut total: u64 = 0;
    let id = recv.stream_id().as_u32();
    // What `take_whole` took first (never gzip: it takes none then).
    if !taken.bytes.is_empty() {
        total += body::deliver(body, taken.bytes, total).await?;
    }
    if let Some(e) = taken.failed {
        return Err(Cut::Failed(
            classify(&e, id, lease.conn.goaway_last_stream()).code,
        ));
    }
    let failed = |e: h2::Error| Cut::Failed(classify(&e, id, lease.conn.goaway_last_stream()).code);
    loop {
        let next = clock::within(between_bytes_timeout, poll_fn(|cx| recv.poll_data(cx)))
            .await
            .ok_or_else(|| Cut::Failed(body::paused(between_bytes_timeout)))?;
        let first = match next {
            None => break,
            Some(Err(e)) => return Err(failed(e)),
            Some(Ok(data)) => data,
        };
        let Gathered { data, then } = gather(recv, first);
        let data = match gunzip.as_mut() {
            Some(gunzip) => gunzip.feed(&data).map_err(|e| Cut::Failed(to_code(e)))?,
            None => data,
        };
        total += body::deliver(body, data, total).await?;
        match then {
            Then::More => {}
            Then::End => break,
            Then::Failed(e) => return Err(failed(e)),
        }
    }
    if let Some(gunzip) = gunzip {
        let rest = gunzip.finish().map_err(|e| Cut::Failed(to_code(e)))?;
        total += body::deliver(body, rest, total).await?;
    }
    body::read_to_end(body, total).await?;
    Ok(total)
}
