//! In-process commit throughput and latency of the ledger: 4 replicas, one OS thread each (so they
//! share this machine's cores as 4 nodes on one host would), an in-memory message bus, redb on
//! in-memory backends (sparse, as a file would be), every replica verifying every block's signatures. Load is open loop: signed
//! transactions are submitted to the leader at a fixed rate regardless of how fast they commit.
//!
//! Reports, per offered rate: transactions committed and applied on all replicas per second, and
//! the sustained rate: transactions the slowest replica applied per second between 1 s after the
//! load started and the end of the load (what the cluster keeps up with once past start-up),
//! the commit latency (submission to acknowledgement by the leader) p50 / p99 / max.
//!
//! `cargo bench -p benches --bench ledger_commit` (rates and seconds can be set with
//! `BT_RATES=10000,30000` and `BT_SECONDS=3`; `BT_LEDGER_DIR=DIR` puts the replicas' redb files
//! in DIR instead of memory, with every fsync Raft asks for).

#![allow(missing_docs, clippy::print_stdout, clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::thread;
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use hdrhistogram::Histogram;
use keyshare::FileId;
use ledger::{Body, Genesis, RedbStore, Replica, ReplicaConfig, Transaction, TxId, WireMessage};
use rand::{SeedableRng, rngs::StdRng};

const REPLICAS: usize = 4;
const TICK: Duration = Duration::from_millis(10);

enum Input {
    Message(Box<WireMessage>),
    Submit(Vec<Transaction>, Instant),
    Stop,
}

struct Report {
    committed: usize,
    last_commit: Option<Instant>,
    /// When each block was applied here, and how many transactions it held.
    applied: Vec<(Instant, usize)>,
    latencies_us: Option<Histogram<u64>>,
}

/// Elects a leader single-threaded (deterministic), then hands the replicas to threads. Returns
/// the replicas, the leader's id and the virtual time the election took (the threads' clock
/// continues from there, so no replica sees time stand still).
fn start_cluster(genesis: &Genesis) -> (Vec<Replica>, u64, Duration) {
    let mut replicas: Vec<Replica> = (1..=REPLICAS as u64)
        .map(|id| {
            let store = match std::env::var_os("BT_LEDGER_DIR") {
                Some(dir) => {
                    std::fs::create_dir_all(&dir).unwrap();
                    let path = std::path::Path::new(&dir).join(format!("replica-{id}.redb"));
                    let _ = std::fs::remove_file(&path);
                    RedbStore::open_file(&path).unwrap()
                }
                None => RedbStore::open_backend(benches::SparseMemoryBackend::default()).unwrap(),
            };
            Replica::open(genesis.clone(), ReplicaConfig::new(id), store).unwrap()
        })
        .collect();
    for tick in 1..=1_000u64 {
        let mut bus = Vec::new();
        for replica in &mut replicas {
            replica.tick(tick * 10);
        }
        for _ in 0..100 {
            for replica in &mut replicas {
                let effects = replica.poll().unwrap();
                bus.extend(effects.messages);
            }
            if bus.is_empty() {
                break;
            }
            for message in bus.drain(..) {
                let _ = replicas[message.recipient() as usize - 1].handle_message(message);
            }
        }
        if let Some(leader) = replicas.iter().find(|r| r.is_leader()).map(Replica::id) {
            return (replicas, leader, Duration::from_millis(tick * 10));
        }
    }
    panic!("no leader elected");
}

fn run_replica(
    mut replica: Replica,
    inbox: Receiver<Input>,
    peers: Vec<Sender<Input>>,
    epoch: Instant,
    measure: bool,
) -> Report {
    let mut submitted: HashMap<TxId, Instant> = HashMap::new();
    let mut latencies = Histogram::<u64>::new(3).unwrap();
    let mut committed = 0;
    let mut last_commit = None;
    let mut applied = Vec::new();
    let mut next_tick = Instant::now() + TICK;
    loop {
        let timeout = next_tick.saturating_duration_since(Instant::now());
        match inbox.recv_timeout(timeout) {
            Ok(Input::Message(message)) => {
                let _ = replica.handle_message(*message);
            }
            Ok(Input::Submit(txs, at)) => {
                for tx in txs {
                    if let Ok(id) = replica.submit(tx)
                        && measure
                    {
                        submitted.insert(id, at);
                    }
                }
            }
            Ok(Input::Stop) | Err(RecvTimeoutError::Disconnected) => break,
            Err(RecvTimeoutError::Timeout) => {}
        }
        if Instant::now() >= next_tick {
            replica.tick(epoch.elapsed().as_millis() as u64);
            next_tick += TICK;
        }
        loop {
            let effects = replica.poll().unwrap();
            if let Some(job) = effects.snapshot {
                replica.snapshot_built(job.build());
            }
            for message in effects.messages {
                let _ =
                    peers[message.recipient() as usize - 1].send(Input::Message(Box::new(message)));
            }
            for block in effects.committed {
                committed += block.ids.len();
                last_commit = Some(Instant::now());
                applied.push((Instant::now(), block.ids.len()));
                if measure {
                    for id in &block.ids {
                        if let Some(at) = submitted.remove(id) {
                            latencies.record(at.elapsed().as_micros() as u64).unwrap();
                        }
                    }
                }
            }
            if !effects.more {
                break;
            }
        }
    }
    Report {
        committed,
        last_commit,
        applied,
        latencies_us: measure.then_some(latencies),
    }
}

