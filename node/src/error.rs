//! The node's error type. Each variant names the input or the party at fault, because these
//! messages reach users as the CLI's one-sentence errors.

use std::path::PathBuf;

use keyshare::FileId;

/// Any failure of the node library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A config or genesis file is missing, unreadable or invalid.
    #[error("{path}: {reason}")]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A file or directory could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The ledger failed.
    #[error("ledger: {0}")]
    Ledger(#[from] ledger::Error),
    /// The ledger refused a transaction.
    #[error("the ledger refused the transaction: {0}")]
    Submit(#[from] ledger::SubmitError),
    /// A transaction was ordered but rejected by the contracts.
    #[error("the ledger rejected the transaction: {0}")]
    Rejected(ledger::Rejection),
    /// The overlay failed.
    #[error("overlay: {0}")]
    Overlay(#[from] overlay::Error),
    /// Key-share or chunk cryptography failed.
    #[error("crypto: {0}")]
    Crypto(#[from] keyshare::Error),
    /// The private database failed.
    #[error("private database: {0}")]
    Database(#[from] redb::Error),
    /// A record in the private database does not decode.
    #[error("corrupt record in the private database: {reason}")]
    CorruptRecord {
        /// Decoder message.
        reason: String,
    },
    /// No master table for this file id.
    #[error("file {file} is not on the ledger")]
    UnknownFile {
        /// The id asked for.
        file: FileId,
    },
    /// The caller has not requested access to this file.
    #[error("no access request by this member for file {file}; run `blocktorrent request` first")]
    NoAccessRequest {
        /// The file.
        file: FileId,
    },
    /// Fewer verified shares were released than the threshold.
    #[error("only {have} of the {need} shares needed for file {file} were released and verified")]
    NotEnoughShares {
        /// The file.
        file: FileId,
        /// Verified shares released.
        have: usize,
        /// The threshold.
        need: u32,
    },
    /// Owners did not acknowledge chunks.
    #[error("{failed} chunk pushes were not acknowledged (first: {first})")]
    PushFailed {
        /// How many (chunk, owner) pushes failed.
        failed: usize,
        /// The first failure.
        first: String,
    },
    /// Something did not happen in time.
    #[error("timed out after {seconds} s waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long.
        seconds: u64,
    },
    /// The node is shutting down.
    #[error("the node is stopping")]
    Stopped,
    /// The transaction (or another with its nonce) committed in blocks this node skipped while
    /// catching up through a snapshot, so its outcome is not known here.
    #[error(
        "transaction {tx} was settled in blocks this node caught up on through a snapshot; check \
         the chain for its outcome"
    )]
    OutcomeUnknown {
        /// The transaction.
        tx: ledger::TxId,
    },
    /// The ledger failed and is being reopened from its durable state. A transaction submitted
    /// before the failure may still be applied: check before submitting it again.
    #[error(
        "the ledger is restarting after an error ({reason}); a transaction already submitted may \
         still be applied"
    )]
    LedgerDown {
        /// What failed.
        reason: String,
    },
    /// Bad input from a caller.
    #[error("{0}")]
    Invalid(String),

    /// A `store` failed; the record will not be shared later behind its caller's back.
    #[error("storing record {record} failed: {source}{}", may_complete(file.as_ref()))]
    StoreFailed {
        /// The record (stream/seq).
        record: String,
        /// The file, if its transactions were submitted (it may still complete on the ledger).
        file: Option<keyshare::FileId>,
        /// Why.
        source: Box<Error>,
    },
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn config(path: impl Into<PathBuf>, reason: impl ToString) -> Self {
        Self::Config {
            path: path.into(),
            reason: reason.to_string(),
        }
    }
}

macro_rules! database_errors {
    ($($ty:ty),*) => {$(
        impl From<$ty> for Error {
            fn from(error: $ty) -> Self {
                Error::Database(redb::Error::from(error))
            }
        }
    )*};
}

database_errors!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

impl From<ledger::StoreError> for Error {
    fn from(error: ledger::StoreError) -> Self {
        Self::Ledger(error.into())
    }
}

impl From<overlay::StoreError> for Error {
    fn from(error: overlay::StoreError) -> Self {
        Self::Overlay(error.into())
    }
}

impl From<overlay::QuicError> for Error {
    fn from(error: overlay::QuicError) -> Self {
        Self::Invalid(error.to_string())
    }
}

macro_rules! crypto_errors {
    ($($ty:ty),*) => {$(
        impl From<$ty> for Error {
            fn from(error: $ty) -> Self {
                Error::Crypto(error.into())
            }
        }
    )*};
}

crypto_errors!(
    keyshare::ChunkError,
    keyshare::ShareError,
    keyshare::SealError
);

fn may_complete(file: Option<&keyshare::FileId>) -> String {
    file.map(|file| {
        format!(
            " (its transactions were submitted: file {file} may still complete; see `blocktorrent file show {file}`)"
        )
    })
    .unwrap_or_default()
}
