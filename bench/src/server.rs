//! The server every client of a benchmark talks to: Debian's nginx on a free loopback
//! port (a process of its own, keep-alive without limit), or the in-process server.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use roundtrip_servers::{H2Server, LocalServer, ServerTls};

/// The path of the large body; each server maps it to its own route.
pub const LARGE_PATH: &str = "/large";
/// Size of the large body.
pub const LARGE_BYTES: u64 = 256 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerKind {
    Nginx,
    InProcess,
}

pub enum Server {
    Nginx {
        port: u16,
        tls_port: u16,
        /// `ssl http2`: HTTP/2 where ALPN agrees.
        h2_port: u16,
        tls: ServerTls,
        connection_log: Option<std::path::PathBuf>,
        child: Child,
        _dir: tempfile::TempDir,
    },
    InProcess {
        plain: LocalServer,
        secure: LocalServer,
        h2: H2Server,
        tls: ServerTls,
    },
}

impl Server {
    /// With `log_connections`, nginx writes each request's connection serial
    /// (`$connection`) to [`Server::connection_log`]: the upstream's own count.
    pub async fn start(kind: ServerKind, log_connections: bool) -> Result<Server, String> {
        let tls = ServerTls::generate()?;
        match kind {
            ServerKind::InProcess => {
                let failed = |e: std::io::Error| format!("cannot start the in-process server: {e}");
                let plain = LocalServer::start().await.map_err(failed)?;
                let secure = LocalServer::start_tls(&tls, Duration::ZERO)
                    .await
                    .map_err(failed)?;
                let h2 = H2Server::start(&tls).await.map_err(failed)?;
                Ok(Server::InProcess {
                    plain,
                    secure,
                    h2,
                    tls,
                })
            }
            ServerKind::Nginx => start_nginx(tls, log_connections),
        }
    }

    /// The URL of `path`, over TLS when `secure`.
    pub fn url(&self, path: &str, secure: bool) -> String {
        let scheme = if secure { "https" } else { "http" };
        match self {
            Server::Nginx { port, tls_port, .. } => {
                let port = if secure { tls_port } else { port };
                format!("{scheme}://127.0.0.1:{port}{path}")
            }
            Server::InProcess {
                plain,
                secure: tls_server,
                ..
            } => {
                let server = if secure { tls_server } else { plain };
                if path == LARGE_PATH {
                    server.url(&format!("/bytes/{LARGE_BYTES}"))
                } else {
                    server.url(path)
                }
            }
        }
    }

    /// The CA the HTTPS side's certificate is signed by, as PEM.
    /// The HTTP/2 (ALPN `h2`) HTTPS URL of `path` (`/small` only in-process).
    pub fn h2_url(&self, path: &str) -> String {
        match self {
            Server::Nginx { h2_port, .. } => format!("https://127.0.0.1:{h2_port}{path}"),
            Server::InProcess { h2, .. } => h2.url(path),
        }
    }

    /// nginx's log of `$connection` serials, one line a request, written in
    /// batches at most [`LOG_FLUSH`] apart (`None`: not asked for, or in-process).
    pub fn connection_log(&self) -> Option<std::path::PathBuf> {
        match self {
            Server::Nginx { connection_log, .. } => connection_log.clone(),
            Server::InProcess { .. } => None,
        }
    }

    pub fn ca_pem(&self) -> String {
        match self {
            Server::Nginx { tls, .. } | Server::InProcess { tls, .. } => tls.ca_pem.clone(),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Server::Nginx { .. } => format!("nginx ({}), 1 worker, loopback", nginx_version()),
            Server::InProcess { .. } => {
                "in-process tokio server (roundtrip_servers), loopback".to_owned()
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Server::Nginx { child, .. } = self {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn nginx_binary() -> Option<&'static str> {
    ["/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/bin/nginx"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
}

fn nginx_version() -> String {
    nginx_binary()
        .and_then(|bin| Command::new(bin).arg("-v").output().ok())
        .map(|out| {
            String::from_utf8_lossy(&out.stderr)
                .trim()
                .replace("nginx version: ", "")
        })
        .unwrap_or_else(|| "nginx".to_owned())
}

/// How long nginx may hold connection-log lines in its buffer.
pub const LOG_FLUSH: Duration = Duration::from_millis(100);

fn start_nginx(tls: ServerTls, log_connections: bool) -> Result<Server, String> {
    let binary = nginx_binary()
        .ok_or("nginx not found: install Debian's nginx, or use --server in-process")?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let root = dir.path();
    let io = |e: std::io::Error| e.to_string();
    std::fs::create_dir_all(root.join("logs")).map_err(io)?;
    std::fs::create_dir_all(root.join("html")).map_err(io)?;
    std::fs::write(root.join("html/small"), "hello, world\n").map_err(io)?;
    // A sparse file: nginx sends zeros, without 256 MiB on disk.
    std::fs::File::create(root.join("html/large"))
        .and_then(|f| f.set_len(LARGE_BYTES))
        .map_err(io)?;
    std::fs::write(root.join("cert.pem"), &tls.cert_pem).map_err(io)?;
    std::fs::write(root.join("key.pem"), &tls.key_pem).map_err(io)?;
    let free_port = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
    };
    let port = free_port().map_err(io)?;
    let tls_port = free_port().map_err(io)?;
    let h2_port = free_port().map_err(io)?;
    let connection_log = log_connections.then(|| root.join("logs/connections.log"));
    // Buffered: a write per request would cost every host alike, but cost.
    let access_log = match &connection_log {
        Some(path) => format!(
            "log_format serial '$connection';\n  access_log {} serial buffer=64k flush={}ms;",
            path.display(),
            LOG_FLUSH.as_millis()
        ),
        None => "access_log off;".to_owned(),
    };
    let config = format!(
        "daemon off;\nmaster_process off;\nworker_processes 1;\npid {root}/nginx.pid;\n\
         error_log {root}/logs/error.log;\nevents {{ worker_connections 4096; }}\n\
         http {{\n  {access_log}\n  keepalive_requests 10000000;\n  sendfile on;\n\
         client_body_temp_path {root}/tmp_body;\n  proxy_temp_path {root}/tmp_proxy;\n\
         fastcgi_temp_path {root}/tmp_fcgi;\n  uwsgi_temp_path {root}/tmp_uwsgi;\n\
         scgi_temp_path {root}/tmp_scgi;\n\
         server {{\n    listen 127.0.0.1:{port};\n    listen 127.0.0.1:{tls_port} ssl;\n\
         listen 127.0.0.1:{h2_port} ssl http2;\n    http2_max_concurrent_streams 128;\n\
         ssl_certificate {root}/cert.pem;\n    ssl_certificate_key {root}/key.pem;\n\
         ssl_session_cache shared:SSL:10m;\n    root {root}/html;\n  }}\n}}\n",
        root = root.display()
    );
    let conf = root.join("nginx.conf");
    std::fs::write(&conf, config).map_err(io)?;
    let child = Command::new(binary)
        .arg("-p")
        .arg(root)
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start nginx: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err()
        || std::net::TcpStream::connect(("127.0.0.1", tls_port)).is_err()
        || std::net::TcpStream::connect(("127.0.0.1", h2_port)).is_err()
    {
        if Instant::now() > deadline {
            return Err(format!("nginx did not listen on {port}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(Server::Nginx {
        port,
        tls_port,
        h2_port,
        tls,
        connection_log,
        child,
        _dir: dir,
    })
}
