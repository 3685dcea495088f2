//! Hostile peers over real QUIC on 127.0.0.1: a member with a valid key that trickles endless
//! frames on every stream it may open, floods chunk requests, or opens connection after
//! connection; and an outsider that sprays garbage datagrams at the QUIC port. The serving
//! node stays up, holds at most the member's byte budget, and keeps serving an honest member.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use keyshare::ChunkHash;
use overlay::wire::{Request, Response};
use overlay::{
    ChunkService, ChunkStore, Handler, INBOUND_BUDGET_BYTES_PER_PEER, MAX_CONNECTIONS_PER_PEER,
    PeerId, QuicTransport, REQUESTS_IN_SERVICE_PER_PEER, Transport,
};
use redb::backends::InMemoryBackend;
use tokio::sync::mpsc;

const TIMEOUT: Duration = Duration::from_secs(10);
/// How soon an honest member's ping must be answered under attack: generous for a loaded
/// 2-core CI machine; without the defences the pings wait for the attacker (or never return).
const HONEST_WITHIN: Duration = Duration::from_secs(4);

fn key(n: u8) -> SigningKey {
    SigningKey::from_bytes(&[n; 32])
}

fn peer_of(key: &SigningKey) -> PeerId {
    PeerId::from_bytes(key.verifying_key().to_bytes())
}

fn service() -> Arc<ChunkService> {
    let store = ChunkStore::open_backend(InMemoryBackend::new(), u64::MAX).unwrap();
    Arc::new(ChunkService::new(Arc::new(store), mpsc::channel(16).0))
}

/// The server (key 1), an honest member (key 2) and the hostile member (key 3), each bound to
/// 127.0.0.1 and knowing where the server listens.
fn bind() -> (Arc<QuicTransport>, Arc<QuicTransport>, Arc<QuicTransport>) {
    bind_serving(service())
}

/// [`bind`], the server answering with `handler`.
fn bind_serving(
    handler: Arc<dyn Handler>,
) -> (Arc<QuicTransport>, Arc<QuicTransport>, Arc<QuicTransport>) {
    let loopback: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let members = [key(1), key(2), key(3)];
    let book: BTreeMap<PeerId, SocketAddr> =
        members.iter().map(|k| (peer_of(k), loopback)).collect();
    let server =
        Arc::new(QuicTransport::bind(&members[0], loopback, book.clone(), handler).unwrap());
    let at = server.local_addr().unwrap();
    let client = |k: &SigningKey| {
        let transport = QuicTransport::bind(k, loopback, book.clone(), service()).unwrap();
        transport.set_address(peer_of(&members[0]), at);
        Arc::new(transport)
    };
    (server.clone(), client(&members[1]), client(&members[2]))
}

/// Pings `server` from `honest` and returns how long the answer took.
/// Stores `bytes` at `server` through `member`; the chunk's hash.
async fn put_chunk(member: &QuicTransport, server: PeerId, bytes: Vec<u8>) -> ChunkHash {
    let hash = ChunkHash::of(&bytes);
    let stored = member
        .request(server, Request::PutChunk { hash, bytes }, TIMEOUT)
        .await
        .unwrap();
    assert_eq!(stored, Response::Stored);
    hash
}

