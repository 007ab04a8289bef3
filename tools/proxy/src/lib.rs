//! `roundtrip proxy`: a forward HTTP proxy whose upstream side is the transport, so
//! any program pointed at it (`curl -x`, `HTTP_PROXY=…`, a browser) can be watched.
//!
//! ```text
//!  client ──HTTP/1.1──► ForwardProxy ──round_trip──► Transport (pool) ──► origin
//!         └─CONNECT──► tunnel: a TCP relay, byte for byte ──────────────► origin
//! ```
//!
//! The client side is served by hyper (keep-alive, request framing, `400` for
//! requests that do not parse). Each request in absolute form becomes one
//! `round_trip`, so upstream dials, reuse, idle and close are the pool's and show up
//! as its events. Hop-by-hop fields (RFC 9110 §7.6.1) are dropped both ways and a
//! `Via` is added. A `CONNECT` is relayed without looking inside (TLS stays end to
//! end); it has `tunnel_*` events of its own. Upstream failures answer `502`/`504`
//! with the transport's error text and an RFC 9209 `Proxy-Status` field.
//!
//! The app's side is reported too, so that what the app does with its connections
//! is seen apart from what the pool does upstream: `app_conn_open` when a client
//! connects (with the local process that owns the socket, [`owner`]), `app_request`
//! for each request when its answer has been relayed to its end, `app_conn_close`
//! when the connection ends; a tunnel carries the `app_conn` of the connection it
//! took over and reports `tunnel_activity` as bytes flow.

mod metrics;
mod mitm;
pub mod owner;

pub use metrics::MetricsServer;
pub use mitm::Mitm;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{CONNECTION, HeaderName, HeaderValue};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Either, Full};
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use roundtrip_host::egress::AllowList;
use roundtrip_host::events::{AppCloseReason, Event, EventKind};
use roundtrip_host::{Body, ConnectionInfo, Error, ErrorKind, ResponseBody, Transport};

/// What the proxy answers with: a relayed upstream body, or its own short text,
/// reported as an `app_request` when it has been sent to its end.
pub type ProxyBody = Metered<Answer>;

/// A relayed upstream body, or the proxy's own short text.
pub type Answer = Either<ResponseBody, Full<Bytes>>;

/// Receives one line per request or tunnel, like a proxy's access log.
pub type Log = Arc<dyn Fn(&str) + Send + Sync>;

/// Request bodies up to this size are read whole before sending, so a request that
/// meets a stale pooled connection can be retried; larger ones are streamed.
const BUFFERED_BODY: u64 = 1 << 20;

/// Fields that describe one hop and are never forwarded (RFC 9110 §7.6.1, plus the
/// non-standard `Proxy-Connection` and `Keep-Alive` that clients still send).
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "proxy-connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

#[derive(Clone)]
pub struct ProxyOptions {
    /// Limit for reaching a `CONNECT` target (the transport's own dials use its config).
    pub tunnel_dial_timeout: Duration,
    /// Access log; `None` logs nothing.
    pub log: Option<Log>,
    /// Where `CONNECT` tunnels may go (the transport checks its own dials).
    pub allow_hosts: Option<AllowList>,
    /// `--mitm`: a `CONNECT` is answered by the proxy's own TLS, with certificates
    /// from this CA, and the requests inside go through the pool (see [`Mitm`]).
    pub mitm: Option<Arc<Mitm>>,
}

impl Default for ProxyOptions {
    fn default() -> Self {
        Self {
            tunnel_dial_timeout: Duration::from_secs(30),
            log: None,
            allow_hosts: None,
            mitm: None,
        }
    }
}

