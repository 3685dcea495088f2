//! The run's report, as Hyperledger Caliper lays one out: a summary table per send rate (Name |
//! Succ | Fail | Send Rate (TPS) | Max / Min / Avg Latency (s) | p50 / p99 | Throughput (TPS)),
//! `report.json`, SVG plots (plotters) and a self-contained `report.html`.

use std::fmt::Write;
use std::path::Path;

use node::caliper::{self, Latency, PlotError, Round, escape, plot};
use plotters::prelude::BLUE;
use serde::Serialize;

use crate::check::Check;
use crate::error::SimError;
use crate::faults::FaultEvent;
use crate::net::NetStats;
use crate::swarm::SwarmPoint;

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
        let mut out = caliper::table(&self.rounds);
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
            ("throughput.svg", caliper::throughput_plot(&self.rounds)?),
            ("latency.svg", caliper::latency_plot(&self.rounds)?),
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

    fn swarm_plot(&self) -> Result<String, PlotError> {
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
        let rows = caliper::html_table(&self.rounds);
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
<h2>Transactions</h2>{rows}\
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
