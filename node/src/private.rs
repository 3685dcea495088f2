//! The member's private database (`private.redb`): the records it owns, keyed by stream and
//! sequence number, which of them have been shared (stored on the overlay and registered), and
//! the intent of every share in progress.
//!
//! A record is written here first, durably, so a crash between arrival and sharing loses
//! nothing: the ingest watcher picks up every record that is not yet marked shared. Records are
//! kept in pieces of [`PIECE_BYTES`], written 16 MiB per transaction, so a record of any
//! size up to [`MAX_RECORD_BYTES`] passes through bounded memory; a record counts as written
//! only once its last transaction lists it, and the pieces of one cut short by a crash are
//! removed when the database is next opened.
//!
//! The intent ([`Intent`]) is what makes sharing exactly-once: it is recorded before the first
//! chunk leaves the node, and every later attempt for the record derives the same file id, key,
//! placement and transactions from it (DESIGN.md "Store", see `store.rs`).

use std::path::Path;

use keyshare::FileId;
use redb::{ReadableTable, StorageBackend, TableDefinition};
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::error::Error;

/// Complete records: (stream, seq) → [`RecordMeta`].
const RECORDS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("record_meta");
/// The bytes of records: (stream, seq, piece) → up to [`PIECE_BYTES`].
const PIECES: TableDefinition<(&str, u64, u32), &[u8]> = TableDefinition::new("record_pieces");
/// Records being written (their sequence number is taken; their pieces are not yet complete).
const WRITING: TableDefinition<(&str, u64), ()> = TableDefinition::new("writing");
const SHARED: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("shared");
/// Records a caller shares itself (`Node::store`): the ingest task never shares them, so a store
/// that failed is not retried behind the caller's back.
const CLAIMED: TableDefinition<(&str, u64), ()> = TableDefinition::new("claimed");
/// Shares in progress: (stream, seq) → [`Intent`].
const INTENTS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("intents");

/// Bytes per stored piece of a record.
pub(crate) const PIECE_BYTES: usize = 1 << 20;
/// Bytes a [`RecordWriter`] collects before it commits them.
const COMMIT_BYTES: usize = 16 << 20;
/// The largest record: the largest file a master table describes (DESIGN.md "Limits").
pub const MAX_RECORD_BYTES: u64 = 64 << 30;
/// Page cache of the database: records stream through it, so a large one must not fill memory.
const CACHE_BYTES: usize = 32 << 20;

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

/// A complete record's size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordMeta {
    /// Plaintext bytes.
    pub bytes: u64,
    /// Pieces they are stored in.
    pub pieces: u32,
}

/// Everything a share of one record is derived from, recorded before any chunk is pushed. The
/// seed is as secret as the record beside it (it yields the file key): it never leaves this
/// database, and this value is wiped from memory on drop (the RNG a share derives from it is
/// not: `ChaCha20Rng` does not zeroize; it lives for one share attempt).
#[derive(Clone, Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
pub(crate) struct Intent {
    /// Seeds the file nonce, the file secret, the share polynomial and the sealing.
    pub(crate) seed: [u8; 32],
    /// The file's timestamp (part of its id).
    pub(crate) timestamp_ms: u64,
    /// The members that were online when placement was decided (placement is a function of
    /// this set, so every attempt picks the same owners).
    pub(crate) online: Vec<[u8; 32]>,
    /// Set (durably) before the first transaction is submitted. Until then nothing of this
    /// share can reach the chain, so the intent may be dropped and the record placed afresh
    /// (when an owner stays away); from then on every attempt must be this one.
    pub(crate) submitted: bool,
}

/// The private database.
pub struct PrivateDb {
    /// Reopened after a failed commit (redb refuses every later write until then).
    db: overlay::ReopeningDb,
}

fn key_of(key: &RecordKey) -> (&str, u64) {
    (key.stream.as_str(), key.seq)
}

