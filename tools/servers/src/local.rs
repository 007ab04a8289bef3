//! A small HTTP/1.1 origin server on a loopback port, for `roundtrip demo` and the
//! end-to-end tests. It speaks real HTTP over real sockets and counts the
//! connections it accepts, so a caller can check reuse from the server's side too.
//!
//! Routes (`N` is a byte count):
//! - `/small` — `hello, world\n` with `Content-Length`
//! - `/bytes/N` — N pseudo-random bytes ([`body_bytes`]) with `Content-Length`
//! - `/chunked/N` — the same bytes, chunked, with a trailer `X-Body-Len: N`
//! - `/until-close/N` — the same bytes, no length: the server closes to end them
//! - `/close/N` — N bytes with `Content-Length` and `Connection: close`
//! - `/echo` — the request body back (request framed by length or chunked)
//! - `/head-only` — `204 No Content`
//! - `/continue` — a `103 Early Hints` then `200`
//! - `/delay/MS` — `/small` after MS milliseconds
//! - `/gzip/N` — the N bytes gzip-compressed when the request accepts gzip, else plain
//! - `/request-head` — the request head as the server received it
//! - `/linger/MS` — `/small`, then the server closes the connection if it stays
//!   idle for MS milliseconds (a server-side keep-alive timeout)
//! - `/once` — `/small`, then the next request on the connection is read and the
//!   connection closed without an answer (the race a client must retry)
//!
//! [`LocalServer::start_tls`] serves the same routes over HTTPS.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// Counters a test or demo can read while the server runs.
#[derive(Debug, Default)]
pub struct Counters {
    pub connections: AtomicU64,
    pub requests: AtomicU64,
}

/// What the server's connections are read and written through: TCP, or TLS over it.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<S: AsyncRead + AsyncWrite + Unpin + Send> Stream for S {}

/// A running server; it stops when dropped.
pub struct LocalServer {
    addr: SocketAddr,
    scheme: &'static str,
    counters: Arc<Counters>,
    task: tokio::task::JoinHandle<()>,
}

/// HTTPS for a [`LocalServer`]: a CA made on the spot and a certificate it signed for
/// `127.0.0.1` and `localhost`. Trust [`ServerTls::ca_cert`] in the client.
pub struct ServerTls {
    pub ca_cert: CertificateDer<'static>,
    /// The same CA, the server's certificate (for `127.0.0.1` and `localhost`) and its
    /// key, as PEM: for another server (e.g. nginx) and for clients.
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
    config: Arc<rustls::ServerConfig>,
}

impl ServerTls {
    /// The server side's rustls configuration (ALPN `http/1.1`).
    pub fn config(&self) -> Arc<rustls::ServerConfig> {
        Arc::clone(&self.config)
    }

    pub fn generate() -> Result<Self, String> {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
        let failed = |e: rcgen::Error| format!("cannot make a test certificate: {e}");
        let ca_key = KeyPair::generate().map_err(failed)?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(failed)?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "Roundtrip local CA");
        let ca = ca_params.self_signed(&ca_key).map_err(failed)?;
        let key = KeyPair::generate().map_err(failed)?;
        let names = vec!["127.0.0.1".to_owned(), "localhost".to_owned()];
        let cert = CertificateParams::new(names)
            .map_err(failed)?
            .signed_by(&key, &ca, &ca_key)
            .map_err(failed)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            )
            .map_err(|e| e.to_string())?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            ca_cert: ca.der().clone(),
            ca_pem: ca.pem(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            config: Arc::new(config),
        })
    }
}

impl LocalServer {
    /// Starts on a free port of 127.0.0.1. Must be called inside a tokio runtime.
    pub async fn start() -> std::io::Result<Self> {
        Self::bind(None).await
    }

    /// Starts an HTTPS server; each TLS handshake first waits `handshake_delay` (a
    /// far-away server, where opening a connection is slow).
    pub async fn start_tls(tls: &ServerTls, handshake_delay: Duration) -> std::io::Result<Self> {
        let acceptor = TlsAcceptor::from(Arc::clone(&tls.config));
        Self::bind(Some((acceptor, handshake_delay))).await
    }

    async fn bind(tls: Option<(TlsAcceptor, Duration)>) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let counters = Arc::new(Counters::default());
        let scheme = if tls.is_some() { "https" } else { "http" };
        let task = tokio::spawn(accept_loop(listener, Arc::clone(&counters), tls));
        Ok(Self {
            addr,
            scheme,
            counters,
            task,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT` (or `https://`) followed by `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}://{}{path}", self.scheme, self.addr)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.counters.connections.load(Ordering::SeqCst)
    }

    /// Requests answered so far.
    pub fn requests(&self) -> u64 {
        self.counters.requests.load(Ordering::SeqCst)
    }
}

impl Drop for LocalServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The deterministic pseudo-random body the `/bytes`, `/chunked` and `/until-close`
/// routes serve: a caller can rebuild it to check every byte arrived intact.
pub fn body_bytes(len: usize) -> Vec<u8> {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15 ^ len as u64;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

async fn accept_loop(
    listener: TcpListener,
    counters: Arc<Counters>,
    tls: Option<(TlsAcceptor, Duration)>,
) {
    loop {
        let Ok((socket, _)) = listener.accept().await else {
            continue;
        };
        let _ = socket.set_nodelay(true);
        counters.connections.fetch_add(1, Ordering::SeqCst);
        let counters = Arc::clone(&counters);
        match &tls {
            None => {
                tokio::spawn(serve_connection(socket, counters));
            }
            Some((acceptor, delay)) => {
                let (acceptor, delay) = (acceptor.clone(), *delay);
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    if let Ok(tls) = acceptor.accept(socket).await {
                        serve_connection(tls, counters).await;
                    }
                });
            }
        }
    }
}

