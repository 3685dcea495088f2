//! Durable storage on redb: the Raft log, hard state, conf state, latest snapshot, blocks and
//! each block's transaction ids. One redb write transaction per batch, so a crash leaves either
//! all of a `Ready`'s changes or none.
//!
//! Tables: `raft_log` (index → entry), `meta` (name → record), `blocks` (height → block),
//! `block_ids` (height → the block's transaction ids, 32 bytes each, in block order),
//! `snapshot_pieces` ((snapshot index, piece) → bytes of a snapshot's body). Records are
//! postcard. `raft_log` may still hold entries the latest snapshot covers, until
//! [`RedbStore::trim`] gets to them; a restart skips them. Lookups by transaction id go through
//! an in-memory [`TxIndex`] rebuilt from
//! `block_ids` on open (its module says why).

use std::path::Path;

use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, StorageBackend, TableDefinition,
    TableHandle,
};

use bytes::Bytes;

use crate::block::Block;
use crate::contract::TxStatus;
use crate::error::StoreError;
use crate::limits::SNAPSHOT_PIECE_BYTES;
use crate::replica::Committed;
use crate::tx::TxId;
use crate::tx_index::{Location, TxIndex};
use crate::wire::{WireConfState, WireEntry, WireSnapshot};

const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const BLOCKS: TableDefinition<u64, &[u8]> = TableDefinition::new("blocks");
const BLOCK_IDS: TableDefinition<u64, &[u8]> = TableDefinition::new("block_ids");
/// Snapshot bodies in pieces, by (snapshot index, piece number); `meta.snapshot` names the one in
/// effect. A replica's own snapshot writes its pieces one at a time, in transactions of their
/// own, before the transaction that writes its descriptor, so no single transaction on the ledger
/// path holds a whole body; the earlier body's pieces go a few at a time afterwards
/// ([`RedbStore::trim`]). Pieces of any index `meta` does not name (a crash before their
/// descriptor) go on open.
const SNAPSHOT_PIECES: TableDefinition<(u64, u32), &[u8]> = TableDefinition::new("snapshot_pieces");
/// Where an earlier version kept the body in effect (piece number → bytes); moved into
/// [`SNAPSHOT_PIECES`] on open.
const LEGACY_SNAPSHOT_BODY: TableDefinition<u32, &[u8]> = TableDefinition::new("snapshot_body");

const HARD_STATE: &str = "hard_state";
const CONF_STATE: &str = "conf_state";
const SNAPSHOT: &str = "snapshot";
const APPLIED: &str = "applied";

/// Raft's hard state: current term, vote, commit index.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct HardStateRecord {
    pub(crate) term: u64,
    pub(crate) vote: u64,
    pub(crate) commit: u64,
}

/// A snapshot to store: its Raft form, whose data is the descriptor of its body.
pub(crate) enum SnapshotWrite {
    /// The leader's snapshot, with its body: it replaces the whole log and every body held.
    Installed { snapshot: WireSnapshot, body: Bytes },
    /// This replica's own, whose pieces were written ahead
    /// ([`RedbStore::write_snapshot_pieces`]). The log entries it covers and the earlier body
    /// are left for [`RedbStore::trim`] to delete a bounded amount at a time: deleting them here
    /// would free O(log) pages in one commit on the ledger path.
    Taken { snapshot: WireSnapshot },
}

/// Log entries deleted per [`RedbStore::trim`].
const TRIM_ENTRIES: usize = 256;
/// Pieces of earlier bodies deleted per [`RedbStore::trim`].
const TRIM_PIECES: usize = 4;

/// Changes from one `Ready`, written atomically.
#[derive(Default)]
pub(crate) struct WriteBatch {
    pub(crate) snapshot: Option<SnapshotWrite>,
    pub(crate) entries: Vec<WireEntry>,
    pub(crate) hard_state: Option<HardStateRecord>,
    pub(crate) conf_state: Option<WireConfState>,
    pub(crate) blocks: Vec<Committed>,
    pub(crate) applied: Option<u64>,
    /// fsync before returning (Raft needs it when term, vote or entries change).
    pub(crate) sync: bool,
}

impl WriteBatch {
    fn is_empty(&self) -> bool {
        self.snapshot.is_none()
            && self.entries.is_empty()
            && self.hard_state.is_none()
            && self.conf_state.is_none()
            && self.blocks.is_empty()
            && self.applied.is_none()
    }
}

