//! `blocktorrent demo`: a whole consortium in one process on loopback — real QUIC, real redb in
//! a temporary directory — that stores a synthetic supply-chain sensor dataset as member-1,
//! stops member-1, recreates the file as the auditor and checks it byte for byte.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ledger::Role;
use overlay::{PeerId, QuicTransport};
use rand::rngs::StdRng;
use rand::{Rng, RngExt, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::compute::Compute;
use crate::config::{Consortium, Keys, MemberEntry, ReleasePolicy};
use crate::error::Error;
use crate::node::{Node, NodeOptions, Stores};
use crate::shared::Clock;

/// Demo parameters.
#[derive(Clone, Debug)]
pub struct DemoOptions {
    /// Consortium size (the last member is the auditor).
    pub members: u32,
    /// Size of the generated dataset.
    pub file_size_bytes: u64,
    /// Seeds keys, data and every node's RNG.
    pub seed: u64,
    /// Where the nodes' CPU-heavy work runs (the binary passes a pool).
    pub compute: Compute,
}

impl Default for DemoOptions {
    fn default() -> Self {
        Self {
            members: 4,
            file_size_bytes: 16 << 20,
            seed: 7,
            compute: Compute::inline(),
        }
    }
}

/// What the demo did (`--json`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DemoReport {
    /// Consortium size.
    pub members: u32,
    /// The stored file.
    pub file_id: keyshare::FileId,
    /// Its size.
    pub bytes: u64,
    /// Its chunks.
    pub chunks: u32,
    /// Shares needed of those deposited.
    pub threshold: u32,
    /// Seconds to start the consortium and elect a leader.
    pub startup_seconds: f64,
    /// Seconds to encrypt, push and register.
    pub store_seconds: f64,
    /// Seconds from the access request until the file was on disk.
    pub recreate_seconds: f64,
    /// Peers that served chunks.
    pub peers_used: usize,
    /// Chunks fetched twice.
    pub chunks_refetched: u32,
    /// Whether the recreated file equals the original.
    pub identical: bool,
    /// Whether the auditor's chain replayed cleanly from genesis.
    pub chain_ok: bool,
    /// Ledger height at the end.
    pub height: u64,
}

/// A temporary directory removed on drop.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Synthetic sensor readings as CSV: shipment, sensor, time, temperature, humidity, position.
pub fn sensor_dataset(size_bytes: u64, seed: u64) -> Vec<u8> {
    const ROUTES: [(&str, f64, f64); 4] = [
        ("Rotterdam", 51.92, 4.48),
        ("Hamburg", 53.55, 9.99),
        ("Antwerp", 51.22, 4.40),
        ("Gdansk", 54.35, 18.65),
    ];
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out = String::with_capacity(size_bytes as usize + 128);
    out.push_str("shipment,sensor,timestamp_ms,temperature_c,humidity_pct,lat,lon,origin\n");
    let mut timestamp_ms = 1_767_225_600_000u64;
    while (out.len() as u64) < size_bytes {
        let shipment = rng.random_range(1000..1064u32);
        let (origin, lat, lon) = ROUTES[(shipment % 4) as usize];
        timestamp_ms += rng.random_range(100..2000u64);
        out.push_str(&format!(
            "SHP-{shipment},S{:02},{timestamp_ms},{:.2},{:.1},{:.5},{:.5},{origin}\n",
            rng.random_range(1..17u32),
            rng.random_range(-22.0..8.0f64),
            rng.random_range(30.0..95.0f64),
            lat + rng.random_range(-2.0..2.0f64),
            lon + rng.random_range(-2.0..2.0f64),
        ));
    }
    let mut bytes = out.into_bytes();
    bytes.truncate(size_bytes as usize);
    bytes
}

fn free_udp_ports(count: usize) -> Result<Vec<SocketAddr>, Error> {
    let probes = (0..count)
        .map(|_| std::net::UdpSocket::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| Error::io("127.0.0.1:0", error))?;
    probes
        .iter()
        .map(|socket| socket.local_addr().map_err(|error| Error::io("udp", error)))
        .collect()
}

/// A consortium of `count` members on `addresses`, the last one auditing.
fn consortium(keys: &[Keys], addresses: &[SocketAddr], chunk_size_bytes: u32) -> Consortium {
    let count = keys.len() as u32;
    let members = keys
        .iter()
        .zip(addresses)
        .enumerate()
        .map(|(i, (key, listen))| MemberEntry {
            name: format!("member-{}", i + 1),
            id: key.signing.verifying_key().into(),
            sealing_key: key.sealing.public_key(),
            role: if i as u32 + 1 == count {
                Role::Auditor
            } else {
                Role::Participant
            },
            listen: *listen,
        })
        .collect();
    Consortium::with_defaults(
        "blocktorrent-demo".into(),
        members,
        None,
        None,
        chunk_size_bytes,
    )
}

