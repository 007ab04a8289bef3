//! (feature `hooks`) wasmtime-wasi-http's [`WasiHttpHooks`] backed by one shared
//! [`Transport`]: every guest's outgoing requests — wasi:http 0.2's
//! `outgoing-handler.handle` and 0.3's `client.send` alike — go through one pool with
//! Go's rules, in place of wasmtime's default client (a new connection per request).
//!
//! ```no_run
//! # fn demo() -> Result<(), roundtrip_host::Error> {
//! use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};
//! // Once per host: one transport, one pool, shared by every store.
//! let transport = roundtrip_host::Transport::new(roundtrip_host::Config::default())?;
//! // Per store: the hooks hold a clone.
//! struct MyState { http: WasiHttpCtx, table: wasmtime::component::ResourceTable,
//!                  hooks: roundtrip_host::hooks::Hooks }
//! impl WasiHttpView for MyState {
//!     fn http(&mut self) -> WasiHttpCtxView<'_> {
//!         WasiHttpCtxView { ctx: &mut self.http, table: &mut self.table, hooks: &mut self.hooks }
//!     }
//! }
//! let state = MyState { http: WasiHttpCtx::new(), table: Default::default(),
//!                       hooks: roundtrip_host::hooks::Hooks::new(transport.clone()) };
//! # Ok(()) }
//! ```
//!
//! What a guest sees is what wasmtime's own client gives it: the same `error-code`s
//! (`connection-refused`, `connection-timeout`, `TLS-certificate-error`, …), the
//! response body streamed with its trailers, `request-options`' three timeouts, and
//! the request's transmit future carrying how writing the request really ended.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use http::Method;
use http_body_util::BodyExt;
use wasmtime_wasi_http::{WasiBody, WasiHttpHooks};

use crate::body::{Body, RequestOptions};
use crate::error::{Error, ErrorKind};
use crate::events::{Event, EventKind};
use crate::transport::{ConnectionInfo, RequestSent, Transport};

/// What wasmtime-wasi-http calls the hooks' failures and body errors.
pub type WasiError = wasmtime_wasi_http::Error;

type IoFuture = Box<dyn Future<Output = Result<(), WasiError>> + Send>;
type SendFuture =
    Box<dyn Future<Output = Result<(http::Response<WasiBody>, IoFuture), WasiError>> + Send>;

/// The hooks of one store: a clone of the shared [`Transport`], and (for
/// `roundtrip serve`) what to label the store's requests with in the events.
#[derive(Clone)]
pub struct Hooks {
    transport: Transport,
    caller: Option<Arc<dyn Caller>>,
}

/// Who sends a store's requests, for the `outgoing` event (`roundtrip serve`: the
/// instance, and the incoming request it is handling when that is one).
pub trait Caller: Send + Sync {
    /// The instance's id.
    fn instance(&self) -> u64;
    /// The incoming request the next outgoing one belongs to, when it is known.
    fn incoming(&self) -> Option<u64>;
}

impl Hooks {
    /// Hooks sending through `transport` (a clone: the pool stays shared).
    pub fn new(transport: Transport) -> Self {
        Self {
            transport,
            caller: None,
        }
    }

    /// The same, each request reported in an `outgoing` event naming `caller`.
    pub fn with_caller(transport: Transport, caller: Arc<dyn Caller>) -> Self {
        Self {
            transport,
            caller: Some(caller),
        }
    }

    /// The transport the hooks send through.
    pub fn transport(&self) -> &Transport {
        &self.transport
    }
}

impl WasiHttpHooks for Hooks {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<wasmtime_wasi_http::RequestOptions>,
        // The guest's verdict on the response body: nothing here waits for it (the
        // transport knows how the body ended from reading it).
        _response_result: IoFuture,
    ) -> SendFuture {
        let transport = self.transport.clone();
        let report = self
            .caller
            .as_ref()
            .filter(|_| transport.has_event_sinks())
            .map(|caller| Outgoing::start(caller.as_ref(), &request));
        let failure = BodyFailure::default();
        let request = into_request(request, options, &failure);
        Box::new(async move {
            let outcome = transport.round_trip(request).await;
            if let Some(report) = report {
                report.emit(&transport, &outcome);
            }
            let mut response = outcome.map_err(|e| failure.to_wasi(&e))?;
            let sent = response.extensions_mut().remove::<RequestSent>();
            let body_failure = failure.clone();
            let response = response.map(|body| {
                body.map_err(move |e| body_failure.to_wasi(&e))
                    .boxed_unsync()
            });
            Ok((response, io_future(sent, failure)))
        })
    }
}

