//! Async drivers over any [`Transport`]: [`fetch`] runs the [`FetchScheduler`] and verifies every
//! chunk; [`push`] sends chunks to their owners and collects acknowledgements.
//!
//! Time comes from `tokio::time`, so a paused runtime drives both in virtual time. Arriving chunks
//! are hashed where an [`Offload`] says: in the request's own task ([`InTask`], what a test or the
//! simulator wants: one thread, a fixed order), or on a pool the caller owns (a node's compute
//! pool), so that hashing at ~0.7 ms per 256 KiB chunk does not hold the async threads that drive
//! QUIC.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use keyshare::ChunkHash;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::error::{FetchError, TransportError};
use crate::peer::PeerId;
use crate::scheduler::{AskId, ChunkSpec, Event, FetchScheduler, Outcome, SchedulerConfig};
use crate::transport::Transport;
use crate::wire::{Request, Response};

/// Where a fetch runs its CPU work on arriving chunks (hashing them). The library owns no
/// threads: a caller that wants the work off the async threads hands in a pool here. It chooses
/// only the thread; the fetch itself hashes and compares.
pub trait Offload: Clone + Send + Sync + 'static {
    /// Runs `job` and yields its result; `None` if it could not run (the pool is stopping),
    /// which ends the fetch with [`FetchError::Stopped`].
    fn offload<R, F>(&self, job: F) -> impl Future<Output = Option<R>> + Send
    where
        R: Send + 'static,
        F: FnOnce() -> R + Send + 'static;
}

/// Runs the work in the request's task: on a multi-threaded runtime that is every worker, on a
/// current-thread runtime it keeps the run deterministic.
#[derive(Clone, Copy, Debug, Default)]
pub struct InTask;

impl Offload for InTask {
    async fn offload<R, F>(&self, job: F) -> Option<R>
    where
        R: Send + 'static,
        F: FnOnce() -> R + Send + 'static,
    {
        Some(job())
    }
}

/// What a successful fetch did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FetchReport {
    /// Chunks delivered.
    pub chunks: u32,
    /// Ciphertext bytes delivered.
    pub bytes: u64,
    /// The scheduler's account: peers used, liars, dead peers, refetches.
    pub outcome: Outcome,
}

fn elapsed_ms(start: Instant) -> u64 {
    start.elapsed().as_millis() as u64
}

/// Fetches `chunks` from their owners, hashes each on `offload`, hands each verified chunk to
/// `deliver(index, bytes)` exactly once (in completion order), and reports how it went.
/// `deliver` may fail, which stops the fetch with that error.
pub async fn fetch<T, O, E>(
    transport: Arc<T>,
    offload: O,
    chunks: Vec<ChunkSpec>,
    config: SchedulerConfig,
    request_timeout: Duration,
    mut deliver: impl FnMut(u32, Vec<u8>) -> Result<(), E>,
) -> Result<Result<FetchReport, FetchError>, E>
where
    T: Transport,
    O: Offload,
{
    let chunk_count = chunks.len() as u32;
    let mut scheduler = match FetchScheduler::new(chunks, config) {
        Ok(scheduler) => scheduler,
        Err(error) => return Ok(Err(error)),
    };
    let start = Instant::now();
    let mut tasks = JoinSet::new();
    let mut bytes_delivered = 0u64;
    let outcome = loop {
        for send in scheduler.poll_sends(elapsed_ms(start)) {
            let transport = transport.clone();
            let offload = offload.clone();
            tasks.spawn(async move {
                let request = Request::GetChunk { hash: send.hash };
                let answer = transport.request(send.peer, request, request_timeout).await;
                Verdict::of(send.peer, send.hash, answer, &offload)
                    .await
                    .map(|verdict| verdict.into_event(send.id))
            });
        }
        if let Some(outcome) = scheduler.outcome() {
            break outcome;
        }
        let Some(joined) = tasks.join_next().await else {
            // Unreachable by the scheduler's contract (unfinished implies in flight); fail
            // rather than spin.
            break Err(FetchError::Unavailable {
                chunks: (0..chunk_count).collect(),
            });
        };
        let Ok(judged) = joined else {
            continue;
        };
        // The pool is stopping: every other chunk would fail the same way, at no peer's fault.
        let Some((event, bytes)) = judged else {
            break Err(FetchError::Stopped);
        };
        if let Some(index) = scheduler.handle(event, elapsed_ms(start))
            && let Some(bytes) = bytes
        {
            bytes_delivered += bytes.len() as u64;
            deliver(index, bytes)?;
        }
    };
    tasks.abort_all();
    Ok(outcome.map(|outcome| FetchReport {
        chunks: chunk_count,
        bytes: bytes_delivered,
        outcome,
    }))
}

