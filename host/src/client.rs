//! Go's `http.Client` over a [`Transport`]: redirects followed by Go's rules under a
//! policy (`CheckRedirect`), cookies kept in a [`Jar`] (`Client.Jar`, with the public
//! suffix list), and one timeout for the whole exchange, body included
//! (`Client.Timeout`).
//!
//! ```no_run
//! # async fn demo() -> Result<(), roundtrip_host::Error> {
//! use std::sync::Arc;
//! use roundtrip_host::{Client, Config, Jar, Transport};
//! let client = Client::new(Transport::new(Config::default())?)
//!     .cookie_jar(Arc::new(Jar::new()))
//!     .timeout(std::time::Duration::from_secs(30));
//! let request = http::Request::get("http://example.com/").body(Default::default()).unwrap();
//! let response = client.send(request).await?; // after up to 10 requests
//! # Ok(()) }
//! ```
//!
//! A redirect's response body is dropped unread, so the transport drains it (Go 1.27's
//! rule) and its connection serves the next hop.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cookie_store::{CookieDomain, CookieExpiration, CookieStore, RawCookie};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode};
use url::Url;

use crate::body::{Body, ResponseBody};
use crate::error::{Error, ErrorKind};
use crate::transport::Transport;

/// A [`Transport`] with Go's `Client` above it. Cloning it is cheap: the clones share
/// the transport, the policy and the jar.
#[derive(Clone)]
pub struct Client {
    transport: Transport,
    redirects: RedirectPolicy,
    jar: Option<Arc<Jar>>,
    timeout: Option<Duration>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("jar", &self.jar.is_some())
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// The URL a [`Client`]'s response finally came from, in its extensions (Go's
/// `Response.Request.URL`, curl's `url_effective`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EffectiveUrl(pub Url);

impl Client {
    /// Go's zero `Client`: redirects followed up to 10 requests in all, no cookies, no
    /// timeout.
    pub fn new(transport: Transport) -> Self {
        Self {
            transport,
            redirects: RedirectPolicy::default(),
            jar: None,
            timeout: None,
        }
    }

    /// Which redirects are followed (Go's `CheckRedirect`).
    pub fn redirects(mut self, policy: RedirectPolicy) -> Self {
        self.redirects = policy;
        self
    }

    /// Where cookies are kept: sent with each request they match, set by each response
    /// (redirects' included). A jar may be shared by clients.
    pub fn cookie_jar(mut self, jar: Arc<Jar>) -> Self {
        self.jar = Some(jar);
        self
    }

    /// The most the whole exchange may take — connecting, every redirect, reading the
    /// body — after which it fails with [`ErrorKind::Timeout`] (Go's `Client.Timeout`).
    pub fn timeout(mut self, limit: Duration) -> Self {
        self.timeout = Some(limit);
        self
    }

    pub fn redirect_policy(&self) -> &RedirectPolicy {
        &self.redirects
    }

    pub fn transport(&self) -> &Transport {
        &self.transport
    }

    pub fn jar(&self) -> Option<&Arc<Jar>> {
        self.jar.as_ref()
    }

    /// Sends `request`, follows redirects as the policy allows, and returns the last
    /// response (Go's `Client.Do`). Its [`EffectiveUrl`] says where it came from.
    pub async fn send(
        &self,
        request: http::Request<Body>,
    ) -> Result<http::Response<ResponseBody>, Error> {
        let Some(limit) = self.timeout else {
            return self.follow(request).await;
        };
        let deadline = tokio::time::Instant::now() + limit;
        // Dropping the exchange on time abandons its request in the transport.
        match tokio::time::timeout_at(deadline, self.follow(request)).await {
            Ok(response) => Ok(response?.map(|body| body.with_deadline(deadline))),
            Err(_) => Err(Error::new(
                ErrorKind::Timeout,
                format!("Client.Timeout exceeded while awaiting headers (after {limit:?})"),
            )),
        }
    }

