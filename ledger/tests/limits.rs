//! Bytes, not only counts: a backlog of the largest transactions becomes blocks that can be sent,
//! no replica ever emits a message larger than the frame cap (the harness checks every one), and
//! snapshots of a large state travel in bounded pieces, survive corrupt and lost pieces, and are
//! installed durably.

#![allow(clippy::unwrap_used)]

mod harness;

use harness::{Cluster, commit_all, default_config, register_file, small_snapshots};
use ledger::{
    Body, MAX_BLOCK_BYTES, MAX_MESSAGE_BYTES, MAX_TX_BYTES, Policy, ReplicaConfig, Transaction,
};

const SEED: u64 = 0xb17e5;

/// A policy that lets a free-text reason fill a whole transaction.
fn long_reasons() -> Policy {
    Policy {
        reason_max_bytes: MAX_TX_BYTES as u32,
        ..Policy::default()
    }
}

/// A transaction of exactly `MAX_TX_BYTES` encoded bytes, built by `body` from a reason.
fn largest(cluster: &mut Cluster, member: u64, body: impl Fn(String) -> Body) -> Transaction {
    let probe = cluster.sign(member, body(String::new()));
    cluster.nodes[member as usize - 1].next_nonce -= 1;
    // The reason's length prefix grows from one byte to three.
    let reason_bytes = MAX_TX_BYTES - probe.encode().len() - 2;
    let tx = cluster.sign(member, body("r".repeat(reason_bytes)));
    assert_eq!(tx.encode().len(), MAX_TX_BYTES);
    tx
}

/// `count` access requests on `file` by the auditor (member 3), each of the largest size.
fn largest_requests(
    cluster: &mut Cluster,
    file: keyshare::FileId,
    count: usize,
) -> Vec<Transaction> {
    (0..count)
        .map(|_| largest(cluster, 3, |reason| Body::RequestAccess { file, reason }))
        .collect()
}

#[test]
fn a_backlog_of_largest_transactions_commits_after_the_election() {
    let mut cluster = Cluster::with_policy(3, 3, SEED, default_config, long_reasons());
    assert!(
        cluster.leader().is_none(),
        "no leader before the first tick"
    );
    let ids: Vec<_> = (0..200u32)
        .map(|i| {
            let file = keyshare::FileId::from_bytes([(i % 256) as u8; 32]);
            let tx = largest(&mut cluster, 2, |reason| Body::ShareComplaint {
                file,
                reason,
            });
            cluster.replica_mut(1).submit(tx).unwrap()
        })
        .collect();
    cluster.run_until(3_000, |c| {
        ids.iter().all(|id| c.acknowledged.contains_key(id))
    });
    let target = cluster.replica(1).state().height();
    cluster.run_until_all_reach(500, target);
    cluster.assert_agree();
    cluster.assert_nothing_lost();
    let chain = cluster.chain(1);
    let txs: usize = chain.iter().map(|block| block.txs.len()).sum();
    assert_eq!(txs, 200);
    for block in &chain {
        let bytes: usize = block.txs.iter().map(|tx| tx.encode().len()).sum();
        assert!(
            bytes <= MAX_BLOCK_BYTES,
            "block {} holds {bytes} bytes",
            block.height
        );
    }
    // 50 MiB of transactions cannot be fewer than 13 blocks of at most 4 MiB.
    assert!(chain.len() >= 13, "{} blocks", chain.len());
    assert!(cluster.max_message_bytes <= MAX_MESSAGE_BYTES);
    assert!(
        cluster.max_message_bytes > 3 * MAX_BLOCK_BYTES / 4,
        "full blocks were sent"
    );
}

/// A snapshot every 12 entries however large the state, so the leader's latest holds it all.
fn large_state_config(id: u64) -> ReplicaConfig {
    ReplicaConfig {
        snapshot_interval_entries: 12,
        snapshot_log_percent: 0,
        ..ReplicaConfig::new(id)
    }
}

