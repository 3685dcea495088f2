//! A ledger that fails loudly and recovers: a storage error on one member's ledger is logged, the
//! member reports itself unhealthy in `status` and `/metrics`, the ledger task reopens the replica
//! from its durable state once the disk works again, catches up, and the member's holder duties
//! (worked out from chain state) get done. In one process on the in-memory transport.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{Member, eventually, start};
use ledger::MemberId;
use node::Node;
use overlay::{MemoryNetwork, MemoryTransport, PeerId};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ledger_storage_error_is_reported_and_the_ledger_recovers() {
    let network = MemoryNetwork::new();
    let members = start(&network, 4);
    let (owner, auditor) = (&members[0].node, &members[3].node);
    eventually("a leader", || async {
        owner.leader_id().await.ok().flatten().is_some()
    })
    .await;
    let leader = owner.leader_id().await.unwrap().unwrap() as usize;
    // A holder (members 2..=4 hold shares) that does not lead and is not the auditor.
    let faulty = if leader == 2 { 2 } else { 1 };
    let faulty_member = &members[faulty];
    let faulty_name = format!("member-{}", faulty + 1);
    let faulty_id = MemberId::from_bytes(*faulty_peer(faulty_member).as_bytes());

    let stored = owner.store(vec![7u8; 200 * 1024]).await.unwrap();

    // The faulty member's disk refuses writes: its ledger fails on the next block it must persist.
    faulty_member.disk.failing.store(true, Ordering::SeqCst);
    let request = auditor
        .request(stored.file_id, "audit".into())
        .await
        .unwrap();
    eventually("the member reports its ledger unhealthy", || async {
        let status = faulty_member.node.status().await.unwrap();
        !status.healthy && status.ledger_error.is_some()
    })
    .await;
    let metrics = faulty_member.node.metrics().render();
    assert!(
        metrics.contains("blocktorrent_ledger_healthy 0"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("blocktorrent_ledger_restarts_total 0"),
        "{metrics}"
    );
    // Submissions while it is down are refused with a reason, not left hanging.
    let refused = faulty_member
        .node
        .request(stored.file_id, "while down".into())
        .await;
    assert!(
        matches!(refused, Err(node::Error::LedgerDown { .. })),
        "{refused:?}"
    );

    // The disk heals: the ledger reopens from what it made durable and catches up; the holder
    // works out from the chain that it has not answered the request and releases its share.
    // Waiting for a height, begun while the ledger is down, spans its restart.
    let heal = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        faulty_member.disk.failing.store(false, Ordering::SeqCst);
    };
    let (waited, ()) = tokio::join!(
        faulty_member
            .node
            .wait_for_height(request.height, Duration::from_secs(30)),
        heal
    );
    waited.unwrap();
    eventually("the member is healthy again", || async {
        faulty_member.node.status().await.is_ok_and(|s| s.healthy)
    })
    .await;
    eventually(&format!("{faulty_name} answers the request"), || async {
        released_by(auditor, request.request_id, faulty_id).await
    })
    .await;
    let status = faulty_member.node.status().await.unwrap();
    assert!(status.healthy);
    assert!(status.height >= request.height);
    assert!(
        faulty_member
            .node
            .metrics()
            .render()
            .contains("blocktorrent_ledger_healthy 1")
    );
    for member in &members {
        member.node.shutdown().await;
    }
}

fn faulty_peer(member: &Member) -> PeerId {
    use overlay::Transport;
    member.node.transport().local_peer()
}

async fn released_by(
    node: &Node<MemoryTransport>,
    request: ledger::RequestId,
    who: MemberId,
) -> bool {
    node.access_request(request)
        .await
        .ok()
        .flatten()
        .is_some_and(|record| record.answers.contains_key(&who))
}
