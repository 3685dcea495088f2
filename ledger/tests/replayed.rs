//! A hostile member replays old Raft messages to every replica, twice, newest first and then in
//! order — among them appends from a deposed leader carrying an entry that never committed and
//! that the next leader's log replaced. Nothing committed changes, every replica keeps agreeing,
//! and the cluster keeps committing.

#![allow(clippy::unwrap_used)]

mod harness;

use harness::{Cluster, register_file};
use ledger::Body;

#[test]
fn replayed_raft_messages_of_earlier_terms_change_nothing() {
    let mut cluster = Cluster::new(4, 3, 0x5eed);
    cluster.recorded = Some(Vec::new());
    let first_leader = cluster.elect();
    register_file(&mut cluster, first_leader, 1, &[2, 3, 4], 2);

    // The leader is cut off and appends an entry no one else takes: its appends of it are
    // recorded (as a hostile member would keep them) but never delivered.
    cluster.isolate(first_leader);
    let doomed = cluster.sign(
        first_leader,
        Body::RequestAccess {
            file: keyshare::FileId::from_bytes([9; 32]),
            reason: "never committed".into(),
        },
    );
    let _ = cluster.replica_mut(first_leader).submit(doomed);
    for _ in 0..5 {
        cluster.tick();
    }
    // The others elect a new leader and commit other entries at the same indices.
    cluster.crash(first_leader);
    cluster.recover();
    cluster.run_until(2_000, |c| {
        c.leader().is_some_and(|leader| leader != first_leader)
    });
    let second_leader = cluster.leader().unwrap();
    register_file(&mut cluster, second_leader, 2, &[1, 3, 4], 2);
    cluster.start(first_leader);
    let target = cluster.replica(second_leader).state().height();
    cluster.run_until(2_000, |c| {
        c.live()
            .iter()
            .all(|id| c.replica(*id).state().height() >= target)
    });

    let old = cluster.recorded.take().unwrap();
    let stale_appends = old
        .iter()
        .filter(|m| m.sender() == first_leader && m.kind() == "raft")
        .count();
    assert!(
        stale_appends > 0,
        "no messages of the deposed leader recorded"
    );
    let chains_before: Vec<_> = cluster.ids().iter().map(|id| cluster.chain(*id)).collect();
    let acknowledged_before = cluster.acknowledged.clone();

    for message in old.iter().rev().chain(old.iter()) {
        let to = message.recipient();
        // Refused or ignored as the transport would drop it; never a panic.
        let _ = cluster.replica_mut(to).handle_message(message.clone());
    }
    cluster.deliver();
    for _ in 0..50 {
        cluster.tick();
    }

    cluster.assert_agree();
    cluster.assert_nothing_lost();
    for (id, before) in cluster.ids().iter().zip(&chains_before) {
        let after = cluster.chain(*id);
        assert!(after.len() >= before.len(), "replica {id} lost blocks");
        assert_eq!(
            &after[..before.len()],
            &before[..],
            "replica {id} rewrote blocks"
        );
    }
    let moved = acknowledged_before
        .iter()
        .filter(|(id, height)| cluster.acknowledged.get(*id) != Some(*height))
        .count();
    assert_eq!(moved, 0, "acknowledged transactions moved");
    // And the cluster still commits.
    let leader = cluster.leader().unwrap();
    register_file(&mut cluster, leader, 3, &[1, 2, 4], 2);
    cluster.assert_agree();
}
