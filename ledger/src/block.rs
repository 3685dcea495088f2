//! Blocks: one per Raft entry of transactions, hash-chained with SHA3-256.

use sha3::{Digest, Sha3_256};

use crate::contract::TxResult;
use crate::tx::Transaction;

/// SHA3-256 of a block's postcard encoding.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BlockHash([u8; 32]);
keyshare::impl_bytes32!(BlockHash);

/// `prev_hash` of the first block.
pub const GENESIS_PREV_HASH: BlockHash = BlockHash::from_bytes([0; 32]);

/// One block: the transactions of one Raft entry and what the contracts made of each.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Block {
    /// 1 for the first block.
    pub height: u64,
    /// Hash of the previous block, or [`GENESIS_PREV_HASH`].
    pub prev_hash: BlockHash,
    /// The leader's clock when it proposed the batch (ms since the Unix epoch).
    pub timestamp_ms: u64,
    /// Transactions in order, valid or not.
    pub txs: Vec<Transaction>,
    /// `results[i]` is the outcome of `txs[i]`.
    pub results: Vec<TxResult>,
}

impl Block {
    /// The block's hash.
    pub fn hash(&self) -> BlockHash {
        BlockHash::from_bytes(Sha3_256::digest(self.encode()).into())
    }

    /// The postcard encoding.
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).unwrap_or_default()
    }
}

/// What the leader puts in one Raft entry; every replica turns it into the same [`Block`].
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Proposal {
    pub(crate) timestamp_ms: u64,
    pub(crate) txs: Vec<Transaction>,
}
