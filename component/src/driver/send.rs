//! Writing a request: the head, then the body (bytes or a caller's stream), waiting
//! for `100 Continue` first when the request asks for it.

use futures::channel::{mpsc, oneshot};
use futures::{SinkExt, StreamExt};
use wit_bindgen::{StreamReader, StreamResult};

use super::bindings::roundtrip::transport::observe::EventKind;
use super::bindings::roundtrip::transport::types::ErrorCode;
use super::clock;
use super::conn::{READ_SIZE, Writer};
use super::exchange::{Emitter, Failed};
use crate::core::decode::Fields;
use crate::core::encode::{self, BodyFraming};
use crate::core::reuse::Progress;

/// A request body as the exchange holds it between attempts.
pub enum Body {
    Empty,
    /// Kept for a replay.
    Bytes(Vec<u8>),
    /// `None` once it has been read from: it cannot be produced again.
    Stream(Option<StreamReader<u8>>),
}

impl Body {
    pub fn is_replayable(&self) -> bool {
        !matches!(self, Body::Stream(_))
    }

    pub fn is_empty(&self) -> bool {
        match self {
            Body::Empty => true,
            Body::Bytes(bytes) => bytes.is_empty(),
            Body::Stream(_) => false,
        }
    }

    /// How the body is delimited on the wire for a request with `method` and `headers`.
    pub fn framing(&self, method: &str, headers: &Fields) -> Result<BodyFraming, ErrorCode> {
        Ok(match self {
            Body::Empty => encode::framing_for_length(method, 0),
            Body::Bytes(bytes) => encode::framing_for_length(method, bytes.len() as u64),
            Body::Stream(_) => {
                declared_length(headers)?.map_or(BodyFraming::Chunked, BodyFraming::Length)
            }
        })
    }
}

/// The `Content-Length` a caller declared for a stream body, if any.
fn declared_length(headers: &Fields) -> Result<Option<u64>, ErrorCode> {
    let Some((_, value)) = headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
    else {
        return Ok(None);
    };
    std::str::from_utf8(value)
        .ok()
        .and_then(|text| text.trim().parse::<u64>().ok())
        .map(Some)
        .ok_or_else(|| {
            ErrorCode::HttpRequestHeaderInvalid(format!(
                "invalid Content-Length {:?}",
                String::from_utf8_lossy(value)
            ))
        })
}

/// Small bodies go out in the same write as the head.
const COALESCE_LIMIT: usize = 16 * 1024;

/// `Expect: 100-continue`: wait this long (nanoseconds) for the server's go-ahead,
/// signalled on `go`, before sending the body anyway.
pub struct Continue {
    pub timeout: u64,
    pub go: oneshot::Receiver<()>,
}

/// Writes the head and the body.
pub async fn write_request(
    writer: &mut Writer,
    emitter: &Emitter,
    mut wire: Vec<u8>,
    body: &mut Body,
    framing: BodyFraming,
    wait_for_continue: Option<Continue>,
) -> Result<(), Failed> {
    let coalesced = wait_for_continue.is_none()
        && matches!(body, Body::Bytes(bytes) if bytes.len() <= COALESCE_LIMIT);
    if let (true, Body::Bytes(bytes)) = (coalesced, &body) {
        wire.extend_from_slice(bytes);
    }
    writer
        .write(wire)
        .await
        .map_err(Failed::at(Progress::NothingWritten))?;
    emitter.emit(EventKind::WroteHeaders);
    if coalesced {
        return Ok(());
    }
    if let Some(Continue { timeout, go }) = wait_for_continue {
        // A `100 Continue`, or silence until the timeout: send the body either way
        // (Go's rule). A final response first ends the attempt before this resumes.
        let _ = clock::within(Some(timeout), go).await;
    }
    let sent = match body {
        Body::Empty => Ok(()),
        Body::Bytes(bytes) => writer.write(bytes.clone()).await,
        Body::Stream(stream) => match stream.take() {
            Some(stream) => write_stream(writer, stream, framing).await,
            None => Err(ErrorCode::HttpRequestBodyError(
                "the request body is a stream that was already read; it cannot be replayed"
                    .to_owned(),
            )),
        },
    };
    sent.map_err(Failed::at(Progress::NoResponse))
}

/// Copies a caller's body stream to the connection, chunked or checked against the
/// declared length.
async fn write_stream(
    writer: &mut Writer,
    stream: StreamReader<u8>,
    framing: BodyFraming,
) -> Result<(), ErrorCode> {
    // A task owns the caller's stream, so giving up on the body (an early answer, a
    // cancelled request) never cancels a component-model read (see `conn::Writer`).
    let (forward, mut chunks) = mpsc::channel(1);
    wit_bindgen::spawn_local(forward_stream(stream, forward));
    let mut sent: u64 = 0;
    while let Some(chunk) = chunks.next().await {
        sent += chunk.len() as u64;
        match framing {
            BodyFraming::Chunked => {
                let mut framed = Vec::with_capacity(chunk.len() + 16);
                encode::encode_chunk(&mut framed, &chunk);
                writer.write(framed).await?;
            }
            BodyFraming::Length(declared) if sent > declared => {
                return Err(ErrorCode::HttpRequestBodyError(format!(
                    "request body longer than its Content-Length of {declared} bytes"
                )));
            }
            _ => writer.write(chunk).await?,
        }
    }
    match framing {
        BodyFraming::Chunked => writer.write(encode::LAST_CHUNK.to_vec()).await,
        BodyFraming::Length(declared) if sent != declared => Err(ErrorCode::HttpRequestBodyError(
            format!("request body ended after {sent} of its {declared} declared bytes"),
        )),
        _ => Ok(()),
    }
}

/// Reads the caller's body stream until it ends or nobody wants more.
async fn forward_stream(mut stream: StreamReader<u8>, mut forward: mpsc::Sender<Vec<u8>>) {
    loop {
        let (result, chunk) = stream.read(Vec::with_capacity(READ_SIZE)).await;
        if chunk.is_empty() {
            match result {
                StreamResult::Dropped => return,
                _ => continue,
            }
        }
        if forward.send(chunk).await.is_err() {
            return;
        }
    }
}
