//! Transactions: what members sign and the chain orders.

use ed25519_dalek::{Signature, Signer, SigningKey};
use keyshare::{ChunkHash, Commitments, FileId, SealedShare};
use sha3::{Digest, Sha3_256};

use crate::member::MemberId;

/// Hash of a transaction's postcard encoding; names it in queries and acknowledgements.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TxId([u8; 32]);
keyshare::impl_bytes32!(TxId);

impl TxId {
    /// The id of the transaction whose postcard encoding is `encoded`.
    pub(crate) fn of_encoding(encoded: &[u8]) -> Self {
        Self(Sha3_256::digest(encoded).into())
    }
}

/// An access request is named by the id of the transaction that filed it.
pub type RequestId = TxId;

/// A file's master table: everything needed to find, check and decrypt it, minus the key.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MasterTable {
    /// The file's id.
    pub file_id: FileId,
    /// Plaintext size.
    pub size_bytes: u64,
    /// Plaintext bytes per chunk.
    pub chunk_size_bytes: u32,
    /// SHA3-256 of each ciphertext chunk, in order.
    pub chunk_hashes: Vec<ChunkHash>,
    /// The owner peers of each chunk, in order.
    pub chunk_owners: Vec<Vec<MemberId>>,
    /// When the owner stored it (milliseconds since the Unix epoch, from the owner's clock).
    pub timestamp_ms: u64,
    /// Shares needed to rebuild the key.
    pub threshold: u32,
    /// Share holders; holder `j` (0-based) holds share index `j + 1`.
    pub holders: Vec<MemberId>,
    /// Feldman commitments to the sharing polynomial.
    pub commitments: Commitments,
}

/// What a transaction asks the contracts to do.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Body {
    /// Record a new file's master table; the sender becomes its owner. Carries the header and
    /// the first chunk records; a table too large for one transaction continues in
    /// [`Body::AppendChunks`] (see [`MasterTable::bodies`]).
    RegisterFile(MasterTable),
    /// Deposit the sealed shares of a file, one per holder in holder order.
    DepositShares {
        /// The file.
        file: FileId,
        /// Share `j` sealed to holder `j`.
        shares: Vec<SealedShare>,
    },
    /// A holder reports that its share does not verify against the commitments.
    ShareComplaint {
        /// The file.
        file: FileId,
        /// Free text.
        reason: String,
    },
    /// Ask the holders to release their shares of a file to the sender.
    RequestAccess {
        /// The file.
        file: FileId,
        /// Free text, recorded on chain.
        reason: String,
    },
    /// A holder releases its share, re-sealed to the requester.
    ReleaseShare {
        /// The access request answered.
        request: RequestId,
        /// The share sealed to the requester under the release context.
        sealed_to_requester: SealedShare,
    },
    /// A holder refuses an access request.
    DenyAccess {
        /// The access request answered.
        request: RequestId,
        /// Free text.
        reason: String,
    },
    /// The next chunk records of a file's master table, by its owner, in order.
    AppendChunks {
        /// The file.
        file: FileId,
        /// Index of the first chunk listed: the number of chunks the table lists so far.
        first_chunk: u32,
        /// Their hashes.
        chunk_hashes: Vec<ChunkHash>,
        /// Their owners, one list per hash.
        chunk_owners: Vec<Vec<MemberId>>,
    },
}

/// A signed transaction.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Transaction {
    /// Who signed it.
    pub sender: MemberId,
    /// Strictly increasing per sender; a replay reuses a spent nonce and is rejected.
    pub nonce: u64,
    /// What it does.
    pub body: Body,
    /// ed25519 over the postcard encoding of `(chain id, sender, nonce, body)`.
    pub signature: Signature,
}

impl Transaction {
    /// Signs `body` as the holder of `key` for chain `chain_id`.
    pub fn sign(key: &SigningKey, chain_id: &str, nonce: u64, body: Body) -> Self {
        let sender = MemberId::from(key.verifying_key());
        let signature = key.sign(&signing_bytes(chain_id, &sender, nonce, &body));
        Self {
            sender,
            nonce,
            body,
            signature,
        }
    }

    /// The bytes the signature covers.
    pub fn signing_bytes(&self, chain_id: &str) -> Vec<u8> {
        signing_bytes(chain_id, &self.sender, self.nonce, &self.body)
    }

    /// The transaction's id.
    pub fn id(&self) -> TxId {
        TxId::of_encoding(&self.encode())
    }

    /// The ids of `txs`, encoding each into one reused buffer (a block's worth of ids costs no
    /// allocation per transaction).
    pub fn ids(txs: &[Transaction]) -> Vec<TxId> {
        let mut buffer = Vec::new();
        txs.iter()
            .map(|tx| {
                buffer.clear();
                buffer = postcard::to_extend(tx, std::mem::take(&mut buffer)).unwrap_or_default();
                TxId::of_encoding(&buffer)
            })
            .collect()
    }

    /// The postcard encoding.
    pub fn encode(&self) -> Vec<u8> {
        // Encoding into a Vec cannot fail for these types (no maps with non-string keys, no
        // unsupported serde features).
        postcard::to_allocvec(self).unwrap_or_default()
    }
}

fn signing_bytes(chain_id: &str, sender: &MemberId, nonce: u64, body: &Body) -> Vec<u8> {
    postcard::to_allocvec(&(chain_id, sender, nonce, body)).unwrap_or_default()
}
