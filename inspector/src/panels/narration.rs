//! The story of a demo (or a proxy's log), in step with the timeline: lines after the
//! time on screen are dimmed.

use roundtrip_demo::Line;

use crate::app::Source;

pub fn show(ui: &mut egui::Ui, source: &Source) {
    egui::Panel::right("narration")
        .resizable(true)
        .default_size(420.0)
        .show(ui, |ui| {
            ui.heading("Narration");
            let now = source.now();
            egui::ScrollArea::vertical()
                .stick_to_bottom(true)
                .auto_shrink([false, false])
                .show(ui, |ui| {
                    for (at, line) in &source.narration {
                        let later = *at > now;
                        let text = match line {
                            Line::Story(text) if text.trim().is_empty() => continue,
                            // Terminal line breaks: let the panel wrap instead.
                            Line::Story(text) => {
                                egui::RichText::new(text.trim().replace('\n', " ")).strong()
                            }
                            Line::Event { sentence, event } => {
                                egui::RichText::new(format!("  {sentence}  [{event}]")).small()
                            }
                        };
                        let text = if later { text.weak() } else { text };
                        ui.label(text);
                    }
                });
        });
}
