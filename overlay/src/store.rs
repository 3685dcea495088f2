//! The chunk store: ciphertext chunks on redb, keyed by their SHA3-256.
//!
//! A chunk is hashed when it is written, and a scrubber ([`ChunkStore::scrub`], driven at a
//! bounded rate by the node) re-hashes what is stored and moves a chunk whose bytes rotted to
//! quarantine, where it is no longer served. A read does not hash again: the fetcher checks every
//! chunk on arrival and asks another owner for one that fails, so each byte is hashed once on the
//! fetch path. Each pushing peer has a byte quota, so one member cannot fill another's disk.
//!
//! Tables: `chunks` (hash → bytes), `usage` (pusher key → bytes charged), `quarantine` (hash →
//! the rotten bytes, kept for inspection).

use std::path::Path;

use keyshare::{ChunkHash, MAX_CHUNK_SIZE_BYTES, TAG_SIZE_BYTES};
use redb::{ReadableTable, ReadableTableMetadata, StorageBackend, TableDefinition};

use crate::error::StoreError;
use crate::peer::PeerId;
use crate::reopen::ReopeningDb;

const CHUNKS: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("chunks");
const USAGE: TableDefinition<&[u8; 32], u64> = TableDefinition::new("usage");
const QUARANTINE: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("quarantine");

/// What one scrub step did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScrubReport {
    /// Chunks re-hashed.
    pub chunks: u64,
    /// Bytes re-hashed.
    pub bytes: u64,
    /// Chunks whose bytes no longer match their hash, now quarantined.
    pub rotten: Vec<ChunkHash>,
    /// Where the next step starts; `None` once the step reached the last chunk (the next one
    /// starts over).
    pub resume_after: Option<ChunkHash>,
}

/// The largest chunk the store accepts: the largest ciphertext chunk keyshare produces.
pub const MAX_STORED_CHUNK_BYTES: usize = MAX_CHUNK_SIZE_BYTES as usize + TAG_SIZE_BYTES as usize;

/// Page cache of the store. Chunks are written once and read rarely, so caching them buys little;
/// redb's default (1 GiB) would let a node's memory grow with the data it holds.
const CACHE_BYTES: usize = 64 << 20;

/// A redb-backed, hash-verified chunk store.
pub struct ChunkStore {
    db: ReopeningDb,
    quota_bytes: u64,
}

impl ChunkStore {
    /// Opens (or creates) the store file at `path`; each pusher may store up to `quota_bytes`.
    pub fn open_file(path: &Path, quota_bytes: u64) -> Result<Self, StoreError> {
        Self::init(
            ReopeningDb::file("chunks", path, CACHE_BYTES).map_err(StoreError::Redb)?,
            quota_bytes,
        )
    }

    /// Opens a store on any redb backend (in-memory for tests and the simulator).
    pub fn open_backend(
        backend: impl StorageBackend + 'static,
        quota_bytes: u64,
    ) -> Result<Self, StoreError> {
        Self::init(
            ReopeningDb::backend("chunks", backend, CACHE_BYTES).map_err(StoreError::Redb)?,
            quota_bytes,
        )
    }

    fn init(db: ReopeningDb, quota_bytes: u64) -> Result<Self, StoreError> {
        let store = Self { db, quota_bytes };
        let txn = store.db.begin_write().map_err(StoreError::Redb)?;
        txn.open_table(CHUNKS)?;
        txn.open_table(USAGE)?;
        txn.open_table(QUARANTINE)?;
        store.db.commit(txn)?;
        Ok(store)
    }

