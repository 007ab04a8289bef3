//! Helpers for the end-to-end tests: a transport with an event recorder, request
//! shortcuts, a scripted raw TCP server, a TLS server with a CA made in the test, and
//! nginx started on a free loopback port.

#![allow(clippy::unwrap_used)]

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt;
use roundtrip_host::events::{Event, EventKind, Recorder};
use roundtrip_host::{Body, Config, ConnectionInfo, Error, Transport};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A transport whose events are recorded, built from `Config::default()` changed by
/// `adjust`.
pub fn transport(adjust: impl FnOnce(&mut Config)) -> (Transport, Recorder) {
    let recorder = Recorder::new();
    let mut config = Config {
        events: roundtrip_host::events::Events::new().with(recorder.clone()),
        inspect_from_env: false,
        ..Config::default()
    };
    adjust(&mut config);
    (Transport::new(config).unwrap(), recorder)
}

/// A finished exchange.
#[derive(Debug)]
pub struct Fetched {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
    pub trailers: Option<http::HeaderMap>,
    pub conn: ConnectionInfo,
}

/// How long one exchange of a test may take, body included, before the test fails:
/// no test waits forever on a server.
pub const FETCH_LIMIT: Duration = Duration::from_secs(90);

/// Sends `request` and reads the whole body; fails the test if that takes longer than
/// [`FETCH_LIMIT`]. Returns once the transport has settled the connection: a whole
/// body's release reaches the component before any later command ([`settled`]), so
/// the events a test reads next are all there.
pub async fn fetch(transport: &Transport, request: http::Request<Body>) -> Result<Fetched, Error> {
    let uri = request.uri().clone();
    tokio::time::timeout(FETCH_LIMIT, fetch_unbounded(transport, request))
        .await
        .unwrap_or_else(|_| panic!("{uri}: no whole answer within {FETCH_LIMIT:?}"))
}

async fn fetch_unbounded(
    transport: &Transport,
    request: http::Request<Body>,
) -> Result<Fetched, Error> {
    let response = transport.round_trip(request).await?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let conn = *response.extensions().get::<ConnectionInfo>().unwrap();
    let collected = response.into_body().collect().await?;
    settled(transport).await;
    let trailers = collected.trailers().cloned();
    Ok(Fetched {
        status,
        headers,
        body: collected.to_bytes(),
        trailers,
        conn,
    })
}

/// Returns once the transport has handled everything sent to it before, whole
/// bodies' releases included (they ride on the next command; a `stats` is one).
pub async fn settled(transport: &Transport) {
    transport.stats().await;
}

/// `GET url`, whole body read.
pub async fn get(transport: &Transport, url: &str) -> Result<Fetched, Error> {
    fetch(
        transport,
        http::Request::get(url).body(Body::empty()).unwrap(),
    )
    .await
}

/// How many recorded events match.
pub fn count(events: &[Event], wanted: impl Fn(&EventKind) -> bool) -> usize {
    events.iter().filter(|e| wanted(&e.kind)).count()
}

pub fn dials(events: &[Event]) -> usize {
    count(events, |k| matches!(k, EventKind::DialStart { .. }))
}

/// Close reasons, in order.
pub fn closes(events: &[Event]) -> Vec<roundtrip_host::events::CloseReason> {
    events
        .iter()
        .filter_map(|e| match e.kind {
            EventKind::Close { reason } => Some(reason),
            _ => None,
        })
        .collect()
}

/// Waits (up to 5 s) until the recorder holds an event whose kind matches `wanted`.
pub async fn wait_for_event(recorder: &Recorder, wanted: impl Fn(&EventKind) -> bool) -> bool {
    wait_for(recorder, |e| wanted(&e.kind)).await
}

/// Waits (up to 5 s) for `close{reason}`, failing with the events seen so far.
pub async fn assert_closed(recorder: &Recorder, reason: roundtrip_host::events::CloseReason) {
    let closed = wait_for_event(recorder, |k| *k == EventKind::Close { reason }).await;
    assert!(
        closed,
        "no close{{{}}}: {:?}",
        reason.as_str(),
        recorder.names()
    );
}

/// Waits (up to 5 s) until the recorder holds an event matching `wanted`.
pub async fn wait_for(recorder: &Recorder, wanted: impl Fn(&Event) -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if recorder.events().iter().any(&wanted) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    false
}

