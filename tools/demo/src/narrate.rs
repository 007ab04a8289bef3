//! Events as sentences a student can follow, for the events that tell the story of
//! a pool.

use roundtrip_host::events::{CloseReason, Event, EventKind, Proto};

/// A sentence a student can follow, for the events that tell the story of a pool.
pub fn sentence(event: &Event) -> Option<String> {
    let conn = event.conn.unwrap_or_default();
    let req = event.req.unwrap_or_default();
    Some(match &event.kind {
        EventKind::GetConn { method, url } => {
            format!("request {req} ({method} {url}) asks the pool for a connection")
        }
        EventKind::WaitForConn { reason } => {
            format!("request {req} must wait in line for a connection ({reason})")
        }
        EventKind::DialStart { addr } => {
            format!(
                "no idle connection: request {req} opens connection #{conn} to {addr} (a new TCP handshake)"
            )
        }
        EventKind::GotConn {
            proto: Proto::H2,
            stream,
            reused,
            ..
        } => format!(
            "request {req} opens stream {} on {} HTTP/2 connection #{conn}: it shares it with \
             the other requests",
            stream.unwrap_or_default(),
            if *reused { "the existing" } else { "the new" }
        ),
        EventKind::H2Settings {
            max_concurrent_streams: Some(max),
            ..
        } => format!("the server allows {max} streams at once on connection #{conn}"),
        EventKind::Goaway { last_stream, code } => format!(
            "the server says GOAWAY ({code}) on connection #{conn}: no new streams after {last_stream}"
        ),
        EventKind::StreamReset {
            stream,
            code,
            by_peer,
        } => format!(
            "stream {stream} on connection #{conn} was reset ({code}) by {}",
            if *by_peer {
                "the server"
            } else {
                "the transport"
            }
        ),
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
        EventKind::BodyClosedEarly {
            bytes,
            drained,
            saved: true,
        } if *drained > 0 => format!(
            "the body was dropped after {bytes} bytes: the transport read the {drained} bytes left \
             and threw them away, so connection #{conn} can be reused (Go 1.27's drain)"
        ),
        EventKind::BodyClosedEarly {
            bytes, saved: true, ..
        } => {
            format!("the body was dropped after {bytes} bytes: connection #{conn} goes on")
        }
        EventKind::BodyClosedEarly { bytes, .. } => {
            format!("the body was dropped after {bytes} bytes: connection #{conn} cannot be reused")
        }
        EventKind::Close { reason } => {
            format!("connection #{conn} is closed ({})", reason.as_str())
        }
        EventKind::Retry { reason } => {
            format!("request {req} is sent again on another connection: {reason}")
        }
        EventKind::TlsDone {
            resumed: true,
            version,
            ..
        } => format!(
            "connection #{conn} RESUMED its TLS session ({}): no certificate exchange this time",
            version.as_deref().unwrap_or("TLS")
        ),
        EventKind::TlsDone {
            resumed: false,
            version: Some(version),
            ..
        } => {
            format!("connection #{conn} did a full TLS handshake ({version}), certificates and all")
        }
        EventKind::TransportRestarted { reason } => format!(
            "the transport component stopped ({reason}): its connections are closed and a new instance takes over"
        ),
        EventKind::TunnelStart { addr } => {
            format!(
                "the proxy opens tunnel {} to {addr} for a CONNECT",
                event.tunnel.unwrap_or_default()
            )
        }
        EventKind::TunnelClose {
            bytes_up,
            bytes_down,
        } => format!(
            "tunnel {} closed after {bytes_up} bytes up and {bytes_down} bytes down",
            event.tunnel.unwrap_or_default()
        ),
        _ => return None,
    })
}
