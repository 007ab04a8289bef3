//! Checking a request before anything is sent: method, URL and headers.
//!
//! Everything a server or an intermediary could misread (CR, LF or NUL in a value, a
//! space in a method, a scheme we do not speak) is refused here, before a dial.

use roundtrip_fields::is_token;
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

    /// The port a URL of this scheme means when it names none, as written.
    fn default_port(self) -> &'static str {
        match self {
            Scheme::Http => "80",
            Scheme::Https => "443",
        }
    }
}

/// Parses and checks an absolute request URL.
pub fn target(url: &str) -> Result<Target, Error> {
    match canonical_target(url) {
        Some(target) => Ok(target),
        None => parsed_target(url),
    }
}

/// The target as `Url::parse` reads the URL (WHATWG parsing: any form).
fn parsed_target(url: &str) -> Result<Target, Error> {
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
        None => scheme.default_port(),
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

/// The target of a URL already written the way `Url` would write it, sliced from the
/// URL itself without parsing it: a lower-case `http`/`https` scheme, a lower-case
/// host name (or a dotted-quad IPv4 address) with no user info, a port that is not
/// the scheme's default, and a path and query of characters WHATWG parsing leaves as
/// they are, with no dot segments and no fragment. A host hands over URLs in this
/// form (`http::Uri`'s); anything else goes through `Url::parse`, and
/// `tests::the_fast_path_agrees_with_url_parse` holds the two to one answer.
fn canonical_target(url: &str) -> Option<Target> {
    let (scheme, rest) = if let Some(rest) = url.strip_prefix("http://") {
        (Scheme::Http, rest)
    } else {
        (Scheme::Https, url.strip_prefix("https://")?)
    };
    let authority_end = rest.find('/')?;
    let (authority, path_and_query) = rest.split_at(authority_end);
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (authority, None),
    };
    if !is_canonical_host(host) {
        return None;
    }
    let port_text = match port {
        None => scheme.default_port(),
        // Written out, a port is canonical only as `Url` writes it: digits without a
        // leading zero, and not the scheme's default (`Url` leaves that out).
        Some(text) => {
            let canonical = !text.is_empty()
                && text.bytes().all(|b| b.is_ascii_digit())
                && (text == "0" || !text.starts_with('0'))
                && text != scheme.default_port();
            canonical.then_some(text)?
        }
    };
    let port = port_text.parse::<u16>().ok()?;
    if !is_canonical_path_and_query(path_and_query) {
        return None;
    }
    let origin = [scheme.as_str(), "://", host, ":", port_text].concat();
    Some(Target {
        scheme,
        host: host.to_owned(),
        port,
        authority: authority.to_owned(),
        path_and_query: path_and_query.to_owned(),
        key: origin.clone(),
        origin,
        route: Route::Direct,
    })
}

/// A host `Url` writes as it is: a dotted-quad IPv4 address, or a name of lower-case
/// letters, digits and inner hyphens whose last label is not a number (WHATWG parses
/// those as IPv4) and no label of which is punycode (`xn--`, checked by IDNA).
fn is_canonical_host(host: &str) -> bool {
    let labels = || host.split('.');
    let is_octet = |label: &str| {
        !label.is_empty()
            && label.len() <= 3
            && label.bytes().all(|b| b.is_ascii_digit())
            && (label == "0" || !label.starts_with('0'))
            && label.parse::<u8>().is_ok()
    };
    if labels().count() == 4 && labels().all(is_octet) {
        return true;
    }
    let is_label = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with("xn--")
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    };
    let last = labels().next_back().unwrap_or_default();
    host.len() <= 253
        && labels().all(is_label)
        && last.bytes().any(|b| b.is_ascii_lowercase() || b == b'-')
        && !last.starts_with("0x")
}