    /// Stores `bytes` under `hash` on behalf of `pusher`, after checking the hash and the
    /// pusher's quota. Storing a chunk that is already present succeeds and charges nothing.
    pub fn put(&self, pusher: &PeerId, hash: &ChunkHash, bytes: &[u8]) -> Result<(), StoreError> {
        if bytes.len() > MAX_STORED_CHUNK_BYTES {
            return Err(StoreError::TooLarge {
                size_bytes: bytes.len(),
                limit_bytes: MAX_STORED_CHUNK_BYTES,
            });
        }
        if ChunkHash::of(bytes) != *hash {
            return Err(StoreError::HashMismatch { expected: *hash });
        }
        let txn = self.db.begin_write().map_err(StoreError::Redb)?;
        {
            let mut chunks = txn.open_table(CHUNKS)?;
            if chunks.get(hash.as_bytes())?.is_some() {
                return Ok(());
            }
            // A good copy of a chunk that rotted here replaces it, charged once already.
            let mut quarantine = txn.open_table(QUARANTINE)?;
            if quarantine.remove(hash.as_bytes())?.is_some() {
                chunks.insert(hash.as_bytes(), bytes)?;
                drop((chunks, quarantine));
                self.db.commit(txn)?;
                return Ok(());
            }
            let mut usage = txn.open_table(USAGE)?;
            let used = usage.get(pusher.as_bytes())?.map_or(0, |v| v.value());
            let charged = used.saturating_add(bytes.len() as u64);
            if charged > self.quota_bytes {
                return Err(StoreError::QuotaExceeded {
                    peer: *pusher,
                    quota_bytes: self.quota_bytes,
                });
            }
            usage.insert(pusher.as_bytes(), charged)?;
            chunks.insert(hash.as_bytes(), bytes)?;
        }
        self.db.commit(txn)?;
        Ok(())
    }

