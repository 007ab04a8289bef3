//! One round trip: get a connection, write the request while reading the response
//! head, then hand the body to a task that pumps it to the caller.
//!
//! ```text
//!  round_trip ─► check ─► checkout::acquire (idle | wait; dial task) ─┐
//!       ▲                                                             ▼
//!       │                       ┌─ send::write_request (head, [100-continue], body)
//!       │               attempt ┤          concurrently, like Go's writeLoop/readLoop
//!       │                       └─ read_head (skips 1xx; an early final answer wins)
//!       └── retry (core::reuse::can_retry) ◄── failure on a reused connection
//!  head ─► respond: the whole body came with it? ─► returned inline, connection settled
//!          otherwise spawn body::pump_body ─► response returned to the caller
//!          (with the write, if it has not finished: the body keeps going out)
//! ```
//!
//! Every decision (framing, reuse, retry) is the core's; this file only moves bytes and
//! reports what happened.

use std::pin::pin;
use std::rc::Rc;

use futures::channel::oneshot;
use futures::future::{Either, select};

use super::active::Active;
use super::bindings::roundtrip::transport::observe::{CloseReason, EventKind, RequestSummary};
use super::bindings::roundtrip::transport::types::{
    ErrorCode, HttpVersion, Request, RequestBody, RequestOption, Response, ResponseBody,
    StreamedBody,
};
use super::body::{self, BodyEnd, pump_body};
use super::checkout::{self, Acquired};
use super::clock;
use super::conn::Reader;
use super::errors::{message, to_code};
use super::h2_exchange;
use super::send::{Body, Continue, PendingWrite, WriteError, write_request};
use super::transport::{Held, Shared};
use crate::core::compression::{Gunzip, decompressed_headers, is_gzipped, should_request_gzip};
use crate::core::decode::{self, Fields, Framing, ResponseHead};
use crate::core::encode::{self, RequestHead};
use crate::core::proxy::Route;
use crate::core::request::{self, Target};
use crate::core::reuse::{self, Progress};

/// A failed attempt, and how far it got (which decides whether it may be retried).
#[derive(Clone)]
pub struct Failed {
    pub code: ErrorCode,
    pub progress: Progress,
}

impl Failed {
    pub fn at(progress: Progress) -> impl FnOnce(ErrorCode) -> Failed {
        move |code| Failed { code, progress }
    }
}

/// Emits events about one connection and request, without borrowing the connection.
#[derive(Clone)]
pub struct Emitter {
    pub shared: Rc<Shared>,
    pub conn: u64,
    pub req: u64,
    pub key: String,
}

impl Emitter {
    pub fn emit(&self, kind: EventKind) {
        self.shared
            .emit(Some(self.conn), Some(self.req), Some(&self.key), kind);
    }
}

/// The checked parts of a request.
pub struct Checked {
    pub id: u64,
    pub method: String,
    pub target: Target,
    pub headers: Fields,
    pub options: Limits,
}

/// A request's own limits (`request.options`), nanoseconds; `None`: the transport's.
#[derive(Debug, Clone, Copy, Default)]
pub struct Limits {
    pub connect_timeout: Option<u64>,
    pub first_byte_timeout: Option<u64>,
    pub between_bytes_timeout: Option<u64>,
}

impl Limits {
    fn of(options: &[RequestOption]) -> Self {
        let mut limits = Limits::default();
        for option in options {
            match *option {
                RequestOption::ConnectTimeout(t) => limits.connect_timeout = Some(t),
                RequestOption::FirstByteTimeout(t) => limits.first_byte_timeout = Some(t),
                RequestOption::BetweenBytesTimeout(t) => limits.between_bytes_timeout = Some(t),
            }
        }
        limits
    }
}

/// A response head, the request's write if it had not finished when the head came,
/// and whether the transport asked for gzip.
struct Answered {
    head: ResponseHead,
    unfinished_write: Option<PendingWrite>,
    accept_gzip: bool,
}

/// Runs one round trip, abandoned at once if the host cancels it (`transport.cancel`
/// with its `cancel-id`): dropping the work runs every guard (a waiter leaves the line,
/// an active connection is closed). Connections the host lets go of with this request
/// (`releases`) go back first, so it may find one of them idle.
pub async fn round_trip(shared: Rc<Shared>, req: Request) -> Result<Response, ErrorCode> {
    let Request {
        method,
        url,
        headers,
        body,
        options,
        cancel_id,
        releases,
    } = req;
    for release in releases {
        shared.release_held(release.conn, release.read);
    }
    let work = pin!(exchange(
        Rc::clone(&shared),
        method,
        url,
        headers,
        body,
        options
    ));
    if cancel_id == 0 {
        return work.await;
    }
    let (_registered, cancelled) = Cancellable::register(&shared, cancel_id);
    match select(work, cancelled).await {
        Either::Left((result, _)) => result,
        Either::Right(_) => Err(ErrorCode::RequestCanceled(
            "net/http: request canceled".to_owned(),
        )),
    }
}

