//! Chunk placement by rendezvous (highest-random-weight) hashing.
//!
//! Every (file, chunk, member) triple gets a pseudo-random weight from SHA3-256; a chunk's owners
//! are the `r` members with the highest weights, the file's owner excluded. Anyone who knows the
//! member list computes the same owners, a member joining or leaving moves only the chunks it
//! wins or held, and load spreads evenly because the weights are independent per chunk.

use keyshare::FileId;
use sha3::{Digest, Sha3_256};

use crate::error::PlacementError;
use crate::peer::PeerId;

/// Domain label so placement weights never collide with another SHA3 use in the system.
const PLACEMENT_LABEL: &[u8] = b"blocktorrent/v1/placement";

/// The weight of `member` for chunk `index` of `file`: the first 8 bytes of a SHA3-256.
fn weight(file: &FileId, index: u32, member: &PeerId) -> u64 {
    let digest = Sha3_256::new()
        .chain_update(PLACEMENT_LABEL)
        .chain_update(file.as_bytes())
        .chain_update(index.to_be_bytes())
        .chain_update(member.as_bytes())
        .finalize();
    let mut head = [0u8; 8];
    head.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(head)
}

/// Picks `replication` distinct owners for each of `chunk_count` chunks of `file` among
/// `members`, never `owner`. Owners of a chunk are listed best weight first, which is also the
/// order a repair would follow. Duplicate members count once.
pub fn place(
    file: &FileId,
    chunk_count: u32,
    members: &[PeerId],
    owner: &PeerId,
    replication: usize,
) -> Result<Vec<Vec<PeerId>>, PlacementError> {
    let mut candidates: Vec<PeerId> = members.iter().copied().filter(|m| m != owner).collect();
    candidates.sort_unstable();
    candidates.dedup();
    if replication == 0 || replication > candidates.len() {
        return Err(PlacementError::NotEnoughPeers {
            replication,
            candidates: candidates.len(),
        });
    }
    let mut placed = Vec::with_capacity(chunk_count as usize);
    let mut weighted: Vec<(u64, PeerId)> = Vec::with_capacity(candidates.len());
    for index in 0..chunk_count {
        weighted.clear();
        weighted.extend(candidates.iter().map(|m| (weight(file, index, m), *m)));
        // Ties (a 2^-64 event) break on the key, so the order stays total and deterministic.
        weighted.sort_unstable_by(|a, b| b.cmp(a));
        placed.push(weighted.iter().take(replication).map(|(_, m)| *m).collect());
    }
    Ok(placed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn peers(count: u8) -> Vec<PeerId> {
        (0..count).map(|i| PeerId::from_bytes([i; 32])).collect()
    }

    #[test]
    fn refuses_more_replicas_than_peers() {
        let members = peers(4);
        let file = FileId::from_bytes([1; 32]);
        let err = place(&file, 3, &members, &members[0], 4).unwrap_err();
        assert_eq!(
            err,
            PlacementError::NotEnoughPeers {
                replication: 4,
                candidates: 3
            }
        );
        assert!(place(&file, 3, &members, &members[0], 0).is_err());
    }

    #[test]
    fn removing_a_member_moves_only_its_chunks() {
        let members = peers(8);
        let file = FileId::from_bytes([2; 32]);
        let before = place(&file, 200, &members, &members[0], 3).unwrap();
        let gone = members[5];
        let fewer: Vec<PeerId> = members.iter().copied().filter(|m| *m != gone).collect();
        let after = place(&file, 200, &fewer, &members[0], 3).unwrap();
        for (old, new) in before.iter().zip(&after) {
            if !old.contains(&gone) {
                assert_eq!(old, new);
            }
        }
    }

    proptest! {
        /// Owners are distinct, exclude the owner, and are the same on every call.
        #[test]
        fn owners_are_distinct_and_deterministic(
            seed in any::<[u8; 32]>(), count in 4u8..20, replication in 1usize..4, chunks in 1u32..50
        ) {
            let members = peers(count);
            let file = FileId::from_bytes(seed);
            let owner = members[usize::from(seed[0] % count)];
            let placed = place(&file, chunks, &members, &owner, replication).unwrap();
            prop_assert_eq!(&placed, &place(&file, chunks, &members, &owner, replication).unwrap());
            for owners in &placed {
                prop_assert_eq!(owners.len(), replication);
                prop_assert!(!owners.contains(&owner));
                let mut sorted = owners.clone();
                sorted.sort();
                sorted.dedup();
                prop_assert_eq!(sorted.len(), replication);
            }
        }

        /// Balance: over 20 files of 64 chunks with r = 3 among 10 candidates, each peer's share
        /// of the 3,840 placements stays within ±25% of the mean (384). The binomial standard
        /// deviation is ~18, so this bound is ~5 sigma.
        #[test]
        fn load_is_balanced(seed in any::<u64>()) {
            let members = peers(11);
            let owner = members[0];
            let mut load = std::collections::BTreeMap::<PeerId, u32>::new();
            for file_index in 0..20u64 {
                let mut bytes = [0u8; 32];
                bytes[..8].copy_from_slice(&seed.to_be_bytes());
                bytes[8..16].copy_from_slice(&file_index.to_be_bytes());
                let file = FileId::from_bytes(bytes);
                for owners in place(&file, 64, &members, &owner, 3).unwrap() {
                    for peer in owners {
                        *load.entry(peer).or_default() += 1;
                    }
                }
            }
            prop_assert_eq!(load.len(), 10);
            for (_, count) in load {
                prop_assert!((288..=480).contains(&count), "load {count}");
            }
        }
    }
}
