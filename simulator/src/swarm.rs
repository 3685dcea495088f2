//! The paper's claim, tested: fetching a file from its owners BitTorrent-style (every owner at
//! once) beats fetching it from one owner (client–server) when each link has a bandwidth cap.
//!
//! For each owner count `n`: a fresh consortium of `n + 2` members (the storing member, `n`
//! holders, the auditor) with one copy of each chunk, so the file's chunks spread over the `n`
//! holders; the auditor is cut off while the file is stored, so it holds no chunk itself. Once
//! the shares are released, the auditor's fetch is timed on the virtual clock: the time it takes
//! to pull every chunk over links of `bandwidth_bytes_per_s`. `n = 1` is the client–server
//! baseline.

use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use crate::error::SimError;
use crate::net::{LinkConfig, SimNetwork};
use crate::world::World;

/// Virtual seconds any step may take.
const STEP_BOUND: Duration = Duration::from_secs(600);

/// One owner count's result.
#[derive(Clone, Debug, Serialize)]
pub struct SwarmPoint {
    /// Members holding the file's chunks.
    pub owners: usize,
    /// Virtual seconds of the auditor's fetch (shares already released).
    pub fetch_s: f64,
    /// The one-owner time divided by this one.
    pub speedup: f64,
    /// Distinct peers the fetch used.
    pub peers_used: usize,
}

/// Runs the experiment for each count in `owner_counts`.
pub async fn experiment(
    seed: u64,
    owner_counts: &[usize],
    file_size_bytes: u64,
    chunk_size_bytes: u32,
    bandwidth_bytes_per_s: u64,
) -> Result<Vec<SwarmPoint>, SimError> {
    let mut points = Vec::new();
    for &owners in owner_counts {
        if owners == 0 {
            return Err(SimError::Config("an owner count must be at least 1".into()));
        }
        let (fetch_s, peers_used) = fetch_time(
            seed,
            owners,
            file_size_bytes,
            chunk_size_bytes,
            bandwidth_bytes_per_s,
        )
        .await?;
        points.push(SwarmPoint {
            owners,
            fetch_s,
            speedup: 0.0,
            peers_used,
        });
    }
    let baseline = points
        .iter()
        .find(|point| point.owners == 1)
        .map(|point| point.fetch_s);
    for point in &mut points {
        point.speedup = baseline.map_or(0.0, |one| one / point.fetch_s.max(f64::EPSILON));
    }
    Ok(points)
}

fn stuck(what: &str) -> SimError {
    SimError::Config(format!(
        "swarm experiment: {what} within {} virtual s",
        STEP_BOUND.as_secs()
    ))
}

async fn fetch_time(
    seed: u64,
    owners: usize,
    file_size_bytes: u64,
    chunk_size_bytes: u32,
    bandwidth_bytes_per_s: u64,
) -> Result<(f64, usize), SimError> {
    let links = LinkConfig {
        bandwidth_bytes_per_s: Some(bandwidth_bytes_per_s),
        ..LinkConfig::default()
    };
    let network = SimNetwork::new(seed ^ owners as u64, links);
    let members = owners + 2;
    let mut world = World::new(seed, members, chunk_size_bytes, Some(1), network)?;
    for index in 0..members {
        world.start(index)?;
    }
    let auditor_index = world.auditor();
    let auditor_peer = world.peer(auditor_index);
    let others: Vec<_> = (0..auditor_index).map(|i| world.peer(i)).collect();
    crate::wait_for_leader(&world).await?;
    // Cut the auditor off while the file is stored: no chunk is placed on it.
    for other in &others {
        world.network.set_cut(auditor_peer, *other, true);
        world.network.set_cut(*other, auditor_peer, true);
    }
    let owner = world
        .node(0)
        .cloned()
        .ok_or_else(|| stuck("the owner started"))?;
    let bytes = crate::workload::file_bytes(seed, owners, file_size_bytes);
    let stored = tokio::time::timeout(STEP_BOUND, owner.store(bytes))
        .await
        .map_err(|_| stuck("the file was not stored"))??;
    world.network.repair_all();
    let auditor = world
        .node(auditor_index)
        .cloned()
        .ok_or_else(|| stuck("the auditor started"))?;
    let deadline = Instant::now() + STEP_BOUND;
    let request = loop {
        if let Ok(record) = auditor.file(stored.file_id).await
            && record.deposits.is_some()
        {
            break auditor.request(stored.file_id, "swarm".into()).await?;
        }
        if Instant::now() >= deadline {
            return Err(stuck("the deposit did not reach the auditor"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let threshold = world.consortium.threshold as usize;
    loop {
        let released = auditor
            .access_request(request.request_id)
            .await?
            .map_or(0, |access| access.released().count());
        if released >= threshold {
            break;
        }
        if Instant::now() >= deadline {
            return Err(stuck("the shares were not released"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let started = Instant::now();
    let (sink, mut events) = tokio::sync::mpsc::channel(16);
    let drain = async { while events.recv().await.is_some() {} };
    let (receipt, ()) = tokio::join!(auditor.fetch(stored.file_id, STEP_BOUND, sink), drain);
    let receipt = receipt?;
    let seconds = started.elapsed().as_secs_f64();
    world.shutdown().await;
    Ok((seconds, receipt.peers_used))
}
