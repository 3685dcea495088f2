//! Errors. One umbrella [`Error`] and narrow per-operation enums, so a caller that must react to
//! the cause (which chunk failed, which share is bad) can match on it.

use crate::ids::ChunkHash;

/// Any error from this crate.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// A chunk layout (file size, chunk size) is out of bounds.
    #[error(transparent)]
    Layout(#[from] LayoutError),
    /// Encrypting or decrypting a chunk failed.
    #[error(transparent)]
    Chunk(#[from] ChunkError),
    /// Splitting, verifying or combining shares failed.
    #[error(transparent)]
    Share(#[from] ShareError),
    /// Sealing or opening a share failed.
    #[error(transparent)]
    Seal(#[from] SealError),
    /// A hex string did not parse.
    #[error(transparent)]
    Hex(#[from] ParseHexError),
}

/// A file size or chunk size outside the limits in [`crate::ChunkLayout`].
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
pub enum LayoutError {
    /// The chunk size is below the minimum or above the maximum.
    #[error("chunk size {chunk_size_bytes} bytes is outside {min_bytes}..={max_bytes}")]
    ChunkSize {
        /// The size asked for.
        chunk_size_bytes: u32,
        /// Smallest allowed.
        min_bytes: u32,
        /// Largest allowed.
        max_bytes: u32,
    },
    /// The file is larger than the maximum.
    #[error("file size {file_size_bytes} bytes exceeds the limit of {max_bytes} bytes")]
    FileSize {
        /// The size asked for.
        file_size_bytes: u64,
        /// Largest allowed.
        max_bytes: u64,
    },
}

/// A chunk that could not be encrypted or decrypted, named by its index.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
pub enum ChunkError {
    /// The chunk index is not below the file's chunk count.
    #[error("chunk index {index} is out of range: the file has {chunk_count} chunks")]
    IndexOutOfRange {
        /// The index given.
        index: u32,
        /// Chunks in the file.
        chunk_count: u32,
    },
    /// The chunk (plaintext or ciphertext) has the wrong length for its position.
    #[error("chunk {index} is {actual_bytes} bytes, expected {expected_bytes}")]
    Length {
        /// Which chunk.
        index: u32,
        /// What the layout says.
        expected_bytes: u64,
        /// What was given.
        actual_bytes: u64,
    },
    /// The ciphertext does not hash to the expected value (corrupt or substituted chunk).
    #[error("chunk {index} hash mismatch: expected {expected}, got {actual}")]
    HashMismatch {
        /// Which chunk.
        index: u32,
        /// Hash from the master table.
        expected: ChunkHash,
        /// Hash of the bytes received.
        actual: ChunkHash,
    },
    /// The AES-GCM tag did not verify: wrong key, wrong position, or tampered bytes.
    #[error("chunk {index} failed authentication")]
    Authentication {
        /// Which chunk.
        index: u32,
    },
    /// The number of chunks (or hashes) does not match the layout.
    #[error("expected {expected} chunks, got {actual}")]
    ChunkCount {
        /// Chunks in the layout.
        expected: u32,
        /// Chunks given.
        actual: u64,
    },
    /// A stream received more plaintext than the layout declared.
    #[error("stream received {actual_bytes} bytes, more than the declared {expected_bytes}")]
    StreamOverflow {
        /// Declared file size.
        expected_bytes: u64,
        /// Bytes received so far.
        actual_bytes: u64,
    },
    /// A stream ended before all declared bytes or chunks arrived.
    #[error("stream ended after {actual} of {expected} {unit}")]
    StreamTruncated {
        /// Declared total.
        expected: u64,
        /// Received.
        actual: u64,
        /// `"bytes"` or `"chunks"`.
        unit: &'static str,
    },
}

/// A share set that cannot be split, verified or combined.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
pub enum ShareError {
    /// `t` and `n` are not within `1 <= t <= n <= MAX_SHARE_COUNT`.
    #[error("threshold {threshold} of {share_count} shares is invalid: need 1 <= t <= n <= {max}")]
    Parameters {
        /// `t`.
        threshold: u32,
        /// `n`.
        share_count: u32,
        /// Upper bound on `n`.
        max: u32,
    },
    /// One or more shares do not match the commitments; each is named by its index.
    #[error("shares {indices:?} do not verify against the commitments")]
    InvalidShares {
        /// Indices (1-based holder positions) of the bad shares, ascending.
        indices: Vec<u32>,
    },
    /// Fewer shares than the threshold were given.
    #[error("{have} shares given, {need} needed")]
    NotEnoughShares {
        /// Shares given.
        have: usize,
        /// The threshold.
        need: u32,
    },
    /// Two shares carry the same index.
    #[error("share index {index} appears more than once")]
    DuplicateIndex {
        /// The repeated index.
        index: u32,
    },
    /// A share index is 0 or above the maximum share count.
    #[error("share index {index} is out of range 1..={max}")]
    IndexOutOfRange {
        /// The index given.
        index: u32,
        /// Largest allowed.
        max: u32,
    },
    /// The rebuilt secret does not match the zeroth commitment.
    #[error("the rebuilt secret does not match the commitments")]
    SecretMismatch,
    /// Bytes that are not an encoded share or commitment list.
    #[error("malformed {what}: {reason}")]
    Malformed {
        /// `"share"` or `"commitments"`.
        what: &'static str,
        /// What is wrong.
        reason: &'static str,
    },
}

/// A share that could not be sealed or opened.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
pub enum SealError {
    /// HPKE refused to seal (e.g. a low-order recipient key).
    #[error("could not seal the share to the recipient key")]
    Seal,
    /// The sealed share did not open: wrong recipient key, wrong context or tampered bytes.
    #[error("could not open the sealed share: wrong key, wrong context or tampered bytes")]
    Open,
    /// The share's index differs from the one named in the context.
    #[error("share index {actual} does not match the context's index {expected}")]
    IndexMismatch {
        /// Index in the context.
        expected: u32,
        /// Index in the share.
        actual: u32,
    },
    /// The plaintext inside opened but is not a valid share.
    #[error(transparent)]
    Share(#[from] ShareError),
}

/// A string that is not the expected number of lowercase or uppercase hex digits.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
pub enum ParseHexError {
    /// Wrong number of characters.
    #[error("expected {expected} hex digits, got {actual}")]
    Length {
        /// Digits expected.
        expected: usize,
        /// Characters given.
        actual: usize,
    },
    /// A character that is not a hex digit.
    #[error("invalid hex character at position {position}")]
    Character {
        /// Zero-based character position.
        position: usize,
    },
}
