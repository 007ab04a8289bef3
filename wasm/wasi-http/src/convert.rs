//! Between wasi:http's types and the transport's.

use crate::bindings::roundtrip::transport::types as rt;
use crate::bindings::wasi::http::types::{
    DnsErrorPayload, ErrorCode, Fields, Method, Request, RequestOptions, Scheme,
    TlsAlertReceivedPayload,
};

/// The request's absolute URL, checked as wasmtime-wasi-http checks it before any
/// I/O: no scheme means `https`; a scheme other than `http` or `https` is
/// `HTTP-protocol-error`; no authority, or no path-with-query, is
/// `HTTP-request-URI-invalid` (the host's setters already refused a malformed
/// authority or path).
pub fn url(request: &Request) -> Result<String, ErrorCode> {
    let scheme = match request.get_scheme() {
        None | Some(Scheme::Https) => "https",
        Some(Scheme::Http) => "http",
        Some(Scheme::Other(_)) => return Err(ErrorCode::HttpProtocolError),
    };
    let authority = request
        .get_authority()
        .ok_or(ErrorCode::HttpRequestUriInvalid)?;
    let path = request
        .get_path_with_query()
        .ok_or(ErrorCode::HttpRequestUriInvalid)?;
    // An empty path-with-query (the setter allows it) is the origin's root.
    let path = if path.is_empty() { "/" } else { &path };
    Ok(format!("{scheme}://{authority}{path}"))
}

/// The request's `request-options` as the transport's (unset: the pool's own).
pub fn options(options: Option<RequestOptions>) -> Vec<rt::RequestOption> {
    let Some(options) = options else {
        return Vec::new();
    };
    [
        options
            .get_connect_timeout()
            .map(rt::RequestOption::ConnectTimeout),
        options
            .get_first_byte_timeout()
            .map(rt::RequestOption::FirstByteTimeout),
        // wasmtime-wasi-http waits at least a nanosecond.
        options
            .get_between_bytes_timeout()
            .map(|t| rt::RequestOption::BetweenBytesTimeout(t.max(1))),
    ]
    .into_iter()
    .flatten()
    .collect()
}

pub fn method(method: Method) -> String {
    match method {
        Method::Get => "GET",
        Method::Head => "HEAD",
        Method::Post => "POST",
        Method::Put => "PUT",
        Method::Delete => "DELETE",
        Method::Connect => "CONNECT",
        Method::Options => "OPTIONS",
        Method::Trace => "TRACE",
        Method::Patch => "PATCH",
        Method::Other(other) => return other,
    }
    .to_owned()
}

/// Headers that describe one connection, not the message: wasi:http forbids them in
/// `fields` (the host would refuse the whole list), and the transport has already
/// acted on them.
const HOP_BY_HOP: [&str; 7] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "te",
    "http2-settings",
];

/// The response's headers as wasi:http `fields`, hop-by-hop ones left out; a header
/// the host still refuses is dropped rather than failing the response.
pub fn response_headers(block: &[u8]) -> Fields {
    let kept: Vec<(String, Vec<u8>)> = roundtrip_fields::Fields::iter_block(block)
        .filter(|(name, _)| !HOP_BY_HOP.iter().any(|h| name.eq_ignore_ascii_case(h)))
        .map(|(name, value)| (name.to_owned(), value.to_vec()))
        .collect();
    Fields::from_list(&kept).unwrap_or_else(|_| {
        let fields = Fields::new();
        for (name, value) in &kept {
            let _ = fields.append(name, value);
        }
        fields
    })
}

/// wasi:http fields (already checked by the host) as one transport `fields` block.
pub fn block(list: &[(String, Vec<u8>)]) -> Vec<u8> {
    roundtrip_fields::block_of(|| {
        list.iter()
            .map(|(name, value)| (name.as_str(), value.as_slice()))
    })
}

