//! In-process consortia for the node's tests: members on the in-memory transport, their
//! databases on in-memory disks that can fail their writes and lose what was not synced.

#![allow(dead_code, clippy::unwrap_used, unreachable_pub)]

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use ledger::{MemberId, Role};
use node::config::{Consortium, Keys, MemberEntry, ReleasePolicy};
use node::{Node, NodeOptions, Stores};
use overlay::{MemoryNetwork, MemoryTransport, PeerId, Transport};
use rand::{SeedableRng, rngs::StdRng};

pub use node::MemoryDisk as Disk;

/// A member's three databases.
#[derive(Debug, Clone, Default)]
pub struct Disks {
    pub ledger: Disk,
    pub chunks: Disk,
    pub private: Disk,
}

impl Disks {
    /// Loses what no database made durable.
    pub fn crash(&self) {
        self.ledger.crash();
        self.chunks.crash();
        self.private.crash();
    }
}

pub struct Member {
    pub node: Arc<Node<MemoryTransport>>,
    /// The ledger's disk (kept under its old name for the tests that fail it).
    pub disk: Disk,
    pub disks: Disks,
    pub index: usize,
}

/// The same keys on every call (so a member can be restarted).
fn keys(count: usize) -> Vec<Keys> {
    let mut rng = StdRng::seed_from_u64(21);
    (0..count).map(|_| Keys::generate(&mut rng)).collect()
}

/// Member `index`'s signing key in a consortium of `count` (as [`start`] gives it).
pub fn signing_key(count: usize, index: usize) -> ed25519_dalek::SigningKey {
    keys(count).swap_remove(index).signing
}

pub fn consortium(count: usize) -> Consortium {
    let entries: Vec<MemberEntry> = keys(count)
        .iter()
        .enumerate()
        .map(|(i, keys)| MemberEntry {
            name: format!("member-{}", i + 1),
            id: MemberId::from(keys.signing.verifying_key()),
            sealing_key: keys.sealing.public_key(),
            role: if i + 1 == count {
                Role::Auditor
            } else {
                Role::Participant
            },
            listen: "127.0.0.1:1".parse().unwrap(),
        })
        .collect();
    Consortium::with_defaults("recovery".into(), entries, None, None, 64 * 1024)
}

pub fn start(network: &MemoryNetwork, count: usize) -> Vec<Member> {
    let consortium = consortium(count);
    (0..count)
        .map(|i| start_member(network, &consortium, i, Disks::default(), i as u64))
        .collect()
}

/// Starts member `index` on `disks` (new, or those of a member that crashed).
pub fn start_member(
    network: &MemoryNetwork,
    consortium: &Consortium,
    index: usize,
    disks: Disks,
    seed: u64,
) -> Member {
    start_member_with(
        network,
        consortium,
        index,
        disks,
        seed,
        node::system_clock(),
    )
}

/// [`start_member`] on a given wall clock.
pub fn start_member_with(
    network: &MemoryNetwork,
    consortium: &Consortium,
    index: usize,
    disks: Disks,
    seed: u64,
    clock: node::Clock,
) -> Member {
    let keys = keys(consortium.members.len()).swap_remove(index);
    let peer = PeerId::from_bytes(*consortium.members[index].id.as_bytes());
    let attach = network.clone();
    let ledger_disk = disks.ledger.clone();
    let node = Node::start(
        NodeOptions {
            consortium: consortium.clone(),
            name: format!("member-{}", index + 1),
            keys,
            stores: Stores {
                ledger: Box::new(move || {
                    ledger::RedbStore::open_backend(ledger_disk.clone()).map_err(Into::into)
                }),
                chunks: overlay::ChunkStore::open_backend(disks.chunks.clone(), u64::MAX).unwrap(),
                private: node::PrivateDb::open_backend(disks.private.clone()).unwrap(),
            },
            policy: ReleasePolicy::default(),
            seed,
            clock,
            tick: Duration::from_millis(20),
            compute: node::Compute::inline(),
        },
        move |handler| Ok(Arc::new(attach.attach(peer, handler))),
    )
    .unwrap();
    network.set_down(peer, false);
    Member {
        node: Arc::new(node),
        disk: disks.ledger.clone(),
        disks,
        index,
    }
}

/// Kills a member as a power cut would: its tasks stop where they are, it drops off the
/// network, and its disks keep only what was made durable. Returns the disks to restart on.
pub async fn crash(network: &MemoryNetwork, member: Member) -> Disks {
    let peer = member.node.transport().local_peer();
    network.set_down(peer, true);
    // Nothing the dying process does reaches the disks any more — a database's clean shutdown
    // when its task is aborted and it is dropped included.
    let disks = &member.disks;
    for disk in [&disks.ledger, &disks.chunks, &disks.private] {
        disk.failing.store(true, Ordering::SeqCst);
    }
    member.node.abort().await;
    network.detach(peer);
    let node = Arc::into_inner(member.node).expect("the test holds the only handle");
    drop(node);
    // Requests still being served hold the old handler a moment longer.
    tokio::time::sleep(Duration::from_millis(50)).await;
    disks.crash();
    for disk in [&disks.ledger, &disks.chunks, &disks.private] {
        disk.failing.store(false, Ordering::SeqCst);
    }
    member.disks
}

pub async fn eventually<F: std::future::Future<Output = bool>>(
    what: &str,
    mut check: impl FnMut() -> F,
) {
    for _ in 0..600 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("not within 30 s: {what}");
}

/// Waits until `auditor`'s replica shows `file` with its shares deposited, then files the
/// auditor's access request for it.
pub async fn request_when_deposited(auditor: &Node<MemoryTransport>, file: keyshare::FileId) {
    eventually("the deposit on the auditor's replica", || async {
        auditor
            .file(file)
            .await
            .is_ok_and(|record| record.deposits.is_some())
    })
    .await;
    auditor.request(file, "audit".into()).await.unwrap();
}

/// [`start`], then waits until the first member knows a leader.
pub async fn start_with_leader(network: &MemoryNetwork, count: usize) -> Vec<Member> {
    let members = start(network, count);
    eventually("a leader", || async {
        members[0].node.leader_id().await.ok().flatten().is_some()
    })
    .await;
    members
}

/// Serves `node`'s admin API on 127.0.0.1 with `token` and `limits`, as `blocktorrent run`
/// does; returns its address and the server task (abort it to stop).
pub async fn serve_api(
    node: Arc<Node<MemoryTransport>>,
    token: &str,
    limits: node::api::ServeLimits,
) -> (
    std::net::SocketAddr,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let app = node::api::router(node, token.into(), Arc::new(tokio::sync::Notify::new()));
    let server = tokio::spawn(node::api::serve(
        listener,
        app,
        limits,
        std::future::pending(),
    ));
    (address, server)
}
