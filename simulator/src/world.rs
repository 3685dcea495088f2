//! The simulated consortium: `members` real nodes (the `node` library the binary runs) on the
//! [`SimNetwork`], their databases on [`MemoryDisk`]s, one virtual wall clock, compute inline.
//! Members crash (their tasks stop, their disks keep only what was synced) and restart from
//! their disks.

use std::sync::Arc;
use std::time::Duration;

use ledger::{MemberId, Role};
use node::config::{Consortium, Keys, MemberEntry, ReleasePolicy};
use node::{Compute, MemoryDisk, Node, NodeOptions, Stores};
use overlay::PeerId;
use rand::SeedableRng;
use rand::rngs::StdRng;

use crate::error::SimError;
use crate::net::{SimNetwork, SimTransport};
use crate::workload::Directory;

/// A simulated member's node.
pub type SimNode = Node<SimTransport>;

/// Raft tick of a simulated member (the binary's).
const TICK: Duration = Duration::from_millis(50);
/// Page cache of a member's ledger database: its disk is memory already, so a large cache would
/// only hold a second copy (see [`ledger::RedbStore::open_backend_cached`]).
const LEDGER_CACHE_BYTES: usize = 4 << 20;
/// Wall-clock time at the start of every run (2026-01-01), so file ids do not depend on the
/// machine's clock.
const EPOCH_MS: u64 = 1_767_225_600_000;

/// A member's three databases.
#[derive(Clone, Default)]
struct Disks {
    ledger: MemoryDisk,
    chunks: MemoryDisk,
    private: MemoryDisk,
}

struct Slot {
    node: Option<Arc<SimNode>>,
    disks: Disks,
    peer: PeerId,
    starts: u64,
}

/// The consortium under simulation.
pub struct World {
    /// The network every member is on.
    pub network: SimNetwork,
    /// The genesis every member shares.
    pub consortium: Consortium,
    members: Vec<Slot>,
    seed: u64,
    clock: node::Clock,
    directory: Directory,
    /// Good signature verdicts, shared by every member's replica (see [`ledger::SharedVerdicts`]).
    verdicts: ledger::SharedVerdicts,
    /// The member that releases bad shares, if one does.
    bad_share_holder: Option<usize>,
    /// Members whose disks fail right now.
    failing_disks: FailingDisks,
}

/// Members whose disks fail right now, as the workloads see them.
pub type FailingDisks = Arc<std::sync::Mutex<std::collections::BTreeSet<usize>>>;