/// Deletes every row about `key`: pieces, listing, claim, intent, writing mark.
fn remove_rows(txn: &redb::WriteTransaction, key: &RecordKey) -> Result<(), Error> {
    let (stream, seq) = key_of(key);
    txn.open_table(PIECES)?
        .retain_in((stream, seq, 0)..=(stream, seq, u32::MAX), |_, _| false)?;
    for table in [RECORDS, INTENTS] {
        txn.open_table(table)?.remove((stream, seq))?;
    }
    for table in [CLAIMED, WRITING] {
        txn.open_table(table)?.remove((stream, seq))?;
    }
    Ok(())
}

/// The highest sequence number `table` holds for `stream`.
fn last_seq<V: redb::Value + 'static>(
    table: &impl ReadableTable<(&'static str, u64), V>,
    stream: &str,
) -> Result<Option<u64>, redb::Error> {
    Ok(table
        .range((stream, 0)..=(stream, u64::MAX))?
        .next_back()
        .transpose()?
        .map(|(key, _)| key.value().1))
}

fn encode<T: Serialize>(value: &T, what: &str) -> Result<Vec<u8>, Error> {
    postcard::to_allocvec(value).map_err(|e| Error::Invalid(format!("cannot encode {what}: {e}")))
}

fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8], what: &str) -> Result<T, Error> {
    postcard::from_bytes(bytes).map_err(|e| Error::CorruptRecord {
        reason: format!("{what}: {e}"),
    })
}

impl PrivateDb {
    /// Opens (or creates) `private.redb` at `path`.
    pub fn open_file(path: &Path) -> Result<Self, Error> {
        Self::init(overlay::ReopeningDb::file("private", path, CACHE_BYTES)?)
    }

    /// Opens on any redb backend (the same one each time the database is reopened).
    pub fn open_backend(backend: impl StorageBackend + 'static) -> Result<Self, Error> {
        Self::init(overlay::ReopeningDb::backend(
            "private",
            backend,
            CACHE_BYTES,
        )?)
    }

    fn init(db: overlay::ReopeningDb) -> Result<Self, Error> {
        let db = Self { db };
        db.prepare()?;
        Ok(db)
    }

    /// Commits `txn`; a failed commit leaves redb refusing writes, so the next operation
    /// reopens the database.
    fn commit(&self, txn: redb::WriteTransaction) -> Result<(), Error> {
        Ok(self.db.commit(txn)?)
    }

    /// Creates the tables and drops the pieces of records a crash cut short.
    fn prepare(&self) -> Result<(), Error> {
        let txn = self.db.begin_write()?;
        txn.open_table(RECORDS)?;
        txn.open_table(SHARED)?;
        txn.open_table(CLAIMED)?;
        txn.open_table(INTENTS)?;
        let unfinished: Vec<(String, u64)> = {
            let writing = txn.open_table(WRITING)?;
            writing
                .iter()?
                .map(|item| item.map(|(key, _)| (key.value().0.to_owned(), key.value().1)))
                .collect::<Result<_, _>>()?
        };
        {
            let mut pieces = txn.open_table(PIECES)?;
            let mut writing = txn.open_table(WRITING)?;
            for (stream, seq) in &unfinished {
                pieces.retain_in(
                    (stream.as_str(), *seq, 0)..=(stream.as_str(), *seq, u32::MAX),
                    |_, _| false,
                )?;
                writing.remove((stream.as_str(), *seq))?;
            }
        }
        self.commit(txn)?;
        if !unfinished.is_empty() {
            tracing::warn!(
                records = unfinished.len(),
                "dropped records whose writing a crash interrupted"
            );
        }
        Ok(())
    }

    /// Appends a record to `stream`, durably; returns its key. The ingest task shares it.
    pub fn append(&self, stream: &str, bytes: &[u8]) -> Result<RecordKey, Error> {
        let mut writer = self.writer(stream, false)?;
        writer.write(bytes)?;
        writer.finish()
    }