/// Everything a replica needs to restart.
#[derive(Default)]
pub(crate) struct StoredReplica {
    pub(crate) hard_state: HardStateRecord,
    pub(crate) conf_state: Option<WireConfState>,
    pub(crate) snapshot: Option<WireSnapshot>,
    pub(crate) snapshot_body: Option<Vec<u8>>,
    pub(crate) entries: Vec<WireEntry>,
    pub(crate) applied: u64,
}

/// The ledger's redb database.
pub struct RedbStore {
    db: Database,
    index: TxIndex,
}

/// Page cache of the ledger database (redb's default is 1 GiB): enough for the log and the recent
/// blocks a replica reads back, without letting a node's memory grow with its chain.
const CACHE_BYTES: usize = 64 << 20;

impl RedbStore {
    /// Opens (or creates) the database file at `path`.
    pub fn open_file(path: &Path) -> Result<Self, StoreError> {
        Self::init(
            Database::builder()
                .set_cache_size(CACHE_BYTES)
                .create(path)?,
        )
    }

    /// Opens a database on any redb backend (in-memory, fault-injecting, ...).
    pub fn open_backend(backend: impl StorageBackend) -> Result<Self, StoreError> {
        Self::open_backend_cached(backend, CACHE_BYTES)
    }

    /// [`Self::open_backend`] with a page cache of `cache_bytes`. A backend that is memory
    /// already gains little from a cache on top (the simulator runs hundreds of them: 4 MiB
    /// instead of 64 cut a 200-member, ten-minute run from 14.9 GB to 10.6 GB and 119 s to 99 s).
    pub fn open_backend_cached(
        backend: impl StorageBackend,
        cache_bytes: usize,
    ) -> Result<Self, StoreError> {
        Self::init(
            Database::builder()
                .set_cache_size(cache_bytes)
                .create_with_backend(backend)?,
        )
    }

    fn init(db: Database) -> Result<Self, StoreError> {
        let txn = db.begin_write()?;
        txn.open_table(LOG)?;
        txn.open_table(META)?;
        txn.open_table(BLOCKS)?;
        txn.open_table(BLOCK_IDS)?;
        txn.open_table(SNAPSHOT_PIECES)?;
        migrate_legacy_body(&txn)?;
        drop_unnamed_pieces(&txn)?;
        txn.commit()?;
        let mut index = TxIndex::default();
        let txn = db.begin_read()?;
        for item in txn.open_table(BLOCK_IDS)?.iter()? {
            let (height, ids) = item?;
            index.insert_block(height.value(), split_ids(ids.value())?);
        }
        drop(txn);
        Ok(Self { db, index })
    }

