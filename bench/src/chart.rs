//! The report as a picture (`--chart docs/bench.png`): one panel per workload, one
//! bar per client, the same colour for a client everywhere. The panels are built by a
//! pure function first ([`panels`]); drawing only paints them.

use std::path::Path;

use plotters::prelude::*;

use super::{Client, Report};

/// One workload's bars.
#[derive(Debug, Clone, PartialEq)]
pub struct Panel {
    pub title: String,
    /// What the bars measure: `req/s`, or `MB/s` for the large body.
    pub unit: &'static str,
    pub bars: Vec<(Client, f64)>,
}

/// The panels, in the report's order.
pub fn panels(report: &Report) -> Vec<Panel> {
    let mut panels: Vec<Panel> = Vec::new();
    for row in &report.rows {
        let large = row.median.requests < 10 && row.median.body_bytes > 1 << 20;
        let (unit, value) = if large {
            ("MB/s", row.median.megabytes_per_second())
        } else {
            ("req/s", row.median.requests_per_second())
        };
        match panels.iter_mut().find(|p| p.title == row.workload) {
            Some(panel) => panel.bars.push((row.client, value)),
            None => panels.push(Panel {
                title: row.workload.clone(),
                unit,
                bars: vec![(row.client, value)],
            }),
        }
    }
    panels
}

fn colour(client: Client) -> RGBColor {
    match client {
        Client::Roundtrip => RGBColor(0x1f, 0x77, 0xb4),
        Client::RoundtripLocal => RGBColor(0x6b, 0xae, 0xd6),
        Client::RoundtripShards2 => RGBColor(0x08, 0x45, 0x94),
        Client::Hyper => RGBColor(0xff, 0x7f, 0x0e),
        Client::WasiHttp => RGBColor(0xd6, 0x27, 0x28),
        Client::Raw => RGBColor(0x7f, 0x7f, 0x7f),
        Client::Floor => RGBColor(0x2c, 0xa0, 0x2c),
        Client::FloorLocal => RGBColor(0x98, 0xdf, 0x8a),
        Client::ServeRoundtrip => RGBColor(0x1f, 0x77, 0xb4),
        Client::ServeDefaultClient => RGBColor(0xd6, 0x27, 0x28),
        Client::ServeStock => RGBColor(0x94, 0x67, 0xbd),
    }
}

/// Writes the chart of `report` to `path` (PNG).
pub fn draw(report: &Report, path: &Path) -> Result<(), String> {
    // plotters draws text with a font it is handed; egui's Ubuntu Light is at hand.
    plotters::style::register_font(
        "sans-serif",
        FontStyle::Normal,
        epaint_default_fonts::UBUNTU_LIGHT,
    )
    .map_err(|_| "the bundled font cannot be read".to_owned())?;
    let panels = panels(report);
    if panels.is_empty() {
        return Err("the report has no workloads".to_owned());
    }
    let columns = 3;
    let rows = panels.len().div_ceil(columns);
    let (width, panel_height, header, legend) = (1500u32, 260u32, 50u32, 40u32);
    let height = header + legend + panel_height * rows as u32;
    let root = BitMapBackend::new(path, (width, height)).into_drawing_area();
    let failed = |e: DrawingAreaErrorKind<_>| e.to_string();
    root.fill(&WHITE).map_err(failed)?;
    let (top, rest) = root.split_vertically(header);
    let (grid, bottom) = rest.split_vertically(panel_height * rows as u32);
    top.titled(
        &format!("roundtrip bench: {} · {}", report.server, report.machine),
        ("sans-serif", 20),
    )
    .map_err(failed)?;
    let clients: Vec<Client> = Client::ALL
        .into_iter()
        .filter(|c| panels.iter().any(|p| p.bars.iter().any(|(b, _)| b == c)))
        .collect();
    for (area, panel) in grid.split_evenly((rows, columns)).iter().zip(&panels) {
        draw_panel(area, panel).map_err(|e| e.to_string())?;
    }
    let step = width as i32 / clients.len().max(1) as i32;
    for (i, client) in clients.iter().enumerate() {
        let x = 20 + step * i as i32;
        bottom
            .draw(&Rectangle::new(
                [(x, 12), (x + 18, 28)],
                colour(*client).filled(),
            ))
            .map_err(failed)?;
        bottom
            .draw(&Text::new(
                client.name(),
                (x + 26, 12),
                ("sans-serif", 18).into_font(),
            ))
            .map_err(failed)?;
    }
    root.present().map_err(failed)
}

fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    panel: &Panel,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let top = panel.bars.iter().map(|(_, v)| *v).fold(0.0, f64::max) * 1.2;
    let mut chart = ChartBuilder::on(area)
        .caption(&panel.title, ("sans-serif", 17))
        .margin(8)
        .x_label_area_size(4)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..panel.bars.len() as f64, 0.0..top.max(1.0))?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .disable_x_axis()
        .y_desc(panel.unit)
        .y_labels(5)
        .y_label_formatter(&|v| short(*v))
        .label_style(("sans-serif", 13))
        .draw()?;
    for (i, (client, value)) in panel.bars.iter().enumerate() {
        let x = i as f64;
        chart.draw_series(std::iter::once(Rectangle::new(
            [(x + 0.15, 0.0), (x + 0.85, *value)],
            colour(*client).filled(),
        )))?;
        chart.draw_series(std::iter::once(Text::new(
            short(*value),
            (x + 0.2, *value + top * 0.08),
            ("sans-serif", 13).into_font(),
        )))?;
    }
    Ok(())
}

/// 9715 → "9.7k", 71859 → "72k", 1922 → "1.9k", 12 → "12".
fn short(value: f64) -> String {
    match value {
        v if v >= 10_000.0 => format!("{:.0}k", v / 1000.0),
        v if v >= 1_000.0 => format!("{:.1}k", v / 1000.0),
        v => format!("{v:.0}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Measurement, Row};

    fn row(workload: &str, client: Client, requests: u64, body_bytes: u64) -> Row {
        Row {
            workload: workload.to_owned(),
            client,
            runs: 1,
            median: Measurement {
                requests,
                body_bytes,
                seconds: 2.0,
                ..Measurement::default()
            },
        }
    }

    #[test]
    fn one_panel_per_workload_in_order_with_the_large_body_in_megabytes() {
        let report = Report {
            server: String::new(),
            machine: String::new(),
            rows: vec![
                row("sequential", Client::Roundtrip, 1000, 10_000),
                row("sequential", Client::Hyper, 3000, 30_000),
                row("256 MiB body", Client::Roundtrip, 1, 256 << 20),
            ],
            idle: vec![],
            cold_start: vec![],
        };
        let panels = panels(&report);
        assert_eq!(panels.len(), 2);
        assert_eq!(panels[0].title, "sequential");
        assert_eq!(panels[0].unit, "req/s");
        assert_eq!(
            panels[0].bars,
            vec![(Client::Roundtrip, 500.0), (Client::Hyper, 1500.0)]
        );
        assert_eq!(panels[1].unit, "MB/s");
        assert!((panels[1].bars[0].1 - (256u64 << 20) as f64 / 2e6).abs() < 1e-6);
    }

    #[test]
    fn values_are_written_short() {
        assert_eq!(short(71859.0), "72k");
        assert_eq!(short(9715.0), "9.7k");
        assert_eq!(short(12.0), "12");
    }

    #[test]
    fn a_chart_is_written_as_png() {
        let report = Report {
            server: "test".to_owned(),
            machine: "test".to_owned(),
            rows: vec![row("sequential", Client::Roundtrip, 1000, 10_000)],
            idle: vec![],
            cold_start: vec![],
        };
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("bench.png");
        draw(&report, &path).expect("drawn");
        let bytes = std::fs::read(&path).expect("written");
        assert_eq!(&bytes[1..4], b"PNG");
    }
}
