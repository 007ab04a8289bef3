//! The app's side of a proxy source: the connections an app opened to
//! `roundtrip proxy` (`app_conn_open`, `app_request`, `app_conn_close`, and the
//! tunnel events that carry an `app_conn`), drawn and counted apart from the
//! proxy's upstream pool — what the app did, not what the pool made of it.
//!
//! An app lane is idle while open and no request is on it. `app_request` comes when
//! its answer has ended and says how long it took, so its [`Phase::Exchange`]
//! segment is filled in then, back to when the request reached the proxy. A
//! tunnel's bytes are reported every [`ACTIVITY_INTERVAL_US`] that had traffic
//! (`tunnel_activity`); each report marks the interval before it as
//! [`Phase::Tunnel`], and reports back to back make one segment, so a tunnel
//! carrying many exchanges shows its bursts and the quiet between them.
//!
//! `watch` sources draw the same way from the kernel's socket table: `socket_open`,
//! `socket_activity` (bursts as for a tunnel) and `socket_close` — connections and
//! bytes of any protocol, but no requests, so no request segments or reuse.

use roundtrip_host::events::{AppCloseReason, Event, EventKind};

use super::{Lane, LaneId, Marker, MarkerKind, Micros, Phase, Segment, View};

/// How often the proxy reports a tunnel's bytes while they flow (its
/// `ACTIVITY_INTERVAL`).
pub const ACTIVITY_INTERVAL_US: Micros = 250_000;

/// Longest shown of an app's command line in its label.
const LABEL_CHARS: usize = 48;

/// One app's counters: what it did with its connections.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppStats {
    pub pid: Option<u32>,
    /// Connections it opened to the proxy.
    pub connections: u32,
    pub open: u32,
    pub requests: u32,
    /// Requests sent on a connection that had carried one before.
    pub reuses: u32,
    pub failed: u32,
    /// Connections it turned into tunnels (`CONNECT`): their requests are not seen.
    pub tunnels: u32,
    /// Seen by `watch` in the kernel's socket table: connections and bytes, no
    /// requests.
    pub watched: bool,
}

impl AppStats {
    /// Share of the app's requests that went on a connection it had used before.
    pub fn reuse_ratio(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            f64::from(self.reuses) / f64::from(self.requests)
        }
    }
}

/// One request of an app, as the proxy relayed it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppRequestRow {
    pub app_conn: u64,
    pub method: String,
    pub url: String,
    pub status: Option<u16>,
    /// Answer body bytes sent to the app, request body bytes read from it.
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub start: Micros,
    pub end: Micros,
    pub error: Option<String>,
    /// Whether its app connection had carried a request before.
    pub reused: bool,
    /// The upstream connection and request it became.
    pub conn: Option<u64>,
    pub req: Option<u64>,
}