/// A running proxy; it stops accepting when dropped.
pub struct ForwardProxy {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl ForwardProxy {
    /// Listens on `listen` (e.g. `127.0.0.1:3128`, port 0 for any free one) and serves
    /// clients until dropped. Must be called inside a tokio runtime.
    pub async fn start(
        listen: &str,
        transport: Transport,
        options: ProxyOptions,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            transport,
            options,
            next_tunnel: AtomicU64::new(0),
            next_app_conn: AtomicU64::new(0),
            last_owner: Mutex::new(None),
        });
        let task = tokio::spawn(accept_loop(listener, shared));
        Ok(Self { addr, task })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR`, the value for `HTTP_PROXY` or `curl -x`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for ForwardProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Shared {
    transport: Transport,
    options: ProxyOptions,
    next_tunnel: AtomicU64,
    next_app_conn: AtomicU64,
    /// The process that owned the last app connection: looked at first for the next.
    last_owner: Mutex<Option<u32>>,
}

impl Shared {
    fn log(&self, line: &str) {
        if let Some(log) = &self.options.log {
            log(line);
        }
    }

    /// Sends an event of app connection `app_conn` (with the other ids given).
    fn emit(&self, app_conn: u64, kind: EventKind, ids: Ids) {
        self.transport.emit_event(Event {
            ts_us: 0,
            kind,
            conn: ids.conn,
            req: ids.req,
            key: ids.key,
            tunnel: ids.tunnel,
            app_conn: Some(app_conn),
        });
    }

    /// The local process that owns the app's end of `socket`, if it is on this machine.
    async fn owner_of(&self, socket: &TcpStream, app: SocketAddr) -> Option<owner::Owner> {
        let proxy = socket.local_addr().ok()?;
        if !app.ip().is_loopback() && app.ip() != proxy.ip() {
            return None;
        }
        let first = self.last_owner.lock().ok().and_then(|last| *last);
        let found = tokio::task::spawn_blocking(move || owner::find(app, proxy, first))
            .await
            .ok()
            .flatten();
        if let (Some(found), Ok(mut last)) = (&found, self.last_owner.lock()) {
            *last = Some(found.pid);
        }
        found
    }
}

/// An app's connection to the proxy.
#[derive(Clone)]
struct App {
    id: u64,
    /// Whether anyone listens for its events (`app_*`), asked once when it connects.
    reporting: bool,
    /// Set once a `CONNECT` turned it into a tunnel: it then ends with the tunnel.
    tunneled: Arc<AtomicBool>,
}

/// The ids an event carries besides `app_conn`.
#[derive(Default)]
struct Ids {
    conn: Option<u64>,
    req: Option<u64>,
    key: Option<String>,
    tunnel: Option<u64>,
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        match listener.accept().await {
            Ok((socket, client)) => {
                tokio::spawn(serve_client(socket, client, Arc::clone(&shared)));
            }
            Err(e) => {
                // Out of file descriptors and the like: say so, back off, go on.
                shared.log(&format!("accept failed: {e}"));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// One client connection: hyper reads requests (answering `400` itself when one does
/// not parse) and calls `handle` for each.
async fn serve_client(socket: TcpStream, client: SocketAddr, shared: Arc<Shared>) {
    let _ = socket.set_nodelay(true);
    let app_conn = shared.next_app_conn.fetch_add(1, Ordering::Relaxed) + 1;
    let reporting = shared.transport.has_event_sinks();
    if reporting {
        let owner = shared.owner_of(&socket, client).await;
        shared.emit(
            app_conn,
            EventKind::AppConnOpen {
                peer: client.to_string(),
                pid: owner.as_ref().map(|o| o.pid),
                process: owner.map(|o| o.process),
            },
            Ids::default(),
        );
    }
    let app = App {
        id: app_conn,
        reporting,
        tunneled: Arc::new(AtomicBool::new(false)),
    };
    let service = {
        let shared = Arc::clone(&shared);
        let app = app.clone();
        service_fn(move |request| handle(Arc::clone(&shared), client, app.clone(), request))
    };
    let served = http1::Builder::new()
        .preserve_header_case(true)
        .serve_connection(TokioIo::new(socket), service)
        .with_upgrades()
        .await;
    let (reason, error) = ended(&shared, client, served);
    // A connection that became a tunnel ends with the tunnel (`tunnel_close`).
    if reporting && !app.tunneled.load(Ordering::Relaxed) {
        shared.emit(
            app_conn,
            EventKind::AppConnClose { reason, error },
            Ids::default(),
        );
    }
}

/// Who ended an app's connection, from how hyper's serving of it ended.
fn ended(
    shared: &Shared,
    client: SocketAddr,
    served: Result<(), hyper::Error>,
) -> (AppCloseReason, Option<String>) {
    match served {
        Ok(()) => (AppCloseReason::App, None),
        Err(e) if e.is_parse() || e.is_parse_too_large() || e.is_parse_status() => {
            shared.log(&format!(
                "{client} sent a request that does not parse ({e}): answered 400 and closed"
            ));
            (
                AppCloseReason::Proxy,
                Some(format!("a request that does not parse: {e}")),
            )
        }
        // The app closed between requests, or mid-request.
        Err(e) if e.is_incomplete_message() || e.is_closed() => {
            (AppCloseReason::App, Some(e.to_string()))
        }
        Err(e) => {
            shared.log(&format!("{client}: connection ended: {e}"));
            (AppCloseReason::Error, Some(e.to_string()))
        }
    }
}

async fn handle(
    shared: Arc<Shared>,
    client: SocketAddr,
    app: App,
    request: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    // The access line is only made when someone reads it.
    let line = shared
        .options
        .log
        .is_some()
        .then(|| format!("{client} \"{} {}\"", request.method(), request.uri()));
    if request.method() == Method::CONNECT {
        let response = tunnel(&shared, client, &app, request).await;
        if let Some(line) = line {
            shared.log(&format!("{line} {}", response.status().as_u16()));
        }
        return Ok(response.map(|body| Metered::reporting(body, None, None)));
    }
    Ok(exchange(&shared, &app, request, line).await)
}

/// One request in absolute form: through the transport, relayed back, reported.
async fn exchange(
    shared: &Arc<Shared>,
    app: &App,
    request: Request<Incoming>,
    line: Option<String>,
) -> Response<ProxyBody> {
    let mut report = app.reporting.then(|| Report::new(shared, app.id, &request));
    let sent = report.as_ref().map(|r| Arc::clone(&r.bytes_out));
    let response = forward(shared, request.map(|body| Metered::counting(body, sent))).await;
    if let Some(line) = line {
        let via = match response.extensions().get::<ConnectionInfo>() {
            Some(info) if info.reused => format!(" on connection #{} (reused)", info.id),
            Some(info) => format!(" on connection #{} (new)", info.id),
            None => String::new(),
        };
        shared.log(&format!("{line} {}{via}", response.status().as_u16()));
    }
    if let Some(report) = &mut report {
        report.answered(&response);
    }
    // Its length as the server declared it (a HEAD's says nothing of its empty body).
    let length = response
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    response.map(|body| Metered::reporting(body, report, length))
}

/// The transport's error, on an answer the proxy made because the round trip failed.
#[derive(Clone)]
struct UpstreamFailure(String);

/// What an `app_request` says, gathered while its request goes up and its answer
/// goes back to the app.
struct Report {
    shared: Arc<Shared>,
    app_conn: u64,
    method: String,
    url: String,
    started: Instant,
    /// Counted by the request body as it is read from the app.
    bytes_out: Arc<AtomicU64>,
    status: u16,
    info: Option<ConnectionInfo>,
    failure: Option<String>,
}

impl Report {
    fn new(shared: &Arc<Shared>, app_conn: u64, request: &Request<Incoming>) -> Self {
        Self {
            shared: Arc::clone(shared),
            app_conn,
            method: request.method().to_string(),
            url: request.uri().to_string(),
            started: Instant::now(),
            bytes_out: Arc::default(),
            status: 0,
            info: None,
            failure: None,
        }
    }

    /// Takes what the answer says: its status, the upstream exchange, a failure.
    fn answered(&mut self, response: &Response<Answer>) {
        self.status = response.status().as_u16();
        self.info = response.extensions().get::<ConnectionInfo>().copied();
        self.failure = response
            .extensions()
            .get::<UpstreamFailure>()
            .map(|f| f.0.clone());
    }

    fn send(self, bytes_in: u64, error: Option<String>) {
        let elapsed_us = u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.shared.emit(
            self.app_conn,
            EventKind::AppRequest {
                method: self.method,
                url: self.url,
                status: Some(self.status),
                bytes_in,
                bytes_out: self.bytes_out.load(Ordering::Relaxed),
                elapsed_us,
                error: self.failure.or(error),
            },
            Ids {
                conn: self.info.map(|i| i.id),
                req: self.info.map(|i| i.req),
                ..Ids::default()
            },
        );
    }
}

/// A body that counts the bytes passing through it (a request's, read from the app)
/// and, for an answer, reports its request (`app_request`) once it has gone to the
/// app to its end, failed, or been dropped before its end.
pub struct Metered<B: HttpBody> {
    inner: B,
    bytes: Option<Arc<AtomicU64>>,
    report: Option<Report>,
    /// The body's length when it is known from the start (`Content-Length`): hyper
    /// drops a body once it has sent that many bytes, without asking it for its end.
    length: Option<u64>,
}

impl<B: HttpBody> Metered<B> {
    fn counting(inner: B, bytes: Option<Arc<AtomicU64>>) -> Self {
        Self {
            inner,
            bytes,
            report: None,
            length: None,
        }
    }

    /// `declared`: the length the answer's head gives, when the body does not know it.
    fn reporting(inner: B, report: Option<Report>, declared: Option<u64>) -> Self {
        Self {
            length: inner.size_hint().exact().or(declared),
            inner,
            bytes: report.is_some().then(Arc::default),
            report,
        }
    }

    fn report(&mut self, error: Option<String>) {
        if let Some(report) = self.report.take() {
            let bytes = self.bytes.as_ref().map_or(0, |b| b.load(Ordering::Relaxed));
            report.send(bytes, error);
        }
    }
}

impl<B> HttpBody for Metered<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(data), Some(bytes)) = (frame.data_ref(), &self.bytes) {
                    bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
                }
            }
            Poll::Ready(Some(Err(e))) => {
                let error = format!("the response body failed: {e}");
                self.report(Some(error));
            }
            Poll::Ready(None) => self.report(None),
            Poll::Pending => {}
        }
        // hyper asks no more once the end is known: report then.
        if self.inner.is_end_stream() {
            self.report(None);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B: HttpBody> Drop for Metered<B> {
    fn drop(&mut self) {
        if self.report.is_some() {
            // An answer with no body (`HEAD`, 204, 304) is dropped unpolled, and whole;
            // one of known length, once that many bytes went to the app.
            let sent = self.bytes.as_ref().map(|b| b.load(Ordering::Relaxed));
            let whole =
                self.inner.is_end_stream() || (self.length.is_some() && self.length == sent);
            let error = (!whole).then(|| "the app was not sent the whole answer".to_owned());
            self.report(error);
        }
    }
}

/// Sends a request in absolute form through the transport and relays the response.
async fn forward(shared: &Shared, request: Request<Metered<Incoming>>) -> Response<Answer> {
    let (mut head, incoming) = request.into_parts();
    let scheme_ok = matches!(head.uri.scheme_str(), Some("http" | "https"));
    if !scheme_ok || head.uri.authority().is_none() {
        return text(
            StatusCode::BAD_REQUEST,
            &format!(
                "roundtrip proxy: the request target {:?} is not an absolute http:// URL. \
                 This is a forward proxy: send absolute URLs, e.g. `curl -x http://PROXY URL` \
                 or HTTP_PROXY=http://PROXY",
                head.uri.to_string()
            ),
        );
    }
    remove_hop_by_hop(&mut head.headers);
    head.headers.append(
        HeaderName::from_static("via"),
        HeaderValue::from_static("1.1 roundtrip"),
    );
    let body = match request_body(incoming).await {
        Ok(body) => body,
        Err(e) => {
            return text(
                StatusCode::BAD_REQUEST,
                &format!("roundtrip proxy: the request body could not be read: {e}"),
            );
        }
    };
    match shared
        .transport
        .round_trip(Request::from_parts(head, body))
        .await
    {
        Ok(response) => {
            let (mut head, body) = response.into_parts();
            remove_hop_by_hop(&mut head.headers);
            // Our own version, not the origin's (RFC 9110 §6.2): an HTTP/1.0 origin's
            // "HTTP/1.0 200" would tell the app to close its keep-alive connection.
            head.version = http::Version::HTTP_11;
            Response::from_parts(head, Either::Left(body))
        }
        Err(error) => upstream_failure(&error),
    }
}

