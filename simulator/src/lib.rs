//! The deterministic simulator: many copies of the real node library (the one the
//! `blocktorrent` binary runs) in one process, on one paused current-thread tokio runtime whose
//! clock jumps from timer to timer, over a simulated network ([`net`]) and in-memory disks
//! ([`node::MemoryDisk`]), with faults ([`faults`]), open-loop workloads ([`workload`]),
//! checkers outside the code under test ([`check`]) and a Caliper-style report ([`report`]).
//!
//! A run: start the consortium; a *safety phase* of `duration` virtual seconds with faults on,
//! while transactions are sent at each rate of the sweep and files are stored; heal everything;
//! a *liveness phase* in which a probe transaction must commit, every member must catch up and
//! the auditor must recreate stored files, each within a bound; then the checkers. Every random
//! choice comes from the seed (the network's, the faults', the workloads' and each node's RNG
//! are derived from it), compute runs inline, and the same seed and flags give the same trace
//! hash.

pub mod check;
pub mod error;
pub mod faults;
pub mod net;
pub mod report;
pub mod swarm;
pub mod workload;
pub mod world;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::StdRng;
use sha3::{Digest, Sha3_256};
use tokio::time::Instant;

pub use error::SimError;
pub use faults::Faults;
pub use net::LinkConfig;
pub use report::Report;

use crate::check::{Check, acknowledged_on_chain, chains_agree, counted, read_chains};
use crate::net::SimNetwork;
use crate::report::Files;
use crate::workload::{Acknowledged, StoredFile, TableFactory, run_round, store_files};
use crate::world::World;
use node::caliper::{Latency, Round};

/// Virtual seconds allowed for the first leader.
const LEADER_BOUND: Duration = Duration::from_secs(30);
/// Virtual seconds allowed for each step of the liveness phase.
const LIVENESS_BOUND: Duration = Duration::from_secs(60);

/// What to simulate.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Seeds every random choice.
    pub seed: u64,
    /// Consortium size (the last member is the auditor).
    pub members: usize,
    /// Virtual seconds of the safety phase.
    pub duration_secs: u64,
    /// Faults on during the safety phase.
    pub faults: Faults,
    /// Send rates of the transaction sweep (each gets an equal share of the safety phase).
    pub tx_rates: Vec<u32>,
    /// Files stored during the safety phase.
    pub files: usize,
    /// Size of each file.
    pub file_size_bytes: u64,
    /// Stored files the auditor recreates in the liveness phase.
    pub audits: usize,
    /// Sensor readings arriving in members' private databases during the safety phase.
    pub sensor_records: usize,
    /// Chunk size of the consortium.
    pub chunk_size_bytes: u32,
    /// How links behave when no fault is on.
    pub links: LinkConfig,
    /// Owner counts of the swarm experiment (fetch time from 1 owner against many); none to
    /// skip it.
    pub swarm_owners: Vec<usize>,
    /// Size of the swarm experiment's file.
    pub swarm_file_size_bytes: u64,
    /// Per-link bandwidth cap of the swarm experiment.
    pub swarm_bandwidth_bytes_per_s: u64,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            seed: 1,
            members: 16,
            duration_secs: 30,
            faults: Faults::default(),
            tx_rates: vec![25, 50, 100],
            files: 4,
            file_size_bytes: 1 << 20,
            audits: 4,
            sensor_records: 8,
            chunk_size_bytes: 64 * 1024,
            links: LinkConfig::default(),
            swarm_owners: Vec::new(),
            swarm_file_size_bytes: 16 << 20,
            swarm_bandwidth_bytes_per_s: 12_500_000,
        }
    }
}