#[test]
fn a_far_behind_replica_catches_up_from_a_large_state_in_pieces() {
    const STATE_BYTES_MIN: u64 = 100 * 1024 * 1024;
    let mut cluster = Cluster::with_policy(3, 3, SEED, large_state_config, long_reasons());
    let leader = cluster.elect();
    let behind = if leader == 1 { 2 } else { 1 };
    let file = register_file(&mut cluster, leader, 1, &[1, 2], 1).file_id;
    let first_missed = cluster.replica(behind).state().height() + 1;
    cluster.isolate(behind);
    // The auditor (member 3) files access requests whose reasons fill whole transactions; each
    // stays in the contract state.
    let txs = largest_requests(&mut cluster, file, 420);
    commit_all(&mut cluster, leader, txs);
    // A snapshot takes effect in the leader's turn (on an idle ledger, 10 s after it came due),
    // once its body is written at its pace (100 MiB at 16 MiB/s).
    cluster.run_until(3_000, |c| {
        c.replica(leader).snapshot_body_bytes() >= STATE_BYTES_MIN
    });

    cluster.recover();
    let target = cluster.replica(leader).state().height();
    cluster.run_until(2_000, |c| c.replica(behind).state().height() >= target);
    // It caught up from a snapshot (the blocks before it were never sent), in bounded pieces.
    assert!(
        cluster
            .replica(behind)
            .store()
            .block(first_missed)
            .unwrap()
            .is_none()
    );
    assert!(cluster.replica(behind).snapshot_body_bytes() >= STATE_BYTES_MIN);
    assert!(cluster.sent_by_kind["snapshot-piece"] >= 100);
    assert!(cluster.max_message_bytes <= MAX_MESSAGE_BYTES);
    cluster.assert_agree();
    assert_eq!(cluster.replica(behind).state().requests().count(), 420);

    // The install was durable: a restart comes back to the same state.
    cluster.crash(behind);
    cluster.start(behind);
    cluster.assert_agree();
}

#[test]
fn lost_and_corrupt_snapshot_pieces_are_refused_and_asked_for_again() {
    let (mut cluster, leader, file) = three_with_a_file(small_snapshots);
    let behind = if leader == 1 { 2 } else { 1 };
    cluster.isolate(behind);
    for i in 0..40 {
        let tx = cluster.sign(
            3,
            Body::RequestAccess {
                file,
                reason: format!("audit {i}"),
            },
        );
        commit_all(&mut cluster, leader, vec![tx]);
    }
    // First every piece is lost: the transfer stalls, is aborted, and the leader offers again.
    cluster.drop_kinds.insert("snapshot-piece");
    cluster.recover();
    let target = cluster.replica(leader).state().height();
    cluster.run_until(3_000, |c| {
        c.sent_by_kind.get("snapshot-abort").copied().unwrap_or(0) >= 1
            && c.sent_by_kind.get("snapshot-offer").copied().unwrap_or(0) >= 2
    });
    assert!(cluster.replica(behind).state().height() < target);
    // Then two pieces arrive corrupt: each whole body is refused and fetched again.
    cluster.drop_kinds.clear();
    cluster.corrupt_pieces = 2;
    cluster.run_until(3_000, |c| c.replica(behind).state().height() >= target);
    assert_eq!(cluster.corrupt_pieces, 0);
    cluster.assert_agree();
    // And the replica goes on with ordinary replication.
    let tx = cluster.sign(
        3,
        Body::RequestAccess {
            file,
            reason: "after".into(),
        },
    );
    let id = commit_all(&mut cluster, leader, vec![tx])[0];
    cluster.run_until(200, |c| {
        c.replica(behind).store().tx_status(&id).unwrap().is_some()
    });
    cluster.assert_agree();
}

