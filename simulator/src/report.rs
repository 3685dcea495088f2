//! The run's report, as Hyperledger Caliper lays one out: a summary table per send rate (Name |
//! Succ | Fail | Send Rate (TPS) | Max / Min / Avg Latency (s) | p50 / p99 | Throughput (TPS)),
//! `report.json`, SVG plots (plotters) and a self-contained `report.html`.

use std::fmt::Write;
use std::path::Path;

use plotters::prelude::*;
use serde::Serialize;

use crate::check::Check;
use crate::error::SimError;
use crate::faults::FaultEvent;
use crate::net::NetStats;
use crate::swarm::SwarmPoint;
use crate::workload::RoundResult;

/// Latency statistics in seconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Latency {
    /// Fastest.
    pub min: f64,
    /// Mean.
    pub avg: f64,
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Slowest.
    pub max: f64,
}

impl Latency {
    /// Statistics of `samples` (nearest-rank percentiles); zeros when there are none.
    pub fn of(mut samples: Vec<f64>) -> Self {
        if samples.is_empty() {
            return Self::default();
        }
        samples.sort_by(f64::total_cmp);
        let rank = |q: f64| {
            samples[((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len()) - 1]
        };
        Self {
            min: samples[0],
            avg: samples.iter().sum::<f64>() / samples.len() as f64,
            p50: rank(0.50),
            p99: rank(0.99),
            max: samples[samples.len() - 1],
        }
    }
}

/// One row of the summary table.
#[derive(Clone, Debug, Serialize)]
pub struct Round {
    /// What was sent.
    pub name: String,
    /// Target rate.
    pub target_tps: u32,
    /// Rate actually sent.
    pub send_rate_tps: f64,
    /// Acknowledged.
    pub succ: usize,
    /// Failed, rejected or timed out.
    pub fail: usize,
    /// Acknowledged per second, from the round's start to its last acknowledgement.
    pub throughput_tps: f64,
    /// Latency of the acknowledged ones, from their scheduled send.
    pub latency_s: Latency,
}

impl Round {
    /// The row's cells as the table shows them: Name, Succ, Fail, Send Rate, Max / Min / Avg
    /// Latency, p50, p99, Throughput.
    pub fn cells(&self) -> [String; 10] {
        let l = &self.latency_s;
        [
            self.name.clone(),
            self.succ.to_string(),
            self.fail.to_string(),
            format!("{:.1}", self.send_rate_tps),
            format!("{:.3}", l.max),
            format!("{:.3}", l.min),
            format!("{:.3}", l.avg),
            format!("{:.3}", l.p50),
            format!("{:.3}", l.p99),
            format!("{:.1}", self.throughput_tps),
        ]
    }

    /// Summarises one round of the sweep.
    pub fn of(result: &RoundResult) -> Self {
        let succ = result.outcomes.iter().filter(|o| o.ok).count();
        Self {
            name: format!("register-file@{}", result.rate_tps),
            target_tps: result.rate_tps,
            // Sends follow the schedule (open loop): n sends at `rate` span n / rate seconds.
            send_rate_tps: result.outcomes.len() as f64
                / result
                    .seconds
                    .max(result.outcomes.len() as f64 / f64::from(result.rate_tps.max(1))),
            succ,
            fail: result.outcomes.len() - succ,
            throughput_tps: succ as f64 / result.span_s,
            latency_s: Latency::of(
                result
                    .outcomes
                    .iter()
                    .filter(|o| o.ok)
                    .map(|o| o.latency_s)
                    .collect(),
            ),
        }
    }
}

/// Files stored and audited.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Files {
    /// Stores acknowledged.
    pub stored: usize,
    /// Stores that failed (reported to their caller).
    pub store_failed: usize,
    /// Audits run (request, shares, fetch, compare).
    pub audited: usize,
    /// Audits whose file came back equal to the original.
    pub audit_ok: usize,
    /// Seconds from the access request to the verified file.
    pub audit_latency_s: Latency,
    /// Peers caught serving corrupt chunks, by name.
    pub lying_peers: Vec<String>,
    /// Holders the auditor caught releasing shares that do not verify, by name.
    pub bad_share_holders: Vec<String>,
}

/// Everything a run found.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// The seed.
    pub seed: u64,
    /// Consortium size.
    pub members: usize,
    /// Virtual seconds of the safety phase.
    pub duration_s: u64,
    /// The faults that were on.
    pub faults: String,
    /// The send-rate sweep.
    pub rounds: Vec<Round>,
    /// Files and audits.
    pub files: Files,
    /// Faults injected, in order.
    pub faults_injected: Vec<FaultEvent>,
    /// What the network did.
    pub network: NetStats,
    /// The swarm experiment: fetch time against owner count (empty if not run).
    pub swarm: Vec<SwarmPoint>,
    /// The checkers' verdicts.
    pub checks: Vec<Check>,
    /// All checkers held.
    pub ok: bool,
    /// Fingerprint of the run (every message sent and every member's final head): equal for
    /// equal seeds and flags.
    pub trace_hash: String,
    /// Virtual seconds the whole run took.
    pub virtual_s: f64,
    /// Real seconds it took (not part of the fingerprint).
    pub real_s: f64,
    /// The command that repeats this run.
    pub reproduce: String,
}

