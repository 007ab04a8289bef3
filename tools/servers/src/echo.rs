//! A streaming echo server on a loopback port (hyper's echo example): it answers as
//! soon as a request head arrives, then sends the request body back as it reads it,
//! chunked. Upload services, many proxies and wasmtime's own test server behave
//! like this: a client that stops sending once the response head has come never
//! finishes its request.
//!
//! It records what it saw of every request body, so a test can check from the
//! server's side that a body arrived whole (and ended cleanly) or was cut.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// What the server saw of one request body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// Which connection (1, 2, … in accept order) carried it.
    pub connection: u64,
    /// Body bytes read.
    pub bytes: u64,
    /// Whether the body ended as its framing says (`false`: cut, or never ended).
    pub complete: bool,
    /// Trailer names it ended with.
    pub trailers: Vec<String>,
}

/// A running echo server; it stops when dropped.
pub struct EchoServer {
    addr: SocketAddr,
    connections: Arc<AtomicU64>,
    received: Arc<Mutex<Vec<Received>>>,
    task: tokio::task::JoinHandle<()>,
}

impl EchoServer {
    /// Starts on a free port of 127.0.0.1. Must be called inside a tokio runtime.
    pub async fn start() -> std::io::Result<Self> {
        Self::start_with(true).await
    }

    /// Like `start`, with keep-alive off: each answer says `Connection: close`, and
    /// the server closes the connection once the echo (so the request body) has ended.
    pub async fn start_closing() -> std::io::Result<Self> {
        Self::start_with(false).await
    }

    async fn start_with(keep_alive: bool) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let connections = Arc::new(AtomicU64::new(0));
        let received = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn(accept_loop(
            listener,
            Arc::clone(&connections),
            Arc::clone(&received),
            keep_alive,
        ));
        Ok(Self {
            addr,
            connections,
            received,
            task,
        })
    }

    /// `http://127.0.0.1:PORT` followed by `path` (any path echoes).
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::SeqCst)
    }

    /// Every request body whose end (or cut) the server has seen, in that order.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept_loop(
    listener: TcpListener,
    connections: Arc<AtomicU64>,
    received: Arc<Mutex<Vec<Received>>>,
    keep_alive: bool,
) {
    loop {
        let Ok((socket, _)) = listener.accept().await else {
            continue;
        };
        let _ = socket.set_nodelay(true);
        let connection = connections.fetch_add(1, Ordering::SeqCst) + 1;
        let received = Arc::clone(&received);
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<Incoming>| {
                let body = Recorded {
                    inner: request.into_body(),
                    seen: Received {
                        connection,
                        bytes: 0,
                        complete: false,
                        trailers: Vec::new(),
                    },
                    log: Some(Arc::clone(&received)),
                };
                async move { Ok::<_, hyper::Error>(Response::new(body)) }
            });
            let _ = http1::Builder::new()
                .keep_alive(keep_alive)
                .serve_connection(TokioIo::new(socket), service)
                .await;
        });
    }
}

/// The request body, passed through as the response body, counted on the way.
struct Recorded {
    inner: Incoming,
    seen: Received,
    /// Taken when the record is written: at the body's end, its error, or its drop.
    log: Option<Arc<Mutex<Vec<Received>>>>,
}

impl HttpBody for Recorded {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.seen.bytes += data.len() as u64;
                }
                if let Some(trailers) = frame.trailers_ref() {
                    self.seen.trailers = trailers.keys().map(|k| k.as_str().to_owned()).collect();
                }
                // The last frame: trailers, or the last byte of a declared length.
                if frame.is_trailers() || self.inner.is_end_stream() {
                    self.seen.complete = true;
                    self.write_record();
                }
            }
            Poll::Ready(None) => {
                self.seen.complete = true;
                self.write_record();
            }
            Poll::Ready(Some(Err(_))) => self.write_record(),
            Poll::Pending => {}
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

impl Recorded {
    fn write_record(&mut self) {
        if let Some(log) = self.log.take()
            && let Ok(mut log) = log.lock()
        {
            log.push(self.seen.clone());
        }
    }
}

impl Drop for Recorded {
    fn drop(&mut self) {
        self.write_record();
    }
}
