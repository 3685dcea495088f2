//! Holder duties count as done only when the chain shows them: holders whose transport refuses
//! their first messages (so their first release submissions never reach the leader) still
//! release, and a holder that was down when the request came works its duty out from the chain
//! after its restart. (A holder whose ledger fails under its submission is `recovery.rs`.) In one
//! process on the in-memory transport.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{Disks, Member, consortium, crash, eventually, start_member};
use ledger::{MemberId, WireMessage};
use overlay::{MemoryNetwork, Transport};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holders_release_through_refused_submissions_and_a_restart() {
    let network = MemoryNetwork::new();
    let consortium = consortium(5);
    let mut members: Vec<Member> = (0..5)
        .map(|i| start_member(&network, &consortium, i, Disks::default(), i as u64))
        .collect();
    eventually("a leader", || async {
        members[0].node.leader_id().await.ok().flatten().is_some()
    })
    .await;
    let leader = members[0].node.leader_id().await.unwrap().unwrap() as usize - 1;
    let stored = members[0].node.store(vec![3u8; 150 * 1024]).await.unwrap();
    eventually("the deposit on every replica", || async {
        let mut all = true;
        for member in &members {
            all &= member
                .node
                .file(stored.file_id)
                .await
                .is_ok_and(|record| record.deposits.is_some());
        }
        all
    })
    .await;

    // One participant holder that does not lead is down when the request comes.
    let down = (1..4).find(|index| *index != leader).unwrap();
    let down_member = members.remove(down);
    let disks = crash(&network, down_member).await;
    // Every other holder's transport refuses the first submissions it forwards to the leader:
    // its release goes nowhere at first.
    for member in &members[1..] {
        network.refuse_messages_from(member.node.transport().local_peer(), 2, |payload| {
            WireMessage::decode(payload).is_ok_and(|message| message.kind() == "proposal")
        });
    }

    let auditor = members.last().unwrap().node.clone();
    let request = auditor
        .request(stored.file_id, "recall".into())
        .await
        .unwrap();
    let holders: BTreeSet<MemberId> = consortium.members[1..4].iter().map(|m| m.id).collect();
    let up: BTreeSet<MemberId> = holders
        .iter()
        .copied()
        .filter(|id| *id != consortium.members[down].id)
        .collect();
    let released = |auditor: std::sync::Arc<node::Node<overlay::MemoryTransport>>| async move {
        auditor
            .access_request(request.request_id)
            .await
            .unwrap()
            .map(|access| {
                access
                    .released()
                    .map(|(id, _)| *id)
                    .collect::<BTreeSet<_>>()
            })
            .unwrap_or_default()
    };
    eventually("every holder that is up released", || {
        let auditor = auditor.clone();
        let up = up.clone();
        async move { released(auditor).await.is_superset(&up) }
    })
    .await;

    // The holder that was down restarts from its disks and works its duty out from the chain.
    members.insert(down, start_member(&network, &consortium, down, disks, 77));
    eventually("the restarted holder released too", || {
        let auditor = auditor.clone();
        let holders = holders.clone();
        async move { released(auditor).await.is_superset(&holders) }
    })
    .await;
    let (receipt, bytes) = auditor
        .fetch_bytes(stored.file_id, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!((receipt.bytes, bytes), (150 * 1024, vec![3u8; 150 * 1024]));
    for member in &members {
        member.node.shutdown().await;
    }
}
