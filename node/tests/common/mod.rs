//! In-process consortia for the node's tests: members on the in-memory transport, their
//! databases on in-memory backends, each member's ledger on a disk whose writes can be made to
//! fail.

#![allow(dead_code, clippy::unwrap_used, unreachable_pub)]

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
pub struct FaultyDisk {
    bytes: Arc<InMemoryBackend>,
    pub failing: Arc<AtomicBool>,
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

pub struct Member {
    pub node: Arc<Node<MemoryTransport>>,
    pub disk: FaultyDisk,
}

pub fn start(network: &MemoryNetwork, count: usize) -> Vec<Member> {
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
                            ledger::RedbStore::open_backend(ledger_disk.clone()).map_err(Into::into)
                        }),
                        chunks: overlay::ChunkStore::open_backend(InMemoryBackend::new(), u64::MAX)
                            .unwrap(),
                        private: node::PrivateDb::open_backend(InMemoryBackend::new()).unwrap(),
                    },
                    policy: ReleasePolicy::default(),
                    seed: i as u64,
                    clock: node::system_clock(),
                    tick: Duration::from_millis(20),
                    compute: node::Compute::inline(),
                },
                move |handler| Ok(Arc::new(network.attach(peer, handler))),
            )
            .unwrap();
            Member {
                node: Arc::new(node),
                disk,
            }
        })
        .collect()
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