/// A path (from its `/`) and query made only of characters WHATWG parsing keeps as
/// they are, with whole `%XX` escapes and no `.`/`..` segment (plain or escaped).
fn is_canonical_path_and_query(text: &str) -> bool {
    let (path, query) = text.split_once('?').unwrap_or((text, ""));
    let kept = |b: u8| b.is_ascii_alphanumeric() || b"-._~!$&()*+,;=:@/".contains(&b);
    let escapes_whole = |part: &str| {
        let bytes = part.as_bytes();
        bytes.iter().enumerate().all(|(i, &b)| {
            b != b'%'
                || (bytes.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                    && bytes.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
        })
    };
    let no_dot_segment = path
        .split('/')
        .all(|segment| segment != "." && segment != "..")
        && !path
            .as_bytes()
            .windows(3)
            .any(|w| w[0] == b'%' && w[1] == b'2' && w[2].eq_ignore_ascii_case(&b'e'));
    path.starts_with('/')
        && path.bytes().all(|b| kept(b) || b == b'%' || b == b'\'')
        && query.bytes().all(|b| kept(b) || b == b'%' || b == b'?')
        && escapes_whole(path)
        && escapes_whole(query)
        && no_dot_segment
}

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

    /// The fast path answers only for URLs `Url` would write the same way, and then
    /// as `Url::parse` would: checked on hand-picked URLs and on 200 000 made of the
    /// characters that matter (a fixed seed: the same ones every run).
    #[test]
    fn the_fast_path_agrees_with_url_parse() {
        let agree = |url: &str| {
            if let Some(fast) = canonical_target(url) {
                assert_eq!(Ok(fast), parsed_target(url), "{url:?}");
                true
            } else {
                false
            }
        };
        for url in [
            "http://127.0.0.1:8080/small",
            "https://example.com/a/b?x=1&y=%20z",
            "http://a-b.example/",
            "http://example.com:65535/",
        ] {
            assert!(agree(url), "{url:?} should take the fast path");
        }
        for url in [
            "http://Example.com/",
            "http://example.com:80/",
            "https://example.com:443/",
            "http://example.com",
            "http://u:p@example.com/",
            "http://[::1]:8080/",
            "http://1.2.3/",
            "http://127.1/",
            "http://0x7f.0.0.1/",
            "http://a.b.09/",
            "http://xn--nxasmq6b.com/",
            "http://a/./b",
            "http://a/%2E%2e/b",
            "http://a/b#frag",
            "http://a/b c",
            "http://a:0080/",
            "http://a./",
        ] {
            assert!(!agree(url), "{url:?} should go through Url::parse");
        }
        let alphabet: &[&str] = &[
            "a", "Z", "0", "1", "9", "-", ".", "..", "/", "//", ":", "::", "@", "%", "%2e", "%2E",
            "%4", "%41", "?", "#", "'", "\\", " ", "[", "]", "x", "xn--", "0x", "80", "443", "255",
            "256", "~", "!", "&", "=", "é", "\t",
        ];
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let hosts: &[&str] = &[
            "a",
            "b0",
            "x-y",
            "127.0.0.1",
            "1",
            "255",
            "256",
            ".",
            "-",
            "0x1",
            "xn--a",
            "A",
            "com",
            "09",
            "",
        ];
        let ports: &[&str] = &["", ":80", ":443", ":8080", ":0", ":08", ":65536", ":"];
        let mut pick = |from: &[&str]| from[(next() % from.len() as u64) as usize].to_owned();
        let mut fast = 0;
        for i in 0..200_000 {
            let mut url = String::from(if i % 2 == 0 { "http://" } else { "https://" });
            if i % 4 < 2 {
                // Shaped like a URL: host, port, path and query from the alphabet.
                url.push_str(&pick(hosts));
                if i % 3 == 0 {
                    url.push('.');
                    url.push_str(&pick(hosts));
                }
                url.push_str(&pick(ports));
                url.push('/');
            }
            for _ in 0..i % 9 {
                url.push_str(&pick(alphabet));
            }
            fast += usize::from(agree(&url));
        }
        assert!(
            fast > 2_000,
            "only {fast} took the fast path: the test proves little"
        );
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
}