/// The transport's error as wasi:http's closest code; where wasi:http has no words
/// for it, the transport's message travels in `internal-error`.
pub fn error(error: rt::ErrorCode) -> ErrorCode {
    use rt::ErrorCode as E;
    match error {
        E::DnsError(_) => ErrorCode::DnsError(DnsErrorPayload {
            rcode: None,
            info_code: None,
        }),
        E::ConnectionRefused(_) => ErrorCode::ConnectionRefused,
        E::ConnectionTimeout(_) => ErrorCode::ConnectionTimeout,
        E::ConnectionTerminated(_) => ErrorCode::ConnectionTerminated,
        E::DestinationDenied(_) => ErrorCode::DestinationIpProhibited,
        E::TlsCertificateUnknownIssuer(_)
        | E::TlsCertificateNameMismatch(_)
        | E::TlsCertificateExpired(_)
        | E::TlsCertificateError(_) => ErrorCode::TlsCertificateError,
        E::TlsAlertReceived(message) => ErrorCode::TlsAlertReceived(TlsAlertReceivedPayload {
            alert_id: None,
            alert_message: Some(message),
        }),
        E::TlsProtocolError(_) => ErrorCode::TlsProtocolError,
        E::HttpRequestMethodInvalid(_) => ErrorCode::HttpRequestMethodInvalid,
        E::HttpRequestUriInvalid(_) => ErrorCode::HttpRequestUriInvalid,
        E::HttpResponseIncomplete(_) => ErrorCode::HttpResponseIncomplete,
        E::HttpResponseHeaderSectionSize(_) => ErrorCode::HttpResponseHeaderSectionSize(None),
        E::HttpResponseTransferCoding(message) => {
            ErrorCode::HttpResponseTransferCoding(Some(message))
        }
        E::HttpResponseContentCoding(message) => {
            ErrorCode::HttpResponseContentCoding(Some(message))
        }
        E::HttpProtocolError(_) => ErrorCode::HttpProtocolError,
        E::HttpResponseTimeout(_) => ErrorCode::HttpResponseTimeout,
        E::ConnectionReadTimeout(_) => ErrorCode::ConnectionReadTimeout,
        E::ConnectionWriteTimeout(_) => ErrorCode::ConnectionWriteTimeout,
        E::HttpRequestBodySize(size) => ErrorCode::HttpRequestBodySize(Some(size.actual)),
        E::ConnectionFailed(message)
        | E::HttpRequestHeaderInvalid(message)
        | E::HttpRequestBodyError(message)
        | E::RequestCanceled(message)
        | E::ProxyRefused(message)
        | E::ProxyProtocolError(message)
        | E::InternalError(message) => ErrorCode::InternalError(Some(message)),
    }
}

const SECOND: u64 = 1_000_000_000;

