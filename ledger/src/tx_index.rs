//! Where each committed transaction landed, looked up by id.
//!
//! Why in memory: a durable B-tree keyed by transaction id takes its inserts at random pages,
//! and redb copies a whole 4 KiB page for each of them — measured at a quarter of a follower's
//! CPU at 30,000 tx/s. The durable record is instead each block's list of ids (the store's
//! `block_ids` table, appended in height order, one write per block); this index is rebuilt from
//! it when the store opens (a sequential read of 32 bytes per transaction).
//!
//! It keys by the first 8 bytes of the id, so it costs ~20 bytes of memory per transaction
//! rather than ~50. A prefix only names a candidate: the store confirms the full id against the
//! block's list. The rare transactions whose prefix was already taken — a chance collision, or
//! the same transaction committed twice (a retried proposal, rejected the second time by its
//! nonce) — are kept by full id. The first occurrence of an id wins, as it is the one the
//! contracts applied.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;

use crate::tx::TxId;

/// Block height and position in the block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Location {
    pub(crate) height: u64,
    pub(crate) position: u32,
}

/// Positions take the low 24 bits of a packed location (blocks hold at most 100,000
/// transactions), heights the upper 40 (a thousand years at 30 blocks a second). Anything
/// outside goes to the full-id map instead, so no location is ever refused.
const POSITION_BITS: u32 = 24;

impl Location {
    fn pack(self) -> Option<u64> {
        let fits =
            self.position < (1 << POSITION_BITS) && self.height < (1 << (64 - POSITION_BITS));
        fits.then(|| (self.height << POSITION_BITS) | u64::from(self.position))
    }

    fn unpack(packed: u64) -> Self {
        Self {
            height: packed >> POSITION_BITS,
            position: (packed & ((1 << POSITION_BITS) - 1)) as u32,
        }
    }
}

/// See the module documentation. Ordered maps, not hash maps: ids are chosen by whoever signs
/// them, and a B-tree cannot be driven into degenerate probing.
#[derive(Debug, Default)]
pub(crate) struct TxIndex {
    by_prefix: BTreeMap<u64, u64>,
    by_id: BTreeMap<TxId, Location>,
}

/// What the index knows of an id; the caller confirms `by_prefix` against the block.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Candidates {
    /// The first transaction committed with the id's prefix.
    pub(crate) by_prefix: Option<Location>,
    /// The id's location if its prefix was taken when it committed.
    pub(crate) by_id: Option<Location>,
}

impl TxIndex {
    /// Records that `id` committed at `location` (ignored if the id already committed).
    pub(crate) fn insert(&mut self, id: &TxId, location: Location) {
        match (self.by_prefix.entry(prefix(id)), location.pack()) {
            (Entry::Vacant(slot), Some(packed)) => {
                slot.insert(packed);
            }
            _ => {
                self.by_id.entry(*id).or_insert(location);
            }
        }
    }

    /// Records the transactions of the block at `height`, in block order.
    pub(crate) fn insert_block(&mut self, height: u64, ids: impl IntoIterator<Item = TxId>) {
        for (position, id) in (0u32..).zip(ids) {
            self.insert(&id, Location { height, position });
        }
    }

    /// Where `id` may have landed.
    pub(crate) fn candidates(&self, id: &TxId) -> Candidates {
        Candidates {
            by_prefix: self
                .by_prefix
                .get(&prefix(id))
                .copied()
                .map(Location::unpack),
            by_id: self.by_id.get(id).copied(),
        }
    }

    /// Transactions indexed.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.by_prefix.len() + self.by_id.len()
    }
}

fn prefix(id: &TxId) -> u64 {
    let mut bytes = [0; 8];
    bytes.copy_from_slice(&id.as_bytes()[..8]);
    u64::from_be_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn id(prefix: u64, rest: u8) -> TxId {
        let mut bytes = [rest; 32];
        bytes[..8].copy_from_slice(&prefix.to_be_bytes());
        TxId::from_bytes(bytes)
    }

    fn at(height: u64, position: u32) -> Location {
        Location { height, position }
    }

    #[test]
    fn a_taken_prefix_keeps_the_newcomer_by_full_id() {
        let mut index = TxIndex::default();
        index.insert(&id(7, 1), at(3, 0));
        index.insert(&id(7, 2), at(4, 9));
        assert_eq!(index.candidates(&id(7, 1)).by_prefix, Some(at(3, 0)));
        assert_eq!(index.candidates(&id(7, 1)).by_id, None);
        let second = index.candidates(&id(7, 2));
        assert_eq!(second.by_prefix, Some(at(3, 0)), "a candidate only");
        assert_eq!(second.by_id, Some(at(4, 9)));
    }

    #[test]
    fn the_first_commit_of_an_id_wins() {
        let mut index = TxIndex::default();
        index.insert(&id(7, 1), at(3, 0));
        index.insert(&id(9, 1), at(3, 1));
        index.insert(&id(9, 1), at(5, 0));
        index.insert(&id(9, 1), at(6, 0));
        let candidates = index.candidates(&id(9, 1));
        assert_eq!(candidates.by_prefix, Some(at(3, 1)));
        // The duplicate is recorded once (by full id) and never preferred by the store, which
        // confirms the prefix candidate first.
        assert_eq!(candidates.by_id, Some(at(5, 0)));
        assert_eq!(index.len(), 3);
    }

    #[test]
    fn locations_beyond_the_packing_are_kept_by_full_id() {
        let mut index = TxIndex::default();
        let far = at(1 << 41, 1 << 25);
        index.insert(&id(1, 1), far);
        assert_eq!(
            index.candidates(&id(1, 1)),
            Candidates {
                by_prefix: None,
                by_id: Some(far)
            }
        );
    }

    proptest! {
        #[test]
        fn packing_round_trips(height in 0u64..(1 << 40), position in 0u32..(1 << 24)) {
            let location = at(height, position);
            prop_assert_eq!(Location::unpack(location.pack().unwrap()), location);
        }
    }
}
