//! The `file://` scheme (Go's `Transport.RegisterProtocol("file", NewFileTransport(…))`):
//! a request for a file URL is answered as an HTTP response built from what the host's
//! `files` grant returns, the way Go's `http.FileServer` answers.
//!
//! ```text
//!  file:///dir/a.txt ─► path "/dir/a.txt" ─► host: open ─┬─ file      ─► 200, Content-Length, Content-Type, Last-Modified
//!                                                        ├─ directory ─► 301 to "dir/" │ index.html │ 200 HTML listing
//!                                                        ├─ not found ─► 404
//!                                                        └─ outside the grant ─► error destination-denied
//! ```

use std::time::{Duration, UNIX_EPOCH};

use percent_encoding::{AsciiSet, CONTROLS, percent_decode_str, utf8_percent_encode};
use url::Url;

use super::decode::Fields;
use super::error::{Error, ErrorKind};

/// The file a `file://` URL names: an absolute path, percent-decoded.
pub fn path(url: &str) -> Result<String, Error> {
    let invalid = |why: String| Error::new(ErrorKind::UriInvalid, why);
    let parsed = Url::parse(url).map_err(|e| invalid(format!("invalid URL {url:?}: {e}")))?;
    match parsed.host_str() {
        None | Some("") | Some("localhost") => {}
        Some(host) => {
            return Err(invalid(format!(
                "file URL {url:?} names host {host:?}; only local files can be read"
            )));
        }
    }
    let mut path = String::new();
    for segment in parsed.path().split('/').skip(1) {
        let decoded = percent_decode_str(segment)
            .decode_utf8()
            .map_err(|_| invalid(format!("file URL {url:?} is not UTF-8 once decoded")))?;
        // The URL parser already resolved `.` and `..`; an encoded `/`, `..` or NUL
        // would smuggle them back in.
        if decoded.contains(['/', '\0']) || decoded == ".." || decoded == "." {
            return Err(invalid(format!(
                "file URL {url:?} has a path segment that decodes to {decoded:?}"
            )));
        }
        path.push('/');
        path.push_str(&decoded);
    }
    if path.is_empty() {
        path.push('/');
    }
    Ok(path)
}

/// Whether the method reads: `GET` and `HEAD` are served, others get 405.
pub fn is_readable_method(method: &str) -> bool {
    method == "GET" || method == "HEAD"
}

/// `Content-Type` by file extension (Go's `mime.TypeByExtension` built-in table).
pub fn content_type(path: &str) -> &'static str {
    let extension = path
        .rsplit_once('.')
        .filter(|(stem, ext)| !stem.ends_with('/') && !ext.contains('/'))
        .map(|(_, ext)| ext.to_ascii_lowercase());
    match extension.as_deref() {
        Some("html" | "htm") => "text/html; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("json") => "application/json",
        Some("txt" | "text" | "log") => "text/plain; charset=utf-8",
        Some("md") => "text/markdown; charset=utf-8",
        Some("csv") => "text/csv; charset=utf-8",
        Some("xml") => "text/xml; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("gif") => "image/gif",
        Some("webp") => "image/webp",
        Some("pdf") => "application/pdf",
        Some("wasm") => "application/wasm",
        Some("gz") => "application/gzip",
        _ => "application/octet-stream",
    }
}

/// Headers of a file answer.
pub fn file_headers(path: &str, size: u64, modified: Option<u64>) -> Fields {
    let mut headers = Fields::new();
    headers.push("Content-Type", content_type(path).as_bytes());
    headers.push("Content-Length", size.to_string().as_bytes());
    if let Some(secs) = modified {
        let date = httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(secs));
        headers.push("Last-Modified", date.as_bytes());
    }
    headers
}

/// A generated answer: status, reason, headers and the whole body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generated {
    pub status: u16,
    pub reason: &'static str,
    pub headers: Fields,
    pub body: Vec<u8>,
}

impl Generated {
    fn text(status: u16, reason: &'static str, body: &str) -> Self {
        Self::typed(status, reason, "text/plain; charset=utf-8", body)
    }

    fn typed(status: u16, reason: &'static str, content_type: &str, body: &str) -> Self {
        let mut headers = Fields::new();
        headers.push("Content-Type", content_type.as_bytes());
        headers.push("Content-Length", body.len().to_string().as_bytes());
        Self {
            status,
            reason,
            headers,
            body: body.as_bytes().to_vec(),
        }
    }

