//! The fetch scheduler: which chunk to ask of which owner next. Sans-IO: it takes the chunk list,
//! events and `now` (milliseconds on the caller's clock) and returns the requests to send.
//!
//! Policy:
//! - Chunks are assigned lowest index first, so a writer can mostly stream.
//! - For each chunk, among its owners that are alive, honest, not yet tried for it and below the
//!   per-peer in-flight bound, pick the one with the best expected completion time:
//!   `rtt + (in_flight + 1) × chunk_size / throughput`, from per-peer estimates updated on every
//!   answer (exponentially weighted).
//! - At most `total_in_flight` requests are outstanding overall.
//! - Endgame: once every unfinished chunk is in flight and at most `endgame_chunks` remain, idle
//!   capacity duplicates the oldest single-copy requests to another owner; the first good
//!   answer wins.
//! - A chunk that fails its hash marks its peer as lying (never asked again) and goes to the next
//!   owner; a refusal moves the chunk to the next owner for good. A timeout halves the peer's
//!   throughput estimate, so the chunk usually goes elsewhere, but a slow peer may be asked
//!   again. An unreachable peer, or one that times out repeatedly in a row, is dropped for the
//!   rest of the fetch.
//! - When a chunk has no owner left to try, or has been asked `max_requests_per_chunk` times,
//!   the fetch fails, naming every such chunk.

use std::collections::{BTreeMap, BTreeSet};

use keyshare::ChunkHash;

use crate::error::FetchError;
use crate::peer::PeerId;

/// One chunk to fetch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChunkSpec {
    /// Its index in the file.
    pub index: u32,
    /// SHA3-256 of its ciphertext.
    pub hash: ChunkHash,
    /// Its size in bytes, for the completion-time estimate.
    pub size_bytes: u32,
    /// Peers that should hold it, best first.
    pub owners: Vec<PeerId>,
}

/// Bounds and estimates the scheduler starts from.
#[derive(Clone, Debug)]
pub struct SchedulerConfig {
    /// Requests outstanding per peer.
    pub per_peer_in_flight: usize,
    /// Requests outstanding overall.
    pub total_in_flight: usize,
    /// Consecutive timeouts after which a peer is treated as unreachable.
    pub timeouts_before_dead: u32,
    /// Requests for one chunk after which it is given up.
    pub max_requests_per_chunk: u32,
    /// Unfinished chunks at or below which the endgame duplicates requests.
    pub endgame_chunks: usize,
    /// RTT assumed for a peer not yet heard from.
    pub initial_rtt_ms: u64,
    /// Throughput assumed for a peer not yet heard from, in bytes per millisecond.
    pub initial_throughput_bytes_per_ms: u64,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            per_peer_in_flight: 16,
            total_in_flight: 64,
            timeouts_before_dead: 3,
            max_requests_per_chunk: 8,
            endgame_chunks: 4,
            initial_rtt_ms: 5,
            initial_throughput_bytes_per_ms: 50_000,
        }
    }
}

/// Identifies one ask the scheduler made (not a ledger request id).
pub type AskId = u64;

/// A chunk to ask for: ask `peer` for chunk `index` (hash `hash`). (Named so it does not
/// shadow the `Send` trait.)
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChunkAsk {
    /// Report the answer under this id.
    pub id: AskId,
    /// The chunk's index.
    pub index: u32,
    /// The chunk's hash.
    pub hash: ChunkHash,
    /// Whom to ask.
    pub peer: PeerId,
}

/// What happened to a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// The chunk arrived and matched its hash.
    ChunkOk {
        /// The request.
        id: AskId,
    },
    /// Bytes arrived that did not match the hash (or did not decode): the peer lies.
    ChunkBad {
        /// The request.
        id: AskId,
    },
    /// The peer refused (does not hold the chunk, or failed internally).
    Refused {
        /// The request.
        id: AskId,
    },
    /// No answer in time.
    Timeout {
        /// The request.
        id: AskId,
    },
    /// The peer could not be reached at all.
    PeerUnreachable {
        /// The request.
        id: AskId,
    },
}

