//! Results the way Hyperledger Caliper reports them, shared by `blocktorrent bench ledger` and
//! the simulator: a summary table per send rate (Name | Succ | Fail | Send Rate (TPS) | Max /
//! Min / Avg Latency (s) | p50 / p99 | Throughput (TPS)) and SVG plots (plotters) of throughput
//! and latency against send rate, as in the paper's Figure 3.

use std::fmt::Write;

use plotters::prelude::*;
use serde::Serialize;

/// One transaction's fate.
#[derive(Clone, Copy, Debug)]
pub struct Outcome {
    /// Seconds from its scheduled send to its acknowledgement (committed and applied).
    pub latency_s: f64,
    /// Applied (not failed, rejected or timed out).
    pub ok: bool,
}

/// A plot that could not be drawn.
#[derive(Debug, thiserror::Error)]
#[error("drawing the plot {what:?}: {reason}")]
pub struct PlotError {
    /// The plot's title.
    pub what: String,
    /// What failed.
    pub reason: String,
}

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

    /// Summarises one round: `outcomes` of the transactions sent at `rate_tps` for `seconds`,
    /// the last acknowledged `span_s` after the round began.
    pub fn of(
        name: String,
        rate_tps: u32,
        seconds: f64,
        outcomes: &[Outcome],
        span_s: f64,
    ) -> Self {
        let succ = outcomes.iter().filter(|o| o.ok).count();
        Self {
            name,
            target_tps: rate_tps,
            // Sends follow the schedule (open loop): n sends at `rate` span n / rate seconds.
            send_rate_tps: outcomes.len() as f64
                / seconds.max(outcomes.len() as f64 / f64::from(rate_tps.max(1))),
            succ,
            fail: outcomes.len() - succ,
            throughput_tps: if span_s > 0.0 {
                succ as f64 / span_s
            } else {
                0.0
            },
            latency_s: Latency::of(
                outcomes
                    .iter()
                    .filter(|o| o.ok)
                    .map(|o| o.latency_s)
                    .collect(),
            ),
        }
    }
}

/// The summary table, one row per round, as Markdown.
pub fn table(rounds: &[Round]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| Name | Succ | Fail | Send Rate (TPS) | Max Latency (s) | Min Latency (s) | Avg Latency (s) | p50 (s) | p99 (s) | Throughput (TPS) |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|");
    for round in rounds {
        let _ = writeln!(out, "| {} |", round.cells().join(" | "));
    }
    out
}

/// The summary table as an HTML `<table>`.
pub fn html_table(rounds: &[Round]) -> String {
    let mut rows = String::new();
    for round in rounds {
        let cells: Vec<String> = round.cells().iter().map(|cell| escape(cell)).collect();
        let _ = write!(rows, "<tr><td>{}</td></tr>", cells.join("</td><td>"));
    }
    format!(
        "<table><tr><th>Name</th><th>Succ</th><th>Fail</th><th>Send Rate (TPS)</th><th>Max Latency (s)</th>\
<th>Min Latency (s)</th><th>Avg Latency (s)</th><th>p50 (s)</th><th>p99 (s)</th><th>Throughput (TPS)</th></tr>{rows}</table>"
    )
}

/// `text` safe inside HTML.
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Throughput against send rate.
pub fn throughput_plot(rounds: &[Round]) -> Result<String, PlotError> {
    let points: Vec<(f64, f64)> = rounds
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

/// Average and p99 latency against send rate.
pub fn latency_plot(rounds: &[Round]) -> Result<String, PlotError> {
    let avg: Vec<(f64, f64)> = rounds
        .iter()
        .map(|r| (r.send_rate_tps, r.latency_s.avg))
        .collect();
    let p99: Vec<(f64, f64)> = rounds
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

/// One line of a plot: its name, its (x, y) points and its colour.
pub type Series<'a> = (&'a str, &'a Vec<(f64, f64)>, RGBColor);

/// An SVG line plot of `series`.
pub fn plot(
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series<'_>],
) -> Result<String, PlotError> {
    let fail = |reason: String| PlotError {
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
