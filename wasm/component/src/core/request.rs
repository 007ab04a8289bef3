//! Checking a request before anything is sent: method, URL and headers.
//!
//! Everything a server or an intermediary could misread (CR, LF or NUL in a value, a
//! space in a method, a scheme we do not speak) is refused here, before a dial.

use url::{Position, Url};

use super::error::{Error, ErrorKind};
use super::proxy::Route;

/// Where a request goes, derived from its URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `http` or `https`.
    pub scheme: Scheme,
    /// Host name or IP literal, without brackets.
    pub host: String,
    pub port: u16,
    /// The `Host` header value: host, with the port unless it is the scheme's default.
    pub authority: String,
    /// Origin-form request target: path and query.
    pub path_and_query: String,
    /// `scheme://host:port`, the host bracketed if IPv6.
    pub origin: String,
    /// How connections reach it (direct unless a proxy was chosen).
    pub route: Route,
    /// Pool key: the origin for direct routes, else with the proxy (see `proxy.rs`).
    pub key: String,
}

impl Target {
    /// The target reached by `route`, keyed accordingly.
    pub fn through(mut self, route: Route) -> Target {
        self.key = route.key(&self);
        self.route = route;
        self
    }

    /// The request target on the wire: origin-form, or absolute-form for a forward proxy.
    pub fn request_target(&self) -> String {
        match self.route {
            Route::Forward(_) => format!(
                "{}{}",
                self.origin_without_default_port(),
                self.path_and_query
            ),
            _ => self.path_and_query.clone(),
        }
    }

    /// `host:port`, IPv6 bracketed: what `CONNECT` and SOCKS5 name.
    pub fn host_port(&self) -> String {
        let host_text = self.origin.split_once("://").map_or("", |(_, rest)| rest);
        host_text.to_owned()
    }

    fn origin_without_default_port(&self) -> String {
        format!("{}://{}", self.scheme.as_str(), self.authority)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// Parses and checks an absolute request URL.
pub fn target(url: &str) -> Result<Target, Error> {
    let invalid = |why: String| Error::new(ErrorKind::UriInvalid, why);
    let parsed = Url::parse(url).map_err(|e| invalid(format!("invalid URL {url:?}: {e}")))?;
    // WHATWG parsing turns `http:///path` into host `path`; Go and curl see no host.
    let after_scheme = url.split_once("://").map_or("", |(_, rest)| rest);
    if after_scheme.is_empty() || after_scheme.starts_with('/') {
        return Err(invalid(format!("no host in request URL {url:?}")));
    }
    let scheme = match parsed.scheme() {
        "http" => Scheme::Http,
        "https" => Scheme::Https,
        other => {
            return Err(invalid(format!(
                "unsupported protocol scheme {other:?} in {url:?}"
            )));
        }
    };
    // `Url` re-serialises the host with brackets for IPv6 and lower-cased domains; the
    // parts below are slices of that one serialisation (no formatting per request).
    let host_text = parsed.host_str().unwrap_or_default();
    let host = match parsed.host() {
        Some(url::Host::Domain(domain)) if !domain.is_empty() => domain.to_owned(),
        Some(url::Host::Ipv4(_)) => host_text.to_owned(),
        Some(url::Host::Ipv6(ip)) => ip.to_string(),
        _ => return Err(invalid(format!("no host in request URL {url:?}"))),
    };
    let port = parsed
        .port_or_known_default()
        .ok_or_else(|| invalid(format!("no port for URL {url:?}")))?;
    let authority = parsed[Position::BeforeHost..Position::AfterPort].to_owned();
    let path_and_query = parsed[Position::BeforePath..Position::AfterQuery].to_owned();
    let port_text = match parsed.port() {
        Some(_) => &parsed[Position::BeforePort..Position::AfterPort],
        None if scheme == Scheme::Https => "443",
        None => "80",
    };
    let origin = [scheme.as_str(), "://", host_text, ":", port_text].concat();
    Ok(Target {
        scheme,
        host,
        port,
        authority,
        path_and_query,
        key: origin.clone(),
        origin,
        route: Route::Direct,
    })
}

/// RFC 9110 `tchar`.
pub use roundtrip_fields::is_token;

pub fn check_method(method: &str) -> Result<(), Error> {
    if is_token(method) {
        Ok(())
    } else {
        Err(Error::new(
            ErrorKind::MethodInvalid,
            format!("invalid method {method:?}"),
        ))
    }
}

pub fn check_header(name: &str, value: &[u8]) -> Result<(), Error> {
    roundtrip_fields::check(name, value).map_err(Error::from)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn targets_carry_key_authority_and_origin_form() {
        let t = target("http://Example.COM/a/b?x=1#frag").unwrap();
        assert_eq!(t.key, "http://example.com:80");
        assert_eq!(t.authority, "example.com");
        assert_eq!(t.path_and_query, "/a/b?x=1");
        let t = target("https://127.0.0.1:8443").unwrap();
        assert_eq!((t.scheme, t.port), (Scheme::Https, 8443));
        assert_eq!(t.authority, "127.0.0.1:8443");
        assert_eq!(t.path_and_query, "/");
        let t = target("http://[::1]:8080/").unwrap();
        assert_eq!(t.host, "::1");
        assert_eq!(t.authority, "[::1]:8080");
        assert_eq!(t.key, "http://[::1]:8080");
        // User info never reaches the authority or the key; a default port written out
        // is left out of the authority, kept in the key.
        let t = target("http://user:pw@Example.com:8080/p?q").unwrap();
        assert_eq!(t.host, "example.com");
        assert_eq!(t.authority, "example.com:8080");
        assert_eq!(t.key, "http://example.com:8080");
        assert_eq!(t.path_and_query, "/p?q");
        let t = target("https://user@example.com:443").unwrap();
        assert_eq!(t.authority, "example.com");
        assert_eq!(t.key, "https://example.com:443");
        let t = target("http://10.0.0.1:9/x").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("10.0.0.1", 9));
        assert_eq!(t.authority, "10.0.0.1:9");
    }

    #[test]
    fn unusable_urls_are_refused() {
        for url in [
            "ftp://example.com/",
            "not a url",
            "http:///path",
            "/relative",
            "file:///etc/passwd",
        ] {
            assert_eq!(
                target(url).unwrap_err().kind,
                ErrorKind::UriInvalid,
                "{url}"
            );
        }
    }

    #[test]
    fn methods_must_be_tokens() {
        assert!(check_method("GET").is_ok());
        assert!(check_method("M-SEARCH").is_ok());
        for bad in ["", "GET /", "GE\rT", "GÉT"] {
            assert_eq!(
                check_method(bad).unwrap_err().kind,
                ErrorKind::MethodInvalid
            );
        }
    }

    #[test]
    fn headers_refuse_control_bytes_and_bad_names() {
        assert!(check_header("X-Ok", b"any bytes \xff at all, \ttabs too").is_ok());
        for (name, value) in [
            ("X-A", &b"a\r\nInjected: 1"[..]),
            ("X-A", b"a\nb"),
            ("X-A", b"a\0b"),
            // Found by the request_roundtrip fuzz target: DEL and other controls.
            ("X-A", b"a\x7fb"),
            ("X-A", b"a\x01b"),
            ("X-A", b"a\x1bb"),
            ("Bad Name", b"v"),
            ("", b"v"),
            ("X:A", b"v"),
        ] {
            assert_eq!(
                check_header(name, value).unwrap_err().kind,
                ErrorKind::HeaderInvalid,
                "{name:?}"
            );
        }
    }
}