/// A TCP server whose every connection runs `script(index, socket)`; `index` counts
/// connections from 0.
pub struct RawServer {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl RawServer {
    pub async fn start<F, Fut>(script: F) -> Self
    where
        F: Fn(usize, TcpStream) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let script = Arc::new(script);
        let task = tokio::spawn(async move {
            let mut index = 0;
            while let Ok((socket, _)) = listener.accept().await {
                tokio::spawn(script(index, socket));
                index += 1;
            }
        });
        Self { addr, task }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for RawServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads one request head (up to the blank line) from `socket`; `None` at EOF.
pub async fn read_request_head(socket: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match socket.read(&mut byte).await {
            Ok(1) => head.push(byte[0]),
            _ => return None,
        }
    }
    Some(String::from_utf8_lossy(&head).into_owned())
}

/// Answers every request on a connection with `response` until the peer closes.
pub async fn answer_each(mut socket: TcpStream, response: &'static [u8]) {
    while read_request_head(&mut socket).await.is_some() {
        if socket.write_all(response).await.is_err() {
            return;
        }
    }
}

/// A CA and a server certificate made for the test.
pub struct TestPki {
    pub ca_file: tempfile::NamedTempFile,
    pub server_config: Arc<rustls::ServerConfig>,
    /// The server's certificate and key as PEM files, for servers run as programs
    /// (nginx, nghttpd).
    pub cert_file: tempfile::NamedTempFile,
    pub key_file: tempfile::NamedTempFile,
}

/// Makes a CA and a certificate for `names` signed by it.
pub fn pki(names: &[&str]) -> TestPki {
    pki_with(names, |_| {})
}

/// Like [`pki`], with the server certificate's parameters changed by `adjust`.
pub fn pki_with(names: &[&str], adjust: impl FnOnce(&mut rcgen::CertificateParams)) -> TestPki {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Roundtrip Test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut params =
        CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>()).unwrap();
    adjust(&mut params);
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
    let mut ca_file = tempfile::NamedTempFile::new().unwrap();
    std::io::Write::write_all(&mut ca_file, ca.pem().as_bytes()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut server_config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
    server_config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let mut cert_file = tempfile::NamedTempFile::new().unwrap();
    std::io::Write::write_all(&mut cert_file, cert.pem().as_bytes()).unwrap();
    let mut key_file = tempfile::NamedTempFile::new().unwrap();
    std::io::Write::write_all(&mut key_file, key.serialize_pem().as_bytes()).unwrap();
    TestPki {
        ca_file,
        server_config: Arc::new(server_config),
        cert_file,
        key_file,
    }
}

/// nginx speaking HTTP/2 over TLS for `localhost` (a certificate from a CA made for
/// it, in the returned `TestPki`), counting connections ([`Nginx::start_counting`]).
pub fn tls_nginx(directives: &str) -> (Nginx, TestPki) {
    let pki = pki(&["localhost"]);
    let nginx = Nginx::start_counting_listening(
        "ssl http2",
        &format!(
            "ssl_certificate {};\n    ssl_certificate_key {};\n    {directives}",
            pki.cert_file.path().display(),
            pki.key_file.path().display()
        ),
    );
    (nginx, pki)
}

/// A CA, a server certificate for `localhost` whose server requires a client
/// certificate from that CA, and such a client certificate with its key, as files.
pub struct MutualPki {
    pub ca_file: tempfile::NamedTempFile,
    pub server_config: Arc<rustls::ServerConfig>,
    pub client_cert: tempfile::NamedTempFile,
    pub client_key: tempfile::NamedTempFile,
}

pub fn mutual_pki() -> MutualPki {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let server_key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&server_key, &ca, &ca_key)
        .unwrap();
    let client_key = KeyPair::generate().unwrap();
    let mut client_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    client_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "roundtrip test client");
    let client = client_params.signed_by(&client_key, &ca, &ca_key).unwrap();
    let file = |text: &str| {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut file, text.as_bytes()).unwrap();
        file
    };
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der().clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .unwrap();
    let mut server_config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![server.der().clone()],
            rustls_pki_types::PrivateKeyDer::Pkcs8(server_key.serialize_der().into()),
        )
        .unwrap();
    server_config.alpn_protocols = vec![b"http/1.1".to_vec()];
    MutualPki {
        ca_file: file(&ca.pem()),
        server_config: Arc::new(server_config),
        client_cert: file(&client.pem()),
        client_key: file(&client_key.serialize_pem()),
    }
}

