//! Ordering and durability: elections, 10,000 transactions, partitions, crashes, snapshots.

#![allow(clippy::unwrap_used)]

mod harness;

use harness::{Cluster, applied_count, commit_all, register_file, small_snapshots};
use ledger::{Body, TxResult};

const SEED: u64 = 0x5eed;

fn request(
    cluster: &mut Cluster,
    auditor: u64,
    file: keyshare::FileId,
    i: u32,
) -> ledger::Transaction {
    cluster.sign(
        auditor,
        Body::RequestAccess {
            file,
            reason: format!("audit {i}"),
        },
    )
}

#[test]
fn five_replicas_commit_ten_thousand_transactions() {
    let mut cluster = Cluster::new(5, 5, SEED);
    let leader = cluster.elect();
    let file = register_file(&mut cluster, leader, 1, &[2, 3, 4], 2).file_id;
    let txs: Vec<_> = (0..10_000)
        .map(|i| request(&mut cluster, 5, file, i))
        .collect();
    let ids = commit_all(&mut cluster, leader, txs);
    cluster.run_until(100, |c| {
        c.live()
            .iter()
            .all(|id| c.replica(*id).state().height() == c.replica(leader).state().height())
    });
    cluster.assert_agree();
    cluster.assert_nothing_lost();
    let chain = cluster.chain(1);
    assert_eq!(applied_count(&chain), 10_002);
    assert_eq!(cluster.replica(3).state().requests().count(), 10_000);
    for id in ids.iter().step_by(997) {
        let status = cluster.replica(4).store().tx_status(id).unwrap().unwrap();
        assert_eq!(status.result, TxResult::Applied);
    }
    // Blocks were batched: far fewer blocks than transactions.
    assert!(chain.len() < 100, "{} blocks", chain.len());
    // Followers acknowledged new entries before applying committed ones (the harness checks
    // every poll for the order; this shows the case arose).
    assert!(cluster.deferred_applies > 0);
}

#[test]
fn same_seed_same_chain() {
    let run = || {
        let mut cluster = Cluster::new(4, 4, SEED);
        let leader = cluster.elect();
        let file = register_file(&mut cluster, leader, 1, &[2, 3], 2).file_id;
        let txs: Vec<_> = (0..50).map(|i| request(&mut cluster, 4, file, i)).collect();
        commit_all(&mut cluster, leader, txs);
        (leader, cluster.replica(1).state().head())
    };
    assert_eq!(run(), run());
}

#[test]
fn minority_partition_commits_nothing_and_heals() {
    let mut cluster = Cluster::new(5, 5, SEED);
    let leader = cluster.elect();
    let file = register_file(&mut cluster, leader, 1, &[2, 3, 4], 2).file_id;
    let minority = [leader, if leader == 1 { 2 } else { 1 }];
    for id in minority {
        cluster.isolate(id);
    }
    let height_before = cluster.replica(leader).state().height();
    // The old leader accepts the transaction but cannot commit it.
    let tx = request(&mut cluster, 5, file, 0);
    let stranded = cluster.replica_mut(minority[1]).submit(tx).unwrap();
    cluster.run_until(300, |c| {
        c.live()
            .iter()
            .any(|id| !minority.contains(id) && c.replica(*id).is_leader())
    });
    for id in minority {
        assert_eq!(cluster.replica(id).state().height(), height_before);
    }
    // The majority goes on committing.
    let majority_leader = cluster
        .live()
        .into_iter()
        .find(|id| !minority.contains(id) && cluster.replica(*id).is_leader())
        .unwrap();
    let txs: Vec<_> = (1..20).map(|i| request(&mut cluster, 5, file, i)).collect();
    commit_all(&mut cluster, majority_leader, txs);
    for id in minority {
        assert_eq!(cluster.replica(id).state().height(), height_before);
    }
    cluster.recover();
    // After healing the stranded transaction is retried and lands; everybody agrees.
    cluster.run_until(1_000, |c| c.acknowledged.contains_key(&stranded));
    let target = cluster.replica(majority_leader).state().height();
    cluster.run_until_all_reach(500, target);
    cluster.assert_agree();
    cluster.assert_nothing_lost();
}

#[test]
fn crashed_leader_restarts_from_redb_without_losing_acknowledged_transactions() {
    let mut cluster = Cluster::new(5, 5, SEED);
    let leader = cluster.elect();
    let file = register_file(&mut cluster, leader, 1, &[2, 3, 4], 2).file_id;
    let txs: Vec<_> = (0..200)
        .map(|i| request(&mut cluster, 5, file, i))
        .collect();
    // Submit half, let some commit, crash the leader mid-load.
    for tx in txs[..100].iter().cloned() {
        cluster.replica_mut(leader).submit(tx).unwrap();
    }
    cluster.tick();
    cluster.tick();
    let acknowledged_before = cluster.acknowledged.len();
    assert!(
        acknowledged_before > 2,
        "some load committed before the crash"
    );
    cluster.crash(leader);
    let new_leader = cluster.elect();
    assert_ne!(new_leader, leader);
    commit_all(&mut cluster, new_leader, txs[100..].to_vec());
    cluster.start(leader);
    let target = cluster.replica(new_leader).state().height();
    cluster.run_until(1_000, |c| c.replica(leader).state().height() >= target);
    cluster.assert_agree();
    cluster.assert_nothing_lost();
}