impl Report {
    /// The Caliper-style summary table, then the files and the checkers.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "| Name | Succ | Fail | Send Rate (TPS) | Max Latency (s) | Min Latency (s) | Avg Latency (s) | p50 (s) | p99 (s) | Throughput (TPS) |"
        );
        let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|");
        for round in &self.rounds {
            let _ = writeln!(out, "| {} |", round.cells().join(" | "));
        }
        let f = &self.files;
        let caught = |what: &str, names: &[String]| {
            if names.is_empty() {
                String::new()
            } else {
                format!("; {what}: {}", names.join(", "))
            }
        };
        let _ = writeln!(
            out,
            "\nfiles: {} stored ({} stores failed), {} of {} audits recreated the original (latency avg {:.2} s, max {:.2} s){}{}",
            f.stored,
            f.store_failed,
            f.audit_ok,
            f.audited,
            f.audit_latency_s.avg,
            f.audit_latency_s.max,
            caught("lying peers caught", &f.lying_peers),
            caught("bad shares caught from", &f.bad_share_holders),
        );
        let n = &self.network;
        let _ = writeln!(
            out,
            "network: {} requests, {} messages, {} lost, {} duplicated, {} chunks corrupted; {} faults injected",
            n.requests,
            n.messages,
            n.lost,
            n.duplicated,
            n.corrupted,
            self.faults_injected.len()
        );
        if !self.swarm.is_empty() {
            let _ = writeln!(
                out,
                "\n| Owners | Fetch time (s) | Speed-up over one owner | Peers used |\n|---|---|---|---|"
            );
            for point in &self.swarm {
                let _ = writeln!(
                    out,
                    "| {} | {:.3} | {:.2}x | {} |",
                    point.owners, point.fetch_s, point.speedup, point.peers_used
                );
            }
        }
        for check in &self.checks {
            let _ = writeln!(
                out,
                "[{}] {}: {}",
                if check.ok { "ok" } else { "FAILED" },
                check.name,
                check.detail
            );
        }
        let _ = writeln!(
            out,
            "trace {}; {:.1} virtual s in {:.1} real s",
            self.trace_hash, self.virtual_s, self.real_s
        );
        out
    }

    /// Writes `report.json`, `throughput.svg`, `latency.svg` and `report.html` into `dir`.
    pub fn write(&self, dir: &Path) -> Result<(), SimError> {
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| SimError::Io { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let json = serde_json::to_string_pretty(self).map_err(|error| SimError::Io {
            path: dir.join("report.json"),
            source: std::io::Error::other(error),
        })?;
        let mut files = vec![
            ("report.json", json),
            ("throughput.svg", self.throughput_plot()?),
            ("latency.svg", self.latency_plot()?),
        ];
        if !self.swarm.is_empty() {
            files.push(("swarm.svg", self.swarm_plot()?));
        }
        for (name, contents) in &files {
            let path = dir.join(name);
            std::fs::write(&path, contents).map_err(io(&path))?;
        }
        let plots: Vec<&str> = files[1..].iter().map(|(_, svg)| svg.as_str()).collect();
        let path = dir.join("report.html");
        std::fs::write(&path, self.html(&plots)).map_err(io(&path))?;
        Ok(())
    }

    fn throughput_plot(&self) -> Result<String, SimError> {
        let points: Vec<(f64, f64)> = self
            .rounds
            .iter()
            .map(|r| (r.send_rate_tps, r.throughput_tps))
            .collect();
        plot(
            "Throughput against send rate",
            "send rate (TPS)",
            "throughput (TPS)",
            &[("throughput", &points, BLUE)],
        )
    }

    fn latency_plot(&self) -> Result<String, SimError> {
        let avg: Vec<(f64, f64)> = self
            .rounds
            .iter()
            .map(|r| (r.send_rate_tps, r.latency_s.avg))
            .collect();
        let p99: Vec<(f64, f64)> = self
            .rounds
            .iter()
            .map(|r| (r.send_rate_tps, r.latency_s.p99))
            .collect();
        plot(
            "Latency against send rate",
            "send rate (TPS)",
            "latency (s)",
            &[("average", &avg, BLUE), ("p99", &p99, RED)],
        )
    }

    fn swarm_plot(&self) -> Result<String, SimError> {
        let points: Vec<(f64, f64)> = self
            .swarm
            .iter()
            .map(|point| (point.owners as f64, point.fetch_s))
            .collect();
        plot(
            "Fetch time against owners (per-link bandwidth cap)",
            "owners",
            "fetch time (s)",
            &[("swarm fetch", &points, BLUE)],
        )
    }

    fn html(&self, plots: &[&str]) -> String {
        let escape = |text: &str| {
            text.replace('&', "&amp;")
                .replace('<', "&lt;")
                .replace('>', "&gt;")
        };
        let mut rows = String::new();
        for round in &self.rounds {
            let cells: Vec<String> = round.cells().iter().map(|cell| escape(cell)).collect();
            let _ = write!(rows, "<tr><td>{}</td></tr>", cells.join("</td><td>"));
        }
        let mut checks = String::new();
        for check in &self.checks {
            let _ = write!(
                checks,
                "<li class=\"{}\"><b>{}</b> {}: {}</li>",
                if check.ok { "ok" } else { "failed" },
                if check.ok { "ok" } else { "FAILED" },
                escape(check.name),
                escape(&check.detail)
            );
        }
        format!(
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>BlockTorrent simulation, seed {seed}</title>\
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #999;padding:4px 8px;text-align:right}}\
.ok{{color:#060}}.failed{{color:#b00}}pre{{background:#f4f4f4;padding:1em}}</style></head><body>\
<h1>BlockTorrent simulation</h1><p>seed {seed}, {members} members, {duration} virtual s with faults: {faults}; \
{virt:.1} virtual s in {real:.1} real s; trace <code>{trace}</code></p>\
<h2>Transactions</h2><table><tr><th>Name</th><th>Succ</th><th>Fail</th><th>Send Rate (TPS)</th><th>Max Latency (s)</th>\
<th>Min Latency (s)</th><th>Avg Latency (s)</th><th>p50 (s)</th><th>p99 (s)</th><th>Throughput (TPS)</th></tr>{rows}</table>\
{plots}<h2>Checkers</h2><ul>{checks}</ul>\
<h2>Run</h2><pre>{table}</pre><p>Reproduce with <code>{reproduce}</code></p></body></html>",
            seed = self.seed,
            members = self.members,
            duration = self.duration_s,
            faults = escape(&self.faults),
            virt = self.virtual_s,
            real = self.real_s,
            trace = self.trace_hash,
            table = escape(&self.table()),
            reproduce = escape(&self.reproduce),
            plots = plots
                .iter()
                .map(|svg| format!("<div>{svg}</div>"))
                .collect::<String>(),
        )
    }
}

/// One line of a plot: its name, its (x, y) points and its colour.
type Series<'a> = (&'a str, &'a Vec<(f64, f64)>, RGBColor);

/// An SVG line plot of `series`.
fn plot(
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series<'_>],
) -> Result<String, SimError> {
    let fail = |reason: String| SimError::Plot {
        what: title.to_owned(),
        reason,
    };
    let x_max = series
        .iter()
        .flat_map(|(_, points, _)| points.iter().map(|(x, _)| *x))
        .fold(1.0, f64::max)
        * 1.1;
    let y_max = series
        .iter()
        .flat_map(|(_, points, _)| points.iter().map(|(_, y)| *y))
        .fold(f64::MIN_POSITIVE, f64::max)
        * 1.1;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (640, 400)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| fail(e.to_string()))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..x_max, 0.0..y_max)
            .map_err(|e| fail(e.to_string()))?;
        chart
            .configure_mesh()
            .x_desc(x_label)
            .y_desc(y_label)
            .draw()
            .map_err(|e| fail(e.to_string()))?;
        for (name, points, color) in series {
            let color = *color;
            chart
                .draw_series(LineSeries::new(
                    points.iter().copied(),
                    color.stroke_width(2),
                ))
                .map_err(|e| fail(e.to_string()))?
                .label(*name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
            chart
                .draw_series(points.iter().map(|p| Circle::new(*p, 3, color.filled())))
                .map_err(|e| fail(e.to_string()))?;
        }
        chart
            .configure_series_labels()
            .border_style(BLACK)
            .background_style(WHITE.mix(0.8))
            .draw()
            .map_err(|e| fail(e.to_string()))?;
        root.present().map_err(|e| fail(e.to_string()))?;
    }
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_percentiles_by_nearest_rank() {
        let l = Latency::of((1..=100).map(f64::from).collect());
        assert_eq!((l.min, l.p50, l.p99, l.max), (1.0, 50.0, 99.0, 100.0));
        assert!((l.avg - 50.5).abs() < 1e-9);
        assert_eq!(Latency::of(Vec::new()), Latency::default());
    }
}
