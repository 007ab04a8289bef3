//! The bytes of a tunnel handshake through a proxy: HTTP `CONNECT` (RFC 9110 §9.3.6)
//! and SOCKS5 (RFC 1928, with RFC 1929 username/password). The driver writes what is
//! built here and feeds back what the proxy answers.
//!
//! ```text
//!  CONNECT:  client ── CONNECT host:port ──► proxy ── 2xx head ──► tunnel open
//!  SOCKS5:   client ── greeting ──► proxy ── method ──► [login ──► status]
//!                   ── connect(addr) ──► proxy ── reply(code, bound addr) ──► tunnel open
//! ```

use std::net::IpAddr;

use super::decode::{Fields, ResponseHead};
use super::error::{Error, ErrorKind};

/// The `CONNECT` request for `authority` (`host:port`, IPv6 bracketed). `auth` is a
/// `Proxy-Authorization` value from the proxy URL, unless `headers` carry one.
pub fn connect_request(
    authority: &str,
    user_agent: &str,
    auth: Option<&str>,
    headers: &Fields,
) -> Vec<u8> {
    let has = |name: &str| headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name));
    let mut out = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n").into_bytes();
    let mut put = |name: &str, value: &[u8]| {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    };
    if !user_agent.is_empty() && !has("user-agent") {
        put("User-Agent", user_agent.as_bytes());
    }
    if let Some(auth) = auth.filter(|_| !has("proxy-authorization")) {
        put("Proxy-Authorization", auth.as_bytes());
    }
    for (name, value) in headers
        .iter()
        .filter(|(n, _)| !n.eq_ignore_ascii_case("host"))
    {
        put(name, value);
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// Whether the proxy opened the tunnel: any 2xx (RFC 9110 §15.3). Anything else is
/// refused with the proxy's own status text.
pub fn check_connect_response(
    proxy: &str,
    authority: &str,
    head: &ResponseHead,
) -> Result<(), Error> {
    if (200..300).contains(&head.status) {
        return Ok(());
    }
    let text = if head.reason.is_empty() {
        head.status.to_string()
    } else {
        format!("{} {}", head.status, head.reason)
    };
    Err(Error::new(
        ErrorKind::ProxyRefused,
        format!("proxy {proxy} refused CONNECT to {authority}: {text}"),
    ))
}

/// RFC 1928 authentication methods.
const NO_AUTH: u8 = 0x00;
const USER_PASS: u8 = 0x02;
const NO_ACCEPTABLE: u8 = 0xff;
const SOCKS5: u8 = 0x05;

/// The greeting: the methods offered (username/password only with credentials).
pub fn socks_greeting(with_login: bool) -> Vec<u8> {
    if with_login {
        vec![SOCKS5, 2, NO_AUTH, USER_PASS]
    } else {
        vec![SOCKS5, 1, NO_AUTH]
    }
}

/// What the proxy chose in answer to the greeting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocksMethod {
    NoAuth,
    Login,
}

pub fn socks_method(proxy: &str, reply: [u8; 2], with_login: bool) -> Result<SocksMethod, Error> {
    match reply {
        [SOCKS5, NO_AUTH] => Ok(SocksMethod::NoAuth),
        [SOCKS5, USER_PASS] if with_login => Ok(SocksMethod::Login),
        [SOCKS5, NO_ACCEPTABLE] | [SOCKS5, USER_PASS] => Err(Error::new(
            ErrorKind::ProxyRefused,
            if with_login {
                format!("SOCKS5 proxy {proxy} accepts none of the offered authentication methods")
            } else {
                format!(
                    "SOCKS5 proxy {proxy} requires a username and password (put them in the proxy URL)"
                )
            },
        )),
        [version, method] => Err(socks_garbled(
            proxy,
            &format!("method reply {version:#04x} {method:#04x}"),
        )),
    }
}

/// The RFC 1929 login request; each part must fit in 255 bytes.
pub fn socks_login(proxy: &str, user: &str, password: &str) -> Result<Vec<u8>, Error> {
    let too_long = |what: &str| {
        Error::new(
            ErrorKind::ProxyProtocol,
            format!("SOCKS5 proxy {proxy}: the {what} is longer than 255 bytes"),
        )
    };
    let user_len = u8::try_from(user.len()).map_err(|_| too_long("username"))?;
    let pass_len = u8::try_from(password.len()).map_err(|_| too_long("password"))?;
    let mut out = vec![0x01, user_len];
    out.extend_from_slice(user.as_bytes());
    out.push(pass_len);
    out.extend_from_slice(password.as_bytes());
    Ok(out)
}

