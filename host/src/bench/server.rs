//! The server every client of a benchmark talks to: Debian's nginx on a free loopback
//! port (a process of its own, keep-alive without limit), or the in-process server.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::local_server::LocalServer;

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
        child: Child,
        _dir: tempfile::TempDir,
    },
    InProcess(LocalServer),
}

impl Server {
    pub async fn start(kind: ServerKind) -> Result<Server, String> {
        match kind {
            ServerKind::InProcess => LocalServer::start()
                .await
                .map(Server::InProcess)
                .map_err(|e| format!("cannot start the in-process server: {e}")),
            ServerKind::Nginx => start_nginx(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        match self {
            Server::Nginx { port, .. } => format!("http://127.0.0.1:{port}{path}"),
            Server::InProcess(server) if path == LARGE_PATH => {
                server.url(&format!("/bytes/{LARGE_BYTES}"))
            }
            Server::InProcess(server) => server.url(path),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Server::Nginx { .. } => format!("nginx ({}), 1 worker, loopback", nginx_version()),
            Server::InProcess(_) => {
                "in-process tokio server (roundtrip_host::local_server), loopback".to_owned()
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

fn start_nginx() -> Result<Server, String> {
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
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(io)?
        .port();
    let config = format!(
        "daemon off;\nmaster_process off;\nworker_processes 1;\npid {root}/nginx.pid;\n\
         error_log {root}/logs/error.log;\nevents {{ worker_connections 4096; }}\n\
         http {{\n  access_log off;\n  keepalive_requests 10000000;\n  sendfile on;\n\
         client_body_temp_path {root}/tmp_body;\n  proxy_temp_path {root}/tmp_proxy;\n\
         fastcgi_temp_path {root}/tmp_fcgi;\n  uwsgi_temp_path {root}/tmp_uwsgi;\n\
         scgi_temp_path {root}/tmp_scgi;\n\
         server {{\n    listen 127.0.0.1:{port};\n    root {root}/html;\n  }}\n}}\n",
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
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            return Err(format!("nginx did not listen on {port}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(Server::Nginx {
        port,
        child,
        _dir: dir,
    })
}
