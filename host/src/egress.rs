//! The egress allow-list: which hosts the component may connect to. Network access is
//! a capability the host grants; a connect outside the list fails with
//! `destination-denied` before any socket is opened.
//!
//! Patterns (case-insensitive), each optionally followed by `:PORT`:
//! - `example.com` — that host only;
//! - `*.example.com` — any host under it (`a.example.com`, `a.b.example.com`), not
//!   `example.com` itself;
//! - `127.0.0.1`, `[::1]` — an IP literal, as written in the URL;
//! - `*` — any host (useful with a port: `*:443`).
//!
//! No list (the library default, `Config::allow_hosts = None`) allows everything, as
//! Go, curl and reqwest do.

use std::fmt;

/// One allowed destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPattern {
    host: Host,
    port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Host {
    Any,
    Exact(String),
    /// `*.suffix`: stored as `.suffix`.
    Under(String),
}

impl HostPattern {
    /// Parses `host`, `*.suffix`, `*`, `[v6]`, each with an optional `:port`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = |why: &str| format!("bad --allow-host pattern {text:?}: {why}");
        let text = text.trim();
        let (host, port) = if let Some(rest) = text.strip_prefix('[') {
            let (v6, after) = rest.split_once(']').ok_or_else(|| bad("no closing ]"))?;
            let port = match after.strip_prefix(':') {
                Some(port) => Some(port),
                None if after.is_empty() => None,
                None => return Err(bad("junk after ]")),
            };
            (v6.to_owned(), port)
        } else {
            match text.rsplit_once(':') {
                Some((host, port)) if !host.contains(':') => (host.to_owned(), Some(port)),
                Some(_) => return Err(bad("write IPv6 addresses in brackets, e.g. [::1]:8080")),
                None => (text.to_owned(), None),
            }
        };
        let port = port
            .map(|p| {
                p.parse::<u16>()
                    .map_err(|_| bad("the port is not a number 0-65535"))
            })
            .transpose()?;
        let host = host.to_ascii_lowercase();
        let host = if host == "*" {
            Host::Any
        } else if let Some(suffix) = host.strip_prefix("*.") {
            if suffix.is_empty() || suffix.contains('*') {
                return Err(bad("a wildcard is `*` or `*.suffix`"));
            }
            Host::Under(format!(".{suffix}"))
        } else if host.is_empty() || host.contains('*') {
            return Err(bad("a wildcard is `*` or `*.suffix`"));
        } else {
            Host::Exact(host)
        };
        Ok(Self { host, port })
    }

    /// Whether a connect to `host:port` matches (`host` as the URL has it, without
    /// brackets).
    pub fn allows(&self, host: &str, port: u16) -> bool {
        if self.port.is_some_and(|p| p != port) {
            return false;
        }
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        match &self.host {
            Host::Any => true,
            Host::Exact(exact) => *exact == host,
            Host::Under(suffix) => host.ends_with(suffix.as_str()),
        }
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = match &self.host {
            Host::Any => "*".to_owned(),
            Host::Exact(h) if h.contains(':') => format!("[{h}]"),
            Host::Exact(h) => h.clone(),
            Host::Under(suffix) => format!("*{suffix}"),
        };
        match self.port {
            Some(port) => write!(f, "{host}:{port}"),
            None => f.write_str(&host),
        }
    }
}

/// The hosts the component may reach.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList(pub Vec<HostPattern>);

impl AllowList {
    /// Parses each pattern.
    pub fn parse<S: AsRef<str>>(patterns: &[S]) -> Result<Self, String> {
        patterns
            .iter()
            .map(|p| HostPattern::parse(p.as_ref()))
            .collect::<Result<_, _>>()
            .map(AllowList)
    }

    pub fn allows(&self, host: &str, port: u16) -> bool {
        self.0.iter().any(|pattern| pattern.allows(host, port))
    }

    /// The refusal's message.
    pub fn refusal(&self, host: &str, port: u16) -> String {
        let shown = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        let allowed: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        format!(
            "connecting to {shown} is not allowed: the host allows only {} (--allow-host)",
            if allowed.is_empty() {
                "nothing".to_owned()
            } else {
                allowed.join(", ")
            }
        )
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn list(patterns: &[&str]) -> AllowList {
        AllowList::parse(patterns).unwrap()
    }

    #[test]
    fn patterns_match_hosts_suffixes_ports_and_ips() {
        let allow = list(&[
            "example.com",
            "*.internal.test:8443",
            "127.0.0.1",
            "[::1]:80",
            "*:9999",
        ]);
        for (host, port, allowed) in [
            ("example.com", 443, true),
            ("EXAMPLE.com.", 80, true),
            ("www.example.com", 443, false),
            ("api.internal.test", 8443, true),
            ("a.b.internal.test", 8443, true),
            ("internal.test", 8443, false),
            ("api.internal.test", 443, false),
            ("127.0.0.1", 1234, true),
            ("127.0.0.2", 1234, false),
            ("::1", 80, true),
            ("::1", 81, false),
            ("anything.at.all", 9999, true),
            ("evil-example.com", 443, false),
        ] {
            assert_eq!(allow.allows(host, port), allowed, "{host}:{port}");
        }
    }

    #[test]
    fn bad_patterns_are_named() {
        for bad in [
            "",
            "*.",
            "a*.example.com",
            "example.com:http",
            "::1",
            "[::1",
            "example.com:70000",
        ] {
            let error = HostPattern::parse(bad).unwrap_err();
            assert!(error.starts_with("bad --allow-host pattern"), "{error}");
        }
    }

    #[test]
    fn patterns_print_as_written_and_refusals_list_them() {
        let allow = list(&["*.Example.com:443", "[::1]", "*"]);
        let shown: Vec<String> = allow.0.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["*.example.com:443", "[::1]", "*"]);
        assert_eq!(
            list(&["localhost"]).refusal("127.0.0.1", 8080),
            "connecting to 127.0.0.1:8080 is not allowed: the host allows only localhost (--allow-host)"
        );
    }
}