#[test]
fn a_forward_settled_while_away_is_reported_superseded_not_proposed_again() {
    let (mut cluster, leader, file) = three_with_a_file(small_snapshots);
    let via = if leader == 1 { 2 } else { 1 };
    let first_missed = cluster.replica(via).state().height() + 1;
    // `via` forwards a batch; the leader commits it, but nothing reaches `via` any more.
    cluster.drop(leader, via, 100);
    let forwarded: Vec<_> = (0..5)
        .map(|i| {
            let tx = cluster.sign(
                3,
                Body::RequestAccess {
                    file,
                    reason: format!("forwarded {i}"),
                },
            );
            cluster.replica_mut(via).submit(tx).unwrap()
        })
        .collect();
    cluster.replica_mut(via).flush();
    cluster.run_until(200, |c| {
        forwarded.iter().all(|id| c.acknowledged.contains_key(id))
    });
    // Enough blocks for the leader to compact its log past them.
    for i in 0..40 {
        let tx = cluster.sign(
            3,
            Body::RequestAccess {
                file,
                reason: format!("later {i}"),
            },
        );
        commit_all(&mut cluster, leader, vec![tx]);
    }
    cluster.recover();
    let target = cluster.replica(leader).state().height();
    cluster.run_until(1_000, |c| c.replica(via).state().height() >= target);
    assert!(
        cluster
            .replica(via)
            .store()
            .block(first_missed)
            .unwrap()
            .is_none(),
        "caught up by snapshot"
    );
    for id in &forwarded {
        assert!(cluster.superseded.contains(id), "{id} not reported");
    }
    // Well past the retry interval: none of them is proposed again.
    for _ in 0..500 {
        cluster.tick();
    }
    cluster.assert_agree();
    let chain = cluster.chain(leader);
    for id in &forwarded {
        let copies = chain
            .iter()
            .flat_map(|b| &b.txs)
            .filter(|tx| tx.id() == *id)
            .count();
        assert_eq!(copies, 1, "tx {id}");
    }
}

/// A snapshot allowed every 4 entries, however large the state.
fn every_4_entries(id: u64) -> ReplicaConfig {
    ReplicaConfig {
        snapshot_interval_entries: 4,
        snapshot_log_percent: 0,
        ..ReplicaConfig::new(id)
    }
}

/// A snapshot allowed every 4 entries once the log since the last holds as many bytes as it.
fn every_4_entries_and_its_size(id: u64) -> ReplicaConfig {
    ReplicaConfig {
        snapshot_log_percent: 100,
        ..every_4_entries(id)
    }
}

/// How many snapshots the leader took while `count` access requests committed one by one. Every
/// request stays in the state, so each snapshot's body is larger than the one before.
fn snapshots_taken(config: fn(u64) -> ReplicaConfig, count: u32) -> usize {
    let (mut cluster, leader, file) = three_with_a_file(config);
    let mut sizes = vec![cluster.replica(leader).snapshot_body_bytes()];
    for _ in 0..count {
        commit_requests(&mut cluster, leader, file, 1);
        sizes.push(cluster.replica(leader).snapshot_body_bytes());
    }
    sizes.dedup();
    cluster.assert_agree();
    sizes.len() - 1
}

#[test]
fn snapshots_grow_rarer_as_the_state_grows() {
    // Every 4 entries regardless of size: O(state) work per 4 entries, quadratic over the chain.
    let fixed = snapshots_taken(every_4_entries, 200);
    // Waiting for a log as large as the last body: the intervals grow with the state and the
    // snapshot work stays proportional to the log.
    let proportional = snapshots_taken(every_4_entries_and_its_size, 200);
    assert!(fixed >= 45, "{fixed} snapshots");
    // Rarer, but still taken: a replica whose snapshots stopped would hold its whole log.
    assert!(
        (3..=12).contains(&proportional),
        "{proportional} snapshots (fixed interval: {fixed})"
    );
}

/// Three voters under `config`, a leader elected and one file registered: where the snapshot
/// tests start.
fn three_with_a_file(config: fn(u64) -> ReplicaConfig) -> (Cluster, u64, keyshare::FileId) {
    three_with_a_file_as(config, false)
}

