//! The inspector's state and its frame: drain the feed into the model, advance
//! replays, let the panels draw and collect their commands, apply the commands.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::mpsc::Receiver;

use roundtrip_demo::Line;
use roundtrip_host::events::Event;

use crate::export;
use crate::model::{LaneId, Micros, View};
use crate::panels;
use crate::sources::{Feed, Hub, SourceId, SourceKind, read_jsonl};

/// What the panels ask for; applied once per frame, after drawing.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    SelectSource(usize),
    SelectRequest(u64),
    SelectLane(LaneId),
    RunDemo(&'static str),
    OpenFile(String),
    SaveJsonl(String),
    SaveTrace(String),
    SaveHar(String),
    Follow(bool),
    /// Multiply the visible span, keeping the time `around` in place.
    Zoom {
        factor: f64,
        around: f64,
    },
    /// Move the visible window by this many microseconds.
    Pan(f64),
    /// Show the whole source.
    Fit,
    Play(bool),
    Seek(Micros),
    Speed(f64),
}

/// A file being replayed: what is shown is every event up to `cursor`.
#[derive(Debug, Clone, PartialEq)]
pub struct Replay {
    pub cursor: Micros,
    pub playing: bool,
    pub speed: f64,
    /// The last event's time.
    pub end: Micros,
}

/// One source of events and how it is being looked at.
pub struct Source {
    pub id: SourceId,
    pub name: String,
    pub kind: SourceKind,
    /// Every event received (for files: every event in the file).
    pub events: Vec<Event>,
    /// The model of the events shown.
    pub view: View,
    pub replay: Option<Replay>,
    /// Narration (demos) and proxy log lines, stamped with the time they arrived.
    pub narration: Vec<(Micros, Line)>,
    pub status: String,
    /// Input that was not events.
    pub problems: Vec<String>,
    /// The timeline's right edge follows the newest event.
    pub follow: bool,
    /// The timeline's visible span and right edge, in microseconds. While following,
    /// `span` is the most shown: a young source is shown whole.
    pub span: f64,
    pub end: f64,
    pub selected_lane: Option<LaneId>,
    pub selected_request: Option<u64>,
    /// A file's last change: when its last event happened (for a HAR's wall-clock
    /// times); `None` for a live source, whose last event is now.
    pub written: Option<std::time::SystemTime>,
}

impl Source {
    pub fn new(id: SourceId, name: String, kind: SourceKind) -> Self {
        Self {
            id,
            name,
            kind,
            events: Vec::new(),
            view: View::new(),
            replay: None,
            narration: Vec::new(),
            status: String::new(),
            problems: Vec::new(),
            follow: true,
            span: 2_000_000.0,
            end: 2_000_000.0,
            selected_lane: None,
            selected_request: None,
            written: None,
        }
    }

    /// A file source, shown whole and paused at its end.
    pub fn from_file(id: SourceId, path: &Path) -> std::io::Result<Self> {
        let file = read_jsonl(path)?;
        let name = path.file_name().map_or_else(
            || path.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        let mut source = Self::recorded(id, name, file.events);
        source.problems = file.problems;
        source.status = format!("{} events from {}", source.events.len(), path.display());
        source.written = std::fs::metadata(path).and_then(|m| m.modified()).ok();
        Ok(source)
    }

    /// Recorded events, to replay: shown whole and paused at their end.
    pub fn recorded(id: SourceId, name: String, events: Vec<Event>) -> Self {
        let mut source = Self::new(id, name, SourceKind::File);
        let end = events.iter().map(|e| e.ts_us).max().unwrap_or(0);
        source.view = View::of(&events);
        source.events = events;
        source.replay = Some(Replay {
            cursor: end,
            playing: false,
            speed: 1.0,
            end,
        });
        source.fit();
        source
    }

    /// A live event.
    pub fn push(&mut self, event: Event) {
        self.view.apply(&event);
        self.events.push(event);
    }

    /// The time shown as "now": the replay cursor, or the newest event.
    pub fn now(&self) -> Micros {
        self.replay.as_ref().map_or(self.view.now, |r| r.cursor)
    }

    /// Every problem to report: input that was not events, and what the model found.
    pub fn problem_count(&self) -> usize {
        self.problems.len() + self.view.problem_count
    }

    /// The visible window, `(start, span)` in microseconds: while following, the
    /// newest `span`, or everything from the first event while there is less than
    /// that.
    pub fn window(&self) -> (f64, f64) {
        if !self.follow {
            return (self.end - self.span, self.span);
        }
        let first = self.view.first as f64;
        let seen = ((self.now() as f64 - first) * 1.05).max(10_000.0);
        if seen < self.span {
            (first, seen)
        } else {
            (self.now() as f64 + self.span * 0.02 - self.span, self.span)
        }
    }

    pub fn fit(&mut self) {
        let (first, now) = (self.view.first as f64, self.now() as f64);
        self.span = ((now - first) * 1.05).max(100_000.0);
        self.end = (first + self.span).max(now);
        self.follow = false;
    }

    /// Moves the replay cursor, rebuilding the view when it goes back.
    fn seek(&mut self, to: Micros) {
        let Some(replay) = &mut self.replay else {
            return;
        };
        let to = to.min(replay.end);
        if to < replay.cursor {
            self.view = View::new();
        }
        replay.cursor = to;
        let start = self.view.events;
        for event in self.events.iter().skip(start) {
            if event.ts_us > to {
                break;
            }
            self.view.apply(event);
        }
    }

    /// Advances a playing replay by `seconds` of wall time.
    fn advance(&mut self, seconds: f64) {
        let Some(replay) = &self.replay else { return };
        if !replay.playing {
            return;
        }
        let to = replay.cursor + (seconds * 1e6 * replay.speed) as Micros;
        let end = replay.end;
        self.seek(to);
        if let Some(replay) = &mut self.replay
            && to >= end
        {
            replay.playing = false;
        }
    }
}

/// The whole inspector.
pub struct InspectorApp {
    hub: Option<Hub>,
    feed: Option<Receiver<Feed>>,
    pub sources: Vec<Source>,
    /// Index of the source on screen.
    pub selected: usize,
    pub listening: Option<SocketAddr>,
    /// Text fields of the File menu.
    pub open_path: String,
    pub export_path: String,
    /// The outcome of the last command that has one (saved, could not open, …).
    pub message: String,
    /// Demos from the menu pause between steps.
    pub demo_slow: bool,
    next_local_id: SourceId,
}

impl InspectorApp {
    /// An inspector with no I/O side (files only); see [`InspectorApp::with_hub`].
    pub fn new() -> Self {
        Self {
            hub: None,
            feed: None,
            sources: Vec::new(),
            selected: 0,
            listening: None,
            open_path: String::new(),
            export_path: "roundtrip-events".to_owned(),
            message: String::new(),
            demo_slow: false,
            next_local_id: 1 << 32,
        }
    }

