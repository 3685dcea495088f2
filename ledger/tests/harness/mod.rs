//! A deterministic in-process cluster for the ledger tests, after raft-rs's `harness/`: N
//! replicas in one thread, virtual time in 10 ms ticks, and a message bus that can `cut` a link,
//! `isolate` a replica, `drop` a share of a link's messages and `recover`. Replicas keep their
//! redb databases on shared in-memory backends, so a crashed replica restarts from what it
//! persisted.

#![allow(dead_code, clippy::unwrap_used, unreachable_pub)]

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use ed25519_dalek::SigningKey;
use keyshare::SealingSecretKey;
use ledger::{
    Block, Body, Genesis, Member, MemberId, Policy, RedbStore, Replica, ReplicaConfig, Role,
    SharedVerdicts, SnapshotJob, Transaction, TxId, TxResult, WireMessage,
};
use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng, rngs::StdRng};
use redb::StorageBackend;
use redb::backends::InMemoryBackend;

pub const TICK_MS: u64 = 10;
pub const CHAIN: &str = "test-chain";

/// An in-memory redb backend that outlives the `Database` using it, like a file on disk.
#[derive(Debug, Clone, Default)]
pub struct SharedDisk(Arc<InMemoryBackend>);

impl StorageBackend for SharedDisk {
    fn len(&self) -> Result<u64, std::io::Error> {
        self.0.len()
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), std::io::Error> {
        self.0.read(offset, out)
    }
    fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
        self.0.set_len(len)
    }
    fn sync_data(&self) -> Result<(), std::io::Error> {
        self.0.sync_data()
    }
    fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
        self.0.write(offset, data)
    }
}

pub struct Node {
    pub replica: Option<Replica>,
    pub disk: SharedDisk,
    pub key: SigningKey,
    pub sealing: SealingSecretKey,
    pub next_nonce: u64,
}

pub struct Cluster {
    pub genesis: Genesis,
    pub nodes: Vec<Node>,
    pub now_ms: u64,
    pub seed: u64,
    pub rng: StdRng,
    bus: VecDeque<WireMessage>,
    cut: BTreeSet<(u64, u64)>,
    drop_percent: BTreeMap<(u64, u64), u32>,
    /// Every transaction any replica acknowledged (committed and applied), with its block height.
    pub acknowledged: BTreeMap<TxId, u64>,
    pub config: fn(u64) -> ReplicaConfig,
    /// Polls that returned messages and put applying off to the next poll (`Effects::more`).
    pub deferred_applies: usize,
    /// The largest encoded message any replica emitted (each is checked against the frame cap).
    pub max_message_bytes: usize,
    /// Messages emitted, by [`WireMessage::kind`].
    pub sent_by_kind: BTreeMap<&'static str, usize>,
    /// This many snapshot pieces still to corrupt in flight (one byte of their data flipped).
    pub corrupt_pieces: usize,
    /// Messages of these kinds are dropped in flight.
    pub drop_kinds: BTreeSet<&'static str>,
    /// Deliver each round's messages in a seeded random order (the overlay gives no order
    /// between messages).
    pub reorder: bool,
    /// Transactions some replica reported superseded by a snapshot (`Effects::superseded`).
    pub superseded: BTreeSet<TxId>,
    /// Good signature verdicts the replicas share, if they do.
    verdicts: Option<SharedVerdicts>,
    /// While set, a copy of every message delivered (to replay later, as a hostile peer would).
    pub recorded: Option<Vec<WireMessage>>,
    /// While set, snapshot jobs wait in `held_snapshots` instead of being built at once (a
    /// build that takes its time off the ledger path).
    pub hold_snapshots: bool,
    /// Snapshot jobs handed out while `hold_snapshots` was set, by replica.
    pub held_snapshots: Vec<(u64, SnapshotJob)>,
}

pub fn default_config(id: u64) -> ReplicaConfig {
    ReplicaConfig::new(id)
}

/// Snapshots every 16 applied entries however large the state, so tests reach log compaction
/// quickly and often.
pub fn small_snapshots(id: u64) -> ReplicaConfig {
    ReplicaConfig {
        snapshot_interval_entries: 16,
        snapshot_log_percent: 0,
        ..ReplicaConfig::new(id)
    }
}

impl Cluster {
    /// `members` members, the first `voters` voting, the last one the auditor.
    pub fn new(members: usize, voters: u32, seed: u64) -> Self {
        Self::with_config(members, voters, seed, default_config)
    }

