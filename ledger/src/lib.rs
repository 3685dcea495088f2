//! The consortium ledger: a permissioned chain ordered by Raft.
//!
//! What it does:
//! - [`Transaction`]s signed with a member's ed25519 key over `(chain id, sender, nonce, body)`;
//!   [`Block`]s hash-chained with SHA3-256.
//! - The contracts ([`State::apply`]): master tables, key-share deposits and complaints, access
//!   requests, releases and denials; per-sender nonces against replay. Deterministic and pure: an
//!   invalid transaction stays in its block with a [`Rejection`], so every replica computes the
//!   same state.
//! - Signatures under ZIP-215 ([`verify_signatures`]): cofactored equations, so a verdict depends
//!   on its transaction alone, never on the batch it was checked in; small-order member keys are
//!   refused at genesis. Replicas in one process (the simulator) may share their good verdicts
//!   ([`SharedVerdicts`]).
//! - Ordering ([`Replica`]): a sans-IO driver around raft-rs's `RawNode`. Inputs are `tick`,
//!   `handle_message` and `submit`; [`Replica::poll`] returns the messages to send and the blocks
//!   committed. The leader batches transactions into one Raft entry per block, cut by count and
//!   by bytes; every replica batch-verifies the signatures of what it applies.
//! - Limits ([`MAX_TX_BYTES`] < [`MAX_BLOCK_BYTES`] ≤ [`MAX_ENTRIES_BYTES_PER_MESSAGE`] ≤
//!   [`MAX_MESSAGE_BYTES`] − [`MESSAGE_ENVELOPE_BYTES`], checked at compile time): every message
//!   fits in one transport frame. Snapshots travel as a small descriptor in Raft plus pieces of
//!   [`SNAPSHOT_PIECE_BYTES`] beside it, checked against the descriptor's hash before they are
//!   installed, so no message grows with the state.
//! - Master tables of any size up to [`MAX_TABLE_CHUNKS`] chunks (64 GiB at 256 KiB), registered
//!   over as many transactions as they need ([`MasterTable::bodies`]) and usable once complete.
//! - Durability ([`RedbStore`]): Raft log, hard state, snapshots, blocks, on any redb
//!   `StorageBackend`.
//!
//! What it does not do: no sockets, no clocks, no threads, no global RNG. The caller moves
//! [`WireMessage`]s between replicas and calls `tick` on its own timer.

mod block;
mod contract;
mod error;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod limits;
mod log_store;
mod member;
mod pool;
mod replica;
mod signature;
mod snapshot;
mod store;
mod table;
mod tx;
mod tx_index;
mod verdicts;
mod wire;

pub use block::{Block, BlockHash, GENESIS_PREV_HASH};
pub use contract::{
    AccessRecord, Answer, FileRecord, Rejection, State, TxResult, TxStatus, verify_signatures,
};
pub use error::{Error, StoreError, SubmitError};
pub use limits::{
    MAX_BLOCK_BYTES, MAX_ENTRIES_BYTES_PER_MESSAGE, MAX_MESSAGE_BYTES, MAX_TX_BYTES,
    MESSAGE_ENVELOPE_BYTES, SNAPSHOT_PIECE_BYTES,
};
pub use member::{Genesis, MAX_MEMBERS, Member, MemberId, Policy, Role};
pub use replica::{BuiltSnapshot, Committed, Effects, Replica, ReplicaConfig, SnapshotJob};
pub use store::RedbStore;
pub use table::{MAX_CHUNK_OWNERS, MAX_TABLE_CHUNKS, TableError, check_table_plan};
pub use tx::{Body, MasterTable, RequestId, Transaction, TxId};
pub use verdicts::SharedVerdicts;
pub use wire::WireMessage;
