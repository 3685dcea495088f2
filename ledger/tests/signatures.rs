//! One verdict per transaction: signatures with torsion components in `R` get the same verdict
//! in every batch composition and position, and replicas that batch differently (the leader
//! reusing its proposal verdicts, a follower catching up over several blocks, a replica replaying
//! its log after a restart) end with identical heads. Small-order member keys are refused.

#![allow(clippy::unwrap_used)]

mod harness;

use harness::{Cluster, commit_all, register_file};
use ledger::{Body, Genesis, MemberId, State, Transaction, TxResult, verify_signatures};
use ledger::{SharedVerdicts, TxId};
use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng, rngs::StdRng};

const SEED: u64 = 0x215;

fn complaint(i: u32) -> Body {
    Body::ShareComplaint {
        file: keyshare::FileId::from_bytes([i as u8; 32]),
        reason: format!("complaint {i}"),
    }
}

/// Honest, torsion-carrying (valid under ZIP-215), forged and broken-torsion transactions, with
/// the verdict each must get.
fn mixed_transactions(cluster: &mut Cluster) -> Vec<(Transaction, bool)> {
    let mut txs = Vec::new();
    for i in 0..40u32 {
        let member = u64::from(i % 4) + 1;
        let (tx, valid) = match i % 5 {
            0 | 1 => (cluster.sign(member, complaint(i)), true),
            2 => {
                let order = [2, 4, 8][(i / 5 % 3) as usize];
                (cluster.sign_with_torsion(member, complaint(i), order), true)
            }
            3 => {
                // Signed, then changed: forged.
                let mut tx = cluster.sign(member, complaint(i));
                tx.nonce += 1_000;
                (tx, false)
            }
            _ => {
                // A torsion signature for other bytes: invalid under every rule.
                let mut tx = cluster.sign_with_torsion(member, complaint(i), 8);
                tx.body = complaint(i + 1_000);
                (tx, false)
            }
        };
        txs.push((tx, valid));
    }
    txs
}

#[test]
fn torsion_signatures_get_one_verdict_in_every_batch_composition() {
    let mut cluster = Cluster::new(4, 4, SEED);
    let state = State::new(cluster.genesis.clone());
    let txs = mixed_transactions(&mut cluster);
    let alone: Vec<bool> = txs
        .iter()
        .map(|(tx, _)| verify_signatures(&state, &[tx])[0])
        .collect();
    let mut rng = StdRng::seed_from_u64(SEED);
    for round in 0..300 {
        // A random subset in a random order, sometimes with one transaction repeated.
        let size = rng.random_range(1..=txs.len());
        let mut batch: Vec<(&Transaction, bool)> = txs
            .iter()
            .zip(&alone)
            .map(|((tx, _), ok)| (tx, *ok))
            .collect();
        batch.shuffle(&mut rng);
        batch.truncate(size);
        if round % 3 == 0 {
            batch.push(batch[0]);
        }
        let refs: Vec<&Transaction> = batch.iter().map(|(tx, _)| *tx).collect();
        let verdicts = verify_signatures(&state, &refs);
        for ((tx, verdict_alone), verdict) in batch.iter().zip(verdicts) {
            assert_eq!(
                verdict,
                *verdict_alone,
                "round {round}: nonce {} in a batch of {}",
                tx.nonce,
                refs.len()
            );
        }
    }
    // And the verdict is ZIP-215's: torsion in `R` is accepted, forgeries are not.
    for ((tx, valid), verdict) in txs.iter().zip(alone) {
        assert_eq!(verdict, *valid, "nonce {}", tx.nonce);
    }
}

#[test]
fn small_order_member_keys_are_refused_at_genesis() {
    let cluster = Cluster::new(3, 3, SEED);
    let valid: &Genesis = &cluster.genesis;
    assert!(valid.validate().is_ok());
    // The identity (y = 1), the order-2 point (y = -1) and an order-4 point (y = 0).
    let mut identity = [0u8; 32];
    identity[0] = 1;
    let mut order_two = [0xff; 32];
    order_two[0] = 0xec;
    order_two[31] = 0x7f;
    for bytes in [identity, order_two, [0u8; 32]] {
        let mut genesis = valid.clone();
        genesis.members[1].id = MemberId::from_bytes(bytes);
        let error = genesis.validate().unwrap_err().to_string();
        assert!(error.contains("small-order"), "{error}");
    }
}