    pub(crate) fn load(&self) -> Result<StoredReplica, StoreError> {
        let txn = self.db.begin_read()?;
        let meta = txn.open_table(META)?;
        let read_meta = |name: &'static str| -> Result<Option<Vec<u8>>, StoreError> {
            Ok(meta.get(name)?.map(|value| value.value().to_vec()))
        };
        let mut loaded = StoredReplica::default();
        if let Some(bytes) = read_meta(HARD_STATE)? {
            loaded.hard_state = decode("meta", &bytes)?;
        }
        if let Some(bytes) = read_meta(CONF_STATE)? {
            loaded.conf_state = Some(decode("meta", &bytes)?);
        }
        if let Some(bytes) = read_meta(SNAPSHOT)? {
            loaded.snapshot = Some(decode("meta", &bytes)?);
            let index = loaded
                .snapshot
                .as_ref()
                .map_or(0, |snapshot| snapshot.index);
            let mut body = Vec::new();
            for item in txn
                .open_table(SNAPSHOT_PIECES)?
                .range((index, 0)..=(index, u32::MAX))?
            {
                body.extend_from_slice(item?.1.value());
            }
            loaded.snapshot_body = Some(body);
        }
        if let Some(bytes) = read_meta(APPLIED)? {
            loaded.applied = decode("meta", &bytes)?;
        }
        for item in txn.open_table(LOG)?.iter()? {
            let (_, value) = item?;
            loaded.entries.push(decode("raft_log", value.value())?);
        }
        Ok(loaded)
    }

    pub(crate) fn commit(&mut self, batch: &WriteBatch) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut txn = self.db.begin_write()?;
        if !batch.sync {
            txn.set_durability(Durability::None)?;
        }
        {
            let mut log = txn.open_table(LOG)?;
            let mut meta = txn.open_table(META)?;
            match &batch.snapshot {
                Some(SnapshotWrite::Installed { snapshot, body }) => {
                    log.retain(|_, _| false)?;
                    meta.insert(SNAPSHOT, encode(snapshot).as_slice())?;
                    // Leftovers at its index included: only its own pieces may follow.
                    let mut pieces = txn.open_table(SNAPSHOT_PIECES)?;
                    pieces.retain(|_, _| false)?;
                    for (piece, bytes) in (0u32..).zip(body.chunks(SNAPSHOT_PIECE_BYTES)) {
                        pieces.insert((snapshot.index, piece), bytes)?;
                    }
                }
                Some(SnapshotWrite::Taken { snapshot }) => {
                    meta.insert(SNAPSHOT, encode(snapshot).as_slice())?;
                }
                None => {}
            }
            if let Some(first) = batch.entries.first() {
                log.retain_in(first.index.., |_, _| false)?;
                for entry in &batch.entries {
                    log.insert(entry.index, encode(entry).as_slice())?;
                }
            }
            if let Some(hard_state) = &batch.hard_state {
                meta.insert(HARD_STATE, encode(hard_state).as_slice())?;
            }
            if let Some(conf_state) = &batch.conf_state {
                meta.insert(CONF_STATE, encode(conf_state).as_slice())?;
            }
            if let Some(applied) = &batch.applied {
                meta.insert(APPLIED, encode(applied).as_slice())?;
            }
            let mut blocks = txn.open_table(BLOCKS)?;
            let mut block_ids = txn.open_table(BLOCK_IDS)?;
            for Committed { block, ids } in &batch.blocks {
                blocks.insert(block.height, block.encode().as_slice())?;
                let flat: Vec<u8> = ids.iter().flat_map(|id| *id.as_bytes()).collect();
                block_ids.insert(block.height, flat.as_slice())?;
            }
        }
        txn.commit()?;
        // Only what is durable is indexed.
        for Committed { block, ids } in &batch.blocks {
            self.index.insert_block(block.height, ids.iter().copied());
        }
        Ok(())
    }

    /// Writes pieces `first..` of the body of the snapshot at `index`, ahead of its descriptor. Not
    /// synced: the descriptor's write, which syncs, makes them durable before it names them.
    pub(crate) fn write_snapshot_pieces(
        &mut self,
        index: u64,
        first: u32,
        pieces: impl IntoIterator<Item = Bytes>,
    ) -> Result<(), StoreError> {
        self.unsynced(|txn| {
            let mut table = txn.open_table(SNAPSHOT_PIECES)?;
            for (piece, bytes) in (first..).zip(pieces) {
                table.insert((index, piece), &bytes[..])?;
            }
            Ok(())
        })
    }

    /// Runs `write` in a write transaction committed without a sync: a later synced commit makes
    /// it durable.
    fn unsynced<R>(
        &mut self,
        write: impl FnOnce(&redb::WriteTransaction) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::None)?;
        let result = write(&txn)?;
        txn.commit()?;
        Ok(result)
    }

    /// Deletes a bounded number of what the snapshot at `index` made obsolete: log entries up to
    /// it and pieces of earlier bodies (a restart reads neither). Not synced: nothing depends on
    /// the deletion being durable. Returns whether more remain.
    pub(crate) fn trim(&mut self, index: u64) -> Result<bool, StoreError> {
        self.unsynced(|txn| {
            let mut log = txn.open_table(LOG)?;
            let entries = count_taken(log.extract_from_if(..=index, |_, _| true)?, TRIM_ENTRIES)?;
            let mut pieces = txn.open_table(SNAPSHOT_PIECES)?;
            let old = count_taken(
                pieces.extract_from_if(..(index, 0), |_, _| true)?,
                TRIM_PIECES,
            )?;
            Ok(entries == TRIM_ENTRIES || old == TRIM_PIECES)
        })
    }

    /// The block at `height`, if this replica has it (a replica that joined through a snapshot
    /// lacks the blocks before it).
    pub fn block(&self, height: u64) -> Result<Option<Block>, StoreError> {
        let txn = self.db.begin_read()?;
        let blocks = txn.open_table(BLOCKS)?;
        let Some(value) = blocks.get(height)? else {
            return Ok(None);
        };
        decode("blocks", value.value()).map(Some)
    }

    /// Blocks with height in `from..`, ascending, at most `limit` of them.
    pub fn blocks_from(&self, from: u64, limit: usize) -> Result<Vec<Block>, StoreError> {
        let txn = self.db.begin_read()?;
        let blocks = txn.open_table(BLOCKS)?;
        let mut out = Vec::new();
        for item in blocks.range(from..)?.take(limit) {
            let (_, value) = item?;
            out.push(decode("blocks", value.value())?);
        }
        Ok(out)
    }

    /// Where a committed transaction landed, and its result.
    pub fn tx_status(&self, id: &TxId) -> Result<Option<TxStatus>, StoreError> {
        let Some(Location { height, position }) = self.locate(id)? else {
            return Ok(None);
        };
        let Some(block) = self.block(height)? else {
            return Ok(None);
        };
        let result = block
            .results
            .get(position as usize)
            .cloned()
            .ok_or_else(|| StoreError::Corrupt {
                table: "block_ids",
                reason: format!("position {position} beyond block {height}"),
            })?;
        Ok(Some(TxStatus {
            height,
            position,
            result,
        }))
    }

    /// Confirms the index's candidates for `id` against the blocks' id lists: the prefix
    /// candidate first (the first commit of an id), then the full-id entry.
    fn locate(&self, id: &TxId) -> Result<Option<Location>, StoreError> {
        let candidates = self.index.candidates(id);
        let Some(by_prefix) = candidates.by_prefix else {
            return Ok(candidates.by_id);
        };
        let txn = self.db.begin_read()?;
        let block_ids = txn.open_table(BLOCK_IDS)?;
        let confirmed = match block_ids.get(by_prefix.height)? {
            Some(ids) => split_ids(ids.value())?.nth(by_prefix.position as usize) == Some(*id),
            None => false,
        };
        Ok(if confirmed {
            Some(by_prefix)
        } else {
            candidates.by_id
        })
    }
}