/// Small bodies whole (replayable); large or unknown-length ones as a stream.
async fn request_body(incoming: Metered<Incoming>) -> Result<Body, hyper::Error> {
    match incoming.size_hint().exact() {
        Some(0) if incoming.is_end_stream() => Ok(Body::empty()),
        Some(len) if len <= BUFFERED_BODY => Ok(incoming.collect().await?.to_bytes().into()),
        // A client's body that fails half-way fails the upstream request too, so a
        // chunked one is never ended as if it were complete.
        _ => Ok(Body::wrap(incoming)),
    }
}

/// Drops the hop-by-hop fields, and any field the `Connection` header names.
fn remove_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(*name);
    }
}

/// The status and `Proxy-Status` (RFC 9209) for a failed round trip.
fn upstream_failure(error: &Error) -> Response<Answer> {
    use ErrorKind as K;
    let (status, proxy_error) = match error.kind {
        K::MethodInvalid
        | K::UriInvalid
        | K::HeaderInvalid
        | K::RequestBodyError
        | K::RequestBodySize => (StatusCode::BAD_REQUEST, "http_request_error"),
        K::DnsError => (StatusCode::BAD_GATEWAY, "dns_error"),
        K::ConnectionRefused => (StatusCode::BAD_GATEWAY, "connection_refused"),
        K::ConnectionTimeout => (StatusCode::GATEWAY_TIMEOUT, "connection_timeout"),
        K::ConnectionTerminated => (StatusCode::BAD_GATEWAY, "connection_terminated"),
        K::DestinationDenied => (StatusCode::FORBIDDEN, "destination_ip_prohibited"),
        K::TlsCertificateUnknownIssuer
        | K::TlsCertificateNameMismatch
        | K::TlsCertificateExpired
        | K::TlsCertificateError => (StatusCode::BAD_GATEWAY, "tls_certificate_error"),
        K::TlsAlertReceived => (StatusCode::BAD_GATEWAY, "tls_alert_received"),
        K::TlsProtocolError => (StatusCode::BAD_GATEWAY, "tls_protocol_error"),
        K::ResponseIncomplete => (StatusCode::BAD_GATEWAY, "http_response_incomplete"),
        K::ResponseHeaderSectionSize => {
            (StatusCode::BAD_GATEWAY, "http_response_header_section_size")
        }
        K::ResponseTransferCoding => (StatusCode::BAD_GATEWAY, "http_response_transfer_coding"),
        K::ResponseContentCoding => (StatusCode::BAD_GATEWAY, "http_response_content_coding"),
        K::ResponseTimeout | K::ReadTimeout | K::WriteTimeout | K::Timeout => {
            (StatusCode::GATEWAY_TIMEOUT, "http_response_timeout")
        }
        K::ProtocolError => (StatusCode::BAD_GATEWAY, "http_protocol_error"),
        K::TooManyRedirects => (StatusCode::BAD_GATEWAY, "http_request_denied"),
        K::ProxyRefused | K::ProxyProtocolError => {
            (StatusCode::BAD_GATEWAY, "proxy_internal_error")
        }
        K::ConnectionFailed
        | K::Canceled
        | K::Internal
        | K::Engine
        | K::Config
        | K::TransportRestarted => (StatusCode::BAD_GATEWAY, "proxy_internal_error"),
        K::Shutdown => (StatusCode::SERVICE_UNAVAILABLE, "proxy_internal_error"),
    };
    let mut response = text(status, &format!("roundtrip proxy: {error}"));
    response
        .extensions_mut()
        .insert(UpstreamFailure(error.to_string()));
    let details: String = error
        .message
        .chars()
        .filter(|c| c.is_ascii() && !c.is_ascii_control())
        .map(|c| if c == '"' { '\'' } else { c })
        .filter(|c| *c != '\\')
        .collect();
    if let Ok(value) = HeaderValue::from_str(&format!(
        "roundtrip; error={proxy_error}; details=\"{details}\""
    )) {
        response
            .headers_mut()
            .insert(HeaderName::from_static("proxy-status"), value);
    }
    response
}