/// A request the host may cancel: its entry in `Shared::cancels`, removed when the
/// round trip ends either way.
struct Cancellable {
    shared: Rc<Shared>,
    id: u64,
}

impl Cancellable {
    /// Registers request `id`; the receiver resolves when the host cancels it.
    fn register(shared: &Rc<Shared>, id: u64) -> (Self, oneshot::Receiver<()>) {
        let (trigger, cancelled) = oneshot::channel();
        shared.cancels.borrow_mut().insert(id, trigger);
        let registered = Cancellable {
            shared: Rc::clone(shared),
            id,
        };
        (registered, cancelled)
    }
}

impl Drop for Cancellable {
    fn drop(&mut self) {
        self.shared.cancels.borrow_mut().remove(&self.id);
    }
}

async fn exchange(
    shared: Rc<Shared>,
    method: String,
    url: String,
    headers: Fields,
    body: RequestBody,
    options: Vec<RequestOption>,
) -> Result<Response, ErrorCode> {
    // Another scheme's handler (Go's `RegisterProtocol`).
    if super::file::is_file_url(&url) {
        return super::file::serve(shared, method, url).await;
    }
    // Nothing reaches the network before the whole request checks out.
    let target = request::target(&url).map_err(to_code)?;
    request::check_method(&method).map_err(to_code)?;
    for (name, value) in &headers {
        request::check_header(name, value).map_err(to_code)?;
    }
    let route = shared.settings.proxies.route(&target).map_err(to_code)?;
    let target = target.through(route);
    let mut headers = headers;
    if let Route::Forward(proxy) = &target.route
        && let Some(auth) = proxy.basic_auth()
        && !headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("proxy-authorization"))
    {
        headers.push(("Proxy-Authorization".to_owned(), auth.into_bytes()));
    }
    let req = Checked {
        id: shared.next_request_id(),
        method,
        target,
        headers,
        options: Limits::of(&options),
    };
    let mut body = match body {
        RequestBody::Empty => Body::Empty,
        RequestBody::Bytes(bytes) => Body::Bytes(bytes),
        RequestBody::Stream(stream) => Body::Stream(Some(stream)),
    };
    let key = req.target.key.clone();
    let mut h2_retries = 0;
    loop {
        if shared.settings.emit_events {
            let summary = RequestSummary {
                method: req.method.clone(),
                url: format!(
                    "{}://{}{}",
                    req.target.scheme.as_str(),
                    req.target.authority,
                    req.target.path_and_query
                ),
            };
            shared.emit(None, Some(req.id), Some(&key), EventKind::GetConn(summary));
        }
        let acquired =
            checkout::acquire(&shared, req.id, &req.target, req.options.connect_timeout).await?;
        let mut active = match acquired {
            Acquired::H1(active) => active,
            Acquired::H2(lease) => {
                let failed = match h2_exchange::round_trip(&shared, lease, &req, &mut body).await {
                    Ok(response) => return Ok(response),
                    Err(failed) => failed,
                };
                // Go's `http2.Transport.RoundTrip`: up to six retries of what
                // `canRetryError` allows, the first at once, then backing off.
                if !failed.retry || !body.can_send_again() || h2_retries >= H2_MAX_RETRIES {
                    return Err(failed.code);
                }
                h2_retries += 1;
                if h2_retries > 1 {
                    clock::sleep_until(clock::now_ns() + (1_000_000_000 << (h2_retries - 2))).await;
                }
                let reason = message(&failed.code).to_owned();
                shared.emit(None, Some(req.id), Some(&key), EventKind::Retry(reason));
                continue;
            }
        };
        let reused = active.conn().served > 0;
        active.conn_mut().served += 1;
        match attempt(&shared, &mut active, &req, &mut body).await {
            Ok(answered) => return Ok(respond(active, &shared, &req, answered, reused)),
            Err(failed) => {
                let replayable =
                    reuse::is_replayable(&req.method, &req.headers, body.is_replayable());
                active.close(CloseReason::Error);
                if !reuse::can_retry(reused, failed.progress, replayable) {
                    // Say so when only the body stood in the way of a retry.
                    let rewind = reuse::is_replayable(&req.method, &req.headers, true);
                    if rewind && reuse::can_retry(reused, failed.progress, true) {
                        return Err(not_rewound(failed.code));
                    }
                    return Err(failed.code);
                }
                let reason = format!("reused connection failed: {}", message(&failed.code));
                shared.emit(None, Some(req.id), Some(&key), EventKind::Retry(reason));
            }
        }
    }
}