fn three_with_a_file_as(
    config: fn(u64) -> ReplicaConfig,
    hold_jobs: bool,
) -> (Cluster, u64, keyshare::FileId) {
    let mut cluster = Cluster::with_config(3, 3, SEED, config);
    cluster.hold_snapshots = hold_jobs;
    let leader = cluster.elect();
    let file = register_file(&mut cluster, leader, 1, &[1, 2], 1).file_id;
    (cluster, leader, file)
}

/// [`three_with_a_file`], with every snapshot job held from the start.
fn three_with_a_file_holding_jobs(
    config: fn(u64) -> ReplicaConfig,
) -> (Cluster, u64, keyshare::FileId) {
    three_with_a_file_as(config, true)
}

/// The snapshot job replica `id` handed out and the harness held.
fn take_held(cluster: &mut Cluster, id: u64) -> ledger::SnapshotJob {
    let position = cluster
        .held_snapshots
        .iter()
        .position(|(holder, _)| *holder == id)
        .unwrap_or_else(|| panic!("replica {id} handed out no job"));
    cluster.held_snapshots.remove(position).1
}

/// `count` access requests on `file`, committed one by one through `via`.
fn commit_requests(cluster: &mut Cluster, via: u64, file: keyshare::FileId, count: u32) {
    for i in 0..count {
        let tx = cluster.sign(
            3,
            Body::RequestAccess {
                file,
                reason: format!("audit {i}"),
            },
        );
        commit_all(cluster, via, vec![tx]);
    }
}

#[test]
fn blocks_commit_while_a_snapshot_is_built_off_the_ledger_path() {
    let (mut cluster, leader, file) = three_with_a_file_holding_jobs(every_4_entries);
    commit_requests(&mut cluster, leader, file, 30);
    // Polling never encoded the state: each replica handed out one job, and waits for it
    // instead of starting another every 4 entries.
    let jobs: Vec<u64> = cluster.held_snapshots.iter().map(|(id, _)| *id).collect();
    assert_eq!(jobs, vec![1, 2, 3], "one job per replica");
    for (id, job) in &cluster.held_snapshots {
        let replica = cluster.replica(*id);
        assert_eq!(replica.snapshot_index(), 0, "replica {id}");
        assert!(replica.applied_index() >= job.index() + 20, "replica {id}");
    }
    // Built at last: each takes effect once its body is written (later jobs wait meanwhile).
    let held = std::mem::take(&mut cluster.held_snapshots);
    let indexes: Vec<u64> = held.iter().map(|(_, job)| job.index()).collect();
    // Staggered by Raft id: a quarter interval (one entry here) apart.
    assert!(
        indexes.windows(2).all(|pair| pair[0] < pair[1]),
        "{indexes:?}"
    );
    for (id, job) in held {
        cluster.replica_mut(id).snapshot_built(job.build());
    }
    for _ in 0..3 {
        cluster.tick();
    }
    for (id, index) in (1..=3).zip(&indexes) {
        assert_eq!(cluster.replica(id).snapshot_index(), *index, "replica {id}");
    }
    // Each body is the state at its own index, not the state when it was built 20 blocks
    // later: a follower restarted from its snapshot and the blocks after it agrees.
    let follower = if leader == 1 { 2 } else { 1 };
    cluster.crash(follower);
    cluster.start(follower);
    let height = cluster.replica(leader).state().height();
    cluster.run_until_all_reach(200, height);
    cluster.assert_agree();
    // And the next snapshots follow.
    cluster.hold_snapshots = false;
    for (id, job) in std::mem::take(&mut cluster.held_snapshots) {
        cluster.replica_mut(id).snapshot_built(job.build());
    }
    commit_requests(&mut cluster, leader, file, 10);
    for (id, index) in (1..=3).zip(&indexes) {
        assert!(
            cluster.replica(id).snapshot_index() > *index,
            "replica {id}"
        );
    }
    cluster.assert_agree();
}