    /// Starts a record in `stream`, written piece by piece. With `claimed`, its writer's caller
    /// shares it (the claim is committed with the record, so the ingest task never sees it
    /// unclaimed).
    pub fn writer(&self, stream: &str, claimed: bool) -> Result<RecordWriter<'_>, Error> {
        let txn = self.db.begin_write()?;
        let seq = {
            let records = txn.open_table(RECORDS)?;
            let mut writing = txn.open_table(WRITING)?;
            let last_record = last_seq(&records, stream)?;
            let last_writing = last_seq(&writing, stream)?;
            let seq = last_record.max(last_writing).unwrap_or(0) + 1;
            writing.insert((stream, seq), ())?;
            seq
        };
        self.commit(txn)?;
        Ok(RecordWriter {
            db: self,
            key: RecordKey {
                stream: stream.to_owned(),
                seq,
            },
            claimed,
            piece: Vec::with_capacity(PIECE_BYTES),
            ready: Vec::new(),
            ready_bytes: 0,
            next_piece: 0,
            bytes: 0,
            finished: false,
            failed: false,
        })
    }

    /// A complete record's size, if it exists.
    pub fn meta(&self, key: &RecordKey) -> Result<Option<RecordMeta>, Error> {
        let txn = self.db.begin_read()?;
        let records = txn.open_table(RECORDS)?;
        records
            .get(key_of(key))?
            .map(|value| decode(value.value(), "record size"))
            .transpose()
    }

    /// Piece `index` of a record.
    pub fn piece(&self, key: &RecordKey, index: u32) -> Result<Vec<u8>, Error> {
        let txn = self.db.begin_read()?;
        let pieces = txn.open_table(PIECES)?;
        pieces
            .get((key.stream.as_str(), key.seq, index))?
            .map(|value| value.value().to_vec())
            .ok_or_else(|| Error::CorruptRecord {
                reason: format!("piece {index} of {}/{} is missing", key.stream, key.seq),
            })
    }

    /// The bytes of a record, whole (for small records and tests; large ones are read by
    /// [`Self::piece`]).
    pub fn record(&self, key: &RecordKey) -> Result<Option<Vec<u8>>, Error> {
        let Some(meta) = self.meta(key)? else {
            return Ok(None);
        };
        let mut bytes = Vec::with_capacity(usize::try_from(meta.bytes).unwrap_or(0));
        for index in 0..meta.pieces {
            bytes.extend_from_slice(&self.piece(key, index)?);
        }
        Ok(Some(bytes))
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

    /// Marks a record shared and forgets its intent, in one transaction.
    pub fn mark_shared(&self, key: &RecordKey, shared: &SharedRecord) -> Result<(), Error> {
        let bytes = encode(shared, "a shared record")?;
        let txn = self.db.begin_write()?;
        txn.open_table(SHARED)?
            .insert(key_of(key), bytes.as_slice())?;
        txn.open_table(INTENTS)?.remove(key_of(key))?;
        self.commit(txn)?;
        Ok(())
    }

    /// How a record was shared, if it was.
    pub fn shared(&self, key: &RecordKey) -> Result<Option<SharedRecord>, Error> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(SHARED)?;
        table
            .get(key_of(key))?
            .map(|value| decode(value.value(), "shared record"))
            .transpose()
    }

    /// The intent recorded for a record's share, if one is in progress.
    pub(crate) fn intent(&self, key: &RecordKey) -> Result<Option<Intent>, Error> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(INTENTS)?;
        table
            .get(key_of(key))?
            .map(|value| decode(value.value(), "share intent"))
            .transpose()
    }

    /// Claimed records that are not shared but whose share was submitted, with their intents.
    pub(crate) fn claimed_in_flight(&self) -> Result<Vec<(RecordKey, Intent)>, Error> {
        let txn = self.db.begin_read()?;
        let intents = txn.open_table(INTENTS)?;
        let claimed = txn.open_table(CLAIMED)?;
        let shared = txn.open_table(SHARED)?;
        let mut out = Vec::new();
        for item in intents.iter()? {
            let (key, value) = item?;
            let (stream, seq) = key.value();
            if claimed.get((stream, seq))?.is_none() || shared.get((stream, seq))?.is_some() {
                continue;
            }
            let intent: Intent = decode(value.value(), "share intent")?;
            if intent.submitted {
                let key = RecordKey {
                    stream: stream.to_owned(),
                    seq,
                };
                out.push((key, intent));
            }
        }
        Ok(out)
    }

    /// Records the intent of a record's share, durably.
    pub(crate) fn put_intent(&self, key: &RecordKey, intent: &Intent) -> Result<(), Error> {
        let bytes = Zeroizing::new(encode(intent, "a share intent")?);
        let txn = self.db.begin_write()?;
        txn.open_table(INTENTS)?
            .insert(key_of(key), bytes.as_slice())?;
        self.commit(txn)
    }

    /// Forgets the intent of a share none of whose transactions was submitted.
    pub(crate) fn drop_intent(&self, key: &RecordKey) -> Result<(), Error> {
        let txn = self.db.begin_write()?;
        txn.open_table(INTENTS)?.remove(key_of(key))?;
        self.commit(txn)
    }

    /// Removes a record and everything about it (a `store` that failed before anything of it
    /// could reach the chain: its caller was told, and nobody will share it).
    pub(crate) fn remove_record(&self, key: &RecordKey) -> Result<(), Error> {
        let txn = self.db.begin_write()?;
        remove_rows(&txn, key)?;
        self.commit(txn)
    }
}