    /// Go's `NotFound` answer.
    pub fn not_found() -> Self {
        Self::text(404, "Not Found", "404 page not found\n")
    }

    pub fn method_not_allowed() -> Self {
        let mut answer = Self::text(405, "Method Not Allowed", "405 method not allowed\n");
        answer.headers.push("Allow", b"GET, HEAD");
        answer
    }

    /// A directory asked for without its trailing slash: where Go's `FileServer` sends it.
    pub fn redirect_to_directory(path: &str) -> Self {
        let last = path.rsplit('/').next().unwrap_or_default();
        let location = format!("{}/", utf8_percent_encode(last, HREF));
        let mut answer = Self::text(301, "Moved Permanently", "");
        answer.headers.push("Location", location.as_bytes());
        answer
    }

    /// Go's `dirList`: one link per entry, names escaped for HTML and the link.
    pub fn listing(names: &[String]) -> Self {
        let mut html = String::from(
            "<!doctype html>\n<meta name=\"viewport\" content=\"width=device-width\">\n<pre>\n",
        );
        for name in names {
            let href = utf8_percent_encode(name, HREF).to_string();
            html.push_str(&format!(
                "<a href=\"{}\">{}</a>\n",
                escape_html(&href),
                escape_html(name)
            ));
        }
        html.push_str("</pre>\n");
        Self::typed(200, "OK", "text/html; charset=utf-8", &html)
    }
}

/// Bytes percent-encoded in a listing's links: controls, space and what would end or
/// change the meaning of a relative path reference.
const HREF: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}')
    .add(b':');

fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&#34;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn paths_are_decoded_and_smuggled_separators_refused() {
        assert_eq!(path("file:///srv/a%20b.txt").unwrap(), "/srv/a b.txt");
        assert_eq!(path("file://localhost/srv/x").unwrap(), "/srv/x");
        assert_eq!(path("file:///").unwrap(), "/");
        assert_eq!(path("file:///srv/dir/").unwrap(), "/srv/dir/");
        // The URL parser resolves dot segments before anything is checked.
        assert_eq!(
            path("file:///srv/a/../../etc/passwd").unwrap(),
            "/etc/passwd"
        );
        assert_eq!(path("file:///srv/%2e%2e/etc").unwrap(), "/etc");
        for bad in [
            "file:///srv/a%2Fb",
            "file:///srv/a%00b",
            "file://example.com/etc/passwd",
            "file:///srv/%ff",
        ] {
            assert_eq!(path(bad).unwrap_err().kind, ErrorKind::UriInvalid, "{bad}");
        }
    }

    #[test]
    fn headers_name_type_length_and_date() {
        let headers = file_headers("/srv/index.HTML", 42, Some(784_111_777));
        let value = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| String::from_utf8(v.to_vec()).unwrap())
        };
        assert_eq!(value("Content-Type").unwrap(), "text/html; charset=utf-8");
        assert_eq!(value("Content-Length").unwrap(), "42");
        // RFC 9110's example date.
        assert_eq!(
            value("Last-Modified").unwrap(),
            "Sun, 06 Nov 1994 08:49:37 GMT"
        );
        assert_eq!(content_type("/srv/archive"), "application/octet-stream");
        assert_eq!(content_type("/srv.d/archive"), "application/octet-stream");
    }

    #[test]
    fn listings_escape_names_and_redirects_add_the_slash() {
        let listing = Generated::listing(&[
            "a <b>.txt".to_owned(),
            "sub/".to_owned(),
            "q?.md".to_owned(),
        ]);
        let html = String::from_utf8(listing.body).unwrap();
        assert!(
            html.contains("<a href=\"a%20%3Cb%3E.txt\">a &lt;b&gt;.txt</a>\n"),
            "{html}"
        );
        assert!(html.contains("<a href=\"sub/\">sub/</a>\n"));
        assert!(html.contains("<a href=\"q%3F.md\">q?.md</a>\n"));
        let redirect = Generated::redirect_to_directory("/srv/my dir");
        assert_eq!(redirect.status, 301);
        assert_eq!(
            redirect.headers.values("location").collect::<Vec<_>>(),
            [b"my%20dir/"]
        );
        assert_eq!(Generated::not_found().body, b"404 page not found\n");
        assert!(!is_readable_method("POST") && is_readable_method("HEAD"));
    }
}
