//! Events in words: curl-style lines for `get -v`, and plain sentences for demos.

use roundtrip_host::events::{CloseReason, Event, EventKind};

/// A curl `-v`-style line for the events curl would mention.
pub fn curl_line(event: &Event) -> Option<String> {
    let conn = event.conn.unwrap_or_default();
    let key = event.key.as_deref().unwrap_or("?");
    Some(match &event.kind {
        EventKind::DialStart { addr } => format!("*   Trying {addr}..."),
        EventKind::DialDone {
            addr: Some(addr), ..
        } => {
            format!("* Connected to {addr} (#{conn})")
        }
        EventKind::DialDone {
            error: Some(error), ..
        } => format!("* connect failed: {error}"),
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
            ..
        } => format!(
            "* Re-using existing connection #{conn} with {key} (idle {:.1} ms)",
            *idle_us as f64 / 1000.0
        ),
        EventKind::Retry { reason } => format!("* Retrying on another connection: {reason}"),
        EventKind::PutIdle { ok: true, .. } => format!("* Connection #{conn} left idle"),
        EventKind::BodyClosedEarly { bytes } => {
            format!("* Body closed after {bytes} bytes, before its end")
        }
        EventKind::Close { reason } => {
            format!("* Closing connection #{conn} ({})", reason.as_str())
        }
        _ => return None,
    })
}

/// A sentence a student can follow, for the events that tell the story of a pool.
pub fn plain(event: &Event) -> Option<String> {
    let conn = event.conn.unwrap_or_default();
    let req = event.req.unwrap_or_default();
    Some(match &event.kind {
        EventKind::GetConn => format!("request {req} asks the pool for a connection"),
        EventKind::WaitForConn { reason } => {
            format!("request {req} must wait in line for a connection ({reason})")
        }
        EventKind::DialStart { addr } => {
            format!(
                "no idle connection: request {req} opens connection #{conn} to {addr} (a new TCP handshake)"
            )
        }
        EventKind::GotConn {
            reused: true,
            idle_us,
            ..
        } => format!(
            "request {req} REUSES connection #{conn}, idle for {:.1} ms: no handshake needed",
            *idle_us as f64 / 1000.0
        ),
        EventKind::GotConn { reused: false, .. } => {
            format!("request {req} got the new connection #{conn}")
        }
        EventKind::Response { status } => {
            format!("response {status} arrives on connection #{conn}")
        }
        EventKind::BodyEof { bytes } => {
            format!(
                "the body ({bytes} bytes) was read to its end, so connection #{conn} can go back"
            )
        }
        EventKind::PutIdle { ok: true, .. } => {
            format!("connection #{conn} waits in the idle pool for the next request")
        }
        EventKind::PutIdle { ok: false, reason } => format!(
            "the pool has no room for connection #{conn} ({})",
            reason.map_or("refused", CloseReason::as_str)
        ),
        EventKind::BodyClosedEarly { bytes } => {
            format!("the body was dropped after {bytes} bytes: connection #{conn} cannot be reused")
        }
        EventKind::Close { reason } => {
            format!("connection #{conn} is closed ({})", reason.as_str())
        }
        _ => return None,
    })
}
