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
        let begun = self.get()?.begin_write();
        // The handle is dropped by now: a file database may be open only once.
        match begun {
            Err(redb::TransactionError::Storage(redb::StorageError::PreviousIo)) => {
                self.failed();
                Ok(self.get()?.begin_write()?)
            }
            begun => Ok(begun?),
        }
    }

    /// Begins a read transaction on the current handle. (A read of a page that is not cached,
    /// after a write failed before its commit, fails until the next write reopens the
    /// database.)
    pub fn begin_read(&self) -> Result<ReadTransaction, redb::Error> {
        Ok(self.get()?.begin_read()?)
    }

    fn failed(&self) {
        self.broken.store(true, Ordering::SeqCst);
    }
}
