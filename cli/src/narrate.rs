//! Events in words: curl-style lines for `get -v`.

use roundtrip_host::events::{Event, EventKind, Proto};

/// A curl `-v`-style line for the events curl would mention.
pub fn curl_line(event: &Event) -> Option<String> {
    let conn = event.conn.unwrap_or_default();
    let key = event.key.as_deref().unwrap_or("?");
    Some(match &event.kind {
        // As curl: a line per address tried (the dial's `host:port` is said by them).
        EventKind::ConnectStart { addr } => format!("*   Trying {addr}..."),
        EventKind::ConnectDone {
            addr,
            error: Some(error),
        } => format!("* connect to {addr} failed: {error}"),
        EventKind::DnsDone {
            addrs,
            error: None,
            coalesced,
        } => format!(
            "* Resolved to {}{}",
            addrs.join(", "),
            if *coalesced {
                " (shared with another dial's lookup)"
            } else {
                ""
            }
        ),
        EventKind::DnsDone {
            error: Some(error), ..
        } => format!("* Could not resolve host: {error}"),
        EventKind::DialDone {
            addr: Some(addr), ..
        } => {
            format!("* Connected to {addr} (#{conn})")
        }
        EventKind::DialDone {
            error: Some(error), ..
        } => format!("* connect failed: {error}"),
        EventKind::ProxyConnect {
            proxy,
            target,
            error: None,
            response,
        } => {
            // As curl: the proxy's answer, then the tunnel.
            let mut lines = String::new();
            if let Some(answer) = response {
                lines.push_str(&format!(
                    "< {} {} {}\n",
                    answer.version, answer.status, answer.reason
                ));
                for (name, value) in &answer.headers {
                    lines.push_str(&format!("< {name}: {value}\n"));
                }
                lines.push_str("<\n");
            }
            lines.push_str(&format!(
                "* CONNECT tunnel to {target} established by proxy {proxy}"
            ));
            lines
        }
        EventKind::ProxyConnect {
            error: Some(error), ..
        } => format!("* Tunnel failed: {error}"),
        EventKind::TlsStart { server } => format!("* TLS handshake with {server}"),
        EventKind::TlsDone {
            version: Some(version),
            cipher_suite,
            alpn,
            resumed,
            ..
        } => format!(
            "* TLS connection using {version} / {}, ALPN {}{}",
            cipher_suite.as_deref().unwrap_or("?"),
            alpn.as_deref().unwrap_or("none"),
            if *resumed { " (session resumed)" } else { "" }
        ),
        EventKind::TlsDone {
            error: Some(error), ..
        } => format!("* TLS handshake failed: {error}"),
        EventKind::GotConn {
            reused: true,
            idle_us,
            proto: Proto::Http11,
            ..
        } => format!(
            "* Re-using existing connection #{conn} with {key} (idle {:.1} ms)",
            *idle_us as f64 / 1000.0
        ),
        EventKind::GotConn {
            reused,
            proto: Proto::H2,
            stream,
            ..
        } => format!(
            "* {} HTTP/2 connection #{conn} with {key}: [HTTP/2] [{}] OPENED stream",
            if *reused { "Re-using" } else { "Using" },
            stream.unwrap_or_default()
        ),
        EventKind::H2Settings {
            max_concurrent_streams: Some(max),
            ..
        } => format!("* Connection state changed (MAX_CONCURRENT_STREAMS == {max})!"),
        EventKind::Goaway { last_stream, code } => {
            format!("* received GOAWAY, error={code}, last_stream={last_stream}")
        }
        EventKind::StreamReset {
            stream,
            code,
            by_peer,
        } => format!(
            "* [HTTP/2] [{stream}] {} RST_STREAM ({code})",
            if *by_peer { "received" } else { "sent" }
        ),
        EventKind::Retry { reason } => format!("* Retrying on another connection: {reason}"),
        EventKind::PutIdle { ok: true, .. } => format!("* Connection #{conn} left idle"),
        EventKind::BodyClosedEarly {
            bytes,
            drained,
            saved,
        } => format!(
            "* Body closed after {bytes} bytes, before its end{}",
            if *saved {
                format!("; drained {drained} more bytes to keep connection #{conn}")
            } else {
                String::new()
            }
        ),
        EventKind::Close { reason } => {
            format!("* Closing connection #{conn} ({})", reason.as_str())
        }
        _ => return None,
    })
}
