//! A ledger that fails loudly and recovers: a storage error on one member's ledger is logged, the
//! member reports itself unhealthy in `status` and `/metrics`, the ledger task reopens the replica
//! from its durable state once the disk works again, catches up, and the member's holder duties
//! (worked out from chain state) get done. In one process on the in-memory transport.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ledger::{MemberId, Role};
use node::config::{Consortium, Keys, MemberEntry, ReleasePolicy};
use node::{Node, NodeOptions, Stores};
use overlay::{MemoryNetwork, MemoryTransport, PeerId};
use rand::{SeedableRng, rngs::StdRng};
use redb::StorageBackend;
use redb::backends::InMemoryBackend;

/// An in-memory disk that outlives the database on it, and whose writes can be made to fail.
#[derive(Debug, Clone, Default)]
struct FaultyDisk {
    bytes: Arc<InMemoryBackend>,
    failing: Arc<AtomicBool>,
}

impl FaultyDisk {
    fn check(&self) -> Result<(), std::io::Error> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(std::io::Error::other("injected write failure"));
        }
        Ok(())
    }
}

impl StorageBackend for FaultyDisk {
    fn len(&self) -> Result<u64, std::io::Error> {
        self.bytes.len()
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), std::io::Error> {
        self.bytes.read(offset, out)
    }
    fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
        self.check()?;
        self.bytes.set_len(len)
    }
    fn sync_data(&self) -> Result<(), std::io::Error> {
        self.check()?;
        self.bytes.sync_data()
    }
    fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
        self.check()?;
        self.bytes.write(offset, data)
    }
}

struct Member {
    node: Node<MemoryTransport>,
    disk: FaultyDisk,
}

fn start(network: &MemoryNetwork, count: usize) -> Vec<Member> {
    let mut rng = StdRng::seed_from_u64(21);
    let keys: Vec<Keys> = (0..count).map(|_| Keys::generate(&mut rng)).collect();
    let entries: Vec<MemberEntry> = keys
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
    let consortium = Consortium::with_defaults("recovery".into(), entries, None, None, 64 * 1024);
    keys.into_iter()
        .enumerate()
        .map(|(i, keys)| {
            let disk = FaultyDisk::default();
            let ledger_disk = disk.clone();
            let peer = PeerId::from_bytes(*consortium.members[i].id.as_bytes());
            let network = network.clone();
            let node = Node::start(
                NodeOptions {
                    consortium: consortium.clone(),
                    name: format!("member-{}", i + 1),
                    keys,
                    stores: Stores {
                        ledger: Box::new(move || {
                            ledger::RedbStore::open_backend(ledger_disk.clone())
                        }),
                        chunks: overlay::ChunkStore::open_backend(InMemoryBackend::new(), u64::MAX)
                            .unwrap(),
                        private: node::PrivateDb::open_backend(InMemoryBackend::new()).unwrap(),
                    },
                    policy: ReleasePolicy::default(),
                    seed: i as u64,
                    clock: node::system_clock(),
                    tick: Duration::from_millis(20),
                },
                move |handler| Ok(Arc::new(network.attach(peer, handler))),
            )
            .unwrap();
            Member { node, disk }
        })
        .collect()
}

async fn eventually<F: std::future::Future<Output = bool>>(
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ledger_storage_error_is_reported_and_the_ledger_recovers() {
    let network = MemoryNetwork::new();
    let members = start(&network, 4);
    let (owner, auditor) = (&members[0].node, &members[3].node);
    eventually("a leader", || async {
        owner.leader_id().await.ok().flatten().is_some()
    })
    .await;
    let leader = owner.leader_id().await.unwrap().unwrap() as usize;
    // A holder (members 2..=4 hold shares) that does not lead and is not the auditor.
    let faulty = if leader == 2 { 2 } else { 1 };
    let faulty_member = &members[faulty];
    let faulty_name = format!("member-{}", faulty + 1);
    let faulty_id = MemberId::from_bytes(*faulty_peer(faulty_member).as_bytes());

    let stored = owner.store(vec![7u8; 200 * 1024]).await.unwrap();

    // The faulty member's disk refuses writes: its ledger fails on the next block it must persist.
    faulty_member.disk.failing.store(true, Ordering::SeqCst);
    let request = auditor
        .request(stored.file_id, "audit".into())
        .await
        .unwrap();
    eventually("the member reports its ledger unhealthy", || async {
        let status = faulty_member.node.status().await.unwrap();
        !status.healthy && status.ledger_error.is_some()
    })
    .await;
    let metrics = faulty_member.node.metrics().render();
    assert!(
        metrics.contains("blocktorrent_ledger_healthy 0"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("blocktorrent_ledger_restarts_total 0"),
        "{metrics}"
    );
    // Submissions while it is down are refused with a reason, not left hanging.
    let refused = faulty_member
        .node
        .request(stored.file_id, "while down".into())
        .await;
    assert!(
        matches!(refused, Err(node::Error::LedgerDown { .. })),
        "{refused:?}"
    );

    // The disk heals: the ledger reopens from what it made durable and catches up; the holder
    // works out from the chain that it has not answered the request and releases its share.
    faulty_member.disk.failing.store(false, Ordering::SeqCst);
    eventually("the member is healthy again", || async {
        faulty_member.node.status().await.is_ok_and(|s| s.healthy)
    })
    .await;
    faulty_member
        .node
        .wait_for_height(request.height, Duration::from_secs(30))
        .await
        .unwrap();
    eventually(&format!("{faulty_name} answers the request"), || async {
        released_by(auditor, request.request_id, faulty_id).await
    })
    .await;
    let status = faulty_member.node.status().await.unwrap();
    assert!(status.healthy);
    assert!(status.height >= request.height);
    assert!(
        faulty_member
            .node
            .metrics()
            .render()
            .contains("blocktorrent_ledger_healthy 1")
    );
    for member in &members {
        member.node.shutdown().await;
    }
}

fn faulty_peer(member: &Member) -> PeerId {
    use overlay::Transport;
    member.node.transport().local_peer()
}

async fn released_by(
    node: &Node<MemoryTransport>,
    request: ledger::RequestId,
    who: MemberId,
) -> bool {
    node.access_request(request)
        .await
        .ok()
        .flatten()
        .is_some_and(|record| record.answers.contains_key(&who))
}
