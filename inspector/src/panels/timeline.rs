//! The timeline: one lane per connection, grouped by pool key; segments coloured by
//! phase, markers for reuse, body EOF, early close, retry and close. Ctrl+wheel zooms,
//! dragging pans, hovering tells what a connection was doing, a click selects a lane.

use std::collections::BTreeMap;

use egui::{Color32, Rect, Sense, Stroke, StrokeKind, Vec2, pos2, vec2};

use super::{duration, phase_color};
use crate::app::{Command, Source};
use crate::model::{Lane, LaneId, MarkerKind, Phase, View};

const ROW_HEIGHT: f32 = 20.0;
const LABEL_WIDTH: f32 = 190.0;

/// A row of the timeline: a heading (an app's, a pool key's, the pool's) or a lane
/// (index into `view.lanes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Row<'a> {
    /// An app and how many connections it opened.
    App(&'a str, usize),
    /// Above the proxy's upstream side, when there are apps.
    Pool,
    Key(&'a str, usize),
    Lane(usize),
}

/// The heading of the proxy's upstream side under the apps.
pub const POOL_HEADING: &str =
    "through Roundtrip's pool — the proxy's upstream connections, not the app's";

/// The rows in drawing order: the apps first (in the order they first connected),
/// each with its connections; then the pool's keys alphabetically, each key's lanes
/// by opening time.
pub fn rows(view: &View) -> Vec<Row<'_>> {
    let mut apps: Vec<(&str, Vec<usize>)> = Vec::new();
    let mut by_key: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (index, lane) in view.lanes.iter().enumerate() {
        let key = lane.key.as_str();
        if !matches!(lane.id, LaneId::App(_)) {
            by_key.entry(key).or_default().push(index);
        } else if let Some((_, lanes)) = apps.iter_mut().find(|(app, _)| *app == key) {
            lanes.push(index);
        } else {
            apps.push((key, vec![index]));
        }
    }
    let mut rows = Vec::with_capacity(view.lanes.len() + apps.len() + by_key.len() + 1);
    for (app, lanes) in &apps {
        rows.push(Row::App(app, lanes.len()));
        rows.extend(lanes.iter().copied().map(Row::Lane));
    }
    if !apps.is_empty() && !view.watched {
        rows.push(Row::Pool);
    }
    for (key, lanes) in by_key {
        rows.push(Row::Key(key, lanes.len()));
        rows.extend(lanes.into_iter().map(Row::Lane));
    }
    rows
}

/// Maps times to x positions for the visible window.
#[derive(Clone, Copy)]
struct Scale {
    start: f64,
    span: f64,
    left: f32,
    width: f32,
}

impl Scale {
    fn x(&self, at: f64) -> f32 {
        self.left + ((at - self.start) / self.span) as f32 * self.width
    }

    fn time(&self, x: f32) -> f64 {
        self.start + f64::from((x - self.left) / self.width) * self.span
    }
}

pub fn show(ui: &mut egui::Ui, source: &Source, commands: &mut Vec<Command>) {
    legend(ui);
    let view = &source.view;
    let full = ui.available_rect_before_wrap();
    let (start, span) = source.window();
    let scale = Scale {
        start,
        span,
        left: full.left() + LABEL_WIDTH,
        width: (full.width() - LABEL_WIDTH - 8.0).max(50.0),
    };
    axis(ui, scale);
    let rows = rows(view);
    let now = source.now();
    let area = egui::ScrollArea::vertical()
        .id_salt("timeline")
        .auto_shrink([false, false])
        .show_rows(ui, ROW_HEIGHT, rows.len(), |ui, range| {
            for row in &rows[range] {
                let (rect, response) = ui.allocate_exact_size(
                    vec2(ui.available_width(), ROW_HEIGHT),
                    Sense::click_and_drag(),
                );
                match *row {
                    Row::App(app, count) => heading(
                        ui,
                        rect,
                        &format!(
                            "app: {app} — {count} {}",
                            if count == 1 {
                                "connection"
                            } else {
                                "connections"
                            }
                        ),
                    ),
                    Row::Pool => heading(ui, rect, POOL_HEADING),
                    Row::Key(key, count) => heading(ui, rect, &format!("{key}  ({count})")),
                    Row::Lane(index) => {
                        let lane = &view.lanes[index];
                        let selected = source.selected_lane == Some(lane.id);
                        draw_lane(ui, rect, lane, scale, now, selected);
                        if response.clicked() {
                            commands.push(Command::SelectLane(lane.id));
                        }
                        if let Some(pointer) = response.hover_pos()
                            && pointer.x > scale.left
                        {
                            let at = scale.time(pointer.x);
                            response.on_hover_ui_at_pointer(|ui| {
                                hover_text(ui, view, lane, at.max(0.0) as u64, now);
                            });
                            continue;
                        }
                    }
                }
                if response.dragged() {
                    let dx = response.drag_delta().x;
                    commands.push(Command::Pan(
                        -f64::from(dx) / f64::from(scale.width) * scale.span,
                    ));
                }
            }
        });
    // Ctrl+wheel (or a pinch) zooms around the pointer.
    let zoom = ui.input(|i| i.zoom_delta());
    if zoom != 1.0
        && let Some(pointer) = ui.input(|i| i.pointer.hover_pos())
        && area.inner_rect.contains(pointer)
    {
        commands.push(Command::Zoom {
            factor: 1.0 / f64::from(zoom),
            around: scale.time(pointer.x),
        });
    }
}

