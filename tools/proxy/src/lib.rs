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

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONNECTION, HeaderName, HeaderValue};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Either, Full};
use hyper::body::{Body as _, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use roundtrip_host::egress::AllowList;
use roundtrip_host::events::EventKind;
use roundtrip_host::{Body, ConnectionInfo, Error, ErrorKind, ResponseBody, Transport};

/// What the proxy answers with: a relayed upstream body, or its own short text.
pub type ProxyBody = Either<ResponseBody, Full<Bytes>>;

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
}

impl Default for ProxyOptions {
    fn default() -> Self {
        Self {
            tunnel_dial_timeout: Duration::from_secs(30),
            log: None,
            allow_hosts: None,
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
}

impl Shared {
    fn log(&self, line: &str) {
        if let Some(log) = &self.options.log {
            log(line);
        }
    }
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
    let service = {
        let shared = Arc::clone(&shared);
        service_fn(move |request| handle(Arc::clone(&shared), client, request))
    };
    let served = http1::Builder::new()
        .preserve_header_case(true)
        .serve_connection(TokioIo::new(socket), service)
        .with_upgrades()
        .await;
    if let Err(e) = served {
        if e.is_parse() || e.is_parse_too_large() || e.is_parse_status() {
            shared.log(&format!(
                "{client} sent a request that does not parse ({e}): answered 400 and closed"
            ));
        } else if !e.is_incomplete_message() && !e.is_closed() {
            shared.log(&format!("{client}: connection ended: {e}"));
        }
    }
}

async fn handle(
    shared: Arc<Shared>,
    client: SocketAddr,
    request: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    // The access line is only made when someone reads it.
    let line = shared
        .options
        .log
        .is_some()
        .then(|| format!("{client} \"{} {}\"", request.method(), request.uri()));
    let response = if request.method() == Method::CONNECT {
        tunnel(&shared, request).await
    } else {
        forward(&shared, request).await
    };
    if let Some(line) = line {
        let via = match response.extensions().get::<ConnectionInfo>() {
            Some(info) if info.reused => format!(" on connection #{} (reused)", info.id),
            Some(info) => format!(" on connection #{} (new)", info.id),
            None => String::new(),
        };
        shared.log(&format!("{line} {}{via}", response.status().as_u16()));
    }
    Ok(response)
}

/// Sends a request in absolute form through the transport and relays the response.
async fn forward(shared: &Shared, request: Request<Incoming>) -> Response<ProxyBody> {
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
            Response::from_parts(head, Either::Left(body))
        }
        Err(error) => upstream_failure(&error),
    }
}

/// Small bodies whole (replayable); large or unknown-length ones as a stream.
async fn request_body(incoming: Incoming) -> Result<Body, hyper::Error> {
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
fn upstream_failure(error: &Error) -> Response<ProxyBody> {
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
        K::ResponseTimeout | K::ReadTimeout => {
            (StatusCode::GATEWAY_TIMEOUT, "http_response_timeout")
        }
        K::ProtocolError => (StatusCode::BAD_GATEWAY, "http_protocol_error"),
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
fn text(status: StatusCode, message: &str) -> Response<ProxyBody> {
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
async fn tunnel(shared: &Arc<Shared>, request: Request<Incoming>) -> Response<ProxyBody> {
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
    let id = shared.next_tunnel.fetch_add(1, Ordering::Relaxed) + 1;
    let key = Some(format!("connect://{authority}"));
    let emit = |kind| shared.transport.emit(kind, key.clone(), Some(id));
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
    let shared = Arc::clone(shared);
    tokio::spawn(async move {
        let (bytes_up, bytes_down) = match hyper::upgrade::on(request).await {
            Ok(upgraded) => relay(TokioIo::new(upgraded), upstream).await,
            Err(_) => (0, 0),
        };
        shared.transport.emit(
            EventKind::TunnelClose {
                bytes_up,
                bytes_down,
            },
            key,
            Some(id),
        );
    });
    Response::new(Either::Right(Full::new(Bytes::new())))
}

/// Copies both ways until both directions have ended; returns the bytes relayed
/// client→target and target→client (counted even when a side fails).
async fn relay(
    client: impl tokio::io::AsyncRead + tokio::io::AsyncWrite,
    target: TcpStream,
) -> (u64, u64) {
    let (client_read, client_write) = tokio::io::split(client);
    let (target_read, target_write) = target.into_split();
    tokio::join!(
        pump(client_read, target_write),
        pump(target_read, client_write)
    )
}

/// One direction of a relay; half-closes the writer at the reader's end.
async fn pump(
    mut from: impl tokio::io::AsyncRead + Unpin,
    mut to: impl tokio::io::AsyncWrite + Unpin,
) -> u64 {
    let mut buf = vec![0u8; 32 * 1024];
    let mut total = 0;
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).await.is_err() {
                    break;
                }
                total += n as u64;
            }
        }
    }
    let _ = to.shutdown().await;
    total
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
