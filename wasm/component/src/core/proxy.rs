//! Choosing a proxy for a request, as Go's `golang.org/x/net/http/httpproxy` does, and
//! the route a connection takes through it.
//!
//! A request's route decides how its connection is opened and which pool key it has:
//!
//! ```text
//!  target        proxy        route     wire                                 pool key
//!  http://a      —            Direct    GET /path                            http://a:80
//!  http://a      http://p     Forward   GET http://a/path, to p              http://p:3128|http
//!  https://a     http://p     Tunnel    CONNECT a:443 to p, then TLS to a    http://p:3128|https://a:443
//!  http(s)://a   socks5://p   Socks     SOCKS5 CONNECT a, then (TLS to a)    socks5://p:1080|https://a:443
//! ```
//!
//! An `https://p` proxy is an HTTP proxy reached over TLS (Go's and curl's): the same
//! routes, each first running TLS to `p` (checked against the proxy roots), so a tunnel
//! carries TLS to `a` inside TLS to `p`; its keys begin `https://p:443`.
//!
//! A forward proxy connection carries requests for any `http` target (Go keys it by
//! proxy alone); a tunnel leads to one target. Keys name the proxy without its
//! password (they appear in events), but with its user, so two logins never share a
//! tunnel.

use std::net::IpAddr;

use base64::prelude::{BASE64_STANDARD, Engine as _};
use ipnet::IpNet;
use percent_encoding::percent_decode_str;
use url::Url;

use super::error::{Error, ErrorKind};
use super::request::{Scheme, Target};

/// How a proxy is spoken to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyKind {
    /// An HTTP proxy: absolute-form requests for `http`, `CONNECT` tunnels for `https`.
    Http,
    /// SOCKS5; `remote_dns` (`socks5h://`) sends the target's name, else its address.
    Socks5 { remote_dns: bool },
}

/// One proxy, parsed from its URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proxy {
    pub kind: ProxyKind,
    /// Host name or IP literal, without brackets.
    pub host: String,
    pub port: u16,
    /// Reached over TLS (`https://`): the handshake with `host` comes first.
    pub tls: bool,
    /// User info, percent-decoded.
    pub username: Option<String>,
    pub password: Option<String>,
    /// `scheme://[user@]host:port`, never the password: for keys and events.
    pub display: String,
}

/// How a connection reaches its target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Direct,
    /// Requests in absolute form to an HTTP proxy (`http` targets).
    Forward(Proxy),
    /// A `CONNECT` tunnel through an HTTP proxy (`https` targets).
    Tunnel(Proxy),
    /// A SOCKS5 tunnel (either scheme).
    Socks(Proxy),
}

impl Route {
    /// The proxy, if any.
    pub fn proxy(&self) -> Option<&Proxy> {
        match self {
            Route::Direct => None,
            Route::Forward(p) | Route::Tunnel(p) | Route::Socks(p) => Some(p),
        }
    }

    /// The pool key of a connection to `target` on this route (see the table above).
    pub fn key(&self, target: &Target) -> String {
        let origin = &target.origin;
        match self {
            Route::Direct => origin.clone(),
            Route::Forward(p) => format!("{}|http", p.display),
            Route::Tunnel(p) | Route::Socks(p) => format!("{}|{origin}", p.display),
        }
    }
}

