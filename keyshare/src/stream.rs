//! Streaming encryption and decryption, for files that should not be held in memory whole. The
//! layout (and so the chunk count bound into every chunk) must be known up front; the streams
//! check that exactly that many bytes and chunks pass through.

use crate::chunk::{ChunkCipher, EncryptedChunk, check_plaintext_total};
use crate::error::ChunkError;
use crate::ids::{ChunkHash, FileId};
use crate::layout::{ChunkLayout, TAG_SIZE_BYTES};
use crate::secret::FileKey;

/// Cuts plaintext fed in pieces of any size into encrypted chunks.
pub struct StreamEncryptor {
    cipher: ChunkCipher,
    next_index: u32,
    pending: Vec<u8>,
    received_bytes: u64,
}

impl StreamEncryptor {
    /// A stream for a file of `layout.file_size_bytes()` bytes.
    pub fn new(key: &FileKey, file_id: FileId, layout: ChunkLayout) -> Self {
        Self {
            cipher: ChunkCipher::new(key, file_id, layout),
            next_index: 0,
            pending: Vec::new(),
            received_bytes: 0,
        }
    }

    /// Feeds the next plaintext bytes; returns the chunks they completed, in index order. Fails
    /// if the stream would exceed the declared file size.
    pub fn update(&mut self, mut data: &[u8]) -> Result<Vec<EncryptedChunk>, ChunkError> {
        let layout = *self.cipher.layout();
        let actual_bytes = self.received_bytes + data.len() as u64;
        if actual_bytes > layout.file_size_bytes() {
            return Err(ChunkError::StreamOverflow {
                expected_bytes: layout.file_size_bytes(),
                actual_bytes,
            });
        }
        self.received_bytes = actual_bytes;
        let mut completed = Vec::new();
        while !data.is_empty() {
            let chunk_len = layout.plaintext_len(self.next_index)? as usize;
            let take = (chunk_len - self.pending.len()).min(data.len());
            self.pending.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.pending.len() == chunk_len {
                completed.push(self.emit()?);
            }
        }
        Ok(completed)
    }

    /// Ends the stream: returns the last chunk if one is still open (an empty file's only chunk),
    /// or fails if fewer bytes arrived than declared.
    pub fn finish(mut self) -> Result<Option<EncryptedChunk>, ChunkError> {
        let layout = *self.cipher.layout();
        check_plaintext_total(&layout, self.received_bytes as usize)?;
        if self.next_index < layout.chunk_count() {
            return self.emit().map(Some);
        }
        Ok(None)
    }

    fn emit(&mut self) -> Result<EncryptedChunk, ChunkError> {
        let index = self.next_index;
        let capacity = self.cipher.layout().chunk_size_bytes() + TAG_SIZE_BYTES;
        let mut bytes = std::mem::replace(&mut self.pending, Vec::with_capacity(capacity as usize));
        let hash = self.cipher.encrypt_chunk_in_place(index, &mut bytes)?;
        self.next_index += 1;
        Ok(EncryptedChunk { index, hash, bytes })
    }
}

/// Verifies and decrypts chunks handed over in index order, checking that none is missing,
/// reordered or extra.
pub struct StreamDecryptor {
    cipher: ChunkCipher,
    hashes: Vec<ChunkHash>,
    next_index: u32,
}

impl StreamDecryptor {
    /// A stream that expects the chunks whose hashes the master table lists.
    pub fn new(
        key: &FileKey,
        file_id: FileId,
        layout: ChunkLayout,
        hashes: Vec<ChunkHash>,
    ) -> Result<Self, ChunkError> {
        let expected = layout.chunk_count();
        if hashes.len() as u64 != u64::from(expected) {
            return Err(ChunkError::ChunkCount {
                expected,
                actual: hashes.len() as u64,
            });
        }
        Ok(Self {
            cipher: ChunkCipher::new(key, file_id, layout),
            hashes,
            next_index: 0,
        })
    }

    /// Verifies and decrypts the next chunk in place; returns the plaintext.
    pub fn next_chunk(&mut self, mut ciphertext: Vec<u8>) -> Result<Vec<u8>, ChunkError> {
        let index = self.next_index;
        let expected = self.cipher.layout().chunk_count();
        let Some(hash) = self.hashes.get(index as usize) else {
            return Err(ChunkError::ChunkCount {
                expected,
                actual: u64::from(index) + 1,
            });
        };
        self.cipher
            .decrypt_chunk_in_place(index, &mut ciphertext, hash)?;
        self.next_index += 1;
        Ok(ciphertext)
    }

    /// Ends the stream; fails if chunks are missing.
    pub fn finish(self) -> Result<(), ChunkError> {
        let expected = self.cipher.layout().chunk_count();
        if self.next_index < expected {
            return Err(ChunkError::StreamTruncated {
                expected: u64::from(expected),
                actual: u64::from(self.next_index),
                unit: "chunks",
            });
        }
        Ok(())
    }
}