/// A short `text/plain` answer from the proxy itself.
fn text(status: StatusCode, message: &str) -> Response<Answer> {
    let mut response = Response::new(Either::Right(Full::new(Bytes::from(format!(
        "{message}\n"
    )))));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// `CONNECT host:port`: dial the target, answer `200`, then relay bytes both ways
/// once hyper hands over the client's socket.
async fn tunnel(
    shared: &Arc<Shared>,
    client: SocketAddr,
    app: &App,
    request: Request<Incoming>,
) -> Response<Answer> {
    let app_conn = app.id;
    let Some(authority) = request.uri().authority().cloned() else {
        return text(
            StatusCode::BAD_REQUEST,
            "roundtrip proxy: CONNECT needs a target in the form host:port",
        );
    };
    if authority.port_u16().is_none() {
        return text(
            StatusCode::BAD_REQUEST,
            &format!("roundtrip proxy: CONNECT {authority}: the target has no port"),
        );
    }
    // Intercepted, it is no tunnel: the requests inside are the transport's (and
    // its allow-list applies to their dials).
    if let Some(mitm) = &shared.options.mitm {
        return intercept(shared, client, app, request, authority, mitm);
    }
    let id = shared.next_tunnel.fetch_add(1, Ordering::Relaxed) + 1;
    let key = Some(format!("connect://{authority}"));
    let ids = move || Ids {
        key: key.clone(),
        tunnel: Some(id),
        ..Ids::default()
    };
    let emit = |kind| shared.emit(app_conn, kind, ids());
    emit(EventKind::TunnelStart {
        addr: authority.to_string(),
    });
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let port = authority.port_u16().unwrap_or_default();
    if let Some(allow) = &shared.options.allow_hosts
        && !allow.allows(host, port)
    {
        let message = allow.refusal(host, port);
        emit(EventKind::TunnelDone {
            addr: None,
            error: Some(message.clone()),
        });
        return text(
            StatusCode::FORBIDDEN,
            &format!("roundtrip proxy: {message}"),
        );
    }
    let dialed = tokio::time::timeout(
        shared.options.tunnel_dial_timeout,
        TcpStream::connect(authority.as_str()),
    )
    .await;
    let upstream = match dialed {
        Ok(Ok(upstream)) => upstream,
        Ok(Err(e)) => {
            let message = format!("cannot reach {authority}: {e}");
            emit(EventKind::TunnelDone {
                addr: None,
                error: Some(message.clone()),
            });
            return text(
                StatusCode::BAD_GATEWAY,
                &format!("roundtrip proxy: {message}"),
            );
        }
        Err(_) => {
            let message = format!(
                "cannot reach {authority}: no answer within {:?}",
                shared.options.tunnel_dial_timeout
            );
            emit(EventKind::TunnelDone {
                addr: None,
                error: Some(message.clone()),
            });
            return text(
                StatusCode::GATEWAY_TIMEOUT,
                &format!("roundtrip proxy: {message}"),
            );
        }
    };
    let _ = upstream.set_nodelay(true);
    emit(EventKind::TunnelDone {
        addr: upstream.peer_addr().ok().map(|a| a.to_string()),
        error: None,
    });
    app.tunneled.store(true, Ordering::Relaxed);
    let shared = Arc::clone(shared);
    tokio::spawn(async move {
        let relayed = Relayed::default();
        let relay = async {
            if let Ok(upgraded) = hyper::upgrade::on(request).await {
                relay(TokioIo::new(upgraded), upstream, &relayed).await;
            }
        };
        let mut seen = (0, 0);
        let report = |seen: &mut (u64, u64)| {
            let now = relayed.totals();
            if now != *seen {
                shared.emit(
                    app_conn,
                    EventKind::TunnelActivity {
                        bytes_up: now.0 - seen.0,
                        bytes_down: now.1 - seen.1,
                    },
                    ids(),
                );
                *seen = now;
            }
        };
        tokio::pin!(relay);
        let mut tick = tokio::time::interval(ACTIVITY_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = &mut relay => break,
                _ = tick.tick() => report(&mut seen),
            }
        }
        report(&mut seen);
        let (bytes_up, bytes_down) = relayed.totals();
        shared.emit(
            app_conn,
            EventKind::TunnelClose {
                bytes_up,
                bytes_down,
            },
            ids(),
        );
        shared.emit(
            app_conn,
            EventKind::AppConnClose {
                reason: AppCloseReason::App,
                error: None,
            },
            Ids::default(),
        );
    });
    Response::new(Either::Right(Full::new(Bytes::new())))
}