    async fn follow(
        &self,
        request: http::Request<Body>,
    ) -> Result<http::Response<ResponseBody>, Error> {
        let (first, body) = request.into_parts();
        let mut uri = first.uri.clone();
        let mut url = Url::parse(&uri.to_string())
            .map_err(|e| Error::new(ErrorKind::UriInvalid, format!("invalid URL {uri}: {e}")))?;
        // What a hop that keeps the body sends again; a stream is sent once.
        let replay = body.replayable();
        let streamed = replay.is_none();
        let mut body = Some(body);
        let mut method = first.method.clone();
        let mut headers = first.headers.clone();
        let mut via: Vec<Url> = Vec::new();
        let mut include_body = true;
        let mut strip_sensitive = false;
        loop {
            let mut request = http::Request::new(body.take().unwrap_or_default());
            *request.method_mut() = method.clone();
            *request.uri_mut() = uri;
            *request.headers_mut() = headers;
            *request.extensions_mut() = first.extensions.clone();
            if let Some(jar) = &self.jar {
                jar.add_to(&url, request.headers_mut());
            }
            let mut response = self.transport.round_trip(request).await?;
            if let Some(jar) = &self.jar {
                jar.store_from(&url, response.headers());
            }
            via.push(url.clone());
            let hop = Hop::after(&method, response.status(), streamed);
            let location = response
                .headers()
                .get(header::LOCATION)
                .map(|l| String::from_utf8_lossy(l.as_bytes()).into_owned());
            // A 3xx without `Location` is an answer like any other (Go, curl), and so is
            // every 3xx when none is followed.
            let (Some(hop), Some(location), false) = (hop, location, self.redirects.is_none())
            else {
                response.extensions_mut().insert(EffectiveUrl(url));
                return Ok(response);
            };
            let next = url.join(&location).map_err(|e| {
                Error::new(
                    ErrorKind::UriInvalid,
                    format!("failed to parse Location header {location:?}: {e}"),
                )
            })?;
            include_body &= hop.keeps_body;
            if !strip_sensitive && via[0].host_str() != next.host_str() {
                strip_sensitive = !is_domain_or_subdomain(next.host_str(), via[0].host_str());
            }
            let mut next_headers = copied(&first.headers, strip_sensitive, !include_body);
            // A `Host` the caller set goes on only where the `Location` was relative
            // (Go, issue 22233): an absolute one names its own host.
            if Url::parse(&location).is_ok() {
                next_headers.remove(header::HOST);
            }
            if let Some(referer) = referer(&url, &next, &first.headers) {
                next_headers.insert(header::REFERER, referer);
            }
            let (head, unread) = response.into_parts();
            let verdict = self.redirects.check(&Redirect {
                method: &hop.method,
                url: &next,
                headers: &next_headers,
                response: &head,
                via: &via,
            });
            match verdict {
                Verdict::Follow => {}
                Verdict::Stop => {
                    let mut response = http::Response::from_parts(head, unread);
                    response.extensions_mut().insert(EffectiveUrl(url));
                    return Ok(response);
                }
                Verdict::Fail(error) => return Err(error),
            }
            if !may_lead(&url, &next) {
                return Err(Error::new(
                    ErrorKind::UriInvalid,
                    format!(
                        "{url} redirects to {next}: a redirect may lead to http:// and \
                         https:// only (curl's --proto-redir default)"
                    ),
                ));
            }
            // Unread: the transport drains what is small and reuses the connection.
            drop(unread);
            method = hop.method;
            uri = uri_of(&next)?;
            url = next;
            headers = next_headers;
            body = match (&replay, include_body) {
                (Some(bytes), true) => Some(Body::from(bytes.clone())),
                _ => None,
            };
        }
    }
}

/// `url` as a request's URI; `http::Uri` needs an authority, so `file:///p` is written
/// `file://localhost/p` (RFC 8089: the same file).
fn uri_of(url: &Url) -> Result<http::Uri, Error> {
    let text = match url.as_str().strip_prefix("file:///") {
        Some(path) => format!("file://localhost/{path}"),
        None => url.as_str().to_owned(),
    };
    text.parse()
        .map_err(|e| Error::new(ErrorKind::UriInvalid, format!("invalid URL {url}: {e}")))
}

/// Whether a redirect from `from` may be followed to `to`: to `http`/`https`, or within
/// `file://` (a directory's slash). A server never leads the client into local files
/// (curl's `--proto-redir`).
fn may_lead(from: &Url, to: &Url) -> bool {
    matches!(to.scheme(), "http" | "https") || (from.scheme() == "file" && to.scheme() == "file")
}

/// How to follow a redirect (Go's `redirectBehavior`).
struct Hop {
    method: Method,
    /// 307 and 308 send the body again; 301, 302 and 303 drop it.
    keeps_body: bool,
}

impl Hop {
    /// `None`: not a redirect to follow — another status, or a 307/308 whose request
    /// body was a stream, which cannot be sent again (Go returns that response).
    fn after(method: &Method, status: StatusCode, streamed: bool) -> Option<Hop> {
        match status.as_u16() {
            301..=303 => Some(Hop {
                // Only GET and HEAD survive; everything else becomes a GET (Go, curl).
                method: if method == Method::GET || method == Method::HEAD {
                    method.clone()
                } else {
                    Method::GET
                },
                keeps_body: false,
            }),
            307 | 308 if !streamed => Some(Hop {
                method: method.clone(),
                keeps_body: true,
            }),
            _ => None,
        }
    }
}

/// The first request's headers for the next hop (Go's `makeHeadersCopier`): without
/// credentials and cookies once the chain has left the first host and its subdomains,
/// without the body's headers once the body was dropped.
fn copied(first: &HeaderMap, strip_sensitive: bool, strip_body: bool) -> HeaderMap {
    const SENSITIVE: [HeaderName; 6] = [
        header::AUTHORIZATION,
        header::WWW_AUTHENTICATE,
        header::COOKIE,
        HeaderName::from_static("cookie2"),
        header::PROXY_AUTHORIZATION,
        header::PROXY_AUTHENTICATE,
    ];
    const OF_THE_BODY: [HeaderName; 6] = [
        header::CONTENT_ENCODING,
        header::CONTENT_LANGUAGE,
        header::CONTENT_LOCATION,
        header::CONTENT_TYPE,
        // Ours to set for the body a hop sends, or not.
        header::CONTENT_LENGTH,
        header::TRANSFER_ENCODING,
    ];
    let mut headers = first.clone();
    if strip_sensitive {
        for name in &SENSITIVE {
            headers.remove(name);
        }
    }
    if strip_body {
        for name in &OF_THE_BODY {
            headers.remove(name);
        }
    }
    headers
}

/// Go's `isDomainOrSubdomain`: `sub` is `parent` or ends in `.parent` (never for an
/// IPv6 address).
fn is_domain_or_subdomain(sub: Option<&str>, parent: Option<&str>) -> bool {
    let (Some(sub), Some(parent)) = (sub, parent) else {
        return false;
    };
    let (sub, parent) = (sub.to_ascii_lowercase(), parent.to_ascii_lowercase());
    sub == parent || (!sub.contains([':', '%', '[']) && sub.ends_with(&format!(".{parent}")))
}

/// Go's `refererForURL`: the last URL without its user info, never from https to http;
/// a `Referer` the caller set is kept.
fn referer(last: &Url, next: &Url, first: &HeaderMap) -> Option<HeaderValue> {
    if last.scheme() == "https" && next.scheme() == "http" {
        return None;
    }
    if let Some(explicit) = first.get(header::REFERER) {
        return Some(explicit.clone());
    }
    let mut last = last.clone();
    let _ = last.set_username("");
    let _ = last.set_password(None);
    HeaderValue::from_str(last.as_str()).ok()
}

/// What a [`RedirectPolicy`] decides on.
#[derive(Debug)]
pub struct Redirect<'a> {
    /// The request the redirect leads to: its method, URL and headers.
    pub method: &'a Method,
    pub url: &'a Url,
    pub headers: &'a HeaderMap,
    /// The redirect response's head: status, version, headers (and extensions, e.g.
    /// its [`ReasonPhrase`](crate::ReasonPhrase)).
    pub response: &'a http::response::Parts,
    /// The URLs requested so far, the first first (Go's `via`).
    pub via: &'a [Url],
}

