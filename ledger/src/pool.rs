//! Transactions a replica holds until it proposes them: in order, with their encoded bytes (a
//! block is bounded by bytes as well as count) and their ids (the leader pools what followers
//! forward, and a forward retried after a loss must not be pooled twice).

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasherDefault;

use crate::tx::{Transaction, TxId};

/// A transaction waiting for a block, with its encoded size.
pub(crate) struct Pooled {
    pub(crate) id: TxId,
    pub(crate) tx: Transaction,
    pub(crate) size_bytes: usize,
}

/// The pool, oldest first. A fixed-key hasher, not `RandomState`: the core draws no randomness
/// of its own (and the id map is only looked up, never iterated).
#[derive(Default)]
pub(crate) struct Pool {
    queue: VecDeque<Pooled>,
    bytes: usize,
    /// How many copies of each id `queue` holds (a requeued proposal can meet a copy).
    ids: HashMap<TxId, u32, BuildHasherDefault<DefaultHasher>>,
    /// When the oldest transaction began waiting for a block.
    oldest_ms: Option<u64>,
}

impl Pool {
    pub(crate) fn len(&self) -> usize {
        self.queue.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Encoded bytes of the pooled transactions.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    pub(crate) fn contains(&self, id: &TxId) -> bool {
        self.ids.contains_key(id)
    }

    /// When the oldest pooled transaction began waiting, if any is pooled.
    pub(crate) fn oldest_ms(&self) -> Option<u64> {
        self.oldest_ms
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &Pooled> {
        self.queue.iter()
    }

    /// Adds a transaction behind the others.
    pub(crate) fn push_back(&mut self, pooled: Pooled, now_ms: u64) {
        self.count_in(&pooled);
        self.queue.push_back(pooled);
        self.oldest_ms.get_or_insert(now_ms);
    }

    /// Puts `requeued` (in its order) in front of everything pooled, waiting from `now_ms`.
    pub(crate) fn push_front_all(&mut self, requeued: Vec<Pooled>, now_ms: u64) {
        if requeued.is_empty() {
            return;
        }
        for pooled in requeued.into_iter().rev() {
            self.count_in(&pooled);
            self.queue.push_front(pooled);
        }
        self.oldest_ms = Some(now_ms);
    }

    /// Takes the first `count` transactions out (the rest keep their waiting time).
    pub(crate) fn take_front(&mut self, count: usize) -> Vec<Pooled> {
        let taken: Vec<Pooled> = self.queue.drain(..count.min(self.queue.len())).collect();
        for pooled in &taken {
            self.count_out(pooled);
        }
        if self.queue.is_empty() {
            self.oldest_ms = None;
        }
        taken
    }

    /// What remains after a proposal waits afresh from `now_ms`: it waited for room, not for
    /// lack of a block.
    pub(crate) fn restart_wait(&mut self, now_ms: u64) {
        self.oldest_ms = (!self.queue.is_empty()).then_some(now_ms);
    }

    /// Drops every transaction `keep` refuses; returns the ids dropped, in pool order.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&Pooled) -> bool) -> Vec<TxId> {
        let mut dropped = Vec::new();
        let mut kept = VecDeque::with_capacity(self.queue.len());
        for pooled in self.queue.drain(..) {
            if keep(&pooled) {
                kept.push_back(pooled);
            } else {
                dropped.push(pooled);
            }
        }
        self.queue = kept;
        for pooled in &dropped {
            self.count_out(pooled);
        }
        if self.queue.is_empty() {
            self.oldest_ms = None;
        }
        dropped.into_iter().map(|pooled| pooled.id).collect()
    }

    fn count_in(&mut self, pooled: &Pooled) {
        self.bytes += pooled.size_bytes;
        *self.ids.entry(pooled.id).or_default() += 1;
    }

    fn count_out(&mut self, pooled: &Pooled) {
        self.bytes -= pooled.size_bytes;
        if let Some(copies) = self.ids.get_mut(&pooled.id) {
            *copies -= 1;
            if *copies == 0 {
                self.ids.remove(&pooled.id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tx::Body;
    use ed25519_dalek::SigningKey;
    use keyshare::FileId;

    fn pooled(n: u8) -> Pooled {
        let key = SigningKey::from_bytes(&[9; 32]);
        let body = Body::ShareComplaint {
            file: FileId::from_bytes([n; 32]),
            reason: String::new(),
        };
        let tx = Transaction::sign(&key, "test", u64::from(n), body);
        let encoded = tx.encode();
        Pooled {
            id: TxId::of_encoding(&encoded),
            tx,
            size_bytes: encoded.len(),
        }
    }

    #[test]
    fn counts_bytes_ids_and_waiting_time_through_every_change() {
        let mut pool = Pool::default();
        let (a, b, c) = (pooled(1), pooled(2), pooled(3));
        let (ida, idb, idc) = (a.id, b.id, c.id);
        let sizes = a.size_bytes + b.size_bytes + c.size_bytes;
        pool.push_back(a, 10);
        pool.push_back(b, 20);
        pool.push_back(c, 30);
        assert_eq!(
            (pool.len(), pool.bytes(), pool.oldest_ms()),
            (3, sizes, Some(10))
        );
        let taken = pool.take_front(2);
        assert_eq!(taken.iter().map(|p| p.id).collect::<Vec<_>>(), [ida, idb]);
        assert!(!pool.contains(&ida) && pool.contains(&idc));
        pool.restart_wait(40);
        assert_eq!(pool.oldest_ms(), Some(40));
        // A requeue that meets a copy already pooled: both counted, both dropped.
        pool.push_front_all(taken, 50);
        pool.push_back(pooled(1), 60);
        assert_eq!(pool.len(), 4);
        assert_eq!(pool.oldest_ms(), Some(50));
        let dropped = pool.retain(|p| p.id != ida);
        assert_eq!(dropped, [ida, ida]);
        assert!(!pool.contains(&ida) && pool.contains(&idb));
        assert_eq!(pool.take_front(10).len(), 2);
        assert_eq!((pool.len(), pool.bytes(), pool.oldest_ms()), (0, 0, None));
        assert!(!pool.contains(&idb) && !pool.contains(&idc));
    }
}
