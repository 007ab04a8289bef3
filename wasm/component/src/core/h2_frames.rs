//! What the server says on an HTTP/2 connection, read off the wire for the events.
//!
//! Theory of operation. The `h2` crate speaks the protocol; it does not tell its user
//! what the server's `SETTINGS` held, which stream a `GOAWAY` stopped at or that a
//! `RST_STREAM` came. So the bytes the server sends are to be fed (the driver does
//! not do it yet: issue 20), as they arrive and before `h2` reads them, to a
//! [`FrameWatcher`]: it follows the frame boundaries (a
//! 9-byte header: length, type, flags, stream id) and decodes the few frames worth an
//! event. It keeps at most one partial header and the payload of one small frame, never
//! judges a frame (that is `h2`'s job) and never fails: what it cannot read it skips.
//!
//! ```text
//!  server bytes ─► FrameWatcher::feed ─► Seen::{Settings, GoAway, Reset, PingAck, HeaderBlock}
//!        └───────► h2 (the protocol itself)
//! ```

/// Frame types (RFC 9113 §6).
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const CONTINUATION: u8 = 0x9;

const ACK: u8 = 0x1;
const HEADER_LEN: usize = 9;
/// Payload bytes kept of a watched frame: a `GOAWAY`'s debug data is not needed.
const KEPT_MAX: usize = 8 * 6;

/// `SETTINGS_INITIAL_WINDOW_SIZE`, `SETTINGS_MAX_CONCURRENT_STREAMS` (RFC 9113 §6.5.2).
const SETTINGS_MAX_CONCURRENT_STREAMS: u16 = 0x3;
const SETTINGS_INITIAL_WINDOW_SIZE: u16 = 0x4;

/// A frame from the server worth an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// A `SETTINGS` frame (not an acknowledgement), with the values it set.
    Settings {
        max_concurrent_streams: Option<u32>,
        initial_window: Option<u32>,
    },
    /// `GOAWAY`: streams above `last_stream` were not processed.
    GoAway { last_stream: u32, code: u32 },
    /// `RST_STREAM` of `stream`.
    Reset { stream: u32, code: u32 },
    /// The answer to a `PING` of ours.
    PingAck,
    /// A `HEADERS` (`continued: false`) or `CONTINUATION` frame of `stream`, with its
    /// payload length: the size of a header block as sent (compressed).
    HeaderBlock {
        stream: u32,
        bytes: usize,
        continued: bool,
    },
}

/// Follows the server's frames across reads.
#[derive(Debug, Default)]
pub struct FrameWatcher {
    /// Header bytes of a frame not complete yet.
    header: Vec<u8>,
    /// The frame being read: its type, flags, stream, payload length left and the
    /// payload bytes kept so far.
    current: Option<Frame>,
}

#[derive(Debug)]
struct Frame {
    kind: u8,
    flags: u8,
    stream: u32,
    left: usize,
    kept: Vec<u8>,
}

impl FrameWatcher {
    /// Feeds bytes as the server sent them; returns the frames that completed.
    pub fn feed(&mut self, mut bytes: &[u8]) -> Vec<Seen> {
        let mut seen = Vec::new();
        while !bytes.is_empty() {
            let Some(frame) = self.current.as_mut() else {
                let want = HEADER_LEN - self.header.len();
                let take = want.min(bytes.len());
                self.header.extend_from_slice(&bytes[..take]);
                bytes = &bytes[take..];
                if self.header.len() == HEADER_LEN {
                    self.start_frame(&mut seen);
                }
                continue;
            };
            let take = frame.left.min(bytes.len());
            if frame.kept.len() < KEPT_MAX {
                let keep = take.min(KEPT_MAX - frame.kept.len());
                frame.kept.extend_from_slice(&bytes[..keep]);
            }
            frame.left -= take;
            bytes = &bytes[take..];
            if frame.left == 0 {
                self.end_frame(&mut seen);
            }
        }
        seen
    }

    fn start_frame(&mut self, seen: &mut Vec<Seen>) {
        let h = std::mem::take(&mut self.header);
        let len = usize::from(h[0]) << 16 | usize::from(h[1]) << 8 | usize::from(h[2]);
        let stream = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff;
        if h[3] == HEADERS || h[3] == CONTINUATION {
            seen.push(Seen::HeaderBlock {
                stream,
                bytes: len,
                continued: h[3] == CONTINUATION,
            });
        }
        self.current = Some(Frame {
            kind: h[3],
            flags: h[4],
            stream,
            left: len,
            kept: Vec::new(),
        });
        if len == 0 {
            self.end_frame(seen);
        }
    }