/// Writes one record in pieces. Dropped before [`Self::finish`], it removes what it wrote.
pub struct RecordWriter<'a> {
    db: &'a PrivateDb,
    key: RecordKey,
    claimed: bool,
    /// The piece being filled.
    piece: Vec<u8>,
    /// Full pieces not yet committed.
    ready: Vec<Vec<u8>>,
    ready_bytes: usize,
    next_piece: u32,
    bytes: u64,
    finished: bool,
    /// A commit failed: the record is incomplete and this writer refuses further work.
    failed: bool,
}

impl RecordWriter<'_> {
    /// The record's key (it exists once [`Self::finish`] returns).
    pub fn key(&self) -> &RecordKey {
        &self.key
    }

    /// Bytes written so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Appends `data`; commits every 16 MiB. After an error the writer refuses everything: drop
    /// it (which removes what it wrote) and start again.
    pub fn write(&mut self, mut data: &[u8]) -> Result<(), Error> {
        self.usable()?;
        let total = self.bytes.saturating_add(data.len() as u64);
        if total > MAX_RECORD_BYTES {
            return Err(Error::Invalid(format!(
                "a record may hold at most {MAX_RECORD_BYTES} bytes; this one reached {total}"
            )));
        }
        self.bytes = total;
        while !data.is_empty() {
            let take = (PIECE_BYTES - self.piece.len()).min(data.len());
            self.piece.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.piece.len() == PIECE_BYTES {
                let full = std::mem::replace(&mut self.piece, Vec::with_capacity(PIECE_BYTES));
                self.ready_bytes += full.len();
                self.ready.push(full);
            }
            if self.ready_bytes >= COMMIT_BYTES {
                self.commit_ready(false)?;
            }
        }
        Ok(())
    }

    /// Commits the last piece and lists the record; returns its key.
    pub fn finish(mut self) -> Result<RecordKey, Error> {
        self.usable()?;
        if !self.piece.is_empty() {
            let last = std::mem::take(&mut self.piece);
            self.ready.push(last);
        }
        self.commit_ready(true)?;
        self.finished = true;
        Ok(self.key.clone())
    }

    fn usable(&self) -> Result<(), Error> {
        if self.failed {
            return Err(Error::Invalid(format!(
                "record {}/{} failed to write earlier",
                self.key.stream, self.key.seq
            )));
        }
        Ok(())
    }

    fn commit_ready(&mut self, last: bool) -> Result<(), Error> {
        // Any failure below leaves pieces unaccounted for.
        self.failed = true;
        let txn = self.db.db.begin_write()?;
        {
            let mut pieces = txn.open_table(PIECES)?;
            for piece in self.ready.drain(..) {
                pieces.insert(
                    (self.key.stream.as_str(), self.key.seq, self.next_piece),
                    piece.as_slice(),
                )?;
                self.next_piece += 1;
            }
            self.ready_bytes = 0;
        }
        if last {
            let meta = encode(
                &RecordMeta {
                    bytes: self.bytes,
                    pieces: self.next_piece,
                },
                "a record size",
            )?;
            txn.open_table(WRITING)?.remove(key_of(&self.key))?;
            txn.open_table(RECORDS)?
                .insert(key_of(&self.key), meta.as_slice())?;
            if self.claimed {
                txn.open_table(CLAIMED)?.insert(key_of(&self.key), ())?;
            }
        }
        self.db.commit(txn)?;
        self.failed = false;
        Ok(())
    }

    /// Removes what this writer wrote — the listing too, in case a `finish` that reported
    /// failure did commit.
    fn discard(&self) -> Result<(), Error> {
        let txn = self.db.db.begin_write()?;
        remove_rows(&txn, &self.key)?;
        self.db.commit(txn)
    }
}