    pub fn with_config(
        members: usize,
        voters: u32,
        seed: u64,
        config: fn(u64) -> ReplicaConfig,
    ) -> Self {
        Self::with_policy(members, voters, seed, config, Policy::default())
    }

    pub fn with_policy(
        members: usize,
        voters: u32,
        seed: u64,
        config: fn(u64) -> ReplicaConfig,
        policy: Policy,
    ) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let keys: Vec<(SigningKey, SealingSecretKey)> = (0..members)
            .map(|_| {
                (
                    SigningKey::generate(&mut rng),
                    SealingSecretKey::generate(&mut rng),
                )
            })
            .collect();
        let genesis = Genesis {
            chain_id: CHAIN.into(),
            members: keys
                .iter()
                .enumerate()
                .map(|(i, (key, sealing))| Member {
                    name: format!("member-{}", i + 1),
                    id: MemberId::from(key.verifying_key()),
                    sealing_key: sealing.public_key(),
                    role: if i + 1 == members {
                        Role::Auditor
                    } else {
                        Role::Participant
                    },
                })
                .collect(),
            voters,
            policy,
        };
        let nodes = keys
            .into_iter()
            .map(|(key, sealing)| Node {
                replica: None,
                disk: SharedDisk::default(),
                key,
                sealing,
                next_nonce: 1,
            })
            .collect();
        let mut cluster = Self {
            genesis,
            nodes,
            now_ms: 0,
            seed,
            rng,
            bus: VecDeque::new(),
            cut: BTreeSet::new(),
            drop_percent: BTreeMap::new(),
            acknowledged: BTreeMap::new(),
            config,
            deferred_applies: 0,
            max_message_bytes: 0,
            sent_by_kind: BTreeMap::new(),
            corrupt_pieces: 0,
            drop_kinds: BTreeSet::new(),
            reorder: false,
            superseded: BTreeSet::new(),
            verdicts: None,
            recorded: None,
            hold_snapshots: false,
            held_snapshots: Vec::new(),
        };
        for id in cluster.ids() {
            cluster.start(id);
        }
        cluster
    }

    pub fn ids(&self) -> Vec<u64> {
        (1..=self.nodes.len() as u64).collect()
    }

    fn node(&mut self, id: u64) -> &mut Node {
        &mut self.nodes[id as usize - 1]
    }

    pub fn replica(&self, id: u64) -> &Replica {
        self.nodes[id as usize - 1].replica.as_ref().unwrap()
    }

    pub fn replica_mut(&mut self, id: u64) -> &mut Replica {
        self.node(id).replica.as_mut().unwrap()
    }

    /// Starts (or restarts) replica `id` from its disk.
    pub fn start(&mut self, id: u64) {
        let config = (self.config)(id);
        let store = RedbStore::open_backend(self.node(id).disk.clone()).unwrap();
        let verdicts = self.verdicts.clone();
        let replica = Replica::open_sharing(self.genesis.clone(), config, store, verdicts).unwrap();
        self.node(id).replica = Some(replica);
    }

    /// From now on every replica (re)started shares good signature verdicts through the
    /// returned memo; those running are restarted on it.
    pub fn share_verdicts(&mut self) -> SharedVerdicts {
        let verdicts = SharedVerdicts::new(&self.genesis);
        self.verdicts = Some(verdicts.clone());
        for id in self.live() {
            self.start(id);
        }
        verdicts
    }

    /// Crashes replica `id`: its memory is gone, its disk stays.
    pub fn crash(&mut self, id: u64) {
        self.node(id).replica = None;
    }

    pub fn cut(&mut self, a: u64, b: u64) {
        self.cut.insert((a, b));
        self.cut.insert((b, a));
    }

    pub fn isolate(&mut self, id: u64) {
        for other in self.ids() {
            if other != id {
                self.cut(id, other);
            }
        }
    }

    pub fn drop(&mut self, from: u64, to: u64, percent: u32) {
        self.drop_percent.insert((from, to), percent);
    }

    pub fn recover(&mut self) {
        self.cut.clear();
        self.drop_percent.clear();
    }

    pub fn live(&self) -> Vec<u64> {
        self.ids()
            .into_iter()
            .filter(|id| self.nodes[*id as usize - 1].replica.is_some())
            .collect()
    }

    /// One tick of virtual time on every live replica, then delivery until quiet.
    pub fn tick(&mut self) {
        self.now_ms += TICK_MS;
        for id in self.live() {
            let now = self.now_ms;
            self.replica_mut(id).tick(now);
        }
        self.deliver();
    }

    /// Polls and delivers messages until no replica has anything to say (bounded).
    pub fn deliver(&mut self) {
        for _ in 0..1_000 {
            for id in self.live() {
                let effects = self.replica_mut(id).poll().unwrap();
                // Messages leave before blocks are applied: never both from one poll.
                assert!(
                    effects.messages.is_empty() || effects.committed.is_empty(),
                    "replica {id} applied blocks before sending its messages"
                );
                assert!(
                    !effects.more || !effects.messages.is_empty(),
                    "replica {id} deferred applying with nothing to send"
                );
                if effects.more {
                    self.deferred_applies += 1;
                }
                self.superseded.extend(effects.superseded);
                if let Some(job) = effects.snapshot {
                    if self.hold_snapshots {
                        self.held_snapshots.push((id, job));
                    } else {
                        self.replica_mut(id).snapshot_built(job.build());
                    }
                }
                for committed in effects.committed {
                    for tx in &committed.block.txs {
                        self.acknowledged.insert(tx.id(), committed.block.height);
                    }
                }
                for message in &effects.messages {
                    // Every message must fit in one transport frame.
                    let size = message.encode().len();
                    assert!(
                        size <= ledger::MAX_MESSAGE_BYTES,
                        "replica {id} emitted a {size}-byte {} message",
                        message.kind()
                    );
                    self.max_message_bytes = self.max_message_bytes.max(size);
                    *self.sent_by_kind.entry(message.kind()).or_default() += 1;
                }
                self.bus.extend(effects.messages);
            }
            if self.bus.is_empty() {
                return;
            }
            if self.reorder {
                self.bus.make_contiguous().shuffle(&mut self.rng);
            }
            while let Some(message) = self.bus.pop_front() {
                // Recorded as sent, whether or not the network delivers it.
                if let Some(recorded) = self.recorded.as_mut() {
                    recorded.push(message.clone());
                }
                let link = (message.sender(), message.recipient());
                if self.cut.contains(&link) {
                    continue;
                }
                let percent = self.drop_percent.get(&link).copied().unwrap_or(0);
                if percent > 0 && self.rng.random_range(0..100) < percent {
                    continue;
                }
                if self.drop_kinds.contains(message.kind()) {
                    continue;
                }
                let message = self.maybe_corrupt(message);
                let to = message.recipient();
                if let Some(replica) = self.node(to).replica.as_mut() {
                    // Messages a replica refuses (e.g. from a stale term) are simply dropped,
                    // as the node's transport would do.
                    let _ = replica.handle_message(message);
                }
            }
        }
        panic!("cluster did not go quiet within 1000 delivery rounds");
    }

    /// Changes the case of the last lowercase ASCII letter in a snapshot piece (most likely in a
    /// reason text: the piece still decodes, only the body's hash can tell) while
    /// `corrupt_pieces` says so.
    fn maybe_corrupt(&mut self, message: WireMessage) -> WireMessage {
        if self.corrupt_pieces == 0 || message.kind() != "snapshot-piece" {
            return message;
        }
        let mut bytes = message.encode();
        if let Some(letter) = bytes.iter_mut().rev().find(|b| b.is_ascii_lowercase()) {
            *letter ^= 0x20;
        }
        self.corrupt_pieces -= 1;
        WireMessage::decode(&bytes).unwrap()
    }

    /// Ticks until `done` holds; panics after `max_ticks`.
    pub fn run_until(&mut self, max_ticks: u32, mut done: impl FnMut(&Cluster) -> bool) {
        for _ in 0..max_ticks {
            if done(self) {
                return;
            }
            self.tick();
        }
        assert!(done(self), "condition not met within {max_ticks} ticks");
    }

    /// Ticks until every live replica reached `height`; panics after `max_ticks`.
    pub fn run_until_all_reach(&mut self, max_ticks: u32, height: u64) {
        self.run_until(max_ticks, |c| {
            c.live()
                .iter()
                .all(|id| c.replica(*id).state().height() >= height)
        });
    }

    /// The result of committed transaction `id`, from the first live replica's store.
    pub fn result_of(&self, id: &TxId) -> TxResult {
        let replica = self.replica(self.live()[0]);
        replica.store().tx_status(id).unwrap().unwrap().result
    }

    pub fn leader(&self) -> Option<u64> {
        self.live()
            .into_iter()
            .find(|id| self.replica(*id).is_leader())
    }

    pub fn elect(&mut self) -> u64 {
        self.run_until(500, |c| c.leader().is_some());
        self.leader().unwrap()
    }

    /// Signs `body` as member `member` with its next nonce.
    pub fn sign(&mut self, member: u64, body: Body) -> Transaction {
        let node = self.node(member);
        let nonce = node.next_nonce;
        node.next_nonce += 1;
        Transaction::sign(&node.key, CHAIN, nonce, body)
    }

    /// Signs `body` as member `member` with its next nonce, with a torsion point of order
    /// `torsion_order` (2, 4 or 8) added to the signature's `R` and `s` fixed up to match: valid
    /// under ZIP-215's cofactored equation, refused by a strict or cofactorless check for some or
    /// all batch weights.
    pub fn sign_with_torsion(
        &mut self,
        member: u64,
        body: Body,
        torsion_order: u32,
    ) -> Transaction {
        let node = self.node(member);
        let nonce = node.next_nonce;
        node.next_nonce += 1;
        let key = node.key.clone();
        let mut tx = Transaction::sign(&key, CHAIN, nonce, body);
        let mut r_bytes = [0u8; 32];
        self.rng.fill(&mut r_bytes);
        tx.signature = torsion_signature(&key, &tx.signing_bytes(CHAIN), r_bytes, torsion_order);
        tx
    }

    /// Every block replica `id` holds, from height 1.
    pub fn chain(&self, id: u64) -> Vec<Block> {
        self.replica(id).store().blocks_from(1, usize::MAX).unwrap()
    }

    /// Every live replica holds the same state, head and (where it has them) the same blocks.
    pub fn assert_agree(&self) {
        let live = self.live();
        let first = self.replica(live[0]);
        for id in &live[1..] {
            let other = self.replica(*id);
            assert_eq!(
                other.state().height(),
                first.state().height(),
                "height of {id}"
            );
            assert_eq!(other.state().head(), first.state().head(), "head of {id}");
            assert!(other.state() == first.state(), "state of {id}");
        }
        let reference = self.chain(live[0]);
        for id in &live {
            let chain = self.chain(*id);
            for block in &chain {
                assert_eq!(
                    Some(block),
                    reference.get(block.height as usize - 1),
                    "block {} on replica {id}",
                    block.height
                );
            }
        }
    }

    /// Every acknowledged transaction is in every live replica's chain at the height it was
    /// acknowledged at. Replicas that joined by snapshot lack the blocks before it; for those
    /// blocks the head agreement in `assert_agree` covers them.
    pub fn assert_nothing_lost(&self) {
        for id in self.live() {
            let replica = self.replica(id);
            assert!(
                self.acknowledged
                    .values()
                    .all(|h| *h <= replica.state().height()),
                "replica {id} is behind"
            );
            let chain = self.chain(id);
            let landed: BTreeMap<TxId, u64> = chain
                .iter()
                .flat_map(|b| b.txs.iter().map(move |tx| (tx.id(), b.height)))
                .collect();
            let first_held = chain.first().map_or(u64::MAX, |b| b.height);
            for (tx, height) in &self.acknowledged {
                if *height >= first_held {
                    assert_eq!(landed.get(tx), Some(height), "tx {tx} on replica {id}");
                }
            }
            // The store finds them by id too (a restarted replica rebuilt its index). A sample:
            // each lookup decodes the whole block.
            let step = (self.acknowledged.len() / 50).max(1);
            for (tx, height) in self.acknowledged.iter().step_by(step) {
                if *height >= first_held {
                    let status = replica.store().tx_status(tx).unwrap();
                    assert_eq!(status.map(|s| s.height), Some(*height), "status of {tx}");
                }
            }
        }
    }
}