impl SimConfig {
    /// Refuses configurations that cannot run.
    pub fn validate(&self) -> Result<(), SimError> {
        let bad = |what: String| Err(SimError::Config(what));
        if !(3..=1_000).contains(&self.members) {
            return bad(format!("--members must be 3..=1000, not {}", self.members));
        }
        if !(1..=86_400).contains(&self.duration_secs) {
            return bad("--duration must be 1..=86400 virtual seconds".into());
        }
        let per_round = self.duration_secs as f64 / self.tx_rates.len().max(1) as f64;
        if self
            .tx_rates
            .iter()
            .any(|rate| f64::from(*rate) * per_round > 10_000_000.0)
        {
            return bad("a round may send at most 10,000,000 transactions".into());
        }
        if self
            .tx_rates
            .iter()
            .any(|rate| *rate == 0 || *rate > 100_000)
        {
            return bad("every --tx-rate must be 1..=100000 per second".into());
        }
        if self.audits > self.files {
            return bad(format!(
                "--audits ({}) cannot exceed --files ({})",
                self.audits, self.files
            ));
        }
        if self.file_size_bytes > 1 << 30 || self.swarm_file_size_bytes > 1 << 30 {
            return bad("a simulated file holds at most 1 GiB".into());
        }
        if self
            .swarm_owners
            .iter()
            .any(|owners| !(1..=64).contains(owners))
        {
            return bad("every --swarm-owners count must be 1..=64".into());
        }
        if self.swarm_file_size_bytes == 0 {
            return bad("--swarm-file-size must be at least 1 byte".into());
        }
        if self.swarm_bandwidth_bytes_per_s == 0 {
            return bad("--bandwidth must be above 0".into());
        }
        Ok(())
    }

    /// The command line that repeats this run.
    pub fn command_line(&self) -> String {
        let rates: Vec<String> = self.tx_rates.iter().map(u32::to_string).collect();
        let mut line = format!(
            "blocktorrent-sim --seed {} --members {} --duration {} --faults {} --tx-rate {} --files {} --file-size {} --audits {} --sensor-records {}",
            self.seed,
            self.members,
            self.duration_secs,
            self.faults,
            rates.join(","),
            self.files,
            self.file_size_bytes,
            self.audits,
            self.sensor_records
        );
        if !self.swarm_owners.is_empty() {
            let owners: Vec<String> = self.swarm_owners.iter().map(usize::to_string).collect();
            line += &format!(
                " --swarm-owners {} --swarm-file-size {} --bandwidth {}",
                owners.join(","),
                self.swarm_file_size_bytes,
                self.swarm_bandwidth_bytes_per_s
            );
        }
        line
    }
}

/// Runs one simulation to its report. `progress` hears what phase the run is in.
pub fn run(config: &SimConfig, progress: &mut dyn FnMut(&str)) -> Result<Report, SimError> {
    config.validate()?;
    count_panics();
    let started = std::time::Instant::now();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .map_err(|source| SimError::Io {
            path: "tokio runtime".into(),
            source,
        })?;
    let mut report = runtime.block_on(simulate(config, progress))?;
    report.real_s = started.elapsed().as_secs_f64();
    Ok(report)
}

thread_local! {
    /// Panics on this thread (a run owns its thread: one current-thread runtime).
    static PANICS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Counts panics per thread, then reports them as before. tokio catches a panic in a spawned
/// task, and node code runs inside the simulator's tasks (compute is inline): without this a
/// panic could end in a green run.
fn count_panics() {
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.with(|count| count.set(count.get() + 1));
            previous(info);
        }));
    });
    PANICS.with(|count| count.set(0));
}

fn panics_since_start() -> u64 {
    PANICS.with(std::cell::Cell::get)
}

/// Derives the seed of one part of the run.
fn part_seed(seed: u64, part: u64) -> u64 {
    seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ part
}

