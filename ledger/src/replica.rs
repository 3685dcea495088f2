//! The sans-IO replica: raft-rs's `RawNode` plus the contract state, driven by the caller.
//!
//! Inputs: [`Replica::tick`] (one Raft tick at the caller's `now`), [`Replica::handle_message`]
//! (a message from a peer) and [`Replica::submit`] (a client transaction). Output:
//! [`Replica::poll`] returns the messages to send and the blocks committed and applied. The
//! replica persists to its [`RedbStore`] inside `poll`, before any message that depends on it
//! leaves, following the `Ready` order in raft-rs's documentation.
//!
//! Batching: submitted transactions wait in a bounded pool. When the pool holds a full block (by
//! count or by encoded bytes, see the `limits` module), when its oldest transaction has waited a
//! block interval, or (on the leader) when no block is in flight, the replica batch-verifies the
//! signatures, drops what fails, and proposes the rest as one Raft entry. A follower's proposal
//! travels to the leader as a Raft forward, and the leader pools its transactions with its own
//! (group commit): what many members submit at once shares blocks.
//!
//! Order: transactions are proposed in submission order, so a member's nonces reach the chain
//! in the order it signed them. A follower keeps at most one forwarded batch outstanding (the
//! network may reorder or lose forwards). Everything outstanding goes back to the front of the
//! pool, in order, and is proposed again when the term or role changes, and on a follower when a
//! forward has not committed within a retry interval (it was lost). A duplicate that commits
//! twice is rejected the second time by its nonce.
//!
//! Applying: every replica batch-verifies the signatures of each block it applies, except those it
//! verified itself when proposing, and runs the contracts. Messages go out before blocks are
//! applied: when a `poll` has both (a follower acknowledging new entries while others commit, a
//! leader broadcasting a commit), it returns the messages with [`Effects::more`] set and applies
//! on the next `poll`, so verification never delays an acknowledgement (raft-rs allows applying
//! after persisting and sending).
//!
//! Snapshots: Raft's snapshot carries only a descriptor of the contract state; a replica that
//! receives one fetches the body in pieces from the sender before Raft sees it, and installs it
//! with the descriptor in one write (the `snapshot` module has the protocol). A snapshot that does
//! not decode is refused and asked for again; it never stops the replica.
//!
//! A replica's own snapshot costs O(state) to encode and hash, so none of that runs in `poll`:
//! the replica hands out a [`SnapshotJob`] (an O(1) clone of the state at the index) in
//! [`Effects::snapshot`], the caller builds it wherever it likes (a node on a background thread,
//! a test or the simulator inline) and hands the result to [`Replica::snapshot_built`]; the
//! replica then writes the body at most a piece per `poll`, at a pace
//! ([`ReplicaConfig::snapshot_write_bytes_per_second`], measured by the `now` its ticks give),
//! and with every piece written, the descriptor, compacting its in-memory log; the stored log
//! entries the snapshot covers and the earlier body are deleted a bounded amount per `poll`
//! afterwards. Blocks go on committing throughout. (Installing a leader's snapshot still writes
//! its whole body in one transaction: a replica that fell that far behind serves no one.)

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::BuildHasherDefault;
use std::mem;

use bytes::Bytes;
use raft::eraftpb::{ConfState, Entry, EntryType, HardState, Message, MessageType, Snapshot};
use raft::{Config, ProgressState, RawNode, SnapshotStatus, StateRole};
use sha3::{Digest, Sha3_256};

use crate::block::{Block, Proposal, ProposalRef};
use crate::contract::{
    ContractState, MemberKeys, Rejection, State, checked_member_keys, verify_signatures,
};
use crate::error::{Error, SubmitError};
use crate::limits::{
    MAX_BLOCK_BYTES, MAX_ENTRIES_BYTES_PER_MESSAGE, MAX_TX_BYTES, PROPOSAL_HEADER_BYTES,
    SNAPSHOT_PIECE_BYTES,
};
use crate::log_store::LogStore;
use crate::member::Genesis;
use crate::pool::{Pool, Pooled};
use crate::snapshot::{self, Body, Descriptor, Download, Holds, Progress};
use crate::store::{HardStateRecord, RedbStore, SnapshotWrite, StoredReplica, WriteBatch};
use crate::tx::{Transaction, TxId};
use crate::verdicts::SharedVerdicts;
use crate::wire::{Envelope, Transfer, WireEntry, WireMessage, WireSnapshot};

/// Tunables of one replica; [`ReplicaConfig::validate`] checks them.
#[derive(Clone, Debug)]
pub struct ReplicaConfig {
    /// This replica's Raft id: its position in the genesis member list + 1.
    pub id: u64,
    /// Ticks without a heartbeat before a follower campaigns.
    pub election_tick: usize,
    /// Ticks between leader heartbeats.
    pub heartbeat_tick: usize,
    /// Most transactions in one block.
    pub max_txs_per_block: usize,
    /// Largest encoded block proposal; at most [`MAX_BLOCK_BYTES`].
    pub max_block_bytes: usize,
    /// Longest a transaction waits in the pool before a (partial) block is proposed.
    pub block_interval_ms: u64,

    /// Proposed transactions not committed after this long are proposed again.
    pub retry_after_ms: u64,
    /// Most transactions waiting (pool plus proposed-but-uncommitted).
    pub max_pending_txs: usize,
    /// Largest encoded transaction accepted; at most [`MAX_TX_BYTES`].
    pub max_tx_bytes: usize,
    /// Fewest applied entries between snapshots (which compact the log).
    pub snapshot_interval_entries: u64,
    /// A snapshot also waits until the entries applied since the last one hold this percentage of
    /// that snapshot's body in bytes (0: no such wait). Each snapshot encodes, hashes and writes
    /// the whole state, so taking one every fixed number of entries costs O(state) per interval,
    /// quadratic in the chain's length; with this wait the work stays proportional to the log,
    /// at 100/percent of a body's bytes per byte of log, and the log held in memory stays about
    /// percent/100 times the last body's size (plus what arrives while a snapshot waits for its
    /// turn, is built and is written). The default, 300, was measured on 4 members on 2 cores
    /// at 10,000 tx/s over 600,000 files (README, Performance): against 100, p99 from ~49 to
    /// ~34 ms and p50 from ~20 to ~15 ms, no more memory at the end (~880 MB a node), and a
    /// follower killed and restarted there caught up as fast (~6 s).
    pub snapshot_log_percent: u64,
    /// Pace at which a snapshot's body is written, in bytes a second (at most one piece a poll;
    /// the first at once). Written at once, every member's body reaches the disk they may share
    /// together, and every commit's fsync waits behind it: four members writing 60 MB bodies in
    /// pieces as fast as they could put p99 commit latency at 10,000 tx/s from ~30 ms to ~300 ms.
    pub snapshot_write_bytes_per_second: u64,
}

impl ReplicaConfig {
    /// Defaults from DESIGN.md for replica `id`.
    pub fn new(id: u64) -> Self {
        Self {
            id,
            election_tick: 10,
            heartbeat_tick: 2,
            max_txs_per_block: 10_000,
            max_block_bytes: MAX_BLOCK_BYTES,
            block_interval_ms: 10,
            retry_after_ms: 3_000,
            max_pending_txs: 200_000,
            max_tx_bytes: MAX_TX_BYTES,
            snapshot_interval_entries: 1_000,
            snapshot_log_percent: 300,
            snapshot_write_bytes_per_second: 16 << 20,
        }
    }

    /// Checks every value against its bounds.
    pub fn validate(&self, genesis: &Genesis) -> Result<(), Error> {
        let invalid = |reason: &str| {
            Err(Error::InvalidConfig {
                reason: reason.to_string(),
            })
        };
        if self.id == 0 || self.id > genesis.members.len() as u64 {
            return invalid("id must name a genesis member (1-based)");
        }
        if self.heartbeat_tick == 0 || self.election_tick <= self.heartbeat_tick {
            return invalid("need 0 < heartbeat_tick < election_tick");
        }
        if !(1..=100_000).contains(&self.max_txs_per_block) {
            return invalid("max_txs_per_block must be 1..=100000");
        }
        if self.max_block_bytes > MAX_BLOCK_BYTES {
            return invalid("max_block_bytes must be at most MAX_BLOCK_BYTES");
        }
        if self.max_tx_bytes == 0 || self.max_tx_bytes > MAX_TX_BYTES {
            return invalid("max_tx_bytes must be 1..=MAX_TX_BYTES");
        }
        if self.max_tx_bytes + PROPOSAL_HEADER_BYTES > self.max_block_bytes {
            return invalid("a block must hold the largest transaction");
        }
        if self.max_pending_txs < self.max_txs_per_block {
            return invalid("max_pending_txs must hold at least one block");
        }
        if self.snapshot_interval_entries == 0 {
            return invalid("snapshot_interval_entries must be positive");
        }
        if self.snapshot_write_bytes_per_second == 0 {
            return invalid("snapshot_write_bytes_per_second must be positive");
        }
        // Past ten times the state, the log (held in memory and replayed on restart) would
        // dwarf what the snapshot saves.
        if self.snapshot_log_percent > MAX_SNAPSHOT_LOG_PERCENT {
            return invalid("snapshot_log_percent must be at most 1000");
        }
        Ok(())
    }
}