/// How a finished fetch went.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Peers that delivered at least one good chunk.
    pub peers_used: BTreeSet<PeerId>,
    /// Peers that served bytes not matching the hash.
    pub lying_peers: BTreeSet<PeerId>,
    /// Peers dropped as unreachable or too slow.
    pub dead_peers: BTreeSet<PeerId>,
    /// Chunks that had to be asked again after a failed request (endgame duplicates do not
    /// count).
    pub chunks_refetched: u32,
}

#[derive(Clone, Debug)]
struct PeerState {
    rtt_ms: f64,
    throughput_bytes_per_ms: f64,
    in_flight: usize,
    consecutive_timeouts: u32,
    lying: bool,
    dead: bool,
}

impl PeerState {
    fn usable(&self) -> bool {
        !self.lying && !self.dead
    }
}

#[derive(Clone, Debug, Default)]
struct ChunkState {
    done: bool,
    /// Owners not to ask (again) for this chunk: outstanding, refused it, or served it.
    tried: BTreeSet<PeerId>,
    outstanding: Vec<AskId>,
    requests_sent: u32,
    failed_requests: u32,
}

#[derive(Clone, Debug)]
struct InFlight {
    chunk: usize,
    peer: PeerId,
    sent_ms: u64,
    /// The peer's in-flight count when sent (this one included), for the throughput estimate.
    queue_depth: usize,
}

/// Weight of a new sample in the exponentially weighted estimates.
const EWMA_WEIGHT: f64 = 0.25;

/// The sans-IO chunk fetch scheduler.
#[derive(Debug)]
pub struct FetchScheduler {
    config: SchedulerConfig,
    chunks: Vec<ChunkSpec>,
    state: Vec<ChunkState>,
    peers: BTreeMap<PeerId, PeerState>,
    in_flight: BTreeMap<AskId, InFlight>,
    next_id: AskId,
    remaining: usize,
    /// Index of the lowest chunk that may still need a first request.
    cursor: usize,
    /// Positions of chunks no owner is left to serve.
    failed: BTreeSet<usize>,
    outcome: Outcome,
}

impl FetchScheduler {
    /// A scheduler for `chunks`. Fails if a chunk lists no owners.
    pub fn new(chunks: Vec<ChunkSpec>, config: SchedulerConfig) -> Result<Self, FetchError> {
        let mut peers = BTreeMap::new();
        for chunk in &chunks {
            if chunk.owners.is_empty() {
                return Err(FetchError::NoOwners { index: chunk.index });
            }
            for owner in &chunk.owners {
                peers.entry(*owner).or_insert_with(|| PeerState {
                    rtt_ms: config.initial_rtt_ms as f64,
                    throughput_bytes_per_ms: config.initial_throughput_bytes_per_ms.max(1) as f64,
                    in_flight: 0,
                    consecutive_timeouts: 0,
                    lying: false,
                    dead: false,
                });
            }
        }
        Ok(Self {
            config: SchedulerConfig {
                per_peer_in_flight: config.per_peer_in_flight.max(1),
                total_in_flight: config.total_in_flight.max(1),
                ..config
            },
            state: vec![ChunkState::default(); chunks.len()],
            remaining: chunks.len(),
            chunks,
            peers,
            in_flight: BTreeMap::new(),
            next_id: 0,
            cursor: 0,
            failed: BTreeSet::new(),
            outcome: Outcome::default(),
        })
    }

    /// Requests to send now. Call after every event and at start.
    pub fn poll_sends(&mut self, now_ms: u64) -> Vec<ChunkAsk> {
        let mut sends = Vec::new();
        self.first_requests(now_ms, &mut sends);
        if self.remaining <= self.config.endgame_chunks && self.all_unfinished_in_flight() {
            self.endgame_requests(now_ms, &mut sends);
        }
        sends
    }