async fn simulate(config: &SimConfig, progress: &mut dyn FnMut(&str)) -> Result<Report, SimError> {
    let start = Instant::now();
    let network = SimNetwork::new(part_seed(config.seed, 1), config.links.clone());
    let mut world = World::new(
        config.seed,
        config.members,
        config.chunk_size_bytes,
        None,
        network,
    )?;
    let mut fault_rng = StdRng::seed_from_u64(part_seed(config.seed, 2));
    let bad_share_holder = config.faults.bad_shares.then(|| {
        use rand::RngExt;
        fault_rng.random_range(0..world.auditor())
    });
    if let Some(holder) = bad_share_holder {
        world.release_bad_shares(holder);
    }
    progress(&format!("starting {} members", config.members));
    for index in 0..world.len() {
        world.start(index)?;
    }
    wait_for_leader(&world).await?;
    let liar = config.faults.corrupt.then(|| {
        use rand::RngExt;
        fault_rng.random_range(0..world.auditor())
    });
    if let Some(liar) = liar {
        world.network.set_liar(world.peer(liar), true);
    }

    progress("safety phase: workloads with faults");
    let safety_end = Instant::now() + Duration::from_secs(config.duration_secs);
    let acknowledged: Acknowledged = Arc::new(Mutex::new(Vec::new()));
    let transactions = tokio::spawn(sweep(
        config.clone(),
        world.directory(),
        world.clock(),
        TableFactory::new(world.consortium.clone(), part_seed(config.seed, 3)),
        acknowledged.clone(),
    ));
    let files = {
        let directory = world.directory();
        let (seed, count, size) = (config.seed, config.files, config.file_size_bytes);
        let seconds = config.duration_secs as f64;
        tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(part_seed(seed, 4));
            store_files(&directory, seed, count, size, seconds, &mut rng).await
        })
    };
    let sensors = {
        let (directory, failing_disks) = (world.directory(), world.failing_disks());
        let (seed, count) = (config.seed, config.sensor_records);
        let seconds = config.duration_secs as f64;
        tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(part_seed(seed, 6));
            workload::sensor_feed(&directory, &failing_disks, count, seconds, &mut rng).await
        })
    };
    let faults_injected = faults::inject(
        &mut world,
        config.faults,
        &config.links,
        safety_end,
        &mut fault_rng,
    )
    .await?;
    // Liveness is measured from the moment everything healed, while the workloads' stragglers
    // still drain.
    progress("liveness phase: healed; probe, catch-up and audits");
    let healed = Instant::now();
    let mut checks = liveness(&world).await;
    let mut crashed_workloads = Vec::new();
    let rounds = transactions.await.unwrap_or_else(|_| {
        crashed_workloads.push("the transaction sweep");
        Vec::new()
    });
    let (mut stored, store_failed) = files.await.unwrap_or_else(|_| {
        crashed_workloads.push("the file stores");
        (Vec::new(), 0)
    });
    // A store fails when a push meets a crashed, cut-off or lossy owner (and says so). If the
    // faults failed every one, store one now that everything has healed: the audits then
    // check the store path's liveness too, instead of passing on nothing.
    if config.audits > 0 && stored.is_empty() {
        stored.extend(store_after_healing(&world, config).await);
    }
    let (ingested, ingest_failed) = sensors.await.unwrap_or_else(|_| {
        crashed_workloads.push("the sensor feed");
        (Vec::new(), 0)
    });
    let (files, audit_check) = audit(&world, &stored, store_failed, config).await;
    checks.push(audit_check);
    checks.push(
        sensor_records_shared(
            &world,
            &ingested,
            ingest_failed,
            healed + 2 * LIVENESS_BOUND,
        )
        .await,
    );
    if let Some(liar) = liar {
        let liar_name = world.consortium.members[liar].name.clone();
        let wrongly: Vec<&String> = files
            .lying_peers
            .iter()
            .filter(|n| **n != liar_name)
            .collect();
        checks.push(counted(
            "only the member that corrupts chunks is blamed for it",
            files.lying_peers.len() - wrongly.len(),
            wrongly.len(),
            wrongly.first().map(|name| format!("{name} was blamed")),
        ));
    }
    if let Some(holder) = bad_share_holder {
        checks.push(bad_shares_caught(&world, &stored, &files, holder).await);
    }
    let panics = panics_since_start();
    checks.push(counted(
        "no code panicked and no workload task died",
        1,
        usize::from(panics > 0 || !crashed_workloads.is_empty()),
        Some(format!(
            "{panics} panics; workloads that died: {}",
            crashed_workloads.join(", ")
        )),
    ));
    let (heads, chain) = read_chains(&world).await;
    checks.insert(0, chains_agree(&heads, &chain));
    let acknowledged = acknowledged
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    checks.insert(1, acknowledged_on_chain(&acknowledged, &chain));
    let virtual_s = start.elapsed().as_secs_f64();
    let mut trace = world.network.trace_hash().to_be_bytes().to_vec();
    for (index, height, head) in &heads {
        trace.extend_from_slice(&(*index as u64).to_be_bytes());
        trace.extend_from_slice(&height.to_be_bytes());
        trace.extend_from_slice(head.as_bytes());
    }
    let trace_hash = keyshare::ChunkHash::of(&trace).to_string();
    world.shutdown().await;
    let network = world.network.stats();
    let swarm = if config.swarm_owners.is_empty() {
        Vec::new()
    } else {
        progress("swarm experiment: one owner against many");
        swarm::experiment(
            config.seed,
            &config.swarm_owners,
            config.swarm_file_size_bytes,
            config.chunk_size_bytes,
            config.swarm_bandwidth_bytes_per_s,
        )
        .await?
    };
    let ok = checks.iter().all(|check| check.ok);
    Ok(Report {
        seed: config.seed,
        members: config.members,
        duration_s: config.duration_secs,
        faults: config.faults.to_string(),
        rounds: rounds
            .iter()
            .map(|r| {
                let name = format!("register-file@{}", r.rate_tps);
                Round::of(name, r.rate_tps, r.seconds, &r.outcomes, r.span_s)
            })
            .collect(),
        files,
        faults_injected,
        network,
        swarm,
        checks,
        ok,
        trace_hash,
        virtual_s,
        real_s: 0.0,
        reproduce: config.command_line(),
    })
}

