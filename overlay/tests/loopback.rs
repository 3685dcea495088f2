//! The overlay end to end: push a file to its owners, then fetch it back with owners stopped
//! and one serving corrupt bytes — over real QUIC on 127.0.0.1 and over the in-memory transport.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ed25519_dalek::SigningKey;
use keyshare::{ChunkCipher, ChunkHash, ChunkLayout, FileId, FileKey, encrypt_file};
use overlay::wire::{MAX_FRAME_BYTES, Request, Response};
use overlay::{
    ChunkService, ChunkSpec, ChunkStore, FetchError, Handler, InTask, MemoryNetwork, Offload,
    PeerId, PushItem, QuicTransport, SchedulerConfig, Transport, TransportError, fetch, place,
    push,
};
use redb::backends::InMemoryBackend;
use tokio::sync::mpsc;

const REPLICATION: usize = 3;
const HOLDERS: usize = 6;
const FILE_BYTES: usize = 64 << 20;
const CHUNK_BYTES: u32 = 4 << 20;
const TIMEOUT: Duration = Duration::from_secs(5);

fn key(n: u8) -> SigningKey {
    SigningKey::from_bytes(&[n; 32])
}

fn peer_of(key: &SigningKey) -> PeerId {
    PeerId::from_bytes(key.verifying_key().to_bytes())
}

/// Serves real chunks but flips a byte in every chunk it hands out.
struct Corrupting(ChunkService);

impl Handler for Corrupting {
    fn handle(&self, from: &PeerId, request: Request) -> Response {
        match self.0.handle(from, request) {
            Response::Chunk { mut bytes } => {
                if let Some(byte) = bytes.first_mut() {
                    *byte ^= 0x80;
                }
                Response::Chunk { bytes }
            }
            other => other,
        }
    }

    fn on_message(&self, from: &PeerId, payload: Vec<u8>) {
        self.0.on_message(from, payload);
    }
}

fn service() -> ChunkService {
    let store = ChunkStore::open_backend(InMemoryBackend::new(), u64::MAX).unwrap();
    ChunkService::new(Arc::new(store), mpsc::channel(16).0)
}

/// The file, its encryption and placement, and the fault set chosen from it.
struct Scenario {
    plaintext: Vec<u8>,
    cipher: ChunkCipher,
    chunks: Vec<(ChunkHash, Vec<u8>)>,
    owners: Vec<Vec<PeerId>>,
    stopped: [PeerId; 2],
    liar: PeerId,
}