    /// An inspector fed by `hub` (live sources, demos, `run`).
    pub fn with_hub(hub: Hub, feed: Receiver<Feed>, listening: Option<SocketAddr>) -> Self {
        Self {
            hub: Some(hub),
            feed: Some(feed),
            listening,
            ..Self::new()
        }
    }

    pub fn hub(&self) -> Option<&Hub> {
        self.hub.as_ref()
    }

    pub fn source(&self) -> Option<&Source> {
        self.sources.get(self.selected)
    }

    /// Adds a source and shows it.
    pub fn add(&mut self, source: Source) {
        self.sources.push(source);
        self.selected = self.sources.len() - 1;
    }

    /// Opens an events file as a new source and shows it.
    pub fn open_file(&mut self, path: &Path) -> Result<(), String> {
        self.next_local_id += 1;
        let source = Source::from_file(self.next_local_id, path)
            .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        self.sources.push(source);
        self.selected = self.sources.len() - 1;
        Ok(())
    }

    /// Applies what the I/O side sent since the last frame.
    pub fn drain_feed(&mut self) {
        let Some(feed) = &self.feed else { return };
        let messages: Vec<Feed> = feed.try_iter().collect();
        for message in messages {
            self.receive(message);
        }
    }

    fn receive(&mut self, message: Feed) {
        match message {
            Feed::Opened { source, name, kind } => {
                self.sources.push(Source::new(source, name, kind));
                // A source the user started comes to the front; a live one only when
                // nothing else is shown.
                if kind != SourceKind::Live || self.sources.len() == 1 {
                    self.selected = self.sources.len() - 1;
                }
            }
            Feed::Event { source, event } => {
                if let Some(s) = self.find_mut(source) {
                    s.push(*event);
                }
            }
            Feed::Narration { source, line } => {
                if let Some(s) = self.find_mut(source) {
                    let at = s.view.now;
                    s.narration.push((at, line));
                }
            }
            Feed::Status { source, text } => {
                if let Some(s) = self.find_mut(source) {
                    s.status = text;
                }
            }
            Feed::Problem { source, text } => {
                if let Some(s) = self.find_mut(source) {
                    s.problems.push(text);
                }
            }
            // The status line already says how it ended.
            Feed::Exited { .. } => {}
        }
    }

    fn find_mut(&mut self, id: SourceId) -> Option<&mut Source> {
        self.sources.iter_mut().find(|s| s.id == id)
    }

