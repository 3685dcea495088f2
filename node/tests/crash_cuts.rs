//! Crash consistency of a node's three databases — ledger, chunk store, private database — on
//! [`MemoryDisk`], which keeps what was synced apart from what was only written. Each workload
//! runs once to count its disk operations, then again with the power cut before each of them in
//! turn (every one, up to a bound, then evenly spread). After each cut the disk is taken twice:
//! as synced, and torn (each unsynced write kept or lost at random, from a fixed seed). Every
//! database must open again — after [`node::discard_unfinished_database`], as a node's start
//! does — and everything the workload was told is durable must be there.
#![allow(clippy::unwrap_used, clippy::print_stderr)]

mod common;

use std::collections::BTreeMap;

use common::{consortium, signing_key};
use keyshare::ChunkHash;
use ledger::{Replica, ReplicaConfig, Transaction, TxId};
use node::MemoryDisk;
use node::load::SmallFiles;
use overlay::{ChunkStore, PeerId};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

/// Cut points tried per workload at most.
const MAX_CUTS: u64 = 1_000;
/// Torn variants of each cut.
const TORN_PER_CUT: u64 = 2;

/// Every cut point from 0 to `total` if there are at most [`MAX_CUTS`], else that many spread
/// evenly over them (the first and last included).
fn cut_points(total: u64) -> Vec<u64> {
    if total <= MAX_CUTS {
        return (0..=total).collect();
    }
    (0..MAX_CUTS).map(|i| i * total / (MAX_CUTS - 1)).collect()
}

/// Runs `workload` on a fresh disk for each cut point and hands `check` each disk a restarted
/// machine may find, with what the workload acknowledged. Returns the number of cut points.
fn over_every_cut<A>(
    workload: impl Fn(&MemoryDisk) -> A,
    check: impl Fn(MemoryDisk, &A, &str),
) -> u64 {
    let full = MemoryDisk::default();
    workload(&full);
    let cuts = cut_points(full.ops());
    for &cut in &cuts {
        let disk = MemoryDisk::default();
        disk.cut_power_after(cut);
        let acknowledged = workload(&disk);
        // As a node's start does before it opens its databases.
        let restarted = |disk: MemoryDisk| {
            node::discard_unfinished_database(&disk).unwrap();
            disk
        };
        let synced = restarted(disk.after_crash());
        check(synced, &acknowledged, &format!("cut at op {cut}, synced"));
        for seed in 0..TORN_PER_CUT {
            let mut rng = StdRng::seed_from_u64(cut * 31 + seed);
            let torn = restarted(disk.after_torn_crash(&mut rng));
            check(
                torn,
                &acknowledged,
                &format!("cut at op {cut}, torn {seed}"),
            );
        }
    }
    eprintln!(
        "{} operations, {} cut points, {} restarts checked",
        full.ops(),
        cuts.len(),
        cuts.len() as u64 * (1 + TORN_PER_CUT)
    );
    cuts.len() as u64
}

#[test]
fn the_chunk_store_keeps_every_acknowledged_chunk_across_power_cuts() {
    let mut rng = StdRng::seed_from_u64(7);
    let chunks: Vec<(ChunkHash, Vec<u8>)> = (0..80)
        .map(|i| {
            let len = [1_000, 20_000, 90_000][i % 3] + i;
            let bytes: Vec<u8> = (0..len).map(|_| rng.random()).collect();
            (ChunkHash::of(&bytes), bytes)
        })
        .collect();
    let pusher = PeerId::from_bytes([9; 32]);
    let cuts = over_every_cut(
        |disk| {
            let mut acknowledged = Vec::new();
            let Ok(store) = ChunkStore::open_backend(disk.clone(), u64::MAX) else {
                return acknowledged;
            };
            for (hash, bytes) in &chunks {
                if store.put(&pusher, hash, bytes).is_err() {
                    break;
                }
                acknowledged.push(*hash);
            }
            acknowledged
        },
        |disk, acknowledged: &Vec<ChunkHash>, cut| {
            let store = ChunkStore::open_backend(disk, u64::MAX)
                .unwrap_or_else(|error| panic!("{cut}: the chunk store does not open: {error}"));
            for hash in acknowledged {
                let bytes = store.get(hash).unwrap_or_else(|e| panic!("{cut}: {e}"));
                let bytes = bytes.unwrap_or_else(|| panic!("{cut}: acknowledged chunk lost"));
                assert_eq!(ChunkHash::of(&bytes), *hash, "{cut}: chunk changed");
            }
        },
    );
    assert!(cuts > 100, "only {cuts} cut points");
}

#[test]
fn the_private_database_keeps_every_acknowledged_record_across_power_cuts() {
    let mut rng = StdRng::seed_from_u64(8);
    let records: Vec<Vec<u8>> = (0..50)
        .map(|i| {
            let len = [10, 5_000, 150_000][i % 3];
            (0..len).map(|_| rng.random()).collect()
        })
        .collect();
    let cuts = over_every_cut(
        |disk| {
            let mut acknowledged = Vec::new();
            let Ok(db) = node::PrivateDb::open_backend(disk.clone()) else {
                return acknowledged;
            };
            for (i, record) in records.iter().enumerate() {
                match db.append(if i % 2 == 0 { "sensors" } else { "files" }, record) {
                    Ok(key) => acknowledged.push((key, i)),
                    Err(_) => break,
                }
            }
            acknowledged
        },
        |disk, acknowledged: &Vec<(node::RecordKey, usize)>, cut| {
            let db = node::PrivateDb::open_backend(disk).unwrap_or_else(|error| {
                panic!("{cut}: the private database does not open: {error}")
            });
            for (key, i) in acknowledged {
                let record = db.record(key).unwrap_or_else(|e| panic!("{cut}: {e}"));
                assert_eq!(record.as_ref(), Some(&records[*i]), "{cut}: record {i}");
            }
        },
    );
    assert!(cuts > 100, "only {cuts} cut points");
}