/// Largest [`ReplicaConfig::snapshot_log_percent`].
const MAX_SNAPSHOT_LOG_PERCENT: u64 = 1_000;

/// What one [`Replica::poll`] produced.
#[derive(Debug, Default)]
pub struct Effects {
    /// Messages to deliver to the replicas they name (`WireMessage::recipient`).
    pub messages: Vec<WireMessage>,
    /// Blocks committed and applied here, in height order.
    pub committed: Vec<Committed>,
    /// Submitted transactions dropped before proposal, and why.
    pub refused: Vec<(TxId, SubmitError)>,
    /// Pending transactions whose nonce an installed snapshot shows as used: they (or another
    /// transaction with the same nonce) committed in blocks this replica skipped, so their
    /// outcome cannot be told here. They are dropped rather than proposed again (a copy would
    /// be refused as stale, a false rejection).
    pub superseded: Vec<TxId>,
    /// A snapshot to build: run [`SnapshotJob::build`] (O(state); off the task that drives the
    /// replica, ideally) and hand the result to [`Replica::snapshot_built`], or its index to
    /// [`Replica::snapshot_not_built`] if it could not be built. The replica starts no other
    /// snapshot until then.
    pub snapshot: Option<SnapshotJob>,
    /// Committed entries are waiting to be applied: send `messages`, then `poll` again.
    pub more: bool,
}

/// The contract state at a snapshot's index, to encode off the ledger path (see
/// [`Effects::snapshot`]).
pub struct SnapshotJob {
    index: u64,
    term: u64,
    contract: ContractState,
    /// Expected size of the body: reserved at once, not grown by doubling (each doubling copies
    /// the body and faults in fresh pages).
    capacity: usize,
}

impl SnapshotJob {
    /// Raft index of the snapshot.
    pub fn index(&self) -> u64 {
        self.index
    }

    fn encode(&self) -> Vec<u8> {
        let mut body = checkpoint_into(&self.contract, Vec::with_capacity(self.capacity));
        // The body is held for serving; a large allocation shrinks in place.
        body.shrink_to_fit();
        body
    }

    /// Encodes and hashes the state: the O(state) part of a snapshot.
    pub fn build(self) -> BuiltSnapshot {
        BuiltSnapshot {
            term: self.term,
            body: Body::new(self.index, self.encode().into()),
        }
    }
}

impl std::fmt::Debug for SnapshotJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotJob")
            .field("index", &self.index)
            .field("term", &self.term)
            .finish_non_exhaustive()
    }
}

/// A built snapshot, for [`Replica::snapshot_built`].
pub struct BuiltSnapshot {
    term: u64,
    body: Body,
}

impl BuiltSnapshot {
    /// Raft index of the snapshot.
    pub fn index(&self) -> u64 {
        self.body.index
    }
}

/// Longest a due snapshot waits for its replica's turn when the ledger's index stands still.
const SNAPSHOT_TURN_WAIT_MS: u64 = 10_000;

/// Most pieces of a built snapshot's body written per `poll`, in a transaction of their own (the
/// pace is [`ReplicaConfig::snapshot_write_bytes_per_second`]).
const SNAPSHOT_PIECES_PER_POLL: u32 = 1;

/// A built snapshot whose body is being written, at a pace.
struct Writing {
    built: BuiltSnapshot,
    /// Pieces written so far.
    written: u32,
    /// When writing began.
    since_ms: u64,
}

/// A block this replica committed and applied: every transaction in it is acknowledged.
#[derive(Debug, Clone)]
pub struct Committed {
    /// The block, with one result per transaction.
    pub block: Block,
    /// `ids[i]` is the id of `block.txs[i]` (computed once, while applying).
    pub ids: Vec<TxId>,
}

/// A snapshot's body: the whole contract state at its index. It travels in pieces beside Raft
/// (see the `snapshot` module); Raft's own snapshot carries only its descriptor.
#[derive(serde::Deserialize)]
pub(crate) struct Checkpoint {
    contract: ContractState,
}

/// [`Checkpoint`] borrowing the state, so taking a snapshot encodes it without a copy. Encodes to
/// the same bytes.
#[derive(serde::Serialize)]
struct CheckpointRef<'a> {
    contract: &'a ContractState,
}

/// The snapshot body of `contract`: what [`Checkpoint::decode`] reads back.
#[cfg(feature = "fuzzing")]
pub(crate) fn checkpoint_bytes(contract: &ContractState) -> Vec<u8> {
    checkpoint_into(contract, Vec::new())
}

/// [`checkpoint_bytes`], into `buffer`.
fn checkpoint_into(contract: &ContractState, buffer: Vec<u8>) -> Vec<u8> {
    // Encoding into a `Vec` fails only on allocation failure, which aborts first.
    postcard::to_extend(&CheckpointRef { contract }, buffer).unwrap_or_default()
}

impl Checkpoint {
    pub(crate) fn decode(bytes: &[u8]) -> Result<ContractState, postcard::Error> {
        postcard::from_bytes::<Self>(bytes).map(|checkpoint| checkpoint.contract)
    }
}

/// A snapshot body that arrived whole and decoded, waiting for Raft to hand its snapshot back.
struct Staged {
    body: Body,
    contract: ContractState,
}

/// One ledger replica. See the module documentation.
pub struct Replica {
    config: ReplicaConfig,
    node: RawNode<LogStore>,
    log: LogStore,
    store: RedbStore,
    state: State,
    now_ms: u64,
    /// Submitted (or, on the leader, forwarded), not yet proposed.
    pool: Pool,
    /// Proposed, not yet seen in a block: when, and the transaction for a retry. Being here also
    /// means this replica verified the signature when proposing, so applying skips it. (Only
    /// looked up, never iterated: the order lives in `proposal_order`. A fixed-key hasher, not
    /// `RandomState`: the core draws no randomness of its own.)
    proposed: HashMap<TxId, (u64, Pooled), BuildHasherDefault<DefaultHasher>>,
    /// `proposed` in proposal order, so finding stale proposals does not scan them all. Entries
    /// whose transaction committed (or was proposed again) are skipped lazily.
    proposal_order: VecDeque<(u64, TxId)>,
    /// Committed entries not yet applied (see the module documentation).
    unapplied: VecDeque<Entry>,
    applied_index: u64,
    snapshot_index: u64,
    /// Bytes of the entries applied since the latest snapshot (or the one being built).
    applied_bytes_since_snapshot: u64,
    /// The snapshot handed out to build: its index, and `applied_bytes_since_snapshot` when it
    /// was handed out (given back if it is not built).
    building: Option<(u64, u64)>,
    /// Applied index and time at which a snapshot first came due while it was not this
    /// replica's turn.
    due_since: Option<(u64, u64)>,
    /// No snapshot before this applied index: a job was not built, and another waits an
    /// interval.
    retry_from: u64,
    /// The built snapshot whose body is being written.
    writing: Option<Writing>,
    /// The store still holds log entries or an earlier body the latest snapshot made obsolete.
    trimming: bool,
    pending_effects: Effects,
    /// Snapshot bodies this replica can serve.
    holds: Holds,
    /// The snapshot transfer this replica is receiving.
    download: Option<Download>,
    /// Bodies that arrived whole and decoded, by snapshot index, until Raft hands their snapshot
    /// back (or a later install makes them useless).
    staged: BTreeMap<u64, Staged>,
    /// Leader: when each follower last showed life in a snapshot transfer.
    transfer_activity_ms: BTreeMap<u64, u64>,
    /// Term and leadership when last looked at (see `watch_role`).
    role: (u64, bool),
    /// Good signature verdicts shared with other replicas in this process (the simulator).
    verdicts: Option<SharedVerdicts>,
}

impl Replica {
    /// Opens a replica on `store`, restoring whatever it holds, or starting from genesis.
    pub fn open(genesis: Genesis, config: ReplicaConfig, store: RedbStore) -> Result<Self, Error> {
        Self::open_sharing(genesis, config, store, None)
    }

