//! The inspector's model: events in, view data out — lanes of segments and markers,
//! per-key counters, samples for the plot, a request table. Pure: no drawing, no I/O,
//! no clock; the panels only read it.
//!
//! Theory of operation. Every connection (and every proxy tunnel) is a [`Lane`]. A
//! lane is always in one [`Phase`]; an event that moves it to another phase ends the
//! open [`Segment`] and starts the next:
//!
//! ```text
//!  dial_start ─► Dialing ─tls_start─► Tls ─got_conn─► Writing ─wrote_request─► Awaiting
//!                   │                   └─put_idle─┐                              │ response
//!                   └────────put_idle (late dial)──┤                              ▼
//!      close (any phase) ─► closed     Idle ◄──put_idle{ok}── Reading ◄──────────┘
//!                                        └─got_conn (reuse)─► Writing …
//! ```
//!
//! A `wrote_request` after `response` (a body still streaming while an echo answers)
//! leaves the lane reading.
//!
//! An HTTP/2 connection (`got_conn{proto: h2}`) carries many requests at once: its
//! lane is in use (`Writing`) from the first open stream to `put_idle`, when its last
//! one ended, and each request is a [`StreamSpan`] beside the others, in the lowest
//! free sub-row, from its `got_conn` to its body's end; the lane counts its streams and
//! the most open at once.
//!
//! Points in time that are not phases (a reuse, a body's end, an early close, a retry,
//! the close with its reason) are [`Marker`]s. Counters are updated as phases change,
//! so reading them is free. Events the model cannot place (out of order, for a closed
//! lane) are applied as well as they can be and reported in [`View::problems`].
//!
//! A proxy source also tells the app's side (`app_*` events, [`apps`]): each app
//! connection is a lane of its own ([`LaneId::App`]) grouped by the process that
//! opened it, counted in [`View::apps`] and never in the pool's counters.

use std::collections::{BTreeMap, HashMap};

use roundtrip_host::events::{Event, EventKind, Proto, WatchMode};

pub mod apps;
pub mod served;

pub use apps::{AppRequestRow, AppStats};

/// Microseconds on the source's clock (`ts_us`).
pub type Micros = u64;

/// Problems kept per view; later ones are counted, not stored.
const MAX_PROBLEMS: usize = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LaneId {
    Conn(u64),
    Tunnel(u64),
    /// An app's connection to the proxy (`app_conn`).
    App(u64),
}

impl std::fmt::Display for LaneId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LaneId::Conn(id) => write!(f, "conn #{id}"),
            LaneId::Tunnel(id) => write!(f, "tunnel {id}"),
            LaneId::App(id) => write!(f, "app conn #{id}"),
        }
    }
}

/// What a connection is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Phase {
    /// A dial's lookup of its host's name.
    Dns,
    Dialing,
    Tls,
    Writing,
    Awaiting,
    Reading,
    Idle,
    /// A proxy tunnel relaying bytes (on an app lane: bytes flowed in that time).
    Tunnel,
    /// An app's request, from its head reaching the proxy to its answer's end.
    Exchange,
}

impl Phase {
    pub const ALL: [Phase; 9] = [
        Phase::Dns,
        Phase::Dialing,
        Phase::Tls,
        Phase::Writing,
        Phase::Awaiting,
        Phase::Reading,
        Phase::Idle,
        Phase::Tunnel,
        Phase::Exchange,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Phase::Dns => "DNS lookup",
            Phase::Dialing => "dialing",
            Phase::Tls => "TLS handshake",
            Phase::Writing => "writing request",
            Phase::Awaiting => "awaiting response",
            Phase::Reading => "reading body",
            Phase::Idle => "idle",
            Phase::Tunnel => "tunnel, bytes flowing",
            Phase::Exchange => "app request",
        }
    }

    fn load(self) -> Load {
        match self {
            Phase::Dns | Phase::Dialing | Phase::Tls => Load::Dialing,
            Phase::Idle => Load::Idle,
            Phase::Writing | Phase::Awaiting | Phase::Reading | Phase::Tunnel | Phase::Exchange => {
                Load::InUse
            }
        }
    }
}

