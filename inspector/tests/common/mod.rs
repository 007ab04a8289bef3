//! Scripted events for the inspector's tests.

use roundtrip_host::events::{Event, EventKind};

/// The pool key of every scripted event.
pub const KEY: &str = "http://127.0.0.1:8080";

/// An event of `KEY` at `ts_us`.
pub fn event(ts_us: u64, conn: Option<u64>, req: Option<u64>, kind: EventKind) -> Event {
    Event {
        ts_us,
        kind,
        conn,
        req,
        key: Some(KEY.to_owned()),
        tunnel: None,
        app_conn: None,
    }
}
