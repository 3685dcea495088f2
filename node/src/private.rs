//! The member's private database (`private.redb`): the records it owns, keyed by stream and
//! sequence number, and which of them have been shared (stored on the overlay and registered).
//! A record is written here first, durably, so a crash between arrival and sharing loses
//! nothing: the ingest watcher picks up every record that is not yet marked shared.

use std::path::Path;

use keyshare::FileId;
use redb::{Database, ReadableDatabase, ReadableTable, StorageBackend, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::error::Error;

const RECORDS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("records");
const SHARED: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("shared");
/// Records a caller shares itself (`Node::store`): the ingest task never shares them, so a store
/// that failed is not retried behind the caller's back.
const CLAIMED: TableDefinition<(&str, u64), ()> = TableDefinition::new("claimed");

/// Where a record lives: its stream (e.g. `files`, `sensor/truck-7`) and sequence number.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RecordKey {
    /// The stream.
    pub stream: String,
    /// Position in the stream, from 1.
    pub seq: u64,
}

/// What sharing a record produced.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedRecord {
    /// The file id on the ledger.
    pub file_id: FileId,
    /// Plaintext bytes.
    pub bytes: u64,
    /// Chunk count.
    pub chunks: u32,
    /// Height of the block that registered it.
    pub height: u64,
}

/// The private database.
pub struct PrivateDb {
    db: Database,
}

impl PrivateDb {
    /// Opens (or creates) `private.redb` at `path`.
    pub fn open_file(path: &Path) -> Result<Self, Error> {
        Self::init(Database::create(path)?)
    }

    /// Opens on any redb backend.
    pub fn open_backend(backend: impl StorageBackend) -> Result<Self, Error> {
        Self::init(Database::builder().create_with_backend(backend)?)
    }

    fn init(db: Database) -> Result<Self, Error> {
        let txn = db.begin_write()?;
        txn.open_table(RECORDS)?;
        txn.open_table(SHARED)?;
        txn.open_table(CLAIMED)?;
        txn.commit()?;
        Ok(Self { db })
    }

    /// Appends a record to `stream`, durably; returns its key. The ingest task shares it.
    pub fn append(&self, stream: &str, bytes: &[u8]) -> Result<RecordKey, Error> {
        self.append_as(stream, bytes, false)
    }

    /// Appends a record its caller will share itself (in the same transaction, so the ingest
    /// task never sees it unclaimed).
    pub fn append_claimed(&self, stream: &str, bytes: &[u8]) -> Result<RecordKey, Error> {
        self.append_as(stream, bytes, true)
    }

    fn append_as(&self, stream: &str, bytes: &[u8], claimed: bool) -> Result<RecordKey, Error> {
        let txn = self.db.begin_write()?;
        let seq = {
            let mut records = txn.open_table(RECORDS)?;
            let last = records
                .range((stream, 0)..=(stream, u64::MAX))?
                .next_back()
                .transpose()?
                .map_or(0, |(key, _)| key.value().1);
            records.insert((stream, last + 1), bytes)?;
            if claimed {
                txn.open_table(CLAIMED)?.insert((stream, last + 1), ())?;
            }
            last + 1
        };
        txn.commit()?;
        Ok(RecordKey {
            stream: stream.to_owned(),
            seq,
        })
    }

    /// The bytes of a record.
    pub fn record(&self, key: &RecordKey) -> Result<Option<Vec<u8>>, Error> {
        let txn = self.db.begin_read()?;
        let records = txn.open_table(RECORDS)?;
        Ok(records
            .get((key.stream.as_str(), key.seq))?
            .map(|value| value.value().to_vec()))
    }

    /// Records for the ingest task: not yet shared and not claimed by a caller, oldest first per
    /// stream.
    pub fn unshared(&self) -> Result<Vec<RecordKey>, Error> {
        let txn = self.db.begin_read()?;
        let records = txn.open_table(RECORDS)?;
        let shared = txn.open_table(SHARED)?;
        let claimed = txn.open_table(CLAIMED)?;
        let mut out = Vec::new();
        for item in records.iter()? {
            let (key, _) = item?;
            let (stream, seq) = key.value();
            if shared.get((stream, seq))?.is_none() && claimed.get((stream, seq))?.is_none() {
                out.push(RecordKey {
                    stream: stream.to_owned(),
                    seq,
                });
            }
        }
        Ok(out)
    }

    /// Marks a record shared.
    pub fn mark_shared(&self, key: &RecordKey, shared: &SharedRecord) -> Result<(), Error> {
        let bytes = postcard::to_allocvec(shared)
            .map_err(|e| Error::Invalid(format!("cannot encode a shared record: {e}")))?;
        let txn = self.db.begin_write()?;
        txn.open_table(SHARED)?
            .insert((key.stream.as_str(), key.seq), bytes.as_slice())?;
        txn.commit()?;
        Ok(())
    }

    /// How a record was shared, if it was.
    pub fn shared(&self, key: &RecordKey) -> Result<Option<SharedRecord>, Error> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(SHARED)?;
        let Some(value) = table.get((key.stream.as_str(), key.seq))? else {
            return Ok(None);
        };
        postcard::from_bytes(value.value())
            .map(Some)
            .map_err(|e| Error::CorruptRecord {
                reason: format!("shared record: {e}"),
            })
    }
}