pub fn socks_login_status(proxy: &str, reply: [u8; 2]) -> Result<(), Error> {
    match reply {
        [0x01, 0x00] => Ok(()),
        [0x01, _] => Err(Error::new(
            ErrorKind::ProxyRefused,
            format!("SOCKS5 proxy {proxy} rejected the username and password"),
        )),
        [version, status] => Err(socks_garbled(
            proxy,
            &format!("login reply {version:#04x} {status:#04x}"),
        )),
    }
}

/// Where the SOCKS5 tunnel should lead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SocksAddress {
    Ip(IpAddr),
    /// Resolved by the proxy (`socks5h://`).
    Name(String),
}

pub fn socks_connect(proxy: &str, address: &SocksAddress, port: u16) -> Result<Vec<u8>, Error> {
    let mut out = vec![SOCKS5, 0x01, 0x00];
    match address {
        SocksAddress::Ip(IpAddr::V4(ip)) => {
            out.push(0x01);
            out.extend_from_slice(&ip.octets());
        }
        SocksAddress::Ip(IpAddr::V6(ip)) => {
            out.push(0x04);
            out.extend_from_slice(&ip.octets());
        }
        SocksAddress::Name(name) => {
            let len = u8::try_from(name.len()).map_err(|_| {
                Error::new(
                    ErrorKind::ProxyProtocol,
                    format!("SOCKS5 proxy {proxy}: host name {name:?} is longer than 255 bytes"),
                )
            })?;
            out.push(0x03);
            out.push(len);
            out.extend_from_slice(name.as_bytes());
        }
    }
    out.extend_from_slice(&port.to_be_bytes());
    Ok(out)
}

/// Checks the first 5 bytes of the connect reply (version, code, reserved, address
/// type, first address byte) and returns how many bytes of the reply follow them.
pub fn socks_reply_rest(proxy: &str, target: &str, head: [u8; 5]) -> Result<usize, Error> {
    let [version, code, _reserved, address_type, first] = head;
    if version != SOCKS5 {
        return Err(socks_garbled(
            proxy,
            &format!("reply version {version:#04x}"),
        ));
    }
    if code != 0 {
        return Err(Error::new(
            ErrorKind::ProxyRefused,
            format!(
                "SOCKS5 proxy {proxy} could not connect to {target}: {}",
                socks_reply_text(code)
            ),
        ));
    }
    // Address bytes after the first one, then the 2-byte port.
    match address_type {
        0x01 => Ok(3 + 2),
        0x04 => Ok(15 + 2),
        0x03 => Ok(usize::from(first) + 2),
        other => Err(socks_garbled(proxy, &format!("address type {other:#04x}"))),
    }
}

/// RFC 1928 §6 reply codes.
fn socks_reply_text(code: u8) -> String {
    match code {
        0x01 => "general SOCKS server failure".to_owned(),
        0x02 => "connection not allowed by ruleset".to_owned(),
        0x03 => "network unreachable".to_owned(),
        0x04 => "host unreachable".to_owned(),
        0x05 => "connection refused".to_owned(),
        0x06 => "TTL expired".to_owned(),
        0x07 => "command not supported".to_owned(),
        0x08 => "address type not supported".to_owned(),
        other => format!("unknown reply code {other:#04x}"),
    }
}

