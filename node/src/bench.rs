//! `blocktorrent bench ledger`: Caliper-style open-loop load against a running cluster.
//!
//! The load is the paper's own kind of transaction: the master tables and share deposits of
//! small files ([`node::load::SmallFiles`]), signed by every participant with the keys `init`
//! wrote into DIR, all signed before the clock starts. Each participant's transactions go, over
//! connections of its own, to the Raft leader's node through `POST /v1/ledger/txs`, which
//! answers once each is applied.
//!
//! Open loop, without coordinated omission: every transaction has a scheduled send time (the
//! round's rate, spread over the participants) and its latency runs from that time to the
//! node's answer. A participant's nonces must reach the ledger in order: its client sends a
//! batch once the node has taken the previous one in order (the head of a framed answer), and
//! reads the answers, which come when each batch is applied, on a thread of its own, with up
//! to about [`MAX_IN_FLIGHT`] batches waiting. Whatever comes due meanwhile goes in the next
//! batch, and every wait counts against the system, not the client.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use ed25519_dalek::SigningKey;
use ledger::{Body, Transaction};
use node::Status;
use node::api::{Nonces, TxBatchAnswer};
use node::caliper::{self, Outcome, Round};
use node::config::LoadedConfig;
use node::load::SmallFiles;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::client::{Client, Frame, Frames};

/// Most transactions one batch carries (a batch is one HTTP request).
const MAX_BATCH: usize = 2_000;
/// Connections all participants together may hold to the node: half the admin API's 256
/// (`ServeLimits`), the rest left to the CLI. A participant's batches in flight are cut to its
/// share of these when there are many participants.
const CONNECTION_BUDGET: usize = 128;
/// Batches one participant has queued for their answers (each holds a connection); with the one
/// whose answer is being read and the one being sent, up to two more wait for their blocks.
const MAX_IN_FLIGHT: usize = 16;
/// Least time between one participant's batches: it adds at most this to a transaction's wait
/// and keeps requests to 200 a second per participant at any rate. Measured at 10,000 tx/s on
/// 2 cores (README): 5 ms put p99 below one batch in flight; 2 ms cost more in requests than it
/// saved in waiting.
const BATCH_SPACING: Duration = Duration::from_millis(5);
/// How long a batch may take before the round gives up on it.
const BATCH_TIMEOUT: Duration = Duration::from_secs(90);