#[test]
fn leader_lagging_follower_and_restarted_replica_agree_on_torsion_blocks() {
    let mut cluster = Cluster::new(4, 4, SEED);
    let leader = cluster.elect();
    let others: Vec<u64> = cluster
        .ids()
        .into_iter()
        .filter(|id| *id != leader)
        .collect();
    let (lagging, restarted) = (others[0], others[1]);
    let file = register_file(&mut cluster, leader, 1, &[2, 3, 4], 2).file_id;
    cluster.isolate(lagging);
    let mut torsion_ids = Vec::new();
    for round in 0..6u32 {
        let mut txs = Vec::new();
        for i in 0..8u32 {
            let member = u64::from(i % 3) + 2;
            let body = Body::ShareComplaint {
                file,
                reason: format!("round {round}, complaint {i}"),
            };
            let tx = if i % 2 == 0 {
                let tx = cluster.sign_with_torsion(member, body, [2, 4, 8][(i / 2 % 3) as usize]);
                torsion_ids.push(tx.id());
                tx
            } else {
                cluster.sign(member, body)
            };
            txs.push(tx);
        }
        // A forged one too, at a different position each round.
        let mut forged = cluster.sign(4, complaint(round));
        forged.nonce += 500;
        txs.insert(round as usize % 8, forged);
        let via = if round % 2 == 0 { leader } else { restarted };
        for tx in txs {
            // Submit to the leader or a follower; the forged one may be refused at the door.
            let _ = cluster.replica_mut(via).submit(tx);
        }
        for _ in 0..20 {
            cluster.tick();
        }
    }
    cluster.run_until(2_000, |c| {
        torsion_ids.iter().all(|id| c.acknowledged.contains_key(id))
    });
    // The restarted replica replays its log in one batch; the lagging one catches up in others.
    cluster.crash(restarted);
    cluster.start(restarted);
    cluster.recover();
    let target = cluster.replica(leader).state().height();
    cluster.run_until_all_reach(1_000, target);
    cluster.assert_agree();
    cluster.assert_nothing_lost();
    for id in &torsion_ids {
        let status = cluster
            .replica(lagging)
            .store()
            .tx_status(id)
            .unwrap()
            .unwrap();
        // Applied, or rejected by the contracts (a second complaint, a nonce overtaken by a
        // forwarded batch) — never for its signature.
        assert_ne!(
            status.result,
            TxResult::Rejected(ledger::Rejection::BadSignature),
            "torsion tx {id}"
        );
    }
    // Later transactions still commit.
    let tx = cluster.sign(2, complaint(77));
    commit_all(&mut cluster, leader, vec![tx]);
    cluster.assert_agree();
}

/// Replicas that share good verdicts (the simulator's) give every transaction the result
/// replicas checking alone give it; only good signatures are shared, and a memo made for
/// another genesis is refused.
#[test]
fn replicas_sharing_verdicts_give_the_results_of_replicas_checking_alone() {
    let results: Vec<Vec<(TxId, TxResult)>> = [false, true]
        .into_iter()
        .map(|share| {
            let mut cluster = Cluster::new(4, 4, SEED);
            let memo = share.then(|| cluster.share_verdicts());
            let leader = cluster.elect();
            let file = register_file(&mut cluster, leader, 1, &[2, 3, 4], 2).file_id;
            let (mut good, mut forged) = (Vec::new(), Vec::new());
            for round in 0..4u32 {
                for i in 0..6u32 {
                    let member = u64::from(i % 3) + 2;
                    let body = Body::ShareComplaint {
                        file,
                        reason: format!("round {round}, complaint {i}"),
                    };
                    let tx = if i % 2 == 0 {
                        cluster.sign_with_torsion(member, body, [2, 4, 8][(i / 2 % 3) as usize])
                    } else {
                        cluster.sign(member, body)
                    };
                    good.push(tx.id());
                    cluster.replica_mut(leader).submit(tx).unwrap();
                }
                let mut bad = cluster.sign(4, complaint(round));
                bad.nonce += 500;
                forged.push(bad.id());
                let _ = cluster.replica_mut(leader).submit(bad);
                for _ in 0..20 {
                    cluster.tick();
                }
            }
            cluster.run_until(2_000, |c| {
                good.iter().all(|id| c.acknowledged.contains_key(id))
            });
            // A restarted follower replays its log through the memo.
            let follower = if leader == 1 { 2 } else { 1 };
            cluster.crash(follower);
            cluster.start(follower);
            let target = cluster.replica(leader).state().height();
            cluster.run_until_all_reach(1_000, target);
            cluster.assert_agree();
            if let Some(memo) = memo {
                assert!(good.iter().all(|id| memo.holds(id)));
                assert!(!forged.iter().any(|id| memo.holds(id)));
            }
            for id in &forged {
                assert!(
                    !cluster.acknowledged.contains_key(id),
                    "forged {id} applied"
                );
            }
            good.iter().map(|id| (*id, cluster.result_of(id))).collect()
        })
        .collect();
    assert_eq!(results[0], results[1]);

    let cluster = Cluster::new(3, 3, SEED);
    let other = Cluster::new(3, 3, SEED + 1);
    let store = ledger::RedbStore::open_backend(redb::backends::InMemoryBackend::new()).unwrap();
    let refused = ledger::Replica::open_sharing(
        cluster.genesis.clone(),
        harness::default_config(1),
        store,
        Some(SharedVerdicts::new(&other.genesis)),
    );
    assert!(matches!(refused, Err(ledger::Error::InvalidConfig { .. })));
}