    /// One frame: input, drawing, commands.
    pub fn show(&mut self, ui: &mut egui::Ui) {
        self.drain_feed();
        let dt = f64::from(ui.input(|i| i.stable_dt)).min(0.1);
        for source in &mut self.sources {
            source.advance(dt);
            if source.follow {
                source.end = source.now() as f64 + source.span * 0.02;
            }
        }
        let mut commands = Vec::new();
        panels::bars::top(ui, self, &mut commands);
        panels::bars::status(ui, self, &mut commands);
        if let Some(source) = self.sources.get(self.selected) {
            if !source.narration.is_empty() {
                panels::narration::show(ui, source);
            }
            egui::Panel::bottom("numbers")
                .resizable(true)
                .default_size(280.0)
                .show(ui, |ui| {
                    ui.columns(2, |columns| {
                        panels::numbers::show(&mut columns[0], source);
                        panels::requests::show(&mut columns[1], source, &mut commands);
                    });
                });
            egui::CentralPanel::default().show(ui, |ui| {
                panels::timeline::show(ui, source, &mut commands);
            });
        } else {
            egui::CentralPanel::default().show(ui, |ui| panels::bars::welcome(ui, self));
        }
        for command in commands {
            self.apply(command);
        }
        let moving = self
            .sources
            .get(self.selected)
            .is_some_and(|s| s.replay.as_ref().is_some_and(|r| r.playing));
        if moving {
            ui.ctx().request_repaint();
        }
    }

    pub fn apply(&mut self, command: Command) {
        match command {
            Command::SelectSource(index) => {
                if index < self.sources.len() {
                    self.selected = index;
                }
            }
            Command::RunDemo(name) => match &self.hub {
                Some(hub) => {
                    hub.run_demo(name, self.demo_slow);
                }
                None => self.message = "demos need the I/O side (not in this mode)".to_owned(),
            },
            Command::OpenFile(path) => {
                self.message = match self.open_file(Path::new(&path)) {
                    Ok(()) => format!("opened {path}"),
                    Err(e) => e,
                };
            }
            Command::SaveJsonl(path) => {
                if let Some(source) = self.sources.get(self.selected) {
                    self.message = match export::write_jsonl(Path::new(&path), &source.events) {
                        Ok(()) => format!("saved {} events to {path}", source.events.len()),
                        Err(e) => format!("cannot save {path}: {e}"),
                    };
                }
            }
            Command::SaveTrace(path) => {
                if let Some(source) = self.sources.get(self.selected) {
                    let saved =
                        export::write_chrome_trace(Path::new(&path), &source.view, &source.name);
                    self.message = match saved {
                        Ok(()) => {
                            format!("saved a Chrome trace to {path} (open it in ui.perfetto.dev)")
                        }
                        Err(e) => format!("cannot save {path}: {e}"),
                    };
                }
            }
            Command::SaveHar(path) => {
                if let Some(source) = self.sources.get(self.selected) {
                    let written = source.written.unwrap_or_else(std::time::SystemTime::now);
                    let zero = export::wall_zero(&source.events, written);
                    self.message = match export::write_har(Path::new(&path), &source.view, zero) {
                        Ok(()) => format!("saved a HAR of the requests to {path}"),
                        Err(e) => format!("cannot save {path}: {e}"),
                    };
                }
            }
            command => {
                if let Some(source) = self.sources.get_mut(self.selected) {
                    apply_to_source(source, command);
                }
            }
        }
    }
}

impl Default for InspectorApp {
    fn default() -> Self {
        Self::new()
    }
}

/// Commands about the source on screen.
fn apply_to_source(source: &mut Source, command: Command) {
    match command {
        Command::SelectRequest(req) => {
            source.selected_request = Some(req);
            source.selected_lane = source
                .view
                .request(req)
                .and_then(|row| row.conn)
                .map(LaneId::Conn);
        }
        Command::SelectLane(lane) => {
            source.selected_lane = Some(lane);
            source.selected_request = None;
        }
        Command::Follow(on) => source.follow = on,
        Command::Zoom { factor, around } => {
            let (start, shown) = source.window();
            let span = (shown * factor).clamp(1_000.0, 1e12);
            let right_share = (start + shown - around) / shown;
            source.end = around + right_share * span;
            source.span = span;
            source.follow = false;
        }
        Command::Pan(by) => {
            let (start, shown) = source.window();
            source.span = shown;
            source.end = start + shown + by;
            source.follow = false;
        }
        Command::Fit => source.fit(),
        Command::Play(on) => {
            let Some(replay) = &mut source.replay else {
                return;
            };
            // Play at the end starts over.
            if on && replay.cursor >= replay.end {
                replay.cursor = 0;
                source.view = View::new();
            }
            replay.playing = on;
            source.follow |= on;
        }
        Command::Seek(to) => {
            source.seek(to);
            source.follow = true;
        }
        Command::Speed(speed) => {
            if let Some(replay) = &mut source.replay {
                replay.speed = speed;
            }
        }
        Command::SelectSource(_)
        | Command::RunDemo(_)
        | Command::OpenFile(_)
        | Command::SaveJsonl(_)
        | Command::SaveTrace(_)
        | Command::SaveHar(_) => {}
    }
}
