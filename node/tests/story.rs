//! The store → owner offline → recreate story through the node library, in one process, on
//! real QUIC and redb files.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use node::demo::{DemoOptions, run, sensor_dataset};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auditor_recreates_a_file_without_its_owner() {
    let options = DemoOptions {
        members: 5,
        file_size_bytes: 3 << 20,
        seed: 11,
        compute: node::Compute::pool(|job| {
            tokio::task::spawn_blocking(job);
        }),
    };
    let mut lines = Vec::new();
    let report = tokio::time::timeout(
        Duration::from_secs(120),
        run(&options, |line| lines.push(line)),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(report.identical, "{lines:#?}");
    assert!(report.chain_ok);
    assert_eq!(report.bytes, 3 << 20);
    assert_eq!(report.chunks, 12);
    assert_eq!(report.threshold, 3);
    // Owner gone: every chunk came from the other members.
    assert!(report.peers_used >= 2);
    // The table and its deposit, then the request, then the releases: blocks that follow one
    // another (transactions submitted together may share a block).
    assert!(report.height >= 3, "height {}", report.height);
}

#[test]
fn dataset_is_deterministic_and_sized() {
    let a = sensor_dataset(100_000, 3);
    assert_eq!(a.len(), 100_000);
    assert_eq!(a, sensor_dataset(100_000, 3));
    assert_ne!(a, sensor_dataset(100_000, 4));
    assert!(a.starts_with(b"shipment,sensor,timestamp_ms,"));
}
