//! `blocktorrent-sim`: runs the real node code for a whole consortium in one process on virtual
//! time, with faults, and reports like Hyperledger Caliper. Exit 0 when every checker held, 1
//! when one failed (with the command that reproduces the run), 2 on usage errors.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use simulator::{Faults, SimConfig};

/// Simulate a BlockTorrent consortium: the real node library, many members, virtual time,
/// seeded faults, checkers and a Caliper-style report. The same seed and flags give the same
/// run (compare the trace hash).
#[derive(Parser, Debug)]
#[command(name = "blocktorrent-sim", version, about)]
struct Args {
    /// Seeds every random choice of the run.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Consortium size (3..=1000); the last member is the auditor.
    #[arg(long, default_value_t = 16)]
    members: usize,
    /// Virtual seconds of the safety phase (faults and workloads); a liveness phase follows.
    #[arg(long, default_value_t = 30)]
    duration: u64,
    /// Faults during the safety phase: a comma list of crash, partition, loss, duplicate,
    /// corrupt, bad-shares (a holder releases random shares), disk (a member's disks fail
    /// writes for a while), or all / none.
    #[arg(long, default_value = "none")]
    faults: String,
    /// Transaction send rates (per second) of the sweep, e.g. 25,50,100; each runs an equal
    /// share of the safety phase, open loop.
    #[arg(long, value_delimiter = ',', default_value = "25,50,100")]
    tx_rate: Vec<u32>,
    /// Files stored by random members during the safety phase.
    #[arg(long, default_value_t = 4)]
    files: usize,
    /// Size of each file in bytes.
    #[arg(long, default_value_t = 1 << 20)]
    file_size: u64,
    /// Stored files the auditor recreates and compares in the liveness phase.
    #[arg(long, default_value_t = 4)]
    audits: usize,
    /// Sensor readings arriving in members' private databases during the safety phase (the
    /// nodes share them on their own).
    #[arg(long, default_value_t = 8)]
    sensor_records: usize,
    /// Write report.json, the SVG plots and report.html into this directory.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Print the report as one JSON object instead of the table.
    #[arg(long)]
    json: bool,
    /// Also run the swarm experiment for these owner counts, e.g. 1,2,4,8: the auditor's fetch
    /// time from one owner (client–server) against many (BitTorrent-style).
    #[arg(long, value_delimiter = ',')]
    swarm_owners: Vec<usize>,
    /// Size in bytes of the swarm experiment's file.
    #[arg(long, default_value_t = 16 << 20)]
    swarm_file_size: u64,
    /// Per-link bandwidth cap of the swarm experiment, bytes per second (default 100 Mbit/s).
    #[arg(long, default_value_t = 12_500_000)]
    bandwidth: u64,
    /// Run this many seeds, from --seed on, printing one line each (a sweep, for nightly use);
    /// exits 1 if any run's checkers failed, listing how to reproduce each.
    #[arg(long)]
    seeds: Option<u64>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let faults: Faults = match args.faults.parse() {
        Ok(faults) => faults,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(2);
        }
    };
    let config = SimConfig {
        seed: args.seed,
        members: args.members,
        duration_secs: args.duration,
        faults,
        tx_rates: args.tx_rate,
        files: args.files,
        file_size_bytes: args.file_size,
        audits: args.audits,
        sensor_records: args.sensor_records,
        swarm_owners: args.swarm_owners,
        swarm_file_size_bytes: args.swarm_file_size,
        swarm_bandwidth_bytes_per_s: args.bandwidth,
        ..SimConfig::default()
    };
    if let Err(error) = config.validate() {
        eprintln!("error: {error}");
        return ExitCode::from(2);
    }
    // The node library's logs, when asked for (RUST_LOG=node=info): a run's story per member.
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .try_init();
    }
    if let Some(count) = args.seeds {
        if count == 0 || args.json || args.report.is_some() {
            eprintln!("error: --seeds takes a count of at least 1, without --json or --report");
            return ExitCode::from(2);
        }
        return sweep(&config, count);
    }
    let spinner = if args.json || !std::io::stderr().is_terminal() {
        indicatif::ProgressBar::hidden()
    } else {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.enable_steady_tick(std::time::Duration::from_millis(100));
        bar
    };
    let result = simulator::run(&config, &mut |phase| spinner.set_message(phase.to_owned()));
    spinner.finish_and_clear();
    let report = match result {
        Ok(report) => report,
        Err(error) => {
            eprintln!("error: {error}");
            eprintln!("reproduce with: {}", config.command_line());
            return ExitCode::FAILURE;
        }
    };
    if args.json {
        match serde_json::to_string(&report) {
            Ok(json) => println!("{json}"),
            Err(error) => {
                eprintln!("error: {error}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        print!("{}", report.table());
    }
    if let Some(dir) = &args.report {
        if let Err(error) = report.write(dir) {
            eprintln!("error: {error}");
            return ExitCode::FAILURE;
        }
        if !args.json {
            println!("report written to {}", dir.join("report.html").display());
        }
    }
    if report.ok {
        ExitCode::SUCCESS
    } else {
        eprintln!("a checker failed; reproduce with: {}", report.reproduce);
        ExitCode::FAILURE
    }
}

/// Runs `count` seeds from `config.seed` on; one line per seed, the failures at the end.
fn sweep(config: &SimConfig, count: u64) -> ExitCode {
    let mut failures = Vec::new();
    let started = std::time::Instant::now();
    for seed in config.seed..config.seed.saturating_add(count) {
        let config = SimConfig {
            seed,
            ..config.clone()
        };
        match simulator::run(&config, &mut |_| {}) {
            Ok(report) => {
                let failed: Vec<&str> = report
                    .checks
                    .iter()
                    .filter(|check| !check.ok)
                    .map(|check| check.name)
                    .collect();
                println!(
                    "seed {seed}: {} ({} faults, {} tx acknowledged, {:.1} virtual s in {:.1} s)",
                    if failed.is_empty() {
                        "ok".to_owned()
                    } else {
                        format!("FAILED: {}", failed.join("; "))
                    },
                    report.faults_injected.len(),
                    report.rounds.iter().map(|round| round.succ).sum::<usize>(),
                    report.virtual_s,
                    report.real_s
                );
                if !failed.is_empty() {
                    failures.push(report.reproduce);
                }
            }
            Err(error) => {
                println!("seed {seed}: ERROR {error}");
                failures.push(config.command_line());
            }
        }
    }
    println!(
        "{} of {count} seeds green in {:.0} s",
        count - failures.len() as u64,
        started.elapsed().as_secs_f64()
    );
    for reproduce in &failures {
        eprintln!("reproduce with: {reproduce}");
    }
    if failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