/// A [`RedirectPolicy`]'s answer.
#[derive(Debug)]
pub enum Verdict {
    Follow,
    /// Return the redirect response itself (Go's `ErrUseLastResponse`).
    Stop,
    /// Fail the exchange with this error.
    Fail(Error),
}

/// Which redirects a [`Client`] follows (Go's `CheckRedirect`).
#[derive(Clone)]
pub struct RedirectPolicy(Option<Arc<Check>>);

/// A policy's decision, made per redirect.
type Check = dyn Fn(&Redirect<'_>) -> Verdict + Send + Sync;

impl RedirectPolicy {
    /// Go's default: stop after `requests` requests in all (10), failing with
    /// [`ErrorKind::TooManyRedirects`] `stopped after 10 redirects`.
    pub fn limit_requests(requests: usize) -> Self {
        Self::custom(move |redirect| {
            if redirect.via.len() >= requests {
                Verdict::Fail(Error::new(
                    ErrorKind::TooManyRedirects,
                    format!(
                        "{} {}: stopped after {requests} redirects",
                        redirect.method, redirect.url
                    ),
                ))
            } else {
                Verdict::Follow
            }
        })
    }

    /// curl's `-L --max-redirs N`: follow up to `redirects` redirects, failing with
    /// [`ErrorKind::TooManyRedirects`] `Maximum (N) redirects followed` at the next.
    pub fn limit_redirects(redirects: usize) -> Self {
        Self::custom(move |redirect| {
            if redirect.via.len() > redirects {
                Verdict::Fail(Error::new(
                    ErrorKind::TooManyRedirects,
                    format!("Maximum ({redirects}) redirects followed"),
                ))
            } else {
                Verdict::Follow
            }
        })
    }

    /// Follow none: the first response is returned, redirect or not, its `Location`
    /// not even read (curl without `-L`).
    pub fn none() -> Self {
        Self(None)
    }

    /// Decide each redirect with `check`.
    pub fn custom(check: impl Fn(&Redirect<'_>) -> Verdict + Send + Sync + 'static) -> Self {
        Self(Some(Arc::new(check)))
    }

    /// This policy's verdict on `redirect` (to wrap one policy in another).
    pub fn check(&self, redirect: &Redirect<'_>) -> Verdict {
        match &self.0 {
            Some(check) => check(redirect),
            None => Verdict::Stop,
        }
    }

    fn is_none(&self) -> bool {
        self.0.is_none()
    }
}

impl Default for RedirectPolicy {
    fn default() -> Self {
        Self::limit_requests(10)
    }
}

impl fmt::Debug for RedirectPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RedirectPolicy")
    }
}

