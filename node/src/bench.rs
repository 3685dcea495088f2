//! `blocktorrent bench ledger`: Caliper-style open-loop load against a running cluster.
//!
//! The load is the paper's own kind of transaction: the master tables and share deposits of
//! small files ([`node::load::SmallFiles`]), signed by every participant with the keys `init`
//! wrote into DIR, all signed before the clock starts. Each participant's transactions go to its
//! own node through `POST /v1/ledger/txs`, which answers once each is applied.
//!
//! Open loop, without coordinated omission: every transaction has a scheduled send time (the
//! round's rate, spread over the participants) and its latency runs from that time to the
//! node's answer. A participant's nonces must reach the ledger in order, so each participant's
//! client keeps one batch in flight; whatever comes due while it waits goes in its next batch,
//! and the wait counts against the system, not the client.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use ed25519_dalek::SigningKey;
use ledger::{Body, Transaction};
use node::api::{Nonces, TxBatchAnswer};
use node::caliper::{self, Outcome, Round};
use node::config::LoadedConfig;
use node::load::SmallFiles;
use rand::rngs::StdRng;
use serde::Serialize;

use crate::client::Client;

/// Most transactions one batch carries (a batch is one HTTP request).
const MAX_BATCH: usize = 2_000;
/// How long a batch may take before the round gives up on it.
const BATCH_TIMEOUT: Duration = Duration::from_secs(90);

/// What `bench ledger` was asked to do.
pub(crate) struct LedgerBench {
    pub(crate) dir: PathBuf,
    pub(crate) rates: Vec<u32>,
    pub(crate) duration_s: f64,
    pub(crate) json: bool,
    pub(crate) report: Option<PathBuf>,
}

/// One participant: its node's client, its key and its files.
struct Participant {
    name: String,
    client: Client,
    signing: SigningKey,
    files: SmallFiles,
}

/// `--json` output (DESIGN.md's contract).
#[derive(Serialize)]
struct BenchJson {
    members: usize,
    rounds: Vec<RoundJson>,
}

#[derive(Serialize)]
struct RoundJson {
    name: String,
    send_rate_tps: f64,
    succ: usize,
    fail: usize,
    throughput_tps: f64,
    latency_s: caliper::Latency,
}

/// Runs the benchmark and prints its table (or JSON), and writes the report if asked.
pub(crate) fn ledger(options: &LedgerBench) -> anyhow::Result<()> {
    if options.rates.is_empty() || options.rates.contains(&0) {
        return Err(anyhow!(
            "--rates needs one or more rates above 0, e.g. 50,100,350"
        ));
    }
    if !(options.duration_s > 0.0 && options.duration_s <= 3_600.0) {
        return Err(anyhow!("--duration must be in (0, 3600] seconds"));
    }
    let configs = crate::cluster::member_configs(&options.dir)?;
    let members = configs.len();
    let mut rng = rand::make_rng::<StdRng>();
    let participants = participants(&configs, &mut rng)?;
    let mut rounds = Vec::with_capacity(options.rates.len());
    for &rate in &options.rates {
        let round = run_round(&participants, rate, options.duration_s, &mut rng)?;
        if !options.json {
            eprintln!(
                "{}: {} acknowledged, {} failed, {:.1} tx/s, p99 {:.3} s",
                round.name, round.succ, round.fail, round.throughput_tps, round.latency_s.p99
            );
        }
        rounds.push(round);
    }
    if let Some(dir) = &options.report {
        write_report(dir, members, &rounds)?;
    }
    if options.json {
        let json = BenchJson {
            members,
            rounds: rounds
                .iter()
                .map(|r| RoundJson {
                    name: r.name.clone(),
                    send_rate_tps: r.send_rate_tps,
                    succ: r.succ,
                    fail: r.fail,
                    throughput_tps: r.throughput_tps,
                    latency_s: r.latency_s,
                })
                .collect(),
        };
        println!("{}", serde_json::to_string(&json)?);
    } else {
        println!(
            "{members} members, {} participants sending",
            participants.len()
        );
        print!("{}", caliper::table(&rounds));
    }
    Ok(())
}

/// The participants of the consortium in DIR, each with its key and a client of its node.
fn participants(configs: &[PathBuf], rng: &mut StdRng) -> anyhow::Result<Vec<Participant>> {
    let mut participants = Vec::new();
    for path in configs {
        let loaded = LoadedConfig::load(path)?;
        if loaded.me().role != ledger::Role::Participant {
            continue;
        }
        let keys = loaded.keys()?;
        let files = SmallFiles::new(&loaded.consortium, loaded.me().id, rng)
            .with_context(|| format!("preparing {}'s files", loaded.config.name))?;
        participants.push(Participant {
            name: loaded.config.name.clone(),
            client: Client::from_config(path, BATCH_TIMEOUT)?,
            signing: keys.signing.clone(),
            files,
        });
    }
    if participants.is_empty() {
        return Err(anyhow!("the consortium has no participant to send from"));
    }
    Ok(participants)
}

/// One participant's share of a round: its transactions in nonce order, each with its
/// scheduled send time from the round's start.
struct Schedule {
    txs: Vec<(Duration, Transaction)>,
}