/// How often a busy tunnel reports `tunnel_activity`.
const ACTIVITY_INTERVAL: Duration = Duration::from_millis(250);

/// Bytes a tunnel relayed so far: client→target, target→client.
#[derive(Default)]
struct Relayed {
    up: AtomicU64,
    down: AtomicU64,
}

impl Relayed {
    fn totals(&self) -> (u64, u64) {
        (
            self.up.load(Ordering::Relaxed),
            self.down.load(Ordering::Relaxed),
        )
    }
}

/// Copies both ways until both directions have ended, counting the bytes relayed
/// into `relayed` (counted even when a side fails).
async fn relay(
    client: impl tokio::io::AsyncRead + tokio::io::AsyncWrite,
    target: TcpStream,
    relayed: &Relayed,
) {
    let (client_read, client_write) = tokio::io::split(client);
    let (target_read, target_write) = target.into_split();
    tokio::join!(
        pump(client_read, target_write, &relayed.up),
        pump(target_read, client_write, &relayed.down)
    );
}

/// One direction of a relay; half-closes the writer at the reader's end.
async fn pump(
    mut from: impl tokio::io::AsyncRead + Unpin,
    mut to: impl tokio::io::AsyncWrite + Unpin,
    total: &AtomicU64,
) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).await.is_err() {
                    break;
                }
                total.fetch_add(n as u64, Ordering::Relaxed);
            }
        }
    }
    let _ = to.shutdown().await;
}

