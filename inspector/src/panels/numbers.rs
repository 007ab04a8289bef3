//! Per-key counters and the plot of open / in-use / idle connections over time.

use egui_plot::{Legend, Line, Plot, PlotPoints};

use crate::app::Source;

pub fn show(ui: &mut egui::Ui, source: &Source) {
    let view = &source.view;
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
            plot.line(
                Line::new("open", series(|s| s.open))
                    .width(2.0)
                    .allow_band(false),
            );
            plot.line(Line::new("in use", series(|s| s.in_use)).allow_band(false));
            plot.line(Line::new("idle", series(|s| s.idle)).allow_band(false));
        });
}