fn run(rate: u64, seconds: u64) {
    let mut rng = StdRng::seed_from_u64(rate);
    let keys: Vec<SigningKey> = (0..REPLICAS)
        .map(|_| SigningKey::generate(&mut rng))
        .collect();
    let genesis = benches::genesis(&keys, &mut rng);
    let total = (rate * seconds) as usize;
    let txs: Vec<Transaction> = (0..total)
        .map(|i| {
            let body = Body::ShareComplaint {
                file: FileId::from_bytes([7; 32]),
                reason: format!("load {i}"),
            };
            Transaction::sign(
                &keys[i % REPLICAS],
                "bench",
                1 + (i / REPLICAS) as u64,
                body,
            )
        })
        .collect();
    let (replicas, leader, elapsed) = start_cluster(&genesis);
    let (senders, inboxes): (Vec<_>, Vec<_>) = (0..REPLICAS).map(|_| channel()).unzip();
    let epoch = Instant::now() - elapsed;
    let handles: Vec<_> = replicas
        .into_iter()
        .zip(inboxes)
        .map(|(replica, inbox)| {
            let peers = senders.clone();
            let measure = replica.id() == leader;
            thread::spawn(move || run_replica(replica, inbox, peers, epoch, measure))
        })
        .collect();

    let leader_inbox = senders[leader as usize - 1].clone();
    let start = Instant::now();
    let mut sent = 0usize;
    let mut pending = txs.into_iter();
    while sent < total {
        let due = ((start.elapsed().as_secs_f64() * rate as f64) as usize).min(total);
        if due > sent {
            let batch: Vec<Transaction> = pending.by_ref().take(due - sent).collect();
            leader_inbox
                .send(Input::Submit(batch, Instant::now()))
                .unwrap();
            sent = due;
        }
        thread::sleep(Duration::from_micros(500));
    }
    // Let the tail commit, then stop.
    thread::sleep(Duration::from_secs(2));
    for sender in &senders {
        let _ = sender.send(Input::Stop);
    }
    let reports: Vec<Report> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let slowest = reports.iter().filter_map(|r| r.last_commit).max().unwrap();
    let window = (
        start + Duration::from_secs(1),
        start + Duration::from_secs(seconds),
    );
    let sustained = reports
        .iter()
        .map(|r| {
            r.applied
                .iter()
                .filter(|(at, _)| (window.0..window.1).contains(at))
                .map(|(_, n)| n)
                .sum::<usize>()
        })
        .min()
        .unwrap() as f64
        / (window.1 - window.0).as_secs_f64();
    let on_all = reports.iter().map(|r| r.committed).min().unwrap();
    let elapsed = slowest.duration_since(start).as_secs_f64();
    let histogram = reports
        .iter()
        .find_map(|r| r.latencies_us.as_ref())
        .unwrap();
    println!(
        "| {rate} | {total} | {on_all} | {:.0} | {sustained:.0} | {:.1} | {:.1} | {:.1} |",
        on_all as f64 / elapsed,
        histogram.value_at_quantile(0.5) as f64 / 1000.0,
        histogram.value_at_quantile(0.99) as f64 / 1000.0,
        histogram.max() as f64 / 1000.0,
    );
}

fn main() {
    if std::env::args().any(|arg| arg == "--list") {
        return;
    }
    let rates: Vec<u64> = std::env::var("BT_RATES")
        .unwrap_or_else(|_| "10000,30000,40000".into())
        .split(',')
        .map(|r| r.trim().parse().unwrap())
        .collect();
    let seconds: u64 = std::env::var("BT_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    println!("4 replicas, one thread each; every replica verifies; {seconds} s per rate");
    println!(
        "| offered tx/s | sent | applied on all | tx/s on all | sustained tx/s on all | p50 ms | p99 ms | max ms |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for rate in rates {
        run(rate, seconds);
    }
}
