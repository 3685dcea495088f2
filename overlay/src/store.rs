//! The chunk store: ciphertext chunks on redb, keyed by their SHA3-256.
//!
//! A chunk is hashed before it is stored and again before it is served, so a peer never hands
//! out bytes that do not match the name they were asked for, even after disk corruption. Each
//! pushing peer has a byte quota, so one member cannot fill another's disk.
//!
//! Tables: `chunks` (hash → bytes), `usage` (pusher key → bytes charged).

use std::path::Path;

use keyshare::{ChunkHash, MAX_CHUNK_SIZE_BYTES, TAG_SIZE_BYTES};
use redb::{ReadableTable, ReadableTableMetadata, StorageBackend, TableDefinition};

use crate::error::StoreError;
use crate::peer::PeerId;
use crate::reopen::ReopeningDb;

const CHUNKS: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("chunks");
const USAGE: TableDefinition<&[u8; 32], u64> = TableDefinition::new("usage");

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

    /// The chunk stored under `hash`, re-verified; `None` if absent.
    pub fn get(&self, hash: &ChunkHash) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.db.begin_read().map_err(StoreError::Redb)?;
        let chunks = txn.open_table(CHUNKS)?;
        let Some(value) = chunks.get(hash.as_bytes())? else {
            return Ok(None);
        };
        let bytes = value.value().to_vec();
        if ChunkHash::of(&bytes) != *hash {
            return Err(StoreError::Corrupt { hash: *hash });
        }
        Ok(Some(bytes))
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