/// Each member's keys, the same for every start of a member.
fn member_keys(seed: u64, index: usize) -> Keys {
    let mut rng = StdRng::seed_from_u64(seed ^ (index as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    Keys::generate(&mut rng)
}

impl World {
    /// A consortium of `members` (the last one the auditor) on `network`, nobody started yet;
    /// `replication` owners per chunk (the default, min(3, holders), when `None`).
    pub fn new(
        seed: u64,
        members: usize,
        chunk_size_bytes: u32,
        replication: Option<u32>,
        network: SimNetwork,
    ) -> Result<Self, SimError> {
        if members < 3 {
            return Err(SimError::Config(format!(
                "a consortium needs at least 3 members, not {members}"
            )));
        }
        let entries: Vec<MemberEntry> = (0..members)
            .map(|index| {
                let keys = member_keys(seed, index);
                MemberEntry {
                    name: format!("member-{}", index + 1),
                    id: MemberId::from(keys.signing.verifying_key()),
                    sealing_key: keys.sealing.public_key(),
                    role: if index + 1 == members {
                        Role::Auditor
                    } else {
                        Role::Participant
                    },
                    listen: std::net::SocketAddr::from(([127, 0, 0, 1], 1)),
                }
            })
            .collect();
        let consortium = Consortium::with_defaults(
            format!("sim-{seed}"),
            entries,
            None,
            replication,
            chunk_size_bytes,
        );
        let slots = consortium
            .members
            .iter()
            .map(|entry| Slot {
                node: None,
                disks: Disks::default(),
                peer: PeerId::from_bytes(*entry.id.as_bytes()),
                starts: 0,
            })
            .collect();
        let origin = tokio::time::Instant::now();
        let verdicts = ledger::SharedVerdicts::new(&consortium.genesis());
        Ok(Self {
            verdicts,
            bad_share_holder: None,
            failing_disks: FailingDisks::default(),
            network,
            consortium,
            directory: Arc::new(std::sync::Mutex::new(vec![None; members])),
            members: slots,
            seed,
            clock: Arc::new(move || EPOCH_MS + origin.elapsed().as_millis() as u64),
        })
    }

    /// The running members as the workloads see them.
    pub fn directory(&self) -> Directory {
        self.directory.clone()
    }

    /// The virtual wall clock every member uses.
    pub fn clock(&self) -> node::Clock {
        self.clock.clone()
    }

    fn publish(&self, index: usize, node: Option<Arc<SimNode>>) {
        self.directory
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)[index] = node;
    }

    /// Makes member `index` release random shares whenever it answers an access request, from
    /// its next start on.
    pub fn release_bad_shares(&mut self, index: usize) {
        self.bad_share_holder = Some(index);
    }

    /// Member `index`'s secret keys (the simulator plays every member's operator).
    pub fn keys(&self, index: usize) -> Keys {
        member_keys(self.seed, index)
    }

    /// Makes every write and sync on member `index`'s disks fail (an I/O error), or work again.
    pub fn fail_disks(&self, index: usize, failing: bool) {
        let disks = &self.members[index].disks;
        for disk in [&disks.ledger, &disks.chunks, &disks.private] {
            disk.failing
                .store(failing, std::sync::atomic::Ordering::SeqCst);
        }
        let mut members = self
            .failing_disks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if failing {
            members.insert(index);
        } else {
            members.remove(&index);
        }
    }

    /// Members whose disks fail right now (see [`Self::fail_disks`]).
    pub fn failing_disks(&self) -> FailingDisks {
        self.failing_disks.clone()
    }

    /// Members in the consortium.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether the consortium is empty (never: [`Self::new`] refuses that).
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Index of the auditor.
    pub fn auditor(&self) -> usize {
        self.members.len() - 1
    }

    /// Member `index`'s node, if it is running.
    pub fn node(&self, index: usize) -> Option<&Arc<SimNode>> {
        self.members.get(index).and_then(|slot| slot.node.as_ref())
    }

    /// Member `index`'s overlay identity.
    pub fn peer(&self, index: usize) -> PeerId {
        self.members[index].peer
    }

    /// Whether member `index` runs.
    pub fn is_up(&self, index: usize) -> bool {
        self.node(index).is_some()
    }

    /// Starts member `index` on its disks (new, or as a crash left them).
    pub fn start(&mut self, index: usize) -> Result<(), SimError> {
        let seed = self.seed;
        let consortium = self.consortium.clone();
        let clock = self.clock.clone();
        let network = self.network.clone();
        let compute = Compute::inline().sharing_verdicts(self.verdicts.clone());
        let policy = ReleasePolicy {
            release_bad_shares: self.bad_share_holder == Some(index),
            ..ReleasePolicy::default()
        };
        let slot = &mut self.members[index];
        if slot.node.is_some() {
            return Ok(());
        }
        slot.starts += 1;
        let disks = slot.disks.clone();
        let peer = slot.peer;
        let ledger_disk = disks.ledger.clone();
        let node = Node::start(
            NodeOptions {
                name: consortium.members[index].name.clone(),
                consortium,
                keys: member_keys(seed, index),
                stores: Stores {
                    ledger: Box::new(move || {
                        ledger::RedbStore::open_backend_cached(
                            ledger_disk.clone(),
                            LEDGER_CACHE_BYTES,
                        )
                        .map_err(Into::into)
                    }),
                    chunks: overlay::ChunkStore::open_backend(disks.chunks.clone(), u64::MAX)?,
                    private: node::PrivateDb::open_backend(disks.private.clone())?,
                },
                policy,
                seed: seed ^ ((index as u64) << 32) ^ slot.starts,
                clock,
                tick: TICK,
                compute,
            },
            move |handler| Ok(Arc::new(network.attach(peer, handler))),
        )?;
        let node = Arc::new(node);
        slot.node = Some(node.clone());
        self.publish(index, Some(node));
        Ok(())
    }

    /// Crashes member `index` as a power cut would: its tasks stop where they are, it leaves the
    /// network, and its disks keep only what was synced.
    pub async fn crash(&mut self, index: usize) {
        let slot = &mut self.members[index];
        let Some(node) = slot.node.take() else {
            return;
        };
        let peer = slot.peer;
        // First the power goes: the restarted member gets fresh disks holding what was synced,
        // and the old ones fail from now on, so nothing the dying process still does (a
        // database's clean shutdown when its task is aborted or its handler dropped, a
        // workload task holding the node) reaches them.
        let old = std::mem::take(&mut slot.disks);
        slot.disks = Disks {
            ledger: old.ledger.after_crash(),
            chunks: old.chunks.after_crash(),
            private: old.private.after_crash(),
        };
        self.publish(index, None);
        node.abort().await;
        self.network.detach(peer);
        drop(node);
    }

    /// Stops every running member cleanly.
    pub async fn shutdown(&mut self) {
        for index in 0..self.members.len() {
            self.publish(index, None);
            if let Some(node) = self.members[index].node.take() {
                node.shutdown().await;
            }
        }
    }
}