/// A cookie jar (Go's `cookiejar.Jar` with `publicsuffix.List`): RFC 6265's storage
/// and matching rules (the `cookie_store` crate), cookies for a public suffix refused
/// (Mozilla's list, the `psl` crate), read from and written to curl's Netscape cookie
/// files.
#[derive(Debug, Default)]
pub struct Jar {
    store: Mutex<CookieStore>,
}

impl Jar {
    pub fn new() -> Self {
        Self::default()
    }

    /// Keeps the cookies of the `Set-Cookie` fields of a response from `url` (Go's
    /// `SetCookies`). One whose `Domain` is a public suffix is refused, unless it is
    /// the host itself (then it is that host's only).
    pub fn store_from(&self, url: &Url, headers: &HeaderMap) {
        let Ok(mut store) = self.store.lock() else {
            return;
        };
        for field in headers.get_all(header::SET_COOKIE) {
            let Ok(text) = field.to_str() else { continue };
            let Ok(mut cookie) = cookie_store::Cookie::parse(text.to_owned(), url) else {
                continue;
            };
            if let CookieDomain::Suffix(domain) = &cookie.domain
                && psl::suffix_str(domain) == Some(domain.as_str())
            {
                if url.host_str() != Some(domain.as_str()) {
                    continue;
                }
                cookie.domain = CookieDomain::HostOnly(domain.clone());
            }
            let _ = store.insert(cookie.into_owned(), url);
        }
    }

