//! Errors: the crate-level [`Error`], and the narrow ones callers match on ([`SubmitError`] when
//! a transaction is refused at the door, [`StoreError`] from the storage adapter).

use crate::contract::Rejection;

/// Any ledger error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The genesis file is inconsistent.
    #[error("invalid genesis: {reason}")]
    InvalidGenesis {
        /// What is wrong.
        reason: String,
    },
    /// A replica configuration value is out of range.
    #[error("invalid replica config: {reason}")]
    InvalidConfig {
        /// What is wrong.
        reason: String,
    },
    /// The durable store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Raft refused an operation.
    #[error("raft: {0}")]
    Raft(#[from] raft::Error),
    /// A message from a peer could not be used; it was dropped.
    #[error("bad message from a peer: {reason}")]
    BadMessage {
        /// What is wrong.
        reason: String,
    },
    /// A transaction was refused before ordering.
    #[error(transparent)]
    Submit(#[from] SubmitError),
}

/// Why a transaction was refused at submission (it never reaches the chain).
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
pub enum SubmitError {
    /// It would be rejected on chain for this reason, so it is not ordered at all.
    #[error("transaction rejected: {0}")]
    Rejected(Rejection),
    /// Too many transactions are waiting; retry later.
    #[error("transaction pool is full ({limit} waiting)")]
    PoolFull {
        /// The pool bound.
        limit: usize,
    },
    /// The encoded transaction exceeds the size limit.
    #[error("transaction is {size_bytes} bytes, limit {limit_bytes}")]
    TooLarge {
        /// Encoded size.
        size_bytes: usize,
        /// Limit.
        limit_bytes: usize,
    },
}

/// The durable store failed; the replica stops making progress rather than lose data.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// redb reported an error.
    #[error("redb: {0}")]
    Redb(#[source] redb::Error),
    /// Stored bytes did not decode: the database is corrupt or from another version.
    #[error("corrupt record in {table}: {reason}")]
    Corrupt {
        /// Which table.
        table: &'static str,
        /// Decoder message.
        reason: String,
    },
}

macro_rules! redb_errors {
    ($($ty:ty),*) => {$(
        impl From<$ty> for StoreError {
            fn from(error: $ty) -> Self {
                StoreError::Redb(redb::Error::from(error))
            }
        }
    )*};
}

impl From<redb::Error> for StoreError {
    fn from(error: redb::Error) -> Self {
        StoreError::Redb(error)
    }
}

redb_errors!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError
);