    fn first_requests(&mut self, now_ms: u64, sends: &mut Vec<ChunkAsk>) {
        while self.cursor < self.chunks.len() && self.state[self.cursor].done {
            self.cursor += 1;
        }
        for chunk in self.cursor..self.chunks.len() {
            if self.in_flight.len() >= self.config.total_in_flight {
                return;
            }
            let state = &self.state[chunk];
            if state.done || !state.outstanding.is_empty() || self.failed.contains(&chunk) {
                continue;
            }
            if let Some(peer) = self.best_owner(chunk) {
                sends.push(self.send(chunk, peer, now_ms));
            }
        }
    }

    fn all_unfinished_in_flight(&self) -> bool {
        self.state.iter().enumerate().all(|(chunk, state)| {
            state.done || !state.outstanding.is_empty() || self.failed.contains(&chunk)
        })
    }

    /// Duplicates single-copy requests, oldest first, while capacity remains.
    fn endgame_requests(&mut self, now_ms: u64, sends: &mut Vec<ChunkAsk>) {
        let mut candidates: Vec<(u64, usize)> = self
            .in_flight
            .values()
            .filter(|request| self.state[request.chunk].outstanding.len() == 1)
            .map(|request| (request.sent_ms, request.chunk))
            .collect();
        candidates.sort_unstable();
        for (_, chunk) in candidates {
            if self.in_flight.len() >= self.config.total_in_flight {
                return;
            }
            if let Some(peer) = self.best_owner(chunk) {
                sends.push(self.send(chunk, peer, now_ms));
            }
        }
    }

    /// The usable owner of `chunk` with the earliest expected completion, not yet tried for it.
    fn best_owner(&self, chunk: usize) -> Option<PeerId> {
        let spec = &self.chunks[chunk];
        let tried = &self.state[chunk].tried;
        let mut best: Option<(f64, PeerId)> = None;
        for owner in &spec.owners {
            let Some(peer) = self.peers.get(owner) else {
                continue;
            };
            if !peer.usable()
                || tried.contains(owner)
                || peer.in_flight >= self.config.per_peer_in_flight
            {
                continue;
            }
            let expected_ms = peer.rtt_ms
                + (peer.in_flight + 1) as f64 * f64::from(spec.size_bytes)
                    / peer.throughput_bytes_per_ms;
            // Strictly better only: ties keep the earlier (better-placed) owner.
            if best.is_none_or(|(best_ms, _)| expected_ms < best_ms) {
                best = Some((expected_ms, *owner));
            }
        }
        best.map(|(_, peer)| peer)
    }

    fn send(&mut self, chunk: usize, peer: PeerId, now_ms: u64) -> ChunkAsk {
        let id = self.next_id;
        self.next_id += 1;
        let queue_depth = self.peers.get_mut(&peer).map_or(1, |state| {
            state.in_flight += 1;
            state.in_flight
        });
        let state = &mut self.state[chunk];
        state.tried.insert(peer);
        state.outstanding.push(id);
        state.requests_sent += 1;
        self.in_flight.insert(
            id,
            InFlight {
                chunk,
                peer,
                sent_ms: now_ms,
                queue_depth,
            },
        );
        ChunkAsk {
            id,
            index: self.chunks[chunk].index,
            hash: self.chunks[chunk].hash,
            peer,
        }
    }