/// A chunk answer, judged.
enum Verdict {
    Good(Vec<u8>),
    Bad,
    Refused,
    Timeout,
    Unreachable,
}

impl Verdict {
    /// Judges a transport answer, checking the chunk against its hash; `None` if the chunk could
    /// not be hashed here (the pool is stopping).
    async fn of(
        peer: PeerId,
        hash: ChunkHash,
        answer: Result<Response, TransportError>,
        offload: &impl Offload,
    ) -> Option<Self> {
        Some(match answer {
            Ok(Response::Chunk { bytes }) => {
                let hashed = offload.offload(move || {
                    let matches = ChunkHash::of(&bytes) == hash;
                    (bytes, matches)
                });
                match hashed.await? {
                    (bytes, true) => Self::Good(bytes),
                    (_, false) => {
                        tracing::warn!(%peer, %hash, "peer served a chunk that does not match its hash");
                        Self::Bad
                    }
                }
            }
            Ok(Response::Error(error)) => {
                tracing::debug!(%peer, %hash, %error, "peer refused a chunk");
                Self::Refused
            }
            Ok(_) | Err(TransportError::BadReply { .. }) => {
                tracing::warn!(%peer, %hash, "peer answered a chunk request with nonsense");
                Self::Bad
            }
            Err(TransportError::Timeout { .. }) => Self::Timeout,
            Err(error) => {
                tracing::debug!(%peer, %error, "peer unreachable");
                Self::Unreachable
            }
        })
    }

    /// The scheduler's event and the chunk's bytes if good.
    fn into_event(self, id: AskId) -> (Event, Option<Vec<u8>>) {
        match self {
            Self::Good(bytes) => (Event::ChunkOk { id }, Some(bytes)),
            Self::Bad => (Event::ChunkBad { id }, None),
            Self::Refused => (Event::Refused { id }, None),
            Self::Timeout => (Event::Timeout { id }, None),
            Self::Unreachable => (Event::PeerUnreachable { id }, None),
        }
    }
}

/// One chunk to push and the peers that should hold it.
#[derive(Clone, Debug)]
pub struct PushItem {
    /// The chunk's hash.
    pub hash: ChunkHash,
    /// Ciphertext and tag, shared between the pushes to its owners.
    pub bytes: Arc<Vec<u8>>,
    /// Its owners.
    pub owners: Vec<PeerId>,
}

/// What a push achieved.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PushReport {
    /// (chunk position, peer) pairs that acknowledged.
    pub acknowledged: BTreeSet<(usize, PeerId)>,
    /// (chunk position, peer, reason) for each push that failed.
    pub failed: Vec<(usize, PeerId, String)>,
}

/// Pushes every item to each of its owners, at most `max_in_flight` at a time, each bounded by
/// `request_timeout`. Never fails as a whole: the report says who acknowledged what.
pub async fn push<T: Transport>(
    transport: Arc<T>,
    items: &[PushItem],
    max_in_flight: usize,
    request_timeout: Duration,
) -> PushReport {
    let mut report = PushReport::default();
    let mut tasks = JoinSet::new();
    let mut jobs: std::collections::VecDeque<(usize, PeerId)> = items
        .iter()
        .enumerate()
        .flat_map(|(position, item)| item.owners.iter().map(move |owner| (position, *owner)))
        .collect();
    while !jobs.is_empty() || !tasks.is_empty() {
        while tasks.len() < max_in_flight.max(1)
            && let Some((position, owner)) = jobs.pop_front()
        {
            let transport = transport.clone();
            let item = &items[position];
            let request = Request::PutChunk {
                hash: item.hash,
                bytes: item.bytes.as_ref().clone(),
            };
            tasks.spawn(async move {
                let answer = transport.request(owner, request, request_timeout).await;
                (position, owner, answer)
            });
        }
        let Some(joined) = tasks.join_next().await else {
            break;
        };
        let Ok((position, owner, answer)) = joined else {
            continue;
        };
        match answer {
            Ok(Response::Stored) => {
                report.acknowledged.insert((position, owner));
            }
            Ok(Response::Error(error)) => report.failed.push((position, owner, error.to_string())),
            Ok(_) => report
                .failed
                .push((position, owner, "unexpected answer".to_owned())),
            Err(error) => report.failed.push((position, owner, error.to_string())),
        }
    }
    report
        .failed
        .sort_by_key(|(position, peer, _)| (*position, *peer));
    report
}