fn heading(ui: &egui::Ui, rect: Rect, text: &str) {
    ui.painter().text(
        rect.left_center(),
        egui::Align2::LEFT_CENTER,
        text,
        egui::FontId::proportional(13.0),
        ui.visuals().strong_text_color(),
    );
}

fn legend(ui: &mut egui::Ui) {
    ui.horizontal_wrapped(|ui| {
        for phase in Phase::ALL {
            let (rect, _) = ui.allocate_exact_size(vec2(14.0, 10.0), Sense::hover());
            ui.painter().rect_filled(rect, 2.0, phase_color(phase));
            ui.label(phase.label());
        }
        ui.separator();
        for (kind, text) in [
            (MarkerKind::Reuse, "reuse"),
            (MarkerKind::BodyEof, "body EOF"),
            (MarkerKind::EarlyClose, "early close"),
            (MarkerKind::Retry(String::new()), "retry"),
            (MarkerKind::Failed(String::new()), "failed"),
            (MarkerKind::Close(String::new()), "close"),
        ] {
            let (rect, _) = ui.allocate_exact_size(vec2(12.0, 14.0), Sense::hover());
            draw_marker(ui.painter(), &kind, rect.center().x, rect);
            ui.label(text);
        }
    });
}

/// Time ticks across the top.
fn axis(ui: &mut egui::Ui, scale: Scale) {
    let (rect, _) = ui.allocate_exact_size(vec2(ui.available_width(), 16.0), Sense::hover());
    let step = tick_step(scale.span);
    let first = (scale.start.max(0.0) / step).ceil() * step;
    let mut at = first;
    let painter = ui.painter();
    while at <= scale.start + scale.span {
        let x = scale.x(at);
        painter.line_segment(
            [pos2(x, rect.bottom() - 4.0), pos2(x, rect.bottom())],
            Stroke::new(1.0, ui.visuals().weak_text_color()),
        );
        painter.text(
            pos2(x + 2.0, rect.center().y),
            egui::Align2::LEFT_CENTER,
            duration(at.max(0.0) as u64),
            egui::FontId::monospace(10.0),
            ui.visuals().weak_text_color(),
        );
        at += step;
    }
}

/// A round step giving about eight ticks over `span`.
fn tick_step(span: f64) -> f64 {
    let raw = (span / 8.0).max(1.0);
    let magnitude = 10f64.powf(raw.log10().floor());
    let unit = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .find(|m| m * magnitude >= raw)
        .unwrap_or(10.0);
    unit * magnitude
}