#[test]
fn a_snapshot_built_after_a_newer_one_was_installed_is_dropped() {
    let (mut cluster, leader, file) = three_with_a_file(every_4_entries);
    let behind = if leader == 1 { 2 } else { 1 };
    cluster.hold_snapshots = true;
    commit_requests(&mut cluster, leader, file, 6);
    let stale = take_held(&mut cluster, behind);
    let stale_index = stale.index();
    cluster.hold_snapshots = false;
    for (id, job) in std::mem::take(&mut cluster.held_snapshots) {
        cluster.replica_mut(id).snapshot_built(job.build());
    }
    cluster.isolate(behind);
    commit_requests(&mut cluster, leader, file, 40);
    cluster.recover();
    let target = cluster.replica(leader).state().height();
    cluster.run_until(500, |c| c.replica(behind).state().height() >= target);
    let installed = cluster.replica(behind).snapshot_index();
    assert!(
        installed > stale_index,
        "caught up through a snapshot: installed {installed}, stale {stale_index}, leader {}",
        cluster.replica(leader).snapshot_index()
    );
    // The old job comes back built: it must not take the place of the newer snapshot (new jobs
    // wait meanwhile, so none replaces it either).
    cluster.hold_snapshots = true;
    cluster.replica_mut(behind).snapshot_built(stale.build());
    for _ in 0..3 {
        cluster.tick();
    }
    assert!(cluster.replica(behind).snapshot_index() >= installed);
    cluster.crash(behind);
    cluster.start(behind);
    cluster.run_until(500, |c| c.replica(behind).state().height() >= target);
    assert!(cluster.replica(behind).snapshot_index() >= installed);
    cluster.assert_agree();
}

/// Snapshots every 4 entries, their bodies written at 1 MiB a second.
fn slow_writes(id: u64) -> ReplicaConfig {
    ReplicaConfig {
        snapshot_write_bytes_per_second: 1 << 20,
        ..every_4_entries(id)
    }
}

#[test]
fn a_snapshot_body_is_written_at_its_pace() {
    let mut cluster = Cluster::with_policy(3, 3, SEED, slow_writes, long_reasons());
    let leader = cluster.elect();
    let file = register_file(&mut cluster, leader, 1, &[1, 2], 1).file_id;
    cluster.hold_snapshots = true;
    // Some 5 MiB of access requests stay in the state.
    let txs = largest_requests(&mut cluster, file, 20);
    commit_all(&mut cluster, leader, txs);
    // Small ones after, so the index passes the leader's turn to snapshot.
    commit_requests(&mut cluster, leader, file, 8);
    let job = take_held(&mut cluster, leader);
    let index = job.index();
    cluster.replica_mut(leader).snapshot_built(job.build());
    let started_ms = cluster.now_ms;
    cluster.run_until(2_000, |c| c.replica(leader).snapshot_index() == index);
    let took_ms = cluster.now_ms - started_ms;
    let pieces = cluster
        .replica(leader)
        .snapshot_body_bytes()
        .div_ceil(ledger::SNAPSHOT_PIECE_BYTES as u64);
    assert!(pieces >= 5, "{pieces} pieces");
    // One piece at once, then one a second.
    assert!(
        took_ms >= (pieces - 1) * 1_000 && took_ms <= (pieces + 1) * 1_000,
        "{pieces} pieces took {took_ms} ms"
    );
}

#[test]
fn replicas_take_their_snapshots_in_turns() {
    let (mut cluster, leader, file) = three_with_a_file(every_4_entries);
    let mut taken: Vec<std::collections::BTreeSet<u64>> = vec![Default::default(); 3];
    for _ in 0..40 {
        commit_requests(&mut cluster, leader, file, 1);
        for id in 1..=3u64 {
            taken[id as usize - 1].insert(cluster.replica(id).snapshot_index());
        }
    }
    for (id, indexes) in (1..=3).zip(&taken) {
        assert!(indexes.len() >= 5, "replica {id} took {indexes:?}");
    }
    // Never two at the same index, round after round.
    for (a, b) in [(0, 1), (0, 2), (1, 2)] {
        let shared: Vec<&u64> = taken[a]
            .intersection(&taken[b])
            .filter(|i| **i > 0)
            .collect();
        assert!(
            shared.is_empty(),
            "replicas {} and {} at {shared:?}",
            a + 1,
            b + 1
        );
    }
}