impl Proxy {
    /// Parses a proxy URL the way Go's `httpproxy` does: a value without a scheme
    /// (`proxy.corp:3128`) is read as `http://`.
    pub fn parse(text: &str) -> Result<Proxy, Error> {
        let invalid = |why: &str| {
            Error::new(
                ErrorKind::ProxyProtocol,
                format!("invalid proxy address {:?}: {why}", redact(text)),
            )
        };
        let text = text.trim();
        // `proxy:3128` parses as scheme `proxy`: only a value with `://` has a scheme.
        let with_scheme = if text.contains("://") {
            text.to_owned()
        } else {
            format!("http://{text}")
        };
        let parsed = Url::parse(&with_scheme).map_err(|e| invalid(&e.to_string()))?;
        let (kind, default_port) = match parsed.scheme() {
            "http" | "https" => (
                ProxyKind::Http,
                parsed.port_or_known_default().unwrap_or(80),
            ),
            "socks5" => (ProxyKind::Socks5 { remote_dns: false }, 1080),
            "socks5h" => (ProxyKind::Socks5 { remote_dns: true }, 1080),
            other => return Err(invalid(&format!("unsupported proxy scheme {other:?}"))),
        };
        let host = match parsed.host() {
            Some(url::Host::Domain(d)) if !d.is_empty() => d.to_owned(),
            Some(url::Host::Ipv4(ip)) => ip.to_string(),
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            _ => return Err(invalid("no host")),
        };
        let port = parsed.port().unwrap_or(default_port);
        let decode = |s: &str| percent_decode_str(s).decode_utf8_lossy().into_owned();
        let username = (!parsed.username().is_empty()).then(|| decode(parsed.username()));
        let password = parsed.password().map(decode);
        let host_text = parsed.host_str().unwrap_or(&host);
        let user = parsed.username();
        let display = if user.is_empty() {
            format!("{}://{host_text}:{port}", parsed.scheme())
        } else {
            format!("{}://{user}@{host_text}:{port}", parsed.scheme())
        };
        Ok(Proxy {
            kind,
            host,
            port,
            tls: parsed.scheme() == "https",
            username,
            password,
            display,
        })
    }

    /// `Proxy-Authorization` value from the user info, if there is any.
    pub fn basic_auth(&self) -> Option<String> {
        let user = self.username.as_deref()?;
        let credentials = format!("{user}:{}", self.password.as_deref().unwrap_or(""));
        Some(format!("Basic {}", BASE64_STANDARD.encode(credentials)))
    }
}

/// A proxy URL with its password replaced, for messages.
fn redact(text: &str) -> String {
    let Some((user_info, rest)) = text.rsplit_once('@') else {
        return text.to_owned();
    };
    let (scheme, user_info) = match user_info.split_once("://") {
        Some((scheme, user_info)) => (format!("{scheme}://"), user_info),
        None => (String::new(), user_info),
    };
    match user_info.split_once(':') {
        Some((user, _)) => format!("{scheme}{user}:***@{rest}"),
        None => text.to_owned(),
    }
}

/// `NO_PROXY`, parsed once (Go's `httpproxy.config.init`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NoProxy {
    /// `*`: nothing is proxied.
    all: bool,
    addresses: Vec<AddressRule>,
    domains: Vec<DomainRule>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum AddressRule {
    Ip { ip: IpAddr, port: Option<u16> },
    Cidr(IpNet),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct DomainRule {
    /// With a leading dot: `.example.com`.
    suffix: String,
    /// `example.com` also matches itself, `.example.com` and `*.example.com` do not.
    matches_itself: bool,
    port: Option<u16>,
}

impl NoProxy {
    /// Parses a comma-separated list. Entries Go would ignore (`:1`, a port that is not
    /// a number) are ignored.
    pub fn parse(list: &str) -> NoProxy {
        let mut rules = NoProxy::default();
        for entry in list.split(',') {
            let entry = entry.trim().to_ascii_lowercase();
            if entry.is_empty() {
                continue;
            }
            if entry == "*" {
                return NoProxy {
                    all: true,
                    ..NoProxy::default()
                };
            }
            if let Ok(net) = entry.parse::<IpNet>() {
                rules.addresses.push(AddressRule::Cidr(net));
                continue;
            }
            let Some((host, port)) = split_host_port(&entry) else {
                continue;
            };
            if let Ok(ip) = host.parse::<IpAddr>() {
                rules.addresses.push(AddressRule::Ip { ip, port });
                continue;
            }
            let host = host.strip_prefix('*').unwrap_or(host);
            let (suffix, matches_itself) = match host.strip_prefix('.') {
                Some(rest) if !rest.is_empty() => (rest, false),
                Some(_) => continue,
                None => (host, true),
            };
            let suffix = match url::Host::parse(suffix) {
                Ok(url::Host::Domain(ascii)) => ascii,
                _ => suffix.to_owned(),
            };
            rules.domains.push(DomainRule {
                suffix: format!(".{suffix}"),
                matches_itself,
                port,
            });
        }
        rules
    }

    /// Whether a connection to `host:port` goes direct (`host` without brackets).
    pub fn is_direct(&self, host: &str, port: u16) -> bool {
        if self.all {
            return true;
        }
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let port_matches = |rule: Option<u16>| rule.is_none_or(|p| p == port);
        if let Ok(ip) = host.parse::<IpAddr>() {
            let by_address = self.addresses.iter().any(|rule| match rule {
                AddressRule::Ip { ip: want, port } => *want == ip && port_matches(*port),
                AddressRule::Cidr(net) => net.contains(&ip),
            });
            if by_address {
                return true;
            }
        }
        self.domains.iter().any(|rule| {
            let name_matches =
                host.ends_with(&rule.suffix) || (rule.matches_itself && host == rule.suffix[1..]);
            name_matches && port_matches(rule.port)
        })
    }
}

/// `host`, `host:port`, `[v6]`, `[v6]:port`, or a bare IPv6 address. `None` for an
/// entry Go ignores (no host, or a port that is not a number).
fn split_host_port(entry: &str) -> Option<(&str, Option<u16>)> {
    if let Some(rest) = entry.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(port) => Some(port.parse().ok()?),
            None if after.is_empty() => None,
            None => return None,
        };
        return Some((host, port));
    }
    if entry.parse::<IpAddr>().is_ok() {
        return Some((entry, None));
    }
    match entry.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() => Some((host, Some(port.parse().ok()?))),
        Some(_) => None,
        None => Some((entry, None)),
    }
}

