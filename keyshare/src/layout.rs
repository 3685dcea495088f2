//! How a file of a given size is cut into chunks. Fixed-width sizes: chunk indices and counts are
//! `u32`, file sizes `u64`, as they appear in the master table.

use crate::error::{ChunkError, LayoutError};

/// Smallest chunk size accepted.
pub const MIN_CHUNK_SIZE_BYTES: u32 = 1024;
/// Largest chunk size accepted (a chunk must fit one overlay frame with room to spare).
pub const MAX_CHUNK_SIZE_BYTES: u32 = 4 * 1024 * 1024;
/// Chunk size used when none is configured.
pub const DEFAULT_CHUNK_SIZE_BYTES: u32 = 256 * 1024;
/// Largest file accepted.
pub const MAX_FILE_SIZE_BYTES: u64 = 64 * 1024 * 1024 * 1024;
/// Bytes the AES-GCM tag adds to every chunk.
pub const TAG_SIZE_BYTES: u32 = 16;

// The chunk count must fit the u32 that carries it, even for the largest file at the smallest
// chunk size.
const _: () = assert!(MAX_FILE_SIZE_BYTES / MIN_CHUNK_SIZE_BYTES as u64 <= u32::MAX as u64);
const _: () = assert!(MIN_CHUNK_SIZE_BYTES <= DEFAULT_CHUNK_SIZE_BYTES);
const _: () = assert!(DEFAULT_CHUNK_SIZE_BYTES <= MAX_CHUNK_SIZE_BYTES);

/// A validated (file size, chunk size) pair. Every chunk but the last is `chunk_size_bytes` long;
/// an empty file still has one (empty) chunk, so its emptiness is authenticated too.
/// Deserializing re-validates, so a layout read from the ledger or the wire obeys the limits too.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "LayoutFields")]
pub struct ChunkLayout {
    file_size_bytes: u64,
    chunk_size_bytes: u32,
}

/// The unvalidated form serde reads before [`ChunkLayout::new`] checks it.
#[derive(serde::Deserialize)]
struct LayoutFields {
    file_size_bytes: u64,
    chunk_size_bytes: u32,
}

impl TryFrom<LayoutFields> for ChunkLayout {
    type Error = LayoutError;

    fn try_from(fields: LayoutFields) -> Result<Self, Self::Error> {
        Self::new(fields.file_size_bytes, fields.chunk_size_bytes)
    }
}

impl ChunkLayout {
    /// Checks both sizes against the limits.
    pub fn new(file_size_bytes: u64, chunk_size_bytes: u32) -> Result<Self, LayoutError> {
        if !(MIN_CHUNK_SIZE_BYTES..=MAX_CHUNK_SIZE_BYTES).contains(&chunk_size_bytes) {
            return Err(LayoutError::ChunkSize {
                chunk_size_bytes,
                min_bytes: MIN_CHUNK_SIZE_BYTES,
                max_bytes: MAX_CHUNK_SIZE_BYTES,
            });
        }
        if file_size_bytes > MAX_FILE_SIZE_BYTES {
            return Err(LayoutError::FileSize {
                file_size_bytes,
                max_bytes: MAX_FILE_SIZE_BYTES,
            });
        }
        Ok(Self {
            file_size_bytes,
            chunk_size_bytes,
        })
    }

    /// Plaintext bytes in the file.
    pub fn file_size_bytes(&self) -> u64 {
        self.file_size_bytes
    }

    /// Plaintext bytes per full chunk.
    pub fn chunk_size_bytes(&self) -> u32 {
        self.chunk_size_bytes
    }

    /// Number of chunks; at least one.
    pub fn chunk_count(&self) -> u32 {
        let count = self
            .file_size_bytes
            .div_ceil(u64::from(self.chunk_size_bytes))
            .max(1);
        // Guaranteed by the limits checked in `new` and the const assertion above.
        u32::try_from(count).unwrap_or(u32::MAX)
    }

    /// Plaintext length of chunk `index`.
    pub fn plaintext_len(&self, index: u32) -> Result<u32, ChunkError> {
        let chunk_count = self.chunk_count();
        if index >= chunk_count {
            return Err(ChunkError::IndexOutOfRange { index, chunk_count });
        }
        let offset = self.plaintext_offset(index);
        let remaining = self.file_size_bytes - offset;
        Ok(u32::try_from(remaining.min(u64::from(self.chunk_size_bytes))).unwrap_or(u32::MAX))
    }

    /// Ciphertext length (plaintext plus tag) of chunk `index`.
    pub fn ciphertext_len(&self, index: u32) -> Result<u32, ChunkError> {
        Ok(self.plaintext_len(index)? + TAG_SIZE_BYTES)
    }

    /// Offset of chunk `index`'s first plaintext byte in the file.
    pub fn plaintext_offset(&self, index: u32) -> u64 {
        u64::from(index) * u64::from(self.chunk_size_bytes)
    }

    /// Total ciphertext bytes across all chunks.
    pub fn ciphertext_size_bytes(&self) -> u64 {
        self.file_size_bytes + u64::from(self.chunk_count()) * u64::from(TAG_SIZE_BYTES)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_lengths() {
        let layout = ChunkLayout::new(2500, 1024).unwrap();
        assert_eq!(layout.chunk_count(), 3);
        assert_eq!(layout.plaintext_len(0), Ok(1024));
        assert_eq!(layout.plaintext_len(2), Ok(452));
        assert_eq!(layout.ciphertext_len(2), Ok(468));
        assert_eq!(layout.ciphertext_size_bytes(), 2500 + 3 * 16);
        assert_eq!(
            layout.plaintext_len(3),
            Err(ChunkError::IndexOutOfRange {
                index: 3,
                chunk_count: 3
            })
        );
    }

    #[test]
    fn empty_and_exact_files() {
        let empty = ChunkLayout::new(0, 1024).unwrap();
        assert_eq!(empty.chunk_count(), 1);
        assert_eq!(empty.plaintext_len(0), Ok(0));
        let exact = ChunkLayout::new(2048, 1024).unwrap();
        assert_eq!(exact.chunk_count(), 2);
        assert_eq!(exact.plaintext_len(1), Ok(1024));
    }

    #[test]
    fn limits_are_enforced() {
        assert!(matches!(
            ChunkLayout::new(10, MIN_CHUNK_SIZE_BYTES - 1),
            Err(LayoutError::ChunkSize { .. })
        ));
        assert!(matches!(
            ChunkLayout::new(10, MAX_CHUNK_SIZE_BYTES + 1),
            Err(LayoutError::ChunkSize { .. })
        ));
        assert!(matches!(
            ChunkLayout::new(MAX_FILE_SIZE_BYTES + 1, DEFAULT_CHUNK_SIZE_BYTES),
            Err(LayoutError::FileSize { .. })
        ));
        let largest = ChunkLayout::new(MAX_FILE_SIZE_BYTES, MIN_CHUNK_SIZE_BYTES).unwrap();
        assert_eq!(
            u64::from(largest.chunk_count()),
            MAX_FILE_SIZE_BYTES / u64::from(MIN_CHUNK_SIZE_BYTES)
        );
    }
}