fn draw_lane(ui: &egui::Ui, rect: Rect, lane: &Lane, scale: Scale, now: u64, selected: bool) {
    let painter = ui.painter();
    if selected {
        painter.rect_filled(
            rect,
            0.0,
            ui.visuals().selection.bg_fill.gamma_multiply(0.5),
        );
    }
    let label = match (&lane.addr, lane.id) {
        // `watch`: `from LOCAL to PEER`; where it went is what tells them apart.
        (Some(ends), LaneId::App(id)) if ends.starts_with("from ") => {
            let peer = ends.rsplit(" to ").next().unwrap_or_default();
            format!("#{id} → {peer}")
        }
        // An app's lanes sit under its heading: the client port tells them apart.
        (Some(peer), LaneId::App(id)) => {
            let port = peer.split(' ').next().and_then(|p| p.rsplit_once(':'));
            format!("app #{id}  :{}", port.map_or("", |(_, port)| port))
        }
        (Some(addr), _) => format!("{}  {addr}", lane.id),
        (None, _) => lane.id.to_string(),
    };
    // HTTP/2: what the multiplexing did, at a glance (before the address, which the
    // label's width may cut).
    let label = if lane.h2 {
        label.replacen(
            &lane.id.to_string(),
            &format!("{} h2×{}", lane.id, lane.peak_streams),
            1,
        )
    } else {
        label
    };
    // The label stays left of the bars.
    let clipped = painter.with_clip_rect(Rect::from_min_max(
        rect.min,
        pos2(scale.left - 4.0, rect.bottom()),
    ));
    clipped.text(
        pos2(rect.left() + 10.0, rect.center().y),
        egui::Align2::LEFT_CENTER,
        label,
        egui::FontId::monospace(11.0),
        ui.visuals().text_color(),
    );
    let bar = Rect::from_min_max(
        pos2(scale.left, rect.top() + 4.0),
        pos2(scale.left + scale.width, rect.bottom() - 4.0),
    );
    let lane_end = lane.closed.as_ref().map_or(now, |(at, _)| *at);
    // Segments are in time order: skip those that end before the window.
    let first = lane
        .segments
        .partition_point(|s| (s.end.unwrap_or(lane_end) as f64) < scale.start);
    for segment in &lane.segments[first..] {
        if segment.start as f64 > scale.start + scale.span {
            break;
        }
        let start = scale.x(segment.start as f64).max(bar.left());
        let end = scale
            .x(segment.end.unwrap_or(lane_end) as f64)
            .min(bar.right());
        if end < start {
            continue;
        }
        // Work shorter than a few pixels (a connection of a millisecond, zoomed out)
        // still shows; idle is what is left.
        let least = if segment.phase == Phase::Idle {
            1.0
        } else {
            3.0
        };
        let shape = Rect::from_min_max(
            pos2(start, bar.top()),
            pos2(end.max(start + least), bar.bottom()),
        );
        // HTTP/2: the lane's own "in use" is the backdrop of its streams.
        let color = if lane.h2 && segment.phase != Phase::Idle {
            phase_color(segment.phase).gamma_multiply(0.35)
        } else {
            phase_color(segment.phase)
        };
        painter.rect_filled(shape, 2.0, color);
    }
    if lane.h2 {
        draw_streams(painter, lane, bar, scale, lane_end);
    }
    if lane.attempts.len() > 1 {
        draw_attempts(painter, lane, bar, scale, lane_end);
    }
    // Closed: a thin line to the window's end, so the lane reads as ended, not idle.
    if let Some((closed, _)) = &lane.closed {
        let from = scale.x(*closed as f64).max(bar.left());
        if from < bar.right() {
            painter.line_segment(
                [
                    pos2(from, bar.center().y),
                    pos2(bar.right(), bar.center().y),
                ],
                Stroke::new(1.0, ui.visuals().weak_text_color().gamma_multiply(0.5)),
            );
        }
    }
    for marker in &lane.markers {
        let x = scale.x(marker.at as f64);
        if x >= bar.left() && x <= bar.right() {
            draw_marker(painter, &marker.kind, x, rect);
        }
    }
    if selected {
        painter.rect_stroke(
            bar,
            2.0,
            Stroke::new(1.5, ui.visuals().strong_text_color()),
            StrokeKind::Outside,
        );
    }
}

/// A dial's race (Happy Eyeballs): each address tried as a thin line along the
/// bottom of the lane, one under another, from its `connect_start` to its end — green
/// for the one that connected, red for one that failed, grey for one given up on when
/// another won; the hover names them.
fn draw_attempts(painter: &egui::Painter, lane: &Lane, bar: Rect, scale: Scale, lane_end: u64) {
    const THICK: f32 = 3.0;
    for (index, attempt) in lane.attempts.iter().enumerate() {
        let (end, color) = match &attempt.end {
            Some((end, None)) => (*end, Color32::from_rgb(40, 200, 90)),
            Some((end, Some(why))) if why.starts_with("canceled") => {
                (*end, Color32::from_gray(150))
            }
            Some((end, Some(_))) => (*end, Color32::from_rgb(220, 40, 40)),
            None => (lane_end, Color32::from_gray(200)),
        };
        let left = scale.x(attempt.start as f64).max(bar.left());
        let right = scale.x(end as f64).min(bar.right()).max(left + 2.0);
        let bottom = bar.bottom() - index as f32 * (THICK + 1.0);
        if bottom - THICK < bar.top() {
            break;
        }
        painter.rect_filled(
            Rect::from_min_max(pos2(left, bottom - THICK), pos2(right, bottom)),
            0.0,
            color,
        );
    }
}

