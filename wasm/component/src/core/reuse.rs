//! Whether a connection may carry another exchange, and whether a failed request may
//! be sent again on a fresh one.
//!
//! Theory of operation. A connection goes back to the idle pool only when the whole
//! response was read and nothing forbids keep-alive (RFC 9112 §9.3, Go's
//! `persistConn.readLoop`). A request is retried only when it failed on a connection
//! that had served an earlier request (a reused one: the server may have closed it
//! while it sat idle) and either nothing of it was written, or it is replayable
//! (Go's `Request.isReplayable` plus `persistConn.shouldRetryRequest`).

use super::decode::{Fields, Framing, ResponseHead};
use super::encode::asks_close;

/// Why a connection is closed after its response instead of being pooled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoReuse {
    /// The transport never keeps connections (`disable-keep-alives`).
    KeepAlivesDisabled,
    /// The request or the response said `Connection: close`, or HTTP/1.0 without
    /// `keep-alive`.
    ConnectionClose,
    /// The body was delimited by the server closing the connection.
    ServerClosed,
    /// Bytes followed the end of the response: the connection is out of step.
    TrailingBytes,
    /// The server answered before the request body was fully sent: what it does with
    /// the rest is unknown.
    RequestIncomplete,
    /// The response had both `Transfer-Encoding` and `Content-Length` (RFC 9112 §6.3:
    /// read as chunked, but a possible response-splitting attempt).
    AmbiguousFraming,
}

/// What the reuse decision needs of the two heads, taken when the response head
/// arrives (its headers then go to the caller, not kept for the body's end).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heads {
    /// The request asked to close (`Connection: close`).
    pub request_asks_close: bool,
    /// The response lets the connection live on (`ResponseHead::allows_keep_alive`).
    pub response_keeps_alive: bool,
    /// The response carried both `Transfer-Encoding` and `Content-Length`.
    pub ambiguous_framing: bool,
}

impl Heads {
    pub fn of(request_headers: &Fields, response: &ResponseHead) -> Self {
        Heads {
            request_asks_close: asks_close(request_headers),
            response_keeps_alive: response.allows_keep_alive(),
            ambiguous_framing: response.has_ambiguous_framing(),
        }
    }
}

/// What the exchange knew when the response body ended.
#[derive(Debug, Clone, Copy)]
pub struct Finished {
    pub disable_keep_alives: bool,
    pub heads: Heads,
    /// The whole request was written before the response came.
    pub request_complete: bool,
    pub framing: Framing,
    /// Bytes received past the end of the response.
    pub trailing_bytes: usize,
}

/// `Ok(())` if the connection may go back to the idle pool.
pub fn after_response(done: &Finished) -> Result<(), NoReuse> {
    if done.disable_keep_alives {
        return Err(NoReuse::KeepAlivesDisabled);
    }
    if !done.framing.is_reusable() {
        return Err(NoReuse::ServerClosed);
    }
    if done.heads.request_asks_close || !done.heads.response_keeps_alive {
        return Err(NoReuse::ConnectionClose);
    }
    if !done.request_complete {
        return Err(NoReuse::RequestIncomplete);
    }
    if done.trailing_bytes > 0 {
        return Err(NoReuse::TrailingBytes);
    }
    if done.heads.ambiguous_framing {
        return Err(NoReuse::AmbiguousFraming);
    }
    Ok(())
}

/// How far a request got before its connection failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Not one byte of the request was accepted by the connection.
    NothingWritten,
    /// Some or all of the request was written, but no response byte arrived.
    NoResponse,
    /// Response bytes arrived: the server saw the request, never retry.
    ResponseStarted,
}

/// Whether a request is safe to send twice (Go's `isReplayable`): its body can be
/// produced again, and its method is idempotent or it carries an idempotency key.
pub fn is_replayable(method: &str, headers: &Fields, body_replayable: bool) -> bool {
    let idempotent = ["GET", "HEAD", "OPTIONS", "TRACE"].contains(&method);
    let keyed = headers.iter().any(|(name, _)| {
        name.eq_ignore_ascii_case("idempotency-key")
            || name.eq_ignore_ascii_case("x-idempotency-key")
    });
    body_replayable && (idempotent || keyed)
}