    /// Takes one event. For `ChunkOk`, returns the index of the chunk if this answer is the
    /// first good one for it (the caller keeps those bytes and drops later duplicates).
    /// Events for unknown or already-settled request ids are ignored.
    pub fn handle(&mut self, event: Event, now_ms: u64) -> Option<u32> {
        let id = match event {
            Event::ChunkOk { id }
            | Event::ChunkBad { id }
            | Event::Refused { id }
            | Event::Timeout { id }
            | Event::PeerUnreachable { id } => id,
        };
        let request = self.in_flight.remove(&id)?;
        let chunk = request.chunk;
        self.state[chunk].outstanding.retain(|other| *other != id);
        if !matches!(event, Event::ChunkOk { .. }) {
            self.state[chunk].failed_requests += 1;
        }
        if let Some(peer) = self.peers.get_mut(&request.peer) {
            peer.in_flight = peer.in_flight.saturating_sub(1);
        }
        let completed = match event {
            Event::ChunkOk { .. } => self.on_ok(&request, now_ms),
            Event::ChunkBad { .. } => {
                self.mark(request.peer, |peer| peer.lying = true);
                self.outcome.lying_peers.insert(request.peer);
                None
            }
            Event::Refused { .. } => None,
            Event::Timeout { .. } => {
                // Slow is not wrong: the peer may be asked for this chunk again, but its
                // estimate drops so faster owners win first.
                self.state[chunk].tried.remove(&request.peer);
                let limit = self.config.timeouts_before_dead;
                let waited_ms = now_ms.saturating_sub(request.sent_ms) as f64;
                self.mark(request.peer, |peer| {
                    peer.consecutive_timeouts += 1;
                    peer.dead |= peer.consecutive_timeouts >= limit;
                    peer.throughput_bytes_per_ms = (peer.throughput_bytes_per_ms / 2.0).max(1e-3);
                    peer.rtt_ms = peer.rtt_ms.max(waited_ms);
                });
                None
            }
            Event::PeerUnreachable { .. } => {
                self.mark(request.peer, |peer| peer.dead = true);
                None
            }
        };
        self.settle_failures();
        completed
    }

    fn on_ok(&mut self, request: &InFlight, now_ms: u64) -> Option<u32> {
        let size = f64::from(self.chunks[request.chunk].size_bytes);
        if let Some(peer) = self.peers.get_mut(&request.peer) {
            let elapsed_ms = (now_ms.saturating_sub(request.sent_ms) as f64).max(0.1);
            // The request waited behind `queue_depth - 1` others, so the link moved about
            // `queue_depth` chunks in `elapsed`. The RTT sample is the time one chunk took beyond
            // its transfer time, floored at zero.
            let throughput = size * request.queue_depth as f64 / elapsed_ms;
            let rtt = (elapsed_ms - size / throughput.max(1e-9)).max(0.0);
            peer.throughput_bytes_per_ms =
                (1.0 - EWMA_WEIGHT) * peer.throughput_bytes_per_ms + EWMA_WEIGHT * throughput;
            peer.rtt_ms = (1.0 - EWMA_WEIGHT) * peer.rtt_ms + EWMA_WEIGHT * rtt;
            peer.consecutive_timeouts = 0;
        }
        let state = &mut self.state[request.chunk];
        if state.done {
            return None;
        }
        state.done = true;
        self.remaining -= 1;
        self.outcome.peers_used.insert(request.peer);
        if state.failed_requests > 0 {
            self.outcome.chunks_refetched += 1;
        }
        Some(self.chunks[request.chunk].index)
    }

    fn mark(&mut self, peer: PeerId, change: impl FnOnce(&mut PeerState)) {
        if let Some(state) = self.peers.get_mut(&peer) {
            change(state);
            if state.dead {
                self.outcome.dead_peers.insert(peer);
            }
        }
    }

    /// Marks failed every unfinished chunk with nothing outstanding and no owner left to ask.
    fn settle_failures(&mut self) {
        for chunk in 0..self.chunks.len() {
            let state = &self.state[chunk];
            if state.done || !state.outstanding.is_empty() {
                continue;
            }
            let spec = &self.chunks[chunk];
            let askable = spec.owners.iter().any(|owner| {
                !state.tried.contains(owner) && self.peers.get(owner).is_some_and(PeerState::usable)
            });
            if !askable || state.requests_sent >= self.config.max_requests_per_chunk {
                self.failed.insert(chunk);
            }
        }
    }

    /// Whether every chunk is either fetched or given up on.
    pub fn is_finished(&self) -> bool {
        self.remaining == self.failed.len()
    }