impl Scenario {
    fn new(holders: &[PeerId], owner: PeerId) -> Self {
        let plaintext: Vec<u8> = (0..FILE_BYTES).map(|i| (i * 31 % 251) as u8).collect();
        let key = FileKey::from_bytes([3; 32]);
        let file_id = FileId::from_bytes([4; 32]);
        let layout = ChunkLayout::new(FILE_BYTES as u64, CHUNK_BYTES).unwrap();
        let cipher = ChunkCipher::new(&key, file_id, layout);
        let encrypted = encrypt_file(&key, file_id, layout, &plaintext).unwrap();
        let chunks: Vec<(ChunkHash, Vec<u8>)> = encrypted
            .chunks
            .into_iter()
            .map(|chunk| (chunk.hash, chunk.bytes))
            .collect();
        let owners = place(&file_id, layout.chunk_count(), holders, &owner, REPLICATION).unwrap();
        // Stop two owners and corrupt a third, choosing three peers that never own the same
        // chunk all together, so every chunk keeps one good owner.
        let sets: BTreeSet<BTreeSet<PeerId>> = owners
            .iter()
            .map(|set| set.iter().copied().collect())
            .collect();
        let mut chosen = None;
        'search: for a in 0..holders.len() {
            for b in a + 1..holders.len() {
                for c in 0..holders.len() {
                    if c == a || c == b {
                        continue;
                    }
                    let triple = BTreeSet::from([holders[a], holders[b], holders[c]]);
                    // The liar is chunk 0's first choice, so it is asked at once and caught.
                    let liar_owns_first = owners[0][0] == holders[c];
                    if !sets.contains(&triple) && liar_owns_first {
                        chosen = Some(([holders[a], holders[b]], holders[c]));
                        break 'search;
                    }
                }
            }
        }
        let (stopped, liar) = chosen.expect("16 chunks cannot cover all 20 owner triples");
        Self {
            plaintext,
            cipher,
            chunks,
            owners,
            stopped,
            liar,
        }
    }

    fn push_items(&self) -> Vec<PushItem> {
        self.chunks
            .iter()
            .zip(&self.owners)
            .map(|((hash, bytes), owners)| PushItem {
                hash: *hash,
                bytes: Arc::new(bytes.clone()),
                owners: owners.clone(),
            })
            .collect()
    }

    fn specs(&self) -> Vec<ChunkSpec> {
        self.chunks
            .iter()
            .zip(&self.owners)
            .enumerate()
            .map(|(index, ((hash, bytes), owners))| ChunkSpec {
                index: index as u32,
                hash: *hash,
                size_bytes: bytes.len() as u32,
                owners: owners.clone(),
            })
            .collect()
    }

    /// Fetches through `transport`, hashing on `offload` and decrypting into place; checks the
    /// bytes and the report.
    async fn fetch_and_check<T: Transport>(&self, transport: Arc<T>, offload: impl Offload) {
        let mut plaintext = vec![0u8; FILE_BYTES];
        let layout = *self.cipher.layout();
        let config = SchedulerConfig::default();
        let report = fetch(
            transport,
            offload,
            self.specs(),
            config,
            TIMEOUT,
            |index, mut chunk| {
                self.cipher.open_hashed_chunk_in_place(index, &mut chunk)?;
                let offset = layout.plaintext_offset(index) as usize;
                plaintext[offset..offset + chunk.len()].copy_from_slice(&chunk);
                Ok::<(), keyshare::ChunkError>(())
            },
        )
        .await
        .unwrap()
        .unwrap();
        assert!(plaintext == self.plaintext, "fetched file differs");
        assert_eq!(report.chunks, self.chunks.len() as u32);
        assert_eq!(report.outcome.lying_peers, BTreeSet::from([self.liar]));
        assert!(report.outcome.chunks_refetched >= 1);
        for stopped in &self.stopped {
            assert!(!report.outcome.peers_used.contains(stopped));
        }
    }
}

/// Runs each job on a thread of its own, as a node's compute pool does; a stopping one drops
/// every job, as a pool shutting down does.
#[derive(Clone, Copy)]
struct Threads {
    stopping: bool,
}

impl Offload for Threads {
    async fn offload<R, F>(&self, job: F) -> Option<R>
    where
        R: Send + 'static,
        F: FnOnce() -> R + Send + 'static,
    {
        let (done, result) = tokio::sync::oneshot::channel();
        if self.stopping {
            drop(done);
        } else {
            std::thread::spawn(move || {
                let _ = done.send(job());
            });
        }
        result.await.ok()
    }
}