    /// [`Self::open`], taking good signature verdicts from `verdicts` and adding its own (see
    /// [`SharedVerdicts`]); refuses a memo made for another genesis.
    pub fn open_sharing(
        genesis: Genesis,
        config: ReplicaConfig,
        store: RedbStore,
        verdicts: Option<SharedVerdicts>,
    ) -> Result<Self, Error> {
        if verdicts.as_ref().is_some_and(|memo| !memo.serves(&genesis)) {
            return Err(Error::InvalidConfig {
                reason: "shared signature verdicts belong to another genesis".into(),
            });
        }
        genesis.validate_structure()?;
        let keys = match &verdicts {
            Some(memo) => memo.member_keys(&genesis),
            None => checked_member_keys(&genesis),
        }
        .map_err(|reason| Error::InvalidGenesis { reason })?;
        config.validate(&genesis)?;
        let mut loaded = store.load()?;
        let log = LogStore::default();
        let (state, held) = restore_log(&log, &genesis, keys, &mut loaded)?;
        let snapshot_index = held.as_ref().map_or(0, |body| body.index);
        let mut holds = Holds::default();
        if let Some(body) = held {
            holds.hold(body);
        }
        let applied_index = loaded.applied.max(snapshot_index);
        let raft_config = raft_config(&config, &genesis, applied_index);
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let node = RawNode::new(&raft_config, log.clone(), &logger)?;
        let mut replica = Self {
            config,
            node,
            log,
            store,
            state,
            now_ms: 0,
            pool: Pool::default(),
            proposed: HashMap::default(),
            proposal_order: VecDeque::new(),
            unapplied: VecDeque::new(),
            applied_index: snapshot_index,
            snapshot_index,
            applied_bytes_since_snapshot: 0,
            building: None,
            due_since: None,
            retry_from: 0,
            writing: None,
            trimming: snapshot_index > 0,
            pending_effects: Effects::default(),
            holds,
            download: None,
            staged: BTreeMap::new(),
            transfer_activity_ms: BTreeMap::new(),
            role: (0, false),
            verdicts,
        };
        replica.replay_stored_blocks(applied_index)?;
        Ok(replica)
    }

    /// The contract state after the last applied block.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// The durable store (blocks, transaction index).
    pub fn store(&self) -> &RedbStore {
        &self.store
    }

    /// This replica's Raft id.
    pub fn id(&self) -> u64 {
        self.config.id
    }

    /// The leader this replica knows of, if any.
    pub fn leader(&self) -> Option<u64> {
        let leader = self.node.raft.leader_id;
        (leader != 0).then_some(leader)
    }

    /// Whether this replica leads.
    pub fn is_leader(&self) -> bool {
        self.node.raft.state == StateRole::Leader
    }

    /// Raft index of the last applied entry.
    pub fn applied_index(&self) -> u64 {
        self.applied_index
    }

    /// Raft index of the latest snapshot in effect (0 before the first).
    pub fn snapshot_index(&self) -> u64 {
        self.snapshot_index
    }

    /// Size of the latest snapshot's body: the encoded contract state at that index.
    pub fn snapshot_body_bytes(&self) -> u64 {
        self.holds
            .latest()
            .map_or(0, |body| body.descriptor.body_bytes)
    }

    /// Transactions waiting for a block (pooled plus proposed).
    pub fn pending_len(&self) -> usize {
        self.pool.len() + self.proposed.len()
    }

    /// Advances Raft by one tick at time `now_ms`, and proposes a block if one is due.
    pub fn tick(&mut self, now_ms: u64) {
        self.now_ms = self.now_ms.max(now_ms);
        self.node.tick();
        self.requeue_stale();
        self.propose_due(false);
        self.drive_download();
        self.watch_transfers();
    }

    /// Feeds a message from a peer. A malformed or misaddressed message is refused with an error
    /// and changes nothing.
    pub fn handle_message(&mut self, wire: WireMessage) -> Result<(), Error> {
        if wire.recipient() != self.config.id {
            return Err(Error::BadMessage {
                reason: format!(
                    "addressed to {}, this is {}",
                    wire.recipient(),
                    self.config.id
                ),
            });
        }
        if wire.sender() == 0 || wire.sender() > self.state.genesis().members.len() as u64 {
            return Err(Error::BadMessage {
                reason: format!("sender {} is not a member", wire.sender()),
            });
        }
        match wire.0 {
            Envelope::Raft(raft) => {
                let message = Message::try_from(*raft)?;
                check_entries(&message)?;
                self.check_raft_message(&message)?;
                match message.get_msg_type() {
                    MessageType::MsgSnapshot => return self.receive_snapshot(message),
                    MessageType::MsgPropose if self.is_leader() => {
                        return self.pool_forwarded(&message);
                    }
                    _ => self.node.step(message)?,
                }
            }
            Envelope::Transfer { from, transfer, .. } => self.handle_transfer(from, transfer)?,
        }
        Ok(())
    }

    /// Accepts a transaction for ordering. Cheap checks run now (size, membership, nonce, body
    /// against the current state); the signature is checked in a batch when the block is
    /// proposed. Returns the id under which the block will acknowledge it.
    pub fn submit(&mut self, tx: Transaction) -> Result<TxId, SubmitError> {
        let encoded = tx.encode();
        let size_bytes = encoded.len();
        if size_bytes > self.config.max_tx_bytes {
            return Err(SubmitError::TooLarge {
                size_bytes,
                limit_bytes: self.config.max_tx_bytes,
            });
        }
        if self.pending_len() >= self.config.max_pending_txs {
            return Err(SubmitError::PoolFull {
                limit: self.config.max_pending_txs,
            });
        }
        self.state
            .precheck(&tx, true)
            .map_err(SubmitError::Rejected)?;
        let id = TxId::of_encoding(&encoded);
        self.pool
            .push_back(Pooled { id, tx, size_bytes }, self.now_ms);
        self.propose_due(false);
        Ok(id)
    }

    /// Proposes whatever is pooled without waiting for the block interval: now on a follower;
    /// on the leader as soon as the block in flight (if any) commits (see `propose_due`).
    pub fn flush(&mut self) {
        self.propose_due(true);
    }

    /// Handles everything raft-rs has ready: persists, applies, and returns what to send and what
    /// committed. When [`Effects::more`] is set, send the messages and call `poll` again: blocks
    /// are waiting to be applied.
    pub fn poll(&mut self) -> Result<Effects, Error> {
        // Each round consumes one Ready; raft-rs produces a bounded number per input.
        for _ in 0..64 {
            if !self.node.has_ready() {
                // A leader whose block just committed proposes what pooled meanwhile, and sends
                // it in this poll.
                if self.is_leader() && !self.pool.is_empty() {
                    self.propose_due(false);
                }
                if !self.node.has_ready() {
                    break;
                }
            }
            self.handle_ready()?;
        }
        self.watch_role();
        if self.pending_effects.messages.is_empty() {
            self.apply_unapplied()?;
            self.write_snapshot()?;
            if self.trimming {
                self.trimming = self.store.trim(self.snapshot_index)?;
            }
            self.maybe_start_snapshot();
        }
        let mut effects = mem::take(&mut self.pending_effects);
        effects.more = !self.unapplied.is_empty();
        Ok(effects)
    }

    fn handle_ready(&mut self) -> Result<(), Error> {
        let mut ready = self.node.ready();
        let mut messages: Vec<WireMessage> = ready
            .take_messages()
            .into_iter()
            .map(|message| self.outgoing(message))
            .collect();
        let mut batch = WriteBatch {
            sync: ready.must_sync(),
            ..WriteBatch::default()
        };
        if !ready.snapshot().is_empty() {
            // The snapshot supersedes whatever is queued; apply that first so the state the
            // snapshot replaces is a whole one.
            self.apply_unapplied()?;
            self.install_snapshot(ready.snapshot().clone(), &mut batch);
        }
        self.unapplied.extend(ready.take_committed_entries());
        if !ready.entries().is_empty() {
            self.log.write().append(ready.entries());
            batch.entries = ready
                .entries()
                .iter()
                .cloned()
                .map(WireEntry::from)
                .collect();
        }
        if let Some(hard_state) = ready.hs() {
            self.log.write().set_hard_state(hard_state.clone());
            batch.hard_state = Some(record(hard_state));
        }
        self.store.commit(&batch)?;
        let persisted = ready.take_persisted_messages();
        messages.extend(persisted.into_iter().map(|message| self.outgoing(message)));

        let mut light = self.node.advance(ready);
        let mut batch = WriteBatch::default();
        if let Some(commit) = light.commit_index() {
            let mut log = self.log.write();
            let mut hard_state = self.node.raft.hard_state();
            hard_state.commit = commit;
            log.set_hard_state(hard_state.clone());
            batch.hard_state = Some(record(&hard_state));
        }
        let light_messages = light.take_messages();
        messages.extend(
            light_messages
                .into_iter()
                .map(|message| self.outgoing(message)),
        );
        self.unapplied.extend(light.take_committed_entries());
        self.store.commit(&batch)?;
        self.node.advance_apply();
        self.pending_effects.messages.extend(messages);
        Ok(())
    }

    /// Applies the queued committed entries and stores their blocks in one write.
    fn apply_unapplied(&mut self) -> Result<(), Error> {
        let Some(last) = self.unapplied.back().map(|entry| entry.index) else {
            return Ok(());
        };
        let entries = mem::take(&mut self.unapplied);
        let mut batch = WriteBatch {
            blocks: self.apply_entries(entries),
            applied: Some(last),
            ..WriteBatch::default()
        };
        self.store.commit(&batch)?;
        self.pending_effects.committed.append(&mut batch.blocks);
        Ok(())
    }

