//! A hostile member replays old Raft messages (votes, appends, heartbeats, responses of earlier
//! terms) to every replica, twice, newest first and then in order: nothing committed changes,
//! every replica keeps agreeing, and the cluster keeps committing.

#![allow(clippy::unwrap_used)]

mod harness;

use harness::{Cluster, register_file};

#[test]
fn replayed_raft_messages_of_earlier_terms_change_nothing() {
    let mut cluster = Cluster::new(4, 3, 0x5eed);
    cluster.recorded = Some(Vec::new());
    let first_leader = cluster.elect();
    register_file(&mut cluster, first_leader, 1, &[2, 3, 4], 2);
    // A second term: the first leader crashes, another is elected, then it comes back.
    cluster.crash(first_leader);
    cluster.run_until(2_000, |c| {
        c.leader().is_some_and(|leader| leader != first_leader)
    });
    let second_leader = cluster.leader().unwrap();
    register_file(&mut cluster, second_leader, 2, &[1, 3, 4], 2);
    cluster.start(first_leader);
    cluster.run_until(2_000, |c| {
        c.live()
            .iter()
            .all(|id| c.replica(*id).state().height() == c.replica(second_leader).state().height())
    });
    let old = cluster.recorded.take().unwrap();
    assert!(old.len() > 50, "only {} messages recorded", old.len());
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
    assert_eq!(
        acknowledged_before
            .iter()
            .filter(|(id, height)| cluster.acknowledged.get(*id) != Some(*height))
            .count(),
        0,
        "an acknowledged transaction moved"
    );
    // And the cluster still commits.
    let leader = cluster.leader().unwrap();
    register_file(&mut cluster, leader, 3, &[1, 2, 4], 2);
    cluster.assert_agree();
}