/// Counts the transactions in `chain` whose result is `Applied`.
pub fn applied_count(chain: &[Block]) -> usize {
    chain
        .iter()
        .flat_map(|b| &b.results)
        .filter(|r| **r == TxResult::Applied)
        .count()
}

/// What `register_file` produced, for tests that go on to recreate the key.
pub struct StoredFile {
    pub file_id: keyshare::FileId,
    pub secret: keyshare::FileSecret,
    pub commitments: keyshare::Commitments,
    pub holders: Vec<u64>,
}

/// Member `owner` registers a 3-chunk file held by `holders` with threshold `threshold` and
/// deposits the sealed shares; the transactions are submitted to `via` and committed.
pub fn register_file(
    cluster: &mut Cluster,
    via: u64,
    owner: u64,
    holders: &[u64],
    threshold: u32,
) -> StoredFile {
    use keyshare::{ChunkHash, FileId, FileSecret, SealContext, SealPurpose, seal_share, split};
    let mut nonce = [0u8; 16];
    cluster.rng.fill(&mut nonce);
    let owner_id = cluster.genesis.members[owner as usize - 1].id;
    let file_id = FileId::derive(owner_id.as_bytes(), &nonce, cluster.now_ms);
    let secret = FileSecret::random(&mut cluster.rng);
    let (shares, commitments) =
        split(&secret, threshold, holders.len() as u32, &mut cluster.rng).unwrap();
    let holder_ids: Vec<MemberId> = holders
        .iter()
        .map(|h| cluster.genesis.members[*h as usize - 1].id)
        .collect();
    let table = ledger::MasterTable {
        file_id,
        size_bytes: 2500,
        chunk_size_bytes: 1024,
        chunk_hashes: (0..3u8).map(|i| ChunkHash::of(&[i])).collect(),
        chunk_owners: (0..3).map(|_| holder_ids[..1].to_vec()).collect(),
        timestamp_ms: cluster.now_ms,
        threshold,
        holders: holder_ids.clone(),
        commitments: commitments.clone(),
    };
    let sealed = shares
        .iter()
        .zip(holders)
        .map(|(share, holder)| {
            let member = &cluster.genesis.members[*holder as usize - 1];
            let context = SealContext {
                file_id,
                holder: *member.id.as_bytes(),
                share_index: share.index(),
                purpose: SealPurpose::Deposit,
            };
            let key = member.sealing_key;
            seal_share(share, &key, &context, &mut cluster.rng).unwrap()
        })
        .collect();
    let register = cluster.sign(owner, Body::RegisterFile(table));
    let deposit = cluster.sign(
        owner,
        Body::DepositShares {
            file: file_id,
            shares: sealed,
        },
    );
    commit_all(cluster, via, vec![register, deposit]);
    StoredFile {
        file_id,
        secret,
        commitments,
        holders: holders.to_vec(),
    }
}