    /// The chunk stored under `hash`; `None` if absent or quarantined. Not hashed again (see
    /// the module documentation): bytes that rotted since the last scrub reach the fetcher,
    /// which refuses them.
    pub fn get(&self, hash: &ChunkHash) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.db.begin_read().map_err(StoreError::Redb)?;
        let chunks = txn.open_table(CHUNKS)?;
        Ok(chunks
            .get(hash.as_bytes())?
            .map(|value| value.value().to_vec()))
    }

    /// Re-hashes stored chunks in key order, from just after `after` (from the first if
    /// `None`), until `budget_bytes` have been hashed or the last chunk is reached, and moves the
    /// rotten ones to quarantine. The caller paces the steps (a byte budget per interval) and
    /// passes each step's [`ScrubReport::resume_after`] to the next.
    pub fn scrub(
        &self,
        after: Option<ChunkHash>,
        budget_bytes: u64,
    ) -> Result<ScrubReport, StoreError> {
        let mut report = ScrubReport::default();
        let mut rotten = Vec::new();
        {
            let txn = self.db.begin_read().map_err(StoreError::Redb)?;
            let chunks = txn.open_table(CHUNKS)?;
            let start = after.map(|hash| *hash.as_bytes());
            let range = match &start {
                Some(key) => chunks.range::<&[u8; 32]>((
                    std::ops::Bound::Excluded(key),
                    std::ops::Bound::Unbounded,
                ))?,
                None => chunks.range::<&[u8; 32]>(..)?,
            };
            for entry in range {
                let (key, value) = entry?;
                let hash = ChunkHash::from_bytes(*key.value());
                let bytes = value.value();
                report.chunks += 1;
                report.bytes += bytes.len() as u64;
                if ChunkHash::of(bytes) != hash {
                    rotten.push(hash);
                }
                if report.bytes >= budget_bytes {
                    report.resume_after = Some(hash);
                    break;
                }
            }
        }
        let mut quarantined = Vec::new();
        if !rotten.is_empty() {
            let txn = self.db.begin_write().map_err(StoreError::Redb)?;
            {
                let mut chunks = txn.open_table(CHUNKS)?;
                let mut quarantine = txn.open_table(QUARANTINE)?;
                for hash in &rotten {
                    // Read again: one misread must not take a good chunk out of service.
                    let Some(bytes) = chunks.remove(hash.as_bytes())?.map(|v| v.value().to_vec())
                    else {
                        continue;
                    };
                    if ChunkHash::of(&bytes) == *hash {
                        chunks.insert(hash.as_bytes(), bytes.as_slice())?;
                    } else {
                        quarantine.insert(hash.as_bytes(), bytes.as_slice())?;
                        quarantined.push(*hash);
                    }
                }
            }
            self.db.commit(txn)?;
        }
        report.rotten = quarantined;
        Ok(report)
    }

    /// Number of chunks in quarantine.
    pub fn quarantined(&self) -> Result<u64, StoreError> {
        let txn = self.db.begin_read().map_err(StoreError::Redb)?;
        Ok(txn.open_table(QUARANTINE)?.len()?)
    }

    /// Stores `bytes` under `hash` without checking them: a chunk that rotted on disk, for
    /// tests of the scrubber.
    #[cfg(test)]
    pub(crate) fn put_rotten(&self, hash: &ChunkHash, bytes: &[u8]) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(StoreError::Redb)?;
        txn.open_table(CHUNKS)?.insert(hash.as_bytes(), bytes)?;
        self.db.commit(txn)?;
        Ok(())
    }

    /// Which of `hashes` are present (without re-hashing their bytes).
    pub fn has(&self, hashes: &[ChunkHash]) -> Result<Vec<bool>, StoreError> {
        let txn = self.db.begin_read().map_err(StoreError::Redb)?;
        let chunks = txn.open_table(CHUNKS)?;
        hashes
            .iter()
            .map(|hash| Ok(chunks.get(hash.as_bytes())?.is_some()))
            .collect()
    }

    /// Bytes charged to `pusher` so far.
    pub fn usage_bytes(&self, pusher: &PeerId) -> Result<u64, StoreError> {
        let txn = self.db.begin_read().map_err(StoreError::Redb)?;
        let usage = txn.open_table(USAGE)?;
        Ok(usage.get(pusher.as_bytes())?.map_or(0, |v| v.value()))
    }

    /// Number of chunks stored.
    pub fn len(&self) -> Result<u64, StoreError> {
        let txn = self.db.begin_read().map_err(StoreError::Redb)?;
        Ok(txn.open_table(CHUNKS)?.len()?)
    }

    /// Whether the store holds no chunk.
    pub fn is_empty(&self) -> Result<bool, StoreError> {
        Ok(self.len()? == 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reopen::tests::Flaky;
    use redb::backends::InMemoryBackend;
    use std::sync::atomic::Ordering;

    #[test]
    fn a_store_whose_disk_failed_for_a_while_works_again() {
        let disk = Flaky::default();
        let failing = disk.failing.clone();
        let store = ChunkStore::open_backend(disk, u64::MAX).unwrap();
        let pusher = PeerId::from_bytes([1; 32]);
        let chunk = |byte: u8| {
            let bytes = vec![byte; 70_000];
            (ChunkHash::of(&bytes), bytes)
        };
        let (kept, kept_bytes) = chunk(1);
        store.put(&pusher, &kept, &kept_bytes).unwrap();
        failing.store(true, Ordering::SeqCst);
        let (lost, lost_bytes) = chunk(2);
        assert!(store.put(&pusher, &lost, &lost_bytes).is_err());
        failing.store(false, Ordering::SeqCst);
        // redb refuses every write after an I/O error until the database is reopened.
        let (later, later_bytes) = chunk(3);
        store.put(&pusher, &later, &later_bytes).unwrap();
        assert_eq!(store.get(&kept).unwrap(), Some(kept_bytes));
        assert_eq!(store.get(&later).unwrap(), Some(later_bytes));
        assert_eq!(store.get(&lost).unwrap(), None);
    }

    fn store(quota_bytes: u64) -> ChunkStore {
        ChunkStore::open_backend(InMemoryBackend::new(), quota_bytes).unwrap()
    }

    #[test]
    fn put_get_has_round_trip() {
        let store = store(1 << 20);
        let pusher = PeerId::from_bytes([1; 32]);
        let bytes = vec![7u8; 5000];
        let hash = ChunkHash::of(&bytes);
        assert_eq!(store.get(&hash).unwrap(), None);
        store.put(&pusher, &hash, &bytes).unwrap();
        assert_eq!(store.get(&hash).unwrap(), Some(bytes.clone()));
        let other = ChunkHash::of(b"other");
        assert_eq!(store.has(&[hash, other]).unwrap(), vec![true, false]);
        // A second put of the same chunk charges nothing.
        store.put(&pusher, &hash, &bytes).unwrap();
        assert_eq!(store.usage_bytes(&pusher).unwrap(), 5000);
        assert_eq!(store.len().unwrap(), 1);
    }

    #[test]
    fn the_scrubber_quarantines_rotten_chunks_within_its_budget_and_goes_round() {
        let store = store(u64::MAX);
        let pusher = PeerId::from_bytes([1; 32]);
        let mut good = Vec::new();
        for byte in 0..6u8 {
            let bytes = vec![byte; 1000];
            let hash = ChunkHash::of(&bytes);
            store.put(&pusher, &hash, &bytes).unwrap();
            good.push((hash, bytes));
        }
        let rotten_hash = ChunkHash::of(b"what was stored");
        store
            .put_rotten(&rotten_hash, b"what the disk returns")
            .unwrap();
        // A read does not hash: the rotten bytes are served until the scrubber finds them.
        assert_eq!(
            store.get(&rotten_hash).unwrap().as_deref(),
            Some(&b"what the disk returns"[..])
        );
        // Steps of at most ~2,000 bytes go round all seven chunks, then start over.
        let mut after = None;
        let mut found = Vec::new();
        let mut seen = 0;
        for _ in 0..10 {
            let report = store.scrub(after, 2_000).unwrap();
            assert!(report.bytes <= 2_000 + 1_000, "{report:?}");
            seen += report.chunks;
            found.extend(report.rotten);
            after = report.resume_after;
            if after.is_none() {
                break;
            }
        }
        assert_eq!(after, None, "the pass reached the end");
        assert_eq!(seen, 7);
        assert_eq!(found, vec![rotten_hash]);
        assert_eq!(store.get(&rotten_hash).unwrap(), None);
        assert_eq!(store.quarantined().unwrap(), 1);
        for (hash, bytes) in good {
            assert_eq!(store.get(&hash).unwrap(), Some(bytes));
        }
        // The next pass finds nothing more.
        let report = store.scrub(None, u64::MAX).unwrap();
        assert_eq!((report.chunks, report.rotten.len()), (6, 0));
        // A good copy pushed again replaces the rotten one, charged nothing more.
        let good = b"what was stored";
        let used = store.usage_bytes(&pusher).unwrap();
        store.put(&pusher, &rotten_hash, good).unwrap();
        assert_eq!(store.get(&rotten_hash).unwrap().as_deref(), Some(&good[..]));
        assert_eq!(store.quarantined().unwrap(), 0);
        assert_eq!(store.usage_bytes(&pusher).unwrap(), used);
    }

    #[test]
    fn refuses_bytes_that_do_not_match_their_hash() {
        let store = store(1 << 20);
        let pusher = PeerId::from_bytes([1; 32]);
        let hash = ChunkHash::of(b"claimed");
        let err = store.put(&pusher, &hash, b"actual").unwrap_err();
        assert!(matches!(err, StoreError::HashMismatch { expected } if expected == hash));
        assert!(store.is_empty().unwrap());
    }

    #[test]
    fn enforces_quota_per_pusher() {
        let store = store(10_000);
        let alice = PeerId::from_bytes([1; 32]);
        let bob = PeerId::from_bytes([2; 32]);
        let first = vec![1u8; 6000];
        let second = vec![2u8; 6000];
        store.put(&alice, &ChunkHash::of(&first), &first).unwrap();
        let err = store
            .put(&alice, &ChunkHash::of(&second), &second)
            .unwrap_err();
        assert!(matches!(err, StoreError::QuotaExceeded { peer, .. } if peer == alice));
        store.put(&bob, &ChunkHash::of(&second), &second).unwrap();
        assert_eq!(store.usage_bytes(&alice).unwrap(), 6000);
        assert_eq!(store.usage_bytes(&bob).unwrap(), 6000);
    }

    #[test]
    fn refuses_oversized_chunks() {
        let store = store(u64::MAX);
        let bytes = vec![0u8; MAX_STORED_CHUNK_BYTES + 1];
        let err = store
            .put(&PeerId::from_bytes([1; 32]), &ChunkHash::of(&bytes), &bytes)
            .unwrap_err();
        assert!(matches!(err, StoreError::TooLarge { .. }));
    }
}