async fn ping(honest: &QuicTransport, server: PeerId, nonce: u64) -> Duration {
    let started = Instant::now();
    let pong = honest
        .request(server, Request::Ping { nonce }, TIMEOUT)
        .await;
    assert_eq!(pong.unwrap(), Response::Pong { nonce });
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_trickling_endless_frames_holds_at_most_its_budget() {
    let (server, honest, hostile) = bind();
    let server_id = server.local_peer();
    let connection = hostile.connection(server_id).await.unwrap();
    // Forty streams, each announcing a frame of 8 MiB and sending all of it but the last byte:
    // without a budget the server reads every byte into memory (320 MiB) and waits forever.
    const STREAMS: usize = 40;
    const FRAME: usize = 8 << 20;
    let taken = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut writers = Vec::new();
    for _ in 0..STREAMS {
        let connection = connection.clone();
        let taken = taken.clone();
        writers.push(tokio::spawn(async move {
            let (mut send, _recv) = connection.open_bi().await.ok()?;
            send.write_all(&(FRAME as u32).to_be_bytes()).await.ok()?;
            let body = vec![7u8; FRAME - 1];
            tokio::time::timeout(Duration::from_secs(8), send.write_all(&body))
                .await
                .ok()?
                .ok()?;
            taken.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            // Hold the stream open, never finishing the frame.
            tokio::time::sleep(Duration::from_secs(30)).await;
            Some(())
        }));
    }
    // While the hostile member presses, an honest one is served promptly.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let waited = ping(&honest, server_id, 1).await;
    assert!(waited < HONEST_WITHIN, "honest ping took {waited:?}");

    tokio::time::sleep(Duration::from_secs(7)).await;
    let taken = taken.load(std::sync::atomic::Ordering::SeqCst);
    // Whole frames the server may take: its budget, plus what QUIC buffers unread beyond it
    // (the connection's receive window, 64 MiB).
    let allowed = (INBOUND_BUDGET_BYTES_PER_PEER as usize + (64 << 20)) / FRAME + 1;
    assert!(
        taken <= allowed,
        "{taken} of {STREAMS} endless frames taken, allowed {allowed}"
    );
    assert!(
        taken >= 8,
        "only {taken} frames got through: is the test sending?"
    );
    for writer in writers {
        writer.abort();
    }
    let waited = ping(&honest, server_id, 2).await;
    assert!(waited < HONEST_WITHIN, "honest ping took {waited:?}");
}

/// Counts the chunk requests it answers.
struct Counting {
    inner: Arc<ChunkService>,
    gets: AtomicUsize,
}

impl Handler for Counting {
    fn handle(&self, from: &PeerId, request: Request) -> Response {
        if matches!(request, Request::GetChunk { .. }) {
            self.gets.fetch_add(1, Ordering::SeqCst);
        }
        self.inner.handle(from, request)
    }

    fn on_message(&self, from: &PeerId, payload: Vec<u8>) {
        self.inner.on_message(from, payload);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_never_reads_its_answers_has_few_in_service() {
    let counting = Arc::new(Counting {
        inner: service(),
        gets: AtomicUsize::new(0),
    });
    let (server, _, hostile) = bind_serving(counting.clone());
    let server_id = server.local_peer();
    let hash = put_chunk(&hostile, server_id, vec![4u8; 4 << 20]).await;
    // 160 requests for a 4 MiB chunk whose answers are never read: without a limit the server
    // builds all 160 (640 MiB) and holds them.
    const REQUESTS: usize = 160;
    let connection = hostile.connection(server_id).await.unwrap();
    let frame = overlay::wire::encode_frame(&Request::GetChunk { hash }).unwrap();
    let mut unread = Vec::new();
    for _ in 0..REQUESTS {
        let (mut send, recv) = connection.open_bi().await.unwrap();
        send.write_all(&frame).await.unwrap();
        send.finish().unwrap();
        unread.push((send, recv));
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    let answered = counting.gets.load(Ordering::SeqCst);
    // In service at once, plus the answers the connection's receive window (64 MiB) took whole.
    let allowed = REQUESTS_IN_SERVICE_PER_PEER as usize + (64 << 20) / (4 << 20) + 4;
    assert!(
        answered <= allowed,
        "{answered} answers built, allowed {allowed}"
    );
    assert!(
        answered >= 16,
        "only {answered} answered: is the test sending?"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_chunk_requests_does_not_starve_an_honest_member() {
    let (server, honest, hostile) = bind();
    let server_id = server.local_peer();
    let hash = put_chunk(&hostile, server_id, vec![3u8; 256 << 10]).await;
    let flood: Vec<_> = (0..3_000)
        .map(|_| {
            let hostile = hostile.clone();
            tokio::spawn(async move {
                hostile
                    .request(
                        server_id,
                        Request::GetChunk { hash },
                        Duration::from_secs(20),
                    )
                    .await
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut slowest = Duration::ZERO;
    for nonce in 0..5 {
        slowest = slowest.max(ping(&honest, server_id, nonce).await);
    }
    assert!(
        slowest < HONEST_WITHIN,
        "honest pings took up to {slowest:?}"
    );
    let mut served = 0;
    for request in flood {
        if matches!(request.await, Ok(Ok(Response::Chunk { .. }))) {
            served += 1;
        }
    }
    assert!(served > 0, "the flood itself was never served");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_opening_connection_after_connection_keeps_only_its_newest() {
    let (server, honest, _) = bind();
    let server_id = server.local_peer();
    let at = server.local_addr().unwrap();
    let loopback: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let book: BTreeMap<PeerId, SocketAddr> = [key(1), key(2), key(3)]
        .iter()
        .map(|k| (peer_of(k), loopback))
        .collect();
    // One endpoint per connection, all with the hostile member's key (as a member restarting
    // over and over would have): each is served when it arrives...
    let opened = MAX_CONNECTIONS_PER_PEER + 3;
    let mut endpoints = Vec::new();
    let mut connections = Vec::new();
    for nonce in 0..opened as u64 {
        let endpoint = QuicTransport::bind(&key(3), loopback, book.clone(), service()).unwrap();
        endpoint.set_address(server_id, at);
        let pong = endpoint
            .request(server_id, Request::Ping { nonce }, TIMEOUT)
            .await;
        assert_eq!(pong.unwrap(), Response::Pong { nonce });
        connections.push(endpoint.connection(server_id).await.unwrap());
        endpoints.push(endpoint);
    }
    // ...and the server keeps only the newest few, closing the oldest.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let closed: Vec<bool> = connections
        .iter()
        .map(|connection| connection.close_reason().is_some())
        .collect();
    let mut expected = vec![true; opened - MAX_CONNECTIONS_PER_PEER];
    expected.extend(vec![false; MAX_CONNECTIONS_PER_PEER]);
    assert_eq!(
        closed, expected,
        "which of the member's connections were closed"
    );
    ping(&honest, server_id, 99).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_datagrams_at_the_quic_port_are_survived() {
    let (server, honest, _) = bind();
    let server_id = server.local_peer();
    let at = server.local_addr().unwrap();
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for i in 0..20_000u32 {
        let len = (next() % 1_500) as usize + 1;
        let mut datagram: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        // Every fourth looks like a QUIC long-header Initial (version 1), the rest is noise.
        if i % 4 == 0 && len > 6 {
            datagram[0] = 0xc0 | (datagram[0] & 0x0f);
            datagram[1..5].copy_from_slice(&1u32.to_be_bytes());
        }
        let _ = socket.send_to(&datagram, at);
    }
    let waited = ping(&honest, server_id, 1).await;
    assert!(waited < HONEST_WITHIN, "honest ping took {waited:?}");
}