/// No response within the request's `first-byte-timeout` of `limit` nanoseconds.
pub fn first_byte_timeout(limit: Option<u64>) -> ErrorCode {
    ErrorCode::ConnectionReadTimeout(format!(
        "no response within the request's first-byte timeout of {}",
        clock::display(limit.unwrap_or_default())
    ))
}

/// Retries of a request on HTTP/2 (Go's `http2.Transport.RoundTrip` gives up after six).
const H2_MAX_RETRIES: u32 = 6;

/// The error of a request that would have been retried but for its stream body.
fn not_rewound(code: ErrorCode) -> ErrorCode {
    let why = format!(
        "{}; not retried on a new connection: the request body is a stream that was \
         already read and cannot be rewound",
        message(&code)
    );
    match code {
        ErrorCode::HttpResponseIncomplete(_) => ErrorCode::HttpResponseIncomplete(why),
        ErrorCode::ConnectionTerminated(_) => ErrorCode::ConnectionTerminated(why),
        _ => ErrorCode::HttpRequestBodyError(why),
    }
}

/// Whether the caller asked the server to approve the body first.
fn expects_continue(headers: &Fields) -> bool {
    headers.iter().any(|(name, value)| {
        name.eq_ignore_ascii_case("expect")
            && value.trim_ascii().eq_ignore_ascii_case(b"100-continue")
    })
}

/// Writes the request and reads up to the final response head, at the same time: a
/// server may answer before the body is sent (and is heard; the body keeps going out),
/// and a `100 Continue` releases a body held back by `Expect: 100-continue`. The
/// request's `first-byte-timeout` bounds all of it.
async fn attempt(
    shared: &Rc<Shared>,
    active: &mut Active,
    req: &Checked,
    body: &mut Body,
) -> Result<Answered, Failed> {
    let limit = req.options.first_byte_timeout;
    match clock::within(limit, exchange_head(shared, active, req, body)).await {
        Some(answered) => answered,
        None => Err(Failed {
            code: first_byte_timeout(limit),
            progress: Progress::ResponseStarted,
        }),
    }
}

async fn exchange_head(
    shared: &Rc<Shared>,
    active: &mut Active,
    req: &Checked,
    body: &mut Body,
) -> Result<Answered, Failed> {
    let settings = &shared.settings;
    let framing = body
        .framing(&req.method, &req.headers)
        .map_err(Failed::at(Progress::NothingWritten))?;
    let accept_gzip = should_request_gzip(settings.disable_compression, &req.method, &req.headers);
    let mut wire = Vec::with_capacity(512);
    encode::encode_head(
        &mut wire,
        &RequestHead {
            method: &req.method,
            target: &req.target.request_target(),
            authority: &req.target.authority,
            user_agent: &settings.user_agent,
            headers: &req.headers,
            framing,
            close: settings.disable_keep_alives,
            accept_gzip,
        },
    );
    let (go_tx, go_rx) = oneshot::channel();
    let wait_for_continue = match settings.expect_continue_timeout {
        Some(timeout) if expects_continue(&req.headers) && !body.is_empty() => {
            Some(Continue { timeout, go: go_rx })
        }
        _ => None,
    };
    let emitter = active.emitter();
    let conn = active.conn_mut();
    let write: PendingWrite = Box::pin(write_request(
        conn.writer.clone(),
        emitter.clone(),
        wire,
        body.outgoing(),
        framing,
        wait_for_continue,
    ));
    let read = pin!(read_head(
        &mut conn.reader,
        &emitter,
        &req.method,
        settings.max_response_header_bytes,
        Some(go_tx),
    ));
    match select(write, read).await {
        Either::Left((written, read)) => {
            written.map_err(|e| match e {
                WriteError::Connection(failed) => failed,
                other => Failed::at(Progress::NoResponse)(other.code()),
            })?;
            // Go's ResponseHeaderTimeout runs from the end of writing the request.
            match clock::within(settings.response_header_timeout, read).await {
                Some(head) => head.map(|head| Answered {
                    head,
                    unfinished_write: None,
                    accept_gzip,
                }),
                None => Err(Failed {
                    code: ErrorCode::HttpResponseTimeout(
                        "timeout awaiting response headers".to_owned(),
                    ),
                    progress: Progress::ResponseStarted,
                }),
            }
        }
        // The server answered before the request was fully written: it is heard, and
        // the write goes on beside the response body (an echo reads it all).
        Either::Right((head, unfinished_write)) => head.map(|head| Answered {
            head,
            unfinished_write: Some(unfinished_write),
            accept_gzip,
        }),
    }
}

