//! AES-256-GCM chunk encryption.
//!
//! Format of chunk `i` of a file with `n` chunks (pinned by the known-answer tests):
//! - nonce: 4 zero bytes ‖ `i` as u64 big-endian. The key is unique per file (derived from a
//!   fresh random secret), so the index alone never repeats a nonce under one key.
//! - associated data: `"blocktorrent/v1/chunk"` ‖ file id (32 bytes) ‖ `i` (u32 BE) ‖ `n` (u32 BE).
//!   Binding the index stops swaps, binding the count stops truncation and extension, binding the
//!   file id stops chunks moving between files.
//! - ciphertext chunk: AES-GCM ciphertext ‖ 16-byte tag; its SHA3-256 is the [`ChunkHash`].
//!
//! Decryption checks the length, then the hash, then the tag, and names the chunk that failed.

use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce, Tag};

use crate::error::ChunkError;
use crate::ids::{ChunkHash, FileId};
use crate::layout::{ChunkLayout, TAG_SIZE_BYTES};
use crate::secret::FileKey;

const CHUNK_AAD_LABEL: &[u8; 21] = b"blocktorrent/v1/chunk";
const AAD_SIZE_BYTES: usize = CHUNK_AAD_LABEL.len() + 32 + 4 + 4;

/// Encrypts and decrypts the chunks of one file. Cheap to share by reference across threads.
#[derive(Clone)]
pub struct ChunkCipher {
    aead: Aes256Gcm,
    file_id: FileId,
    layout: ChunkLayout,
}

/// One encrypted chunk: its position, its hash, and the bytes peers store.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct EncryptedChunk {
    /// Position in the file.
    pub index: u32,
    /// SHA3-256 of `bytes`.
    pub hash: ChunkHash,
    /// Ciphertext followed by the GCM tag.
    pub bytes: Vec<u8>,
}

/// A whole file after encryption.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct EncryptedFile {
    /// File id the chunks are bound to.
    pub file_id: FileId,
    /// Sizes that go into the master table.
    pub layout: ChunkLayout,
    /// Chunks in index order.
    pub chunks: Vec<EncryptedChunk>,
}

impl EncryptedFile {
    /// The chunk hashes in index order, as recorded in the master table.
    pub fn hashes(&self) -> Vec<ChunkHash> {
        self.chunks.iter().map(|chunk| chunk.hash).collect()
    }
}

impl ChunkCipher {
    /// A cipher for the file `file_id` with the given layout.
    pub fn new(key: &FileKey, file_id: FileId, layout: ChunkLayout) -> Self {
        let aead = Aes256Gcm::new(&(*key.expose_bytes()).into());
        Self {
            aead,
            file_id,
            layout,
        }
    }

    /// The layout this cipher checks lengths against.
    pub fn layout(&self) -> &ChunkLayout {
        &self.layout
    }

    /// The file id bound into every chunk.
    pub fn file_id(&self) -> FileId {
        self.file_id
    }

    /// Encrypts chunk `index` from `plaintext`, which must have the length the layout gives it.
    pub fn encrypt_chunk(
        &self,
        index: u32,
        plaintext: &[u8],
    ) -> Result<EncryptedChunk, ChunkError> {
        let mut bytes = Vec::with_capacity(plaintext.len() + TAG_SIZE_BYTES as usize);
        bytes.extend_from_slice(plaintext);
        let hash = self.encrypt_chunk_in_place(index, &mut bytes)?;
        Ok(EncryptedChunk { index, hash, bytes })
    }

    /// Encrypts chunk `index` in place: `buffer` holds the plaintext on entry and the ciphertext
    /// with its tag on return. Returns the chunk hash.
    pub fn encrypt_chunk_in_place(
        &self,
        index: u32,
        buffer: &mut Vec<u8>,
    ) -> Result<ChunkHash, ChunkError> {
        let expected = self.layout.plaintext_len(index)?;
        check_length(index, u64::from(expected), buffer.len())?;
        let tag = self
            .aead
            .encrypt_inout_detached(
                &nonce(index),
                &self.aad(index),
                buffer.as_mut_slice().into(),
            )
            // AES-GCM only fails for inputs over 64 GiB, far above the chunk size limit.
            .map_err(|_| ChunkError::Authentication { index })?;
        buffer.extend_from_slice(tag.as_slice());
        Ok(ChunkHash::of(buffer))
    }