    /// The `Cookie` value for a request to `url` (Go's `Cookies`), if any match.
    pub fn cookies_for(&self, url: &Url) -> Option<HeaderValue> {
        let store = self.store.lock().ok()?;
        let pairs: Vec<String> = store
            .get_request_values(url)
            .map(|(name, value)| format!("{name}={value}"))
            .collect();
        if pairs.is_empty() {
            return None;
        }
        HeaderValue::from_str(&pairs.join("; ")).ok()
    }

    /// Adds the cookies for `url` to a request's `Cookie` field (Go's `AddCookie`).
    fn add_to(&self, url: &Url, headers: &mut HeaderMap) {
        let Some(cookies) = self.cookies_for(url) else {
            return;
        };
        let joined = match headers.get(header::COOKIE) {
            Some(own) => {
                let mut joined = own.as_bytes().to_vec();
                joined.extend_from_slice(b"; ");
                joined.extend_from_slice(cookies.as_bytes());
                HeaderValue::from_bytes(&joined).unwrap_or(cookies)
            }
            None => cookies,
        };
        headers.insert(header::COOKIE, joined);
    }

    /// A jar holding the cookies of a Netscape cookie file (curl's `-b FILE`, `-c`
    /// output): a line per cookie, `domain  subdomains  path  secure  expires  name
    /// value` separated by tabs, `#HttpOnly_` before the domain of an HttpOnly one,
    /// other `#` lines comments. Expired cookies are skipped, as curl skips them.
    pub fn from_netscape(text: &str) -> Result<Self, Error> {
        let jar = Jar::new();
        {
            let mut store = jar
                .store
                .lock()
                .map_err(|_| Error::new(ErrorKind::Config, "cookie jar poisoned"))?;
            for (number, line) in text.lines().enumerate() {
                let bad = |why: &str| {
                    Error::new(
                        ErrorKind::Config,
                        format!("cookie file line {}: {why}: {line:?}", number + 1),
                    )
                };
                let (line, http_only) = match line.strip_prefix("#HttpOnly_") {
                    Some(rest) => (rest, true),
                    None => (line, false),
                };
                if line.trim().is_empty() || line.starts_with('#') {
                    continue;
                }
                let fields: Vec<&str> = line.split('\t').collect();
                let [domain, subdomains, path, secure, expires, name, value] = fields[..] else {
                    return Err(bad("expected 7 tab-separated fields"));
                };
                let host = domain.trim_start_matches('.');
                let secure = secure.eq_ignore_ascii_case("TRUE");
                let scheme = if secure { "https" } else { "http" };
                let url = Url::parse(&format!("{scheme}://{host}{path}"))
                    .map_err(|e| bad(&format!("not a domain and path: {e}")))?;
                let mut raw = RawCookie::new(name.to_owned(), value.to_owned());
                raw.set_path(path.to_owned());
                raw.set_secure(secure);
                raw.set_http_only(http_only);
                if subdomains.eq_ignore_ascii_case("TRUE") {
                    raw.set_domain(host.to_owned());
                }
                let expires: i64 = expires.parse().map_err(|_| bad("bad expiry time"))?;
                if expires != 0 {
                    let at = time::OffsetDateTime::from_unix_timestamp(expires)
                        .map_err(|_| bad("bad expiry time"))?;
                    raw.set_expires(at);
                }
                let Ok(cookie) = cookie_store::Cookie::try_from_raw_cookie(&raw, &url) else {
                    return Err(bad("not a cookie for its domain"));
                };
                // An expired one is refused by the store: skipped.
                let _ = store.insert(cookie.into_owned(), &url);
            }
        }
        Ok(jar)
    }

