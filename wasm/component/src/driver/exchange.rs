//! One round trip, whichever the protocol: check the request, pick the route, get a
//! connection (or a stream of one), run the exchange, and retry by Go's rules.
//!
//! ```text
//!  round_trip ─► check ─► checkout::acquire (idle | wait; dial task) ─┐
//!       ▲                                  ┌──────────────────────────┘
//!       │            HTTP/1.1: h1::exchange::attempt (write ∥ read head) ─► respond
//!       │            HTTP/2:   h2::exchange::round_trip (a stream; up to six retries)
//!       └── retry (core::reuse::can_retry) ◄── failure on a reused connection
//! ```
//!
//! Every decision (framing, reuse, retry) is the core's; this file only moves bytes and
//! reports what happened.

use std::pin::pin;
use std::rc::Rc;

use futures::channel::oneshot;
use futures::future::{Either, select};

use super::bindings::roundtrip::transport::observe::{CloseReason, EventKind, RequestSummary};
use super::bindings::roundtrip::transport::types::{
    ErrorCode, Request, RequestBody, RequestOption, Response,
};
use super::checkout::{self, Acquired};
use super::clock;
use super::errors::{message, to_code};
use super::h1::exchange::{attempt, respond};
use super::h2;
use super::request_body::Body;
use super::transport::{Settings, Shared};
use crate::core::compression::should_request_gzip;
use crate::core::decode::Fields;
use crate::core::encode::BodyFraming;
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

impl Checked {
    /// How the body goes on the wire, and whether the transport asks for gzip: what
    /// both protocols decide alike before a byte is written.
    pub fn framing(
        &self,
        body: &Body,
        settings: &Settings,
    ) -> Result<(BodyFraming, bool), ErrorCode> {
        let framing = body.framing(&self.method, &self.headers)?;
        let gzip = should_request_gzip(settings.disable_compression, &self.method, &self.headers);
        Ok((framing, gzip))
    }
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
    headers: Vec<u8>,
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
    let mut headers = Fields::from_block(headers).map_err(to_code)?;
    let route = shared.settings.proxies.route(&target).map_err(to_code)?;
    let target = target.through(route);
    if let Route::Forward(proxy) = &target.route
        && let Some(auth) = proxy.basic_auth()
        && !headers.contains("proxy-authorization")
    {
        headers.push("Proxy-Authorization", auth.as_bytes());
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
                let failed = match h2::exchange::round_trip(&shared, lease, &req, &mut body).await {
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