#[test]
fn a_snapshot_that_could_not_be_built_is_tried_again_an_interval_later() {
    let (mut cluster, leader, file) = three_with_a_file_holding_jobs(every_4_entries);
    commit_requests(&mut cluster, leader, file, 8);
    let jobs = |cluster: &Cluster| {
        cluster
            .held_snapshots
            .iter()
            .filter(|(id, _)| *id == leader)
            .map(|(_, job)| job.index())
            .collect::<Vec<u64>>()
    };
    let first = jobs(&cluster);
    assert_eq!(first.len(), 1, "{first:?}");
    let refused_at = cluster.replica(leader).applied_index();
    cluster.replica_mut(leader).snapshot_not_built(first[0]);
    // Not at once, nor when its turn comes round on an idle ledger: the pool that refused it
    // would be asked again and again.
    for _ in 0..1_100 {
        cluster.tick();
    }
    assert_eq!(jobs(&cluster), first);
    commit_requests(&mut cluster, leader, file, 8);
    let again = jobs(&cluster);
    assert_eq!(again.len(), 2, "{again:?}");
    assert!(again[1] >= refused_at + 4, "{again:?}");
}

#[test]
fn a_snapshot_not_built_gives_its_log_back() {
    let (mut cluster, leader, file) = three_with_a_file(every_4_entries_and_its_size);
    cluster.hold_snapshots = true;
    commit_requests(&mut cluster, leader, file, 12);
    let first = take_held(&mut cluster, leader);
    cluster.replica_mut(leader).snapshot_built(first.build());
    for _ in 0..3 {
        cluster.tick();
    }
    assert!(cluster.replica(leader).snapshot_body_bytes() > 0);
    // The next one comes due once the log since holds as many bytes as that body.
    let mut requests = 0;
    while !cluster.held_snapshots.iter().any(|(id, _)| *id == leader) {
        commit_requests(&mut cluster, leader, file, 1);
        requests += 1;
        assert!(requests < 100, "no second snapshot");
    }
    let second = take_held(&mut cluster, leader);
    cluster
        .replica_mut(leader)
        .snapshot_not_built(second.index());
    // An interval later (not another body's worth of log) it is handed out again.
    commit_requests(&mut cluster, leader, file, 6);
    assert!(
        cluster.held_snapshots.iter().any(|(id, _)| *id == leader),
        "the log of the job not built was not given back ({requests} requests made it due)"
    );
}

#[test]
fn a_replica_restarted_due_waits_for_its_turn_once_its_clock_starts() {
    let (mut cluster, leader, file) = three_with_a_file(every_4_entries);
    // Jobs are held, never built: every replica stays due for a snapshot.
    cluster.hold_snapshots = true;
    let follower = if leader == 1 { 2 } else { 1 };
    let out_of_turn = |c: &Cluster| c.replica(follower).applied_index() % 4 != follower - 1;
    commit_requests(&mut cluster, leader, file, 5);
    while !out_of_turn(&cluster) {
        commit_requests(&mut cluster, leader, file, 1);
    }
    // Past the wait for a turn on an idle ledger, counted from a clock of 0.
    for _ in 0..1_100 {
        cluster.tick();
    }
    cluster.crash(follower);
    cluster.start(follower);
    let jobs = |c: &Cluster| {
        c.held_snapshots
            .iter()
            .filter(|(id, _)| *id == follower)
            .count()
    };
    let before = jobs(&cluster);
    // Polled before its first tick (a node may deliver messages first), then ticked.
    cluster.deliver();
    cluster.tick();
    cluster.tick();
    assert!(out_of_turn(&cluster));
    assert_eq!(
        jobs(&cluster),
        before,
        "snapshot started out of turn at once"
    );
}