/// Takes up to `limit` items from `extracted` (removing them), and says how many there were.
fn count_taken<T>(
    extracted: impl Iterator<Item = Result<T, redb::StorageError>>,
    limit: usize,
) -> Result<usize, StoreError> {
    let mut taken = 0;
    for item in extracted.take(limit) {
        item?;
        taken += 1;
    }
    Ok(taken)
}

/// The index of the snapshot `meta` names, if any.
fn snapshot_in_effect(txn: &redb::WriteTransaction) -> Result<Option<u64>, StoreError> {
    let meta = txn.open_table(META)?;
    let Some(bytes) = meta.get(SNAPSHOT)? else {
        return Ok(None);
    };
    Ok(Some(decode::<WireSnapshot>("meta", bytes.value())?.index))
}

/// Moves the body an earlier version stored (under piece numbers alone) to where this one looks
/// for it, under the index of the snapshot in effect.
fn migrate_legacy_body(txn: &redb::WriteTransaction) -> Result<(), StoreError> {
    let legacy = txn
        .list_tables()?
        .any(|table| table.name() == LEGACY_SNAPSHOT_BODY.name());
    if !legacy {
        return Ok(());
    }
    if let Some(index) = snapshot_in_effect(txn)? {
        let old = txn.open_table(LEGACY_SNAPSHOT_BODY)?;
        let mut pieces = txn.open_table(SNAPSHOT_PIECES)?;
        for item in old.iter()? {
            let (piece, bytes) = item?;
            pieces.insert((index, piece.value()), bytes.value())?;
        }
    }
    txn.delete_table(LEGACY_SNAPSHOT_BODY)?;
    Ok(())
}

/// Removes the pieces of bodies whose descriptor was never written (a crash while a snapshot's
/// pieces were being written ahead of it).
fn drop_unnamed_pieces(txn: &redb::WriteTransaction) -> Result<(), StoreError> {
    let named = snapshot_in_effect(txn)?;
    txn.open_table(SNAPSHOT_PIECES)?
        .retain(|(index, _), _| Some(index) == named)?;
    Ok(())
}

/// The ids of one `block_ids` record.
fn split_ids(bytes: &[u8]) -> Result<impl Iterator<Item = TxId> + '_, StoreError> {
    let (ids, rest) = bytes.as_chunks::<32>();
    if !rest.is_empty() {
        return Err(StoreError::Corrupt {
            table: "block_ids",
            reason: format!("{} bytes is not a whole number of ids", bytes.len()),
        });
    }
    Ok(ids.iter().map(|id| TxId::from_bytes(*id)))
}

fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    postcard::to_allocvec(value).unwrap_or_default()
}