#[test]
fn lagging_and_new_replicas_catch_up_through_snapshots() {
    // Six members: five voters and one learner that first starts after the log was compacted.
    let mut cluster = Cluster::with_config(6, 5, SEED, small_snapshots);
    cluster.crash(6);
    let leader = cluster.elect();
    let lagging = if leader == 2 { 3 } else { 2 };
    cluster.isolate(lagging);
    let file = register_file(&mut cluster, leader, 1, &[2, 3, 4], 2).file_id;
    for i in 0..60 {
        let tx = request(&mut cluster, 6, file, i);
        commit_all(&mut cluster, leader, vec![tx]);
    }
    cluster.recover();
    cluster.start(6);
    let target = cluster.replica(leader).state().height();
    cluster.run_until(1_000, |c| {
        c.replica(lagging).state().height() >= target && c.replica(6).state().height() >= target
    });
    // Both caught up from a snapshot: the log they would have replayed was compacted.
    assert!(cluster.replica(6).store().block(1).unwrap().is_none());
    assert!(cluster.replica(lagging).store().block(2).unwrap().is_none());
    cluster.assert_agree();
    // And they keep up with new blocks normally afterwards.
    let tx = request(&mut cluster, 6, file, 1_000);
    let id = commit_all(&mut cluster, leader, vec![tx])[0];
    cluster.run_until(200, |c| {
        c.replica(6).store().tx_status(&id).unwrap().is_some()
            && c.replica(lagging).store().tx_status(&id).unwrap().is_some()
    });
    cluster.assert_agree();
}

#[test]
fn learners_replicate_but_do_not_vote() {
    let mut cluster = Cluster::new(7, 3, SEED);
    let leader = cluster.elect();
    assert!(leader <= 3, "only voters lead");
    let file = register_file(&mut cluster, leader, 1, &[2, 3, 4], 2).file_id;
    // With two of three voters down, learners cannot make a quorum.
    let voters_down: Vec<u64> = (1..=3).filter(|id| *id != leader).collect();
    for id in &voters_down {
        cluster.crash(*id);
    }
    let height = cluster.replica(leader).state().height();
    let tx = request(&mut cluster, 7, file, 0);
    let id = cluster.replica_mut(leader).submit(tx).unwrap();
    for _ in 0..100 {
        cluster.tick();
    }
    assert!(!cluster.acknowledged.contains_key(&id));
    assert_eq!(cluster.replica(5).state().height(), height);
    for id in voters_down {
        cluster.start(id);
    }
    cluster.run_until(1_000, |c| c.acknowledged.contains_key(&id));
    let target = cluster.acknowledged[&id];
    cluster.run_until_all_reach(300, target);
    cluster.assert_agree();
}

#[test]
fn a_followers_submissions_apply_in_nonce_order_across_reordering_and_leader_changes() {
    let mut cluster = Cluster::new(5, 5, SEED);
    cluster.reorder = true;
    let leader = cluster.elect();
    let file = register_file(&mut cluster, leader, 1, &[2, 3, 4], 2).file_id;
    // The auditor's node is a follower; every transaction the auditor signs goes through it.
    let via = if leader == 5 { 4 } else { 5 };
    let mut ids = Vec::new();
    for round in 0..20u32 {
        for i in 0..50 {
            let tx = request(&mut cluster, 5, file, round * 50 + i);
            ids.push(cluster.replica_mut(via).submit(tx).unwrap());
            if i % 10 == 0 {
                cluster.tick();
            }
        }
        if round % 4 == 3 {
            // Depose whoever leads (unless it is the submitting node), then heal.
            if let Some(current) = cluster.leader().filter(|id| *id != via) {
                cluster.isolate(current);
                cluster.run_until(1_000, |c| c.leader().is_some_and(|l| l != current));
                cluster.recover();
            }
        }
    }
    cluster.run_until(5_000, |c| {
        ids.iter().all(|id| c.acknowledged.contains_key(id))
    });
    let target = cluster.acknowledged.values().copied().max().unwrap();
    cluster.run_until_all_reach(1_000, target);
    cluster.assert_agree();
    cluster.assert_nothing_lost();
    // Each transaction's first appearance on the chain applied it: none was overtaken by a later
    // nonce (duplicates of a retried batch may follow, rejected as replays).
    let chain = cluster.chain(1);
    let mut first: std::collections::BTreeMap<ledger::TxId, TxResult> = Default::default();
    for block in &chain {
        for (tx, result) in block.txs.iter().zip(&block.results) {
            first.entry(tx.id()).or_insert_with(|| result.clone());
        }
    }
    for id in &ids {
        assert_eq!(first.get(id), Some(&TxResult::Applied), "tx {id}");
    }
    assert_eq!(cluster.replica(1).state().requests().count(), ids.len());
}