/// The guest's request as the transport's: its body streamed with trailers (or
/// none), its `request-options` as [`RequestOptions`].
fn into_request(
    request: http::Request<WasiBody>,
    options: Option<wasmtime_wasi_http::RequestOptions>,
    failure: &BodyFailure,
) -> http::Request<Body> {
    let (mut parts, body) = request.into_parts();
    if let Some(options) = options {
        parts.extensions.insert(RequestOptions {
            connect_timeout: options.connect_timeout,
            first_byte_timeout: options.first_byte_timeout,
            between_bytes_timeout: options.between_bytes_timeout,
        });
    }
    // As wasmtime's own client (hyper) sends them: a `GET`, `HEAD` or `CONNECT` body
    // of unknown length is none at all, not an empty chunked one (a guest that ends
    // its body only after `send` returns would otherwise wait on a server that reads
    // the body before it answers).
    let unframed = matches!(parts.method, Method::GET | Method::HEAD | Method::CONNECT)
        && !parts.headers.contains_key(http::header::CONTENT_LENGTH);
    let body = if unframed || http_body::Body::is_end_stream(&body) {
        Body::empty()
    } else {
        let failure = failure.clone();
        Body::wrap(body.map_err(move |e| failure.keep(e)))
    };
    http::Request::from_parts(parts, body)
}

/// How writing the request ended: ready at once when it ended before the head came
/// (wasmtime then spawns nothing), else when the transport says.
fn io_future(sent: Option<RequestSent>, failure: BodyFailure) -> IoFuture {
    match sent {
        None => Box::new(std::future::ready(Ok(()))),
        Some(sent) => Box::new(async move { sent.await.map_err(|e| failure.to_wasi(&e)) }),
    }
}

/// The error the guest's request body ended with (its own `error-code`, or
/// wasmtime's `HTTP-request-body-size` for a body that broke its `Content-Length`),
/// kept so that the request, its response body and its transmit future fail with that
/// code, as they do with wasmtime's own client, not with the transport's account of it.
#[derive(Clone, Default)]
struct BodyFailure(Arc<Mutex<Option<WasiError>>>);

impl BodyFailure {
    /// Keeps `error`; the transport gets its text.
    fn keep(&self, error: WasiError) -> crate::BoxError {
        let text = error.to_string();
        if let Ok(mut kept) = self.0.lock() {
            kept.get_or_insert(error);
        }
        text.into()
    }

    /// `error` as the guest should see it: the body's own error when that is what
    /// failed the request.
    fn to_wasi(&self, error: &Error) -> WasiError {
        if matches!(
            error.kind,
            ErrorKind::RequestBodyError | ErrorKind::RequestBodySize
        ) && let Some(kept) = self
            .0
            .lock()
            .ok()
            .and_then(|kept| kept.as_ref().map(duplicate))
        {
            return kept;
        }
        to_wasi(error)
    }
}

/// A copy of `error` (the type has no `Clone`): its code and details; an I/O error
/// only by its text.
fn duplicate(error: &WasiError) -> WasiError {
    use WasiError as W;
    match error {
        W::HttpRequestBodySize(size) => W::HttpRequestBodySize(*size),
        W::DnsTimeout => W::DnsTimeout,
        W::DnsError { rcode, info_code } => W::DnsError {
            rcode: rcode.clone(),
            info_code: *info_code,
        },
        W::DestinationNotFound => W::DestinationNotFound,
        W::DestinationUnavailable => W::DestinationUnavailable,
        W::DestinationIpProhibited => W::DestinationIpProhibited,
        W::DestinationIpUnroutable => W::DestinationIpUnroutable,
        W::ConnectionRefused => W::ConnectionRefused,
        W::ConnectionTerminated => W::ConnectionTerminated,
        W::ConnectionTimeout => W::ConnectionTimeout,
        W::ConnectionReadTimeout => W::ConnectionReadTimeout,
        W::ConnectionWriteTimeout => W::ConnectionWriteTimeout,
        W::ConnectionLimitReached => W::ConnectionLimitReached,
        W::TlsProtocolError => W::TlsProtocolError,
        W::TlsCertificateError => W::TlsCertificateError,
        W::TlsAlertReceived {
            alert_id,
            alert_message,
        } => W::TlsAlertReceived {
            alert_id: *alert_id,
            alert_message: alert_message.clone(),
        },
        W::HttpRequestDenied => W::HttpRequestDenied,
        W::HttpRequestLengthRequired => W::HttpRequestLengthRequired,
        W::HttpRequestMethodInvalid => W::HttpRequestMethodInvalid,
        W::HttpRequestUriInvalid => W::HttpRequestUriInvalid,
        W::HttpRequestUriTooLong => W::HttpRequestUriTooLong,
        W::HttpRequestHeaderSectionSize(size) => W::HttpRequestHeaderSectionSize(*size),
        W::HttpRequestHeaderSize {
            field_name,
            field_size,
        } => W::HttpRequestHeaderSize {
            field_name: field_name.clone(),
            field_size: *field_size,
        },
        W::HttpRequestTrailerSectionSize(size) => W::HttpRequestTrailerSectionSize(*size),
        W::HttpRequestTrailerSize {
            field_name,
            field_size,
        } => W::HttpRequestTrailerSize {
            field_name: field_name.clone(),
            field_size: *field_size,
        },
        W::HttpResponseIncomplete => W::HttpResponseIncomplete,
        W::HttpResponseHeaderSectionSize(size) => W::HttpResponseHeaderSectionSize(*size),
        W::HttpResponseHeaderSize {
            field_name,
            field_size,
        } => W::HttpResponseHeaderSize {
            field_name: field_name.clone(),
            field_size: *field_size,
        },
        W::HttpResponseBodySize(size) => W::HttpResponseBodySize(*size),
        W::HttpResponseTrailerSectionSize(size) => W::HttpResponseTrailerSectionSize(*size),
        W::HttpResponseTrailerSize {
            field_name,
            field_size,
        } => W::HttpResponseTrailerSize {
            field_name: field_name.clone(),
            field_size: *field_size,
        },
        W::HttpResponseTransferCoding(coding) => W::HttpResponseTransferCoding(coding.clone()),
        W::HttpResponseContentCoding(coding) => W::HttpResponseContentCoding(coding.clone()),
        W::HttpResponseTimeout => W::HttpResponseTimeout,
        W::HttpUpgradeFailed => W::HttpUpgradeFailed,
        W::HttpProtocolError => W::HttpProtocolError,
        W::LoopDetected => W::LoopDetected,
        W::ConfigurationError => W::ConfigurationError,
        W::InternalError(message) => W::InternalError(message.clone()),
        other => W::InternalError(Some(other.to_string())),
    }
}

