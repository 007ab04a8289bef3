//! The request table; a click selects the request and its connection's lane.

use super::duration;
use crate::app::{Command, Source};
use crate::model::Outcome;

pub fn show(ui: &mut egui::Ui, source: &Source, commands: &mut Vec<Command>) {
    let rows = &source.view.requests;
    ui.strong(format!("{} requests", rows.len()));
    let row_height = ui.text_style_height(&egui::TextStyle::Body) + 4.0;
    egui::ScrollArea::both()
        .id_salt("requests")
        .auto_shrink([false, false])
        .stick_to_bottom(source.follow)
        .show_rows(ui, row_height, rows.len(), |ui, range| {
            egui::Grid::new("requests-grid")
                .striped(true)
                .num_columns(9)
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
