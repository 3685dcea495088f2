//! The simulated network: every member's [`Transport`] in one process, on the runtime's (virtual)
//! clock. Each request and message draws its fate from the world's seeded RNG when it is sent —
//! one-way latency (a floor plus an exponential tail, so messages overtake each other), loss,
//! duplication (messages only) — and waits behind earlier traffic on a link with a bandwidth
//! cap. Partitions are one-way link cuts, so symmetric ones are two cuts. Members can be made to
//! serve corrupt chunks. Everything sent is folded into a trace hash, the run's fingerprint.
//!
//! The node's handler runs where the transport delivers (the real service code; nothing here
//! parses or answers protocol messages itself).

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use overlay::wire::{Request, Response};
use overlay::{Handler, PeerId, Transport, TransportError, within};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use tokio::time::Instant;

/// How every link behaves.
#[derive(Clone, Debug, PartialEq)]
pub struct LinkConfig {
    /// Shortest one-way delay.
    pub latency_ms_min: f64,
    /// Mean one-way delay (the part above the floor is exponential).
    pub latency_ms_mean: f64,
    /// Chance that a request, an answer or a message is lost.
    pub loss_probability: f64,
    /// Chance that a message is delivered twice.
    pub duplicate_probability: f64,
    /// Bytes per second one link carries; `None` for no cap.
    pub bandwidth_bytes_per_s: Option<u64>,
}

impl Default for LinkConfig {
    fn default() -> Self {
        Self {
            latency_ms_min: 1.0,
            latency_ms_mean: 5.0,
            loss_probability: 0.0,
            duplicate_probability: 0.0,
            bandwidth_bytes_per_s: None,
        }
    }
}

/// Counts of what the network did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct NetStats {
    /// Requests sent.
    pub requests: u64,
    /// Messages sent.
    pub messages: u64,
    /// Requests, answers and messages lost (to loss or a partition).
    pub lost: u64,
    /// Messages delivered twice.
    pub duplicated: u64,
    /// Chunks corrupted on their way back from a lying member.
    pub corrupted: u64,
    /// Bytes carried.
    pub bytes: u64,
    /// Sends refused because their member had crashed since (a dead process sends nothing).
    pub stale: u64,
}

struct State {
    /// Each attached member's handler and incarnation (a restart attaches a new one).
    handlers: BTreeMap<PeerId, (Arc<dyn Handler>, u64)>,
    incarnations: u64,
    rng: StdRng,
    links: LinkConfig,
    /// One-way cuts: (from, to).
    cut: BTreeSet<(PeerId, PeerId)>,
    /// Members that corrupt the chunks they serve.
    liars: BTreeSet<PeerId>,
    /// When each link is free again (bandwidth).
    link_free_at: BTreeMap<(PeerId, PeerId), Instant>,
    start: Instant,
    trace: DefaultHasher,
    stats: NetStats,
}

/// What happens to one transmission.
enum Fate {
    Lost,
    Arrives { after: Duration, copies: u32 },
}

/// The network all simulated members share.
#[derive(Clone)]
pub struct SimNetwork {
    state: Arc<Mutex<State>>,
}