/// A one-voter ledger: member-1 orders alone, so one replica commits.
fn one_voter() -> (node::config::Consortium, ledger::Genesis) {
    let mut consortium = consortium(4);
    consortium.voters = 1;
    let genesis = consortium.genesis();
    (consortium, genesis)
}

/// Snapshots every few entries, so the cuts land in every step of one: the body's pieces, the
/// descriptor, the log's compaction.
fn snapshotting() -> ReplicaConfig {
    ReplicaConfig {
        snapshot_interval_entries: 6,
        snapshot_log_percent: 0,
        ..ReplicaConfig::new(1)
    }
}

/// Polls `replica`, building a snapshot it hands out at once (as a node's pool would, later).
fn poll(replica: &mut Replica) -> Result<ledger::Effects, ledger::Error> {
    let mut effects = replica.poll()?;
    if let Some(job) = effects.snapshot.take() {
        replica.snapshot_built(job.build());
    }
    Ok(effects)
}

/// Opens the replica and drives it until it leads; `None` if the disk fails first.
fn leading_replica(genesis: &ledger::Genesis, disk: &MemoryDisk, now: &mut u64) -> Option<Replica> {
    let store = ledger::RedbStore::open_backend(disk.clone()).ok()?;
    let mut replica = Replica::open(genesis.clone(), snapshotting(), store).ok()?;
    for _ in 0..200 {
        if replica.is_leader() {
            return Some(replica);
        }
        *now += 100;
        replica.tick(*now);
        poll(&mut replica).ok()?;
    }
    None
}

#[test]
fn the_ledger_keeps_every_acknowledged_transaction_across_power_cuts() {
    let (consortium, genesis) = one_voter();
    let mut rng = StdRng::seed_from_u64(9);
    let owner = consortium.members[0].id;
    let files = SmallFiles::new(&consortium, owner, &mut rng).unwrap();
    let key = signing_key(4, 0);
    let txs: Vec<Transaction> = (1..=96u64)
        .map(|nonce| {
            let file = files.file_id(nonce, &mut rng);
            let table = files.table(file, nonce, &mut rng).unwrap();
            Transaction::sign(
                &key,
                &consortium.chain_id,
                nonce,
                ledger::Body::RegisterFile(table),
            )
        })
        .collect();
    // Acknowledged: committed and applied in a block the replica reported.
    let workload = |disk: &MemoryDisk| {
        let mut acknowledged: BTreeMap<TxId, u64> = BTreeMap::new();
        let mut now = 0;
        let Some(mut replica) = leading_replica(&genesis, disk, &mut now) else {
            return acknowledged;
        };
        for batch in txs.chunks(3) {
            for tx in batch {
                if replica.submit(tx.clone()).is_err() {
                    return acknowledged;
                }
            }
            for _ in 0..20 {
                now += 10;
                replica.tick(now);
                let Ok(effects) = poll(&mut replica) else {
                    return acknowledged;
                };
                for committed in effects.committed {
                    for id in committed.ids {
                        acknowledged.insert(id, committed.block.height);
                    }
                }
                if replica.pending_len() == 0 && !acknowledged.is_empty() {
                    break;
                }
            }
        }
        acknowledged
    };
    let cuts = over_every_cut(workload, |disk, acknowledged: &BTreeMap<TxId, u64>, cut| {
        // Restarted, the replica leads again and applies what its log committed (blocks are
        // rebuilt from the durable log; only the log must be synced before an ack).
        let mut now = 0;
        let mut replica = leading_replica(&genesis, &disk, &mut now)
            .unwrap_or_else(|| panic!("{cut}: the replica does not restart and lead"));
        for _ in 0..20 {
            now += 10;
            replica.tick(now);
            poll(&mut replica).unwrap_or_else(|e| panic!("{cut}: {e}"));
        }
        for (id, height) in acknowledged {
            let status = replica
                .store()
                .tx_status(id)
                .unwrap_or_else(|e| panic!("{cut}: {e}"))
                .unwrap_or_else(|| panic!("{cut}: acknowledged transaction lost"));
            assert_eq!(status.height, *height, "{cut}: moved to another block");
        }
        let files_on_chain = replica.state().files().count();
        assert!(
            files_on_chain >= acknowledged.len(),
            "{cut}: state behind its blocks"
        );
    });
    assert!(cuts > 100, "only {cuts} cut points");
    // The cuts fell among snapshots: an uncut run takes several.
    let disk = MemoryDisk::default();
    let acknowledged = workload(&disk);
    let mut now = 0;
    let replica = leading_replica(&genesis, &disk, &mut now).expect("the replica restarts");
    assert!(!acknowledged.is_empty());
    let (snapshot, applied) = (replica.snapshot_index(), replica.applied_index());
    assert!(
        snapshot > 0 && snapshot + 2 * 6 >= applied,
        "snapshot at {snapshot}, applied {applied}"
    );
}