/// Starts one member of `consortium` on real QUIC with redb files under `dir`.
pub fn start_member(
    consortium: &Consortium,
    index: usize,
    keys: Keys,
    dir: &Path,
    seed: u64,
    clock: Clock,
    compute: Compute,
) -> Result<Node<QuicTransport>, Error> {
    let entry = consortium.members[index].clone();
    let book = consortium
        .members
        .iter()
        .map(|m| (PeerId::from_bytes(*m.id.as_bytes()), m.listen))
        .collect();
    let signing = keys.signing.clone();
    Node::start(
        NodeOptions {
            consortium: consortium.clone(),
            name: entry.name.clone(),
            keys,
            stores: Stores::open_dir(&dir.join(&entry.name), u64::MAX)?,
            policy: ReleasePolicy::default(),
            seed,
            clock,
            tick: Duration::from_millis(50),
            compute: compute.clone(),
        },
        move |handler| {
            Ok(Arc::new(QuicTransport::bind(
                &signing,
                entry.listen,
                book,
                handler,
            )?))
        },
    )
}

async fn wait_for_leader(node: &Node<QuicTransport>, timeout: Duration) -> Result<(), Error> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if node.leader_id().await?.is_some() {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Error::Timeout {
                what: "a ledger leader".into(),
                seconds: timeout.as_secs(),
            });
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Runs the demo, calling `say` with each line of the story.
pub async fn run(options: &DemoOptions, mut say: impl FnMut(String)) -> Result<DemoReport, Error> {
    if !(3..=16).contains(&options.members) {
        return Err(Error::Invalid(format!(
            "--members must be 3..=16 for the demo, got {}",
            options.members
        )));
    }
    let dir = TempDir(std::env::temp_dir().join(format!(
        "blocktorrent-demo-{}-{}",
        std::process::id(),
        options.seed
    )));
    let mut rng = StdRng::seed_from_u64(options.seed);
    let count = options.members as usize;
    let keys: Vec<Keys> = (0..count).map(|_| Keys::generate(&mut rng)).collect();
    let addresses = free_udp_ports(count)?;
    let consortium = consortium(&keys, &addresses, keyshare::DEFAULT_CHUNK_SIZE_BYTES);
    let clock = crate::shared::system_clock();
    let started = tokio::time::Instant::now();
    let mut nodes = Vec::with_capacity(count);
    for (index, key) in keys.into_iter().enumerate() {
        nodes.push(start_member(
            &consortium,
            index,
            key,
            &dir.0,
            rng.next_u64(),
            clock.clone(),
            options.compute.clone(),
        )?);
    }
    wait_for_leader(&nodes[0], Duration::from_secs(15)).await?;
    let startup_seconds = started.elapsed().as_secs_f64();
    say(format!(
        "Started a {count}-member consortium on 127.0.0.1 (QUIC, Raft ledger, redb) in {startup_seconds:.2} s; member-{count} is the auditor."
    ));

    let data = sensor_dataset(options.file_size_bytes, options.seed);
    say(format!(
        "member-1 stores a {} supply-chain sensor log (shipments, temperature, humidity, location).",
        human_bytes(data.len() as u64)
    ));
    let store_started = tokio::time::Instant::now();
    let stored = nodes[0].store(data.clone()).await?;
    let store_seconds = store_started.elapsed().as_secs_f64();
    say(format!(
        "  encrypted into {} chunks, pushed to {} owners each, master table in block {} and {}-of-{} key shares deposited: {store_seconds:.2} s",
        stored.chunks,
        consortium.replication,
        stored.height,
        consortium.threshold,
        count - 1
    ));

    let owner = nodes.remove(0);
    owner.shutdown().await;
    owner.transport().shutdown().await;
    drop(owner);
    say("member-1 goes offline.".into());

    let auditor = nodes.last().ok_or(Error::Stopped)?;
    let recreate_started = tokio::time::Instant::now();
    let request = auditor
        .request(stored.file_id, "quarterly cold-chain audit".into())
        .await?;
    say(format!(
        "member-{count} files an access request (block {}); the holders release their shares re-sealed to it.",
        request.height
    ));
    let (fetched, recreated) = auditor
        .fetch_bytes(stored.file_id, Duration::from_secs(30))
        .await?;
    let recreate_seconds = recreate_started.elapsed().as_secs_f64();
    let identical = recreated == data;
    say(format!(
        "  rebuilt the key from {} verified shares, fetched and verified {} chunks from {} peers ({} refetched), decrypted: {recreate_seconds:.2} s from request to file",
        consortium.threshold, fetched.chunks, fetched.peers_used, fetched.chunks_refetched,
    ));
    let chain = auditor.verify_chain().await?;
    say(format!(
        "The recreated file is {} the original; the auditor's chain ({} blocks) {}.",
        if identical {
            "byte-for-byte identical to"
        } else {
            "DIFFERENT from"
        },
        chain.blocks,
        if chain.ok {
            "replays cleanly from genesis"
        } else {
            "FAILS verification"
        }
    ));
    let height = chain.blocks;
    for node in &nodes {
        node.shutdown().await;
        node.transport().shutdown().await;
    }
    Ok(DemoReport {
        members: options.members,
        file_id: stored.file_id,
        bytes: stored.bytes,
        chunks: stored.chunks,
        threshold: consortium.threshold,
        startup_seconds,
        store_seconds,
        recreate_seconds,
        peers_used: fetched.peers_used,
        chunks_refetched: fetched.chunks_refetched,
        identical,
        chain_ok: chain.ok,
        height,
    })
}

/// `16.0 MiB`-style sizes.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}
