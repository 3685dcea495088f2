//! The contracts end to end through a replicated cluster: rejections with the right reason, and
//! the whole store/recreate story from registration to the auditor rebuilding the key.

#![allow(clippy::unwrap_used)]

mod harness;

use harness::{Cluster, commit_all, register_file};
use keyshare::{SealContext, SealPurpose, combine, open_share, reseal_share, verify};
use ledger::{Answer, Body, Rejection, SubmitError, Transaction, TxResult};

const SEED: u64 = 0xc0ffee;

#[test]
fn replayed_forged_non_member_and_wrong_role_transactions_are_rejected() {
    let mut cluster = Cluster::new(4, 4, SEED);
    let leader = cluster.elect();
    let file = register_file(&mut cluster, leader, 1, &[2, 3], 2).file_id;
    let body = |i: u32| Body::RequestAccess {
        file,
        reason: format!("audit {i}"),
    };

    // Replay: once committed, the same transaction is refused at the door...
    let tx = cluster.sign(4, body(0));
    commit_all(&mut cluster, leader, vec![tx.clone()]);
    let replay = cluster.replica_mut(leader).submit(tx.clone());
    assert_eq!(
        replay,
        Err(SubmitError::Rejected(Rejection::StaleNonce {
            nonce: tx.nonce,
            last: tx.nonce
        }))
    );
    // ...and a replay submitted before the first copy applied is ordered too, and rejected
    // there by its nonce.
    let fresh = cluster.sign(4, body(1));
    let first = cluster.replica_mut(leader).submit(fresh.clone()).unwrap();
    cluster.replica_mut(leader).submit(fresh).unwrap();
    cluster.run_until(200, |c| c.acknowledged.contains_key(&first));
    for _ in 0..20 {
        cluster.tick();
    }
    let chain = cluster.chain(leader);
    let outcomes: Vec<&TxResult> = chain
        .iter()
        .flat_map(|b| b.txs.iter().zip(&b.results))
        .filter(|(tx, _)| tx.id() == first)
        .map(|(_, result)| result)
        .collect();
    assert_eq!(outcomes.len(), 2, "the copy was ordered too");
    assert_eq!(outcomes[0], &TxResult::Applied);
    assert!(
        outcomes[1..]
            .iter()
            .all(|r| matches!(r, TxResult::Rejected(Rejection::StaleNonce { .. })))
    );

    // Forged: a valid transaction with its body changed after signing.
    let mut forged = cluster.sign(4, body(2));
    forged.body = body(3);
    let forged_id = cluster.replica_mut(leader).submit(forged).unwrap();
    cluster.replica_mut(leader).flush();
    let effects = cluster.replica_mut(leader).poll().unwrap();
    assert_eq!(
        effects.refused,
        vec![(forged_id, SubmitError::Rejected(Rejection::BadSignature))]
    );

    // Non-member: a well-signed transaction from a key outside the genesis.
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(1);
    let stranger = ed25519_dalek::SigningKey::generate(&mut rng);
    let outsider = Transaction::sign(&stranger, harness::CHAIN, 1, body(4));
    assert!(matches!(
        cluster.replica_mut(leader).submit(outsider),
        Err(SubmitError::Rejected(Rejection::UnknownSender { .. }))
    ));

    // Wrong role: a participant may not request access.
    let participant = cluster.sign(2, body(5));
    assert!(matches!(
        cluster.replica_mut(leader).submit(participant),
        Err(SubmitError::Rejected(Rejection::RoleNotAllowed { .. }))
    ));

    // Another chain's signature does not verify here.
    let other_chain = Transaction::sign(&cluster.nodes[3].key, "other-chain", 99, body(6));
    let id = cluster.replica_mut(leader).submit(other_chain).unwrap();
    cluster.replica_mut(leader).flush();
    let effects = cluster.replica_mut(leader).poll().unwrap();
    assert_eq!(
        effects.refused,
        vec![(id, SubmitError::Rejected(Rejection::BadSignature))]
    );
    cluster.assert_agree();
}

#[test]
fn forged_transactions_inside_a_block_are_marked_not_applied() {
    // What a faulty leader might order: each replica verifies signatures itself.
    let mut cluster = Cluster::new(3, 3, SEED);
    let good = cluster.sign(
        1,
        Body::ShareComplaint {
            file: keyshare::FileId::from_bytes([1; 32]),
            reason: String::new(),
        },
    );
    let mut state = cluster.replica(1).state().clone();
    let mut forged = good.clone();
    forged.nonce = 7;
    let verdicts = ledger::verify_signatures(&state, &[&good, &forged]);
    assert_eq!(verdicts, vec![true, false]);
    let block = state.apply(0, vec![good, forged], &verdicts);
    assert_eq!(
        block.results,
        vec![
            TxResult::Rejected(Rejection::UnknownFile {
                file: keyshare::FileId::from_bytes([1; 32])
            }),
            TxResult::Rejected(Rejection::BadSignature),
        ]
    );
    // The good transaction's nonce was spent even though its body was rejected.
    assert_eq!(state.nonce(&cluster.genesis.members[0].id), 1);
}