/// `--mitm`: answers the `CONNECT` itself, then speaks TLS to the app with a
/// certificate for the target from the MITM CA and serves the requests inside as
/// `https://` requests through the transport. The app's connection ends with it.
fn intercept(
    shared: &Arc<Shared>,
    client: SocketAddr,
    app: &App,
    request: Request<Incoming>,
    authority: http::uri::Authority,
    mitm: &Mitm,
) -> Response<Answer> {
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let config = match mitm.server_config(host) {
        Ok(config) => config,
        Err(e) => {
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("roundtrip proxy: {e}"),
            );
        }
    };
    app.tunneled.store(true, Ordering::Relaxed);
    let (shared, app) = (Arc::clone(shared), app.clone());
    tokio::spawn(async move {
        let (reason, error) = match hyper::upgrade::on(request).await {
            Err(e) => (AppCloseReason::Error, Some(e.to_string())),
            Ok(upgraded) => {
                let accepted = tokio_rustls::TlsAcceptor::from(config)
                    .accept(TokioIo::new(upgraded))
                    .await;
                match accepted {
                    Ok(tls) => {
                        let service = {
                            let (shared, app) = (Arc::clone(&shared), app.clone());
                            service_fn(move |request| {
                                inside(
                                    Arc::clone(&shared),
                                    client,
                                    app.clone(),
                                    authority.clone(),
                                    request,
                                )
                            })
                        };
                        let served = http1::Builder::new()
                            .preserve_header_case(true)
                            .serve_connection(TokioIo::new(tls), service)
                            .await;
                        ended(&shared, client, served)
                    }
                    Err(e) => {
                        let error = format!(
                            "the app's TLS handshake failed (does it trust the MITM CA?): {e}"
                        );
                        shared.log(&format!("{client}: {error}"));
                        (AppCloseReason::Error, Some(error))
                    }
                }
            }
        };
        if app.reporting {
            shared.emit(
                app.id,
                EventKind::AppConnClose { reason, error },
                Ids::default(),
            );
        }
    });
    Response::new(Either::Right(Full::new(Bytes::new())))
}

