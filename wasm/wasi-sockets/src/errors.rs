//! WASI's error codes as the transport's, worded as `roundtrip`'s own host words them.

use std::net::SocketAddr;

use crate::bindings::exports::roundtrip::transport::types::ErrorCode;
use crate::bindings::wasi::sockets::types::ErrorCode as SocketError;
use crate::bindings::wasi::tls::types::Error as TlsError;

/// A failed name lookup.
pub fn lookup(
    host: &str,
    error: crate::bindings::wasi::sockets::ip_name_lookup::ErrorCode,
) -> ErrorCode {
    ErrorCode::DnsError(format!("lookup {host}: {error:?}"))
}

/// A failed `connect` to `target`.
pub fn connect(target: SocketAddr, error: SocketError) -> ErrorCode {
    let message = |what: &str| format!("dial tcp {target}: connect: {what}");
    match error {
        SocketError::ConnectionRefused => {
            ErrorCode::ConnectionRefused(message("connection refused"))
        }
        SocketError::Timeout => ErrorCode::ConnectionTimeout(message("i/o timeout")),
        SocketError::AccessDenied => {
            ErrorCode::DestinationDenied(message("the host denies this address"))
        }
        other => ErrorCode::ConnectionFailed(message(&describe(&other))),
    }
}

/// The socket's sending side failed.
pub fn send(error: SocketError) -> ErrorCode {
    ErrorCode::ConnectionTerminated(format!(
        "connection broken while writing: {}",
        describe(&error)
    ))
}

/// The socket's receiving side ended with an error (a reset, say).
pub fn receive(error: SocketError) -> ErrorCode {
    ErrorCode::ConnectionTerminated(format!(
        "connection broken while reading: {}",
        describe(&error)
    ))
}

fn describe(error: &SocketError) -> String {
    match error {
        SocketError::ConnectionReset => "connection reset by peer".to_owned(),
        SocketError::ConnectionBroken => "broken pipe".to_owned(),
        SocketError::ConnectionAborted => "connection aborted".to_owned(),
        SocketError::RemoteUnreachable => "no route to host".to_owned(),
        SocketError::Other(Some(message)) => message.clone(),
        other => format!("{other:?}"),
    }
}

/// A failed TLS handshake with `server_name`. wasi:tls gives only a debug string;
/// the certificate failures rustls names in it are told apart as the host does.
pub fn tls(server_name: &str, error: &TlsError) -> ErrorCode {
    let text = error.to_debug_string();
    let message = format!("tls handshake with {server_name}: {text}");
    // `wasm/no-tls` (`roundtrip compose --no-tls`): no TLS at all. Its sentence travels
    // in `internal-error` through the wasi:http face, which has no code for it.
    if text.starts_with("no TLS in this composition") {
        ErrorCode::ConnectionFailed(message)
    } else if text.contains("UnknownIssuer") {
        ErrorCode::TlsCertificateUnknownIssuer(message)
    } else if text.contains("NotValidForName") {
        ErrorCode::TlsCertificateNameMismatch(message)
    } else if text.contains("Expired") {
        ErrorCode::TlsCertificateExpired(message)
    } else if text.contains("InvalidCertificate") {
        ErrorCode::TlsCertificateError(message)
    } else if text.contains("AlertReceived") {
        ErrorCode::TlsAlertReceived(message)
    } else {
        ErrorCode::TlsProtocolError(message)
    }
}

/// The TLS stream failed after the handshake.
pub fn tls_stream(error: TlsError) -> ErrorCode {
    ErrorCode::ConnectionTerminated(format!(
        "tls connection broken: {}",
        error.to_debug_string()
    ))
}
