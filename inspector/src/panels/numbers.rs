//! The apps' counters (a proxy source), per-key counters of the pool, and the plot of
//! open / in-use / idle connections over time.

use egui_plot::{Legend, Line, Plot, PlotPoints};
use roundtrip_host::events::WatchMode;

use crate::app::Source;

/// The app column's width; a longer command is cut short (whole on hover).
const APP_LABEL_WIDTH: f32 = 180.0;

pub fn show(ui: &mut egui::Ui, source: &Source) {
    let view = &source.view;
    // Wide tables scroll within their column rather than run under the next one.
    egui::ScrollArea::horizontal()
        .id_salt("numbers")
        .show(ui, |ui| tables(ui, view));
    // At most ~2000 points a line: enough for the eye, cheap with 200 k events.
    let stride = (view.samples.len() / 2000).max(1);
    let series = |pick: fn(&crate::model::Sample) -> u32| -> PlotPoints<'static> {
        let mut points: Vec<[f64; 2]> = Vec::with_capacity(view.samples.len() / stride + 2);
        let mut last = 0.0;
        for sample in view.samples.iter().step_by(stride) {
            let x = sample.at as f64 / 1e6;
            let y = f64::from(pick(sample));
            points.push([x, last]);
            points.push([x, y]);
            last = y;
        }
        points.push([source.now() as f64 / 1e6, last]);
        PlotPoints::from(points)
    };
    Plot::new("connections")
        .legend(Legend::default())
        .x_axis_label("seconds")
        .allow_scroll(false)
        .show(ui, |plot| {
            // Steps, not bands: every change is a vertical edge worth seeing.
            if !view.watched {
                plot.line(
                    Line::new("open", series(|s| s.open))
                        .width(2.0)
                        .allow_band(false),
                );
                plot.line(Line::new("in use", series(|s| s.in_use)).allow_band(false));
                plot.line(Line::new("idle", series(|s| s.idle)).allow_band(false));
            }
            if !view.apps.is_empty() {
                plot.line(
                    Line::new("app connections open", series(|s| s.app_open))
                        .width(2.0)
                        .allow_band(false),
                );
            }
        });
}

/// Above the apps' counters.
pub const APPS_HEADING: &str = "what the app did — its own connections to the proxy";

/// Above the apps' counters of a `watch` source.
pub const WATCH_HEADING: &str = "what the app did — its TCP connections, from the kernel";

/// What `watch` can and cannot know, under its heading, by its mode.
pub fn watch_note(mode: Option<&(WatchMode, String)>) -> String {
    let how = match mode {
        Some((WatchMode::Trace, _)) => {
            "From the kernel's trace events as they happen, no proxy: every TCP \
             connection however short, the pid that opened it, its peers and the bytes \
             the app sent and read, for any protocol."
        }
        _ => {
            "Sampled from the kernel's socket table every 50 ms, no proxy: connections, \
             their peers and bytes each way, for any protocol. Bytes are as of the last \
             sample."
        }
    };
    let misses = match mode {
        Some((_, misses)) => format!(" Missed: {misses}."),
        // A recording from before `watch_start`: sampled.
        None => " A connection opened and closed within one sample can be missed.".to_owned(),
    };
    format!(
        "{how} Not seen: URLs, requests, reuse (the bytes may be TLS; nothing parses \
         them).{misses}"
    )
}

/// What each app did with its connections: its own numbers, not the pool's.
fn apps(ui: &mut egui::Ui, view: &crate::model::View) {
    if view.watched {
        ui.strong(WATCH_HEADING);
        ui.label(watch_note(view.watch_mode.as_ref()));
    } else {
        ui.strong(APPS_HEADING);
    }
    egui::Grid::new("apps").striped(true).show(ui, |ui| {
        for title in [
            "app",
            "conns",
            "open",
            "requests",
            "reuses",
            "reuse ratio",
            "tunnels",
            "failed",
        ] {
            ui.strong(title);
        }
        ui.end_row();
        for (app, stats) in &view.apps {
            ui.scope(|ui| {
                ui.set_max_width(APP_LABEL_WIDTH);
                ui.add(egui::Label::new(app).truncate()).on_hover_text(app);
            });
            ui.label(stats.connections.to_string());
            ui.label(stats.open.to_string());
            if stats.watched {
                // Not known to the kernel: not zero, unknown.
                for _ in 0..5 {
                    ui.label("—")
                        .on_hover_text("watch sees connections, not requests");
                }
            } else {
                ui.label(stats.requests.to_string());
                ui.label(stats.reuses.to_string());
                ui.label(format!("{:.0} %", stats.reuse_ratio() * 100.0));
                ui.label(stats.tunnels.to_string());
                ui.label(stats.failed.to_string());
            }
            ui.end_row();
        }
    });
}