    /// Turns committed entries into blocks, in order. The signatures of every block are checked
    /// in one batch (a replica that fell behind catches up with bigger, cheaper batches), except
    /// those this replica checked when it proposed them. An entry that does not decode (only a
    /// faulty leader could commit one) is skipped identically on every replica, as are conf
    /// changes: membership is fixed by the genesis and no replica proposes them.
    fn apply_entries(&mut self, entries: impl IntoIterator<Item = Entry>) -> Vec<Committed> {
        let mut decoded = Vec::new();
        for entry in entries {
            self.applied_index = entry.index;
            self.applied_bytes_since_snapshot += entry.data.len() as u64;
            if entry.get_entry_type() != EntryType::EntryNormal || entry.data.is_empty() {
                continue;
            }
            let Ok(proposal) = postcard::from_bytes::<Proposal>(&entry.data) else {
                continue;
            };
            let ids = Transaction::ids(&proposal.txs);
            // What this replica proposed it verified then (only good signatures are proposed).
            let verified_here: Vec<bool> = ids
                .iter()
                .map(|id| self.proposed.remove(id).is_some())
                .collect();
            decoded.push((proposal, ids, verified_here));
        }
        let (unknown, unknown_ids): (Vec<&Transaction>, Vec<TxId>) = decoded
            .iter()
            .flat_map(|(proposal, ids, verified_here)| {
                proposal
                    .txs
                    .iter()
                    .zip(ids)
                    .zip(verified_here)
                    .filter(|(_, known)| !**known)
                    .map(|((tx, id), _)| (tx, *id))
            })
            .unzip();
        let mut fresh = self.check_signatures(&unknown, &unknown_ids).into_iter();
        decoded
            .into_iter()
            .map(|(proposal, ids, verified_here)| {
                let verdicts: Vec<bool> = verified_here
                    .iter()
                    .map(|known| *known || fresh.next().unwrap_or(false))
                    .collect();
                let block = self.state.apply_identified(
                    proposal.timestamp_ms,
                    proposal.txs,
                    &ids,
                    &verdicts,
                );
                Committed { block, ids }
            })
            .collect()
    }

    /// The signature verdicts of `txs` (named by `ids`): good where the shared memo says so,
    /// checked here otherwise, and the good ones recorded for the other replicas.
    fn check_signatures(&self, txs: &[&Transaction], ids: &[TxId]) -> Vec<bool> {
        let Some(memo) = &self.verdicts else {
            return verify_signatures(&self.state, txs);
        };
        let known: Vec<bool> = ids.iter().map(|id| memo.holds(id)).collect();
        let unknown: Vec<&Transaction> = txs
            .iter()
            .zip(&known)
            .filter(|(_, known)| !**known)
            .map(|(tx, _)| *tx)
            .collect();
        let mut fresh = verify_signatures(&self.state, &unknown).into_iter();
        let verdicts: Vec<bool> = known
            .iter()
            .map(|known| *known || fresh.next().unwrap_or(false))
            .collect();
        memo.record_good(
            ids.iter()
                .zip(&known)
                .zip(&verdicts)
                .filter(|((_, known), good)| !**known && **good)
                .map(|((id, _), _)| *id),
        );
        verdicts
    }

    /// Proposes the pool as blocks when one is due: a full block at once; otherwise on a
    /// follower when forced or after a block interval, and on the leader as soon as its log
    /// holds nothing uncommitted (or after a block interval). The leader thus commits in
    /// groups: while one block is in flight the next one fills, so concurrent submissions share
    /// a block at any load without waiting out a timer when the ledger is idle.
    fn propose_due(&mut self, force: bool) {
        self.watch_role();
        let Some(oldest) = self.pool.oldest_ms() else {
            return;
        };
        let waited = self.now_ms.saturating_sub(oldest) >= self.config.block_interval_ms;
        let now = if self.is_leader() {
            !self.log_holds_uncommitted()
        } else {
            force
        };
        // Without a known leader a proposal would be dropped; keep pooling until one appears.
        if !(self.pool_holds_full_block() || waited || now) || self.leader().is_none() {
            return;
        }
        if self.forward_outstanding() {
            return;
        }
        while !self.pool.is_empty() {
            let take = self.next_block_len();
            let batch = self.pool.take_front(take);
            if !self.propose_batch(batch) {
                break;
            }
            if self.forward_outstanding() {
                break;
            }
            if !self.pool_holds_full_block() && !force {
                break;
            }
        }
        self.pool.restart_wait(self.now_ms);
    }

    /// Whether the leader's log holds entries that have not committed yet (a block in flight).
    fn log_holds_uncommitted(&self) -> bool {
        self.node.raft.raft_log.last_index() > self.node.raft.raft_log.committed
    }

    /// The leader pools the transactions of a follower's forward instead of appending the forward
    /// as an entry of its own, so that what many members submit at once shares blocks (an
    /// audit's releases from hundreds of holders made as many blocks, each a durable write at
    /// every replica). The follower ran the cheap checks; the leader does not repeat them, so
    /// a transaction the state has since made stale still reaches a block and its sender learns
    /// the rejection there. One already pooled or proposed here is skipped; from the first that
    /// does not fit (too large, or the pool full) the rest of the forward is dropped, and its
    /// follower proposes it again after `retry_after_ms` if it never commits.
    fn pool_forwarded(&mut self, message: &Message) -> Result<(), Error> {
        // `check_entries` let through only a forward of exactly one normal entry.
        let Some(entry) = message.get_entries().first() else {
            return Ok(());
        };
        let proposal =
            postcard::from_bytes::<Proposal>(&entry.data).map_err(|error| Error::BadMessage {
                reason: format!("a forwarded proposal that does not decode: {error}"),
            })?;
        for tx in proposal.txs {
            let encoded = tx.encode();
            let id = TxId::of_encoding(&encoded);
            let size_bytes = encoded.len();
            if self.pool.contains(&id) || self.proposed.contains_key(&id) {
                continue;
            }
            // Only the rest of the forward is dropped, never a transaction before one pooled:
            // a later nonce applied first would make the earlier one stale for ever.
            if size_bytes > self.config.max_tx_bytes
                || self.pending_len() >= self.config.max_pending_txs
            {
                break;
            }
            self.pool
                .push_back(Pooled { id, tx, size_bytes }, self.now_ms);
        }
        self.propose_due(false);
        Ok(())
    }

    /// A follower forwards one batch at a time: forwarded proposals may arrive (or be lost and
    /// retried) out of order, and a later nonce applied first would make an earlier one stale.
    fn forward_outstanding(&self) -> bool {
        !self.is_leader() && !self.proposed.is_empty()
    }

    /// Whether the pool holds a block's worth of transactions, by count or by bytes.
    fn pool_holds_full_block(&self) -> bool {
        self.pool.len() >= self.config.max_txs_per_block
            || self.pool.bytes() + PROPOSAL_HEADER_BYTES >= self.config.max_block_bytes
    }

    /// How many transactions from the front of the pool make the next block: as many as fit by
    /// count and by bytes, and always at least one (the largest transaction fits in a block).
    fn next_block_len(&self) -> usize {
        let mut bytes = PROPOSAL_HEADER_BYTES;
        let mut count = 0;
        for pooled in self.pool.iter().take(self.config.max_txs_per_block) {
            if bytes + pooled.size_bytes > self.config.max_block_bytes {
                break;
            }
            bytes += pooled.size_bytes;
            count += 1;
        }
        count.max(1)
    }

    /// Verifies and proposes one batch; on a refused proposal puts the batch back and returns
    /// false.
    fn propose_batch(&mut self, batch: Vec<Pooled>) -> bool {
        let txs: Vec<&Transaction> = batch.iter().map(|pooled| &pooled.tx).collect();
        let ids: Vec<TxId> = batch.iter().map(|pooled| pooled.id).collect();
        let verdicts = self.check_signatures(&txs, &ids);
        let mut admitted = Vec::with_capacity(batch.len());
        for (pooled, ok) in batch.into_iter().zip(verdicts) {
            if ok {
                admitted.push(pooled);
            } else {
                let error = SubmitError::Rejected(Rejection::BadSignature);
                self.pending_effects.refused.push((pooled.id, error));
            }
        }
        if admitted.is_empty() {
            return true;
        }
        let proposal = ProposalRef {
            timestamp_ms: self.now_ms,
            txs: admitted.iter().map(|pooled| &pooled.tx).collect(),
        };
        let data = postcard::to_allocvec(&proposal).unwrap_or_default();
        // `next_block_len` counted the bytes; a block that does not fit could never be sent.
        assert!(
            data.len() <= self.config.max_block_bytes,
            "block over its byte limit"
        );
        if self.node.propose(vec![], data).is_err() {
            self.pool.push_front_all(admitted, self.now_ms);
            return false;
        }
        for pooled in admitted {
            self.proposal_order.push_back((self.now_ms, pooled.id));
            self.proposed.insert(pooled.id, (self.now_ms, pooled));
        }
        true
    }