/// What a phase counts as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Load {
    Dialing,
    InUse,
    Idle,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub phase: Phase,
    pub start: Micros,
    /// `None` while it lasts.
    pub end: Option<Micros>,
    /// The request it served, for request phases.
    pub req: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MarkerKind {
    Reuse,
    BodyEof,
    EarlyClose,
    Retry(String),
    /// An app's request that failed, with why.
    Failed(String),
    /// The connection closed, with its reason (or the error that ended a dial).
    Close(String),
}

impl MarkerKind {
    pub fn label(&self) -> String {
        match self {
            MarkerKind::Reuse => "reuse".to_owned(),
            MarkerKind::BodyEof => "body EOF".to_owned(),
            MarkerKind::EarlyClose => "body closed early".to_owned(),
            MarkerKind::Retry(reason) => format!("retry: {reason}"),
            MarkerKind::Failed(error) => format!("failed: {error}"),
            MarkerKind::Close(reason) => format!("close: {reason}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marker {
    pub at: Micros,
    pub kind: MarkerKind,
}

/// One connection's (or tunnel's) life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lane {
    pub id: LaneId,
    pub key: String,
    /// Where it was dialed (`host:port`), then the peer address.
    pub addr: Option<String>,
    pub segments: Vec<Segment>,
    pub markers: Vec<Marker>,
    /// When and why it closed.
    pub closed: Option<(Micros, String)>,
    /// Requests it served, in order.
    pub requests: Vec<u64>,
    /// Bytes relayed up and down (tunnels).
    pub tunnel_bytes: Option<(u64, u64)>,
    /// Why setting it up failed (TLS, a proxy's refusal), told by the event before its
    /// `close{error}`: the close is shown with it.
    pub failure: Option<String>,
    /// HTTP/2: the connection is multiplexed; its streams, in the order they opened.
    pub h2: bool,
    pub streams: Vec<StreamSpan>,
    /// HTTP/2: most streams open at once.
    pub peak_streams: usize,
    /// Each address its dial tried (Happy Eyeballs may race several).
    pub attempts: Vec<Attempt>,
    /// When its last TLS handshake finished: through an `https://` proxy, the proxy's,
    /// before the `CONNECT` and the origin's handshake.
    pub tls_done: Option<Micros>,
}

/// One address a dial tried: when, and how it ended (`None` while in flight).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub addr: String,
    pub start: Micros,
    pub end: Option<(Micros, Option<String>)>,
}

/// One HTTP/2 stream of a lane: a request, from `got_conn` to its body's end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamSpan {
    pub stream: u32,
    pub req: Option<u64>,
    pub start: Micros,
    pub end: Option<Micros>,
    /// The sub-row it is drawn in: the lowest free one when it opened.
    pub slot: usize,
}

impl Lane {
    /// HTTP/2 streams open now.
    pub fn open_streams(&self) -> usize {
        self.streams.iter().filter(|s| s.end.is_none()).count()
    }

    /// Ends the open stream of `req` (or, with `None`, every open stream) at `at`.
    fn end_streams(&mut self, req: Option<u64>, at: Micros) {
        for span in self.streams.iter_mut().rev() {
            if span.end.is_none() && (req.is_none() || span.req == req) {
                span.end = Some(at);
            }
        }
    }

    fn new(id: LaneId, key: &str) -> Self {
        Self {
            id,
            key: key.to_owned(),
            addr: None,
            segments: Vec::new(),
            markers: Vec::new(),
            closed: None,
            requests: Vec::new(),
            tunnel_bytes: None,
            failure: None,
            h2: false,
            streams: Vec::new(),
            peak_streams: 0,
            attempts: Vec::new(),
            tls_done: None,
        }
    }

    /// Ends the segment in progress, if one is, at `at`; returns the load it had.
    fn end_open_segment(&mut self, at: Micros) -> Option<Load> {
        let before = self.phase().map(Phase::load);
        if let Some(open) = self.segments.last_mut()
            && open.end.is_none()
        {
            open.end = Some(at);
        }
        before
    }

    pub fn opened(&self) -> Micros {
        self.segments.first().map_or(0, |s| s.start)
    }

    /// The phase now, `None` once closed.
    pub fn phase(&self) -> Option<Phase> {
        if self.closed.is_some() {
            return None;
        }
        self.segments.last().map(|s| s.phase)
    }

