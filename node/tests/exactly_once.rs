//! A record becomes one file whatever fails or restarts (DESIGN.md "Store", `store.rs`): its
//! share is derived from an intent recorded before the first push, and the ledger registers a
//! file id once. In one process on the in-memory transport, with disks that lose what was not
//! synced.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{Disks, Member, consortium, crash, eventually, request_when_deposited, start_member};
use overlay::{MemoryNetwork, Transport};

const RECORD_BYTES: usize = 300 * 1024;

fn record() -> Vec<u8> {
    (0..RECORD_BYTES).map(|i| (i * 7 % 251) as u8).collect()
}

/// Four members; waits for a leader and returns the members and the leader's index.
async fn consortium_with_leader(network: &MemoryNetwork) -> (Vec<Member>, usize) {
    consortium_of(network, 4).await
}

/// `count` members; waits for a leader and returns the members and the leader's index.
async fn consortium_of(network: &MemoryNetwork, count: usize) -> (Vec<Member>, usize) {
    let consortium = consortium(count);
    let members: Vec<Member> = (0..count)
        .map(|i| start_member(network, &consortium, i, Disks::default(), i as u64))
        .collect();
    eventually("a leader", || async {
        members[0].node.leader_id().await.ok().flatten().is_some()
    })
    .await;
    let leader = members[0].node.leader_id().await.unwrap().unwrap() as usize - 1;
    (members, leader)
}

fn chunks_stored(members: &[Member]) -> u64 {
    members
        .iter()
        .map(|member| member.node.metrics().chunks_stored.load(Ordering::SeqCst))
        .sum()
}

async fn files_on(member: &Member) -> usize {
    member.node.status().await.unwrap().files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_between_push_and_registration_makes_one_file() {
    let network = MemoryNetwork::new();
    let (mut members, leader) = consortium_with_leader(&network).await;
    // The owner does not lead: its registration then sits in the leader's log, which outlives
    // the owner (a leader's own entry could be overwritten after it dies). The auditor (last)
    // does not store.
    let owner = (0..3).find(|index| *index != leader).unwrap();
    let bytes = record();
    let chunk_count = RECORD_BYTES.div_ceil(64 * 1024) as u64;
    let replication = u64::from(consortium(4).replication);

    // The ledgers of the members that are neither the owner nor the leader cannot write: the
    // owner's registration reaches the leader's durable log (and the owner's) but no quorum, so
    // it can still commit after the owner dies. Their chunk stores take the pushes.
    for (index, member) in members.iter().enumerate() {
        if index != owner && index != leader {
            member.disk.failing.store(true, Ordering::SeqCst);
        }
    }
    let key = members[owner]
        .node
        .ingest("sensor/truck-7", &bytes)
        .unwrap();
    eventually("every chunk pushed to its owners", || async {
        chunks_stored(&members) >= chunk_count * replication
    })
    .await;
    // Long enough for the master table to be proposed (and sit, uncommitted).
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        files_on(&members[owner]).await,
        0,
        "registered without a quorum"
    );
    assert!(members[owner].node.record_shared(&key).unwrap().is_none());

    // Killed between push and registration; the others heal; the owner restarts from disk.
    let dead = members.remove(owner);
    let disks = crash(&network, dead).await;
    for member in &members {
        member.disk.failing.store(false, Ordering::SeqCst);
    }
    let restarted = start_member(&network, &consortium(4), owner, disks, 99);
    members.insert(owner, restarted);

    eventually("the record shared after the restart", || async {
        members[owner].node.record_shared(&key).unwrap().is_some()
    })
    .await;
    let shared = members[owner].node.record_shared(&key).unwrap().unwrap();
    // Past the ingest retry interval: whatever of the first attempt was still in flight has
    // had its chance to make a second file.
    tokio::time::sleep(Duration::from_secs(6)).await;
    for member in &members {
        assert_eq!(files_on(member).await, 1, "{}", member.node.name());
    }

    // And it is the record: the auditor recreates it without the owner.
    let auditor = &members[3].node;
    request_when_deposited(auditor, shared.file_id).await;
    let (receipt, recreated) = auditor
        .fetch_bytes(shared.file_id, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(receipt.bytes, RECORD_BYTES as u64);
    assert!(recreated == bytes, "recreated bytes differ");
    for member in &members {
        member.node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_share_that_registered_but_could_not_be_marked_is_not_registered_again() {
    let network = MemoryNetwork::new();
    let (members, leader) = consortium_with_leader(&network).await;
    let owner = &members[0];
    let bytes = record();
    let chunk_count = RECORD_BYTES.div_ceil(64 * 1024) as u64;
    let replication = u64::from(consortium(4).replication);

    // Hold registration back (no quorum) until the chunks are pushed, then make the owner's
    // private database fail and let the table register: the record cannot be marked shared,
    // so the ingest task tries again.
    let blocked: Vec<&Member> = members
        .iter()
        .enumerate()
        .filter(|(index, _)| *index != 0 && *index != leader)
        .map(|(_, member)| member)
        .collect();
    for member in &blocked {
        member.disk.failing.store(true, Ordering::SeqCst);
    }
    let key = owner.node.ingest("sensor/truck-9", &bytes).unwrap();
    eventually("every chunk pushed to its owners", || async {
        chunks_stored(&members) >= chunk_count * replication
    })
    .await;
    owner.disks.private.failing.store(true, Ordering::SeqCst);
    for member in &blocked {
        member.disk.failing.store(false, Ordering::SeqCst);
    }
    eventually("the master table on the owner's replica", || async {
        files_on(owner).await == 1
    })
    .await;
    assert!(!matches!(owner.node.record_shared(&key), Ok(Some(_))));
    // Through a failed attempt to mark it, and a retry or two.
    tokio::time::sleep(Duration::from_secs(6)).await;
    owner.disks.private.failing.store(false, Ordering::SeqCst);
    eventually("the record marked shared", || async {
        owner.node.record_shared(&key).unwrap().is_some()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    for member in &members {
        assert_eq!(files_on(member).await, 1, "{}", member.node.name());
    }
    for member in &members {
        member.node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_whose_owner_fails_before_submission_is_placed_afresh() {
    let network = MemoryNetwork::new();
    // Five members: with one gone, three remain to hold each chunk's three copies.
    let (members, leader) = consortium_of(&network, 5).await;
    let owner = &members[0];
    // A member that answers pings but cannot store chunks, then goes away for good; not the
    // leader, so the ledger keeps its quorum.
    let broken = (1..4).find(|index| *index != leader).unwrap();
    let broken_peer = members[broken].node.transport().local_peer();
    members[broken]
        .disks
        .chunks
        .failing
        .store(true, Ordering::SeqCst);
    let key = owner.node.ingest("sensor/truck-3", &record()).unwrap();
    // The first attempt places chunks on it (it answered the ping) and fails to push them.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(owner.node.record_shared(&key).unwrap().is_none());
    network.set_down(broken_peer, true);
    eventually(
        "the record shared without the member that went away",
        || async { owner.node.record_shared(&key).unwrap().is_some() },
    )
    .await;
    let shared = owner.node.record_shared(&key).unwrap().unwrap();
    let table = owner.node.file(shared.file_id).await.unwrap().table;
    let broken_id = ledger::MemberId::from_bytes(*broken_peer.as_bytes());
    assert!(
        table
            .chunk_owners
            .iter()
            .all(|owners| !owners.contains(&broken_id)),
        "placed on a member that was down"
    );
    assert_eq!(files_on(owner).await, 1);
    for member in &members {
        member.node.shutdown().await;
    }
}
