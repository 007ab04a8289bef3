//! The core's one error type. The driver maps [`ErrorKind`] onto the WIT `error-code`.

use std::fmt;

/// What went wrong, as a caller can match on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The method is not an RFC 9110 token.
    MethodInvalid,
    /// The URL is unusable (unparsable, unsupported scheme, no host).
    UriInvalid,
    /// A header name or value cannot be sent.
    HeaderInvalid,
    /// The response is not well-formed HTTP/1.x.
    Protocol,
    /// The response head is larger than allowed.
    HeaderSectionTooLarge,
    /// A transfer coding other than `chunked`.
    TransferCoding,
    /// The connection ended before the message did.
    Incomplete,
    /// The body's content coding (gzip) is corrupt or cut short.
    ContentCoding,
    /// A proxy URL is unusable, or a proxy's handshake answer cannot be understood.
    ProxyProtocol,
    /// A proxy refused to open the tunnel.
    ProxyRefused,
}

/// An error with its kind and a sentence naming the cause.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub kind: ErrorKind,
    pub message: String,
}

/// A header field or block that cannot be sent.
impl From<roundtrip_fields::Invalid> for Error {
    fn from(invalid: roundtrip_fields::Invalid) -> Self {
        Error::new(ErrorKind::HeaderInvalid, invalid.0)
    }
}

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    pub fn protocol(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Protocol, message)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}
