//! Saving what the inspector saw: the events as JSON Lines (readable again with
//! `--open`), and a Chrome trace-event file that opens in Perfetto or
//! `chrome://tracing`, one track per connection.

use std::io::Write;
use std::path::Path;

use roundtrip_host::events::Event;
use serde_json::{Value, json};

use crate::model::{LaneId, Step, View};

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

/// A HAR 1.2 log (the format Chrome, mitmproxy and HTTP Toolkit write) of a view's
/// requests: the transport's own, and an app's through the proxy. Each entry's
/// `connection` names the connection that carried it (`conn #3`, or the app's own
/// `app conn #2`), so the reuse story survives in other tools; the transport's
/// `timings` are its waterfall's steps ([`View::steps`]; `connect` includes `ssl`, as
/// HAR says). `started` is the wall-clock time of the events' zero. Events carry no
/// headers, so the entries have none (HAR's `-1`: unknown sizes).
pub fn har(view: &View, started: std::time::SystemTime) -> Value {
    let at = |us: u64| {
        humantime::format_rfc3339_micros(started + std::time::Duration::from_micros(us)).to_string()
    };
    let ms = |us: u64| us as f64 / 1000.0;
    let mut entries: Vec<(u64, Value)> = Vec::new();
    for row in &view.requests {
        let Some(end) = row.end else { continue };
        let lane = row.conn.and_then(|conn| view.lane(LaneId::Conn(conn)));
        // The waterfall's steps, in HAR's words.
        let steps = view.steps(row);
        let step_us = |step: Step| -> u64 {
            steps
                .iter()
                .filter(|(s, ..)| *s == step)
                .map(|(_, from, to)| to - from)
                .sum()
        };
        let (dns, dial, tls) = (
            step_us(Step::Dns),
            step_us(Step::Connect),
            step_us(Step::Tls),
        );
        let (blocked, send, wait, receive) = (
            step_us(Step::Queued),
            step_us(Step::Send),
            step_us(Step::Wait),
            step_us(Step::Body),
        );
        let total = end.saturating_sub(row.start);
        let h2 = lane.is_some_and(|l| l.h2);
        let version = if h2 { "HTTP/2" } else { "HTTP/1.1" };
        let size = row
            .bytes
            .map_or(-1, |b| i64::try_from(b).unwrap_or(i64::MAX));
        entries.push((
            row.start,
            json!({
                "startedDateTime": at(row.start),
                "time": ms(total),
                "request": request_of(&row.method, &row.url, version),
                "response": response_of(row.status, version, size),
                "cache": {},
                "timings": {
                    "blocked": ms(blocked),
                    "dns": if dns > 0 { ms(dns) } else { -1.0 },
                    "connect": if dial + tls > 0 { ms(dial + tls) } else { -1.0 },
                    "ssl": if tls > 0 { ms(tls) } else { -1.0 },
                    "send": ms(send),
                    "wait": ms(wait),
                    "receive": ms(receive),
                },
                "connection": row.conn.map(|c| LaneId::Conn(c).to_string()),
                "comment": format!(
                    "roundtrip request #{}{}",
                    row.req,
                    if row.reused { ", on a reused connection" } else { "" }
                ),
            }),
        ));
    }
    for row in &view.app_requests {
        let total = row.end.saturating_sub(row.start);
        let size = i64::try_from(row.bytes_in).unwrap_or(i64::MAX);
        let mut entry = json!({
            "startedDateTime": at(row.start),
            "time": ms(total),
            "request": request_of(&row.method, &row.url, "HTTP/1.1"),
            "response": response_of(row.status, "HTTP/1.1", size),
            "cache": {},
            "timings": {
                "blocked": -1, "dns": -1, "connect": -1, "ssl": -1,
                "send": 0, "wait": ms(total), "receive": 0,
            },
            "connection": LaneId::App(row.app_conn).to_string(),
            "comment": format!(
                "an app's request through the proxy{}",
                if row.reused { ", on a reused app connection" } else { "" }
            ),
        });
        if let Some(conn) = row.conn {
            entry["_upstreamConnection"] = json!(LaneId::Conn(conn).to_string());
        }
        if let Some(error) = &row.error {
            entry["_error"] = json!(error);
        }
        entries.push((row.start, entry));
    }
    entries.sort_by_key(|(start, _)| *start);
    json!({
        "log": {
            "version": "1.2",
            "creator": {"name": "roundtrip-inspector", "version": env!("CARGO_PKG_VERSION")},
            "pages": [],
            "entries": entries.into_iter().map(|(_, e)| e).collect::<Vec<_>>(),
        }
    })
}

fn request_of(method: &str, url: &str, version: &str) -> Value {
    let query: Vec<Value> = url
        .split_once('?')
        .map(|(_, query)| query.split_once('#').map_or(query, |(q, _)| q))
        .into_iter()
        .flat_map(|query| query.split('&'))
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            json!({"name": name, "value": value})
        })
        .collect();
    json!({
        "method": method,
        "url": url,
        "httpVersion": version,
        "cookies": [],
        "headers": [],
        "queryString": query,
        "headersSize": -1,
        "bodySize": -1,
    })
}

fn response_of(status: Option<u16>, version: &str, size: i64) -> Value {
    json!({
        // 0: no response (HAR's convention for a failed request).
        "status": status.unwrap_or(0),
        "statusText": "",
        "httpVersion": version,
        "cookies": [],
        "headers": [],
        "content": {"size": size.max(0), "mimeType": ""},
        "redirectURL": "",
        "headersSize": -1,
        "bodySize": size,
    })
}

/// The wall-clock time of the events' zero, taken as: `written` (when the last of
/// `events` happened, e.g. the file's last change) less the last event's time.
pub fn wall_zero(events: &[Event], written: std::time::SystemTime) -> std::time::SystemTime {
    let last = events.iter().map(|e| e.ts_us).max().unwrap_or(0);
    written
        .checked_sub(std::time::Duration::from_micros(last))
        .unwrap_or(written)
}

/// Writes [`har`] to `path`.
pub fn write_har(path: &Path, view: &View, started: std::time::SystemTime) -> std::io::Result<()> {
    let text = serde_json::to_string_pretty(&har(view, started)).map_err(std::io::Error::other)?;
    std::fs::write(path, text)
}