/// Above a served app's instances.
pub const SERVED_HEADING: &str =
    "what the service did — its instances and the requests they served";

/// Above a served app's pool.
pub const SERVED_POOL_HEADING: &str = "the one pool — every instance's upstream connections";

/// Incoming ids shown per instance before the rest are counted.
const SHOWN_INCOMING: usize = 8;

/// A served app (`roundtrip serve`): each instance, the incoming requests it handled,
/// and the outgoing requests they sent through the one pool.
fn served(ui: &mut egui::Ui, view: &crate::model::View) {
    let served = &view.served;
    ui.strong(SERVED_HEADING);
    ui.label(format!(
        "{} instances ({} alive) · {} incoming requests · {} outgoing, all through the one pool below",
        served.instances.len(),
        served.live(),
        served.incoming.len(),
        view.requests.len()
    ));
    egui::Grid::new("served").striped(true).show(ui, |ui| {
        for title in [
            "instance",
            "state",
            "incoming",
            "outgoing",
            "incoming requests",
        ] {
            ui.strong(title);
        }
        ui.end_row();
        for instance in served.instances.values() {
            ui.label(format!("#{}", instance.instance));
            ui.label(match (&instance.end, &instance.error) {
                (None, _) => "alive".to_owned(),
                (Some(_), None) => "retired".to_owned(),
                (Some(_), Some(error)) => format!("failed: {error}"),
            });
            ui.label(instance.incoming.len().to_string());
            let outgoing: usize = instance
                .incoming
                .iter()
                .filter_map(|id| served.incoming.get(id))
                .map(|row| row.outgoing.len())
                .sum();
            ui.label(outgoing.to_string());
            let mut list: Vec<String> = instance
                .incoming
                .iter()
                .take(SHOWN_INCOMING)
                .filter_map(|id| served.incoming.get(id))
                .map(|row| {
                    let status = row.status.map_or_else(|| "…".to_owned(), |s| s.to_string());
                    format!("#{} {} {} {status}", row.incoming, row.method, row.path)
                })
                .collect();
            if instance.incoming.len() > SHOWN_INCOMING {
                list.push(format!(
                    "+{} more",
                    instance.incoming.len() - SHOWN_INCOMING
                ));
            }
            ui.label(list.join(" · "));
            ui.end_row();
        }
    });
    ui.add_space(6.0);
}

/// The apps' counters, then the pool's per key and in all.
fn tables(ui: &mut egui::Ui, view: &crate::model::View) {
    if !view.served.is_empty() {
        served(ui, view);
        ui.strong(SERVED_POOL_HEADING);
    }
    if !view.apps.is_empty() {
        apps(ui, view);
        // `watch` has no proxy, so no pool.
        if view.watched {
            return;
        }
        ui.add_space(6.0);
        ui.strong(super::timeline::POOL_HEADING);
    }
    egui::Grid::new("keys").striped(true).show(ui, |ui| {
        for title in [
            "pool key",
            "dials",
            "reuses",
            "reuse ratio",
            "idle",
            "peak idle",
            "in use",
            "waiting",
        ] {
            ui.strong(title);
        }
        ui.end_row();
        for (key, stats) in &view.keys {
            ui.label(key);
            ui.label(stats.dials.to_string());
            ui.label(stats.reuses.to_string());
            ui.label(format!("{:.0} %", stats.reuse_ratio() * 100.0));
            ui.label(stats.idle.to_string());
            ui.label(stats.peak_idle.to_string());
            ui.label(stats.in_use.to_string());
            ui.label(stats.waiting.to_string());
            ui.end_row();
        }
    });
    let totals = view.totals();
    ui.label(format!(
        "all keys: dials {} · reuses {} · reuse ratio {:.0} % · idle {} · in use {} · waiting {}",
        totals.dials,
        totals.reuses,
        totals.reuse_ratio() * 100.0,
        totals.idle,
        totals.in_use,
        totals.waiting
    ));
}
