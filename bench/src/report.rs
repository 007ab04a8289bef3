//! A benchmark's results: a table for people (with each client's ratio to this
//! transport), JSON and CSV for machines.

use serde::Serialize;

use super::{Client, IdleMemory, Measurement};

/// The median run of one client on one workload.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub workload: String,
    pub client: Client,
    /// Repetitions the median was taken from.
    pub runs: usize,
    pub median: Measurement,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub server: String,
    pub machine: String,
    pub rows: Vec<Row>,
    /// Memory per idle connection, per client.
    pub idle: Vec<(Client, IdleMemory)>,
    /// Milliseconds from `Transport::new` to a serving instance: (cache on?, median).
    pub cold_start: Vec<(bool, f64)>,
}

impl Report {
    /// This transport's best req/s on `workload` (of its ways of running).
    pub fn ours(&self, workload: &str) -> Option<f64> {
        self.rows
            .iter()
            .filter(|r| r.workload == workload && r.client.is_ours())
            .map(|r| r.median.requests_per_second())
            .max_by(f64::total_cmp)
    }

    /// Markdown: one line per workload and client, the ratio being ours (the better of
    /// `roundtrip` and `roundtrip local`) ÷ theirs (above 1: this transport is faster).
    pub fn table(&self) -> String {
        if self.rows.iter().any(|r| r.median.upstream_opened.is_some()) {
            return self.serve_table();
        }
        let mut out = String::from(
            "| workload | client | req/s | p50 µs | p99 µs | MB/s | CPU s / 10k req | peak RSS MiB | peak conns | TIME_WAIT left | errors | roundtrip ÷ client |\n\
             |---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        );
        for row in &self.rows {
            let m = &row.median;
            let rps = m.requests_per_second();
            let ratio = match (row.client, self.ours(&row.workload)) {
                (client, _) if client.is_ours() => "—".to_owned(),
                (_, Some(ours)) if rps > 0.0 => format!("{:.2}×", ours / rps),
                _ => "?".to_owned(),
            };
            out.push_str(&format!(
                "| {} | {} | {:.0} | {} | {} | {:.1} | {:.2} | {:.1} | {} | {} | {} | {} |\n",
                row.workload,
                row.client.name(),
                rps,
                m.p50_us,
                m.p99_us,
                m.megabytes_per_second(),
                m.cpu_per_10k(),
                m.peak_rss_kib as f64 / 1024.0,
                m.peak_open,
                m.time_wait,
                m.errors,
                ratio
            ));
        }
        let guest: Vec<&Row> = self
            .rows
            .iter()
            .filter(|r| r.median.guest_memory_kib.is_some())
            .collect();
        if !guest.is_empty() {
            out.push_str("\n| workload | client | component memory after the run, KiB | per connection beyond the first, KiB |\n|---|---|---:|---:|\n");
            for row in &guest {
                let kib = row.median.guest_memory_kib.unwrap_or_default();
                // The client's smallest figure (one connection) is the instance's own.
                let base = guest
                    .iter()
                    .filter(|r| r.client == row.client)
                    .filter_map(|r| r.median.guest_memory_kib)
                    .min()
                    .unwrap_or(kib);
                let per = match row.median.peak_open {
                    0 | 1 => "—".to_owned(),
                    peak => format!("{:.1}", (kib - base) as f64 / (peak - 1) as f64),
                };
                out.push_str(&format!(
                    "| {} | {} | {} | {} |\n",
                    row.workload,
                    row.client.name(),
                    kib,
                    per
                ));
            }
        }
        if !self.idle.is_empty() {
            out.push_str("\n| client | idle connections | bytes per idle connection (process RSS) | of which component memory |\n|---|---:|---:|---:|\n");
            for (client, memory) in &self.idle {
                let guest = match client {
                    Client::Roundtrip => memory.guest_bytes_per_conn.to_string(),
                    _ => "—".to_owned(),
                };
                out.push_str(&format!(
                    "| {} | {} | {} | {} |\n",
                    client.name(),
                    memory.connections,
                    memory.rss_bytes_per_conn,
                    guest
                ));
            }
        }
        if !self.cold_start.is_empty() {
            out.push_str(
                "\n| start-up (Transport::new to a serving instance) | median ms |\n|---|---:|\n",
            );
            for (cache, millis) in &self.cold_start {
                let how = if *cache {
                    "compiled-component cache on (warm)"
                } else {
                    "no cache (compiles)"
                };
                out.push_str(&format!("| {how} | {millis:.1} |\n"));
            }
        }
        out
    }

    /// `--serve`: per host, the throughput, the host's CPU per request, and what the
    /// upstream saw; the ratios are `roundtrip serve`'s (req/s: ours ÷ theirs; CPU:
    /// theirs ÷ ours, above 1: ours spends less).
    fn serve_table(&self) -> String {
        let mut out = String::from(
            "| workload | host | req/s | p50 µs | p99 µs | host CPU s / 10k req | upstream conns (nginx's log, most in a run) | opened in the run | peak open (sampled) | TIME_WAIT left | errors | req/s ratio | CPU ratio |\n\
             |---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        );
        for row in &self.rows {
            let m = &row.median;
            let ours = self
                .rows
                .iter()
                .find(|r| r.workload == row.workload && r.client.is_ours())
                .map(|r| &r.median);
            let (rps_ratio, cpu_ratio) = match ours {
                Some(_) if row.client.is_ours() => ("—".to_owned(), "—".to_owned()),
                Some(ours) => (
                    format!(
                        "{:.2}×",
                        ours.requests_per_second() / m.requests_per_second().max(1e-9)
                    ),
                    format!("{:.2}×", m.cpu_per_10k() / ours.cpu_per_10k().max(1e-9)),
                ),
                None => ("?".to_owned(), "?".to_owned()),
            };
            out.push_str(&format!(
                "| {} | {} | {:.0} | {} | {} | {:.2} | {} | {} | {} | {} | {} | {} | {} |\n",
                row.workload,
                row.client.name(),
                m.requests_per_second(),
                m.p50_us,
                m.p99_us,
                m.cpu_per_10k(),
                m.upstream_conns
                    .map_or_else(|| "—".to_owned(), |n| n.to_string()),
                m.upstream_opened.unwrap_or_default(),
                m.peak_open,
                m.time_wait,
                m.errors,
                rps_ratio,
                cpu_ratio
            ));
        }
        out
    }

    pub fn csv(&self) -> String {
        let mut out = String::from(
            "workload,client,runs,requests,errors,body_bytes,seconds,req_per_s,p50_us,p99_us,mb_per_s,cpu_s_per_10k,peak_rss_kib,peak_open,time_wait\n",
        );
        for row in &self.rows {
            let m = &row.median;
            out.push_str(&format!(
                "{},{},{},{},{},{},{:.6},{:.1},{},{},{:.2},{:.4},{},{},{}\n",
                row.workload,
                row.client.name(),
                row.runs,
                m.requests,
                m.errors,
                m.body_bytes,
                m.seconds,
                m.requests_per_second(),
                m.p50_us,
                m.p99_us,
                m.megabytes_per_second(),
                m.cpu_per_10k(),
                m.peak_rss_kib,
                m.peak_open,
                m.time_wait
            ));
        }
        out
    }

    pub fn json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}

/// The machine, in one line: CPU model, cores, kernel.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|k| k.trim().to_owned())
        .unwrap_or_default();
    format!("{cpu}, {cores} cores, Linux {kernel}")
}