    /// The jar as a Netscape cookie file, as curl's `-c` writes it (session cookies
    /// with expiry 0).
    pub fn to_netscape(&self) -> String {
        let mut text = String::from(
            "# Netscape HTTP Cookie File\n# https://curl.se/docs/http-cookies.html\n\
             # This file was generated by roundtrip. Edit at your own risk.\n\n",
        );
        let Ok(store) = self.store.lock() else {
            return text;
        };
        let mut lines: Vec<String> = store
            .iter_unexpired()
            .filter_map(|cookie| {
                let (domain, subdomains) = match &cookie.domain {
                    CookieDomain::HostOnly(host) => (host.clone(), "FALSE"),
                    CookieDomain::Suffix(domain) => (format!(".{domain}"), "TRUE"),
                    _ => return None,
                };
                let expires = match cookie.expires {
                    CookieExpiration::AtUtc(at) => at.unix_timestamp(),
                    CookieExpiration::SessionEnd => 0,
                };
                Some(format!(
                    "{}{domain}\t{subdomains}\t{}\t{}\t{expires}\t{}\t{}\n",
                    if cookie.http_only().unwrap_or(false) {
                        "#HttpOnly_"
                    } else {
                        ""
                    },
                    String::from(&cookie.path),
                    if cookie.secure().unwrap_or(false) {
                        "TRUE"
                    } else {
                        "FALSE"
                    },
                    cookie.name(),
                    cookie.value()
                ))
            })
            .collect();
        lines.sort();
        text.extend(lines);
        text
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use bytes::Bytes;

    use super::*;

    fn url(text: &str) -> Url {
        Url::parse(text).unwrap()
    }

    fn set_cookies(lines: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for line in lines {
            headers.append(header::SET_COOKIE, HeaderValue::from_str(line).unwrap());
        }
        headers
    }

    #[test]
    fn redirects_change_the_method_as_go_does() {
        let hop = |m: Method, status: u16, streamed| {
            Hop::after(&m, StatusCode::from_u16(status).unwrap(), streamed)
                .map(|h| (h.method, h.keeps_body))
        };
        for status in [301, 302, 303] {
            assert_eq!(hop(Method::POST, status, false), Some((Method::GET, false)));
            assert_eq!(
                hop(Method::HEAD, status, false),
                Some((Method::HEAD, false))
            );
            assert_eq!(hop(Method::PUT, status, true), Some((Method::GET, false)));
        }
        for status in [307, 308] {
            assert_eq!(hop(Method::POST, status, false), Some((Method::POST, true)));
            // A stream cannot be sent again: the 307 is the answer.
            assert_eq!(hop(Method::POST, status, true), None);
        }
        assert_eq!(hop(Method::GET, 304, false), None);
        assert_eq!(hop(Method::GET, 300, false), None);
        assert_eq!(Body::from("x").replayable(), Some(Bytes::from("x")));
        assert_eq!(
            Body::from_stream(futures::stream::empty()).replayable(),
            None
        );
    }

    #[test]
    fn a_server_cannot_redirect_into_local_files() {
        let web = url("http://a.test/");
        assert!(may_lead(&web, &url("https://b.test/")));
        assert!(!may_lead(&web, &url("file:///etc/passwd")));
        assert!(!may_lead(&web, &url("ftp://b.test/")));
        assert!(may_lead(&url("file:///srv/dir"), &url("file:///srv/dir/")));
    }

    #[test]
    fn credentials_stay_on_the_first_host_and_its_subdomains() {
        let some = Some;
        assert!(is_domain_or_subdomain(
            some("a.example.com"),
            some("example.com")
        ));
        assert!(is_domain_or_subdomain(
            some("EXAMPLE.com"),
            some("example.com")
        ));
        assert!(!is_domain_or_subdomain(
            some("example.com"),
            some("a.example.com")
        ));
        assert!(!is_domain_or_subdomain(
            some("badexample.com"),
            some("example.com")
        ));
        assert!(!is_domain_or_subdomain(some("[::1]"), some("1")));
        let mut first = HeaderMap::new();
        first.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic x"));
        first.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        first.insert("x-own", HeaderValue::from_static("1"));
        let kept = copied(&first, true, true);
        assert_eq!(kept.len(), 1);
        assert!(kept.contains_key("x-own"));
        assert_eq!(copied(&first, false, false).len(), 3);
    }

    #[test]
    fn the_referer_is_the_last_url_without_its_password_never_https_to_http() {
        let none = HeaderMap::new();
        let from = url("https://u:p@a.test/x?q");
        assert_eq!(
            referer(&from, &url("https://b.test/"), &none).unwrap(),
            "https://a.test/x?q"
        );
        assert_eq!(referer(&from, &url("http://b.test/"), &none), None);
    }

    /// The `Cookie` value `jar` sends to `u`, its pairs sorted.
    fn sent(jar: &Jar, u: &str) -> String {
        jar.cookies_for(&url(u))
            .map(|v| {
                let mut pairs: Vec<&str> = v.to_str().unwrap().split("; ").collect();
                pairs.sort_unstable();
                pairs.join("; ")
            })
            .unwrap_or_default()
    }

    #[test]
    fn cookies_follow_domain_path_and_public_suffix_rules() {
        let jar = Jar::new();
        let site = url("http://www.example.com/app/login");
        jar.store_from(
            &site,
            &set_cookies(&[
                "session=1; Path=/app",
                "wide=2; Domain=example.com; Path=/",
                "tld=3; Domain=com; Path=/",
                "other=4; Domain=example.org",
                "safe=5; Secure; Path=/",
            ]),
        );
        let sent = |u: &str| sent(&jar, u);
        assert_eq!(sent("http://www.example.com/app/x"), "session=1; wide=2");
        assert_eq!(sent("http://api.example.com/"), "wide=2");
        assert_eq!(sent("https://www.example.com/"), "safe=5; wide=2");
        assert_eq!(
            sent("http://shop.com/"),
            "",
            "a cookie for a public suffix is refused"
        );
        // A host that is itself a public suffix keeps its own cookies.
        let suffix = url("http://github.io/");
        jar.store_from(&suffix, &set_cookies(&["own=6; Domain=github.io"]));
        assert_eq!(sent("http://github.io/"), "own=6");
        assert_eq!(sent("http://someone.github.io/"), "");
    }

    #[test]
    fn netscape_files_read_and_write_as_curl_s() {
        let text = "# Netscape HTTP Cookie File\n\n\
                    .example.com\tTRUE\t/\tFALSE\t0\twide\t1\n\
                    #HttpOnly_www.example.com\tFALSE\t/app\tTRUE\t4102444800\tsid\tabc\n\
                    old.example.com\tFALSE\t/\tFALSE\t1\tgone\tx\n";
        let jar = Jar::from_netscape(text).unwrap();
        assert_eq!(
            sent(&jar, "https://www.example.com/app/"),
            "sid=abc; wide=1"
        );
        assert_eq!(
            sent(&jar, "http://www.example.com/app/"),
            "wide=1",
            "sid is secure"
        );
        assert_eq!(sent(&jar, "http://a.example.com/"), "wide=1");
        let written = jar.to_netscape();
        assert!(written.starts_with("# Netscape HTTP Cookie File\n"));
        assert!(written.contains("\n.example.com\tTRUE\t/\tFALSE\t0\twide\t1\n"));
        assert!(
            written
                .contains("\n#HttpOnly_www.example.com\tFALSE\t/app\tTRUE\t4102444800\tsid\tabc\n"),
            "{written}"
        );
        assert!(!written.contains("gone"));
        let again = Jar::from_netscape(&written).unwrap();
        assert_eq!(again.to_netscape(), written);
        let error = Jar::from_netscape("example.com\tTRUE\t/\n").unwrap_err();
        assert!(error.message.contains("line 1"), "{error}");
    }
}