/// What `bench ledger` was asked to do.
pub(crate) struct LedgerBench {
    pub(crate) dir: PathBuf,
    pub(crate) rates: Vec<u32>,
    pub(crate) duration_s: f64,
    pub(crate) json: bool,
    pub(crate) report: Option<PathBuf>,
    /// Master tables only, no deposits: the ledger without the holders' share checks.
    pub(crate) tables_only: bool,
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
    // The nonce each participant signed last: a batch that timed out may still commit after
    // its round, so the next round signs past it rather than from what the node has applied.
    let mut signed = vec![0u64; participants.len()];
    for &rate in &options.rates {
        let plan = RoundPlan {
            rate,
            seconds: options.duration_s,
            tables_only: options.tables_only,
        };
        let round = run_round(&participants, &plan, &mut signed, &mut rng)?;
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

/// The node the load goes to: the Raft leader's (as Caliper sends to Fabric's ordering
/// gateway), so transactions are not forwarded; any other node would forward them.
fn entry_node(configs: &[PathBuf]) -> anyhow::Result<PathBuf> {
    let first = configs
        .first()
        .ok_or_else(|| anyhow!("the consortium has no members"))?;
    let status: Status = Client::from_config(first, BATCH_TIMEOUT)?.get("/v1/status")?;
    let leader = status
        .leader
        .ok_or_else(|| anyhow!("the cluster has no Raft leader yet; try again in a moment"))?;
    for path in configs {
        if LoadedConfig::load(path)?.config.name == leader {
            return Ok(path.clone());
        }
    }
    Err(anyhow!(
        "the leader {leader} is not a member of this directory"
    ))
}

/// The participants of the consortium in DIR, each with its key and a client of the node the
/// load goes to (connections of its own).
fn participants(configs: &[PathBuf], rng: &mut StdRng) -> anyhow::Result<Vec<Participant>> {
    let entry = entry_node(configs)?;
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
            client: Client::from_config(&entry, BATCH_TIMEOUT)?,
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
/// table and then its deposit, `rate` transactions a second for `seconds`. Each participant's
/// share is signed on its own thread (sealing the deposits is most of the work).
fn sign_round(
    participants: &[Participant],
    nonces: &[u64],
    round: &RoundPlan,
    rng: &mut StdRng,
) -> anyhow::Result<Vec<Schedule>> {
    let RoundPlan {
        rate,
        seconds,
        tables_only,
    } = *round;
    let total = (f64::from(rate) * seconds).round().max(2.0) as u64;
    let files = total.div_ceil(2);
    let count = participants.len() as u64;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let at = |k: u64| Duration::from_secs_f64(k as f64 / f64::from(rate));
    let seeds: Vec<u64> = participants.iter().map(|_| rng.next_u64()).collect();
    std::thread::scope(|scope| {
        let handles: Vec<_> = participants
            .iter()
            .zip(nonces)
            .zip(seeds)
            .enumerate()
            .map(|(who, ((participant, last_nonce), seed))| {
                scope.spawn(move || -> anyhow::Result<Schedule> {
                    let mut rng = StdRng::seed_from_u64(seed);
                    let mut nonce = last_nonce + 1;
                    let mut txs = Vec::new();
                    for file_index in (who as u64..files).step_by(count as usize) {
                        let files = &participant.files;
                        let file = files.file_id(now_ms + file_index, &mut rng);
                        let second = if tables_only {
                            let other = files.file_id(now_ms + file_index, &mut rng);
                            Body::RegisterFile(files.table(other, now_ms, &mut rng)?)
                        } else {
                            files.deposit(file, &mut rng)?
                        };
                        let bodies = [
                            Body::RegisterFile(files.table(file, now_ms, &mut rng)?),
                            second,
                        ];
                        for (offset, body) in (0..).zip(bodies) {
                            let tx = Transaction::sign(
                                &participant.signing,
                                files.chain_id(),
                                nonce,
                                body,
                            );
                            nonce += 1;
                            txs.push((at(2 * file_index + offset), tx));
                        }
                    }
                    Ok(Schedule { txs })
                })
            })
            .collect();
        join_all(handles, "signing").into_iter().collect()
    })
}

/// What one round sends.
#[derive(Clone, Copy)]
struct RoundPlan {
    rate: u32,
    seconds: f64,
    tables_only: bool,
}

/// Runs one round and summarises it.
fn run_round(
    participants: &[Participant],
    round: &RoundPlan,
    signed: &mut [u64],
    rng: &mut StdRng,
) -> anyhow::Result<Round> {
    let RoundPlan { rate, seconds, .. } = *round;
    // The entry node has applied every transaction it acknowledged.
    let mut nonces = Vec::with_capacity(participants.len());
    for (participant, last_signed) in participants.iter().zip(signed.iter()) {
        let known: Nonces = participant.client.get("/v1/ledger/nonces")?;
        let applied = known.nonces.get(&participant.name).copied().unwrap_or(0);
        nonces.push(applied.max(*last_signed));
    }
    let signing = Instant::now();
    let schedules = sign_round(participants, &nonces, round, rng)?;
    for (last, schedule) in signed.iter_mut().zip(&schedules) {
        if let Some((_, tx)) = schedule.txs.last() {
            *last = tx.nonce;
        }
    }
    let count: usize = schedules.iter().map(|s| s.txs.len()).sum();
    eprintln!(
        "{rate} tx/s: signed {count} transactions in {:.1} s; sending for {seconds} s",
        signing.elapsed().as_secs_f64()
    );
    // Each participant holds its queued batches' connections, one being read and one being sent.
    let queued = (CONNECTION_BUDGET / participants.len().max(1))
        .saturating_sub(2)
        .clamp(1, MAX_IN_FLIGHT);
    let start = Instant::now();
    let results: Vec<anyhow::Result<Vec<(Outcome, Duration)>>> = std::thread::scope(|scope| {
        let handles: Vec<_> = participants
            .iter()
            .zip(schedules)
            .map(|(participant, schedule)| {
                scope.spawn(move || send(participant, schedule, start, queued))
            })
            .collect();
        join_all(handles, "sending")
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
    let load = if round.tables_only {
        "register"
    } else {
        "register+deposit"
    };
    Ok(Round::of(
        format!("{load}@{rate}"),
        rate,
        seconds,
        &outcomes,
        // As the simulator counts it: a round lasts at least its sending time.
        last_ack.as_secs_f64().max(seconds),
    ))
}

/// Sends one participant's schedule, a batch at a time in order and about `queued` (at most
/// [`MAX_IN_FLIGHT`]) waiting for their blocks at once; returns each transaction's outcome and
/// when (from the round's start) its answer came.
fn send(
    participant: &Participant,
    schedule: Schedule,
    start: Instant,
    queued: usize,
) -> anyhow::Result<Vec<(Outcome, Duration)>> {
    let total = schedule.txs.len();
    let (in_flight, landed) = std::sync::mpsc::sync_channel::<InFlight>(queued);
    std::thread::scope(|scope| {
        // Batches are answered in the order they were taken (their blocks apply in order), so
        // one waiter reading them in turn timestamps each answer as it comes.
        let waiter = scope.spawn(move || {
            let mut results = Vec::with_capacity(total);
            for batch in landed {
                batch.answered(participant, start, &mut results);
            }
            results
        });
        let sent = post_batches(participant, schedule, start, &in_flight);
        drop(in_flight);
        let results = waiter
            .join()
            .map_err(|_| anyhow!("{}'s answer reader panicked", participant.name))?;
        sent.map(|()| results)
    })
}

/// Posts the schedule's batches: each when its first transaction is due (and not within
/// [`BATCH_SPACING`] of the previous one), holding whatever else is due by then. The node answers
/// a framed post's head once it has taken the batch in order, so the next batch, sent after
/// that, is ordered after it; the rest of the answer is left to the waiter.
fn post_batches(
    participant: &Participant,
    schedule: Schedule,
    start: Instant,
    in_flight: &std::sync::mpsc::SyncSender<InFlight>,
) -> anyhow::Result<()> {
    let mut pending = schedule.txs.into_iter().peekable();
    let mut last_sent: Option<Duration> = None;
    while let Some((first_at, _)) = pending.peek() {
        let send_at = last_sent.map_or(*first_at, |last| (*first_at).max(last + BATCH_SPACING));
        if let Some(wait) = send_at.checked_sub(start.elapsed()) {
            std::thread::sleep(wait);
        }
        let due = start.elapsed();
        last_sent = Some(due);
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
        let answer = participant
            .client
            .post_bytes_frames("/v1/ledger/txs", &body);
        // Waits while `queued` batches wait for their blocks: that wait counts against the
        // system, as the scheduled times stand.
        if in_flight.send(InFlight { scheduled, answer }).is_err() {
            return Err(anyhow!("{}'s answer reader stopped", participant.name));
        }
    }
    Ok(())
}

/// A batch whose head came (or whose post failed), waiting for its answer.
struct InFlight {
    /// Each transaction's scheduled send time, from the round's start.
    scheduled: Vec<Duration>,
    answer: anyhow::Result<Frames>,
}

impl InFlight {
    /// Reads the batch's answer and records each transaction's outcome.
    fn answered(
        self,
        participant: &Participant,
        start: Instant,
        results: &mut Vec<(Outcome, Duration)>,
    ) {
        let count = self.scheduled.len();
        let answer = self.answer.and_then(|mut frames| match frames.next()? {
            Frame::Done(answer) => {
                // The end only decides whether the connection is reused: the answer stands.
                if let Err(error) = frames.finish() {
                    tracing::debug!(participant = %participant.name, %error, "answer's end");
                }
                Ok::<TxBatchAnswer, anyhow::Error>(answer)
            }
            Frame::Data(_) | Frame::Progress(_) => Err(anyhow!("an unexpected frame")),
        });
        let answered = start.elapsed();
        let outcomes: Vec<bool> = match answer {
            Ok(answer) if answer.outcomes.len() == count => {
                answer.outcomes.iter().map(|o| o.applied).collect()
            }
            Ok(answer) => {
                tracing::warn!(
                    participant = %participant.name,
                    answered = answer.outcomes.len(),
                    sent = count,
                    "a batch's answer does not match it"
                );
                vec![false; count]
            }
            // A batch that failed as a whole counts as failed transactions.
            Err(error) => {
                tracing::warn!(participant = %participant.name, %error, "a batch failed");
                vec![false; count]
            }
        };
        for (at, ok) in self.scheduled.into_iter().zip(outcomes) {
            let latency_s = answered.saturating_sub(at).as_secs_f64();
            results.push((Outcome { latency_s, ok }, answered));
        }
    }
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

/// What `bench overlay` was asked to do.
pub(crate) struct OverlayBench {
    pub(crate) dir: PathBuf,
    pub(crate) file_bytes: u64,
    pub(crate) json: bool,
}

/// `bench overlay --json` (DESIGN.md's contract).
#[derive(Serialize)]
struct OverlayJson {
    file_bytes: u64,
    swarm_mb_s: f64,
    single_owner_mb_s: f64,
    concurrent: Vec<ConcurrentJson>,
}

#[derive(Serialize)]
struct ConcurrentJson {
    auditors: usize,
    aggregate_mb_s: f64,
}

/// How long a fetch may wait for released shares.
const SHARES_TIMEOUT_SECS: u64 = 120;

/// Stores a file of random bytes as the first participant, files an access request as the
/// auditor, and recreates the file (a) from every owner, (b) from one owner only — the
/// client–server baseline — and (c) by 1, 2 and 4 fetches at once; prints MB/s of plaintext.
pub(crate) fn overlay(options: &OverlayBench) -> anyhow::Result<()> {
    let configs = crate::cluster::member_configs(&options.dir)?;
    let mut owner = None;
    let mut auditor = None;
    for path in &configs {
        let loaded = LoadedConfig::load(path)?;
        match loaded.me().role {
            ledger::Role::Participant if owner.is_none() => owner = Some(path.clone()),
            ledger::Role::Auditor if auditor.is_none() => auditor = Some(path.clone()),
            _ => {}
        }
    }
    let (owner, auditor) = owner
        .zip(auditor)
        .ok_or_else(|| anyhow!("the consortium needs a participant and an auditor"))?;
    let auditor_name = LoadedConfig::load(&auditor)?.config.name;
    let owner_name = LoadedConfig::load(&owner)?.config.name;

    if !options.json {
        eprintln!("storing {} bytes as {owner_name}", options.file_bytes);
    }
    let client = Client::streaming(&owner)?;
    let mut random = RandomBytes::new(options.file_bytes);
    let mut answer = client.post_stream("/v1/store", &mut random, options.file_bytes)?;
    let stored: node::StoreReceipt = loop {
        if let crate::client::Frame::Done(receipt) = answer.next()? {
            break receipt;
        }
    };
    let file_id = stored.file_id;
    let auditor_client = Client::from_config(&auditor, BATCH_TIMEOUT)?;
    let _: node::RequestReceipt = auditor_client.post_json(
        "/v1/request",
        &node::api::RequestBody {
            file_id,
            reason: "bench overlay".into(),
        },
    )?;
    // The single owner: a member other than the auditor that holds every chunk.
    let view: node::api::FileView = auditor_client.get(&format!("/v1/file/{file_id}"))?;
    let single = configs
        .iter()
        .filter_map(|path| LoadedConfig::load(path).ok())
        .map(|loaded| loaded.config.name)
        .find(|name| {
            *name != auditor_name && view.chunk_owners.iter().all(|owners| owners.contains(name))
        })
        .ok_or_else(|| {
            anyhow!(
                "no member but the auditor holds every chunk, so there is no single-owner \
                 baseline; init the cluster with --replication equal to members − 1"
            )
        })?;
    // The first fetch also waits for the releases; it is not timed.
    timed_fetch(&auditor, file_id, None)?;
    let swarm = timed_fetch(&auditor, file_id, None)?;
    if !options.json {
        eprintln!("swarm: {:.1} MB/s", mb_s(options.file_bytes, swarm));
    }
    let single_owner = timed_fetch(&auditor, file_id, Some(single.clone()))?;
    if !options.json {
        eprintln!(
            "single owner ({single}): {:.1} MB/s",
            mb_s(options.file_bytes, single_owner)
        );
    }
    let mut concurrent = Vec::new();
    for auditors in [1usize, 2, 4] {
        let start = Instant::now();
        std::thread::scope(|scope| -> anyhow::Result<()> {
            let handles: Vec<_> = (0..auditors)
                .map(|_| scope.spawn(|| timed_fetch(&auditor, file_id, None)))
                .collect();
            join_all(handles, "fetching")
                .into_iter()
                .try_for_each(|took| took.map(drop))
        })?;
        let aggregate = mb_s(options.file_bytes * auditors as u64, start.elapsed());
        if !options.json {
            eprintln!("{auditors} at once: {aggregate:.1} MB/s in all");
        }
        concurrent.push(ConcurrentJson {
            auditors,
            aggregate_mb_s: aggregate,
        });
    }
    let result = OverlayJson {
        file_bytes: options.file_bytes,
        swarm_mb_s: mb_s(options.file_bytes, swarm),
        single_owner_mb_s: mb_s(options.file_bytes, single_owner),
        concurrent,
    };
    if options.json {
        println!("{}", serde_json::to_string(&result)?);
    } else {
        println!(
            "file {file_id}: {} bytes stored by {owner_name}, recreated by {auditor_name}",
            result.file_bytes
        );
        println!("| fetch | MB/s |\n|---|---|");
        println!("| swarm (every owner) | {:.1} |", result.swarm_mb_s);
        println!(
            "| single owner ({single}) | {:.1} |",
            result.single_owner_mb_s
        );
        for row in &result.concurrent {
            println!(
                "| {} fetches at once, in all | {:.1} |",
                row.auditors, row.aggregate_mb_s
            );
        }
        println!(
            "swarm / single owner: {:.2}×",
            result.swarm_mb_s / result.single_owner_mb_s.max(f64::MIN_POSITIVE)
        );
    }
    Ok(())
}

/// Recreates `file` as the auditor, reading and dropping the plaintext; returns how long it took.
fn timed_fetch(
    auditor: &Path,
    file_id: keyshare::FileId,
    only_from: Option<String>,
) -> anyhow::Result<Duration> {
    let client = Client::streaming(auditor)?;
    let start = Instant::now();
    let mut answer = client.post_json_frames(
        "/v1/fetch",
        &node::api::FetchBody {
            file_id,
            timeout_secs: SHARES_TIMEOUT_SECS,
            only_from,
        },
    )?;
    loop {
        if let crate::client::Frame::Done(receipt) = answer.next::<node::FetchReceipt>()? {
            if receipt.file_id != file_id {
                return Err(anyhow!("the node recreated another file"));
            }
            return Ok(start.elapsed());
        }
    }
}

/// Megabytes (10⁶ bytes) per second.
fn mb_s(bytes: u64, took: Duration) -> f64 {
    bytes as f64 / 1e6 / took.as_secs_f64().max(1e-9)
}

/// `len` pseudo-random bytes, generated as they are read (the file is never in memory).
struct RandomBytes {
    rng: StdRng,
    left: u64,
}

impl RandomBytes {
    fn new(len: u64) -> Self {
        Self {
            rng: rand::make_rng::<StdRng>(),
            left: len,
        }
    }
}

impl std::io::Read for RandomBytes {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        self.rng.fill_bytes(&mut buf[..n]);
        self.left -= n as u64;
        Ok(n)
    }
}

/// Each thread's result, a panic counting as an error of the thread doing `what`.
fn join_all<T>(
    handles: Vec<std::thread::ScopedJoinHandle<'_, anyhow::Result<T>>>,
    what: &str,
) -> Vec<anyhow::Result<T>> {
    handles
        .into_iter()
        .map(|handle| {
            handle
                .join()
                .unwrap_or_else(|_| Err(anyhow!("a {what} thread panicked")))
        })
        .collect()
}
