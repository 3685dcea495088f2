//! The node library is deterministic under the simulator's conditions (DESIGN.md "Determinism
//! rules"): five members on the in-memory network, one paused current-thread runtime, virtual
//! wall clock, seeded RNGs, compute inline. The same seed run twice sends the same messages at
//! the same virtual times and builds the same chains; another seed does not.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Disks, Member, consortium, eventually, request_when_deposited, start_member_with};
use ledger::BlockHash;
use overlay::{MemoryNetwork, TraceEvent};

/// What one run leaves behind.
#[derive(Debug, PartialEq, Eq)]
struct Run {
    trace: Vec<TraceEvent>,
    /// (height, head) of every member at the end.
    heads: Vec<(u64, BlockHash)>,
    file_id: keyshare::FileId,
}

fn run(seed: u64) -> Run {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    runtime.block_on(async move {
        let network = MemoryNetwork::new();
        network.start_trace();
        let consortium = consortium(5);
        let origin = tokio::time::Instant::now();
        // 2026-01-01, advancing with the runtime's (virtual) clock.
        let clock: node::Clock =
            Arc::new(move || 1_767_225_600_000 + origin.elapsed().as_millis() as u64);
        let members: Vec<Member> = (0..5)
            .map(|i| {
                start_member_with(
                    &network,
                    &consortium,
                    i,
                    Disks::default(),
                    seed * 10 + i as u64,
                    clock.clone(),
                )
            })
            .collect();
        eventually("a leader", || async {
            members[0].node.leader_id().await.ok().flatten().is_some()
        })
        .await;
        let data: Vec<u8> = (0..200 * 1024u32)
            .map(|i| (i.wrapping_mul(31) ^ seed as u32) as u8)
            .collect();
        let stored = members[0].node.store(data.clone()).await.unwrap();
        let auditor = &members[4].node;
        request_when_deposited(auditor, stored.file_id).await;
        let (_, recreated) = auditor
            .fetch_bytes(stored.file_id, Duration::from_secs(30))
            .await
            .unwrap();
        assert!(recreated == data, "recreated bytes differ");
        // Let every replica apply what the leader committed.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let mut heads = Vec::new();
        for member in &members {
            let status = member.node.status().await.unwrap();
            heads.push((status.height, status.head_hash));
        }
        for member in &members {
            member.node.shutdown().await;
        }
        Run {
            trace: network.trace(),
            heads,
            file_id: stored.file_id,
        }
    })
}

#[test]
fn the_same_seed_gives_the_same_run_and_another_seed_another() {
    let first = run(1);
    let second = run(1);
    assert!(first.trace.len() > 100, "{} events", first.trace.len());
    assert!(
        first.heads.windows(2).all(|pair| pair[0] == pair[1]),
        "replicas disagree: {:?}",
        first.heads
    );
    if let Some(at) = first
        .trace
        .iter()
        .zip(&second.trace)
        .position(|(a, b)| a != b)
    {
        panic!(
            "the runs part at event {at}: {:?} vs {:?}",
            first.trace[at], second.trace[at]
        );
    }
    assert_eq!(first, second);
    let other = run(2);
    assert_ne!(other.file_id, first.file_id);
    assert_ne!(other.heads, first.heads);
}