#[test]
fn store_and_recreate_story() {
    // Five members; member 1 owns the file, members 2, 3, 4 hold shares (t = 2), member 5 audits.
    let mut cluster = Cluster::new(5, 5, SEED);
    let leader = cluster.elect();
    let stored = register_file(&mut cluster, leader, 1, &[2, 3, 4], 2);
    let file = stored.file_id;
    let record = cluster.replica(3).state().file(&file).unwrap().clone();
    assert_eq!(record.owner, cluster.genesis.members[0].id);
    let deposits = record.deposits.clone().unwrap();

    // Each holder opens and verifies its deposit; holder 4 finds a problem and complains.
    for (position, holder) in [2u64, 3, 4].iter().enumerate() {
        let member = &cluster.genesis.members[*holder as usize - 1];
        let context = SealContext {
            file_id: file,
            holder: *member.id.as_bytes(),
            share_index: position as u32 + 1,
            purpose: SealPurpose::Deposit,
        };
        let share = open_share(
            &deposits[position],
            &cluster.nodes[*holder as usize - 1].sealing,
            &context,
        )
        .unwrap();
        verify(&share, &record.table.commitments).unwrap();
    }
    let complaint = cluster.sign(
        4,
        Body::ShareComplaint {
            file,
            reason: "share 3 did not verify".into(),
        },
    );
    let outsider_complaint = cluster.sign(
        5,
        Body::ShareComplaint {
            file,
            reason: "not a holder".into(),
        },
    );
    let ids = commit_all(&mut cluster, leader, vec![complaint, outsider_complaint]);
    assert_eq!(cluster.result_of(&ids[0]), TxResult::Applied);
    assert_eq!(
        cluster.result_of(&ids[1]),
        TxResult::Rejected(Rejection::NotHolder { file })
    );
    assert!(cluster.replica(2).state().file(&file).unwrap().disputed());

    // Only the owner deposits, and only once; a second registration of the id is refused.
    let again = cluster.sign(
        1,
        Body::DepositShares {
            file,
            shares: deposits.clone(),
        },
    );
    let by_other = cluster.sign(
        2,
        Body::DepositShares {
            file,
            shares: deposits.clone(),
        },
    );
    let reregister = cluster.sign(1, Body::RegisterFile(record.table.clone()));
    let ids = commit_all(&mut cluster, leader, vec![again, by_other, reregister]);
    assert_eq!(
        cluster.result_of(&ids[0]),
        TxResult::Rejected(Rejection::SharesAlreadyDeposited { file })
    );
    assert_eq!(
        cluster.result_of(&ids[1]),
        TxResult::Rejected(Rejection::NotOwner { file })
    );
    assert_eq!(
        cluster.result_of(&ids[2]),
        TxResult::Rejected(Rejection::FileExists { file })
    );

    // The auditor requests access; holders 2 and 3 release, holder 4 denies.
    let request = cluster.sign(
        5,
        Body::RequestAccess {
            file,
            reason: "annual audit".into(),
        },
    );
    let request_id = commit_all(&mut cluster, leader, vec![request])[0];
    let auditor = cluster.genesis.members[4].clone();
    let mut answers = Vec::new();
    for (position, holder) in [2u64, 3].iter().enumerate() {
        let member = cluster.genesis.members[*holder as usize - 1].clone();
        let deposit_context = SealContext {
            file_id: file,
            holder: *member.id.as_bytes(),
            share_index: position as u32 + 1,
            purpose: SealPurpose::Deposit,
        };
        let release_context = SealContext {
            purpose: SealPurpose::Release {
                request_id: *request_id.as_bytes(),
            },
            ..deposit_context
        };
        let sealing = cluster.nodes[*holder as usize - 1].sealing.clone();
        let released = reseal_share(
            &deposits[position],
            &sealing,
            &deposit_context,
            &auditor.sealing_key,
            &release_context,
            &mut cluster.rng,
        )
        .unwrap();
        answers.push(cluster.sign(
            *holder,
            Body::ReleaseShare {
                request: request_id,
                sealed_to_requester: released,
            },
        ));
    }
    answers.push(cluster.sign(
        4,
        Body::DenyAccess {
            request: request_id,
            reason: "disputed".into(),
        },
    ));
    let twice = answers[0].clone();
    let ids = commit_all(&mut cluster, leader, answers);
    assert!(
        ids.iter()
            .all(|id| cluster.result_of(id) == TxResult::Applied)
    );
    let mut duplicate = twice;
    duplicate.nonce += 10;
    let duplicate = Transaction::sign(
        &cluster.nodes[1].key,
        harness::CHAIN,
        duplicate.nonce,
        duplicate.body,
    );
    let id = commit_all(&mut cluster, leader, vec![duplicate])[0];
    assert_eq!(
        cluster.result_of(&id),
        TxResult::Rejected(Rejection::AlreadyAnswered {
            request: request_id
        })
    );

    // The auditor reads its replica: t released shares, opens, verifies and combines them.
    let state = cluster.replica(5).state();
    let access = state.request(&request_id).unwrap();
    assert_eq!(access.requester, auditor.id);
    assert!(matches!(
        access.answers.get(&cluster.genesis.members[3].id),
        Some(Answer::Denied(_))
    ));
    let table = &state.file(&file).unwrap().table;
    let shares: Vec<_> = access
        .released()
        .map(|(holder, sealed)| {
            let index = state.file(&file).unwrap().share_index(holder).unwrap();
            let context = SealContext {
                file_id: file,
                holder: *holder.as_bytes(),
                share_index: index,
                purpose: SealPurpose::Release {
                    request_id: *request_id.as_bytes(),
                },
            };
            open_share(sealed, &cluster.nodes[4].sealing, &context).unwrap()
        })
        .collect();
    assert_eq!(shares.len(), 2);
    let secret = combine(&shares, &table.commitments).unwrap();
    assert_eq!(secret, stored.secret);
    assert_eq!(table.commitments, stored.commitments);
    cluster.assert_agree();
}
