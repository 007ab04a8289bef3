//! The panels. Each one reads the model and pushes [`Command`](crate::app::Command)s;
//! none changes state itself.

pub mod bars;
pub mod narration;
pub mod numbers;
pub mod requests;
pub mod timeline;

use egui::Color32;

use crate::model::Phase;

/// The colour of a phase, in the timeline and the legend.
pub fn phase_color(phase: Phase) -> Color32 {
    match phase {
        Phase::Dns => Color32::from_rgb(60, 170, 200),
        Phase::Dialing => Color32::from_rgb(110, 120, 210),
        Phase::Tls => Color32::from_rgb(170, 100, 220),
        Phase::Writing => Color32::from_rgb(240, 160, 50),
        Phase::Awaiting => Color32::from_rgb(225, 205, 70),
        Phase::Reading => Color32::from_rgb(70, 185, 100),
        Phase::Idle => Color32::from_rgb(95, 150, 160),
        Phase::Tunnel => Color32::from_rgb(175, 125, 85),
        Phase::Exchange => Color32::from_rgb(230, 105, 80),
    }
}

/// `1.25 s`, `12.3 ms`, `850 µs`.
pub fn duration(us: u64) -> String {
    match us {
        0..1_000 => format!("{us} µs"),
        1_000..1_000_000 => format!("{:.1} ms", us as f64 / 1e3),
        _ => format!("{:.2} s", us as f64 / 1e6),
    }
}