/// The transport's error as the code wasmtime's own client gives for the same
/// failure; where wasi:http has no words for it, the message travels in
/// `internal-error`.
pub fn to_wasi(error: &Error) -> WasiError {
    use ErrorKind as K;
    use WasiError as W;
    let message = || Some(error.message.clone());
    match error.kind {
        K::DnsError => W::DnsError {
            rcode: message(),
            info_code: None,
        },
        K::ConnectionRefused => W::ConnectionRefused,
        K::ConnectionTimeout => W::ConnectionTimeout,
        K::ConnectionTerminated => W::ConnectionTerminated,
        K::DestinationDenied => W::DestinationIpProhibited,
        K::TlsCertificateUnknownIssuer
        | K::TlsCertificateNameMismatch
        | K::TlsCertificateExpired
        | K::TlsCertificateError => W::TlsCertificateError,
        K::TlsAlertReceived => W::TlsAlertReceived {
            alert_id: None,
            alert_message: message(),
        },
        K::TlsProtocolError => W::TlsProtocolError,
        K::MethodInvalid => W::HttpRequestMethodInvalid,
        K::UriInvalid => W::HttpRequestUriInvalid,
        K::RequestBodySize => W::HttpRequestBodySize(error.body_size),
        K::ResponseIncomplete => W::HttpResponseIncomplete,
        K::ResponseHeaderSectionSize => W::HttpResponseHeaderSectionSize(None),
        K::ResponseTransferCoding => W::HttpResponseTransferCoding(message()),
        K::ResponseContentCoding => W::HttpResponseContentCoding(message()),
        K::ProtocolError => W::HttpProtocolError,
        K::ResponseTimeout => W::HttpResponseTimeout,
        K::ReadTimeout => W::ConnectionReadTimeout,
        // A Client's; the wasi:http face is a bare transport and never sees them.
        K::Timeout => W::HttpResponseTimeout,
        K::TooManyRedirects => W::LoopDetected,
        K::WriteTimeout => W::ConnectionWriteTimeout,
        K::Config => W::ConfigurationError,
        K::ConnectionFailed
        | K::HeaderInvalid
        | K::RequestBodyError
        | K::ProxyRefused
        | K::ProxyProtocolError
        | K::Canceled
        | K::Internal
        | K::Engine
        | K::Shutdown
        | K::TransportRestarted => W::InternalError(message()),
    }
}

/// One outgoing request's `outgoing` event, sent when its head came or it failed.
struct Outgoing {
    instance: u64,
    incoming: Option<u64>,
    method: String,
    url: String,
    started: Instant,
}

impl Outgoing {
    fn start(caller: &dyn Caller, request: &http::Request<WasiBody>) -> Self {
        Self {
            instance: caller.instance(),
            incoming: caller.incoming(),
            method: request.method().as_str().to_owned(),
            url: request.uri().to_string(),
            started: Instant::now(),
        }
    }

    fn emit(
        self,
        transport: &Transport,
        outcome: &Result<http::Response<crate::ResponseBody>, Error>,
    ) {
        let info = outcome
            .as_ref()
            .ok()
            .and_then(|r| r.extensions().get::<ConnectionInfo>());
        transport.emit_event(Event {
            ts_us: 0,
            kind: EventKind::Outgoing {
                instance: self.instance,
                incoming: self.incoming,
                method: self.method,
                url: self.url,
                status: outcome.as_ref().ok().map(|r| r.status().as_u16()),
                error: outcome.as_ref().err().map(|e| e.message.clone()),
                elapsed_us: self.started.elapsed().as_micros() as u64,
            },
            conn: info.map(|i| i.id),
            req: info.map(|i| i.req),
            key: None,
            tunnel: None,
            app_conn: None,
        });
    }
}