    /// The segment under `at`, if any.
    pub fn segment_at(&self, at: Micros) -> Option<&Segment> {
        let i = self.segments.partition_point(|s| s.start <= at);
        let segment = self.segments.get(i.checked_sub(1)?)?;
        let end = segment
            .end
            .or(self.closed.as_ref().map(|(t, _)| *t))
            .unwrap_or(Micros::MAX);
        (at < end).then_some(segment)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Outcome {
    #[default]
    InFlight,
    /// Body read to its end.
    Done,
    ClosedEarly,
    /// Ended by an error or never answered.
    Failed,
}

/// One request, for the table and the hover text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestRow {
    pub req: u64,
    pub key: String,
    pub method: String,
    pub url: String,
    pub conn: Option<u64>,
    pub reused: bool,
    pub status: Option<u16>,
    pub start: Micros,
    pub first_byte: Option<Micros>,
    pub end: Option<Micros>,
    pub bytes: Option<u64>,
    pub retries: u32,
    pub outcome: Outcome,
    /// Under `roundtrip serve`: the instance and incoming request that sent it.
    pub caused_by: Option<served::CausedBy>,
}

/// A step of a request's waterfall, as browsers' network panels name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Waiting for a connection: in line, or for another request's dial.
    Queued,
    Dns,
    Connect,
    Tls,
    /// Writing the request.
    Send,
    /// Waiting for the response's first byte.
    Wait,
    /// Reading the body.
    Body,
}

impl Step {
    pub fn label(self) -> &'static str {
        match self {
            Step::Queued => "queued",
            Step::Dns => "DNS",
            Step::Connect => "connect",
            Step::Tls => "TLS",
            Step::Send => "send",
            Step::Wait => "wait",
            Step::Body => "body",
        }
    }
}

impl RequestRow {
    /// Time to first byte, from asking for a connection.
    pub fn ttfb_us(&self) -> Option<Micros> {
        self.first_byte.map(|t| t.saturating_sub(self.start))
    }

    pub fn total_us(&self) -> Option<Micros> {
        self.end.map(|t| t.saturating_sub(self.start))
    }
}

/// Counters of one pool key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyStats {
    pub dials: u32,
    pub reuses: u32,
    /// `got_conn` events: requests that got a connection.
    pub got: u32,
    pub dialing: u32,
    pub in_use: u32,
    pub idle: u32,
    pub peak_idle: u32,
    pub waiting: u32,
    pub closed: u32,
}

impl KeyStats {
    /// Share of connections handed out that were reused.
    pub fn reuse_ratio(&self) -> f64 {
        if self.got == 0 {
            0.0
        } else {
            f64::from(self.reuses) / f64::from(self.got)
        }
    }

    fn add(&mut self, load: Load, by: i32) {
        let field = match load {
            Load::Dialing => &mut self.dialing,
            Load::InUse => &mut self.in_use,
            Load::Idle => &mut self.idle,
        };
        *field = field.saturating_add_signed(by);
        self.peak_idle = self.peak_idle.max(self.idle);
    }
}

/// Open, in-use and idle connections of the pool, and the app connections open,
/// after an event, for the plot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    pub at: Micros,
    pub open: u32,
    pub in_use: u32,
    pub idle: u32,
    pub app_open: u32,
}

/// How far behind the latest event one may come before it is reported out of order.
const INTERLEAVE_US: Micros = 1_000;

/// Everything drawn for one source, built by [`View::apply`].
#[derive(Debug, Default)]
pub struct View {
    pub lanes: Vec<Lane>,
    lane_index: HashMap<LaneId, usize>,
    pub requests: Vec<RequestRow>,
    request_index: HashMap<u64, usize>,
    pub keys: BTreeMap<String, KeyStats>,
    pub samples: Vec<Sample>,
    pub problems: Vec<String>,
    pub problem_count: usize,
    /// Latest `ts_us` seen.
    pub now: Micros,
    /// The first event's `ts_us` (a source's clock starts before its first event).
    pub first: Micros,
    pub events: usize,
    totals: KeyStats,
    /// Requests waiting in line, with their key.
    waiting: HashMap<u64, String>,
    /// Per app (its label: command and pid), the app's own counters.
    pub apps: BTreeMap<String, AppStats>,
    /// The apps' requests, in the order they ended.
    pub app_requests: Vec<AppRequestRow>,
    /// A `watch` source: its apps' connections come from the kernel, without requests.
    pub watched: bool,
    /// How the kernel was watched (`watch_start`), and what that way misses.
    pub watch_mode: Option<(WatchMode, String)>,
    /// App connections open now.
    app_open: u32,
    /// Under `roundtrip serve`: instances and incoming requests.
    pub served: served::Served,
}