/// Binds one QUIC endpoint per key on an ephemeral loopback port, each admitting `members`,
/// then fills in every endpoint's address book. The peer whose key is `liar` corrupts chunks.
fn bind_all(
    keys: &[SigningKey],
    members: &[PeerId],
    liar: Option<PeerId>,
) -> Vec<Arc<QuicTransport>> {
    let loopback: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let transports: Vec<Arc<QuicTransport>> = keys
        .iter()
        .map(|key| {
            let handler: Arc<dyn Handler> = if Some(peer_of(key)) == liar {
                Arc::new(Corrupting(service()))
            } else {
                Arc::new(service())
            };
            let book = members.iter().map(|member| (*member, loopback)).collect();
            Arc::new(QuicTransport::bind(key, loopback, book, handler).unwrap())
        })
        .collect();
    for (key, transport) in keys.iter().zip(&transports) {
        let addr = transport.local_addr().unwrap();
        for other in &transports {
            other.set_address(peer_of(key), addr);
        }
    }
    transports
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quic_fetch_survives_stopped_and_lying_owners() {
    // Keys 1..=6 hold chunks, 7 owns the file, 8 audits.
    let keys: Vec<SigningKey> = (1..=8).map(key).collect();
    let members: Vec<PeerId> = keys.iter().map(peer_of).collect();
    let holders = &members[..HOLDERS];
    let scenario = Scenario::new(holders, members[6]);
    let peers = bind_all(&keys, &members, Some(scenario.liar));

    let owner = peers[6].clone();
    let report = push(owner, &scenario.push_items(), 16, Duration::from_secs(20)).await;
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    assert_eq!(
        report.acknowledged.len(),
        scenario.chunks.len() * REPLICATION
    );

    for (key, peer) in keys.iter().zip(&peers) {
        if scenario.stopped.contains(&peer_of(key)) {
            peer.shutdown().await;
        }
    }
    // The owner goes away too: recreate needs no part of it.
    peers[6].shutdown().await;
    tokio::time::timeout(
        Duration::from_secs(60),
        scenario.fetch_and_check(peers[7].clone(), Threads { stopping: false }),
    )
    .await
    .unwrap();
}

#[tokio::test(start_paused = true)]
async fn memory_fetch_gives_the_same_result() {
    let keys: Vec<SigningKey> = (1..=8).map(key).collect();
    let members: Vec<PeerId> = keys.iter().map(peer_of).collect();
    let scenario = Scenario::new(&members[..HOLDERS], members[6]);
    let network = MemoryNetwork::new();
    let transports: Vec<_> = members
        .iter()
        .map(|peer| {
            let handler: Arc<dyn Handler> = if *peer == scenario.liar {
                Arc::new(Corrupting(service()))
            } else {
                Arc::new(service())
            };
            Arc::new(network.attach(*peer, handler))
        })
        .collect();
    for from in &members {
        for to in &members {
            network.set_latency(*from, *to, Duration::from_millis(3));
        }
    }
    let report = push(transports[6].clone(), &scenario.push_items(), 16, TIMEOUT).await;
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    for stopped in scenario.stopped {
        network.set_down(stopped, true);
    }
    network.set_down(members[6], true);
    scenario
        .fetch_and_check(transports[7].clone(), InTask)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_cannot_connect_or_fetch() {
    // A and C are members; "B" is a member key whose address leads to a stranger S.
    let (a, b, c, stranger) = (key(1), key(2), key(3), key(9));
    let members = [peer_of(&a), peer_of(&b), peer_of(&c)];
    let member_side = bind_all(&[a.clone(), c.clone()], &members, None);
    let loopback: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let a_addr = member_side[0].local_addr().unwrap();
    let stranger_side = QuicTransport::bind(
        &stranger,
        loopback,
        BTreeMap::from([(peer_of(&a), a_addr), (peer_of(&stranger), loopback)]),
        Arc::new(service()),
    )
    .unwrap();
    member_side[0].set_address(peer_of(&b), stranger_side.local_addr().unwrap());

    // The stranger cannot ping, push to or fetch from A.
    let ping = stranger_side
        .request(peer_of(&a), Request::Ping { nonce: 1 }, TIMEOUT)
        .await;
    assert!(ping.is_err(), "{ping:?}");
    let bytes = vec![1u8; 1000];
    let put = Request::PutChunk {
        hash: ChunkHash::of(&bytes),
        bytes,
    };
    assert!(
        stranger_side
            .request(peer_of(&a), put, TIMEOUT)
            .await
            .is_err()
    );

    // A, dialling "B", reaches the stranger and refuses its key.
    let err = member_side[0]
        .request(peer_of(&b), Request::Ping { nonce: 2 }, TIMEOUT)
        .await
        .unwrap_err();
    assert!(matches!(err, TransportError::Unreachable { .. }), "{err:?}");
    // A key outside the member set cannot even be given an address.
    assert!(!member_side[0].set_address(peer_of(&stranger), a_addr));

    // A still serves its members.
    let pong = member_side[1]
        .request(peer_of(&a), Request::Ping { nonce: 3 }, TIMEOUT)
        .await
        .unwrap();
    assert_eq!(pong, Response::Pong { nonce: 3 });
}

/// Sends raw bytes on a fresh request stream and returns what came back (if anything).
async fn raw_exchange(connection: &quinn::Connection, bytes: &[u8]) -> Option<Vec<u8>> {
    let (mut send, mut recv) = connection.open_bi().await.unwrap();
    let _ = send.write_all(bytes).await;
    let _ = send.finish();
    tokio::time::timeout(TIMEOUT, recv.read_to_end(MAX_FRAME_BYTES as usize + 4))
        .await
        .ok()?
        .ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_are_refused_and_the_peer_keeps_serving() {
    let keys = [key(1), key(2)];
    let members: Vec<PeerId> = keys.iter().map(peer_of).collect();
    let transports = bind_all(&keys, &members, None);
    let server = members[0];
    let connection = transports[1].connection(server).await.unwrap();

    // Garbage body in a well-formed frame: answered with a typed error.
    let mut garbage = 5u32.to_be_bytes().to_vec();
    garbage.extend_from_slice(&[0xff; 5]);
    let reply = raw_exchange(&connection, &garbage).await.unwrap();
    let response: Response = overlay::wire::decode_body(&reply[4..]).unwrap();
    assert_eq!(
        response,
        Response::Error(overlay::wire::RemoteError::Malformed)
    );

    // Oversized length prefix, truncated frame, trailing bytes: no answer.
    let oversized = (MAX_FRAME_BYTES + 1).to_be_bytes();
    assert_eq!(
        raw_exchange(&connection, &oversized)
            .await
            .unwrap_or_default(),
        b""
    );
    let mut truncated = 100u32.to_be_bytes().to_vec();
    truncated.extend_from_slice(&[0; 10]);
    assert_eq!(
        raw_exchange(&connection, &truncated)
            .await
            .unwrap_or_default(),
        b""
    );
    let mut trailing = overlay::wire::encode_frame(&Request::Ping { nonce: 1 }).unwrap();
    trailing.push(0);
    assert_eq!(
        raw_exchange(&connection, &trailing)
            .await
            .unwrap_or_default(),
        b""
    );
    // A stream that sends a few bytes and then never finishes is simply abandoned.
    let (mut stalled, _recv) = connection.open_bi().await.unwrap();
    stalled.write_all(&[0, 0]).await.unwrap();

    // The same connection and a fresh one both still work.
    let pong = transports[1]
        .request(server, Request::Ping { nonce: 7 }, TIMEOUT)
        .await
        .unwrap();
    assert_eq!(pong, Response::Pong { nonce: 7 });
    let bytes = vec![5u8; 4096];
    let hash = ChunkHash::of(&bytes);
    let stored = transports[1]
        .request(
            server,
            Request::PutChunk {
                hash,
                bytes: bytes.clone(),
            },
            TIMEOUT,
        )
        .await
        .unwrap();
    assert_eq!(stored, Response::Stored);
    let got = transports[1]
        .request(server, Request::GetChunk { hash }, TIMEOUT)
        .await
        .unwrap();
    assert_eq!(got, Response::Chunk { bytes });
}

/// Three honest members on an in-memory network.
fn three_on_memory() -> (
    Vec<PeerId>,
    MemoryNetwork,
    Vec<Arc<overlay::MemoryTransport>>,
) {
    let keys: Vec<SigningKey> = (1..=3).map(key).collect();
    let members: Vec<PeerId> = keys.iter().map(peer_of).collect();
    let network = MemoryNetwork::new();
    let transports = members
        .iter()
        .map(|peer| Arc::new(network.attach(*peer, Arc::new(service()))))
        .collect();
    (members, network, transports)
}

#[tokio::test(start_paused = true)]
async fn fetch_names_chunks_no_owner_can_serve() {
    let (members, network, transports) = three_on_memory();
    let present = vec![1u8; 2048];
    let missing = vec![2u8; 2048];
    let hash = ChunkHash::of(&present);
    push(
        transports[0].clone(),
        &[PushItem {
            hash,
            bytes: Arc::new(present),
            owners: vec![members[1]],
        }],
        4,
        TIMEOUT,
    )
    .await;
    network.set_down(members[2], true);
    let specs = vec![
        ChunkSpec {
            index: 0,
            hash,
            size_bytes: 2048,
            owners: vec![members[1]],
        },
        ChunkSpec {
            index: 1,
            hash: ChunkHash::of(&missing),
            size_bytes: 2048,
            owners: vec![members[1], members[2]],
        },
    ];
    let result = fetch(
        transports[0].clone(),
        InTask,
        specs,
        SchedulerConfig::default(),
        TIMEOUT,
        |_, _| Ok::<(), ()>(()),
    )
    .await
    .unwrap();
    assert_eq!(
        result.unwrap_err(),
        FetchError::Unavailable { chunks: vec![1] }
    );
}

/// When the pool that hashes arriving chunks stops, the fetch stops: it does not blame the peers
/// or go on asking every owner for chunks it cannot check.
#[tokio::test(start_paused = true)]
async fn a_fetch_whose_pool_stops_stops() {
    let (members, _network, transports) = three_on_memory();
    let bytes = vec![3u8; 2048];
    let hash = ChunkHash::of(&bytes);
    let pushed = push(
        transports[0].clone(),
        &[PushItem {
            hash,
            bytes: Arc::new(bytes),
            owners: vec![members[1], members[2]],
        }],
        4,
        TIMEOUT,
    )
    .await;
    assert!(pushed.failed.is_empty());
    let spec = ChunkSpec {
        index: 0,
        hash,
        size_bytes: 2048,
        owners: vec![members[1], members[2]],
    };
    let stopped = fetch(
        transports[0].clone(),
        Threads { stopping: true },
        vec![spec],
        SchedulerConfig::default(),
        TIMEOUT,
        |_, _| Ok::<(), ()>(()),
    )
    .await
    .unwrap();
    assert_eq!(stopped.unwrap_err(), FetchError::Stopped);
}

/// A peer that crashes (no CONNECTION_CLOSE sent) and restarts on the same address with the same
/// key is reachable again at once: its new endpoint answers the old connection's packets with a
/// stateless reset the dialler recognises, so the dialler drops the dead connection and dials
/// again instead of waiting for the idle timeout (30 s).
#[test]
fn a_peer_restarted_after_a_crash_is_reached_again_at_once() {
    let (a, b) = (key(1), key(2));
    let runtime = |threads| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
            .unwrap()
    };
    let loopback: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let bind_b = |at: SocketAddr, runtime: &tokio::runtime::Runtime| {
        let _entered = runtime.enter();
        let book = BTreeMap::from([(peer_of(&a), loopback), (peer_of(&b), at)]);
        QuicTransport::bind(&b, at, book, Arc::new(service())).unwrap()
    };
    let first_run = runtime(1);
    let b_first = bind_b(loopback, &first_run);
    let b_addr = b_first.local_addr().unwrap();

    let a_runtime = runtime(1);
    let a_side = {
        let _entered = a_runtime.enter();
        let book = BTreeMap::from([(peer_of(&a), loopback), (peer_of(&b), b_addr)]);
        QuicTransport::bind(&a, loopback, book, Arc::new(service())).unwrap()
    };
    let ping = |nonce| a_side.request(peer_of(&b), Request::Ping { nonce }, Duration::from_secs(2));
    assert_eq!(
        a_runtime.block_on(ping(1)).unwrap(),
        Response::Pong { nonce: 1 }
    );

    // The crash: B's tasks stop where they are, then its socket closes; nothing is sent.
    drop(first_run);
    drop(b_first);
    let second_run = runtime(1);
    let _b_second = bind_b(b_addr, &second_run);

    // The first ping may meet the dead connection (and its reset); the next must get through.
    let started = std::time::Instant::now();
    let answers: Vec<_> = (2..5)
        .map(|nonce| a_runtime.block_on(ping(nonce)))
        .collect();
    assert!(
        answers
            .iter()
            .any(|answer| matches!(answer, Ok(Response::Pong { .. }))),
        "no ping reached the restarted peer in {:?}: {answers:?}",
        started.elapsed()
    );
}