    /// Puts proposals that did not commit in time back into the pool.
    fn requeue_stale(&mut self) {
        // Forget order entries whose transaction committed or was proposed again since.
        while let Some(&(at, id)) = self.proposal_order.front() {
            match self.proposed.get(&id) {
                Some((proposed_at, _)) if *proposed_at == at => break,
                _ => {
                    self.proposal_order.pop_front();
                }
            }
        }
        // A leader's own proposals are in its log and commit unless it loses the lead, which
        // `watch_role` handles; only forwarded ones can be lost silently.
        if self.is_leader() {
            return;
        }
        let Some(&(oldest_ms, _)) = self.proposal_order.front() else {
            return;
        };
        if self.now_ms.saturating_sub(oldest_ms) >= self.config.retry_after_ms {
            self.requeue_outstanding();
        }
    }

    /// On a change of term or role, whatever this replica proposed may be lost (or may still
    /// commit through the new leader): put it all back in front of the pool at once, so nothing
    /// proposed after the change can overtake it. A copy that commits twice is rejected the
    /// second time by its nonce.
    fn watch_role(&mut self) {
        let role = (self.node.raft.term, self.is_leader());
        if role != self.role {
            self.role = role;
            self.requeue_outstanding();
        }
    }

    /// Everything outstanding goes back to the front of the pool, in proposal order: a later
    /// nonce must never be proposed ahead of an earlier one it was submitted after.
    fn requeue_outstanding(&mut self) {
        let mut requeued = Vec::new();
        for (at, id) in mem::take(&mut self.proposal_order) {
            if self
                .proposed
                .get(&id)
                .is_some_and(|(proposed_at, _)| *proposed_at == at)
                && let Some((_, pooled)) = self.proposed.remove(&id)
            {
                requeued.push(pooled);
            }
        }
        self.pool.push_front_all(requeued, self.now_ms);
    }

    /// Converts an outgoing Raft message; notes when a snapshot is offered, so a transfer that
    /// goes silent can be reported failed (see `watch_transfers`).
    fn outgoing(&mut self, message: Message) -> WireMessage {
        if message.get_msg_type() == MessageType::MsgSnapshot {
            self.transfer_activity_ms.insert(message.to, self.now_ms);
        }
        WireMessage::from(message)
    }

    fn send_transfer(&mut self, to: u64, transfer: Transfer) {
        let message = WireMessage::transfer(self.config.id, to, transfer);
        self.pending_effects.messages.push(message);
    }

    /// A leader offers a snapshot. Its body is fetched in pieces first; Raft sees the offer only
    /// once the body is here, checked and decoded (see the `snapshot` module).
    fn receive_snapshot(&mut self, message: Message) -> Result<(), Error> {
        let from = message.from;
        let index = message.get_snapshot().get_metadata().index;
        if index < self.node.raft.raft_log.committed {
            // Stale: Raft refuses to restore it (`Raft::restore`) and tells the sender where this
            // replica is. (At `index == committed` Raft may restore, so that takes a body.)
            self.node.step(message)?;
            return Ok(());
        }
        let raft = &self.node.raft;
        let from_current_leader = message.term == raft.term && raft.leader_id == from;
        if message.term < raft.term || (message.term == raft.term && !from_current_leader) {
            return Err(Error::BadMessage {
                reason: format!(
                    "snapshot offer from {from} at term {} (term {}, leader {})",
                    message.term, raft.term, raft.leader_id
                ),
            });
        }
        let descriptor = match Descriptor::decode(&message.get_snapshot().data) {
            Ok(descriptor) => descriptor,
            Err(error) => {
                self.send_transfer(from, Transfer::Abort { index });
                return Err(error);
            }
        };
        let staged = self.staged.get(&index).map(|staged| &staged.body);
        if staged.is_some_and(|body| body.descriptor == descriptor) {
            self.node.step(message)?;
            return Ok(());
        }
        if let Some(download) = &mut self.download
            && download.is_for(from, index, &descriptor)
        {
            // The same transfer, offered again (perhaps at a newer term): step the newest offer.
            download.message = message;
            return Ok(());
        }
        self.download = Some(Download::new(from, index, descriptor, message, self.now_ms));
        self.drive_download();
        Ok(())
    }

    fn handle_transfer(&mut self, from: u64, transfer: Transfer) -> Result<(), Error> {
        match transfer {
            Transfer::Request { index, piece } => {
                if let Some(bytes) = self.holds.piece(index, piece) {
                    self.transfer_activity_ms.insert(from, self.now_ms);
                    self.send_transfer(
                        from,
                        Transfer::Piece {
                            index,
                            piece,
                            bytes,
                        },
                    );
                } else {
                    self.send_transfer(from, Transfer::Unavailable { index });
                    // A late request for an older body must not cancel a newer transfer.
                    let pending = self.node.raft.prs().get(from).map(|pr| pr.pending_snapshot);
                    if pending == Some(index) {
                        self.snapshot_failed(from);
                    }
                }
            }
            Transfer::Piece {
                index,
                piece,
                bytes,
            } => return self.receive_piece(from, index, piece, bytes),
            Transfer::Unavailable { index } => {
                if self
                    .download
                    .as_ref()
                    .is_some_and(|d| d.from == from && d.index == index)
                {
                    self.download = None;
                }
            }
            Transfer::Abort { .. } => self.snapshot_failed(from),
        }
        Ok(())
    }

    /// Tells raft-rs the snapshot sent to `to` failed, so it offers one again.
    fn snapshot_failed(&mut self, to: u64) {
        self.transfer_activity_ms.remove(&to);
        if self.is_leader() {
            self.node.report_snapshot(to, SnapshotStatus::Failure);
        }
    }

    fn receive_piece(
        &mut self,
        from: u64,
        index: u64,
        piece: u32,
        bytes: Bytes,
    ) -> Result<(), Error> {
        let now_ms = self.now_ms;
        let Some(download) = self
            .download
            .as_mut()
            .filter(|download| download.from == from && download.index == index)
        else {
            return Ok(());
        };
        let progress = download.accept(piece, bytes, now_ms);
        let body = match progress {
            Ok(Progress::Pending) => {
                self.drive_download();
                return Ok(());
            }
            Ok(Progress::Complete(body)) => body,
            Err(error) => {
                self.drive_download();
                return Err(error);
            }
        };
        let contract = match Checkpoint::decode(&body) {
            Ok(contract) => contract,
            Err(error) => {
                if let Some(download) = self.download.as_mut() {
                    download.refused_body();
                }
                self.drive_download();
                return Err(Error::BadMessage {
                    reason: format!("snapshot body at index {index} does not decode: {error}"),
                });
            }
        };
        let Some(download) = self.download.take() else {
            return Ok(());
        };
        // Bounded: a body is staged only when a whole download completed, and older ones go
        // once a snapshot is installed.
        self.staged.insert(
            index,
            Staged {
                body: Body {
                    index,
                    descriptor: download.descriptor,
                    bytes: body,
                },
                contract,
            },
        );
        // Never the body Raft may hand back next (its pending snapshot), nor the new one.
        let pending = self.node.raft.raft_log.unstable_snapshot().as_ref();
        let pending_index = pending.map(|snapshot| snapshot.get_metadata().index);
        while self.staged.len() > 2 {
            let oldest = self
                .staged
                .keys()
                .copied()
                .find(|staged| *staged != index && Some(*staged) != pending_index);
            let Some(oldest) = oldest else { break };
            self.staged.remove(&oldest);
        }
        let stepped = self.node.step(download.message);
        // Raft may not take it (a newer term, a fast-forward): then the body is of no use.
        let pending = self.node.raft.raft_log.unstable_snapshot().as_ref();
        if pending.is_none_or(|snapshot| snapshot.get_metadata().index != index) {
            self.staged.remove(&index);
        }
        stepped?;
        Ok(())
    }

    /// Requests the pieces due; gives up on a transfer that stalled or keeps failing.
    fn drive_download(&mut self) {
        let now_ms = self.now_ms;
        let Some(download) = self.download.as_mut() else {
            return;
        };
        if download.stalled(now_ms) || download.exhausted() {
            let (from, index) = (download.from, download.index);
            self.download = None;
            self.send_transfer(from, Transfer::Abort { index });
            return;
        }
        let (from, index) = (download.from, download.index);
        for piece in download.requests(now_ms) {
            self.send_transfer(from, Transfer::Request { index, piece });
        }
    }