/// The proxy settings of one transport.
#[derive(Debug, Clone, Default)]
pub struct Proxies {
    /// A proxy URL that does not parse fails the requests that would use it.
    pub http: Option<Result<Proxy, Error>>,
    pub https: Option<Result<Proxy, Error>>,
    pub no_proxy: NoProxy,
    /// `localhost` and loopback addresses go direct (Go's `ProxyFromEnvironment`).
    pub loopback_direct: bool,
}

impl Proxies {
    pub fn new(
        http: Option<&str>,
        https: Option<&str>,
        no_proxy: &str,
        loopback_direct: bool,
    ) -> Self {
        let parse = |text: Option<&str>| {
            text.map(str::trim)
                .filter(|t| !t.is_empty())
                .map(Proxy::parse)
        };
        Proxies {
            http: parse(http),
            https: parse(https),
            no_proxy: NoProxy::parse(no_proxy),
            loopback_direct,
        }
    }

    /// The route to `target`.
    pub fn route(&self, target: &Target) -> Result<Route, Error> {
        let chosen = match target.scheme {
            Scheme::Http => &self.http,
            Scheme::Https => &self.https,
        };
        let Some(chosen) = chosen else {
            return Ok(Route::Direct);
        };
        if self.loopback_direct && is_loopback(&target.host) {
            return Ok(Route::Direct);
        }
        if self.no_proxy.is_direct(&target.host, target.port) {
            return Ok(Route::Direct);
        }
        let proxy = chosen.clone()?;
        Ok(match (proxy.kind, target.scheme) {
            (ProxyKind::Http, Scheme::Http) => Route::Forward(proxy),
            (ProxyKind::Http, Scheme::Https) => Route::Tunnel(proxy),
            (ProxyKind::Socks5 { .. }, _) => Route::Socks(proxy),
        })
    }
}