fn socks_garbled(proxy: &str, what: &str) -> Error {
    Error::new(
        ErrorKind::ProxyProtocol,
        format!("SOCKS5 proxy {proxy} sent an invalid answer ({what}); is it a SOCKS5 proxy?"),
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn connect_request_is_exact() {
        let headers: Fields = [("X-Trace", "1")].into_iter().collect();
        let wire = connect_request("example.com:443", "rt/1", Some("Basic dTpw"), &headers);
        assert_eq!(
            String::from_utf8(wire).unwrap(),
            "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\nUser-Agent: rt/1\r\n\
             Proxy-Authorization: Basic dTpw\r\nX-Trace: 1\r\n\r\n"
        );
        // The caller's own Proxy-Authorization wins; no User-Agent when empty.
        let headers: Fields = [("Proxy-Authorization", "Bearer t")].into_iter().collect();
        let wire = connect_request("[::1]:8443", "", Some("Basic dTpw"), &headers);
        assert_eq!(
            String::from_utf8(wire).unwrap(),
            "CONNECT [::1]:8443 HTTP/1.1\r\nHost: [::1]:8443\r\nProxy-Authorization: Bearer t\r\n\r\n"
        );
    }

    fn head(status: u16, reason: &str) -> ResponseHead {
        ResponseHead {
            status,
            reason: reason.to_owned(),
            version_minor: 1,
            headers: Fields::new(),
        }
    }

    #[test]
    fn connect_answers_other_than_2xx_are_refusals_with_the_status_text() {
        assert!(
            check_connect_response("http://p:1", "a:443", &head(200, "Connection established"))
                .is_ok()
        );
        assert!(check_connect_response("http://p:1", "a:443", &head(204, "")).is_ok());
        let err = check_connect_response("http://p:1", "a:443", &head(403, "Access violation"))
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::ProxyRefused);
        assert_eq!(
            err.message,
            "proxy http://p:1 refused CONNECT to a:443: 403 Access violation"
        );
        let err = check_connect_response("http://p:1", "a:443", &head(407, "")).unwrap_err();
        assert!(err.message.ends_with(": 407"), "{}", err.message);
    }

    #[test]
    fn socks_messages_are_exact() {
        assert_eq!(socks_greeting(false), [5, 1, 0]);
        assert_eq!(socks_greeting(true), [5, 2, 0, 2]);
        assert_eq!(
            socks_login("p", "u", "pw").unwrap(),
            [1, 1, b'u', 2, b'p', b'w']
        );
        assert_eq!(
            socks_connect("p", &SocksAddress::Ip("127.0.0.1".parse().unwrap()), 8080).unwrap(),
            [5, 1, 0, 1, 127, 0, 0, 1, 0x1f, 0x90]
        );
        assert_eq!(
            socks_connect("p", &SocksAddress::Name("ab.c".to_owned()), 443).unwrap(),
            [5, 1, 0, 3, 4, b'a', b'b', b'.', b'c', 1, 187]
        );
        let v6 = socks_connect("p", &SocksAddress::Ip("::1".parse().unwrap()), 1).unwrap();
        assert_eq!((v6[3], v6.len()), (4, 4 + 16 + 2));
    }

    #[test]
    fn socks_answers_are_checked() {
        assert_eq!(
            socks_method("p", [5, 0], true).unwrap(),
            SocksMethod::NoAuth
        );
        assert_eq!(socks_method("p", [5, 2], true).unwrap(), SocksMethod::Login);
        assert_eq!(
            socks_method("p", [5, 0xff], false).unwrap_err().kind,
            ErrorKind::ProxyRefused
        );
        assert_eq!(
            socks_method("p", [5, 2], false).unwrap_err().kind,
            ErrorKind::ProxyRefused
        );
        assert_eq!(
            socks_method("p", [b'H', b'T'], false).unwrap_err().kind,
            ErrorKind::ProxyProtocol
        );
        assert!(socks_login_status("p", [1, 0]).is_ok());
        assert_eq!(
            socks_login_status("p", [1, 1]).unwrap_err().kind,
            ErrorKind::ProxyRefused
        );
        assert_eq!(socks_reply_rest("p", "a:1", [5, 0, 0, 1, 127]).unwrap(), 5);
        assert_eq!(socks_reply_rest("p", "a:1", [5, 0, 0, 4, 0]).unwrap(), 17);
        assert_eq!(socks_reply_rest("p", "a:1", [5, 0, 0, 3, 9]).unwrap(), 11);
        let refused = socks_reply_rest("p", "a:1", [5, 5, 0, 1, 0]).unwrap_err();
        assert_eq!(refused.kind, ErrorKind::ProxyRefused);
        assert_eq!(
            refused.message,
            "SOCKS5 proxy p could not connect to a:1: connection refused"
        );
        assert_eq!(
            socks_reply_rest("p", "a:1", [5, 0, 0, 9, 0])
                .unwrap_err()
                .kind,
            ErrorKind::ProxyProtocol
        );
        let long = "x".repeat(256);
        assert!(socks_login("p", &long, "").is_err());
        assert!(socks_connect("p", &SocksAddress::Name(long), 1).is_err());
    }
}
