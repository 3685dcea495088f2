//! The paper's kind of ledger load, for load generators (`blocktorrent bench ledger` and the
//! simulator's workloads): the master tables and share deposits of small files.
//!
//! Each owner splits one file secret once and reuses its shares and commitments for every file
//! it registers: the contracts check a table's form, not a secret nobody recovers, and the
//! holders' checks still pass, because each deposit seals the shares afresh to the file it
//! belongs to (the sealing context binds the file id), as a real store does.

use keyshare::{
    ChunkHash, Commitments, FileId, FileSecret, SealContext, SealPurpose, Share, seal_share, split,
};
use ledger::{Body, MasterTable, MemberId};
use overlay::PeerId;
use rand::{CryptoRng, Rng};

use crate::config::{Consortium, MemberEntry};
use crate::error::Error;
use crate::store::chunk_owner_ids;

/// Bytes of each small file a table describes (one chunk).
const FILE_BYTES: u64 = 1024;

/// One owner's small files.
pub struct SmallFiles {
    consortium: Consortium,
    owner: MemberId,
    holders: Vec<MemberEntry>,
    shares: Vec<Share>,
    commitments: Commitments,
}

impl SmallFiles {
    /// Files owned by `owner`, its secret split once with `rng`.
    pub fn new<R: CryptoRng + Rng + ?Sized>(
        consortium: &Consortium,
        owner: MemberId,
        rng: &mut R,
    ) -> Result<Self, Error> {
        let holder_ids = consortium.holders_of(&owner);
        let holders: Vec<MemberEntry> = holder_ids
            .iter()
            .filter_map(|id| consortium.members.iter().find(|m| m.id == *id).cloned())
            .collect();
        let secret = FileSecret::random(rng);
        let (shares, commitments) =
            split(&secret, consortium.threshold, holders.len() as u32, rng)?;
        Ok(Self {
            consortium: consortium.clone(),
            owner,
            holders,
            shares,
            commitments,
        })
    }

    /// The chain the transactions are signed for.
    pub fn chain_id(&self) -> &str {
        &self.consortium.chain_id
    }

    /// A fresh file id for a file registered at `now_ms`.
    pub fn file_id<R: Rng + ?Sized>(&self, now_ms: u64, rng: &mut R) -> FileId {
        let mut nonce = [0u8; 16];
        rng.fill_bytes(&mut nonce);
        FileId::derive(self.owner.as_bytes(), &nonce, now_ms)
    }

    /// The master table of `file`: one chunk (its hash drawn from `rng`), its owners by
    /// rendezvous placement, the holders and the commitments.
    pub fn table<R: Rng + ?Sized>(
        &self,
        file: FileId,
        now_ms: u64,
        rng: &mut R,
    ) -> Result<MasterTable, Error> {
        let consortium = &self.consortium;
        let mut chunk = [0u8; 32];
        rng.fill_bytes(&mut chunk);
        let peers: Vec<PeerId> = self
            .holders
            .iter()
            .map(|m| PeerId::from_bytes(*m.id.as_bytes()))
            .collect();
        let owners = overlay::place(
            &file,
            1,
            &peers,
            &PeerId::from_bytes(*self.owner.as_bytes()),
            consortium.replication as usize,
        )
        .map_err(|error| Error::Invalid(format!("placing a small file: {error}")))?;
        Ok(MasterTable {
            file_id: file,
            size_bytes: FILE_BYTES,
            chunk_size_bytes: consortium.chunk_size_bytes,
            chunk_hashes: vec![ChunkHash::from_bytes(chunk)],
            chunk_owners: chunk_owner_ids(&owners),
            timestamp_ms: now_ms,
            threshold: consortium.threshold,
            holders: self.holders.iter().map(|m| m.id).collect(),
            commitments: self.commitments.clone(),
        })
    }

    /// The deposit of `file`'s shares, each sealed to its holder under this file's context.
    pub fn deposit<R: CryptoRng + Rng + ?Sized>(
        &self,
        file: FileId,
        rng: &mut R,
    ) -> Result<Body, Error> {
        let mut sealed = Vec::with_capacity(self.shares.len());
        for (position, (share, holder)) in self.shares.iter().zip(&self.holders).enumerate() {
            let context = SealContext {
                file_id: file,
                holder: *holder.id.as_bytes(),
                share_index: position as u32 + 1,
                purpose: SealPurpose::Deposit,
            };
            sealed.push(seal_share(share, &holder.sealing_key, &context, rng)?);
        }
        Ok(Body::DepositShares {
            file,
            shares: sealed,
        })
    }
}