/// Go never proxies `localhost` or a loopback IP taken from the environment.
fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::core::request::target;

    fn env_proxies(http: &str, https: &str, no_proxy: &str) -> Proxies {
        fn some(s: &str) -> Option<&str> {
            (!s.is_empty()).then_some(s)
        }
        Proxies::new(some(http), some(https), no_proxy, true)
    }

    /// The proxy URL chosen for `url`, as Go's tests print it.
    fn chosen(proxies: &Proxies, url: &str) -> String {
        match proxies.route(&target(url).unwrap()).unwrap() {
            Route::Direct => "<nil>".to_owned(),
            route => route.proxy().unwrap().display.clone(),
        }
    }

    /// x/net's `proxyForURLTests`.
    #[test]
    fn proxy_for_url_follows_go() {
        let cases: &[(&str, &str, &str, &str, &str)] = &[
            // (HTTP_PROXY, HTTPS_PROXY, NO_PROXY, request, want)
            (
                "127.0.0.1:8080",
                "",
                "",
                "http://example.com",
                "http://127.0.0.1:8080",
            ),
            (
                "cache.corp.example.com:1234",
                "",
                "",
                "http://example.com",
                "http://cache.corp.example.com:1234",
            ),
            (
                "cache.corp.example.com",
                "",
                "",
                "http://example.com",
                "http://cache.corp.example.com:80",
            ),
            (
                "http://127.0.0.1:8080",
                "",
                "",
                "http://example.com",
                "http://127.0.0.1:8080",
            ),
            (
                "https://cache.corp.example.com",
                "",
                "",
                "http://example.com",
                "https://cache.corp.example.com:443",
            ),
            (
                "https://127.0.0.1:8080",
                "",
                "",
                "http://example.com",
                "https://127.0.0.1:8080",
            ),
            (
                "",
                "https://secure.proxy.tld",
                "",
                "https://secure.tld/",
                "https://secure.proxy.tld:443",
            ),
            (
                "socks5://127.0.0.1",
                "",
                "",
                "http://example.com",
                "socks5://127.0.0.1:1080",
            ),
            (
                "socks5h://127.0.0.1",
                "",
                "",
                "http://example.com",
                "socks5h://127.0.0.1:1080",
            ),
            // Don't use the https proxy for http, and the other way round.
            (
                "http.proxy.tld",
                "secure.proxy.tld",
                "",
                "http://insecure.tld/",
                "http://http.proxy.tld:80",
            ),
            (
                "http.proxy.tld",
                "secure.proxy.tld",
                "",
                "https://secure.tld/",
                "http://secure.proxy.tld:80",
            ),
            ("", "", "", "http://example.com", "<nil>"),
            ("http.proxy.tld", "", "", "https://example.com", "<nil>"),
            ("proxy", "", "example.com", "http://example.com/", "<nil>"),
            (
                "proxy",
                "",
                ".example.com",
                "http://example.com/",
                "http://proxy:80",
            ),
            (
                "proxy",
                "",
                "ample.com",
                "http://example.com/",
                "http://proxy:80",
            ),
            (
                "proxy",
                "",
                "example.com",
                "http://foo.example.com/",
                "<nil>",
            ),
            (
                "proxy",
                "",
                ".foo.com",
                "http://example.com/",
                "http://proxy:80",
            ),
            (
                "http://user:pass@proxy:3128",
                "",
                "",
                "http://example.com",
                "http://user@proxy:3128",
            ),
        ];
        for (http, https, no_proxy, url, want) in cases {
            let proxies = env_proxies(http, https, no_proxy);
            assert_eq!(
                chosen(&proxies, url),
                *want,
                "{http:?} {https:?} {no_proxy:?} {url}"
            );
        }
    }

    /// x/net's `UseProxyTests` with their `NO_PROXY`; `true` means "use the proxy".
    #[test]
    fn no_proxy_follows_go() {
        let proxies = env_proxies(
            "proxy",
            "",
            "foobar.com, .barbaz.net, *.wildcard.io, 192.168.1.1, 192.168.1.2:81, \
             192.168.1.3:80, 10.0.0.0/30, 2001:db8::52:0:1, [2001:db8::52:0:2]:443, \
             [2001:db8::52:0:3]:80, 2002:db8:a::45/64",
        );
        let cases: &[(&str, bool)] = &[
            // Never proxy localhost.
            ("localhost", false),
            ("127.0.0.1", false),
            ("127.0.0.2", false),
            ("[::1]", false),
            ("[::2]", true),
            ("192.168.1.1", false),
            ("192.168.1.2", true),
            ("192.168.1.3", false),
            ("192.168.1.4", true),
            ("10.0.0.2", false),
            ("[2001:db8::52:0:1]", false),
            ("[2001:db8::52:0:2]", true),
            ("[2001:db8::52:0:3]", false),
            ("[2002:db8:a::123]", false),
            ("[fe80::424b:c8be:1643:a1b6]", true),
            ("barbaz.net", true),
            ("www.barbaz.net", false),
            ("foobar.com", false),
            ("www.foobar.com", false),
            ("foofoobar.com", true),
            ("baz.com", true),
            ("localhost.net", true),
            ("local.localhost", true),
            ("barbarbaz.net", true),
            ("wildcard.io", true),
            ("nested.wildcard.io", false),
            ("awildcard.io", true),
        ];
        for (host, proxied) in cases {
            let url = format!("http://{host}:80/");
            let route = proxies.route(&target(&url).unwrap()).unwrap();
            assert_eq!(route != Route::Direct, *proxied, "{host}");
        }
        // `*` sends everything direct; a malformed entry is ignored, as in Go.
        let all = env_proxies("proxy", "", "*");
        let invalid = env_proxies("proxy", "", ":1");
        for (host, _) in cases {
            let t = target(&format!("http://{host}/")).unwrap();
            assert_eq!(all.route(&t).unwrap(), Route::Direct, "{host}");
        }
        let t = target("http://example.com/").unwrap();
        assert_ne!(invalid.route(&t).unwrap(), Route::Direct);
    }

    #[test]
    fn ports_in_no_proxy_narrow_the_match() {
        let p = env_proxies("proxy", "proxy", "example.com:8080, .internal:443");
        assert_eq!(chosen(&p, "http://example.com:8080/"), "<nil>");
        assert_eq!(chosen(&p, "http://example.com/"), "http://proxy:80");
        assert_eq!(chosen(&p, "https://db.internal/"), "<nil>");
        assert_eq!(chosen(&p, "http://db.internal/"), "http://proxy:80");
    }

    #[test]
    fn an_explicit_proxy_also_takes_loopback() {
        let p = Proxies::new(Some("http://127.0.0.1:3128"), None, "", false);
        assert_eq!(
            chosen(&p, "http://127.0.0.1:8080/"),
            "http://127.0.0.1:3128"
        );
        let p = Proxies::new(Some("http://127.0.0.1:3128"), None, "127.0.0.1", false);
        assert_eq!(chosen(&p, "http://127.0.0.1:8080/"), "<nil>");
    }

    #[test]
    fn routes_and_keys() {
        let p = Proxies::new(
            Some("http://alice:secret@p:3128"),
            Some("http://alice:secret@p:3128"),
            "",
            false,
        );
        let http = target("http://a.example/x").unwrap();
        let route = p.route(&http).unwrap();
        assert!(matches!(route, Route::Forward(_)));
        assert_eq!(route.key(&http), "http://alice@p:3128|http");
        let https = target("https://a.example/x").unwrap();
        let route = p.route(&https).unwrap();
        assert!(matches!(route, Route::Tunnel(_)));
        assert_eq!(
            route.key(&https),
            "http://alice@p:3128|https://a.example:443"
        );
        let socks = Proxies::new(Some("socks5h://p"), None, "", false);
        let route = socks.route(&http).unwrap();
        assert!(matches!(
            route,
            Route::Socks(Proxy {
                kind: ProxyKind::Socks5 { remote_dns: true },
                ..
            })
        ));
        assert_eq!(route.key(&http), "socks5h://p:1080|http://a.example:80");
        // Over TLS: the same routes, keyed apart from the plain proxy of that name.
        let tls = Proxies::new(Some("https://p"), Some("https://p"), "", false);
        let route = tls.route(&https).unwrap();
        assert!(matches!(
            &route,
            Route::Tunnel(Proxy {
                tls: true,
                port: 443,
                ..
            })
        ));
        assert_eq!(route.key(&https), "https://p:443|https://a.example:443");
        let route = tls.route(&http).unwrap();
        assert!(matches!(&route, Route::Forward(Proxy { tls: true, .. })));
        assert_eq!(route.key(&http), "https://p:443|http");
        assert!(!Proxy::parse("p:3128").unwrap().tls);
    }

    #[test]
    fn credentials_are_decoded_and_encoded_for_basic() {
        let p = Proxy::parse("http://Aladdin:open%20sesame@p:1").unwrap();
        assert_eq!(p.username.as_deref(), Some("Aladdin"));
        assert_eq!(p.password.as_deref(), Some("open sesame"));
        // RFC 7617's example.
        assert_eq!(
            p.basic_auth().unwrap(),
            "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
        );
        assert_eq!(Proxy::parse("http://p:1").unwrap().basic_auth(), None);
    }

    #[test]
    fn unusable_proxies_fail_the_requests_that_use_them_and_hide_the_password() {
        for bad in ["ftp://p", "http://u:hunter2@", "socks4://p"] {
            let p = Proxies::new(Some(bad), None, "", false);
            let err = p
                .route(&target("http://example.com/").unwrap())
                .unwrap_err();
            assert_eq!(err.kind, ErrorKind::ProxyProtocol, "{bad}");
            assert!(!err.message.contains("hunter2"), "{}", err.message);
            // Requests that go direct are not affected.
            assert_eq!(
                p.route(&target("https://example.com/").unwrap()).unwrap(),
                Route::Direct
            );
        }
    }
}