    /// Verifies and decrypts chunk `index` into a new buffer.
    pub fn decrypt_chunk(
        &self,
        index: u32,
        ciphertext: &[u8],
        expected_hash: &ChunkHash,
    ) -> Result<Vec<u8>, ChunkError> {
        let mut buffer = ciphertext.to_vec();
        self.decrypt_chunk_in_place(index, &mut buffer, expected_hash)?;
        Ok(buffer)
    }

    /// Verifies chunk `index` against `expected_hash` and its tag, then decrypts it in place:
    /// `buffer` holds the ciphertext with tag on entry and the plaintext on success. On error the
    /// buffer's contents are unspecified and must not be used.
    pub fn decrypt_chunk_in_place(
        &self,
        index: u32,
        buffer: &mut Vec<u8>,
        expected_hash: &ChunkHash,
    ) -> Result<(), ChunkError> {
        let expected = self.layout.ciphertext_len(index)?;
        check_length(index, u64::from(expected), buffer.len())?;
        let actual = ChunkHash::of(buffer);
        if actual != *expected_hash {
            return Err(ChunkError::HashMismatch {
                index,
                expected: *expected_hash,
                actual,
            });
        }
        self.open_hashed_chunk_in_place(index, buffer)
    }

    /// Decrypts chunk `index` in place for a caller that has already checked it against its
    /// hash (the overlay's fetch does, as each chunk arrives), so SHA3 does not run twice. The
    /// GCM tag and the bound associated data are still checked.
    pub fn open_hashed_chunk_in_place(
        &self,
        index: u32,
        buffer: &mut Vec<u8>,
    ) -> Result<(), ChunkError> {
        let expected = self.layout.ciphertext_len(index)?;
        check_length(index, u64::from(expected), buffer.len())?;
        let plaintext_len = buffer.len() - TAG_SIZE_BYTES as usize;
        let (message, tag_bytes) = buffer.split_at_mut(plaintext_len);
        let tag = Tag::try_from(&*tag_bytes).map_err(|_| ChunkError::Authentication { index })?;
        self.aead
            .decrypt_inout_detached(&nonce(index), &self.aad(index), message.into(), &tag)
            .map_err(|_| ChunkError::Authentication { index })?;
        buffer.truncate(plaintext_len);
        Ok(())
    }

    fn aad(&self, index: u32) -> [u8; AAD_SIZE_BYTES] {
        let mut aad = [0u8; AAD_SIZE_BYTES];
        let (label, rest) = aad.split_at_mut(CHUNK_AAD_LABEL.len());
        label.copy_from_slice(CHUNK_AAD_LABEL);
        let (file_id, rest) = rest.split_at_mut(32);
        file_id.copy_from_slice(self.file_id.as_bytes());
        let (index_bytes, count_bytes) = rest.split_at_mut(4);
        index_bytes.copy_from_slice(&index.to_be_bytes());
        count_bytes.copy_from_slice(&self.layout.chunk_count().to_be_bytes());
        aad
    }
}

fn nonce(index: u32) -> Nonce<aes_gcm::aes::cipher::consts::U12> {
    let mut nonce = [0u8; 12];
    nonce[4..].copy_from_slice(&u64::from(index).to_be_bytes());
    nonce.into()
}

fn check_length(index: u32, expected_bytes: u64, actual: usize) -> Result<(), ChunkError> {
    let actual_bytes = actual as u64;
    if actual_bytes != expected_bytes {
        return Err(ChunkError::Length {
            index,
            expected_bytes,
            actual_bytes,
        });
    }
    Ok(())
}

