//! Opening a tunnel through a proxy on a freshly dialled connection (Go's
//! `persistConn` setup for `CONNECT` and SOCKS5): the I/O half of `core::tunnel`.
//! It runs on the connection's handshake `read`/`write` (inside the proxy's TLS for an
//! `https://` proxy), before TLS to the target, within `proxy-connect-timeout`.

use std::net::IpAddr;
use std::time::Duration;

use futures::future::LocalBoxFuture;

use super::bindings::roundtrip::transport::net::{self, Connection};
use super::bindings::roundtrip::transport::types::ErrorCode;
use super::clock;
use super::errors::to_code;
use super::transport::Settings;
use crate::core::decode::{self, ResponseHead};
use crate::core::proxy::{Proxy, ProxyKind, Route};
use crate::core::request::Target;
use crate::core::tunnel::{self, SocksAddress, SocksMethod};

/// Bytes asked for per handshake read.
const HANDSHAKE_READ: u32 = 4096;

/// Sets up the tunnel `target.route` asks for, if any; the proxy's answer to `CONNECT`
/// is left in `answer`, whether it opened the tunnel or not.
pub async fn open(
    settings: &Settings,
    socket: &Connection,
    target: &Target,
    answer: &mut Option<ResponseHead>,
) -> Result<(), ErrorCode> {
    let (proxy, work): (&Proxy, LocalBoxFuture<'_, Result<(), ErrorCode>>) = match &target.route {
        Route::Tunnel(proxy) => (
            proxy,
            Box::pin(http_connect(settings, socket, proxy, target, answer)),
        ),
        Route::Socks(proxy) => (proxy, Box::pin(socks5(socket, proxy, target))),
        Route::Direct | Route::Forward(_) => return Ok(()),
    };
    clock::within(settings.proxy_connect_timeout, work)
        .await
        .unwrap_or_else(|| {
            let limit = Duration::from_nanos(settings.proxy_connect_timeout.unwrap_or(0));
            Err(ErrorCode::ConnectionTimeout(format!(
                "proxy {} did not open a tunnel to {} within {limit:?}",
                proxy.display,
                target.host_port()
            )))
        })
}

/// `CONNECT host:port`; a 2xx answer opens the tunnel.
async fn http_connect(
    settings: &Settings,
    socket: &Connection,
    proxy: &Proxy,
    target: &Target,
    answer: &mut Option<ResponseHead>,
) -> Result<(), ErrorCode> {
    let authority = target.host_port();
    let auth = proxy.basic_auth();
    let headers = settings
        .proxy_connect_headers
        .as_ref()
        .map_err(Clone::clone)?;
    let request =
        tunnel::connect_request(&authority, &settings.user_agent, auth.as_deref(), headers);
    let mut io = Handshake::new(socket, &proxy.display);
    io.write(request).await?;
    loop {
        let parsed = decode::parse_response_head(&io.buf, settings.max_response_header_bytes)
            .map_err(|e| {
                ErrorCode::ProxyProtocolError(format!(
                    "proxy {} answered CONNECT with something other than HTTP: {}",
                    proxy.display, e.message
                ))
            })?;
        if let Some((head, used)) = parsed {
            let checked = tunnel::check_connect_response(&proxy.display, &authority, &head);
            *answer = Some(head);
            checked.map_err(to_code)?;
            if used < io.buf.len() {
                return Err(ErrorCode::ProxyProtocolError(format!(
                    "proxy {} sent {} unexpected bytes after its CONNECT response",
                    proxy.display,
                    io.buf.len() - used
                )));
            }
            return Ok(());
        }
        io.fill("CONNECT").await?;
    }
}

/// The SOCKS5 handshake: greeting, optional login, connect.
async fn socks5(socket: &Connection, proxy: &Proxy, target: &Target) -> Result<(), ErrorCode> {
    let name = &proxy.display;
    let mut io = Handshake::new(socket, name);
    let login = proxy
        .username
        .as_deref()
        .map(|user| (user, proxy.password.as_deref().unwrap_or("")));
    io.write(tunnel::socks_greeting(login.is_some())).await?;
    let method = tunnel::socks_method(name, io.array("SOCKS5 greeting").await?, login.is_some())
        .map_err(to_code)?;
    if let (SocksMethod::Login, Some((user, password))) = (method, login) {
        io.write(tunnel::socks_login(name, user, password).map_err(to_code)?)
            .await?;
        tunnel::socks_login_status(name, io.array("SOCKS5 login").await?).map_err(to_code)?;
    }
    let address = match (target.host.parse::<IpAddr>(), proxy.kind) {
        (Ok(ip), _) => SocksAddress::Ip(ip),
        (Err(_), ProxyKind::Socks5 { remote_dns: true }) => SocksAddress::Name(target.host.clone()),
        (Err(_), _) => SocksAddress::Ip(resolve(&target.host).await?),
    };
    io.write(tunnel::socks_connect(name, &address, target.port).map_err(to_code)?)
        .await?;
    let head: [u8; 5] = io.array("SOCKS5 connect").await?;
    let rest = tunnel::socks_reply_rest(name, &target.host_port(), head).map_err(to_code)?;
    io.exact(rest, "SOCKS5 connect").await?;
    if !io.buf.is_empty() {
        return Err(ErrorCode::ProxyProtocolError(format!(
            "SOCKS5 proxy {name} sent unexpected bytes after its connect reply"
        )));
    }
    Ok(())
}

/// `socks5://` resolves the target here (through the host), as curl does.
async fn resolve(host: &str) -> Result<IpAddr, ErrorCode> {
    let addresses = net::resolve(host.to_owned()).await?;
    addresses
        .iter()
        .find_map(|a| a.parse().ok())
        .ok_or_else(|| ErrorCode::DnsError(format!("lookup {host}: no such host")))
}

/// Handshake bytes: what was read and not used yet.
struct Handshake<'a> {
    socket: &'a Connection,
    proxy: &'a str,
    buf: Vec<u8>,
}

impl<'a> Handshake<'a> {
    fn new(socket: &'a Connection, proxy: &'a str) -> Self {
        Self {
            socket,
            proxy,
            buf: Vec::new(),
        }
    }

    async fn write(&self, bytes: Vec<u8>) -> Result<(), ErrorCode> {
        self.socket.write(bytes).await
    }

    /// Reads more; the proxy closing mid-handshake is an error.
    async fn fill(&mut self, during: &str) -> Result<(), ErrorCode> {
        let more = self.socket.read(HANDSHAKE_READ).await?;
        if more.is_empty() {
            return Err(ErrorCode::ConnectionTerminated(format!(
                "proxy {} closed the connection during the {during} handshake",
                self.proxy
            )));
        }
        self.buf.extend_from_slice(&more);
        Ok(())
    }

    /// Takes exactly `n` bytes.
    async fn exact(&mut self, n: usize, during: &str) -> Result<Vec<u8>, ErrorCode> {
        while self.buf.len() < n {
            self.fill(during).await?;
        }
        Ok(self.buf.drain(..n).collect())
    }

    async fn array<const N: usize>(&mut self, during: &str) -> Result<[u8; N], ErrorCode> {
        let bytes = self.exact(N, during).await?;
        let mut out = [0; N];
        out.copy_from_slice(&bytes);
        Ok(out)
    }
}
