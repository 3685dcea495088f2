//! Workloads, open loop as Hyperledger Caliper drives them: transactions are sent at fixed
//! rates whatever happened to the earlier ones, and each one's latency is measured from the time
//! it was *scheduled*, so a stalled system shows up as latency rather than as a lower send rate
//! (no coordinated omission). Also files stored by random members, for the audits.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use keyshare::{ChunkHash, FileId};
use ledger::{Body, TxId, TxResult};
use node::config::Consortium;
use node::load::SmallFiles;
use rand::rngs::StdRng;
use rand::{Rng, RngExt, SeedableRng};
use tokio::time::Instant;

use crate::world::SimNode;

/// The running members, by index, as the workloads see them (a crashed member is `None`).
pub type Directory = Arc<Mutex<Vec<Option<Arc<SimNode>>>>>;

/// How long a transaction may take before it counts as failed.
const TX_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a store may take before it counts as failed.
const STORE_TIMEOUT: Duration = Duration::from_secs(120);

/// One transaction's fate.
pub use node::caliper::Outcome as TxOutcome;

/// One round of the send-rate sweep.
#[derive(Clone, Debug)]
pub struct RoundResult {
    /// Target send rate.
    pub rate_tps: u32,
    /// Virtual seconds the round sent for.
    pub seconds: f64,
    /// Every transaction sent, in send order.
    pub outcomes: Vec<TxOutcome>,
    /// Virtual seconds from the round's start to its last acknowledgement.
    pub span_s: f64,
}

/// Transactions acknowledged to the workload: (id, height of its block).
pub type Acknowledged = Arc<Mutex<Vec<(TxId, u64)>>>;

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Picks a running participant (never the auditor) at random.
fn pick_participant(directory: &Directory, rng: &mut StdRng) -> Option<(usize, Arc<SimNode>)> {
    let nodes = lock(directory);
    let participants = nodes.len().saturating_sub(1);
    let up: Vec<usize> = (0..participants).filter(|i| nodes[*i].is_some()).collect();
    if up.is_empty() {
        return None;
    }
    let index = up[rng.random_range(0..up.len())];
    nodes[index].clone().map(|node| (index, node))
}

/// Builds the paper's kind of ledger transaction: a small file's master table, registered by
/// `owner`, each with a fresh file id ([`node::load::SmallFiles`], one per owner).
pub struct TableFactory {
    consortium: Consortium,
    owners: BTreeMap<usize, SmallFiles>,
    rng: StdRng,
}

impl TableFactory {
    /// A factory drawing ids from `seed`.
    pub fn new(consortium: Consortium, seed: u64) -> Self {
        Self {
            consortium,
            owners: BTreeMap::new(),
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// The next table registered by member `owner` (`None` if the consortium's threshold does
    /// not fit its holders, which its validation rules out).
    pub fn next(&mut self, owner: usize, now_ms: u64) -> Option<Body> {
        let files = match self.owners.entry(owner) {
            std::collections::btree_map::Entry::Occupied(entry) => entry.into_mut(),
            std::collections::btree_map::Entry::Vacant(entry) => {
                let me = self.consortium.members.get(owner)?.id;
                entry.insert(SmallFiles::new(&self.consortium, me, &mut self.rng).ok()?)
            }
        };
        let file = files.file_id(now_ms, &mut self.rng);
        files
            .table(file, now_ms, &mut self.rng)
            .ok()
            .map(Body::RegisterFile)
    }
}

/// Sends transactions at `rate_tps` for `seconds` (virtual), open loop, from random running
/// participants; waits for the stragglers (each bounded by [`TX_TIMEOUT`]).
pub async fn run_round(
    directory: &Directory,
    factory: &Arc<Mutex<TableFactory>>,
    acknowledged: &Acknowledged,
    clock: &node::Clock,
    rate_tps: u32,
    seconds: f64,
    rng: &mut StdRng,
) -> RoundResult {
    let start = Instant::now();
    let count = (f64::from(rate_tps) * seconds).round().max(1.0) as u64;
    let mut sent = tokio::task::JoinSet::new();
    for k in 0..count {
        let scheduled = start + Duration::from_secs_f64(k as f64 / f64::from(rate_tps.max(1)));
        tokio::time::sleep_until(scheduled).await;
        let body = pick_participant(directory, rng)
            .and_then(|(index, node)| Some((node, lock(factory).next(index, clock())?)));
        let Some((node, body)) = body else {
            // Nobody to send from: the transaction fails at once.
            sent.spawn(async move {
                (
                    k,
                    TxOutcome {
                        latency_s: 0.0,
                        ok: false,
                    },
                    Instant::now(),
                )
            });
            continue;
        };
        let acknowledged = acknowledged.clone();
        sent.spawn(async move {
            let answer = tokio::time::timeout(TX_TIMEOUT, node.submit(body)).await;
            let done = Instant::now();
            let ok = match answer {
                Ok(Ok(receipt)) if receipt.result == TxResult::Applied => {
                    lock(&acknowledged).push((receipt.tx, receipt.height));
                    true
                }
                _ => false,
            };
            let latency_s = done.duration_since(scheduled).as_secs_f64();
            (k, TxOutcome { latency_s, ok }, done)
        });
    }
    let mut outcomes = vec![
        TxOutcome {
            latency_s: 0.0,
            ok: false
        };
        count as usize
    ];
    let mut last = start;
    while let Some(joined) = sent.join_next().await {
        if let Ok((k, outcome, done)) = joined {
            outcomes[k as usize] = outcome;
            if outcome.ok {
                last = last.max(done);
            }
        }
    }
    RoundResult {
        rate_tps,
        seconds,
        outcomes,
        span_s: last.duration_since(start).as_secs_f64().max(seconds),
    }
}

/// Waits until event `number` of `count` spread evenly over `seconds` from `start` is due.
async fn wait_for_turn(start: Instant, seconds: f64, number: usize, count: usize) {
    let offset = seconds * (number + 1) as f64 / (count + 1) as f64;
    tokio::time::sleep_until(start + Duration::from_secs_f64(offset)).await;
}

/// A file a member stored, remembered by its hash (the audits compare against it).
#[derive(Clone, Debug)]
pub struct StoredFile {
    /// Its id.
    pub file_id: FileId,
    /// SHA3-256 of the plaintext.
    pub plaintext_hash: ChunkHash,
    /// Plaintext bytes.
    pub bytes: u64,
    /// Who stored it.
    pub owner: usize,
}

/// The plaintext of file number `number` of a run: deterministic, so it need not be kept.
pub fn file_bytes(seed: u64, number: usize, size_bytes: u64) -> Vec<u8> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0xf11e ^ (number as u64) << 20);
    let mut bytes = vec![0u8; size_bytes as usize];
    rng.fill_bytes(&mut bytes);
    bytes
}