impl View {
    pub fn new() -> Self {
        Self::default()
    }

    /// A view of `events`, in order.
    pub fn of<'a>(events: impl IntoIterator<Item = &'a Event>) -> Self {
        let mut view = Self::new();
        for event in events {
            view.apply(event);
        }
        view
    }

    pub fn lane(&self, id: LaneId) -> Option<&Lane> {
        self.lane_index.get(&id).map(|&i| &self.lanes[i])
    }

    pub fn request(&self, req: u64) -> Option<&RequestRow> {
        self.request_index.get(&req).map(|&i| &self.requests[i])
    }

    /// `row`'s waterfall: its steps in time order, `(step, start, end)`. A request on
    /// a new connection shows the connection's setup (lookup, connect, TLS), from its
    /// own start on; on a reused one, none. HTTP/1.1's send, wait and body are its
    /// connection's phases; HTTP/2's are the stream's: wait until the first byte, then
    /// the body. A request still in flight ends at [`View::now`].
    pub fn steps(&self, row: &RequestRow) -> Vec<(Step, Micros, Micros)> {
        let end = row.end.unwrap_or(self.now);
        let lane = row.conn.and_then(|conn| self.lane(LaneId::Conn(conn)));
        let mut steps: Vec<(Step, Micros, Micros)> = Vec::new();
        let mut push = |step: Step, from: Micros, to: Micros| {
            let from = from.clamp(row.start, end);
            let to = to.clamp(from, end);
            if to > from {
                steps.push((step, from, to));
            }
        };
        let Some(lane) = lane else {
            push(Step::Queued, row.start, end);
            return steps;
        };
        let segment_end = |s: &Segment| s.end.unwrap_or(end);
        let setup: Vec<&Segment> = if row.reused {
            Vec::new()
        } else {
            lane.segments
                .iter()
                .take_while(|s| matches!(s.phase, Phase::Dns | Phase::Dialing | Phase::Tls))
                .collect()
        };
        let first = setup.first().map_or(row.start, |s| s.start.max(row.start));
        push(Step::Queued, row.start, first);
        for segment in &setup {
            let step = match segment.phase {
                Phase::Dns => Step::Dns,
                Phase::Tls => Step::Tls,
                _ => Step::Connect,
            };
            push(step, segment.start, segment_end(segment));
        }
        let ready = setup.last().map_or(first, |s| segment_end(s).max(first));
        if lane.h2 {
            let first_byte = row.first_byte.unwrap_or(end);
            push(Step::Wait, ready, first_byte);
            push(Step::Body, first_byte, end);
            return steps;
        }
        let mine = lane
            .segments
            .iter()
            .filter(|s| s.req == Some(row.req) && s.start >= row.start);
        let mut last = ready;
        for segment in mine {
            let step = match segment.phase {
                Phase::Writing => Step::Send,
                Phase::Awaiting => Step::Wait,
                Phase::Reading => Step::Body,
                _ => continue,
            };
            // Waiting for the connection between its setup and the request's use.
            push(Step::Queued, last, segment.start);
            push(step, segment.start, segment_end(segment));
            last = segment_end(segment);
        }
        steps
    }

    /// Totals over every key.
    pub fn totals(&self) -> &KeyStats {
        &self.totals
    }

    pub fn problem(&mut self, text: String) {
        self.problem_count += 1;
        if self.problems.len() < MAX_PROBLEMS {
            self.problems.push(text);
        }
    }

    /// Applies one event.
    pub fn apply(&mut self, event: &Event) {
        self.events += 1;
        let at = if event.ts_us < self.now {
            // Host-side events (`roundtrip serve`'s, a proxy's) and the component's
            // come from two threads of one process and may land a little apart: drawn
            // at `now`, not reported.
            if event.ts_us + INTERLEAVE_US < self.now {
                self.problem(format!(
                    "event {} ({}) is out of order: ts_us {} after {}",
                    self.events,
                    event.name(),
                    event.ts_us,
                    self.now
                ));
            }
            self.now
        } else {
            event.ts_us
        };
        if self.events == 1 {
            self.first = event.ts_us;
        }
        self.now = at;
        let key = event.key.clone().unwrap_or_default();
        let lane = event
            .conn
            .map(LaneId::Conn)
            .or(event.tunnel.map(LaneId::Tunnel));
        let app_changed = event
            .app_conn
            .is_some_and(|app| self.apply_app(app, event, at));
        let changed = self.apply_kind(event, at, &key, lane);
        if changed || app_changed {
            self.samples.push(Sample {
                at,
                open: self.totals.dialing + self.totals.in_use + self.totals.idle,
                in_use: self.totals.in_use,
                idle: self.totals.idle,
                app_open: self.app_open,
            });
        }
    }

    /// Returns whether the connection counts changed.
    fn apply_kind(&mut self, event: &Event, at: Micros, key: &str, lane: Option<LaneId>) -> bool {
        let req = event.req;
        match &event.kind {
            EventKind::GetConn { method, url } => {
                let Some(req) = req else { return false };
                if let Some(row) = self.row_mut(req) {
                    // Asked again: a retry.
                    row.conn = None;
                    return false;
                }
                self.request_index.insert(req, self.requests.len());
                self.requests.push(RequestRow {
                    req,
                    key: key.to_owned(),
                    method: method.clone(),
                    url: url.clone(),
                    start: at,
                    ..RequestRow::default()
                });
                false
            }
            EventKind::WaitForConn { .. } => {
                let Some(req) = req else { return false };
                if self.waiting.insert(req, key.to_owned()).is_none() {
                    self.keys.entry(key.to_owned()).or_default().waiting += 1;
                    self.totals.waiting += 1;
                }
                false
            }
            EventKind::DialStart { addr } | EventKind::TunnelStart { addr } => {
                let Some(id) = lane else { return false };
                if self.lane_index.contains_key(&id) {
                    self.problem(format!("{id} was dialed twice"));
                    return false;
                }
                self.lane_index.insert(id, self.lanes.len());
                let mut new = Lane::new(id, key);
                new.addr = Some(addr.clone());
                new.segments.push(Segment {
                    phase: Phase::Dialing,
                    start: at,
                    end: None,
                    req,
                });
                self.lanes.push(new);
                let stats = self.keys.entry(key.to_owned()).or_default();
                stats.dials += 1;
                stats.add(Load::Dialing, 1);
                self.totals.dials += 1;
                self.totals.add(Load::Dialing, 1);
                true
            }
            EventKind::DialDone { addr, error } | EventKind::TunnelDone { addr, error } => {
                let Some(id) = lane else { return false };
                if let Some(error) = error {
                    self.fail_dialing_request(id, at);
                    return self.close(id, at, key, format!("dial failed: {error}"));
                }
                if let Some(lane) = self.lane_mut(id, key) {
                    lane.addr = addr.clone().or(lane.addr.take());
                }
                if matches!(event.kind, EventKind::TunnelDone { .. }) {
                    return self.enter(id, at, key, Phase::Tunnel, None);
                }
                false
            }
            // The lane keeps the proxy's address; its key names the target.
            EventKind::ProxyConnect { error, .. } => {
                let Some(id) = lane else { return false };
                if let Some(error) = error {
                    if let Some(lane) = self.lane_mut(id, key) {
                        lane.failure = Some(format!("proxy failed: {error}"));
                    }
                    self.fail_dialing_request(id, at);
                }
                false
            }
            // The dial's first step: its lane starts with the lookup.
            EventKind::DnsStart { .. } => {
                let Some(id) = lane else { return false };
                let Some(lane) = self.lane_mut(id, key) else {
                    return false;
                };
                match lane.segments.as_mut_slice() {
                    [dial] if dial.phase == Phase::Dialing => {
                        dial.phase = Phase::Dns;
                        false
                    }
                    _ => self.enter(id, at, key, Phase::Dns, req),
                }
            }
            // The connect follows (a failed lookup: `dial_done` with its error).
            EventKind::DnsDone { error: None, .. } => match lane {
                Some(id) => self.enter(id, at, key, Phase::Dialing, req),
                None => false,
            },
            EventKind::DnsDone { error: Some(_), .. } => false,
            EventKind::ConnectStart { addr } => {
                if let Some(lane) = lane.and_then(|id| self.lane_mut(id, key)) {
                    lane.attempts.push(Attempt {
                        addr: addr.clone(),
                        start: at,
                        end: None,
                    });
                }
                false
            }
            EventKind::ConnectDone { addr, error } => {
                if let Some(lane) = lane.and_then(|id| self.lane_mut(id, key))
                    && let Some(attempt) = lane
                        .attempts
                        .iter_mut()
                        .rev()
                        .find(|a| a.addr == *addr && a.end.is_none())
                {
                    attempt.end = Some((at, error.clone()));
                }
                false
            }
            EventKind::TlsStart { .. } => {
                let Some(id) = lane else { return false };
                // TLS to an `https://` proxy ended before the `CONNECT`: that wait is
                // the connect's, as through a plain proxy, not the handshake's.
                if let Some(lane) = self.lane_mut(id, key)
                    && let Some(done) = lane.tls_done
                    && lane.phase() == Some(Phase::Tls)
                {
                    lane.end_open_segment(done);
                    lane.segments.push(Segment {
                        phase: Phase::Dialing,
                        start: done,
                        end: None,
                        req: None,
                    });
                }
                self.enter(id, at, key, Phase::Tls, None)
            }
            EventKind::TlsDone { error: None, .. } => {
                if let Some(lane) = lane.and_then(|id| self.lane_mut(id, key)) {
                    lane.tls_done = Some(at);
                }
                false
            }
            EventKind::TlsDone {
                error: Some(error), ..
            } => {
                let Some(id) = lane else { return false };
                if let Some(lane) = self.lane_mut(id, key) {
                    lane.failure = Some(format!("TLS failed: {error}"));
                }
                self.fail_dialing_request(id, at);
                false
            }
            EventKind::GotConn {
                reused,
                proto,
                stream,
                ..
            } => {
                let Some(id) = lane else { return false };
                if let Some(waited) = req.and_then(|r| self.waiting.remove(&r)) {
                    let stats = self.keys.entry(waited).or_default();
                    stats.waiting = stats.waiting.saturating_sub(1);
                    self.totals.waiting = self.totals.waiting.saturating_sub(1);
                }
                let stats = self.keys.entry(key.to_owned()).or_default();
                stats.got += 1;
                self.totals.got += 1;
                if *reused {
                    stats.reuses += 1;
                    self.totals.reuses += 1;
                }
                if let Some(req) = req
                    && let Some(row) = self.row_mut(req)
                {
                    row.conn = event.conn;
                    row.reused = *reused;
                }
                if let Some(lane) = self.lane_mut(id, key) {
                    if *reused {
                        lane.markers.push(Marker {
                            at,
                            kind: MarkerKind::Reuse,
                        });
                    }
                    lane.requests.extend(req);
                    // HTTP/2: the stream opens beside the others; the lane is in use
                    // from its first open stream to its last one's end.
                    if *proto == Proto::H2 {
                        lane.h2 = true;
                        let busy: Vec<usize> = lane
                            .streams
                            .iter()
                            .filter(|s| s.end.is_none())
                            .map(|s| s.slot)
                            .collect();
                        let slot = (0..).find(|n| !busy.contains(n)).unwrap_or_default();
                        lane.streams.push(StreamSpan {
                            stream: stream.unwrap_or_default(),
                            req,
                            start: at,
                            end: None,
                            slot,
                        });
                        let open = busy.len() + 1;
                        lane.peak_streams = lane.peak_streams.max(open);
                        if open > 1 {
                            return false;
                        }
                    }
                }
                self.enter(id, at, key, Phase::Writing, req)
            }
            // A streamed body may finish after the response head (an echo): the lane
            // is reading by then and stays so.
            EventKind::WroteRequest { .. } => match lane {
                // HTTP/2: the streams are drawn on their own; the lane stays in use.
                Some(id) if self.lane(id).is_some_and(|l| l.h2) => false,
                Some(id) if self.lane(id).and_then(Lane::phase) == Some(Phase::Writing) => {
                    self.enter(id, at, key, Phase::Awaiting, req)
                }
                _ => false,
            },
            EventKind::FirstByte => {
                if let Some(row) = req.and_then(|r| self.row_mut(r)) {
                    row.first_byte.get_or_insert(at);
                }
                false
            }
            EventKind::Response { status } => {
                if let Some(row) = req.and_then(|r| self.row_mut(r)) {
                    row.status = Some(*status);
                    row.first_byte.get_or_insert(at);
                }
                match lane {
                    Some(id) if self.lane(id).is_some_and(|l| l.h2) => false,
                    Some(id) => self.enter(id, at, key, Phase::Reading, req),
                    None => false,
                }
            }
            EventKind::BodyEof { bytes } | EventKind::BodyClosedEarly { bytes, .. } => {
                let early = matches!(event.kind, EventKind::BodyClosedEarly { .. });
                if let Some(row) = req.and_then(|r| self.row_mut(r)) {
                    row.end = Some(at);
                    row.bytes = Some(*bytes);
                    row.outcome = if early {
                        Outcome::ClosedEarly
                    } else {
                        Outcome::Done
                    };
                }
                if let Some(lane) = lane.and_then(|id| self.lane_mut(id, key)) {
                    lane.markers.push(Marker {
                        at,
                        kind: if early {
                            MarkerKind::EarlyClose
                        } else {
                            MarkerKind::BodyEof
                        },
                    });
                    lane.end_streams(req, at);
                }
                false
            }
            EventKind::PutIdle { ok: true, .. } => match lane {
                Some(id) => {
                    if let Some(lane) = self.lane_mut(id, key) {
                        lane.end_streams(None, at);
                    }
                    self.enter(id, at, key, Phase::Idle, None)
                }
                None => false,
            },
            // A stream the transport reset ends there (the server's resets name no
            // request: the request's own error or retry follows).
            EventKind::StreamReset { .. } => {
                if let (Some(id), Some(_)) = (lane, req)
                    && let Some(lane) = self.lane_mut(id, key)
                {
                    lane.end_streams(req, at);
                }
                false
            }
            EventKind::Retry { reason } => {
                if let Some(row) = req.and_then(|r| self.row_mut(r)) {
                    row.retries += 1;
                }
                // Its HTTP/2 stream, if it had one, ended with the failure.
                let open: Vec<usize> = self
                    .lanes
                    .iter()
                    .enumerate()
                    .filter(|(_, l)| l.h2 && l.streams.iter().any(|s| s.end.is_none() && s.req == req))
                    .map(|(i, _)| i)
                    .collect();
                for i in open {
                    self.lanes[i].end_streams(req, at);
                }
                if let Some(lane) = lane.and_then(|id| self.lane_mut(id, key)) {
                    lane.markers.push(Marker {
                        at,
                        kind: MarkerKind::Retry(reason.clone()),
                    });
                }
                false
            }
            EventKind::Close { reason } => {
                let Some(id) = lane else { return false };
                let failure = self.lane_mut(id, key).and_then(|lane| lane.failure.take());
                let reason = failure.unwrap_or_else(|| reason.as_str().to_owned());
                self.close(id, at, key, reason)
            }
            EventKind::TunnelClose {
                bytes_up,
                bytes_down,
            } => {
                let Some(id) = lane else { return false };
                if let Some(lane) = self.lane_mut(id, key) {
                    lane.tunnel_bytes = Some((*bytes_up, *bytes_down));
                }
                self.close(id, at, key, "tunnel closed".to_owned())
            }
            EventKind::TransportRestarted { reason } => {
                // The old instance's sockets closed with it.
                let open: Vec<LaneId> = self
                    .lanes
                    .iter()
                    .filter(|l| l.closed.is_none() && matches!(l.id, LaneId::Conn(_)))
                    .map(|l| l.id)
                    .collect();
                let mut changed = false;
                for id in open {
                    changed |= self.close(id, at, key, format!("transport restarted: {reason}"));
                }
                self.problem(format!("the transport component restarted: {reason}"));
                changed
            }
            EventKind::WatchStart { mode, misses, .. } => {
                self.watched = true;
                self.watch_mode = Some((*mode, misses.clone()));
                false
            }
            EventKind::WroteHeaders
            | EventKind::Got1xx { .. }
            | EventKind::PutIdle { ok: false, .. }
            // The app's side of `roundtrip proxy`: [`apps`].
            | EventKind::TunnelActivity { .. }
            | EventKind::AppConnOpen { .. }
            | EventKind::AppRequest { .. }
            | EventKind::AppConnClose { .. }
            | EventKind::SocketOpen { .. }
            | EventKind::SocketActivity { .. }
            | EventKind::SocketClose { .. }
            | EventKind::H2Settings { .. }
            | EventKind::Goaway { .. }
            | EventKind::Ping
            | EventKind::PingTimeout => false,
            // A served app (`roundtrip serve`): [`served`].
            EventKind::InstanceStart { .. }
            | EventKind::InstanceEnd { .. }
            | EventKind::IncomingStart { .. }
            | EventKind::IncomingDone { .. }
            | EventKind::Outgoing { .. } => {
                self.apply_served(&event.kind, req, at);
                false
            }
        }
    }

    fn row_mut(&mut self, req: u64) -> Option<&mut RequestRow> {
        let &i = self.request_index.get(&req)?;
        self.requests.get_mut(i)
    }

    /// The lane `id`, made on the spot when its start was never seen (an inspector
    /// attached late); `None` once it is closed (reported).
    fn lane_mut(&mut self, id: LaneId, key: &str) -> Option<&mut Lane> {
        let i = self.lane_index_or_new(id, key);
        if self.lanes[i].closed.is_some() {
            self.problem(format!("an event for {id} after it closed"));
            return None;
        }
        Some(&mut self.lanes[i])
    }

    /// The index of lane `id`, made on the spot when its start was never seen.
    fn lane_index_or_new(&mut self, id: LaneId, key: &str) -> usize {
        match self.lane_index.get(&id) {
            Some(&i) => i,
            None => {
                self.lane_index.insert(id, self.lanes.len());
                self.lanes.push(Lane::new(id, key));
                self.lanes.len() - 1
            }
        }
    }

    /// Moves a lane to `phase`; returns whether the counts changed.
    fn enter(&mut self, id: LaneId, at: Micros, key: &str, phase: Phase, req: Option<u64>) -> bool {
        let Some(lane) = self.lane_mut(id, key) else {
            return false;
        };
        let before = lane.end_open_segment(at);
        lane.segments.push(Segment {
            phase,
            start: at,
            end: None,
            req,
        });
        let lane_key = lane.key.clone();
        self.move_load(&lane_key, before, Some(phase.load()))
    }

    /// Closes a lane; returns whether the counts changed.
    /// A dial that failed fails the request it was made for, unless that request was
    /// served by another connection meanwhile (late binding).
    fn fail_dialing_request(&mut self, id: LaneId, at: Micros) {
        let req = self
            .lane_index
            .get(&id)
            .and_then(|&i| self.lanes[i].segments.first())
            .and_then(|dial| dial.req);
        if let Some(req) = req
            && let Some(row) = self.row_mut(req)
            && row.outcome == Outcome::InFlight
            && row.conn.is_none()
        {
            row.outcome = Outcome::Failed;
            row.end = Some(at);
        }
    }

    fn close(&mut self, id: LaneId, at: Micros, key: &str, reason: String) -> bool {
        let Some(lane) = self.lane_mut(id, key) else {
            return false;
        };
        let before = lane.end_open_segment(at);
        lane.end_streams(None, at);
        lane.markers.push(Marker {
            at,
            kind: MarkerKind::Close(reason.clone()),
        });
        lane.closed = Some((at, reason));
        // A request still on the connection did not finish (tunnels carry none).
        let unfinished: Vec<u64> = lane.requests.clone();
        let lane_key = lane.key.clone();
        let conn = match id {
            LaneId::Conn(conn) => Some(conn),
            LaneId::Tunnel(_) | LaneId::App(_) => None,
        };
        for req in unfinished {
            if let Some(row) = self.row_mut(req)
                && row.outcome == Outcome::InFlight
                && row.conn == conn
            {
                row.outcome = Outcome::Failed;
                row.end = Some(at);
            }
        }
        self.keys.entry(lane_key.clone()).or_default().closed += 1;
        self.totals.closed += 1;
        self.move_load(&lane_key, before, None)
    }

    fn move_load(&mut self, key: &str, from: Option<Load>, to: Option<Load>) -> bool {
        if from == to {
            return false;
        }
        let stats = self.keys.entry(key.to_owned()).or_default();
        if let Some(from) = from {
            stats.add(from, -1);
            self.totals.add(from, -1);
        }
        if let Some(to) = to {
            stats.add(to, 1);
            self.totals.add(to, 1);
        }
        true
    }
}
