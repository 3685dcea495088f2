//! Blocks: one per Raft entry of transactions, hash-chained with SHA3-256.

use sha3::{Digest, Sha3_256};

use crate::contract::TxResult;
use crate::tx::{Transaction, TxId};

/// SHA3-256 of a block's header: its height, previous hash, timestamp, the ids of its
/// transactions and their results (postcard-encoded). The ids commit to the transactions, so the
/// hash covers everything in the block while hashing each transaction once (for its id), not twice.
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
    /// The block's hash (see [`BlockHash`]).
    pub fn hash(&self) -> BlockHash {
        self.hash_with_ids(&Transaction::ids(&self.txs))
    }

    /// The block's hash, given `ids[i] == self.txs[i].id()`.
    pub(crate) fn hash_with_ids(&self, ids: &[TxId]) -> BlockHash {
        let header = Header {
            height: self.height,
            prev_hash: &self.prev_hash,
            timestamp_ms: self.timestamp_ms,
            tx_ids: ids,
            results: &self.results,
        };
        let encoded = postcard::to_allocvec(&header).unwrap_or_default();
        BlockHash::from_bytes(Sha3_256::digest(encoded).into())
    }

    /// The postcard encoding.
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).unwrap_or_default()
    }
}

/// What a block's hash covers.
#[derive(serde::Serialize)]
struct Header<'a> {
    height: u64,
    prev_hash: &'a BlockHash,
    timestamp_ms: u64,
    tx_ids: &'a [TxId],
    results: &'a [TxResult],
}

/// What the leader puts in one Raft entry; every replica turns it into the same [`Block`].
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Proposal {
    pub(crate) timestamp_ms: u64,
    pub(crate) txs: Vec<Transaction>,
}

/// A [`Proposal`] that borrows its transactions, so the leader encodes its pool without cloning
/// it. Encodes to the same bytes.
#[derive(serde::Serialize)]
pub(crate) struct ProposalRef<'a> {
    pub(crate) timestamp_ms: u64,
    pub(crate) txs: Vec<&'a Transaction>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::Rejection;
    use crate::tx::Body;
    use ed25519_dalek::SigningKey;
    use keyshare::FileId;

    fn txs() -> Vec<Transaction> {
        let key = SigningKey::from_bytes(&[9; 32]);
        (1..=3)
            .map(|nonce| {
                let body = Body::ShareComplaint {
                    file: FileId::from_bytes([nonce as u8; 32]),
                    reason: format!("complaint {nonce}"),
                };
                Transaction::sign(&key, "test", nonce, body)
            })
            .collect()
    }

    #[test]
    fn borrowed_proposal_encodes_like_the_owned_one() {
        let owned = Proposal {
            timestamp_ms: 42,
            txs: txs(),
        };
        let borrowed = ProposalRef {
            timestamp_ms: 42,
            txs: owned.txs.iter().collect(),
        };
        assert_eq!(
            postcard::to_allocvec(&owned).unwrap(),
            postcard::to_allocvec(&borrowed).unwrap()
        );
    }

    #[test]
    fn ids_match_one_by_one_and_the_hash_covers_every_transaction() {
        let txs = txs();
        let ids: Vec<TxId> = txs.iter().map(Transaction::id).collect();
        assert_eq!(Transaction::ids(&txs), ids);
        let block = Block {
            height: 1,
            prev_hash: GENESIS_PREV_HASH,
            timestamp_ms: 5,
            results: vec![TxResult::Applied; txs.len()],
            txs,
        };
        assert_eq!(block.hash(), block.hash_with_ids(&ids));
        let mut changed = block.clone();
        changed.txs[2].nonce += 1;
        assert_ne!(changed.hash(), block.hash());
        let mut rejected = block.clone();
        rejected.results[0] = TxResult::Rejected(Rejection::BadSignature);
        assert_ne!(rejected.hash(), block.hash());
    }
}