/// Stores `files` files spread evenly over `seconds` from random running participants.
/// Returns the ones whose store succeeded, and how many failed.
pub async fn store_files(
    directory: &Directory,
    seed: u64,
    files: usize,
    size_bytes: u64,
    seconds: f64,
    rng: &mut StdRng,
) -> (Vec<StoredFile>, usize) {
    let mut stored = Vec::new();
    let mut failed = 0;
    let start = Instant::now();
    for number in 0..files {
        wait_for_turn(start, seconds, number, files).await;
        let Some((owner, node)) = pick_participant(directory, rng) else {
            failed += 1;
            continue;
        };
        let bytes = file_bytes(seed, number, size_bytes);
        let plaintext_hash = ChunkHash::of(&bytes);
        match tokio::time::timeout(STORE_TIMEOUT, node.store(bytes)).await {
            Ok(Ok(receipt)) => stored.push(StoredFile {
                file_id: receipt.file_id,
                plaintext_hash,
                bytes: size_bytes,
                owner,
            }),
            _ => failed += 1,
        }
    }
    (stored, failed)
}

/// A record that arrived in a member's private database (the sensor feed), by member and key.
pub type Ingested = (usize, node::RecordKey);

/// The sensor feed: `records` small readings arriving in random running participants' private
/// databases, spread evenly over `seconds`; the nodes share them on their own. Returns the
/// accepted ones and how many could not be delivered (nobody up, or refused).
pub async fn sensor_feed(
    directory: &Directory,
    failing_disks: &crate::world::FailingDisks,
    records: usize,
    seconds: f64,
    rng: &mut StdRng,
) -> (Vec<Ingested>, usize) {
    let mut ingested = Vec::new();
    let mut refused = 0;
    let start = Instant::now();
    for number in 0..records {
        wait_for_turn(start, seconds, number, records).await;
        let Some((member, node)) = pick_participant(directory, rng) else {
            refused += 1;
            continue;
        };
        let mut reading = vec![0u8; 2048];
        rng.fill_bytes(&mut reading);
        let stream = format!("sensor/truck-{}", member + 1);
        // A record the node accepted is durable: from here on it must be shared, crash or not.
        match node.ingest(&stream, &reading) {
            Ok(key) => ingested.push((member, key)),
            // Its disk fails right now (an injected fault): refusing the reading is right, and
            // the sender hears it. Any other refusal is a failure.
            Err(error)
                if format!("{error:?}").contains(node::INJECTED_FAILURE)
                    && lock(failing_disks).contains(&member) => {}
            Err(_) => refused += 1,
        }
    }
    (ingested, refused)
}