/// A keep-alive HTTPS server on 127.0.0.1 answering every request with `hello`
/// (closing after a request that asked `Connection: close`).
pub async fn tls_server(config: Arc<rustls::ServerConfig>) -> RawServer {
    tls_server_slow_handshake(config, usize::MAX, Duration::ZERO).await
}

/// Like [`tls_server`], but the TLS handshake on connection number `slow_index` (from
/// 0) waits `delay` first: a dial that stays in progress.
pub async fn tls_server_slow_handshake(
    config: Arc<rustls::ServerConfig>,
    slow_index: usize,
    delay: Duration,
) -> RawServer {
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    RawServer::start(move |index, socket| {
        let acceptor = acceptor.clone();
        async move {
            if index == slow_index {
                tokio::time::sleep(delay).await;
            }
            if let Ok(tls) = acceptor.accept(socket).await {
                answer_hello(tls).await;
            }
        }
    })
    .await
}

/// Answers each request on a TLS connection with `hello`.
pub async fn answer_hello(mut tls: tokio_rustls::server::TlsStream<TcpStream>) {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let Ok(n) = tls.read(&mut buf).await else {
            return;
        };
        if n == 0 {
            return;
        }
        head.extend_from_slice(&buf[..n]);
        while let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            let close = String::from_utf8_lossy(&head[..end])
                .to_ascii_lowercase()
                .contains("connection: close");
            head.drain(..end + 4);
            let response: &[u8] = if close {
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello"
            } else {
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
            };
            if tls.write_all(response).await.is_err() {
                return;
            }
            if close {
                let _ = tls.shutdown().await;
                return;
            }
        }
    }
}

/// nginx from Debian's package, started on a free loopback port with its own prefix
/// and config; stopped when dropped.
pub struct Nginx {
    pub port: u16,
    child: Child,
    _prefix: tempfile::TempDir,
}

/// Where Debian puts nginx.
fn nginx_binary() -> PathBuf {
    for candidate in ["/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/bin/nginx"] {
        if std::path::Path::new(candidate).exists() {
            return candidate.into();
        }
    }
    panic!("nginx not found: run `scripts/test`, which installs Debian's nginx package");
}

impl Nginx {
    /// Starts nginx with `server_directives` inside its `server { }` block.
    pub fn start(server_directives: &str) -> Self {
        Self::start_listening("", server_directives)
    }

    /// Like [`Nginx::start`], with parameters after `listen 127.0.0.1:PORT` (e.g.
    /// `ssl http2`, or `http2` for h2c).
    pub fn start_listening(listen: &str, server_directives: &str) -> Self {
        Self::launch(listen, server_directives, "access_log off;")
    }

    /// Like [`Nginx::start`], logging each request's connection serial
    /// (`$connection`) and its count on that connection: the server's own account of
    /// how many connections its clients opened ([`Nginx::connections`]).
    pub fn start_counting(server_directives: &str) -> Self {
        Self::start_counting_listening("", server_directives)
    }

    /// [`Nginx::start_counting`] with parameters after `listen` (`ssl http2`); each
    /// log line ends with the request's protocol ([`Nginx::protocols`]).
    pub fn start_counting_listening(listen: &str, server_directives: &str) -> Self {
        Self::launch(
            listen,
            server_directives,
            "log_format conns '$connection $connection_requests $bytes_sent $server_protocol';\n  \
             access_log logs/conns.log conns;",
        )
    }

    /// Like [`Nginx::start`], logging each request as `format` says (nginx's
    /// variables, e.g. `$request $http_cookie`) to the lines [`Nginx::log`] reads.
    pub fn start_logging(format: &str, server_directives: &str) -> Self {
        Self::launch(
            "",
            server_directives,
            &format!("log_format mine '{format}';\n  access_log logs/mine.log mine;"),
        )
    }