/// An HTTP/2 lane's streams, stacked: one sub-row per stream open at once (the most
/// the lane ever had), each stream a bar from its `got_conn` to its body's end.
fn draw_streams(painter: &egui::Painter, lane: &Lane, bar: Rect, scale: Scale, lane_end: u64) {
    let rows = lane.peak_streams.max(1);
    // At least a pixel each: past one row per pixel, rows share.
    let shown = rows.min(bar.height() as usize).max(1);
    let row_height = bar.height() / shown as f32;
    for span in &lane.streams {
        let end = span.end.unwrap_or(lane_end);
        if (end as f64) < scale.start || span.start as f64 > scale.start + scale.span {
            continue;
        }
        let left = scale.x(span.start as f64).max(bar.left());
        let right = scale.x(end as f64).min(bar.right()).max(left + 1.0);
        let row = span.slot % shown;
        let top = bar.top() + row as f32 * row_height;
        let shape = Rect::from_min_max(
            pos2(left, top),
            pos2(right, (top + row_height - 0.5).max(top + 1.0)),
        );
        // Neighbouring rows in two shades, so that stacked streams read as many.
        let color = if row.is_multiple_of(2) {
            phase_color(Phase::Reading)
        } else {
            phase_color(Phase::Reading).gamma_multiply(0.55)
        };
        painter.rect_filled(shape, 0.0, color);
    }
}

fn draw_marker(painter: &egui::Painter, kind: &MarkerKind, x: f32, rect: Rect) {
    let top = rect.top() + 1.0;
    let bottom = rect.bottom() - 1.0;
    match kind {
        MarkerKind::Reuse => {
            let tip = pos2(x, top + 6.0);
            painter.add(egui::Shape::convex_polygon(
                vec![tip, pos2(x - 5.0, top), pos2(x + 5.0, top)],
                Color32::from_rgb(40, 230, 90),
                Stroke::new(1.0, Color32::BLACK),
            ));
        }
        MarkerKind::BodyEof => {
            painter.line_segment(
                [pos2(x, top), pos2(x, bottom)],
                Stroke::new(2.0, Color32::from_rgb(60, 120, 255)),
            );
        }
        MarkerKind::EarlyClose | MarkerKind::Failed(_) => {
            let c = pos2(x, rect.center().y);
            let d = Vec2::splat(4.0);
            let color = match kind {
                MarkerKind::EarlyClose => Color32::from_rgb(255, 120, 0),
                _ => Color32::from_rgb(220, 30, 30),
            };
            let stroke = Stroke::new(2.5, color);
            painter.line_segment([c - d, c + d], stroke);
            painter.line_segment([c + vec2(-4.0, 4.0), c + vec2(4.0, -4.0)], stroke);
        }
        MarkerKind::Retry(_) => {
            let c = pos2(x, rect.center().y);
            painter.add(egui::Shape::convex_polygon(
                vec![
                    c + vec2(0.0, -5.0),
                    c + vec2(5.0, 0.0),
                    c + vec2(0.0, 5.0),
                    c + vec2(-5.0, 0.0),
                ],
                Color32::from_rgb(230, 60, 220),
                Stroke::NONE,
            ));
        }
        MarkerKind::Close(_) => {
            painter.line_segment(
                [pos2(x, top), pos2(x, bottom)],
                Stroke::new(3.0, Color32::from_rgb(220, 40, 40)),
            );
        }
    }
}

