//! A small real HTTP/2 server over TLS (ALPN `h2`), on the `h2` crate: for the
//! `http2-multiplexing` demo, which must run with no network.
//!
//! Routes: `/small` answers `hello, world\n`; `/delay/N` the same after N ms. It
//! counts connections, requests and the most streams open at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::ServerTls;

#[derive(Debug, Default)]
pub struct H2Counters {
    pub connections: AtomicU64,
    pub requests: AtomicU64,
    open: AtomicU64,
    pub peak_streams: AtomicU64,
}

/// A running HTTP/2 server; it stops when dropped.
pub struct H2Server {
    addr: std::net::SocketAddr,
    counters: Arc<H2Counters>,
    task: tokio::task::JoinHandle<()>,
}

impl H2Server {
    /// Starts on a free port of 127.0.0.1, with `tls`'s certificate, offering only
    /// `h2`. Must be called inside a tokio runtime.
    pub async fn start(tls: &ServerTls) -> std::io::Result<Self> {
        let mut config = (*tls.config()).clone();
        config.alpn_protocols = vec![b"h2".to_vec()];
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let counters = Arc::new(H2Counters::default());
        let task = tokio::spawn(accept_loop(listener, acceptor, Arc::clone(&counters)));
        Ok(Self {
            addr,
            counters,
            task,
        })
    }

    /// `https://127.0.0.1:PORT` followed by `path`.
    pub fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.addr)
    }

    pub fn counters(&self) -> &H2Counters {
        &self.counters
    }
}

impl Drop for H2Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept_loop(listener: TcpListener, acceptor: TlsAcceptor, counters: Arc<H2Counters>) {
    while let Ok((tcp, _)) = listener.accept().await {
        let (acceptor, counters) = (acceptor.clone(), Arc::clone(&counters));
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            counters.connections.fetch_add(1, Ordering::SeqCst);
            let Ok(mut connection) = h2::server::handshake(tls).await else {
                return;
            };
            while let Some(Ok((request, respond))) = connection.accept().await {
                tokio::spawn(answer(request, respond, Arc::clone(&counters)));
            }
        });
    }
}

async fn answer(
    request: http::Request<h2::RecvStream>,
    mut respond: h2::server::SendResponse<Bytes>,
    counters: Arc<H2Counters>,
) {
    counters.requests.fetch_add(1, Ordering::SeqCst);
    let open = counters.open.fetch_add(1, Ordering::SeqCst) + 1;
    counters.peak_streams.fetch_max(open, Ordering::SeqCst);
    let path = request.uri().path().to_owned();
    let (status, body): (u16, &'static [u8]) = match path.strip_prefix("/delay/") {
        Some(ms) => {
            let ms = ms.parse().unwrap_or(0);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            (200, b"hello, world\n")
        }
        None if path == "/small" => (200, b"hello, world\n"),
        None => (404, b"not found\n"),
    };
    let response = http::Response::builder()
        .status(status)
        .header("content-length", body.len())
        .body(())
        .unwrap_or_default();
    if let Ok(mut stream) = respond.send_response(response, false) {
        let _ = stream.send_data(Bytes::from_static(body), true);
    }
    counters.open.fetch_sub(1, Ordering::SeqCst);
}