/// A parsed request head.
struct RequestHead {
    method: String,
    path: String,
    /// The head as received, for `/request-head`.
    raw: Vec<u8>,
    accepts_gzip: bool,
    content_length: Option<usize>,
    chunked: bool,
    close: bool,
}

/// What the server does with a connection after a response.
enum After {
    KeepOpen,
    Close,
    /// Close it if no request arrives within this long (a server's keep-alive timeout).
    CloseWhenIdleFor(Duration),
    /// Read the next request, then close without answering it (a server that timed
    /// the connection out just as the request arrived).
    DropNextRequest,
}

async fn serve_connection<S: Stream>(mut socket: S, counters: Arc<Counters>) {
    let mut buf: Vec<u8> = Vec::with_capacity(8192);
    let mut after = After::KeepOpen;
    loop {
        let next = match after {
            After::CloseWhenIdleFor(limit) => {
                // Silent for `limit`: the server's keep-alive timeout closes it.
                tokio::time::timeout(limit, read_head(&mut socket, &mut buf))
                    .await
                    .unwrap_or_default()
            }
            _ => read_head(&mut socket, &mut buf).await,
        };
        let Some((head, consumed)) = next else {
            let _ = socket.shutdown().await;
            return;
        };
        if matches!(after, After::DropNextRequest) {
            let _ = socket.shutdown().await;
            return;
        }
        buf.drain(..consumed);
        let Some(body) = read_body(&mut socket, &mut buf, &head).await else {
            return;
        };
        counters.requests.fetch_add(1, Ordering::SeqCst);
        after = respond(&mut socket, &head, body).await;
        if matches!(after, After::Close) || head.close {
            let _ = socket.shutdown().await;
            return;
        }
    }
}

async fn read_more<S: Stream>(socket: &mut S, buf: &mut Vec<u8>) -> Option<()> {
    let mut chunk = [0u8; 16 * 1024];
    match socket.read(&mut chunk).await {
        Ok(0) | Err(_) => None,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            Some(())
        }
    }
}

async fn read_head<S: Stream>(socket: &mut S, buf: &mut Vec<u8>) -> Option<(RequestHead, usize)> {
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut request = httparse::Request::new(&mut headers);
        match request.parse(buf) {
            Ok(httparse::Status::Complete(consumed)) => {
                let header = |name: &str| {
                    request
                        .headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case(name))
                        .map(|h| String::from_utf8_lossy(h.value).to_ascii_lowercase())
                };
                let head = RequestHead {
                    method: request.method.unwrap_or("GET").to_owned(),
                    path: request.path.unwrap_or("/").to_owned(),
                    raw: buf[..consumed].to_vec(),
                    accepts_gzip: header("accept-encoding").is_some_and(|v| v.contains("gzip")),
                    content_length: header("content-length").and_then(|v| v.trim().parse().ok()),
                    chunked: header("transfer-encoding").is_some_and(|v| v.contains("chunked")),
                    close: header("connection").is_some_and(|v| v.contains("close")),
                };
                return Some((head, consumed));
            }
            Ok(httparse::Status::Partial) => read_more(socket, buf).await?,
            Err(_) => return None,
        }
    }
}

async fn read_body<S: Stream>(
    socket: &mut S,
    buf: &mut Vec<u8>,
    head: &RequestHead,
) -> Option<Vec<u8>> {
    if head.chunked {
        return read_chunked(socket, buf).await;
    }
    let len = head.content_length.unwrap_or(0);
    while buf.len() < len {
        read_more(socket, buf).await?;
    }
    Some(buf.drain(..len).collect())
}

/// An independent chunked decoder, so the transport's encoder is checked against
/// something other than its own decoder.
async fn read_chunked<S: Stream>(socket: &mut S, buf: &mut Vec<u8>) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = loop {
            if let Some(pos) = buf.windows(2).position(|w| w == b"\r\n") {
                break pos;
            }
            read_more(socket, buf).await?;
        };
        let line = String::from_utf8_lossy(&buf[..line_end]).to_string();
        let size = usize::from_str_radix(line.split(';').next()?.trim(), 16).ok()?;
        buf.drain(..line_end + 2);
        if size == 0 {
            // Skip trailers up to the empty line.
            loop {
                if let Some(pos) = buf.windows(2).position(|w| w == b"\r\n") {
                    let empty = pos == 0;
                    buf.drain(..pos + 2);
                    if empty {
                        return Some(body);
                    }
                    continue;
                }
                read_more(socket, buf).await?;
            }
        }
        while buf.len() < size + 2 {
            read_more(socket, buf).await?;
        }
        body.extend_from_slice(&buf[..size]);
        buf.drain(..size + 2);
    }
}

