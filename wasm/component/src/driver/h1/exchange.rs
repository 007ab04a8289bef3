//! HTTP/1.1's part of a round trip on a connection of its own: write the request while
//! reading the response head, then return the body whole or hand it to a task that
//! pumps it to the caller.
//!
//! ```text
//!          ┌─ send::write_request (head, [100-continue], body)
//!  attempt ┤          concurrently, like Go's writeLoop/readLoop
//!          └─ read_head (skips 1xx; an early final answer wins)
//!  head ─► respond: the whole body came with it? ─► returned inline, connection held
//!          otherwise spawn body::pump_body ─► response returned to the caller
//!          (with the write, if it has not finished: the body keeps going out)
//! ```

use std::pin::pin;
use std::rc::Rc;

use futures::channel::oneshot;
use futures::future::{Either, select};

use super::active::Active;
use super::body::{self, BodyEnd, pump_body};
use super::send::{Continue, write_request};
use crate::core::compression::{Gunzip, decompressed_headers, is_gzipped};
use crate::core::decode::{self, Fields, Framing, ResponseHead};
use crate::core::encode::{self, RequestHead};
use crate::core::reuse::{self, Progress};
use crate::driver::bindings::roundtrip::transport::observe::EventKind;
use crate::driver::bindings::roundtrip::transport::types::{
    ErrorCode, HttpVersion, Response, ResponseBody, StreamedBody,
};
use crate::driver::clock;
use crate::driver::conn::Reader;
use crate::driver::errors::to_code;
use crate::driver::exchange::{Checked, Emitter, Failed, first_byte_timeout};
use crate::driver::request_body::{Body, PendingWrite, WriteError};
use crate::driver::response_body::{self, WHOLE_BODY_MAX};
use crate::driver::transport::{Held, Shared};

/// A response head, the request's write if it had not finished when the head came,
/// and whether the transport asked for gzip.
pub struct Answered {
    head: ResponseHead,
    unfinished_write: Option<PendingWrite>,
    accept_gzip: bool,
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
pub async fn attempt(
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
    let (framing, accept_gzip) = req
        .framing(body, settings)
        .map_err(Failed::at(Progress::NothingWritten))?;
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
pub fn respond(
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
        decompressed_headers(headers)
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
        drain_on_close: !shared.settings.disable_drain_on_close,
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
        headers: headers.into_block(),
        body,
        conn,
        reused,
        req: req_id,
    }
}

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
    let (body_tx, trailers_tx, sent_tx, streamed) = response_body::channels();
    crate::driver::tasks::spawn(pump_body(active, end, body_tx, trailers_tx, sent_tx));
    streamed
}