#[test]
fn a_follower_elected_with_a_forward_outstanding_keeps_its_nonces_in_order() {
    let mut cluster = Cluster::new(5, 5, SEED);
    let leader = cluster.elect();
    let file = register_file(&mut cluster, leader, 1, &[2, 3, 4], 2).file_id;
    let via = if leader == 5 { 4 } else { 5 };
    let others: Vec<u64> = (1..=5).filter(|id| *id != leader && *id != via).collect();
    // A batch forwarded to the leader, lost with it...
    let lost: Vec<_> = (0..10)
        .map(|i| {
            let tx = request(&mut cluster, 5, file, i);
            cluster.replica_mut(via).submit(tx).unwrap()
        })
        .collect();
    cluster.replica_mut(via).flush();
    cluster.isolate(leader);
    // ...and `via` elected: the other followers reach only `via`, so only it can gather votes.
    for (i, a) in others.iter().enumerate() {
        for b in &others[i + 1..] {
            cluster.cut(*a, *b);
        }
    }
    cluster.run_until(1_000, |c| c.leader() == Some(via));
    cluster.recover();
    cluster.isolate(leader);
    // Newer transactions, submitted to `via` as leader, must not overtake the lost batch.
    let newer: Vec<_> = (10..20)
        .map(|i| {
            let tx = request(&mut cluster, 5, file, i);
            cluster.replica_mut(via).submit(tx).unwrap()
        })
        .collect();
    cluster.run_until(1_000, |c| {
        lost.iter()
            .chain(&newer)
            .all(|id| c.acknowledged.contains_key(id))
    });
    cluster.recover();
    let chain = cluster.chain(via);
    for id in lost.iter().chain(&newer) {
        let first_result = chain
            .iter()
            .flat_map(|b| b.txs.iter().zip(&b.results))
            .find(|(tx, _)| tx.id() == *id)
            .map(|(_, result)| result.clone());
        assert_eq!(first_result, Some(TxResult::Applied), "tx {id}");
    }
}

#[test]
fn submissions_at_many_members_at_once_share_blocks() {
    // 5 voters and 4 learners; every participant but the leader submits in the same tick.
    let mut cluster = Cluster::new(9, 5, SEED);
    let leader = cluster.elect();
    let file = register_file(&mut cluster, leader, 1, &[2, 3, 4], 2).file_id;
    let height = cluster.replica(leader).state().height();
    let submitters: Vec<u64> = (1..9).filter(|id| *id != leader).collect();
    let ids: Vec<_> = submitters
        .iter()
        .map(|&id| {
            let body = Body::ShareComplaint {
                file,
                reason: format!("from {id}"),
            };
            let tx = cluster.sign(id, body);
            cluster.replica_mut(id).submit(tx).unwrap()
        })
        .collect();
    cluster.run_until(200, |c| {
        ids.iter().all(|id| c.acknowledged.contains_key(id))
    });
    // The leader pools forwards while a block is in flight: the first forward goes out alone,
    // the others together (one block per forward before).
    let blocks = cluster.replica(leader).state().height() - height;
    assert!(blocks <= 2, "{} forwards made {blocks} blocks", ids.len());
    cluster.run_until_all_reach(100, height + blocks);
    cluster.assert_agree();
}

#[test]
fn a_forward_of_a_transaction_the_leader_holds_is_ordered_once() {
    let mut cluster = Cluster::new(6, 5, SEED);
    let leader = cluster.elect();
    let file = register_file(&mut cluster, leader, 1, &[2, 3, 4], 2).file_id;
    // The leader's proposal stays in flight while the other voters cannot hear it...
    for voter in 1..=5 {
        if voter != leader {
            cluster.cut(leader, voter);
        }
    }
    let auditor = 6;
    let tx = request(&mut cluster, auditor, file, 0);
    let id = cluster.replica_mut(leader).submit(tx.clone()).unwrap();
    // ...and the learner that submits the same transaction forwards it to the leader meanwhile
    // (within a few ticks, before any voter's election timeout).
    cluster.replica_mut(auditor).submit(tx).unwrap();
    for _ in 0..4 {
        cluster.tick();
    }
    assert!(cluster.replica(leader).is_leader());
    cluster.recover();
    cluster.run_until(200, |c| c.acknowledged.contains_key(&id));
    for _ in 0..20 {
        cluster.tick();
    }
    let copies = cluster
        .chain(leader)
        .iter()
        .flat_map(|block| &block.txs)
        .filter(|tx| tx.id() == id)
        .count();
    assert_eq!(copies, 1, "the forwarded copy was ordered again");
    assert_eq!(cluster.result_of(&id), TxResult::Applied);
}
