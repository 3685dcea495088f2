//! A store that failed is reported to its caller and never shared later behind its back: the
//! caller's second `store` of the same bytes makes the only file. In one process on the in-memory
//! transport.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{eventually, start};
use overlay::{MemoryNetwork, PeerId, Transport};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_store_is_not_retried_behind_the_callers_back() {
    let network = MemoryNetwork::new();
    let members = start(&network, 4);
    let owner = &members[0].node;
    eventually("a leader", || async {
        owner.leader_id().await.ok().flatten().is_some()
    })
    .await;
    let others: Vec<PeerId> = members[1..]
        .iter()
        .map(|member| member.node.transport().local_peer())
        .collect();

    // Nobody to place chunks on: the store fails, and says why.
    for peer in &others {
        network.set_down(*peer, true);
    }
    let bytes = vec![5u8; 100 * 1024];
    let failed = owner.store(bytes.clone()).await;
    // Nothing of it was submitted: the error says so (no file named), and the record is gone.
    assert!(
        matches!(failed, Err(node::Error::StoreFailed { file: None, .. })),
        "{failed:?}"
    );
    for peer in &others {
        network.set_down(*peer, false);
    }
    // Longer than the ingest task's retry interval (5 s): it must leave the record alone.
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert_eq!(
        owner.status().await.unwrap().files,
        0,
        "shared behind the caller's back"
    );

    // The caller stores again: one file.
    let stored = owner.store(bytes).await.unwrap();
    eventually("the file on every member", || async {
        let mut all = true;
        for member in &members {
            all &= member.node.file(stored.file_id).await.is_ok();
        }
        all
    })
    .await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(owner.status().await.unwrap().files, 1);
    for member in &members {
        member.node.shutdown().await;
    }
}
