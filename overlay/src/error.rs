//! Errors: a crate-level [`Error`] and narrow enums for the operations whose callers match on the
//! cause (placement, the chunk store, frames, transport requests, fetches).

use keyshare::ChunkHash;

use crate::peer::PeerId;

/// Any overlay failure.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Placement could not pick owners.
    #[error(transparent)]
    Placement(#[from] PlacementError),
    /// The chunk store failed or refused.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A frame could not be read or written.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// A request to a peer failed.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// A fetch could not complete.
    #[error(transparent)]
    Fetch(#[from] FetchError),
}

/// Why placement could not pick owners.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    /// Fewer distinct candidates (members other than the owner) than the replication factor.
    #[error("cannot place {replication} replicas among {candidates} candidate peers")]
    NotEnoughPeers {
        /// Requested replicas per chunk.
        replication: usize,
        /// Distinct members other than the owner.
        candidates: usize,
    },
}

/// Why the chunk store refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Bytes handed to `put` do not hash to the claimed hash.
    #[error("chunk bytes do not match hash {expected}")]
    HashMismatch {
        /// The claimed hash.
        expected: ChunkHash,
    },
    /// The pushing peer has used its quota.
    #[error("peer {peer} is over its storage quota of {quota_bytes} bytes")]
    QuotaExceeded {
        /// The pusher.
        peer: PeerId,
        /// Its quota.
        quota_bytes: u64,
    },
    /// The chunk is larger than the store accepts.
    #[error("chunk of {size_bytes} bytes exceeds the limit of {limit_bytes}")]
    TooLarge {
        /// Offered size.
        size_bytes: usize,
        /// Limit.
        limit_bytes: usize,
    },
    /// redb reported an error.
    #[error("chunk store: {0}")]
    Redb(#[source] redb::Error),
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

redb_errors!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The length prefix announces more than the limit.
    #[error("frame of {size_bytes} bytes exceeds the limit of {limit_bytes}")]
    TooLarge {
        /// Announced size.
        size_bytes: u64,
        /// Limit.
        limit_bytes: u64,
    },
    /// The stream ended inside a frame.
    #[error("stream ended inside a frame")]
    Truncated,
    /// Bytes after the frame on a one-frame stream.
    #[error("unexpected bytes after the frame")]
    TrailingBytes,
    /// The frame did not decode.
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// The stream failed underneath.
    #[error("stream: {0}")]
    Io(String),
}

/// Why a request to a peer failed. Each variant is something the fetch scheduler reacts to
/// differently: an unreachable peer is skipped, a refusal names the cause.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// No address is known for the peer.
    #[error("no address for peer {peer}")]
    UnknownPeer {
        /// The peer.
        peer: PeerId,
    },
    /// Could not connect or the connection dropped.
    #[error("peer {peer} unreachable: {reason}")]
    Unreachable {
        /// The peer.
        peer: PeerId,
        /// What failed.
        reason: String,
    },
    /// The peer did not answer in time.
    #[error("peer {peer} did not answer within {timeout_ms} ms")]
    Timeout {
        /// The peer.
        peer: PeerId,
        /// The deadline.
        timeout_ms: u64,
    },
    /// The peer's reply could not be read.
    #[error("bad reply from {peer}: {source}")]
    BadReply {
        /// The peer.
        peer: PeerId,
        /// What was wrong.
        source: FrameError,
    },
}

/// Why a fetch could not complete.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    /// Every owner of these chunks failed, lied or was unreachable.
    #[error("no owner could serve chunks {}", list(chunks))]
    Unavailable {
        /// Chunk indexes that could not be fetched.
        chunks: Vec<u32>,
    },
    /// The chunk list was invalid (a chunk with no owners).
    #[error("chunk {index} lists no owners")]
    NoOwners {
        /// The chunk.
        index: u32,
    },
    /// The pool that hashes arriving chunks stopped (the node is shutting down).
    #[error("the fetch stopped: arriving chunks can no longer be checked")]
    Stopped,
}

fn list(chunks: &[u32]) -> String {
    const SHOWN: usize = 16;
    let mut text: Vec<String> = chunks.iter().take(SHOWN).map(u32::to_string).collect();
    if chunks.len() > SHOWN {
        text.push(format!("and {} more", chunks.len() - SHOWN));
    }
    text.join(", ")
}

/// Why a QUIC endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum QuicError {
    /// The UDP socket could not be bound (address in use, not local, no permission).
    #[error("cannot listen on {addr}: {reason}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// The OS error.
        reason: String,
    },
    /// TLS configuration failed (the member key could not be loaded).
    #[error("TLS setup: {0}")]
    Tls(String),
}