/// Submits `txs` to replica `via` and runs until every one of them is acknowledged; returns
/// their ids.
pub fn commit_all(cluster: &mut Cluster, via: u64, txs: Vec<Transaction>) -> Vec<TxId> {
    let ids: Vec<TxId> = txs
        .into_iter()
        .map(|tx| cluster.replica_mut(via).submit(tx).unwrap())
        .collect();
    cluster.run_until(2_000, |c| {
        ids.iter().all(|id| c.acknowledged.contains_key(id))
    });
    ids
}

/// An ed25519 signature of `message` by `key` whose `R` carries a torsion component of order
/// `torsion_order`: `R = [r]B + T`, `s = r + k·a` with `k` hashed over the new `R`.
pub fn torsion_signature(
    key: &SigningKey,
    message: &[u8],
    r_seed: [u8; 32],
    torsion_order: u32,
) -> ed25519_dalek::Signature {
    use curve25519_dalek::constants::{ED25519_BASEPOINT_POINT, EIGHT_TORSION};
    use curve25519_dalek::scalar::Scalar;
    use sha2::{Digest, Sha512};
    let expanded = Sha512::digest(key.to_bytes());
    let mut clamped = [0u8; 32];
    clamped.copy_from_slice(&expanded[..32]);
    clamped[0] &= 248;
    clamped[31] &= 127;
    clamped[31] |= 64;
    let a = Scalar::from_bytes_mod_order(clamped);
    let public = key.verifying_key().to_bytes();
    assert_eq!((a * ED25519_BASEPOINT_POINT).compress().to_bytes(), public);
    // EIGHT_TORSION[i] has order 8 / gcd(i, 8).
    let torsion = match torsion_order {
        2 => EIGHT_TORSION[4],
        4 => EIGHT_TORSION[2],
        8 => EIGHT_TORSION[1],
        other => panic!("no torsion point of order {other}"),
    };
    let r = Scalar::from_bytes_mod_order(r_seed);
    let r_point = (r * ED25519_BASEPOINT_POINT + torsion)
        .compress()
        .to_bytes();
    let k = Scalar::from_bytes_mod_order_wide(
        &Sha512::new()
            .chain_update(r_point)
            .chain_update(public)
            .chain_update(message)
            .finalize()
            .into(),
    );
    let s = r + k * a;
    let mut bytes = [0u8; 64];
    bytes[..32].copy_from_slice(&r_point);
    bytes[32..].copy_from_slice(s.as_bytes());
    ed25519_dalek::Signature::from_bytes(&bytes)
}