    /// Leader: reports snapshots failed for followers that went silent mid-transfer, so raft-rs
    /// does not wait for them forever.
    fn watch_transfers(&mut self) {
        if !self.is_leader() {
            self.transfer_activity_ms.clear();
            return;
        }
        let mut silent = Vec::new();
        for (id, progress) in self.node.raft.prs().iter() {
            if progress.state != ProgressState::Snapshot {
                continue;
            }
            let last_ms = *self.transfer_activity_ms.entry(*id).or_insert(self.now_ms);
            if self.now_ms.saturating_sub(last_ms) >= snapshot::STALL_MS {
                silent.push(*id);
            }
        }
        for id in silent {
            self.snapshot_failed(id);
        }
    }

    /// Installs the snapshot Raft handed back: the state staged when its body arrived (Raft only
    /// sees a snapshot after `receive_snapshot` staged its body). State, descriptor and body are
    /// written in one batch.
    fn install_snapshot(&mut self, snapshot: Snapshot, batch: &mut WriteBatch) {
        let index = snapshot.get_metadata().index;
        let staged = self.staged.remove(&index);
        // Bodies staged for earlier snapshots can no longer be installed.
        self.staged.retain(|staged_index, _| *staged_index > index);
        let Some(Staged { body, contract }) = staged else {
            panic!("raft installed snapshot {index}, whose body was never staged");
        };
        assert_eq!(
            Descriptor::decode(&snapshot.data).ok(),
            Some(body.descriptor),
            "staged body differs from the snapshot's descriptor"
        );
        self.state = self.state.replaced(contract);
        self.drop_superseded();
        self.log.write().install_snapshot(snapshot.clone());
        self.applied_index = index;
        self.snapshot_index = index;
        self.applied_bytes_since_snapshot = 0;
        // A snapshot of this replica's own in the making is older: its pieces go with this
        // write. A turn it was waiting for is of no use now.
        self.writing = None;
        self.due_since = None;
        // The log a job in the making would give back was replaced too.
        if let Some((_, log_bytes)) = self.building.as_mut() {
            *log_bytes = 0;
        }
        batch.snapshot = Some(SnapshotWrite::Installed {
            snapshot: WireSnapshot::from(snapshot),
            body: body.bytes.clone(),
        });
        batch.applied = Some(index);
        batch.sync = true;
        self.holds.hold(body);
    }

    /// After a snapshot: drops pooled and proposed transactions whose nonce the state shows as
    /// used (see [`Effects::superseded`]).
    fn drop_superseded(&mut self) {
        let state = &self.state;
        let used = |tx: &Transaction| tx.nonce <= state.nonce(&tx.sender);
        let mut superseded = Vec::new();
        self.proposed.retain(|id, (_, pooled)| {
            let keep = !used(&pooled.tx);
            if !keep {
                superseded.push(*id);
            }
            keep
        });
        superseded.extend(self.pool.retain(|pooled| !used(&pooled.tx)));
        superseded.sort_unstable();
        self.pending_effects.superseded.extend(superseded);
    }

    /// Hands out a snapshot job when enough entries applied since the last snapshot, holding
    /// enough bytes next to it (see [`ReplicaConfig::snapshot_log_percent`]), in this replica's
    /// turn; one at a time.
    fn maybe_start_snapshot(&mut self) {
        if self.building.is_some() || self.writing.is_some() {
            return;
        }
        let interval = self.config.snapshot_interval_entries;
        let body_bytes = self.snapshot_body_bytes();
        let log_wanted =
            u128::from(body_bytes) * u128::from(self.config.snapshot_log_percent) / 100;
        if self.applied_index < self.snapshot_index.saturating_add(interval)
            || self.applied_index < self.retry_from
            || u128::from(self.applied_bytes_since_snapshot) < log_wanted
        {
            return;
        }
        // Turns: the applied index (the same on every replica) runs through four slots of a
        // quarter interval, and a replica takes its snapshot in the slot of its Raft id, so the
        // builds (on cores the members may share) and the writes (to a disk they may share) do
        // not all fall at once and slow the whole quorum together. One that missed its slot
        // between polls takes it anyway a round later, and one on an idle ledger (whose index
        // stands still) after a while.
        let slot = (interval / 4).max(1);
        let in_turn = (self.applied_index / slot) % 4 == (self.config.id - 1) % 4;
        // Stamped before the first tick (a clock of 0), it is stamped again once there is one.
        if self.due_since.is_some_and(|(_, since_ms)| since_ms == 0) {
            self.due_since = None;
        }
        let (since, since_ms) = *self
            .due_since
            .get_or_insert((self.applied_index, self.now_ms));
        let overdue = self.applied_index >= since.saturating_add(slot.saturating_mul(4))
            || self.now_ms >= since_ms.saturating_add(SNAPSHOT_TURN_WAIT_MS);
        if !in_turn && !overdue {
            return;
        }
        let index = self.applied_index;
        let Some(term) = self.log.read().term_of(index) else {
            return;
        };
        self.due_since = None;
        self.building = Some((index, mem::take(&mut self.applied_bytes_since_snapshot)));
        // The state grew by at most the log applied since the last body (up to
        // `snapshot_log_percent` of it); usually far less, and the buffer grows if it must.
        let capacity = body_bytes.saturating_add(body_bytes / 4);
        self.pending_effects.snapshot = Some(SnapshotJob {
            index,
            term,
            contract: self.state.contract().clone(),
            capacity: usize::try_from(capacity).unwrap_or(0),
        });
    }

    /// Takes a snapshot built from [`Effects::snapshot`]: its body is written over the next
    /// polls, then it takes effect. One that a newer snapshot (installed from the leader)
    /// overtook, or that is not of this replica's log, is dropped.
    pub fn snapshot_built(&mut self, built: BuiltSnapshot) {
        let index = built.index();
        if self.building.is_some_and(|(building, _)| building == index) {
            self.building = None;
        }
        let of_this_log = self.log.read().term_of(index) == Some(built.term);
        if index <= self.snapshot_index
            || index > self.applied_index
            || !of_this_log
            || self.writing.is_some()
        {
            return;
        }
        self.writing = Some(Writing {
            built,
            written: 0,
            since_ms: self.now_ms,
        });
    }

    /// The snapshot job at `index` could not be built (the caller's pool stopped): another is
    /// handed out once an interval more is applied and the log warrants it (not at once, which
    /// would spin while the pool refuses work).
    pub fn snapshot_not_built(&mut self, index: u64) {
        if let Some((_, log_bytes)) = self.building.filter(|(building, _)| *building == index) {
            self.building = None;
            self.applied_bytes_since_snapshot += log_bytes;
            self.retry_from = self
                .applied_index
                .saturating_add(self.config.snapshot_interval_entries);
        }
    }

    /// Writes the next pieces of the built snapshot's body; with all of them written, its
    /// descriptor (synced), and compacts the in-memory log.
    fn write_snapshot(&mut self) -> Result<(), Error> {
        let Some(writing) = self.writing.as_mut() else {
            return Ok(());
        };
        // An install from the leader clears `writing`, so this body is newer than the snapshot
        // in effect.
        let body = &writing.built.body;
        let index = body.index;
        let pieces = body.descriptor.piece_count();
        if writing.written < pieces {
            // The pace runs from the first poll with a clock (a replica not yet ticked has none).
            if writing.since_ms == 0 {
                writing.since_ms = self.now_ms;
            }
            // One piece at once, then one a poll while the pace allows.
            let paced = u128::from(self.now_ms.saturating_sub(writing.since_ms))
                * u128::from(self.config.snapshot_write_bytes_per_second)
                / 1000
                / SNAPSHOT_PIECE_BYTES as u128;
            let due = u32::try_from(paced.saturating_add(1)).unwrap_or(u32::MAX);
            let first = writing.written;
            let last = first
                .saturating_add(SNAPSHOT_PIECES_PER_POLL)
                .min(due)
                .min(pieces);
            if last <= first {
                return Ok(());
            }
            self.store.write_snapshot_pieces(
                index,
                first,
                (first..last).filter_map(|p| body.piece(p)),
            )?;
            writing.written = last;
            return Ok(());
        }
        let Some(Writing { built, .. }) = self.writing.take() else {
            return Ok(());
        };
        let mut snapshot = Snapshot {
            data: built.body.descriptor.encode().into(),
            ..Snapshot::default()
        };
        {
            let metadata = snapshot.mut_metadata();
            metadata.index = index;
            metadata.term = built.term;
            metadata.set_conf_state(self.log.read().conf_state().clone());
        }
        self.store.commit(&WriteBatch {
            snapshot: Some(SnapshotWrite::Taken {
                snapshot: WireSnapshot::from(snapshot.clone()),
            }),
            sync: true,
            ..WriteBatch::default()
        })?;
        self.log.write().compact_to_snapshot(snapshot);
        self.snapshot_index = index;
        self.holds.hold(built.body);
        self.trimming = true;
        Ok(())
    }