    /// The lines of the log of [`Nginx::start_logging`], once `n` are there (nginx
    /// writes a line as a request ends; up to 10 s).
    pub async fn log(&self, n: usize) -> Vec<String> {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let log = std::fs::read_to_string(self._prefix.path().join("logs/mine.log"))
                .unwrap_or_default();
            let lines: Vec<String> = log.lines().map(str::to_owned).collect();
            if lines.len() >= n || std::time::Instant::now() > deadline {
                return lines;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The protocol of each request in the log of [`Nginx::start_counting`]
    /// (`HTTP/1.1`, `HTTP/2.0`), in the order they ended.
    pub fn protocols(&self) -> Vec<String> {
        let log =
            std::fs::read_to_string(self._prefix.path().join("logs/conns.log")).unwrap_or_default();
        log.lines()
            .filter_map(|line| line.split_whitespace().nth(3).map(str::to_owned))
            .collect()
    }

    /// Distinct connections that carried a request, and the requests, from the log
    /// of [`Nginx::start_counting`] (nginx writes a line as each request ends).
    pub fn connections(&self) -> (usize, usize) {
        let log =
            std::fs::read_to_string(self._prefix.path().join("logs/conns.log")).unwrap_or_default();
        let serials: std::collections::HashSet<&str> = log
            .lines()
            .filter_map(|line| line.split_whitespace().next())
            .collect();
        (serials.len(), log.lines().count())
    }

    /// Waits (up to 10 s) until the log of [`Nginx::start_counting`] holds `requests`
    /// requests (nginx writes a line as a request ends, which may be after the client
    /// has the whole answer); the counts then.
    pub async fn logged(&self, requests: usize) -> (usize, usize) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let counts = self.connections();
            if counts.1 >= requests || std::time::Instant::now() > deadline {
                return counts;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Bytes nginx sent on connection `serial` (headers and bodies, every request),
    /// from the log of [`Nginx::start_counting`].
    pub fn bytes_sent(&self, serial: &str) -> u64 {
        let log =
            std::fs::read_to_string(self._prefix.path().join("logs/conns.log")).unwrap_or_default();
        log.lines()
            .filter_map(|line| {
                let mut fields = line.split_whitespace();
                (fields.next()? == serial).then(|| fields.nth(1)?.parse::<u64>().ok())?
            })
            .sum()
    }

    /// The serials of the connections in the log of [`Nginx::start_counting`], in
    /// the order of their first request's end.
    pub fn serials(&self) -> Vec<String> {
        let log =
            std::fs::read_to_string(self._prefix.path().join("logs/conns.log")).unwrap_or_default();
        let mut serials: Vec<String> = Vec::new();
        for serial in log
            .lines()
            .filter_map(|line| line.split_whitespace().next())
        {
            if !serials.iter().any(|s| s == serial) {
                serials.push(serial.to_owned());
            }
        }
        serials
    }

    fn launch(listen: &str, server_directives: &str, logging: &str) -> Self {
        let prefix = tempfile::tempdir().unwrap();
        let port = free_port();
        let root = prefix.path();
        std::fs::create_dir_all(root.join("logs")).unwrap();
        std::fs::create_dir_all(root.join("html")).unwrap();
        std::fs::write(root.join("html/small"), "hello, world\n").unwrap();
        let config = format!(
            "daemon off;\nmaster_process off;\nworker_processes 1;\npid {root}/nginx.pid;\n\
             error_log {root}/logs/error.log;\nevents {{ worker_connections 128; }}\n\
             http {{\n  {logging}\n  client_body_temp_path {root}/tmp_body;\n\
             proxy_temp_path {root}/tmp_proxy;\n  fastcgi_temp_path {root}/tmp_fcgi;\n\
             uwsgi_temp_path {root}/tmp_uwsgi;\n  scgi_temp_path {root}/tmp_scgi;\n\
             server {{\n    listen 127.0.0.1:{port} {listen};\n    root {root}/html;\n    {server_directives}\n  }}\n}}\n",
            root = root.display()
        );
        let conf = root.join("nginx.conf");
        std::fs::write(&conf, config).unwrap();
        let child = Command::new(nginx_binary())
            .arg("-p")
            .arg(root)
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        wait_for_port(port, "nginx");
        Self {
            port,
            child,
            _prefix: prefix,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The directory it serves files from.
    pub fn root(&self) -> PathBuf {
        self._prefix.path().join("html")
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits (up to 10 s) until `what` listens on loopback `port`.
pub fn wait_for_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not listen on {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A loopback port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A server from a Debian package (tinyproxy, microsocks) run in the foreground on a
/// free loopback port; stopped when dropped.
pub struct Daemon {
    pub port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Daemon {
    /// Starts `program` with `args(port, dir)` and waits until it listens on `port`.
    pub fn start(program: &str, args: impl FnOnce(u16, &std::path::Path) -> Vec<String>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let args = args(port, dir.path());
        let child = Command::new(program)
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run {program}: {e} (run `scripts/test`, which installs it)")
            });
        wait_for_port(port, program);
        Self {
            port,
            child,
            _dir: dir,
        }
    }

    /// The directory it was given (its logs, its files).
    pub fn dir(&self) -> &std::path::Path {
        self._dir.path()
    }

    /// Debian's tinyproxy (HTTP proxy with `CONNECT`), `config` added to a minimal
    /// configuration (e.g. `BasicAuth alice s3cret`, `ConnectPort 443`).
    pub fn tinyproxy(config: &str) -> Self {
        Self::start("tinyproxy", |port, dir| {
            let file = dir.join("tinyproxy.conf");
            std::fs::write(
                &file,
                format!(
                    "Port {port}\nListen 127.0.0.1\nTimeout 30\nMaxClients 50\n\
                     Allow 127.0.0.1\nLogLevel Critical\n{config}\n"
                ),
            )
            .unwrap();
            vec!["-d".to_owned(), "-c".to_owned(), file.display().to_string()]
        })
    }

    /// Debian's stunnel in front of `port`: TLS with `pki`'s certificate on its own
    /// port, the cleartext to `port` (with [`Daemon::tinyproxy`]: an `https://` proxy).
    pub fn stunnel(pki: &TestPki, port: u16) -> Self {
        Self::start("stunnel4", |own, dir| {
            let file = dir.join("stunnel.conf");
            std::fs::write(
                &file,
                format!(
                    "foreground = yes\npid =\noutput = {}\n[tls]\naccept = 127.0.0.1:{own}\n\
                     connect = 127.0.0.1:{port}\ncert = {}\nkey = {}\n",
                    dir.join("stunnel.log").display(),
                    pki.cert_file.path().display(),
                    pki.key_file.path().display()
                ),
            )
            .unwrap();
            vec![file.display().to_string()]
        })
    }

    /// Debian's microsocks (SOCKS5), optionally requiring `user:password`.
    pub fn microsocks(login: Option<(&str, &str)>) -> Self {
        Self::start("microsocks", |port, _| {
            let mut args = vec![
                "-i".into(),
                "127.0.0.1".into(),
                "-p".into(),
                port.to_string(),
            ];
            if let Some((user, password)) = login {
                args.extend([
                    "-u".into(),
                    user.to_owned(),
                    "-P".into(),
                    password.to_owned(),
                ]);
            }
            args
        })
    }

    /// `http://127.0.0.1:port` with `scheme` and optional user info.
    pub fn url(&self, scheme: &str, user_info: Option<&str>) -> String {
        match user_info {
            Some(user_info) => format!("{scheme}://{user_info}@127.0.0.1:{}", self.port),
            None => format!("{scheme}://127.0.0.1:{}", self.port),
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `program` with `args` with `HTTP_PROXY` pointing at `proxy`; returns its pid
/// once it has exited successfully.
pub async fn run_app(proxy: &roundtrip_proxy::ForwardProxy, program: &str, args: &[&str]) -> u32 {
    let child = tokio::process::Command::new(program)
        .args(args)
        .env("HTTP_PROXY", proxy.url())
        .env("http_proxy", proxy.url())
        .env_remove("NO_PROXY")
        .env_remove("no_proxy")
        .env_remove("ALL_PROXY")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{program} is installed (scripts/test installs it): {e}"));
    let pid = child.id().unwrap();
    let output = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("the app finishes")
        .unwrap();
    assert!(
        output.status.success(),
        "{program} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    pid
}

/// Where `scripts/test` installs componentize-py 0.25.1 from PyPI (`pip --target`).
const PY_TOOLS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/py");

/// `wasm/examples/EXAMPLE/app.py` built by componentize-py (world `world` of the WIT
/// in `wit`, relative to the example) into `out`: a guest from another toolchain.
pub fn componentize_py(example: &str, wit: &str, world: &str, out: &std::path::Path) -> Vec<u8> {
    let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/../wasm/examples");
    assert!(
        std::path::Path::new(PY_TOOLS)
            .join("componentize_py")
            .exists(),
        "componentize-py is not installed in {PY_TOOLS}: run scripts/test"
    );
    let status = Command::new("python3")
        .env("PYTHONPATH", PY_TOOLS)
        .current_dir(format!("{examples}/{example}"))
        .args([
            "-c",
            "import sys; from componentize_py import script; sys.argv[0] = 'componentize-py'; sys.exit(script())",
            "-d",
            wit,
            "-w",
            world,
            "componentize",
            "app",
            "-o",
        ])
        .arg(out)
        .status()
        .unwrap();
    assert!(
        status.success(),
        "componentize-py failed to build {example}"
    );
    std::fs::read(out).unwrap()
}