    fn end_frame(&mut self, seen: &mut Vec<Seen>) {
        let Some(frame) = self.current.take() else {
            return;
        };
        let p = &frame.kept;
        let word = |at: usize| {
            p.get(at..at + 4)
                .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        };
        match frame.kind {
            SETTINGS if frame.flags & ACK == 0 => {
                let mut max_concurrent_streams = None;
                let mut initial_window = None;
                for entry in p.chunks_exact(6) {
                    let id = u16::from_be_bytes([entry[0], entry[1]]);
                    let value = u32::from_be_bytes([entry[2], entry[3], entry[4], entry[5]]);
                    match id {
                        SETTINGS_MAX_CONCURRENT_STREAMS => max_concurrent_streams = Some(value),
                        SETTINGS_INITIAL_WINDOW_SIZE => initial_window = Some(value),
                        _ => {}
                    }
                }
                seen.push(Seen::Settings {
                    max_concurrent_streams,
                    initial_window,
                });
            }
            GOAWAY => {
                if let (Some(last), Some(code)) = (word(0), word(4)) {
                    seen.push(Seen::GoAway {
                        last_stream: last & 0x7fff_ffff,
                        code,
                    });
                }
            }
            RST_STREAM => {
                if let Some(code) = word(0) {
                    seen.push(Seen::Reset {
                        stream: frame.stream,
                        code,
                    });
                }
            }
            PING if frame.flags & ACK != 0 => seen.push(Seen::PingAck),
            _ => {}
        }
    }
}

/// The name of an HTTP/2 error code (RFC 9113 §7), as Go and nghttp2 print it.
pub fn reason_name(code: u32) -> String {
    let name = match code {
        0x0 => "NO_ERROR",
        0x1 => "PROTOCOL_ERROR",
        0x2 => "INTERNAL_ERROR",
        0x3 => "FLOW_CONTROL_ERROR",
        0x4 => "SETTINGS_TIMEOUT",
        0x5 => "STREAM_CLOSED",
        0x6 => "FRAME_SIZE_ERROR",
        0x7 => "REFUSED_STREAM",
        0x8 => "CANCEL",
        0x9 => "COMPRESSION_ERROR",
        0xa => "CONNECT_ERROR",
        0xb => "ENHANCE_YOUR_CALM",
        0xc => "INADEQUATE_SECURITY",
        0xd => "HTTP_1_1_REQUIRED",
        other => return format!("unknown error code {other:#x}"),
    };
    name.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len();
        let mut out = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
        out.extend_from_slice(&stream.to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    /// A server's first flight: SETTINGS (max streams 2, window 65535), a WINDOW_UPDATE,
    /// HEADERS and DATA of stream 1, RST_STREAM of 3, a PING ack, a SETTINGS ack, GOAWAY.
    fn conversation() -> (Vec<u8>, Vec<Seen>) {
        let mut wire = Vec::new();
        let mut settings = Vec::new();
        settings.extend_from_slice(&[0, 3, 0, 0, 0, 2]);
        settings.extend_from_slice(&[0, 4, 0, 0, 0xff, 0xff]);
        settings.extend_from_slice(&[0, 5, 0, 0, 0x40, 0]);
        wire.extend(frame(SETTINGS, 0, 0, &settings));
        wire.extend(frame(0x8, 0, 0, &[0, 0, 1, 0]));
        wire.extend(frame(HEADERS, 0, 1, &[0x88]));
        wire.extend(frame(CONTINUATION, 0x4, 1, &[0x40, 0x80]));
        wire.extend(frame(0x0, 0x1, 1, &[b'x'; 300]));
        wire.extend(frame(RST_STREAM, 0, 3, &7u32.to_be_bytes()));
        wire.extend(frame(PING, ACK, 0, &[0; 8]));
        wire.extend(frame(SETTINGS, ACK, 0, &[]));
        let mut goaway = 5u32.to_be_bytes().to_vec();
        goaway.extend_from_slice(&0u32.to_be_bytes());
        goaway.extend_from_slice(&[b'd'; 100]);
        wire.extend(frame(GOAWAY, 0, 0, &goaway));
        let seen = vec![
            Seen::Settings {
                max_concurrent_streams: Some(2),
                initial_window: Some(65535),
            },
            Seen::HeaderBlock {
                stream: 1,
                bytes: 1,
                continued: false,
            },
            Seen::HeaderBlock {
                stream: 1,
                bytes: 2,
                continued: true,
            },
            Seen::Reset { stream: 3, code: 7 },
            Seen::PingAck,
            Seen::GoAway {
                last_stream: 5,
                code: 0,
            },
        ];
        (wire, seen)
    }

    #[test]
    fn the_whole_conversation_at_once() {
        let (wire, expected) = conversation();
        assert_eq!(FrameWatcher::default().feed(&wire), expected);
    }

    #[test]
    fn every_split_point_and_byte_by_byte() {
        let (wire, expected) = conversation();
        for at in 0..=wire.len() {
            let mut watcher = FrameWatcher::default();
            let mut seen = watcher.feed(&wire[..at]);
            seen.extend(watcher.feed(&wire[at..]));
            assert_eq!(seen, expected, "split at {at}");
        }
        let mut watcher = FrameWatcher::default();
        let seen: Vec<Seen> = wire.iter().flat_map(|b| watcher.feed(&[*b])).collect();
        assert_eq!(seen, expected);
    }

    #[test]
    fn a_settings_frame_with_neither_value_still_counts() {
        let wire = frame(SETTINGS, 0, 0, &[0, 1, 0, 0, 0x10, 0]);
        assert_eq!(
            FrameWatcher::default().feed(&wire),
            vec![Seen::Settings {
                max_concurrent_streams: None,
                initial_window: None
            }]
        );
    }

    #[test]
    fn error_codes_have_their_names() {
        assert_eq!(reason_name(0x7), "REFUSED_STREAM");
        assert_eq!(reason_name(0x8), "CANCEL");
        assert_eq!(reason_name(0x42), "unknown error code 0x42");
    }
}