impl View {
    /// Applies the app's side of `event` (it carries `app_conn`); returns whether the
    /// count of open app connections changed.
    pub(super) fn apply_app(&mut self, app_conn: u64, event: &Event, at: Micros) -> bool {
        let id = LaneId::App(app_conn);
        match &event.kind {
            EventKind::AppConnOpen { peer, pid, process } => {
                let label = label(*pid, process.as_deref(), peer);
                self.open_app(id, label, *pid, peer.clone(), at)
            }
            EventKind::SocketOpen {
                local,
                peer,
                pid,
                process,
            } => {
                self.watched = true;
                let label = label(*pid, process.as_deref(), local);
                let opened = self.open_app(
                    id,
                    label.clone(),
                    *pid,
                    format!("from {local} to {peer}"),
                    at,
                );
                if let Some(lane) = self.open_app_lane(id) {
                    lane.tunnel_bytes = Some((0, 0));
                }
                self.apps.entry(label).or_default().watched = true;
                opened
            }
            EventKind::SocketActivity {
                bytes_up,
                bytes_down,
                interval_us,
            } => {
                if let Some(lane) = self.open_app_lane(id) {
                    flowed(lane, at, *interval_us);
                    let (up, down) = lane.tunnel_bytes.unwrap_or_default();
                    lane.tunnel_bytes = Some((up + bytes_up, down + bytes_down));
                }
                false
            }
            EventKind::SocketClose {
                bytes_up,
                bytes_down,
            } => {
                if let Some(lane) = self.open_app_lane(id) {
                    lane.tunnel_bytes = Some((*bytes_up, *bytes_down));
                }
                self.close_app(
                    id,
                    at,
                    "the process let go of it (closed, or exited)".to_owned(),
                )
            }
            EventKind::AppRequest {
                method,
                url,
                status,
                bytes_in,
                bytes_out,
                elapsed_us,
                error,
            } => {
                let i = self.app_lane(id);
                let lane = &mut self.lanes[i];
                let reused = lane.segments.iter().any(|s| s.phase == Phase::Exchange);
                let start = at.saturating_sub(*elapsed_us);
                // An answer dropped after the app hung up is reported after the close.
                if lane.closed.is_none() {
                    let start = busy(lane, start, at, Phase::Exchange, event.req);
                    if reused {
                        lane.markers.push(Marker {
                            at: start,
                            kind: MarkerKind::Reuse,
                        });
                    }
                    if let Some(error) = error {
                        lane.markers.push(Marker {
                            at,
                            kind: MarkerKind::Failed(error.clone()),
                        });
                    }
                }
                let stats = self.apps.entry(lane.key.clone()).or_default();
                stats.requests += 1;
                stats.reuses += u32::from(reused);
                stats.failed += u32::from(error.is_some());
                self.app_requests.push(AppRequestRow {
                    app_conn,
                    method: method.clone(),
                    url: url.clone(),
                    status: *status,
                    bytes_in: *bytes_in,
                    bytes_out: *bytes_out,
                    start,
                    end: at,
                    error: error.clone(),
                    reused,
                    conn: event.conn,
                    req: event.req,
                });
                false
            }
            EventKind::AppConnClose { reason, error } => {
                let who = match reason {
                    AppCloseReason::App => "closed by the app",
                    AppCloseReason::Proxy => "closed by the proxy",
                    AppCloseReason::Error => "ended by an error",
                };
                let reason = match error {
                    Some(error) if *reason != AppCloseReason::App => format!("{who}: {error}"),
                    _ => who.to_owned(),
                };
                self.close_app(id, at, reason)
            }
            EventKind::TunnelStart { addr } => {
                if let Some(lane) = self.open_app_lane(id) {
                    let peer = lane.addr.take().unwrap_or_default();
                    lane.addr = Some(format!("{peer} ⇄ CONNECT {addr}"));
                    lane.tunnel_bytes = Some((0, 0));
                    let key = lane.key.clone();
                    self.apps.entry(key).or_default().tunnels += 1;
                }
                false
            }
            // No byte can flow before the target answered: bursts begin after it.
            EventKind::TunnelDone { error: None, .. } => {
                if let Some(lane) = self.open_app_lane(id) {
                    lane.end_open_segment(at);
                    lane.segments.push(idle(at));
                }
                false
            }
            EventKind::TunnelDone {
                error: Some(error), ..
            } => {
                if let Some(lane) = self.open_app_lane(id) {
                    lane.markers.push(Marker {
                        at,
                        kind: MarkerKind::Failed(format!("the tunnel's target: {error}")),
                    });
                }
                false
            }
            EventKind::TunnelActivity {
                bytes_up,
                bytes_down,
            } => {
                if let Some(lane) = self.open_app_lane(id) {
                    flowed(lane, at, ACTIVITY_INTERVAL_US);
                    let (up, down) = lane.tunnel_bytes.unwrap_or_default();
                    lane.tunnel_bytes = Some((up + bytes_up, down + bytes_down));
                }
                false
            }
            EventKind::TunnelClose {
                bytes_up,
                bytes_down,
            } => {
                if let Some(lane) = self.open_app_lane(id) {
                    lane.tunnel_bytes = Some((*bytes_up, *bytes_down));
                }
                false
            }
            _ => false,
        }
    }

    /// A new app lane `id` under `label`; false when `id` is known already.
    fn open_app(
        &mut self,
        id: LaneId,
        label: String,
        pid: Option<u32>,
        addr: String,
        at: Micros,
    ) -> bool {
        if self.lane_index.contains_key(&id) {
            self.problem(format!("{id} was opened twice"));
            return false;
        }
        self.lane_index.insert(id, self.lanes.len());
        let mut lane = Lane::new(id, &label);
        lane.addr = Some(addr);
        lane.segments.push(idle(at));
        self.lanes.push(lane);
        let stats = self.apps.entry(label).or_default();
        stats.pid = pid;
        stats.connections += 1;
        stats.open += 1;
        self.app_open += 1;
        true
    }