impl SimNetwork {
    /// A network whose random choices come from `seed`.
    pub fn new(seed: u64, links: LinkConfig) -> Self {
        Self {
            state: Arc::new(Mutex::new(State {
                handlers: BTreeMap::new(),
                incarnations: 0,
                rng: StdRng::seed_from_u64(seed),
                links,
                cut: BTreeSet::new(),
                liars: BTreeSet::new(),
                link_free_at: BTreeMap::new(),
                start: Instant::now(),
                trace: DefaultHasher::new(),
                stats: NetStats::default(),
            })),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Attaches `peer`, served by `handler`; returns its transport.
    pub fn attach(&self, peer: PeerId, handler: Arc<dyn Handler>) -> SimTransport {
        let mut state = self.state();
        state.incarnations += 1;
        let incarnation = state.incarnations;
        state.handlers.insert(peer, (handler, incarnation));
        SimTransport {
            local: peer,
            incarnation,
            network: self.clone(),
        }
    }

    /// Removes a crashed member: requests to it fail as unreachable until it is attached again.
    pub fn detach(&self, peer: PeerId) {
        let handler = self.state().handlers.remove(&peer);
        drop(handler);
    }

    /// Cuts (`true`) or repairs the one-way link `from` → `to`.
    pub fn set_cut(&self, from: PeerId, to: PeerId, cut: bool) {
        let mut state = self.state();
        if cut {
            state.cut.insert((from, to));
        } else {
            state.cut.remove(&(from, to));
        }
    }

    /// Repairs every cut.
    pub fn repair_all(&self) {
        self.state().cut.clear();
    }

    /// Makes `peer` corrupt (`true`) the chunks it serves, or stop.
    pub fn set_liar(&self, peer: PeerId, lies: bool) {
        let mut state = self.state();
        if lies {
            state.liars.insert(peer);
        } else {
            state.liars.remove(&peer);
        }
    }

    /// Changes how every link behaves from now on.
    pub fn set_links(&self, links: LinkConfig) {
        self.state().links = links;
    }

    /// The fingerprint of everything sent so far.
    pub fn trace_hash(&self) -> u64 {
        self.state().trace.finish()
    }

    /// Counts so far.
    pub fn stats(&self) -> NetStats {
        self.state().stats
    }

    /// Draws the fate of `bytes` sent from `from` to `to` now, and records it. A send from a
    /// process that has crashed since is refused.
    fn send(&self, from: (PeerId, u64), to: PeerId, kind: u8, bytes: usize, digest: u64) -> Fate {
        let (from, incarnation) = from;
        let mut guard = self.state();
        let state = &mut *guard;
        if kind != ANSWER
            && state
                .handlers
                .get(&from)
                .is_none_or(|(_, current)| *current != incarnation)
        {
            state.stats.stale += 1;
            return Fate::Lost;
        }
        let now = Instant::now();
        let at_ms = now.duration_since(state.start).as_millis() as u64;
        (at_ms, from, to, kind, bytes, digest).hash(&mut state.trace);
        state.stats.bytes += bytes as u64;
        let links = state.links.clone();
        if state.cut.contains(&(from, to)) || state.rng.random_bool(links.loss_probability) {
            state.stats.lost += 1;
            return Fate::Lost;
        }
        let tail_ms = (links.latency_ms_mean - links.latency_ms_min).max(0.0);
        let uniform: f64 = state.rng.random_range(f64::EPSILON..1.0);
        let latency_ms = links.latency_ms_min + tail_ms * -uniform.ln();
        let mut depart = now;
        if let Some(rate) = links.bandwidth_bytes_per_s.filter(|rate| *rate > 0) {
            let free = state.link_free_at.entry((from, to)).or_insert(now);
            let start = (*free).max(now);
            let busy = Duration::from_secs_f64(bytes as f64 / rate as f64);
            *free = start + busy;
            depart = *free;
        }
        let copies = if kind == MESSAGE && state.rng.random_bool(links.duplicate_probability) {
            state.stats.duplicated += 1;
            2
        } else {
            1
        };
        let after = depart.duration_since(now) + Duration::from_secs_f64(latency_ms / 1000.0);
        Fate::Arrives { after, copies }
    }

    fn handler(&self, peer: &PeerId) -> Option<Arc<dyn Handler>> {
        self.state()
            .handlers
            .get(peer)
            .map(|(handler, _)| handler.clone())
    }

    /// Corrupts a chunk answer if `peer` lies.
    fn tamper(&self, peer: &PeerId, response: &mut Response) {
        let mut state = self.state();
        if !state.liars.contains(peer) {
            return;
        }
        if let Response::Chunk { bytes } = response {
            match bytes.first_mut() {
                Some(first) => *first ^= 0x5a,
                None => bytes.push(0x5a),
            }
            state.stats.corrupted += 1;
        }
    }
}

const REQUEST: u8 = 0;
const ANSWER: u8 = 1;
const MESSAGE: u8 = 2;

/// Size on the wire and a digest of a request (chunk bytes by length and first bytes: hashing
/// every chunk in full would cost more than the simulated work).
fn describe_request(request: &Request) -> (usize, u64) {
    let mut hasher = DefaultHasher::new();
    let size = match request {
        Request::Ping { nonce } => {
            nonce.hash(&mut hasher);
            16
        }
        Request::PutChunk { hash, bytes } => {
            hash.as_bytes().hash(&mut hasher);
            bytes.len() + 48
        }
        Request::GetChunk { hash } => {
            hash.as_bytes().hash(&mut hasher);
            40
        }
        Request::HasChunks { hashes } => {
            hashes.len().hash(&mut hasher);
            8 + 32 * hashes.len()
        }
    };
    (size, hasher.finish())
}

fn describe_response(response: &Response) -> (usize, u64) {
    let mut hasher = DefaultHasher::new();
    let size = match response {
        Response::Chunk { bytes } => {
            bytes.len().hash(&mut hasher);
            bytes
                .iter()
                .take(32)
                .for_each(|byte| byte.hash(&mut hasher));
            bytes.len() + 8
        }
        Response::Has { present } => {
            present.hash(&mut hasher);
            8 + present.len()
        }
        other => {
            format!("{other:?}").hash(&mut hasher);
            16
        }
    };
    (size, hasher.finish())
}

/// One member's view of the [`SimNetwork`]: one incarnation of its process.
#[derive(Clone)]
pub struct SimTransport {
    local: PeerId,
    incarnation: u64,
    network: SimNetwork,
}

/// Carries one request to `peer` and its answer back; `None` when either is lost.
async fn exchange(
    network: SimNetwork,
    from: (PeerId, u64),
    peer: PeerId,
    request: Request,
) -> Option<Result<Response, TransportError>> {
    let (size, digest) = describe_request(&request);
    let Fate::Arrives { after, .. } = network.send(from, peer, REQUEST, size, digest) else {
        return None;
    };
    tokio::time::sleep(after).await;
    let Some(handler) = network.handler(&peer) else {
        return Some(Err(TransportError::Unreachable {
            peer,
            reason: "not running".to_owned(),
        }));
    };
    let mut response = handler.handle(&from.0, request);
    drop(handler);
    network.tamper(&peer, &mut response);
    let (size, digest) = describe_response(&response);
    let Fate::Arrives { after, .. } = network.send((peer, 0), from.0, ANSWER, size, digest) else {
        return None;
    };
    tokio::time::sleep(after).await;
    Some(Ok(response))
}

impl Transport for SimTransport {
    fn local_peer(&self) -> PeerId {
        self.local
    }

    async fn request(
        &self,
        peer: PeerId,
        request: Request,
        timeout: Duration,
    ) -> Result<Response, TransportError> {
        self.network.state().stats.requests += 1;
        // The exchange runs on its own, as on a real network: a request whose caller gives up
        // still arrives and is served. A lost request or answer is reported as a timeout as
        // soon as it is lost — earlier than a real caller would learn of it, at its deadline.
        let (answer, answered) = tokio::sync::oneshot::channel();
        let exchanging = exchange(
            self.network.clone(),
            (self.local, self.incarnation),
            peer,
            request,
        );
        tokio::spawn(async move {
            if let Some(result) = exchanging.await {
                let _ = answer.send(result);
            }
        });
        let lost = TransportError::Timeout {
            peer,
            timeout_ms: timeout.as_millis() as u64,
        };
        within(
            peer,
            timeout,
            async move { answered.await.unwrap_or(Err(lost)) },
        )
        .await
    }

    async fn send_message(&self, peer: PeerId, payload: Vec<u8>) -> Result<(), TransportError> {
        self.network.state().stats.messages += 1;
        let mut hasher = DefaultHasher::new();
        payload.hash(&mut hasher);
        let fate = self.network.send(
            (self.local, self.incarnation),
            peer,
            MESSAGE,
            payload.len(),
            hasher.finish(),
        );
        let Fate::Arrives { after, copies } = fate else {
            return Ok(());
        };
        let network = self.network.clone();
        let from = self.local;
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            if let Some(handler) = network.handler(&peer) {
                for _ in 1..copies {
                    handler.on_message(&from, payload.clone());
                }
                handler.on_message(&from, payload);
            }
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    /// Answers pings and counts messages.
    #[derive(Default)]
    struct Echo(AtomicU32);

    impl Handler for Echo {
        fn handle(&self, _: &PeerId, request: Request) -> Response {
            match request {
                Request::Ping { nonce } => Response::Pong { nonce },
                _ => Response::Stored,
            }
        }
        fn on_message(&self, _: &PeerId, _: Vec<u8>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn pair(links: LinkConfig) -> (SimNetwork, SimTransport, PeerId, Arc<Echo>) {
        let network = SimNetwork::new(5, links);
        let (a, b) = (PeerId::from_bytes([1; 32]), PeerId::from_bytes([2; 32]));
        let echo = Arc::new(Echo::default());
        let transport = network.attach(a, Arc::new(Echo::default()));
        network.attach(b, echo.clone());
        (network, transport, b, echo)
    }

    fn ping() -> Request {
        Request::Ping { nonce: 9 }
    }

    #[tokio::test(start_paused = true)]
    async fn a_cut_link_loses_one_way_only_and_heals() {
        let (network, a, b, echo) = pair(LinkConfig::default());
        let second = Duration::from_secs(1);
        network.set_cut(b, a.local_peer(), true);
        // The request arrives, the answer does not: the caller times out.
        assert!(matches!(
            a.request(b, ping(), second).await,
            Err(TransportError::Timeout { .. })
        ));
        a.send_message(b, vec![1]).await.ok();
        tokio::time::sleep(second).await;
        assert_eq!(echo.0.load(Ordering::SeqCst), 1, "a → b still carries");
        network.repair_all();
        assert!(matches!(
            a.request(b, ping(), second).await,
            Ok(Response::Pong { nonce: 9 })
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn bandwidth_caps_serialize_a_link() {
        let links = LinkConfig {
            latency_ms_min: 0.0,
            latency_ms_mean: 0.0,
            bandwidth_bytes_per_s: Some(1_000_000),
            ..LinkConfig::default()
        };
        let (_, a, b, _) = pair(links);
        let start = Instant::now();
        let put = || Request::PutChunk {
            hash: keyshare::ChunkHash::from_bytes([0; 32]),
            bytes: vec![0; 500_000 - 48],
        };
        let (first, second) = tokio::join!(
            a.request(b, put(), Duration::from_secs(10)),
            a.request(b, put(), Duration::from_secs(10))
        );
        assert!(first.is_ok() && second.is_ok());
        // Two half-megabyte requests on a 1 MB/s link take a second, not half of one.
        let elapsed = start.elapsed().as_secs_f64();
        assert!((0.99..1.1).contains(&elapsed), "{elapsed}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_crashed_incarnation_sends_nothing() {
        let (network, old, b, echo) = pair(LinkConfig::default());
        let restarted = network.attach(old.local_peer(), Arc::new(Echo::default()));
        old.send_message(b, vec![1]).await.ok();
        restarted.send_message(b, vec![2]).await.ok();
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(
            echo.0.load(Ordering::SeqCst),
            1,
            "only the running incarnation's message"
        );
        assert_eq!(network.stats().stale, 1);
        assert!(
            old.request(b, ping(), Duration::from_secs(1))
                .await
                .is_err()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn lost_traffic_is_counted_and_a_liar_corrupts_chunks() {
        let links = LinkConfig {
            loss_probability: 1.0,
            ..LinkConfig::default()
        };
        let (network, a, b, echo) = pair(links);
        a.send_message(b, vec![1]).await.ok();
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(echo.0.load(Ordering::SeqCst), 0);
        assert_eq!(network.stats().lost, 1);
        let mut chunk = Response::Chunk { bytes: vec![1, 2] };
        network.set_liar(b, true);
        network.tamper(&b, &mut chunk);
        assert_eq!(
            chunk,
            Response::Chunk {
                bytes: vec![1 ^ 0x5a, 2]
            }
        );
    }
}
