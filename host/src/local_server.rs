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

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Counters a test or demo can read while the server runs.
#[derive(Debug, Default)]
pub struct Counters {
    pub connections: AtomicU64,
    pub requests: AtomicU64,
}

/// A running server; it stops when dropped.
pub struct LocalServer {
    addr: SocketAddr,
    counters: Arc<Counters>,
    task: tokio::task::JoinHandle<()>,
}

impl LocalServer {
    /// Starts on a free port of 127.0.0.1. Must be called inside a tokio runtime.
    pub async fn start() -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let counters = Arc::new(Counters::default());
        let task = tokio::spawn(accept_loop(listener, Arc::clone(&counters)));
        Ok(Self {
            addr,
            counters,
            task,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT` followed by `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
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

async fn accept_loop(listener: TcpListener, counters: Arc<Counters>) {
    loop {
        let Ok((socket, _)) = listener.accept().await else {
            continue;
        };
        counters.connections.fetch_add(1, Ordering::SeqCst);
        tokio::spawn(serve_connection(socket, Arc::clone(&counters)));
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

async fn serve_connection(mut socket: TcpStream, counters: Arc<Counters>) {
    let _ = socket.set_nodelay(true);
    let mut buf: Vec<u8> = Vec::with_capacity(8192);
    loop {
        let Some((head, consumed)) = read_head(&mut socket, &mut buf).await else {
            return;
        };
        buf.drain(..consumed);
        let Some(body) = read_body(&mut socket, &mut buf, &head).await else {
            return;
        };
        counters.requests.fetch_add(1, Ordering::SeqCst);
        let keep_open = respond(&mut socket, &head, body).await;
        if !keep_open || head.close {
            let _ = socket.shutdown().await;
            return;
        }
    }
}

async fn read_more(socket: &mut TcpStream, buf: &mut Vec<u8>) -> Option<()> {
    let mut chunk = [0u8; 16 * 1024];
    match socket.read(&mut chunk).await {
        Ok(0) | Err(_) => None,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            Some(())
        }
    }
}

async fn read_head(socket: &mut TcpStream, buf: &mut Vec<u8>) -> Option<(RequestHead, usize)> {
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

async fn read_body(
    socket: &mut TcpStream,
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
async fn read_chunked(socket: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Vec<u8>> {
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

/// Writes the response; returns whether the connection stays open.
async fn respond(socket: &mut TcpStream, head: &RequestHead, request_body: Vec<u8>) -> bool {
    let path = head.path.split('?').next().unwrap_or("/");
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
    result.unwrap_or(false)
}

fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    // Writing to a Vec cannot fail.
    let _ = encoder.write_all(data);
    encoder.finish().unwrap_or_default()
}

async fn write(socket: &mut TcpStream, bytes: &[u8]) -> std::io::Result<bool> {
    socket.write_all(bytes).await?;
    Ok(true)
}

async fn fixed(
    socket: &mut TcpStream,
    body: &[u8],
    extra: &str,
    is_head: bool,
) -> std::io::Result<bool> {
    fixed_status(socket, "200 OK", body, extra, is_head).await
}

async fn fixed_status(
    socket: &mut TcpStream,
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

async fn chunked(socket: &mut TcpStream, body: &[u8]) -> std::io::Result<bool> {
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
