//! The request table, with each request's waterfall as browsers' network panels draw
//! it; a click selects the request and its connection's lane.

use egui::{Rect, Sense, pos2, vec2};

use super::{duration, phase_color};
use crate::app::{Command, Source};
use crate::model::{Micros, Outcome, Phase, Step, View};

/// The waterfall column's width.
const WATERFALL_WIDTH: f32 = 180.0;

pub fn show(ui: &mut egui::Ui, source: &Source, commands: &mut Vec<Command>) {
    let view = &source.view;
    let rows = &view.requests;
    ui.strong(format!("{} requests", rows.len()));
    // The waterfalls share one time axis: the first request's start to the last end.
    let from = rows.iter().map(|r| r.start).min().unwrap_or(0);
    let to = rows
        .iter()
        .map(|r| r.end.unwrap_or(view.now))
        .max()
        .unwrap_or(from);
    let axis = (from, to.saturating_sub(from).max(1));
    let row_height = ui.text_style_height(&egui::TextStyle::Body) + 4.0;
    egui::ScrollArea::both()
        .id_salt("requests")
        .auto_shrink([false, false])
        .stick_to_bottom(source.follow)
        .show_rows(ui, row_height, rows.len(), |ui, range| {
            egui::Grid::new("requests-grid")
                .striped(true)
                .num_columns(10)
                .start_row(range.start)
                .show(ui, |ui| {
                    for row in &rows[range] {
                        let selected = source.selected_request == Some(row.req);
                        let label = format!("#{} {} {}", row.req, row.method, row.url);
                        if ui.selectable_label(selected, label).clicked() {
                            commands.push(Command::SelectRequest(row.req));
                        }
                        ui.label(match (row.status, &row.outcome) {
                            (Some(status), _) => status.to_string(),
                            (None, Outcome::Failed) => "failed".to_owned(),
                            (None, _) => "…".to_owned(),
                        });
                        waterfall(ui, view, row, axis);
                        ui.label(row.conn.map_or("-".to_owned(), |c| format!("conn #{c}")));
                        ui.label(if row.reused { "reused" } else { "new" });
                        ui.label(row.ttfb_us().map_or("-".to_owned(), duration));
                        ui.label(row.total_us().map_or("-".to_owned(), duration));
                        ui.label(row.bytes.map_or("-".to_owned(), |b| format!("{b} B")));
                        ui.label(match row.outcome {
                            Outcome::InFlight => "in flight",
                            Outcome::Done => "body EOF",
                            Outcome::ClosedEarly => "closed early",
                            Outcome::Failed => "failed",
                        });
                        if let Some(caused_by) = row.caused_by {
                            ui.label(caused(&source.view.served, caused_by));
                        }
                        ui.end_row();
                    }
                });
        });
}

/// The colour of a waterfall step: its lane phase's.
fn step_color(step: Step) -> egui::Color32 {
    match step {
        Step::Queued => egui::Color32::from_gray(120),
        Step::Dns => phase_color(Phase::Dns),
        Step::Connect => phase_color(Phase::Dialing),
        Step::Tls => phase_color(Phase::Tls),
        Step::Send => phase_color(Phase::Writing),
        Step::Wait => phase_color(Phase::Awaiting),
        Step::Body => phase_color(Phase::Reading),
    }
}

/// `row`'s steps as bars on the shared axis `(from, span)`; each step is a widget of
/// its own, named by its step and duration (hover, screen readers, tests).
fn waterfall(
    ui: &mut egui::Ui,
    view: &View,
    row: &crate::model::RequestRow,
    axis: (Micros, Micros),
) {
    let (from, span) = axis;
    let height = ui.text_style_height(&egui::TextStyle::Body);
    let (rect, _) = ui.allocate_exact_size(vec2(WATERFALL_WIDTH, height), Sense::hover());
    let x =
        |at: Micros| rect.left() + (at.saturating_sub(from)) as f32 / span as f32 * rect.width();
    for (i, (step, start, end)) in view.steps(row).into_iter().enumerate() {
        let left = x(start);
        let bar = Rect::from_min_max(
            pos2(left, rect.top() + 2.0),
            pos2(x(end).max(left + 2.0), rect.bottom() - 2.0),
        );
        ui.painter().rect_filled(bar, 1.0, step_color(step));
        let text = format!("{} {}", step.label(), duration(end - start));
        ui.interact(
            bar,
            ui.scope_id().with(("waterfall", row.req, i)),
            Sense::hover(),
        )
        .on_hover_text(&text)
        .widget_info(|| egui::WidgetInfo::labeled(egui::Role::Figure, true, &text));
    }
}

/// `for incoming #5 GET /path · instance 2`: the incoming request a served app's request
/// served (or only its instance, when it was handling several at once).
pub fn caused(served: &crate::model::served::Served, by: crate::model::served::CausedBy) -> String {
    match by.incoming.and_then(|id| served.incoming.get(&id)) {
        Some(incoming) => format!(
            "for incoming #{} {} {} · instance {}",
            incoming.incoming, incoming.method, incoming.path, by.instance
        ),
        None => format!("for instance {}", by.instance),
    }
}
