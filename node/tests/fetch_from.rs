//! `Node::fetch_from`, the client–server baseline of `blocktorrent bench overlay`: asked to use
//! one owner, the fetch takes every chunk from that member alone, and a member that holds no
//! copy of some chunk is refused before any share is waited for.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{request_when_deposited, start_with_leader};
use overlay::MemoryNetwork;
use tokio::sync::mpsc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_owner_serves_every_chunk_and_a_non_owner_is_refused() {
    let network = MemoryNetwork::new();
    let members = start_with_leader(&network, 4).await;
    let data: Vec<u8> = (0..3 << 20).map(|i: u32| (i % 251) as u8).collect();
    let stored = members[0].node.store(data.clone()).await.unwrap();
    let auditor = members[3].node.clone();
    request_when_deposited(&auditor, stored.file_id).await;
    let record = auditor.file(stored.file_id).await.unwrap();
    let only = record.table.chunk_owners[0][0];
    assert!(
        record
            .table
            .chunk_owners
            .iter()
            .all(|owners| owners.contains(&only))
    );

    let (sink, mut events) = mpsc::channel(16);
    let collect = async move {
        let mut bytes = Vec::new();
        while let Some(event) = events.recv().await {
            if let node::FetchEvent::Data(chunk) = event {
                bytes.extend_from_slice(&chunk);
            }
        }
        bytes
    };
    let fetching = auditor.fetch_from(stored.file_id, Duration::from_secs(30), sink, Some(only));
    let (receipt, bytes) = tokio::join!(fetching, collect);
    let receipt = receipt.unwrap();
    assert_eq!(receipt.peers_used, 1);
    assert!(bytes == data, "recreated bytes differ");

    // The owner stored the file: it holds no chunk of it.
    let owner = members[0].node.name().to_owned();
    let owner_id = common::consortium(4)
        .member(&owner)
        .map(|member| member.id)
        .unwrap();
    let (sink, _events) = mpsc::channel(16);
    let refused = auditor
        .fetch_from(
            stored.file_id,
            Duration::from_secs(30),
            sink,
            Some(owner_id),
        )
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("holds no copy"), "{refused}");
}
