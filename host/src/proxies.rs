//! Which proxy the transport uses: none, one given explicitly (curl's `-x`, Go's
//! `http.ProxyURL`), or those named by the environment (Go's `ProxyFromEnvironment`,
//! plus curl's `ALL_PROXY`). The component chooses per request from these settings
//! (see `wasm/component/src/core/proxy.rs` for the `NO_PROXY` rules).

use crate::bindings::roundtrip::transport::types as wit;

/// Proxy settings. The default uses no proxy; `roundtrip get` reads the environment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProxyConfig {
    /// Proxy for `http://` requests: `http://[user:pass@]host[:port]`, `https://…` (TLS
    /// to the proxy), `socks5://…`, `socks5h://…` (a value without a scheme is `http://`).
    pub http_proxy: Option<String>,
    /// Proxy for `https://` requests (a `CONNECT` tunnel, or SOCKS5, with TLS inside;
    /// through an `https://` proxy, TLS inside TLS).
    pub https_proxy: Option<String>,
    /// Hosts reached directly: `example.com` (and subdomains), `.example.com`,
    /// `*.example.com`, IPs, CIDRs, each with an optional `:port`; `*` for all.
    pub no_proxy: String,
    /// `localhost` and loopback addresses go direct whatever `no_proxy` says (Go's
    /// rule for proxies from the environment).
    pub loopback_direct: bool,
    /// Headers sent with each `CONNECT` (Go `ProxyConnectHeader`).
    pub connect_headers: Vec<(String, String)>,
    /// PEM files of CAs trusted for `https://` proxies, beside the system's roots
    /// (curl's `--proxy-cacert`; origins' CAs are not trusted for proxies).
    pub ca_files: Vec<std::path::PathBuf>,
    /// Accept any certificate from an `https://` proxy (curl's `--proxy-insecure`).
    pub insecure: bool,
}

impl ProxyConfig {
    /// One proxy for every request but those in `no_proxy`, loopback included.
    pub fn all(url: &str, no_proxy: &str) -> Self {
        Self {
            http_proxy: Some(url.to_owned()),
            https_proxy: Some(url.to_owned()),
            no_proxy: no_proxy.to_owned(),
            loopback_direct: false,
            ..Self::default()
        }
    }

    /// From `HTTP_PROXY`, `HTTPS_PROXY`, `ALL_PROXY` and `NO_PROXY` (upper case first,
    /// then lower case, the first non-empty wins). `ALL_PROXY` serves a scheme that has
    /// no proxy of its own. As in Go, `HTTP_PROXY` is not used when `REQUEST_METHOD`
    /// is set (a CGI program, whose `Proxy:` request header would set it).
    pub fn from_env() -> Self {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// As [`ProxyConfig::from_env`], reading variables through `lookup`.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Self {
        let any = |names: &[&str]| {
            names
                .iter()
                .filter_map(|name| lookup(name))
                .find(|value| !value.trim().is_empty())
        };
        let all = any(&["ALL_PROXY", "all_proxy"]);
        let cgi = lookup("REQUEST_METHOD").is_some_and(|m| !m.is_empty());
        let http = if cgi {
            None
        } else {
            any(&["HTTP_PROXY", "http_proxy"])
        };
        Self {
            http_proxy: http.or_else(|| all.clone()),
            https_proxy: any(&["HTTPS_PROXY", "https_proxy"]).or(all),
            no_proxy: any(&["NO_PROXY", "no_proxy"]).unwrap_or_default(),
            loopback_direct: true,
            ..Self::default()
        }
    }

    /// Whether any request could go through a proxy.
    pub fn is_set(&self) -> bool {
        self.http_proxy.is_some() || self.https_proxy.is_some()
    }

    pub(crate) fn to_wit(&self) -> wit::ProxyConfig {
        wit::ProxyConfig {
            http_proxy: self.http_proxy.clone(),
            https_proxy: self.https_proxy.clone(),
            no_proxy: self.no_proxy.clone(),
            loopback_direct: self.loopback_direct,
            connect_headers: roundtrip_fields::block_of(|| {
                self.connect_headers
                    .iter()
                    .map(|(name, value)| (name.as_str(), value.as_bytes()))
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn from(vars: &[(&str, &str)]) -> ProxyConfig {
        ProxyConfig::from_lookup(|name| {
            vars.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| (*v).to_owned())
        })
    }

    #[test]
    fn environment_variables_upper_case_first_then_lower_then_all_proxy() {
        let c = from(&[("HTTP_PROXY", "upper:1"), ("http_proxy", "lower:1")]);
        assert_eq!(c.http_proxy.as_deref(), Some("upper:1"));
        assert_eq!(c.https_proxy, None);
        let c = from(&[("HTTP_PROXY", " "), ("http_proxy", "lower:1")]);
        assert_eq!(c.http_proxy.as_deref(), Some("lower:1"));
        let c = from(&[("ALL_PROXY", "socks5h://s:1080"), ("https_proxy", "h:3128")]);
        assert_eq!(c.http_proxy.as_deref(), Some("socks5h://s:1080"));
        assert_eq!(c.https_proxy.as_deref(), Some("h:3128"));
        let c = from(&[("no_proxy", ".corp,10.0.0.0/8"), ("all_proxy", "p:1")]);
        assert_eq!(c.no_proxy, ".corp,10.0.0.0/8");
        assert!(c.loopback_direct && c.is_set());
        assert!(!from(&[]).is_set());
    }

    #[test]
    fn cgi_programs_ignore_http_proxy() {
        let c = from(&[
            ("HTTP_PROXY", "evil:1"),
            ("HTTPS_PROXY", "good:1"),
            ("REQUEST_METHOD", "GET"),
        ]);
        assert_eq!(c.http_proxy, None);
        assert_eq!(c.https_proxy.as_deref(), Some("good:1"));
    }
}
