//! Between wasi:http's types and the transport's.

use crate::bindings::roundtrip::transport::types as rt;
use crate::bindings::wasi::http::types::{
    DnsErrorPayload, ErrorCode, Fields, Method, Request, Scheme, TlsAlertReceivedPayload,
};

/// The request's absolute URL. A request without a scheme is sent over `https`, as
/// wasmtime-wasi-http does; one without an authority cannot be sent.
pub fn url(request: &Request) -> Result<String, ErrorCode> {
    let scheme = match request.get_scheme() {
        None | Some(Scheme::Https) => "https".to_owned(),
        Some(Scheme::Http) => "http".to_owned(),
        Some(Scheme::Other(other)) => other,
    };
    let authority = request
        .get_authority()
        .ok_or(ErrorCode::HttpRequestUriInvalid)?;
    let path = request
        .get_path_with_query()
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "/".to_owned());
    Ok(format!("{scheme}://{authority}{path}"))
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
pub fn response_headers(headers: &[(String, Vec<u8>)]) -> Fields {
    let kept: Vec<(String, Vec<u8>)> = headers
        .iter()
        .filter(|(name, _)| !HOP_BY_HOP.iter().any(|h| name.eq_ignore_ascii_case(h)))
        .cloned()
        .collect();
    Fields::from_list(&kept).unwrap_or_else(|_| {
        let fields = Fields::new();
        for (name, value) in &kept {
            let _ = fields.append(name, value);
        }
        fields
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

/// Go's `DefaultTransport`, with 100 idle connections per host instead of 2, and its
/// proxies from the guest's environment as Go's `ProxyFromEnvironment` reads them:
/// `HTTP_PROXY`, `HTTPS_PROXY`, `NO_PROXY` (upper case first, then lower case; the first
/// non-empty wins), curl's `ALL_PROXY` for a scheme with none of its own, `HTTP_PROXY`
/// ignored under CGI (`REQUEST_METHOD` set), loopback always direct.
pub fn default_config() -> rt::Config {
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
    rt::Config {
        max_idle_conns: 100,
        max_idle_conns_per_host: 100,
        max_conns_per_host: 0,
        idle_conn_timeout: Some(90 * SECOND),
        dial_timeout: Some(30 * SECOND),
        tls_handshake_timeout: Some(10 * SECOND),
        response_header_timeout: None,
        expect_continue_timeout: Some(SECOND),
        disable_keep_alives: false,
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
    }
}
