//! The top bar (sources, Demos and File menus, replay controls) and the status line.

use roundtrip_demo::SCENARIOS;

use super::duration;
use crate::app::{Command, InspectorApp};
use crate::sources::SourceKind;

pub fn top(ui: &mut egui::Ui, app: &mut InspectorApp, commands: &mut Vec<Command>) {
    egui::Panel::top("top").show(ui, |ui| {
        ui.horizontal_wrapped(|ui| {
            ui.menu_button("File", |ui| file_menu(ui, app, commands));
            ui.menu_button("Demos", |ui| {
                ui.checkbox(&mut app.demo_slow, "slow (pauses for a class)");
                ui.separator();
                for scenario in SCENARIOS {
                    if ui
                        .button(scenario.name)
                        .on_hover_text(scenario.about)
                        .clicked()
                    {
                        commands.push(Command::RunDemo(scenario.name));
                        ui.close();
                    }
                }
            });
            ui.separator();
            for (index, source) in app.sources.iter().enumerate() {
                let label = format!("[{}] {}", kind_tag(source.kind), source.name);
                if ui.selectable_label(index == app.selected, label).clicked() {
                    commands.push(Command::SelectSource(index));
                }
            }
        });
        if let Some(source) = app.source() {
            ui.horizontal(|ui| {
                if let Some(replay) = &source.replay {
                    let play = if replay.playing { "Pause" } else { "Play" };
                    if ui.button(play).clicked() {
                        commands.push(Command::Play(!replay.playing));
                    }
                    let mut speed = replay.speed;
                    egui::ComboBox::from_label("speed")
                        .selected_text(format!("{speed}×"))
                        .show_ui(ui, |ui| {
                            for choice in [0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 10.0] {
                                ui.selectable_value(&mut speed, choice, format!("{choice}×"));
                            }
                        });
                    if speed != replay.speed {
                        commands.push(Command::Speed(speed));
                    }
                    let mut cursor = replay.cursor as f64;
                    let end = replay.end.max(1) as f64;
                    let scrubber = ui.add(
                        egui::Slider::new(&mut cursor, 0.0..=end)
                            .show_value(false)
                            .text(duration(replay.cursor)),
                    );
                    if scrubber.changed() {
                        commands.push(Command::Seek(cursor as u64));
                    }
                    ui.separator();
                }
                let mut follow = source.follow;
                if ui.checkbox(&mut follow, "Follow live").changed() {
                    commands.push(Command::Follow(follow));
                }
                if source.replay.is_none() {
                    let (text, follow) = if source.follow {
                        ("Pause view", false)
                    } else {
                        ("Resume", true)
                    };
                    if ui.button(text).clicked() {
                        commands.push(Command::Follow(follow));
                    }
                }
                let (start, shown) = source.window();
                let middle = start + shown / 2.0;
                if ui.button("−").on_hover_text("zoom out").clicked() {
                    commands.push(Command::Zoom {
                        factor: 2.0,
                        around: middle,
                    });
                }
                if ui.button("+").on_hover_text("zoom in").clicked() {
                    commands.push(Command::Zoom {
                        factor: 0.5,
                        around: middle,
                    });
                }
                if ui.button("Fit").clicked() {
                    commands.push(Command::Fit);
                }
                ui.label(format!("showing {}", duration(shown as u64)));
            });
        }
    });
}

fn file_menu(ui: &mut egui::Ui, app: &mut InspectorApp, commands: &mut Vec<Command>) {
    let label = ui.label("Open events (JSON Lines):");
    ui.horizontal(|ui| {
        ui.text_edit_singleline(&mut app.open_path)
            .labelled_by(label.id);
        if ui.button("Open").clicked() {
            commands.push(Command::OpenFile(app.open_path.clone()));
            ui.close();
        }
    });
    ui.separator();
    let label = ui.label("Save the source on screen as:");
    ui.text_edit_singleline(&mut app.export_path)
        .labelled_by(label.id);
    if ui.button("Save events (.jsonl)").clicked() {
        commands.push(Command::SaveJsonl(format!("{}.jsonl", app.export_path)));
        ui.close();
    }
    if ui.button("Export Chrome trace (.trace.json)").clicked() {
        commands.push(Command::SaveTrace(format!(
            "{}.trace.json",
            app.export_path
        )));
        ui.close();
    }
    if ui.button("Export HAR of the requests (.har)").clicked() {
        commands.push(Command::SaveHar(format!("{}.har", app.export_path)));
        ui.close();
    }
}

fn kind_tag(kind: SourceKind) -> &'static str {
    match kind {
        SourceKind::Live => "live",
        SourceKind::File => "file",
        SourceKind::Run => "run",
        SourceKind::Demo => "demo",
        SourceKind::Watch => "watch",
    }
}

pub fn status(ui: &mut egui::Ui, app: &InspectorApp, _commands: &mut [Command]) {
    egui::Panel::bottom("status").show(ui, |ui| {
        ui.horizontal_wrapped(|ui| {
            match app.listening {
                Some(addr) => ui.label(format!("listening on {addr}")),
                None => ui.label("not listening"),
            };
            ui.separator();
            ui.label(format!("{} sources", app.sources.len()))
                .on_hover_ui(|ui| {
                    for source in &app.sources {
                        ui.label(format!("{}: {}", source.name, source.status));
                    }
                });
            if let Some(source) = app.source() {
                ui.separator();
                let view = &source.view;
                let apps: u32 = view.apps.values().map(|a| a.connections).sum();
                let pool = view.lanes.len() - apps as usize;
                ui.label(if view.watched {
                    format!(
                        "{}: {} events, {apps} connections seen in the kernel",
                        source.name,
                        source.events.len()
                    )
                } else if view.apps.is_empty() {
                    format!(
                        "{}: {} events, {pool} connections",
                        source.name,
                        source.events.len()
                    )
                } else {
                    format!(
                        "{}: {} events, {apps} app connections, {pool} through the pool",
                        source.name,
                        source.events.len()
                    )
                });
                if !source.status.is_empty() {
                    ui.separator();
                    ui.label(&source.status);
                }
                let problems = source.problem_count();
                if problems > 0 {
                    ui.separator();
                    let text = egui::RichText::new(format!(
                        "{problems} {} (hover)",
                        if problems == 1 { "problem" } else { "problems" }
                    ))
                    .color(egui::Color32::from_rgb(230, 150, 40));
                    ui.label(text).on_hover_ui(|ui| {
                        for problem in source.problems.iter().chain(&source.view.problems).take(30)
                        {
                            ui.label(problem);
                        }
                    });
                }
            }
            if !app.message.is_empty() {
                ui.separator();
                ui.label(&app.message);
            }
        });
    });
}

pub fn welcome(ui: &mut egui::Ui, app: &InspectorApp) {
    ui.vertical_centered(|ui| {
        ui.add_space(40.0);
        ui.heading("Roundtrip inspector");
        ui.add_space(10.0);
        match app.listening {
            Some(addr) => ui.label(format!(
                "Waiting for programs: run one with --inspect {addr} (or ROUNDTRIP_INSPECT={addr})."
            )),
            None => ui.label("Not listening for programs."),
        };
        ui.label(
            "Or pick a scenario from the Demos menu, or open an events file from the File menu.",
        );
    });
}
