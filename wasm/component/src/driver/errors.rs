//! Mapping the core's error kinds onto the WIT `error-code`, and back to words.

use super::bindings::roundtrip::transport::types::ErrorCode;
use crate::core::error::{Error, ErrorKind};

pub fn to_code(error: impl Into<Error>) -> ErrorCode {
    let error = error.into();
    let message = error.message;
    match error.kind {
        ErrorKind::MethodInvalid => ErrorCode::HttpRequestMethodInvalid(message),
        ErrorKind::UriInvalid => ErrorCode::HttpRequestUriInvalid(message),
        ErrorKind::HeaderInvalid => ErrorCode::HttpRequestHeaderInvalid(message),
        ErrorKind::Protocol => ErrorCode::HttpProtocolError(message),
        ErrorKind::HeaderSectionTooLarge => ErrorCode::HttpResponseHeaderSectionSize(message),
        ErrorKind::TransferCoding => ErrorCode::HttpResponseTransferCoding(message),
        ErrorKind::Incomplete => ErrorCode::HttpResponseIncomplete(message),
        ErrorKind::ContentCoding => ErrorCode::HttpResponseContentCoding(message),
        ErrorKind::ProxyProtocol => ErrorCode::ProxyProtocolError(message),
        ErrorKind::ProxyRefused => ErrorCode::ProxyRefused(message),
    }
}

/// The sentence every error code carries.
pub fn message(code: &ErrorCode) -> &str {
    match code {
        ErrorCode::DnsError(m)
        | ErrorCode::ConnectionRefused(m)
        | ErrorCode::ConnectionTimeout(m)
        | ErrorCode::ConnectionTerminated(m)
        | ErrorCode::DestinationDenied(m)
        | ErrorCode::ConnectionFailed(m)
        | ErrorCode::TlsCertificateUnknownIssuer(m)
        | ErrorCode::TlsCertificateNameMismatch(m)
        | ErrorCode::TlsCertificateExpired(m)
        | ErrorCode::TlsCertificateError(m)
        | ErrorCode::TlsAlertReceived(m)
        | ErrorCode::TlsProtocolError(m)
        | ErrorCode::HttpRequestMethodInvalid(m)
        | ErrorCode::HttpRequestUriInvalid(m)
        | ErrorCode::HttpRequestHeaderInvalid(m)
        | ErrorCode::HttpRequestBodyError(m)
        | ErrorCode::HttpResponseIncomplete(m)
        | ErrorCode::HttpResponseHeaderSectionSize(m)
        | ErrorCode::HttpResponseTransferCoding(m)
        | ErrorCode::HttpResponseContentCoding(m)
        | ErrorCode::HttpProtocolError(m)
        | ErrorCode::HttpResponseTimeout(m)
        | ErrorCode::ConnectionReadTimeout(m)
        | ErrorCode::ConnectionWriteTimeout(m)
        | ErrorCode::RequestCanceled(m)
        | ErrorCode::ProxyRefused(m)
        | ErrorCode::ProxyProtocolError(m)
        | ErrorCode::InternalError(m) => m,
        ErrorCode::HttpRequestBodySize(size) => &size.message,
    }
}