/// What the lane was doing at `at`.
fn hover_text(ui: &mut egui::Ui, view: &View, lane: &Lane, at: u64, now: u64) {
    ui.strong(format!("{} — {}", lane.id, lane.key));
    match &lane.addr {
        Some(ends) if ends.starts_with("from ") => ui.label(ends),
        Some(addr) => ui.label(format!("peer {addr}")),
        None => ui.label(""),
    };
    // The addresses its dial tried, when there was more than one (Happy Eyeballs).
    if lane.attempts.len() > 1 {
        for attempt in &lane.attempts {
            let outcome = match &attempt.end {
                Some((end, None)) => {
                    format!(
                        "connected after {}",
                        duration(end.saturating_sub(attempt.start))
                    )
                }
                Some((end, Some(error))) => format!(
                    "{error} after {}",
                    duration(end.saturating_sub(attempt.start))
                ),
                None => "in flight".to_owned(),
            };
            ui.label(format!("tried {}: {outcome}", attempt.addr));
        }
    }
    match lane.segment_at(at) {
        Some(segment) => {
            let end = segment
                .end
                .or(lane.closed.as_ref().map(|(t, _)| *t))
                .unwrap_or(now);
            let length = duration(end.saturating_sub(segment.start));
            if segment.phase == Phase::Idle {
                ui.label(format!("idle for {length}"));
            } else if lane.h2 && segment.phase == Phase::Writing {
                ui.label(format!("in use, streams open, for {length}"));
            } else if view.watched && segment.phase == Phase::Tunnel {
                ui.label(format!("bytes flowing for {length}"));
            } else {
                ui.label(format!("{} for {length}", segment.phase.label()));
            }
            if let LaneId::App(app_conn) = lane.id {
                if segment.phase == Phase::Exchange {
                    app_request_text(ui, view, app_conn, segment.start);
                }
            } else if let Some(row) = segment.req.and_then(|r| view.request(r)) {
                ui.separator();
                ui.label(format!("request #{}: {} {}", row.req, row.method, row.url));
                ui.label(format!(
                    "status {} · {} · {}",
                    row.status.map_or("…".to_owned(), |s| s.to_string()),
                    row.bytes
                        .map_or("body not done".to_owned(), |b| format!("{b} bytes")),
                    if row.reused {
                        "reused connection"
                    } else {
                        "new connection"
                    }
                ));
                ui.label(format!(
                    "first byte after {} · total {}",
                    row.ttfb_us().map_or("-".to_owned(), duration),
                    row.total_us().map_or("-".to_owned(), duration)
                ));
            }
        }
        None => {
            ui.label(match &lane.closed {
                Some((closed, reason)) if at >= *closed => format!("closed: {reason}"),
                _ => "not open yet".to_owned(),
            });
        }
    }
    let served = match lane.id {
        LaneId::App(app_conn) => view
            .app_requests
            .iter()
            .filter(|r| r.app_conn == app_conn)
            .count(),
        _ => lane.requests.len(),
    };
    if view.watched {
        if let Some((up, down)) = lane.tunnel_bytes {
            ui.label(format!(
                "{up} bytes sent, {down} bytes received (as of the last sample)"
            ));
        }
        ui.label("requests are not seen by watch");
        return;
    }
    ui.label(format!("served {served} requests"));
    if lane.h2 {
        let open = lane
            .streams
            .iter()
            .filter(|s| s.start <= at && s.end.is_none_or(|end| at < end))
            .count();
        ui.label(format!(
            "HTTP/2: {} streams, {open} open here, at most {} at once",
            lane.streams.len(),
            lane.peak_streams
        ));
    }
    if let Some((up, down)) = lane.tunnel_bytes {
        ui.label(format!("relayed {up} bytes up, {down} bytes down"));
    }
}

/// The app's request placed at `start` on its connection, and what it became upstream.
fn app_request_text(ui: &mut egui::Ui, view: &View, app_conn: u64, start: u64) {
    // A segment starts where its request did, or where the one before ended: the
    // latest request begun by then.
    let Some(row) = view
        .app_requests
        .iter()
        .rev()
        .find(|r| r.app_conn == app_conn && r.start <= start && start <= r.end)
    else {
        return;
    };
    ui.separator();
    ui.label(format!("{} {}", row.method, row.url));
    ui.label(format!(
        "status {} · {} bytes to the app, {} from it · {}",
        row.status.map_or("-".to_owned(), |s| s.to_string()),
        row.bytes_in,
        row.bytes_out,
        if row.reused {
            "on a connection the app used before"
        } else {
            "the connection's first request"
        }
    ));
    if let Some(error) = &row.error {
        ui.label(format!("failed: {error}"));
    }
    if let (Some(conn), Some(req)) = (row.conn, row.req) {
        let how = view.request(req).map_or("", |r| {
            if r.reused {
                " (a reused pool connection)"
            } else {
                " (a new pool connection)"
            }
        });
        ui.label(format!("upstream: request #{req} on conn #{conn}{how}"));
    }
}