    /// After a restart: re-applies the blocks stored after the snapshot, up to `applied`, so the
    /// state matches what this replica acknowledged before it stopped.
    fn replay_stored_blocks(&mut self, applied: u64) -> Result<(), Error> {
        let first = self.snapshot_index + 1;
        let last = applied.min(raft::Storage::last_index(&self.log)?);
        if last < first {
            return Ok(());
        }
        let context = raft::GetEntriesContext::empty(false);
        let entries = raft::Storage::entries(&self.log, first, last + 1, None, context)?;
        // The blocks are already stored; only the state needs them.
        self.apply_entries(entries);
        Ok(())
    }
}

impl Replica {
    /// Refuses what raft-rs would panic on, or what no honest replica sends, before it reaches
    /// raft-rs (which trusts its peers: its `fatal!`s assume every message came from a correct
    /// replica). Found by fuzzing: a pre-vote request of term 0 made raft-rs answer with term 0
    /// and abort ("term should be set when sending MsgRequestPreVoteResponse").
    fn check_raft_message(&self, message: &Message) -> Result<(), Error> {
        let refuse = |reason: String| Err(Error::BadMessage { reason });
        let kind = message.get_msg_type();
        let log = &self.node.raft.raft_log;
        match kind {
            // Forwarded by a follower, as raft-rs forwards them: without a term.
            MessageType::MsgPropose => return Ok(()),
            MessageType::MsgAppend
            | MessageType::MsgAppendResponse
            | MessageType::MsgRequestVote
            | MessageType::MsgRequestVoteResponse
            | MessageType::MsgRequestPreVote
            | MessageType::MsgRequestPreVoteResponse
            | MessageType::MsgHeartbeat
            | MessageType::MsgHeartbeatResponse
            | MessageType::MsgSnapshot => {}
            // Local to a replica (ticks, reports) or never used here (leadership transfer,
            // read index): no peer has reason to send them.
            other => return refuse(format!("{other:?} is not a message between replicas")),
        }
        // Priorities are not used here, and a lower one makes a replica at term 0 refuse a
        // pre-vote with its own term, 0, which raft-rs then aborts on (found by fuzzing too).
        if message.priority != 0 || message.deprecated_priority != 0 {
            return refuse(format!("{kind:?} with a priority"));
        }
        // A term of 0 marks a local message to raft-rs (snapshot offers are checked against the
        // leader and its term by `receive_snapshot`).
        if message.term == 0 && kind != MessageType::MsgSnapshot {
            return refuse(format!("{kind:?} without a term"));
        }
        match kind {
            MessageType::MsgAppend => {
                if message.log_term > message.term {
                    return refuse("an append whose previous entry is from a later term".into());
                }
                let mut expected = message.index;
                let mut last_term = message.log_term;
                for entry in message.get_entries() {
                    expected = expected.saturating_add(1);
                    if entry.index != expected
                        || entry.term < last_term
                        || entry.term > message.term
                    {
                        return refuse(format!(
                            "an append whose entries do not follow index {} in term order",
                            message.index
                        ));
                    }
                    last_term = entry.term;
                }
            }
            MessageType::MsgHeartbeat if message.commit > log.last_index() => {
                return refuse(format!(
                    "a heartbeat committing {} beyond this log's last index {}",
                    message.commit,
                    log.last_index()
                ));
            }
            MessageType::MsgAppendResponse
                if !message.reject && message.index > log.last_index() =>
            {
                return refuse(format!(
                    "an append acknowledged up to {} beyond this log's last index {}",
                    message.index,
                    log.last_index()
                ));
            }
            _ => {}
        }
        Ok(())
    }
}

/// Refuses entries no honest replica sends: a proposal that is not one normal entry of at most a
/// block (membership is fixed by the genesis; a larger entry could never be sent on in an append),
/// and appends carrying entries over a block. raft-rs appends whatever a leader receives.
fn check_entries(message: &Message) -> Result<(), Error> {
    let refuse = |reason: String| Err(Error::BadMessage { reason });
    for entry in message.get_entries() {
        if entry.data.len() > MAX_BLOCK_BYTES {
            return refuse(format!("an entry of {} bytes", entry.data.len()));
        }
    }
    if message.get_msg_type() == MessageType::MsgPropose {
        let entries = message.get_entries();
        if entries.len() != 1 || entries[0].get_entry_type() != EntryType::EntryNormal {
            return refuse("a proposal must be one normal entry".into());
        }
    }
    Ok(())
}

fn record(hard_state: &HardState) -> HardStateRecord {
    HardStateRecord {
        term: hard_state.term,
        vote: hard_state.vote,
        commit: hard_state.commit,
    }
}

/// Rebuilds the in-memory log from what the store loaded; returns the state at the snapshot (or
/// genesis) and the snapshot's body (taken out of `loaded`).
fn restore_log(
    log: &LogStore,
    genesis: &Genesis,
    keys: MemberKeys,
    loaded: &mut StoredReplica,
) -> Result<(State, Option<Body>), Error> {
    let mut core = log.write();
    let (voters, learners) = genesis.raft_membership();
    core.set_conf_state(ConfState {
        voters,
        learners,
        ..ConfState::default()
    });
    let mut state = State::with_keys(genesis.clone(), keys, ContractState::default());
    let mut held = None;
    if let Some(wire) = &loaded.snapshot {
        let corrupt = |reason: String| crate::error::StoreError::Corrupt {
            table: "snapshot_pieces",
            reason,
        };
        let descriptor = Descriptor::decode(&wire.data).map_err(|_| {
            corrupt(
                "the stored snapshot is not a descriptor (a whole-state snapshot from an earlier \
                 version?): start this member from a fresh data directory"
                    .into(),
            )
        })?;
        let bytes = loaded.snapshot_body.take().unwrap_or_default();
        if !descriptor.matches(&bytes) {
            return Err(corrupt("the body does not match its descriptor".into()).into());
        }
        let contract = Checkpoint::decode(&bytes).map_err(|e| corrupt(e.to_string()))?;
        state = state.replaced(contract);
        // Checked against the descriptor just above: no need to hash it again.
        held = Some(Body {
            index: wire.index,
            descriptor,
            bytes: bytes.into(),
        });
        core.install_snapshot(Snapshot::from(wire.clone()));
    }
    let snapshot_index = held.as_ref().map_or(0, |body| body.index);
    let entries = loaded
        .entries
        .iter()
        .filter(|entry| entry.index > snapshot_index)
        .cloned()
        .map(Entry::try_from)
        .collect::<Result<Vec<_>, _>>()?;
    core.append(&entries);
    if let Some(conf_state) = &loaded.conf_state {
        core.set_conf_state(conf_state.clone().into());
    }
    core.set_hard_state(HardState {
        term: loaded.hard_state.term,
        vote: loaded.hard_state.vote,
        commit: loaded.hard_state.commit.max(snapshot_index),
        ..HardState::default()
    });
    Ok((state, held))
}

/// A voter's election rank: its position when the voters are ordered by a hash of the chain id
/// and their Raft id. Computed from the genesis alone, so every node agrees and no two voters
/// share a rank (a per-node seed could give two voters the same one). Learners have none.
fn election_rank(genesis: &Genesis, id: u64) -> Option<usize> {
    let (voters, _) = genesis.raft_membership();
    let weight = |id: u64| -> [u8; 32] {
        Sha3_256::new()
            .chain_update(b"blocktorrent/v1/election")
            .chain_update(genesis.chain_id.as_bytes())
            .chain_update(id.to_be_bytes())
            .finalize()
            .into()
    };
    let mut ranked = voters;
    ranked.sort_by_key(|id| (weight(*id), *id));
    ranked.iter().position(|voter| *voter == id)
}

