//! The `file://` handler: the I/O half of `core::file`. Files come from the host's
//! `files` grant; their contents stream from the host to the caller untouched.

use std::rc::Rc;

use wit_bindgen::{FutureReader, StreamReader};

use super::bindings::roundtrip::transport::files::{self, Entry, File};
use super::bindings::roundtrip::transport::observe::{EventKind, RequestSummary};
use super::bindings::roundtrip::transport::types::{
    ErrorCode, HttpVersion, Response, ResponseBody, StreamedBody,
};
use super::bindings::{wit_future, wit_stream};
use super::errors::to_code;
use super::response_body::Trailers;
use super::transport::Shared;
use crate::core::decode::Fields;
use crate::core::file::{self, Generated};

/// The pool key of `file://` requests in events: they use no connection.
const KEY: &str = "file://";

/// Whether `url` is for this handler.
pub fn is_file_url(url: &str) -> bool {
    url.get(..5)
        .is_some_and(|s| s.eq_ignore_ascii_case("file:"))
}

/// Answers a `file://` request.
pub async fn serve(shared: Rc<Shared>, method: String, url: String) -> Result<Response, ErrorCode> {
    let req = shared.next_request_id();
    let emit = |kind| shared.emit(None, Some(req), Some(KEY), kind);
    emit(EventKind::GetConn(RequestSummary {
        method: method.clone(),
        url: url.clone(),
    }));
    let path = file::path(&url).map_err(to_code)?;
    let answer = if file::is_readable_method(&method) {
        look_up(&path).await?
    } else {
        Answer::Generated(Generated::method_not_allowed())
    };
    let head_only = method == "HEAD";
    let response = match answer {
        Answer::File(served, f) => {
            emit(EventKind::Response(200));
            let headers = file::file_headers(&served, f.size, f.modified);
            let size = f.size;
            let later = Rc::clone(&shared);
            let trailers = when_ended(f.end, move |ok| {
                if ok {
                    later.emit(None, Some(req), Some(KEY), EventKind::BodyEof(size));
                }
            });
            let body = if head_only {
                drop(f.contents);
                empty_body()
            } else {
                f.contents
            };
            let body = ResponseBody::Streamed(StreamedBody {
                contents: body,
                trailers,
                // A file request sends nothing: its "request" is written at once.
                request_sent: wit_future::new::<Result<(), ErrorCode>>(|| Ok(())).1,
            });
            response(req, 200, "OK", headers, body)
        }
        Answer::Generated(generated) => {
            emit(EventKind::Response(generated.status));
            let bytes = if head_only {
                Vec::new()
            } else {
                generated.body
            };
            emit(EventKind::BodyEof(bytes.len() as u64));
            response(
                req,
                generated.status,
                generated.reason,
                generated.headers,
                ResponseBody::Whole(bytes),
            )
        }
    };
    Ok(response)
}

enum Answer {
    /// The file served (an `index.html` for its directory) and its contents.
    File(String, File),
    Generated(Generated),
}

/// What Go's `FileServer` would answer for `path`.
async fn look_up(path: &str) -> Result<Answer, ErrorCode> {
    Ok(match files::open(path.to_owned()).await? {
        Entry::File(f) => Answer::File(path.to_owned(), f),
        Entry::NotFound => Answer::Generated(Generated::not_found()),
        Entry::Directory(_) if !path.ends_with('/') => {
            Answer::Generated(Generated::redirect_to_directory(path))
        }
        Entry::Directory(names) if names.iter().any(|n| n == "index.html") => {
            let index = format!("{path}index.html");
            match files::open(index.clone()).await? {
                Entry::File(f) => Answer::File(index, f),
                _ => Answer::Generated(Generated::listing(&names)),
            }
        }
        Entry::Directory(names) => Answer::Generated(Generated::listing(&names)),
    })
}

fn response(req: u64, status: u16, reason: &str, headers: Fields, body: ResponseBody) -> Response {
    Response {
        status,
        reason: reason.to_owned(),
        version: HttpVersion::Http11,
        headers: headers.into_block(),
        body,
        conn: 0,
        reused: false,
        req,
    }
}

/// The trailers future of a streamed file: resolves when the host's read ends.
fn when_ended(
    end: FutureReader<Result<(), ErrorCode>>,
    on_end: impl FnOnce(bool) + 'static,
) -> FutureReader<Trailers> {
    let (writer, reader) = wit_future::new::<Trailers>(|| {
        Err(ErrorCode::InternalError(
            "the file handler dropped the body".to_owned(),
        ))
    });
    super::tasks::spawn(async move {
        let ended = end.await;
        on_end(ended.is_ok());
        let _ = writer.write(ended.map(|()| None)).await;
    });
    reader
}

fn empty_body() -> StreamReader<u8> {
    let (writer, reader) = wit_stream::new::<u8>();
    drop(writer);
    reader
}
