//! The host's one error type: a kind to match on and a sentence naming the cause.

use std::fmt;

use crate::bindings::roundtrip::transport::types::ErrorCode;

/// What went wrong. The first group mirrors the component's WIT `error-code`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    DnsError,
    ConnectionRefused,
    ConnectionTimeout,
    ConnectionTerminated,
    DestinationDenied,
    ConnectionFailed,
    TlsCertificateUnknownIssuer,
    TlsCertificateNameMismatch,
    TlsCertificateExpired,
    TlsCertificateError,
    TlsAlertReceived,
    TlsProtocolError,
    MethodInvalid,
    UriInvalid,
    HeaderInvalid,
    RequestBodyError,
    /// The request body did not match its `Content-Length`.
    RequestBodySize,
    ResponseIncomplete,
    ResponseHeaderSectionSize,
    ResponseTransferCoding,
    ResponseContentCoding,
    ProtocolError,
    ResponseTimeout,
    /// No response byte within the request's first-byte timeout, or a pause in the
    /// body longer than its between-bytes timeout.
    ReadTimeout,
    /// On HTTP/2, the request body could not send a byte within the write-byte
    /// timeout (no flow-control window from the server).
    WriteTimeout,
    /// A proxy refused to open the tunnel (its status text is in the message).
    ProxyRefused,
    /// A proxy's handshake answer cannot be understood, or a proxy URL is unusable.
    ProxyProtocolError,
    /// The caller canceled the request.
    Canceled,
    /// A bug inside the component.
    Internal,
    /// The host could not load or run the component.
    Engine,
    /// Bad configuration (e.g. an unreadable CA file).
    Config,
    /// The transport was shut down before the request finished.
    Shutdown,
    /// The component trapped (a bug, or a memory or CPU limit) while the request was
    /// in flight; its connection was closed and a fresh instance serves later requests.
    TransportRestarted,
    /// [`Client`](crate::Client): the redirect policy stopped a chain of redirects (Go's
    /// `stopped after 10 redirects`, curl's `Maximum (50) redirects followed`).
    TooManyRedirects,
    /// [`Client`](crate::Client): its overall timeout (Go's `Client.Timeout`, curl's
    /// `--max-time`) ran out, awaiting headers or reading the body.
    Timeout,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub kind: ErrorKind,
    pub message: String,
    /// For [`ErrorKind::RequestBodySize`]: the bytes the body held when the difference
    /// showed (as wasmtime-wasi-http counts them: past the length, the accepted bytes
    /// and the offending write).
    pub body_size: Option<u64>,
}

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            body_size: None,
        }
    }

    pub fn engine(error: impl fmt::Display) -> Self {
        Self::new(
            ErrorKind::Engine,
            format!("transport component failed: {error}"),
        )
    }

    pub fn restarted(why: &str) -> Self {
        Self::new(
            ErrorKind::TransportRestarted,
            format!(
                "the transport component stopped ({why}) and was restarted; this request was lost"
            ),
        )
    }

    pub fn shutdown() -> Self {
        Self::new(ErrorKind::Shutdown, "the transport was shut down")
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

impl From<ErrorCode> for Error {
    fn from(code: ErrorCode) -> Self {
        use ErrorKind as K;
        let (kind, message) = match code {
            ErrorCode::DnsError(m) => (K::DnsError, m),
            ErrorCode::ConnectionRefused(m) => (K::ConnectionRefused, m),
            ErrorCode::ConnectionTimeout(m) => (K::ConnectionTimeout, m),
            ErrorCode::ConnectionTerminated(m) => (K::ConnectionTerminated, m),
            ErrorCode::DestinationDenied(m) => (K::DestinationDenied, m),
            ErrorCode::ConnectionFailed(m) => (K::ConnectionFailed, m),
            ErrorCode::TlsCertificateUnknownIssuer(m) => (K::TlsCertificateUnknownIssuer, m),
            ErrorCode::TlsCertificateNameMismatch(m) => (K::TlsCertificateNameMismatch, m),
            ErrorCode::TlsCertificateExpired(m) => (K::TlsCertificateExpired, m),
            ErrorCode::TlsCertificateError(m) => (K::TlsCertificateError, m),
            ErrorCode::TlsAlertReceived(m) => (K::TlsAlertReceived, m),
            ErrorCode::TlsProtocolError(m) => (K::TlsProtocolError, m),
            ErrorCode::HttpRequestMethodInvalid(m) => (K::MethodInvalid, m),
            ErrorCode::HttpRequestUriInvalid(m) => (K::UriInvalid, m),
            ErrorCode::HttpRequestHeaderInvalid(m) => (K::HeaderInvalid, m),
            ErrorCode::HttpRequestBodyError(m) => (K::RequestBodyError, m),
            ErrorCode::HttpRequestBodySize(size) => {
                return Error {
                    body_size: Some(size.actual),
                    ..Error::new(K::RequestBodySize, size.message)
                };
            }
            ErrorCode::HttpResponseIncomplete(m) => (K::ResponseIncomplete, m),
            ErrorCode::HttpResponseHeaderSectionSize(m) => (K::ResponseHeaderSectionSize, m),
            ErrorCode::HttpResponseTransferCoding(m) => (K::ResponseTransferCoding, m),
            ErrorCode::HttpResponseContentCoding(m) => (K::ResponseContentCoding, m),
            ErrorCode::HttpProtocolError(m) => (K::ProtocolError, m),
            ErrorCode::HttpResponseTimeout(m) => (K::ResponseTimeout, m),
            ErrorCode::ConnectionReadTimeout(m) => (K::ReadTimeout, m),
            ErrorCode::ConnectionWriteTimeout(m) => (K::WriteTimeout, m),
            ErrorCode::RequestCanceled(m) => (K::Canceled, m),
            ErrorCode::ProxyRefused(m) => (K::ProxyRefused, m),
            ErrorCode::ProxyProtocolError(m) => (K::ProxyProtocolError, m),
            ErrorCode::InternalError(m) => (K::Internal, m),
        };
        Error::new(kind, message)
    }
}