/// The pool's knobs: Go's `DefaultTransport`, with 100 idle connections per host
/// instead of 2, then what the guest's environment sets.
///
/// Proxies as Go's `ProxyFromEnvironment` reads them: `HTTP_PROXY`, `HTTPS_PROXY`,
/// `NO_PROXY` (upper case first, then lower case; the first non-empty wins), curl's
/// `ALL_PROXY` for a scheme with none of its own, `HTTP_PROXY` ignored under CGI
/// (`REQUEST_METHOD` set), loopback always direct.
///
/// The knobs, named after Go's fields (docs/embedding.md): `ROUNDTRIP_MAX_IDLE_CONNS`,
/// `ROUNDTRIP_MAX_IDLE_CONNS_PER_HOST`, `ROUNDTRIP_MAX_CONNS_PER_HOST` (numbers);
/// `ROUNDTRIP_IDLE_CONN_TIMEOUT`, `ROUNDTRIP_DIAL_TIMEOUT`,
/// `ROUNDTRIP_TLS_HANDSHAKE_TIMEOUT`, `ROUNDTRIP_RESPONSE_HEADER_TIMEOUT`,
/// `ROUNDTRIP_EXPECT_CONTINUE_TIMEOUT` (durations such as `90s`, `500ms`, `1m 30s`;
/// `0` or `none` for no limit); `ROUNDTRIP_DISABLE_KEEP_ALIVES`,
/// `ROUNDTRIP_DISABLE_COMPRESSION` (`1`/`true`, `0`/`false`);
/// `ROUNDTRIP_MAX_RESPONSE_HEADER_BYTES`; `ROUNDTRIP_USER_AGENT`. A value that does
/// not parse fails every request, naming the variable.
pub fn config() -> Result<rt::Config, String> {
    let variable = |names: &[&str]| {
        names
            .iter()
            .filter_map(|name| std::env::var(name).ok())
            .find(|value| !value.trim().is_empty())
    };
    let all = variable(&["ALL_PROXY", "all_proxy"]);
    let cgi = variable(&["REQUEST_METHOD"]).is_some();
    let http_proxy = if cgi {
        None
    } else {
        variable(&["HTTP_PROXY", "http_proxy"])
    };
    let mut config = rt::Config {
        max_idle_conns: 100,
        max_idle_conns_per_host: 100,
        max_conns_per_host: 0,
        idle_conn_timeout: Some(90 * SECOND),
        dial_timeout: Some(30 * SECOND),
        tls_handshake_timeout: Some(10 * SECOND),
        response_header_timeout: None,
        expect_continue_timeout: Some(SECOND),
        disable_keep_alives: false,
        disable_drain_on_close: false,
        fallback_delay: Some(300_000_000),
        // Go's dialer.
        keep_alive: Some(rt::KeepAlive {
            idle: 30 * SECOND,
            interval: 15 * SECOND,
            count: 9,
        }),
        disable_compression: false,
        max_response_header_bytes: 10 << 20,
        user_agent: concat!("roundtrip/", env!("CARGO_PKG_VERSION")).to_owned(),
        proxy: rt::ProxyConfig {
            http_proxy: http_proxy.or_else(|| all.clone()),
            https_proxy: variable(&["HTTPS_PROXY", "https_proxy"]).or(all),
            no_proxy: variable(&["NO_PROXY", "no_proxy"]).unwrap_or_default(),
            loopback_direct: true,
            connect_headers: Vec::new(),
        },
        proxy_connect_timeout: Some(60 * SECOND),
        // The face's host decides where they go (stderr, sinks, nowhere).
        emit_events: true,
        count_crossings: false,
        // Go's DefaultTransport: HTTP/2 where TLS agrees on it.
        protocols: rt::Protocols::Http2,
        strict_max_concurrent_streams: false,
        read_idle_timeout: None,
        ping_timeout: Some(15 * SECOND),
        write_byte_timeout: Some(30 * SECOND),
        // Go's defaults.
        http2: rt::Http2Config {
            max_read_frame_size: 0,
            max_receive_buffer_per_connection: 0,
            max_receive_buffer_per_stream: 0,
            max_decoder_header_table_size: 0,
        },
    };
    let knob = |name: &str| {
        std::env::var(name)
            .ok()
            .map(|value| (name.to_owned(), value))
    };
    if let Some(v) = knob("ROUNDTRIP_MAX_IDLE_CONNS") {
        config.max_idle_conns = number(&v)?;
    }
    if let Some(v) = knob("ROUNDTRIP_MAX_IDLE_CONNS_PER_HOST") {
        config.max_idle_conns_per_host = number(&v)?;
    }
    if let Some(v) = knob("ROUNDTRIP_MAX_CONNS_PER_HOST") {
        config.max_conns_per_host = number(&v)?;
    }
    if let Some(v) = knob("ROUNDTRIP_MAX_RESPONSE_HEADER_BYTES") {
        config.max_response_header_bytes = number(&v)?;
    }
    if let Some(v) = knob("ROUNDTRIP_IDLE_CONN_TIMEOUT") {
        config.idle_conn_timeout = duration(&v)?;
    }
    if let Some(v) = knob("ROUNDTRIP_DIAL_TIMEOUT") {
        config.dial_timeout = duration(&v)?;
    }
    if let Some(v) = knob("ROUNDTRIP_TLS_HANDSHAKE_TIMEOUT") {
        config.tls_handshake_timeout = duration(&v)?;
    }
    if let Some(v) = knob("ROUNDTRIP_RESPONSE_HEADER_TIMEOUT") {
        config.response_header_timeout = duration(&v)?;
    }
    if let Some(v) = knob("ROUNDTRIP_EXPECT_CONTINUE_TIMEOUT") {
        config.expect_continue_timeout = duration(&v)?;
    }
    if let Some(v) = knob("ROUNDTRIP_WRITE_BYTE_TIMEOUT") {
        config.write_byte_timeout = duration(&v)?;
    }
    if let Some(v) = knob("ROUNDTRIP_DISABLE_KEEP_ALIVES") {
        config.disable_keep_alives = flag(&v)?;
    }
    if let Some((name, value)) = knob("ROUNDTRIP_HTTP_VERSION") {
        config.protocols = match value.trim() {
            "1.1" | "http1.1" => rt::Protocols::Http1,
            "2" | "http2" => rt::Protocols::Http2,
            "2-prior-knowledge" | "http2-prior-knowledge" => rt::Protocols::Http2PriorKnowledge,
            _ => {
                return Err(format!(
                    "{name}={value:?}: expected 1.1, 2 or 2-prior-knowledge (curl's --http1.1, \
                     --http2, --http2-prior-knowledge)"
                ));
            }
        };
    }
    if let Some(v) = knob("ROUNDTRIP_DISABLE_COMPRESSION") {
        config.disable_compression = flag(&v)?;
    }
    if let Some((_, agent)) = knob("ROUNDTRIP_USER_AGENT") {
        config.user_agent = agent;
    }
    Ok(config)
}

fn number<T: std::str::FromStr>((name, value): &(String, String)) -> Result<T, String> {
    value
        .trim()
        .parse()
        .map_err(|_| format!("{name}={value}: not a whole number"))
}

/// Nanoseconds, or `None` for `0`/`none`.
fn duration((name, value): &(String, String)) -> Result<Option<u64>, String> {
    let value = value.trim();
    if value == "0" || value.eq_ignore_ascii_case("none") {
        return Ok(None);
    }
    humantime::parse_duration(value)
        .map(|d| Some(d.as_nanos().min(u64::MAX as u128) as u64))
        .map_err(|e| format!("{name}={value}: not a duration like 90s or 500ms ({e})"))
}

fn flag((name, value): &(String, String)) -> Result<bool, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" | "" => Ok(false),
        _ => Err(format!("{name}={value}: not 1/true or 0/false")),
    }
}
