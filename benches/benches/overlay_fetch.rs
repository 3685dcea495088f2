//! Loopback fetch throughput over real QUIC: a 256 MiB encrypted file (256 KiB chunks) fetched
//! from 1 peer and from 4 peers in parallel, every chunk hash-verified and decrypted into place.
//! Chunk stores are in-memory redb so the disk is not measured. Size with `BT_FILE_MIB`.
#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use keyshare::{ChunkCipher, ChunkLayout, FileId, FileKey, encrypt_file};
use overlay::{
    ChunkService, ChunkSpec, ChunkStore, InTask, PeerId, PushItem, QuicTransport, SchedulerConfig,
    fetch, push,
};

const CHUNK_BYTES: u32 = 256 * 1024;

fn peer_of(key: &SigningKey) -> PeerId {
    PeerId::from_bytes(key.verifying_key().to_bytes())
}

async fn run(file_mib: usize) {
    let file_bytes = file_mib << 20;
    let plaintext: Vec<u8> = (0..file_bytes).map(|i| (i * 7 % 253) as u8).collect();
    let key = FileKey::from_bytes([1; 32]);
    let file_id = FileId::from_bytes([2; 32]);
    let layout = ChunkLayout::new(file_bytes as u64, CHUNK_BYTES).unwrap();
    let encrypted = encrypt_file(&key, file_id, layout, &plaintext).unwrap();
    let cipher = ChunkCipher::new(&key, file_id, layout);

    let keys: Vec<SigningKey> = (1..=5u8)
        .map(|n| SigningKey::from_bytes(&[n; 32]))
        .collect();
    let loopback: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let book: BTreeMap<PeerId, SocketAddr> = keys.iter().map(|k| (peer_of(k), loopback)).collect();
    let transports: Vec<Arc<QuicTransport>> = keys
        .iter()
        .map(|key| {
            let store = ChunkStore::open_backend(benches::SparseMemoryBackend::default(), u64::MAX)
                .unwrap();
            let service = ChunkService::new(Arc::new(store), tokio::sync::mpsc::channel(1).0);
            Arc::new(QuicTransport::bind(key, loopback, book.clone(), Arc::new(service)).unwrap())
        })
        .collect();
    for (key, transport) in keys.iter().zip(&transports) {
        let addr = transport.local_addr().unwrap();
        for other in &transports {
            other.set_address(peer_of(key), addr);
        }
    }
    let holders: Vec<PeerId> = keys[..4].iter().map(peer_of).collect();
    let fetcher = transports[4].clone();

    for peers in [1usize, 4] {
        // Chunk i lives on holder i mod `peers` only, so the fetch must use all of them.
        let owners: Vec<Vec<PeerId>> = (0..encrypted.chunks.len())
            .map(|i| vec![holders[i % peers]])
            .collect();
        let items: Vec<PushItem> = encrypted
            .chunks
            .iter()
            .zip(&owners)
            .map(|(chunk, owners)| PushItem {
                hash: chunk.hash,
                bytes: Arc::new(chunk.bytes.clone()),
                owners: owners.clone(),
            })
            .collect();
        let report = push(fetcher.clone(), &items, 32, Duration::from_secs(60)).await;
        assert!(report.failed.is_empty());
        let specs: Vec<ChunkSpec> = encrypted
            .chunks
            .iter()
            .zip(&owners)
            .map(|(chunk, owners)| ChunkSpec {
                index: chunk.index,
                hash: chunk.hash,
                size_bytes: chunk.bytes.len() as u32,
                owners: owners.clone(),
            })
            .collect();
        let mut rates = Vec::new();
        // Written through once before timing: the first write to fresh pages costs a page fault
        // each, which measures the allocator, not the fetch (a real fetch writes into the page
        // cache).
        let mut out = vec![1u8; file_bytes];
        for _ in 0..3 {
            out.fill(0);
            let start = Instant::now();
            fetch(
                fetcher.clone(),
                InTask,
                specs.clone(),
                SchedulerConfig::default(),
                Duration::from_secs(60),
                |index, mut bytes| {
                    cipher.open_hashed_chunk_in_place(index, &mut bytes)?;
                    let offset = layout.plaintext_offset(index) as usize;
                    out[offset..offset + bytes.len()].copy_from_slice(&bytes);
                    Ok::<(), keyshare::ChunkError>(())
                },
            )
            .await
            .unwrap()
            .unwrap();
            let seconds = start.elapsed().as_secs_f64();
            assert!(out == plaintext);
            rates.push(file_bytes as f64 / 1e6 / seconds);
        }
        rates.sort_by(f64::total_cmp);
        println!(
            "overlay_fetch {file_mib} MiB from {peers} peer(s): median {:.0} MB/s (runs: {})",
            rates[1],
            rates
                .iter()
                .map(|r| format!("{r:.0}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
}

fn main() {
    let file_mib = std::env::var("BT_FILE_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run(file_mib));
}