/// Signs the round's transactions: files in turn across the participants, each file's master
/// table and then its deposit, `rate` transactions a second for `seconds`.
fn sign_round(
    participants: &[Participant],
    nonces: &BTreeMap<String, u64>,
    rate: u32,
    seconds: f64,
    rng: &mut StdRng,
) -> anyhow::Result<Vec<Schedule>> {
    let total = (f64::from(rate) * seconds).round().max(2.0) as u64;
    let files = total.div_ceil(2);
    let progress = progress_bar(files, &format!("signing {total} transactions"));
    let mut schedules: Vec<Schedule> = participants
        .iter()
        .map(|_| Schedule { txs: Vec::new() })
        .collect();
    let mut next_nonce: Vec<u64> = participants
        .iter()
        .map(|p| nonces.get(&p.name).copied().unwrap_or(0) + 1)
        .collect();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let at = |k: u64| Duration::from_secs_f64(k as f64 / f64::from(rate));
    for file_index in 0..files {
        let who = (file_index % participants.len() as u64) as usize;
        let participant = &participants[who];
        let file = participant.files.file_id(now_ms + file_index, rng);
        let table = participant.files.table(file, now_ms, rng)?;
        let bodies = [
            Body::RegisterFile(table),
            participant.files.deposit(file, rng)?,
        ];
        for (offset, body) in bodies.into_iter().enumerate() {
            let nonce = next_nonce[who];
            next_nonce[who] += 1;
            let tx = Transaction::sign(
                &participant.signing,
                participant.files.chain_id(),
                nonce,
                body,
            );
            schedules[who]
                .txs
                .push((at(2 * file_index + offset as u64), tx));
        }
        progress.inc(1);
    }
    progress.finish_and_clear();
    Ok(schedules)
}

/// Runs one round at `rate` and summarises it.
fn run_round(
    participants: &[Participant],
    rate: u32,
    seconds: f64,
    rng: &mut StdRng,
) -> anyhow::Result<Round> {
    let nonces: Nonces = participants[0].client.get("/v1/ledger/nonces")?;
    let schedules = sign_round(participants, &nonces.nonces, rate, seconds, rng)?;
    let start = Instant::now();
    let results: Vec<anyhow::Result<Vec<(Outcome, Duration)>>> = std::thread::scope(|scope| {
        let handles: Vec<_> = participants
            .iter()
            .zip(schedules)
            .map(|(participant, schedule)| scope.spawn(move || send(participant, schedule, start)))
            .collect();
        handles
            .into_iter()
            .map(|handle| {
                handle
                    .join()
                    .unwrap_or_else(|_| Err(anyhow!("a sending thread panicked")))
            })
            .collect()
    });
    let mut outcomes = Vec::new();
    let mut last_ack = Duration::ZERO;
    for result in results {
        for (outcome, acked_at) in result? {
            if outcome.ok {
                last_ack = last_ack.max(acked_at);
            }
            outcomes.push(outcome);
        }
    }
    Ok(Round::of(
        format!("register+deposit@{rate}"),
        rate,
        seconds,
        &outcomes,
        last_ack.as_secs_f64(),
    ))
}

/// Sends one participant's schedule, one batch in flight; returns each transaction's outcome
/// and when (from the round's start) its answer came.
fn send(
    participant: &Participant,
    schedule: Schedule,
    start: Instant,
) -> anyhow::Result<Vec<(Outcome, Duration)>> {
    let mut results = Vec::with_capacity(schedule.txs.len());
    let mut pending = schedule.txs.into_iter().peekable();
    while let Some((first_at, _)) = pending.peek() {
        if let Some(wait) = first_at.checked_sub(start.elapsed()) {
            std::thread::sleep(wait);
        }
        let due = start.elapsed();
        let mut batch = Vec::new();
        let mut scheduled = Vec::new();
        while let Some((at, _)) = pending.peek() {
            if *at > due || batch.len() == MAX_BATCH {
                break;
            }
            if let Some((at, tx)) = pending.next() {
                scheduled.push(at);
                batch.push(tx);
            }
        }
        let body = postcard::to_allocvec(&batch)?;
        let answer: anyhow::Result<TxBatchAnswer> =
            participant.client.post_bytes("/v1/ledger/txs", body);
        let answered = start.elapsed();
        let outcomes: Vec<bool> = match answer {
            Ok(answer) if answer.outcomes.len() == batch.len() => {
                answer.outcomes.iter().map(|o| o.applied).collect()
            }
            Ok(answer) => {
                return Err(anyhow!(
                    "{}'s node answered {} outcomes for {} transactions",
                    participant.name,
                    answer.outcomes.len(),
                    batch.len()
                ));
            }
            // A batch that failed as a whole counts as failed transactions.
            Err(error) => {
                tracing::warn!(participant = %participant.name, %error, "a batch failed");
                vec![false; batch.len()]
            }
        };
        for (at, ok) in scheduled.into_iter().zip(outcomes) {
            let latency_s = answered.saturating_sub(at).as_secs_f64();
            results.push((Outcome { latency_s, ok }, answered));
        }
    }
    Ok(results)
}

/// Writes `report.json`, the two plots and a self-contained `report.html` into `dir`.
fn write_report(dir: &Path, members: usize, rounds: &[Round]) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let throughput = caliper::throughput_plot(rounds)?;
    let latency = caliper::latency_plot(rounds)?;
    let json = serde_json::to_string_pretty(&serde_json::json!({
        "members": members,
        "rounds": rounds,
    }))?;
    let html = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>BlockTorrent ledger benchmark</title>\
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #999;padding:4px 8px;text-align:right}}</style>\
</head><body><h1>BlockTorrent ledger benchmark</h1><p>{members} members; master tables and share deposits of small files, open loop</p>\
{table}<div>{throughput}</div><div>{latency}</div></body></html>",
        table = caliper::html_table(rounds),
    );
    for (name, contents) in [
        ("report.json", json.as_str()),
        ("throughput.svg", &throughput),
        ("latency.svg", &latency),
        ("report.html", &html),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, contents)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

/// A progress bar on a terminal, nothing otherwise.
fn progress_bar(len: u64, message: &str) -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len);
    bar.set_message(message.to_owned());
    bar
}