/// Reads up to the final (non-1xx) response head. A `100 Continue` is passed on to
/// `on_continue` (the body waiting for it), and so is a final 2xx: the server took the
/// request and may be reading on (an echo), so the body goes (curl's rule; Go holds it
/// back and such an exchange hangs). A final 3xx–5xx drops it: the body stays home.
async fn read_head(
    reader: &mut Reader,
    emitter: &Emitter,
    method: &str,
    max_bytes: usize,
    mut on_continue: Option<oneshot::Sender<()>>,
) -> Result<ResponseHead, Failed> {
    let mut got_first_byte = false;
    let mut interim = 0;
    loop {
        if !reader.buffered().is_empty() {
            if !got_first_byte {
                got_first_byte = true;
                emitter.emit(EventKind::FirstByte);
            }
            let parsed = decode::parse_response_head(reader.buffered(), max_bytes)
                .map_err(|e| Failed::at(Progress::ResponseStarted)(to_code(e)))?;
            if let Some((head, consumed)) = parsed {
                reader.consume(consumed);
                if !head.is_interim() {
                    // Validate framing now so a bad head fails the round trip itself.
                    decode::framing(method, &head)
                        .map_err(|e| Failed::at(Progress::ResponseStarted)(to_code(e)))?;
                    if (200..300).contains(&head.status)
                        && let Some(go) = on_continue.take()
                    {
                        let _ = go.send(());
                    }
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
                emitter.emit(EventKind::Got1xx(head.status));
                if head.status == 100
                    && let Some(go) = on_continue.take()
                {
                    let _ = go.send(());
                }
                continue;
            }
        }
        let progress = if got_first_byte {
            Progress::ResponseStarted
        } else {
            Progress::NoResponse
        };
        let read = reader.fill().await.map_err(Failed::at(progress))?;
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

/// Builds the response: its body whole when it came with the head, else streamed by
/// a task of its own.
fn respond(
    active: Active,
    shared: &Rc<Shared>,
    req: &Checked,
    answered: Answered,
    reused: bool,
) -> Response {
    let Answered {
        head,
        unfinished_write,
        accept_gzip,
    } = answered;
    // Go's rule: only a gzip the transport asked for is undone, and transparently.
    let gunzip = (accept_gzip && is_gzipped(&head)).then(Gunzip::new);
    active.emit(EventKind::Response(head.status));
    // `read_head` checked the framing already.
    let framing = decode::framing(&req.method, &head).unwrap_or(Framing::UntilClose);
    // What the body's end decides by; the head's fields then go to the caller.
    let heads = reuse::Heads::of(&req.headers, &head);
    let ResponseHead {
        status,
        reason,
        version_minor,
        headers,
    } = head;
    let headers = if gunzip.is_some() {
        decompressed_headers(&headers)
    } else {
        headers
    };
    let version = if version_minor == 0 {
        HttpVersion::Http10
    } else {
        HttpVersion::Http11
    };
    let conn = active.conn().id;
    let req_id = active.req();
    let end = BodyEnd {
        disable_keep_alives: shared.settings.disable_keep_alives,
        heads,
        unfinished_write,
        framing,
        gunzip,
        between_bytes_timeout: req.options.between_bytes_timeout,
    };
    let body = match whole_body(shared, active, end) {
        Ok(bytes) => ResponseBody::Whole(bytes),
        Err((active, end)) => ResponseBody::Streamed(stream_body(active, end)),
    };
    Response {
        status,
        reason,
        version,
        headers,
        body,
        conn,
        reused,
        req: req_id,
    }
}

/// The largest body returned whole with its head.
const WHOLE_BODY_MAX: usize = 64 * 1024;

/// The body, when it came whole with the head (and the request is written, and no
/// gzip is to be undone): no stream and no task. An empty one settles the connection
/// at once (Go: no body, nothing to wait for); otherwise the connection is held until
/// the host's `release` says whether the body was taken. Otherwise the connection and
/// the body's end come back for streaming.
fn whole_body(
    shared: &Shared,
    mut active: Active,
    end: BodyEnd,
) -> Result<Vec<u8>, (Active, BodyEnd)> {
    if end.unfinished_write.is_some() || end.gunzip.is_some() {
        return Err((active, end));
    }
    let Some((bytes, used)) =
        decode::BodyDecoder::whole(end.framing, active.conn().buffered(), WHOLE_BODY_MAX)
    else {
        return Err((active, end));
    };
    active.conn_mut().consume(used);
    let len = bytes.len() as u64;
    if len == 0 {
        body::settle(active, &end, 0, true);
    } else {
        let conn = active.conn().id;
        shared
            .held
            .borrow_mut()
            .insert(conn, Held { active, end, len });
    }
    Ok(bytes)
}

/// Starts the task that pumps the body to the caller.
fn stream_body(active: Active, end: BodyEnd) -> StreamedBody {
    let (body_tx, trailers_tx, sent_tx, streamed) = body::channels();
    super::tasks::spawn(pump_body(active, end, body_tx, trailers_tx, sent_tx));
    streamed
}