    /// Ends app lane `id` at `at` for `reason`; false when it was closed already.
    fn close_app(&mut self, id: LaneId, at: Micros, reason: String) -> bool {
        let i = self.app_lane(id);
        let lane = &mut self.lanes[i];
        if lane.closed.is_some() {
            self.problem(format!("{id} was closed twice"));
            return false;
        }
        lane.end_open_segment(at);
        lane.markers.push(Marker {
            at,
            kind: MarkerKind::Close(reason.clone()),
        });
        lane.closed = Some((at, reason));
        let key = lane.key.clone();
        let stats = self.apps.entry(key).or_default();
        stats.open = stats.open.saturating_sub(1);
        self.app_open = self.app_open.saturating_sub(1);
        true
    }

    /// The app lane `id`, made on the spot for an app the inspector did not see
    /// connect (attached late).
    fn app_lane(&mut self, id: LaneId) -> usize {
        let known = self.lane_index.contains_key(&id);
        let i = self.lane_index_or_new(id, UNKNOWN_APP);
        if !known {
            self.lanes[i].segments.push(idle(self.now));
            let stats = self.apps.entry(UNKNOWN_APP.to_owned()).or_default();
            stats.connections += 1;
            stats.open += 1;
            self.app_open += 1;
        }
        i
    }

    fn open_app_lane(&mut self, id: LaneId) -> Option<&mut Lane> {
        let i = self.app_lane(id);
        let lane = &mut self.lanes[i];
        lane.closed.is_none().then_some(lane)
    }
}

/// The group of app lanes whose `app_conn_open` was never seen.
pub const UNKNOWN_APP: &str = "an app seen only after it connected";

/// An app's label: its command and pid, or where it connected from.
fn label(pid: Option<u32>, process: Option<&str>, peer: &str) -> String {
    // `/usr/bin/python3 /home/me/fetch.py` reads as `python3 fetch.py`.
    let short = |p: &str| {
        let words: Vec<&str> = p
            .split(' ')
            .map(|w| match w.strip_prefix('/') {
                Some(path) => path.rsplit('/').next().unwrap_or(w),
                None => w,
            })
            .collect();
        // A `python3 -c` script spans lines: one line, one space between words.
        let p = words
            .join(" ")
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        match p.char_indices().nth(LABEL_CHARS) {
            Some((cut, _)) => format!("{}…", &p[..cut]),
            None => p,
        }
    };
    match (pid, process) {
        (Some(pid), Some(process)) if !process.is_empty() => {
            format!("{} (pid {pid})", short(process))
        }
        (Some(pid), _) => format!("pid {pid}"),
        _ => {
            let host = peer.rsplit_once(':').map_or(peer, |(host, _)| host);
            format!("{host} (no local process found)")
        }
    }
}

fn idle(at: Micros) -> Segment {
    Segment {
        phase: Phase::Idle,
        start: at,
        end: None,
        req: None,
    }
}

/// Fills `phase` from `from` (not before the open segment began) to `to`, the lane
/// idle after it; returns where it was placed.
fn busy(lane: &mut Lane, from: Micros, to: Micros, phase: Phase, req: Option<u64>) -> Micros {
    let open_start = lane.segments.last().map_or(from, |s| s.start);
    let from = from.max(open_start).min(to);
    // An idle segment that would end where it began is not kept.
    match lane.segments.last() {
        Some(open) if open.end.is_none() && open.start == from && open.phase == Phase::Idle => {
            lane.segments.pop();
        }
        _ => {
            lane.end_open_segment(from);
        }
    }
    lane.segments.push(Segment {
        phase,
        start: from,
        end: Some(to),
        req,
    });
    lane.segments.push(idle(to));
    from
}

/// Bytes flowed in the `interval` before `at`: one more interval of the burst under
/// way when the last report was the one before, otherwise a new burst.
fn flowed(lane: &mut Lane, at: Micros, interval: Micros) {
    let from = at.saturating_sub(interval);
    if let [.., burst, quiet] = lane.segments.as_mut_slice()
        && burst.phase == Phase::Tunnel
        && quiet.phase == Phase::Idle
        && quiet.end.is_none()
        && from <= quiet.start + interval / 2
    {
        burst.end = Some(at);
        quiet.start = at;
        return;
    }
    busy(lane, from, at, Phase::Tunnel, None);
}
