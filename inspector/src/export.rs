//! Saving what the inspector saw: the events as JSON Lines (readable again with
//! `--open`), and a Chrome trace-event file that opens in Perfetto or
//! `chrome://tracing`, one track per connection.

use std::io::Write;
use std::path::Path;

use roundtrip_host::events::Event;
use serde_json::{Value, json};

use crate::model::{LaneId, View};

/// Writes `events` as JSON Lines.
pub fn write_jsonl(path: &Path, events: &[Event]) -> std::io::Result<()> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    for event in events {
        writeln!(out, "{}", event.to_json())?;
    }
    out.flush()
}

/// The Chrome trace-event JSON of a view: a process named `title`, a thread per lane
/// (named by connection and key), a complete event per segment and an instant event
/// per marker. Times are the events' microseconds.
pub fn chrome_trace(view: &View, title: &str) -> Value {
    let mut trace = vec![json!({
        "name": "process_name", "ph": "M", "pid": 1, "tid": 0,
        "args": {"name": title},
    })];
    for (index, lane) in view.lanes.iter().enumerate() {
        let tid = index + 1;
        let kind = match lane.id {
            LaneId::Conn(_) => "connection",
            LaneId::Tunnel(_) => "tunnel",
            LaneId::App(_) => "app connection",
        };
        trace.push(json!({
            "name": "thread_name", "ph": "M", "pid": 1, "tid": tid,
            "args": {"name": format!("{} {}", lane.id, lane.key)},
        }));
        trace.push(json!({
            "name": "thread_sort_index", "ph": "M", "pid": 1, "tid": tid,
            "args": {"sort_index": tid},
        }));
        let lane_end = lane.closed.as_ref().map_or(view.now, |(at, _)| *at);
        for segment in &lane.segments {
            let end = segment.end.unwrap_or(lane_end);
            let mut args = json!({});
            if let Some(req) = segment.req.and_then(|r| view.request(r)) {
                args = json!({
                    "req": req.req, "method": req.method, "url": req.url,
                    "status": req.status, "bytes": req.bytes,
                });
            }
            trace.push(json!({
                "name": segment.phase.label(), "cat": kind, "ph": "X",
                "ts": segment.start, "dur": end.saturating_sub(segment.start),
                "pid": 1, "tid": tid, "args": args,
            }));
        }
        for marker in &lane.markers {
            trace.push(json!({
                "name": marker.kind.label(), "cat": kind, "ph": "i", "s": "t",
                "ts": marker.at, "pid": 1, "tid": tid,
            }));
        }
    }
    json!({"traceEvents": trace, "displayTimeUnit": "ms"})
}

/// Writes [`chrome_trace`] to `path`.
pub fn write_chrome_trace(path: &Path, view: &View, title: &str) -> std::io::Result<()> {
    let text = serde_json::to_string(&chrome_trace(view, title)).map_err(std::io::Error::other)?;
    std::fs::write(path, text)
}