/// Writes the response; says what becomes of the connection.
async fn respond<S: Stream>(socket: &mut S, head: &RequestHead, request_body: Vec<u8>) -> After {
    // The absolute form (`GET http://host/path`, what a client sends a proxy) is
    // accepted as servers must (RFC 9112 §3.2.2): this server can stand in for a proxy.
    let target = match head.path.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("/", |slash| &rest[slash..]),
        None => head.path.as_str(),
    };
    let path = target.split('?').next().unwrap_or("/");
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    let route = parts.next().unwrap_or("");
    let number = parts
        .next()
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or(0);
    let is_head = head.method.eq_ignore_ascii_case("HEAD");
    let result = match route {
        "small" => fixed(socket, b"hello, world\n", "", is_head).await,
        "bytes" => fixed(socket, &body_bytes(number), "", is_head).await,
        "close" => fixed(
            socket,
            &body_bytes(number),
            "Connection: close\r\n",
            is_head,
        )
        .await
        .map(|_| false),
        "linger" => {
            let answered = fixed(socket, b"hello, world\n", "", is_head).await;
            let limit = Duration::from_millis(number as u64);
            return if answered.is_ok() {
                After::CloseWhenIdleFor(limit)
            } else {
                After::Close
            };
        }
        "once" => {
            let answered = fixed(socket, b"hello, world\n", "", is_head).await;
            return if answered.is_ok() {
                After::DropNextRequest
            } else {
                After::Close
            };
        }
        "echo" => fixed(socket, &request_body, "", is_head).await,
        "head-only" => write(socket, b"HTTP/1.1 204 No Content\r\n\r\n").await,
        "delay" => {
            tokio::time::sleep(Duration::from_millis(number as u64)).await;
            fixed(socket, b"hello, world\n", "", is_head).await
        }
        "continue" => {
            let early = b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n";
            match write(socket, early).await {
                Ok(_) => fixed(socket, b"hello, world\n", "", is_head).await,
                Err(e) => Err(e),
            }
        }
        "chunked" => chunked(socket, &body_bytes(number)).await,
        "request-head" => fixed(socket, &head.raw, "", is_head).await,
        "gzip" if head.accepts_gzip => {
            let compressed = gzip(&body_bytes(number));
            fixed(socket, &compressed, "Content-Encoding: gzip\r\n", is_head).await
        }
        "gzip" => fixed(socket, &body_bytes(number), "", is_head).await,
        "until-close" => {
            let head = b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n\r\n";
            let _ = write(socket, head).await;
            let _ = write(socket, &body_bytes(number)).await;
            Ok(false)
        }
        _ => fixed_status(socket, "404 Not Found", b"not found\n", "", is_head).await,
    };
    match result {
        Ok(true) => After::KeepOpen,
        _ => After::Close,
    }
}

fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    // Writing to a Vec cannot fail.
    let _ = encoder.write_all(data);
    encoder.finish().unwrap_or_default()
}

async fn write<S: Stream>(socket: &mut S, bytes: &[u8]) -> std::io::Result<bool> {
    socket.write_all(bytes).await?;
    Ok(true)
}

async fn fixed<S: Stream>(
    socket: &mut S,
    body: &[u8],
    extra: &str,
    is_head: bool,
) -> std::io::Result<bool> {
    fixed_status(socket, "200 OK", body, extra, is_head).await
}

async fn fixed_status<S: Stream>(
    socket: &mut S,
    status: &str,
    body: &[u8],
    extra: &str,
    is_head: bool,
) -> std::io::Result<bool> {
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n{extra}\r\n",
        body.len()
    )
    .into_bytes();
    if !is_head {
        out.extend_from_slice(body);
    }
    write(socket, &out).await
}

async fn chunked<S: Stream>(socket: &mut S, body: &[u8]) -> std::io::Result<bool> {
    let mut out =
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Body-Len\r\n\r\n".to_vec();
    // Uneven chunk sizes, with an extension on each size line.
    let mut at = 0;
    let mut size = 1000;
    while at < body.len() {
        let take = size.min(body.len() - at);
        out.extend_from_slice(format!("{take:x};n={at}\r\n").as_bytes());
        out.extend_from_slice(&body[at..at + take]);
        out.extend_from_slice(b"\r\n");
        at += take;
        size = size * 3 % 70_001 + 1;
        if out.len() > 256 * 1024 {
            socket.write_all(&out).await?;
            out.clear();
        }
    }
    out.extend_from_slice(format!("0\r\nX-Body-Len: {}\r\n\r\n", body.len()).as_bytes());
    write(socket, &out).await
}