pub(crate) async fn wait_for_leader(world: &World) -> Result<(), SimError> {
    let deadline = Instant::now() + LEADER_BOUND;
    while Instant::now() < deadline {
        if let Some(node) = world.node(0)
            && node.leader_id().await.ok().flatten().is_some()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(SimError::NoLeader {
        seconds: LEADER_BOUND.as_secs(),
    })
}

async fn sweep(
    config: SimConfig,
    directory: workload::Directory,
    clock: node::Clock,
    factory: TableFactory,
    acknowledged: Acknowledged,
) -> Vec<workload::RoundResult> {
    let factory = Arc::new(Mutex::new(factory));
    let seconds = config.duration_secs as f64 / config.tx_rates.len().max(1) as f64;
    let start = Instant::now();
    // Round `i` starts at `i × seconds` whatever the stragglers of the round before do: the
    // sweep stays open loop and inside the safety phase.
    let mut rounds = tokio::task::JoinSet::new();
    for (number, rate) in config.tx_rates.iter().copied().enumerate() {
        tokio::time::sleep_until(start + Duration::from_secs_f64(seconds * number as f64)).await;
        let (directory, factory, acknowledged, clock) = (
            directory.clone(),
            factory.clone(),
            acknowledged.clone(),
            clock.clone(),
        );
        let mut rng = StdRng::seed_from_u64(part_seed(config.seed, 5 + ((number as u64) << 8)));
        rounds.spawn(async move {
            let round = run_round(
                &directory,
                &factory,
                &acknowledged,
                &clock,
                rate,
                seconds,
                &mut rng,
            )
            .await;
            (number, round)
        });
    }
    let mut results: Vec<(usize, workload::RoundResult)> = rounds.join_all().await;
    results.sort_by_key(|(number, _)| *number);
    results.into_iter().map(|(_, round)| round).collect()
}

/// After healing: a probe transaction commits, and every member reaches its height.
async fn liveness(world: &World) -> Vec<Check> {
    let mut factory = TableFactory::new(world.consortium.clone(), 0x9_0be);
    let deadline = Instant::now() + LIVENESS_BOUND;
    // A member that just restarted may skip the probe's block by installing a snapshot and
    // then cannot know its outcome (it says so): it sends another probe.
    let probe = loop {
        let Some(node) = world.node(0) else {
            break Err("member-1 is not running".to_owned());
        };
        let Some(body) = factory.next(0, (world.clock())()) else {
            break Err("no probe transaction could be built".to_owned());
        };
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, node.submit(body)).await {
            Ok(Ok(receipt)) => break Ok(receipt),
            Ok(Err(node::Error::OutcomeUnknown { .. })) => {}
            // Its ledger is reopening after a disk error: ask again shortly.
            Ok(Err(node::Error::LedgerDown { .. })) => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Ok(Err(error)) => break Err(format!("the probe transaction failed: {error}")),
            Err(_) => {
                break Err(format!(
                    "a probe transaction did not commit within {} virtual s",
                    LIVENESS_BOUND.as_secs()
                ));
            }
        }
    };
    let probe = match probe {
        Ok(probe) => probe,
        Err(reason) => {
            return vec![counted(
                "the ledger commits again after faults heal",
                0,
                1,
                Some(reason),
            )];
        }
    };
    let deadline = Instant::now() + LIVENESS_BOUND;
    let mut behind = Vec::new();
    for index in 0..world.len() {
        let Some(node) = world.node(index) else {
            behind.push(format!("member-{}", index + 1));
            continue;
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if node.wait_for_height(probe.height, left).await.is_err() {
            behind.push(format!("member-{}", index + 1));
        }
    }
    vec![counted(
        "the ledger commits again after faults heal and every member catches up",
        world.len() - behind.len(),
        behind.len(),
        behind
            .first()
            .map(|name| format!("{name} did not reach block {} in time", probe.height)),
    )]
}

/// Every sensor reading a member accepted is shared — each as its own file, once, registered
/// complete with its shares on the member's replica — by `deadline`, however often its member
/// crashed meanwhile. A reading the node refused counts as a failure.
async fn sensor_records_shared(
    world: &World,
    ingested: &[workload::Ingested],
    ingest_failed: usize,
    deadline: Instant,
) -> Check {
    let name = "every ingested record is shared, once, after faults heal";
    let mut files = std::collections::BTreeSet::new();
    let mut first_bad = (ingest_failed > 0).then(|| format!("{ingest_failed} readings refused"));
    for (member, key) in ingested {
        let shared = loop {
            let record = world
                .node(*member)
                .and_then(|node| node.record_shared(key).ok().flatten());
            if record.is_some() || Instant::now() >= deadline {
                break record;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let on_chain = match (&shared, world.node(*member)) {
            (Some(record), Some(node)) => node.file(record.file_id).await.is_ok_and(|file| {
                file.owner == world.consortium.members[*member].id
                    && file.is_complete()
                    && file.deposits.is_some()
            }),
            _ => false,
        };
        match shared {
            Some(record) if !on_chain => {
                first_bad.get_or_insert(format!(
                    "file {} is marked shared but not complete on the ledger",
                    record.file_id
                ));
            }
            Some(record) if files.insert(record.file_id) => {}
            Some(record) => {
                first_bad.get_or_insert(format!("file {} shared for two records", record.file_id));
            }
            None => {
                first_bad.get_or_insert(format!(
                    "member-{}'s record {}/{} not shared in time",
                    member + 1,
                    key.stream,
                    key.seq
                ));
            }
        }
    }
    let bad = ingested.len() - files.len() + ingest_failed;
    counted(name, files.len(), bad, first_bad)
}

/// The auditor recreates up to `audits` stored files, each compared with its original.
async fn audit(
    world: &World,
    stored: &[StoredFile],
    store_failed: usize,
    config: &SimConfig,
) -> (Files, Check) {
    let name = "every recreated file equals its original, within the liveness bound";
    let audits = config.audits;
    let mut files = Files {
        stored: stored.len(),
        store_failed,
        ..Files::default()
    };
    // With no faults every store must succeed; with faults at least one of those audited must.
    let vacuous = if config.faults == Faults::default() && store_failed > 0 {
        Some(format!("{store_failed} stores failed with no fault on"))
    } else if audits > 0 && stored.is_empty() {
        Some("no file could be stored, not even after the faults healed".to_owned())
    } else {
        None
    };
    if let Some(reason) = vacuous {
        return (files, counted(name, 0, 1, Some(reason)));
    }
    let Some(auditor) = world.node(world.auditor()).cloned() else {
        return (
            files,
            counted(name, 0, 1, Some("the auditor is not running".into())),
        );
    };
    let mut latencies = Vec::new();
    let mut first_bad = None;
    let mut lying = std::collections::BTreeSet::new();
    let mut bad_shares = std::collections::BTreeSet::new();
    for file in stored.iter().take(audits) {
        files.audited += 1;
        let started = Instant::now();
        let outcome = tokio::time::timeout(LIVENESS_BOUND, recreate(&auditor, file)).await;
        match outcome {
            Ok(Ok((hash, receipt))) if hash == file.plaintext_hash => {
                files.audit_ok += 1;
                latencies.push(started.elapsed().as_secs_f64());
                lying.extend(receipt.lying_peers);
                bad_shares.extend(receipt.bad_shares);
            }
            Ok(Ok(_)) => {
                first_bad.get_or_insert(format!("file {} came back different", file.file_id));
            }
            Ok(Err(error)) => {
                first_bad.get_or_insert(format!("file {}: {error}", file.file_id));
            }
            Err(_) => {
                first_bad.get_or_insert(format!(
                    "file {} not recreated within {} virtual s",
                    file.file_id,
                    LIVENESS_BOUND.as_secs()
                ));
            }
        }
    }
    files.audit_latency_s = Latency::of(latencies);
    files.lying_peers = lying.into_iter().collect();
    files.bad_share_holders = bad_shares.into_iter().collect();
    let check = counted(
        name,
        files.audit_ok,
        files.audited - files.audit_ok,
        first_bad,
    );
    (files, check)
}

/// Every released share that fails verification is the Byzantine holder's, and the auditor
/// named no one else. The simulator checks the releases itself: it opens every share released
/// for the audited files with the auditor's key and verifies it against the commitments on
/// chain. What the Byzantine holder released must fail (it holds no share of a file it owns).
async fn bad_shares_caught(
    world: &World,
    stored: &[StoredFile],
    files: &Files,
    holder: usize,
) -> Check {
    let name = "every share that fails verification was caught, its holder named, no one else";
    let byzantine = world.consortium.members[holder].name.clone();
    let Some(auditor) = world.node(world.auditor()) else {
        return counted(name, 0, 1, Some("the auditor is not running".into()));
    };
    let sealing = world.keys(world.auditor()).sealing;
    let mut failing = std::collections::BTreeSet::new();
    let (mut checked, mut released_by_byzantine) = (0, 0);
    for file in stored.iter().take(files.audited) {
        let (Ok(record), Ok(requests)) = (
            auditor.file(file.file_id).await,
            auditor.requests_for(file.file_id).await,
        ) else {
            continue;
        };
        for request in requests {
            let Ok(Some(access)) = auditor.access_request(request).await else {
                continue;
            };
            for (member, sealed) in access.released() {
                checked += 1;
                released_by_byzantine +=
                    usize::from(*member == world.consortium.members[holder].id);
                let good = node::release_context(&record, member, &request)
                    .and_then(|context| keyshare::open_share(sealed, &sealing, &context).ok())
                    .is_some_and(|share| {
                        keyshare::verify(&share, &record.table.commitments).is_ok()
                    });
                if !good {
                    let entry = world.consortium.members.iter().find(|m| m.id == *member);
                    failing.insert(entry.map_or_else(|| member.to_string(), |m| m.name.clone()));
                }
            }
        }
    }
    let wrongly_named: Vec<&String> = files
        .bad_share_holders
        .iter()
        .filter(|name| !failing.contains(*name))
        .collect();
    let others_failing: Vec<&String> = failing.iter().filter(|n| **n != byzantine).collect();
    let problem = if let Some(name) = wrongly_named.first() {
        Some(format!("the auditor named {name}, whose shares verify"))
    } else if let Some(name) = others_failing.first() {
        Some(format!("{name} released a share that does not verify"))
    } else if released_by_byzantine > 0 && !failing.contains(&byzantine) {
        Some(format!("{byzantine} released shares that verify"))
    } else {
        None
    };
    counted(name, checked, usize::from(problem.is_some()), problem)
}

/// Stores one file from the first running participant, within the liveness bound.
async fn store_after_healing(world: &World, config: &SimConfig) -> Option<StoredFile> {
    let (owner, node) = (0..world.auditor()).find_map(|i| world.node(i).map(|n| (i, n.clone())))?;
    let bytes = workload::file_bytes(config.seed, config.files, config.file_size_bytes);
    let plaintext_hash = keyshare::ChunkHash::of(&bytes);
    let receipt = tokio::time::timeout(LIVENESS_BOUND, node.store(bytes))
        .await
        .ok()?
        .ok()?;
    Some(StoredFile {
        file_id: receipt.file_id,
        plaintext_hash,
        bytes: config.file_size_bytes,
        owner,
    })
}

/// Requests, fetches and hashes one file as the auditor.
async fn recreate(
    auditor: &world::SimNode,
    file: &StoredFile,
) -> Result<(keyshare::ChunkHash, node::FetchReceipt), node::Error> {
    // The deposit may still be on its way to the auditor's replica.
    let deadline = Instant::now() + LIVENESS_BOUND;
    while auditor
        .file(file.file_id)
        .await
        .map_or(true, |record| record.deposits.is_none())
    {
        if Instant::now() >= deadline {
            return Err(node::Error::UnknownFile { file: file.file_id });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    auditor
        .request(file.file_id, "simulated audit".into())
        .await?;
    let (sink, mut events) = tokio::sync::mpsc::channel(16);
    let hashing = async {
        let mut hasher = Sha3_256::new();
        while let Some(event) = events.recv().await {
            if let node::FetchEvent::Data(bytes) = event {
                hasher.update(&bytes);
            }
        }
        keyshare::ChunkHash::from_bytes(hasher.finalize().into())
    };
    let (receipt, hash) = tokio::join!(auditor.fetch(file.file_id, LIVENESS_BOUND, sink), hashing);
    Ok((hash, receipt?))
}
