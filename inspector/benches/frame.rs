//! How fast the inspector is with a big source: 200 k events over 2 k connections.
//! Reports the model's update time per event and the time to build one frame
//! (layout and shapes, headless: egui_kittest without a GPU), following the newest
//! events and with everything fitted on screen. Run: `cargo bench -p roundtrip-inspector`.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use egui_kittest::Harness;
use roundtrip_host::events::{CloseReason, Event, EventKind};
use roundtrip_inspector::InspectorApp;
use roundtrip_inspector::app::{Command, Source};
use roundtrip_inspector::model::View;

const CONNECTIONS: u64 = 2_000;
const EVENTS: usize = 200_000;

/// Connections opened over time, each serving requests until the events run out;
/// 20 keys; some connections close early, the rest at the end.
fn synthetic() -> Vec<Event> {
    let per_conn = EVENTS / CONNECTIONS as usize;
    let mut events = Vec::with_capacity(EVENTS + CONNECTIONS as usize);
    let mut req = 0;
    for conn in 1..=CONNECTIONS {
        let key = format!("http://10.0.{}.1:80", conn % 20);
        let mut t = conn * 500;
        let mut push = |t: u64, req: Option<u64>, kind| {
            events.push(Event {
                ts_us: t,
                kind,
                conn: Some(conn),
                req,
                key: Some(key.clone()),
                tunnel: None,
                app_conn: None,
            });
        };
        push(
            t,
            None,
            EventKind::DialStart {
                addr: "10.0.0.1:80".into(),
            },
        );
        let mut written = 1;
        while written + 9 <= per_conn {
            req += 1;
            let r = Some(req);
            push(
                t,
                r,
                EventKind::GetConn {
                    method: "GET".into(),
                    url: format!("http://10.0.{}.1/item/{req}", conn % 20),
                },
            );
            push(
                t + 1,
                r,
                EventKind::GotConn {
                    reused: written > 1,
                    was_idle: true,
                    idle_us: 0,
                    proto: Default::default(),
                    stream: None,
                },
            );
            push(t + 2, r, EventKind::WroteHeaders);
            push(t + 3, r, EventKind::WroteRequest { error: None });
            push(t + 400, r, EventKind::FirstByte);
            push(t + 401, r, EventKind::Response { status: 200 });
            push(t + 900, r, EventKind::BodyEof { bytes: 1024 });
            push(
                t + 901,
                r,
                EventKind::PutIdle {
                    ok: true,
                    reason: None,
                },
            );
            written += 8;
            t += 3_000;
        }
        let reason = if conn % 3 == 0 {
            CloseReason::IdleTimeout
        } else {
            CloseReason::TransportShutdown
        };
        push(t + 10_000, None, EventKind::Close { reason });
    }
    events.sort_by_key(|e| e.ts_us);
    events
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn frames(harness: &mut Harness<'static, InspectorApp>, count: usize) -> Vec<Duration> {
    let mut times: Vec<Duration> = (0..count)
        .map(|_| {
            let start = Instant::now();
            harness.step();
            start.elapsed()
        })
        .collect();
    times.sort();
    times
}

fn main() {
    let events = synthetic();
    println!("{} events, {} connections", events.len(), CONNECTIONS);
    let start = Instant::now();
    let view = View::of(&events);
    let model = start.elapsed();
    println!(
        "model: {:.1} ms for all events, {:.0} ns per event; {} lanes, {} requests, {} samples",
        model.as_secs_f64() * 1e3,
        model.as_secs_f64() * 1e9 / events.len() as f64,
        view.lanes.len(),
        view.requests.len(),
        view.samples.len()
    );
    let mut app = InspectorApp::new();
    app.add(Source::recorded(1, "synthetic".into(), events));
    let mut harness = Harness::builder()
        .with_size((1400.0, 900.0))
        .with_accessibility_check(false)
        .build_ui_state(|ui, app: &mut InspectorApp| app.show(ui), app);
    for (name, command) in [
        ("fitted (whole run on screen)", Command::Fit),
        ("following (last 2 s)", Command::Follow(true)),
    ] {
        harness.state_mut().apply(command);
        frames(&mut harness, 5);
        let times = frames(&mut harness, 60);
        println!(
            "frame, {name}: median {:.2} ms, p95 {:.2} ms, max {:.2} ms",
            percentile(&times, 0.5).as_secs_f64() * 1e3,
            percentile(&times, 0.95).as_secs_f64() * 1e3,
            times.last().unwrap().as_secs_f64() * 1e3
        );
    }
}