/// A request the app sent inside an intercepted `CONNECT` (origin form), sent on as
/// the `https://` request it is.
async fn inside(
    shared: Arc<Shared>,
    client: SocketAddr,
    app: App,
    authority: http::uri::Authority,
    mut request: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    let target = request
        .uri()
        .path_and_query()
        .map_or("/", http::uri::PathAndQuery::as_str);
    let origin = match authority.port_u16() {
        Some(443) => authority.host().to_owned(),
        _ => authority.to_string(),
    };
    match format!("https://{origin}{target}").parse() {
        Ok(uri) if request.method() != Method::CONNECT => *request.uri_mut() = uri,
        _ => {
            let answer = text(
                StatusCode::BAD_REQUEST,
                "roundtrip proxy: inside an intercepted CONNECT, send requests in origin form",
            );
            return Ok(answer.map(|body| Metered::reporting(body, None, None)));
        }
    }
    let line = shared
        .options
        .log
        .is_some()
        .then(|| format!("{client} \"{} {}\"", request.method(), request.uri()));
    Ok(exchange(&shared, &app, request, line).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_fields_and_those_connection_names_are_dropped() {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("connection", "keep-alive, x-hop"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("proxy-authorization", "Basic Zm9vOmJhcg=="),
            ("transfer-encoding", "chunked"),
            ("te", "trailers"),
            ("upgrade", "websocket"),
            ("x-hop", "1"),
            ("accept", "*/*"),
            ("content-length", "3"),
        ] {
            headers.append(name, HeaderValue::from_static(value));
        }
        remove_hop_by_hop(&mut headers);
        let mut left: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(left, ["accept", "content-length"]);
    }

    #[test]
    fn failures_map_to_gateway_statuses_with_proxy_status() {
        let refused = upstream_failure(&Error::new(
            ErrorKind::ConnectionRefused,
            "dial tcp 127.0.0.1:9: connect: connection refused",
        ));
        assert_eq!(refused.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(
            refused.headers()["proxy-status"],
            "roundtrip; error=connection_refused; details=\"dial tcp 127.0.0.1:9: connect: connection refused\""
        );
        let slow = upstream_failure(&Error::new(ErrorKind::ResponseTimeout, "timeout \"x\""));
        assert_eq!(slow.status(), StatusCode::GATEWAY_TIMEOUT);
        assert!(
            slow.headers()["proxy-status"]
                .to_str()
                .is_ok_and(|v| v.ends_with("details=\"timeout 'x'\""))
        );
    }
}