    /// The result once [`Self::is_finished`]: the outcome, or the chunks nobody could serve.
    pub fn outcome(&self) -> Option<Result<Outcome, FetchError>> {
        if !self.is_finished() {
            return None;
        }
        if self.remaining == 0 {
            Some(Ok(self.outcome.clone()))
        } else {
            Some(Err(FetchError::Unavailable {
                chunks: self
                    .failed
                    .iter()
                    .map(|chunk| self.chunks[*chunk].index)
                    .collect(),
            }))
        }
    }

    /// Requests currently outstanding.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Chunks not yet fetched.
    pub fn remaining(&self) -> usize {
        self.remaining
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHUNK: u32 = 256 * 1024;

    fn peer(n: u8) -> PeerId {
        PeerId::from_bytes([n; 32])
    }

    fn chunks(count: u32, owners: &[PeerId]) -> Vec<ChunkSpec> {
        (0..count)
            .map(|index| ChunkSpec {
                index,
                hash: ChunkHash::from_bytes([index as u8; 32]),
                size_bytes: CHUNK,
                owners: owners.to_vec(),
            })
            .collect()
    }

    /// Drives the scheduler by hand: each peer answers with `reply(peer)` after `delay(peer)` ms.
    /// Returns the outcome and the number of requests each peer received.
    fn drive(
        scheduler: &mut FetchScheduler,
        reply: impl Fn(PeerId, AskId) -> Event,
        delay_ms: impl Fn(PeerId) -> u64,
    ) -> (Result<Outcome, FetchError>, BTreeMap<PeerId, u32>) {
        let mut now = 0;
        let mut pending: BTreeMap<(u64, AskId), PeerId> = BTreeMap::new();
        let mut asked = BTreeMap::new();
        for _ in 0..100_000 {
            for send in scheduler.poll_sends(now) {
                *asked.entry(send.peer).or_insert(0) += 1;
                pending.insert((now + delay_ms(send.peer), send.id), send.peer);
            }
            if let Some(outcome) = scheduler.outcome() {
                return (outcome, asked);
            }
            let Some(((at, id), peer)) = pending.pop_first() else {
                panic!("scheduler stalled with nothing in flight");
            };
            now = at;
            scheduler.handle(reply(peer, id), now);
        }
        panic!("did not finish");
    }

    #[test]
    fn healthy_peers_share_the_load_and_respect_bounds() {
        let owners = [peer(1), peer(2), peer(3)];
        let config = SchedulerConfig {
            per_peer_in_flight: 4,
            total_in_flight: 8,
            ..SchedulerConfig::default()
        };
        let mut scheduler = FetchScheduler::new(chunks(60, &owners), config).unwrap();
        let first = scheduler.poll_sends(0);
        assert_eq!(first.len(), 8, "total in-flight bound");
        let mut per_peer = BTreeMap::new();
        for send in &first {
            *per_peer.entry(send.peer).or_insert(0) += 1;
        }
        assert!(per_peer.values().all(|count| *count <= 4));
        let mut scheduler =
            FetchScheduler::new(chunks(60, &owners), SchedulerConfig::default()).unwrap();
        let (outcome, asked) = drive(&mut scheduler, |_, id| Event::ChunkOk { id }, |_| 10);
        let outcome = outcome.unwrap();
        assert_eq!(outcome.peers_used.len(), 3);
        assert!(asked.values().all(|count| *count >= 10), "{asked:?}");
    }

    #[test]
    fn prefers_the_fast_peer() {
        let fast = peer(1);
        let slow = peer(2);
        let mut scheduler =
            FetchScheduler::new(chunks(200, &[slow, fast]), SchedulerConfig::default()).unwrap();
        let (outcome, asked) = drive(
            &mut scheduler,
            |_, id| Event::ChunkOk { id },
            |p| if p == fast { 2 } else { 200 },
        );
        outcome.unwrap();
        assert!(asked[&fast] > 4 * asked[&slow], "{asked:?}");
    }

    #[test]
    fn lying_peer_is_dropped_and_its_chunks_refetched() {
        let liar = peer(1);
        let honest = peer(2);
        let mut scheduler =
            FetchScheduler::new(chunks(40, &[liar, honest]), SchedulerConfig::default()).unwrap();
        let (outcome, asked) = drive(
            &mut scheduler,
            |p, id| {
                if p == liar {
                    Event::ChunkBad { id }
                } else {
                    Event::ChunkOk { id }
                }
            },
            |_| 5,
        );
        let outcome = outcome.unwrap();
        assert_eq!(outcome.lying_peers, BTreeSet::from([liar]));
        assert_eq!(outcome.peers_used, BTreeSet::from([honest]));
        assert!(outcome.chunks_refetched >= 1);
        // Once caught, the liar gets no further requests beyond those already in flight.
        assert!(asked[&liar] <= 16, "{asked:?}");
    }

    #[test]
    fn dead_and_slow_peers_are_routed_around() {
        let dead = peer(1);
        let stuck = peer(2);
        let good = peer(3);
        let mut scheduler =
            FetchScheduler::new(chunks(30, &[dead, stuck, good]), SchedulerConfig::default())
                .unwrap();
        let (outcome, _) = drive(
            &mut scheduler,
            |p, id| match p {
                p if p == dead => Event::PeerUnreachable { id },
                p if p == stuck => Event::Timeout { id },
                _ => Event::ChunkOk { id },
            },
            |p| if p == stuck { 1000 } else { 3 },
        );
        let outcome = outcome.unwrap();
        // The stuck peer timed out repeatedly and was dropped; every chunk came from the good one.
        assert_eq!(outcome.dead_peers, BTreeSet::from([dead, stuck]));
        assert_eq!(outcome.peers_used, BTreeSet::from([good]));
        assert!(outcome.chunks_refetched >= 1);
    }

    #[test]
    fn names_the_chunks_nobody_could_serve() {
        let a = peer(1);
        let b = peer(2);
        let mut specs = chunks(6, &[a]);
        specs[2].owners = vec![b];
        specs[4].owners = vec![b];
        let mut scheduler = FetchScheduler::new(specs, SchedulerConfig::default()).unwrap();
        let (outcome, _) = drive(
            &mut scheduler,
            |p, id| {
                if p == b {
                    Event::Refused { id }
                } else {
                    Event::ChunkOk { id }
                }
            },
            |_| 1,
        );
        assert_eq!(
            outcome.unwrap_err(),
            FetchError::Unavailable { chunks: vec![2, 4] }
        );
    }

    #[test]
    fn endgame_duplicates_the_last_chunk() {
        let slow = peer(1);
        let fast = peer(2);
        let mut specs = chunks(1, &[slow, fast]);
        specs[0].size_bytes = 1;
        let mut scheduler = FetchScheduler::new(specs, SchedulerConfig::default()).unwrap();
        let first = scheduler.poll_sends(0);
        assert_eq!(first.len(), 2, "one request plus one endgame duplicate");
        assert_ne!(first[0].peer, first[1].peer);
        assert_eq!(
            scheduler.handle(Event::ChunkOk { id: first[1].id }, 3),
            Some(0)
        );
        // The late duplicate is ignored.
        assert_eq!(
            scheduler.handle(Event::ChunkOk { id: first[0].id }, 90),
            None
        );
        assert_eq!(
            scheduler.outcome(),
            Some(Ok(Outcome {
                peers_used: BTreeSet::from([first[1].peer]),
                chunks_refetched: 0,
                ..Outcome::default()
            }))
        );
    }

    #[test]
    fn refuses_a_chunk_without_owners() {
        let mut specs = chunks(3, &[peer(1)]);
        specs[1].owners.clear();
        assert_eq!(
            FetchScheduler::new(specs, SchedulerConfig::default()).unwrap_err(),
            FetchError::NoOwners { index: 1 }
        );
    }
}