/// Whether a request that failed this way may be sent again on another connection.
pub fn can_retry(reused_connection: bool, progress: Progress, replayable: bool) -> bool {
    if !reused_connection {
        // A fresh connection that fails says something about the server, not about
        // a stale pool entry.
        return false;
    }
    match progress {
        Progress::NothingWritten => true,
        Progress::NoResponse => replayable,
        Progress::ResponseStarted => false,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::core::decode::parse_response_head;

    fn response(raw: &str) -> ResponseHead {
        parse_response_head(raw.as_bytes(), 1 << 20)
            .unwrap()
            .unwrap()
            .0
    }

    const NONE: &Fields = &Fields::new();

    fn fields(list: &[(&str, &str)]) -> Fields {
        list.iter().map(|(n, v)| (*n, *v)).collect()
    }

    fn finished(head: &ResponseHead, req: &Fields) -> Finished {
        Finished {
            disable_keep_alives: false,
            heads: Heads::of(req, head),
            request_complete: true,
            framing: Framing::Length(5),
            trailing_bytes: 0,
        }
    }

    #[test]
    fn keep_alive_response_is_reusable() {
        let head = response("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n");
        assert_eq!(after_response(&finished(&head, NONE)), Ok(()));
    }

    #[test]
    fn each_reason_not_to_reuse() {
        let head = response("HTTP/1.1 200 OK\r\n\r\n");
        let mut done = finished(&head, NONE);
        done.disable_keep_alives = true;
        assert_eq!(after_response(&done), Err(NoReuse::KeepAlivesDisabled));

        let done = Finished {
            framing: Framing::UntilClose,
            ..finished(&head, NONE)
        };
        assert_eq!(after_response(&done), Err(NoReuse::ServerClosed));

        let close = fields(&[("Connection", "close")]);
        assert_eq!(
            after_response(&finished(&head, &close)),
            Err(NoReuse::ConnectionClose)
        );

        let head_close = response("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n");
        assert_eq!(
            after_response(&finished(&head_close, NONE)),
            Err(NoReuse::ConnectionClose)
        );

        let old = response("HTTP/1.0 200 OK\r\n\r\n");
        assert_eq!(
            after_response(&finished(&old, NONE)),
            Err(NoReuse::ConnectionClose)
        );

        let done = Finished {
            trailing_bytes: 3,
            ..finished(&head, NONE)
        };
        assert_eq!(after_response(&done), Err(NoReuse::TrailingBytes));

        let both =
            response("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n");
        let done = Finished {
            framing: Framing::Chunked,
            ..finished(&both, NONE)
        };
        assert_eq!(after_response(&done), Err(NoReuse::AmbiguousFraming));
    }

    #[test]
    fn replayable_follows_go() {
        assert!(is_replayable("GET", NONE, true));
        assert!(is_replayable("HEAD", NONE, true));
        assert!(
            !is_replayable("GET", NONE, false),
            "a consumed stream body cannot be replayed"
        );
        assert!(!is_replayable("POST", NONE, true));
        let keyed = fields(&[("Idempotency-Key", "abc")]);
        assert!(is_replayable("POST", &keyed, true));
        let keyed = fields(&[("x-idempotency-key", "abc")]);
        assert!(is_replayable("PUT", &keyed, true));
    }

    #[test]
    fn retries_only_on_reused_connections() {
        assert!(!can_retry(false, Progress::NothingWritten, true));
        assert!(can_retry(true, Progress::NothingWritten, false));
        assert!(can_retry(true, Progress::NoResponse, true));
        assert!(!can_retry(true, Progress::NoResponse, false));
        assert!(!can_retry(true, Progress::ResponseStarted, true));
    }
}
