//! The chunk scrubber: re-hashes the chunks this node stores for others at a bounded rate and
//! quarantines any whose bytes rotted on disk. It is why serving a chunk does not hash it: the
//! store checked it when it was written, the scrubber keeps checking it, and the fetcher checks
//! every chunk it receives — one hash per byte on the fetch path.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use keyshare::ChunkHash;
use overlay::ChunkStore;
use tokio::sync::watch;

use crate::shared::Shared;

/// How often the scrubber takes a step.
const STEP_INTERVAL: Duration = Duration::from_secs(1);
/// Bytes re-hashed per step: 16 MiB/s is a few percent of a core at SHA3-256's ~400 MB/s, and
/// goes round 100 GiB of chunks in under two hours.
const STEP_BYTES: u64 = 16 << 20;
/// Rest between the end of one pass over the store and the start of the next, so a small store
/// is not re-read every second and the page cache stays with the chunks being served.
const PASS_REST: Duration = Duration::from_secs(6 * 3600);

pub(crate) async fn run<T>(
    shared: Arc<Shared<T>>,
    chunks: Arc<ChunkStore>,
    mut stopped: watch::Receiver<bool>,
) {
    let mut interval = tokio::time::interval(STEP_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut after: Option<ChunkHash> = None;
    loop {
        tokio::select! {
            biased;
            _ = stopped.changed() => return,
            _ = interval.tick() => {}
        }
        let store = chunks.clone();
        let step = shared
            .compute
            .run(move || store.scrub(after, STEP_BYTES))
            .await;
        let report = match step {
            Ok(Ok(report)) => report,
            Ok(Err(error)) => {
                tracing::warn!(%error, "scrubbing the chunk store failed; trying again");
                continue;
            }
            // The pool dropped the job: the node is stopping, or the step panicked.
            Err(_) if *stopped.borrow() => return,
            Err(error) => {
                tracing::error!(%error, "a scrub step did not finish; trying again");
                continue;
            }
        };
        let metrics = &shared.metrics;
        metrics
            .scrub_bytes
            .fetch_add(report.bytes, Ordering::Relaxed);
        metrics
            .chunks_quarantined
            .fetch_add(report.rotten.len() as u64, Ordering::Relaxed);
        for hash in &report.rotten {
            tracing::error!(%hash, "a stored chunk rotted on disk; quarantined, no longer served");
        }
        after = report.resume_after;
        if after.is_none() {
            tokio::select! {
                biased;
                _ = stopped.changed() => return,
                () = tokio::time::sleep(PASS_REST) => {}
            }
        }
    }
}