/// The raft-rs config: deterministic election timeouts (raft-rs draws them from `thread_rng`
/// otherwise). Each voter gets a distinct timeout, `election_tick + 2 × rank`
/// ([`election_rank`]), and a range of one value so the draw cannot vary.
fn raft_config(config: &ReplicaConfig, genesis: &Genesis, applied: u64) -> Config {
    let rank = election_rank(genesis, config.id).unwrap_or(0);
    let min_election_tick = config.election_tick + rank * 2;
    Config {
        id: config.id,
        election_tick: config.election_tick,
        heartbeat_tick: config.heartbeat_tick,
        min_election_tick,
        max_election_tick: min_election_tick + 1,
        applied,
        max_size_per_msg: MAX_ENTRIES_BYTES_PER_MESSAGE as u64,
        max_inflight_msgs: 256,
        check_quorum: true,
        pre_vote: true,
        // raft-rs's batching merges appends to one follower without looking at their size
        // (`try_batching`), which would undo `max_size_per_msg`.
        batch_append: false,
        ..Config::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::member::{Member, MemberId, Policy, Role};
    use ed25519_dalek::SigningKey;
    use keyshare::SealingSecretKey;
    use raft::eraftpb::SnapshotMetadata;

    fn genesis(members: u8, voters: u32) -> Genesis {
        let members = (1..=members)
            .map(|i| Member {
                name: format!("member-{i}"),
                id: MemberId::from(SigningKey::from_bytes(&[i; 32]).verifying_key()),
                sealing_key: SealingSecretKey::from_bytes(&[i; 32]).public_key(),
                role: Role::Participant,
            })
            .collect();
        Genesis {
            chain_id: "unit".into(),
            members,
            voters,
            policy: Policy::default(),
        }
    }

    fn replica() -> Replica {
        let genesis = genesis(3, 3);
        let store = RedbStore::open_backend(redb::backends::InMemoryBackend::new())
            .expect("in-memory store");
        Replica::open(genesis, ReplicaConfig::new(1), store).expect("replica opens")
    }

    fn offer(data: &[u8]) -> WireMessage {
        offer_at(2, data)
    }

    fn offer_at(term: u64, data: &[u8]) -> WireMessage {
        let mut metadata = SnapshotMetadata {
            index: 50,
            term: 2,
            ..SnapshotMetadata::default()
        };
        metadata.set_conf_state(ConfState {
            voters: vec![1, 2, 3],
            ..ConfState::default()
        });
        let mut snapshot = Snapshot {
            data: data.to_vec().into(),
            ..Snapshot::default()
        };
        snapshot.set_metadata(metadata);
        let mut message = Message {
            to: 1,
            from: 2,
            term,
            ..Message::default()
        };
        message.set_msg_type(MessageType::MsgSnapshot);
        message.set_snapshot(snapshot);
        WireMessage::from(message)
    }

    #[test]
    fn election_ranks_come_from_the_genesis_and_are_distinct() {
        for (members, voters) in [(3, 3), (7, 5), (9, 1)] {
            let genesis = genesis(members, voters);
            let ranks: Vec<Option<usize>> = (1..=u64::from(members))
                .map(|id| election_rank(&genesis, id))
                .collect();
            let mut voter_ranks: Vec<usize> = ranks.iter().flatten().copied().collect();
            voter_ranks.sort_unstable();
            assert_eq!(voter_ranks, (0..voters as usize).collect::<Vec<_>>());
            assert!(
                ranks[voters as usize..].iter().all(Option::is_none),
                "learners"
            );
            // Every node computes the same timeouts: they depend on nothing but the genesis.
            let timeouts: Vec<usize> = (1..=u64::from(voters))
                .map(|id| raft_config(&ReplicaConfig::new(id), &genesis, 0).min_election_tick)
                .collect();
            let mut distinct = timeouts.clone();
            distinct.sort_unstable();
            distinct.dedup();
            assert_eq!(distinct.len(), timeouts.len(), "{timeouts:?}");
        }
    }

    #[test]
    fn an_undecodable_snapshot_offer_is_refused_and_asked_for_again() {
        let mut replica = replica();
        let error = replica
            .handle_message(offer(b"not a descriptor"))
            .unwrap_err();
        assert!(matches!(error, Error::BadMessage { .. }), "{error}");
        let effects = replica.poll().expect("the replica keeps working");
        let kinds: Vec<_> = effects.messages.iter().map(WireMessage::kind).collect();
        assert_eq!(
            kinds,
            ["snapshot-abort"],
            "the sender is asked to offer again"
        );
        assert_eq!(effects.messages[0].recipient(), 2);
        assert_eq!(replica.applied_index(), 0, "nothing was installed");
        // A well-formed offer starts a transfer: the first pieces are requested.
        let descriptor = Descriptor::of(&[7; 3 * 1024 * 1024]);
        replica.handle_message(offer(&descriptor.encode())).unwrap();
        let effects = replica.poll().unwrap();
        let kinds: Vec<_> = effects.messages.iter().map(WireMessage::kind).collect();
        assert_eq!(kinds, ["snapshot-request"; 3]);
    }

    /// A message of `kind` from member 2 at `term`, as a peer would send it.
    fn from_peer(kind: MessageType, term: u64) -> Message {
        let mut message = Message {
            to: 1,
            from: 2,
            term,
            ..Message::default()
        };
        message.set_msg_type(kind);
        message
    }

    #[test]
    fn raft_messages_raft_rs_would_abort_on_are_refused_and_the_replica_survives() {
        let mut replica = replica();
        let refused = |replica: &mut Replica, message: Message| {
            let error = replica
                .handle_message(WireMessage::from(message))
                .unwrap_err();
            assert!(matches!(error, Error::BadMessage { .. }), "{error}");
        };
        // Found by fuzzing: raft-rs answered a pre-vote of term 0 with term 0, and aborted.
        refused(&mut replica, from_peer(MessageType::MsgRequestPreVote, 0));
        refused(&mut replica, from_peer(MessageType::MsgRequestVote, 0));
        // And one of a lower priority, which a replica at term 0 refuses with term 0.
        let mut low = from_peer(MessageType::MsgRequestPreVote, 5);
        low.priority = -1;
        refused(&mut replica, low);
        // Local messages are not a peer's to send.
        refused(&mut replica, from_peer(MessageType::MsgHup, 5));
        refused(&mut replica, from_peer(MessageType::MsgTimeoutNow, 5));
        // A heartbeat committing past this log's end (raft-rs aborts: "out of range").
        let mut heartbeat = from_peer(MessageType::MsgHeartbeat, 5);
        heartbeat.commit = 1_000;
        refused(&mut replica, heartbeat);
        // Entries that do not follow the append's index, or go back in term.
        let entry = |index, term| Entry {
            index,
            term,
            ..Entry::default()
        };
        let mut gap = from_peer(MessageType::MsgAppend, 5);
        gap.set_entries(vec![entry(3, 5)].into());
        refused(&mut replica, gap);
        let mut backwards = from_peer(MessageType::MsgAppend, 5);
        backwards.log_term = 4;
        backwards.set_entries(vec![entry(1, 3)].into());
        refused(&mut replica, backwards);
        // An append whose previous entry, or one of its entries, is from a term after its own.
        let mut previous_later = from_peer(MessageType::MsgAppend, 5);
        previous_later.log_term = 6;
        refused(&mut replica, previous_later);
        let mut entry_later = from_peer(MessageType::MsgAppend, 5);
        entry_later.set_entries(vec![entry(1, 6)].into());
        refused(&mut replica, entry_later);
        // An acknowledgement of entries this log does not have (raft-rs aborts on it as leader).
        let mut acknowledged = from_peer(MessageType::MsgAppendResponse, 5);
        acknowledged.index = 1_000;
        refused(&mut replica, acknowledged);
        // The replica still works, and a well-formed pre-vote is answered.
        let mut prevote = from_peer(MessageType::MsgRequestPreVote, 5);
        prevote.index = 10;
        prevote.log_term = 4;
        replica.handle_message(WireMessage::from(prevote)).unwrap();
        let effects = replica.poll().unwrap();
        assert!(!effects.messages.is_empty(), "the pre-vote is answered");
    }

    #[test]
    fn a_snapshot_log_percent_past_ten_times_the_state_is_refused() {
        let genesis = genesis(3, 3);
        let config = |snapshot_log_percent| ReplicaConfig {
            snapshot_log_percent,
            ..ReplicaConfig::new(1)
        };
        assert!(config(MAX_SNAPSHOT_LOG_PERCENT).validate(&genesis).is_ok());
        assert!(matches!(
            config(MAX_SNAPSHOT_LOG_PERCENT + 1).validate(&genesis),
            Err(Error::InvalidConfig { .. })
        ));
    }

    #[test]
    fn offers_from_a_non_leader_and_oversized_or_odd_proposals_are_refused() {
        let mut replica = replica();
        // Term 0, no leader: an offer at term 0 comes from no leader this replica knows.
        let stray = offer_at(0, &Descriptor::of(b"x").encode());
        let error = replica.handle_message(stray).unwrap_err();
        assert!(error.to_string().contains("snapshot offer"), "{error}");
        assert!(
            replica.poll().unwrap().messages.is_empty(),
            "no transfer started"
        );

        let proposal = |entries: Vec<Entry>| {
            let mut message = Message {
                to: 1,
                from: 2,
                ..Message::default()
            };
            message.set_msg_type(MessageType::MsgPropose);
            message.set_entries(entries.into());
            WireMessage::from(message)
        };
        let entry = |bytes: usize, entry_type: EntryType| {
            let mut entry = Entry {
                data: vec![0; bytes].into(),
                ..Entry::default()
            };
            entry.set_entry_type(entry_type);
            entry
        };
        let oversized = proposal(vec![entry(MAX_BLOCK_BYTES + 1, EntryType::EntryNormal)]);
        assert!(replica.handle_message(oversized).is_err());
        let two = proposal(vec![
            entry(8, EntryType::EntryNormal),
            entry(8, EntryType::EntryNormal),
        ]);
        assert!(replica.handle_message(two).is_err());
        let conf_change = proposal(vec![entry(8, EntryType::EntryConfChange)]);
        assert!(replica.handle_message(conf_change).is_err());
    }
}