/// Encrypts a whole in-memory file. For files that do not fit in memory use
/// [`crate::StreamEncryptor`].
pub fn encrypt_file(
    key: &FileKey,
    file_id: FileId,
    layout: ChunkLayout,
    plaintext: &[u8],
) -> Result<EncryptedFile, ChunkError> {
    check_plaintext_total(&layout, plaintext.len())?;
    let cipher = ChunkCipher::new(key, file_id, layout);
    let chunks = (0..layout.chunk_count())
        .map(|index| {
            let start = layout.plaintext_offset(index) as usize;
            let len = layout.plaintext_len(index)? as usize;
            cipher.encrypt_chunk(index, &plaintext[start..start + len])
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(EncryptedFile {
        file_id,
        layout,
        chunks,
    })
}

/// Verifies and decrypts a whole file from its chunks (in index order) and the hashes recorded in
/// its master table. Fails on the first chunk that does not verify, naming it.
pub fn decrypt_file<C: AsRef<[u8]>>(
    key: &FileKey,
    file_id: FileId,
    layout: ChunkLayout,
    chunks: &[C],
    hashes: &[ChunkHash],
) -> Result<Vec<u8>, ChunkError> {
    let expected = layout.chunk_count();
    for actual in [chunks.len(), hashes.len()] {
        if actual as u64 != u64::from(expected) {
            return Err(ChunkError::ChunkCount {
                expected,
                actual: actual as u64,
            });
        }
    }
    let cipher = ChunkCipher::new(key, file_id, layout);
    let mut plaintext = Vec::with_capacity(layout.file_size_bytes() as usize);
    let mut buffer = Vec::new();
    for (index, (chunk, hash)) in (0..expected).zip(chunks.iter().zip(hashes)) {
        buffer.clear();
        buffer.extend_from_slice(chunk.as_ref());
        cipher.decrypt_chunk_in_place(index, &mut buffer, hash)?;
        plaintext.extend_from_slice(&buffer);
    }
    Ok(plaintext)
}

pub(crate) fn check_plaintext_total(layout: &ChunkLayout, actual: usize) -> Result<(), ChunkError> {
    let expected_bytes = layout.file_size_bytes();
    let actual_bytes = actual as u64;
    if actual_bytes > expected_bytes {
        return Err(ChunkError::StreamOverflow {
            expected_bytes,
            actual_bytes,
        });
    }
    if actual_bytes < expected_bytes {
        return Err(ChunkError::StreamTruncated {
            expected: expected_bytes,
            actual: actual_bytes,
            unit: "bytes",
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::MIN_CHUNK_SIZE_BYTES;

    fn setup(size: u64) -> (FileKey, FileId, ChunkLayout) {
        let layout = ChunkLayout::new(size, MIN_CHUNK_SIZE_BYTES).unwrap();
        (
            FileKey::from_bytes([7; 32]),
            FileId::from_bytes([1; 32]),
            layout,
        )
    }

    #[test]
    fn nonce_is_index_big_endian() {
        assert_eq!(
            nonce(0x0102_0304).as_slice(),
            &[0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4]
        );
    }

    #[test]
    fn wrong_plaintext_length_is_rejected() {
        let (key, id, layout) = setup(1500);
        let cipher = ChunkCipher::new(&key, id, layout);
        assert_eq!(
            cipher.encrypt_chunk(1, &[0; 100]),
            Err(ChunkError::Length {
                index: 1,
                expected_bytes: 476,
                actual_bytes: 100
            })
        );
        assert!(matches!(
            cipher.encrypt_chunk(2, &[]),
            Err(ChunkError::IndexOutOfRange { index: 2, .. })
        ));
    }

    #[test]
    fn tampered_tag_fails_authentication_not_hash() {
        let (key, id, layout) = setup(10);
        let cipher = ChunkCipher::new(&key, id, layout);
        let mut chunk = cipher.encrypt_chunk(0, b"0123456789").unwrap();
        let last = chunk.bytes.len() - 1;
        chunk.bytes[last] ^= 1;
        let rehashed = ChunkHash::of(&chunk.bytes);
        assert_eq!(
            cipher.decrypt_chunk(0, &chunk.bytes, &rehashed),
            Err(ChunkError::Authentication { index: 0 })
        );
    }

    #[test]
    fn wrong_file_id_fails_authentication() {
        let (key, id, layout) = setup(10);
        let chunk = ChunkCipher::new(&key, id, layout)
            .encrypt_chunk(0, b"0123456789")
            .unwrap();
        let other = ChunkCipher::new(&key, FileId::from_bytes([2; 32]), layout);
        assert_eq!(
            other.decrypt_chunk(0, &chunk.bytes, &chunk.hash),
            Err(ChunkError::Authentication { index: 0 })
        );
    }
}