impl Drop for RecordWriter<'_> {
    fn drop(&mut self) {
        if !self.finished
            && let Err(error) = self.discard()
        {
            tracing::warn!(%error, stream = %self.key.stream, seq = self.key.seq, "could not drop an abandoned record; it is dropped when the node next starts");
        }
    }
}

#[cfg(test)]
mod tests {
    use redb::ReadableTableMetadata;

    use super::*;
    use crate::MemoryDisk as Disk;

    #[test]
    fn a_record_of_many_pieces_reads_back_whole() {
        let db = PrivateDb::open_backend(Disk::default()).unwrap();
        let data: Vec<u8> = (0..(2 * PIECE_BYTES + 12_345))
            .map(|i| (i % 251) as u8)
            .collect();
        let mut writer = db.writer("files", true).unwrap();
        for part in data.chunks(77_777) {
            writer.write(part).unwrap();
        }
        let key = writer.finish().unwrap();
        let meta = db.meta(&key).unwrap().unwrap();
        assert_eq!((meta.bytes, meta.pieces), (data.len() as u64, 3));
        assert_eq!(db.record(&key).unwrap().unwrap(), data);
        assert!(
            db.unshared().unwrap().is_empty(),
            "claimed records are not the ingest's"
        );
    }

    #[test]
    fn a_writer_whose_finish_failed_after_committing_leaves_nothing_listed() {
        let db = PrivateDb::open_backend(Disk::default()).unwrap();
        let mut writer = db.writer("s", true).unwrap();
        writer.write(b"record").unwrap();
        let key = writer.key().clone();
        // As if `finish` had committed and then reported an error: the listing is there when
        // the writer is dropped unfinished.
        writer.commit_ready(true).unwrap();
        drop(writer);
        assert!(db.meta(&key).unwrap().is_none());
        assert!(db.record(&key).unwrap().is_none());
    }

    #[test]
    fn an_abandoned_writer_leaves_nothing_and_its_number_is_not_reused_while_open() {
        let db = PrivateDb::open_backend(Disk::default()).unwrap();
        let first = db.writer("s", false).unwrap();
        let second = db.writer("s", false).unwrap();
        assert_eq!((first.key().seq, second.key().seq), (1, 2));
        drop(first);
        let key = second.finish().unwrap();
        assert_eq!(key.seq, 2);
        assert_eq!(db.unshared().unwrap(), vec![key]);
        assert!(
            db.meta(&RecordKey {
                stream: "s".into(),
                seq: 1
            })
            .unwrap()
            .is_none()
        );
    }

    #[test]
    fn pieces_of_a_record_cut_short_by_a_crash_are_dropped_on_open() {
        let disk = Disk::default();
        {
            let db = PrivateDb::open_backend(disk.clone()).unwrap();
            let mut writer = db.writer("files", false).unwrap();
            writer.write(&vec![1u8; COMMIT_BYTES + 1]).unwrap();
            // The process dies here: no finish, no drop.
            std::mem::forget(writer);
        }
        let db = PrivateDb::open_backend(disk).unwrap();
        let txn = db.db.begin_read().unwrap();
        assert_eq!(txn.open_table(PIECES).unwrap().len().unwrap(), 0);
        assert_eq!(txn.open_table(WRITING).unwrap().len().unwrap(), 0);
        assert!(db.unshared().unwrap().is_empty());
    }
}