fn decode<T: serde::de::DeserializeOwned>(
    table: &'static str,
    bytes: &[u8],
) -> Result<T, StoreError> {
    postcard::from_bytes(bytes).map_err(|e| StoreError::Corrupt {
        table,
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use redb::ReadableTableMetadata;
    use redb::backends::InMemoryBackend;

    use super::*;

    #[test]
    fn an_earlier_versions_snapshot_body_is_moved_under_its_index() {
        let db = Database::builder()
            .create_with_backend(InMemoryBackend::new())
            .unwrap();
        let snapshot = snapshot_at(7);
        let txn = db.begin_write().unwrap();
        {
            let mut meta = txn.open_table(META).unwrap();
            meta.insert(SNAPSHOT, encode(&snapshot).as_slice()).unwrap();
            let mut legacy = txn.open_table(LEGACY_SNAPSHOT_BODY).unwrap();
            legacy.insert(0, b"first ".as_slice()).unwrap();
            legacy.insert(1, b"second".as_slice()).unwrap();
        }
        txn.commit().unwrap();

        let store = RedbStore::init(db).unwrap();
        assert_reopens_with(&store, &snapshot, b"first second");
        let txn = store.db.begin_read().unwrap();
        let tables: Vec<String> = txn
            .list_tables()
            .unwrap()
            .map(|table| table.name().to_string())
            .collect();
        assert!(!tables.contains(&"snapshot_body".to_string()), "{tables:?}");
    }

    /// `store` loads `snapshot` as the one in effect, with `body`.
    fn assert_reopens_with(store: &RedbStore, snapshot: &WireSnapshot, body: &[u8]) {
        let loaded = store.load().unwrap();
        assert_eq!(loaded.snapshot.as_ref(), Some(snapshot));
        assert_eq!(loaded.snapshot_body.as_deref(), Some(body));
    }

    fn entry(index: u64) -> WireEntry {
        WireEntry {
            entry_type: 0,
            term: 1,
            index,
            data: Bytes::from_static(b"block"),
            context: Bytes::new(),
            sync_log: false,
        }
    }

    fn snapshot_at(index: u64) -> WireSnapshot {
        WireSnapshot {
            data: b"descriptor".to_vec(),
            index,
            term: 1,
            conf_state: WireConfState::default(),
        }
    }

    #[test]
    fn a_snapshot_taken_here_leaves_what_it_covers_to_bounded_trims() {
        let mut store = RedbStore::open_backend(InMemoryBackend::new()).unwrap();
        store
            .commit(&WriteBatch {
                snapshot: Some(SnapshotWrite::Installed {
                    snapshot: snapshot_at(2),
                    body: Bytes::from(vec![7; 5 * SNAPSHOT_PIECE_BYTES]),
                }),
                entries: (3..=600).map(entry).collect(),
                sync: true,
                ..WriteBatch::default()
            })
            .unwrap();
        store
            .write_snapshot_pieces(590, 0, [Bytes::from_static(b"new body")])
            .unwrap();
        store
            .commit(&WriteBatch {
                snapshot: Some(SnapshotWrite::Taken {
                    snapshot: snapshot_at(590),
                }),
                sync: true,
                ..WriteBatch::default()
            })
            .unwrap();
        // The descriptor's commit deleted nothing; each trim deletes a bounded amount.
        assert_eq!(store.load().unwrap().entries.len(), 598);
        let mut trims = 0;
        while store.trim(590).unwrap() {
            trims += 1;
            assert!(trims < 10, "trims never finish");
        }
        assert_eq!(
            trims, 2,
            "588 entries and 5 pieces, 256 entries and 4 pieces at a time"
        );
        let loaded = store.load().unwrap();
        let left: Vec<u64> = loaded.entries.iter().map(|entry| entry.index).collect();
        assert_eq!(left, (591..=600).collect::<Vec<_>>());
        assert_eq!(
            loaded.snapshot_body.as_deref(),
            Some(b"new body".as_slice())
        );
        let txn = store.db.begin_read().unwrap();
        assert_eq!(txn.open_table(SNAPSHOT_PIECES).unwrap().len().unwrap(), 1);
    }

    #[test]
    fn pieces_written_ahead_of_a_descriptor_that_never_came_are_dropped_on_open() {
        let mut store = RedbStore::open_backend(InMemoryBackend::new()).unwrap();
        let snapshot = snapshot_at(5);
        store
            .commit(&WriteBatch {
                snapshot: Some(SnapshotWrite::Installed {
                    snapshot: snapshot.clone(),
                    body: Bytes::from_static(b"in effect"),
                }),
                sync: true,
                ..WriteBatch::default()
            })
            .unwrap();
        // The next snapshot's pieces, written ahead; the crash comes before its descriptor.
        let pieces = [Bytes::from_static(b"never "), Bytes::from_static(b"named")];
        store.write_snapshot_pieces(9, 0, pieces).unwrap();

        let store = RedbStore::init(store.db).unwrap();
        assert_reopens_with(&store, &snapshot, b"in effect");
        let txn = store.db.begin_read().unwrap();
        let left: Vec<(u64, u32)> = txn
            .open_table(SNAPSHOT_PIECES)
            .unwrap()
            .iter()
            .unwrap()
            .map(|item| item.unwrap().0.value())
            .collect();
        assert_eq!(left, vec![(5, 0)]);
    }
}
