//! One ordered submission path per node: the admin API, the holder and the ingest task of one
//! member submit concurrently across leader changes, and every submission is acknowledged once,
//! applied, with no stale-nonce refusal. In one process on the in-memory transport.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{eventually, start};
use overlay::{MemoryNetwork, PeerId, Transport};
use tokio::task::JoinSet;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_submissions_from_one_member_all_apply_across_leader_changes() {
    let network = MemoryNetwork::new();
    let members = start(&network, 4);
    let peers: Vec<PeerId> = members
        .iter()
        .map(|member| member.node.transport().local_peer())
        .collect();
    let owner = &members[0].node;
    eventually("a leader", || async {
        owner.leader_id().await.ok().flatten().is_some()
    })
    .await;
    let stored = owner.store(vec![1u8; 64 * 1024]).await.unwrap();
    let auditor = &members[3].node;
    eventually("the file at the auditor", || async {
        auditor.file(stored.file_id).await.is_ok()
    })
    .await;

    // The auditor's node: the API files 1,000 access requests from many tasks at once; its
    // holder answers each (it holds a share) and its ingest task shares records meanwhile.
    let mut requests = JoinSet::new();
    for i in 0..1_000u32 {
        let node = auditor.clone();
        let file = stored.file_id;
        // Spread over ~4 s, so the leader changes below happen while requests are in flight.
        requests.spawn(async move {
            tokio::time::sleep(Duration::from_millis(u64::from(i) * 4)).await;
            node.request(file, format!("audit {i}")).await
        });
    }
    for i in 0..3u8 {
        auditor
            .ingest("sensor/truck-7", &vec![i; 32 * 1024])
            .unwrap();
    }
    // Links with some latency, so forwarded proposals are in flight when a leader goes.
    for from in &peers {
        for to in &peers {
            if from != to {
                network.set_latency(*from, *to, Duration::from_millis(5));
            }
        }
    }
    // Depose the leader twice while they are in flight.
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(600)).await;
        let leader = auditor.leader_id().await.unwrap().unwrap_or(1) as usize;
        network.set_down(peers[leader - 1], true);
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        network.set_down(peers[leader - 1], false);
    }
    let mut ids = std::collections::BTreeSet::new();
    while let Some(joined) = requests.join_next().await {
        let receipt = joined
            .unwrap()
            .unwrap_or_else(|error| panic!("request refused: {error}"));
        assert!(ids.insert(receipt.request_id), "acknowledged twice");
    }
    assert_eq!(ids.len(), 1_000);
    // Every request is on the chain, and the auditor's holder answered each one.
    eventually("the auditor answered every request", || async {
        let mut answered = 0;
        for id in &ids {
            let record = auditor.access_request(*id).await.ok().flatten();
            answered += usize::from(record.is_some_and(|r| !r.answers.is_empty()));
        }
        answered == ids.len()
    })
    .await;
    eventually("the ingested records are shared", || async {
        auditor.status().await.is_ok_and(|s| s.files == 4)
    })
    .await;
    for member in &members {
        member.node.shutdown().await;
    }
}
