//! A redb database that reopens itself after a failed write.
//!
//! After an I/O error redb refuses every later write transaction until the database is opened
//! again. A node must survive a disk that fails for a while (a full disk, a flaky controller):
//! so a failed commit marks the handle broken, and the next operation reopens it from its file
//! or backend, where redb's recovery finds the last durable commit. The chunk store uses it, and
//! so does the node's private database.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use redb::{Database, ReadTransaction, ReadableDatabase, StorageBackend, WriteTransaction};

type Opener = Box<dyn Fn() -> Result<Database, redb::DatabaseError> + Send + Sync>;

/// A database handle that is replaced after a failed commit.
pub struct ReopeningDb {
    db: Mutex<Option<Arc<Database>>>,
    open: Opener,
    /// A commit failed: reopen before the next operation.
    broken: AtomicBool,
    /// Named in the log line of a reopen.
    name: &'static str,
}

impl std::fmt::Debug for ReopeningDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReopeningDb")
            .field("name", &self.name)
            .field("broken", &self.broken.load(Ordering::SeqCst))
            .finish()
    }
}

/// Shares one backend between the databases opened on it in turn.
struct Shared<B>(Arc<B>);

impl<B: StorageBackend> std::fmt::Debug for Shared<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Shared")
    }
}

impl<B: StorageBackend> StorageBackend for Shared<B> {
    fn len(&self) -> Result<u64, std::io::Error> {
        self.0.len()
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), std::io::Error> {
        self.0.read(offset, out)
    }
    fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
        self.0.set_len(len)
    }
    fn sync_data(&self) -> Result<(), std::io::Error> {
        self.0.sync_data()
    }
    fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
        self.0.write(offset, data)
    }
}

impl ReopeningDb {
    /// Opens (or creates) the database file at `path` with a page cache of `cache_bytes`.
    pub fn file(name: &'static str, path: &Path, cache_bytes: usize) -> Result<Self, redb::Error> {
        let path: PathBuf = path.to_owned();
        Self::new(
            name,
            Box::new(move || {
                Database::builder()
                    .set_cache_size(cache_bytes)
                    .create(&path)
            }),
        )
    }

    /// Opens a database on `backend` (each reopen on the same one).
    pub fn backend<B: StorageBackend + 'static>(
        name: &'static str,
        backend: B,
        cache_bytes: usize,
    ) -> Result<Self, redb::Error> {
        let backend = Arc::new(backend);
        Self::new(
            name,
            Box::new(move || {
                Database::builder()
                    .set_cache_size(cache_bytes)
                    .create_with_backend(Shared(backend.clone()))
            }),
        )
    }

    fn new(name: &'static str, open: Opener) -> Result<Self, redb::Error> {
        let db = open()?;
        Ok(Self {
            db: Mutex::new(Some(Arc::new(db))),
            open,
            broken: AtomicBool::new(false),
            name,
        })
    }

    /// The database, reopened first if a commit failed since the last operation.
    pub fn get(&self) -> Result<Arc<Database>, redb::Error> {
        let mut slot = self.db.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(db) = slot.as_ref()
            && !self.broken.load(Ordering::SeqCst)
        {
            return Ok(db.clone());
        }
        // The old handle goes first: a file may be open only once.
        drop(slot.take());
        let db = Arc::new((self.open)()?);
        *slot = Some(db.clone());
        self.broken.store(false, Ordering::SeqCst);
        tracing::info!(database = self.name, "reopened after a failed commit");
        Ok(db)
    }

    /// Commits `txn`; if that fails, the next operation reopens the database.
    pub fn commit(&self, txn: WriteTransaction) -> Result<(), redb::CommitError> {
        txn.commit().inspect_err(|_| self.failed())
    }

    /// Begins a write transaction. A transaction that failed before its commit (growing the
    /// file is a write too) leaves redb refusing writes as well: that is seen here, and the
    /// database reopened.
    pub fn begin_write(&self) -> Result<WriteTransaction, redb::Error> {
        self.begin(Database::begin_write)
    }

    /// Begins a read transaction. After a write failed before its commit, redb refuses reads
    /// too: that is seen here, and the database reopened, so a member that only reads (serves
    /// chunks, waits for records) recovers without waiting for its next write.
    pub fn begin_read(&self) -> Result<ReadTransaction, redb::Error> {
        self.begin(|db: &Database| db.begin_read())
    }

    /// Begins a transaction with `begin`, reopening the database once if redb refuses because
    /// of an earlier I/O error.
    fn begin<T>(
        &self,
        begin: impl Fn(&Database) -> Result<T, redb::TransactionError>,
    ) -> Result<T, redb::Error> {
        let begun = begin(&*self.get()?);
        // The handle is dropped by now: a file database may be open only once.
        match begun {
            Err(redb::TransactionError::Storage(redb::StorageError::PreviousIo)) => {
                self.failed();
                Ok(begin(&*self.get()?)?)
            }
            begun => Ok(begun?),
        }
    }

    fn failed(&self) {
        self.broken.store(true, Ordering::SeqCst);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use redb::TableDefinition;
    use redb::backends::InMemoryBackend;
    use std::sync::atomic::AtomicBool;

    /// An in-memory backend whose writes and syncs fail while `failing` is set.
    #[derive(Debug, Default)]
    pub(crate) struct Flaky {
        inner: InMemoryBackend,
        pub(crate) failing: Arc<AtomicBool>,
    }

    impl Flaky {
        fn check(&self) -> Result<(), std::io::Error> {
            if self.failing.load(Ordering::SeqCst) {
                return Err(std::io::Error::other("injected"));
            }
            Ok(())
        }
    }

    impl StorageBackend for Flaky {
        fn len(&self) -> Result<u64, std::io::Error> {
            self.inner.len()
        }
        fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), std::io::Error> {
            self.inner.read(offset, out)
        }
        fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
            self.check()?;
            self.inner.set_len(len)
        }
        fn sync_data(&self) -> Result<(), std::io::Error> {
            self.check()?;
            self.inner.sync_data()
        }
        fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
            self.check()?;
            self.inner.write(offset, data)
        }
    }

    const ROWS: TableDefinition<u32, &[u8]> = TableDefinition::new("rows");

    #[test]
    fn a_reader_recovers_from_a_write_that_failed_before_its_commit() {
        let disk = Flaky::default();
        let failing = disk.failing.clone();
        // No page cache: every read goes to the backend.
        let db = ReopeningDb::backend("test", disk, 0).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut rows = txn.open_table(ROWS).unwrap();
            for row in 0..64u32 {
                rows.insert(row, vec![row as u8; 4000].as_slice()).unwrap();
            }
        }
        db.commit(txn).unwrap();
        failing.store(true, Ordering::SeqCst);
        let txn = db.begin_write().unwrap();
        let grew = txn
            .open_table(ROWS)
            .map_err(redb::Error::from)
            .and_then(|mut rows| {
                rows.insert(1_000, vec![9u8; 1 << 20].as_slice())
                    .map(|_| ())
                    .map_err(redb::Error::from)
            });
        drop(txn);
        failing.store(false, Ordering::SeqCst);
        assert!(
            grew.is_err(),
            "growing the file must fail while the disk fails"
        );
        let txn = db.begin_read().unwrap();
        let rows = txn.open_table(ROWS).unwrap();
        let row = rows.get(7).unwrap().map(|value| value.value().to_vec());
        assert_eq!(row, Some(vec![7u8; 4000]));
    }
}
