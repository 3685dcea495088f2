//! Chunk encryption: round trips over many sizes, and every way of tampering with the chunk
//! sequence (bit flips, swaps, truncation, extension) is caught and names the chunk.

#![allow(clippy::unwrap_used)] // Test helpers panic on failure by design.

use keyshare::{
    ChunkError, ChunkHash, ChunkLayout, FileId, FileKey, MIN_CHUNK_SIZE_BYTES, StreamDecryptor,
    StreamEncryptor, decrypt_file, encrypt_file,
};
use proptest::prelude::*;

const KEY: [u8; 32] = [0x42; 32];
const FILE: [u8; 32] = [0x17; 32];

fn key() -> FileKey {
    FileKey::from_bytes(KEY)
}

fn file_id() -> FileId {
    FileId::from_bytes(FILE)
}

/// Plaintext of 0 to a little over five chunks, with chunk sizes from the minimum to 4x it.
fn file_strategy() -> impl Strategy<Value = (Vec<u8>, u32)> {
    (MIN_CHUNK_SIZE_BYTES..=4 * MIN_CHUNK_SIZE_BYTES).prop_flat_map(|chunk_size| {
        let max = 5 * chunk_size as usize + 17;
        (
            proptest::collection::vec(any::<u8>(), 0..max),
            Just(chunk_size),
        )
    })
}

fn chunk_bytes(file: &keyshare::EncryptedFile) -> Vec<Vec<u8>> {
    file.chunks.iter().map(|c| c.bytes.clone()).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn whole_buffer_round_trip((plaintext, chunk_size) in file_strategy()) {
        let layout = ChunkLayout::new(plaintext.len() as u64, chunk_size).unwrap();
        let encrypted = encrypt_file(&key(), file_id(), layout, &plaintext).unwrap();
        prop_assert_eq!(encrypted.chunks.len() as u32, layout.chunk_count());
        for chunk in &encrypted.chunks {
            prop_assert_eq!(chunk.hash, ChunkHash::of(&chunk.bytes));
            prop_assert_eq!(chunk.bytes.len() as u32, layout.ciphertext_len(chunk.index).unwrap());
        }
        let decrypted =
            decrypt_file(&key(), file_id(), layout, &chunk_bytes(&encrypted), &encrypted.hashes())
                .unwrap();
        prop_assert_eq!(decrypted, plaintext);
    }

    #[test]
    fn streaming_matches_whole_buffer(
        (plaintext, chunk_size) in file_strategy(),
        pieces in proptest::collection::vec(1usize..3000, 1..40),
    ) {
        let layout = ChunkLayout::new(plaintext.len() as u64, chunk_size).unwrap();
        let expected = encrypt_file(&key(), file_id(), layout, &plaintext).unwrap();

        let mut encryptor = StreamEncryptor::new(&key(), file_id(), layout);
        let mut streamed = Vec::new();
        let mut rest = plaintext.as_slice();
        for piece in pieces.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (now, later) = rest.split_at((*piece).min(rest.len()));
            streamed.extend(encryptor.update(now).unwrap());
            rest = later;
        }
        streamed.extend(encryptor.finish().unwrap());
        prop_assert_eq!(&streamed, &expected.chunks);

        let mut decryptor =
            StreamDecryptor::new(&key(), file_id(), layout, expected.hashes()).unwrap();
        let mut decrypted = Vec::new();
        for chunk in streamed {
            decrypted.extend(decryptor.next_chunk(chunk.bytes).unwrap());
        }
        decryptor.finish().unwrap();
        prop_assert_eq!(decrypted, plaintext);
    }

    #[test]
    fn any_bit_flip_is_named(
        (plaintext, chunk_size) in file_strategy(),
        target in any::<prop::sample::Index>(),
        bit in 0u8..8,
    ) {
        let layout = ChunkLayout::new(plaintext.len() as u64, chunk_size).unwrap();
        let encrypted = encrypt_file(&key(), file_id(), layout, &plaintext).unwrap();
        let mut chunks = chunk_bytes(&encrypted);
        let index = target.index(chunks.len());
        let position = target.index(chunks[index].len());
        chunks[index][position] ^= 1 << bit;

        // Against the master table's hashes, the hash check catches it.
        let hashes = encrypted.hashes();
        let error = decrypt_file(&key(), file_id(), layout, &chunks, &hashes).unwrap_err();
        let is_hash_mismatch =
            matches!(error, ChunkError::HashMismatch { index: i, .. } if i as usize == index);
        prop_assert!(is_hash_mismatch, "{error:?}");

        // Even if the attacker could also rewrite the hashes, the GCM tag catches it.
        let forged: Vec<_> = chunks.iter().map(|c| ChunkHash::of(c)).collect();
        prop_assert_eq!(
            decrypt_file(&key(), file_id(), layout, &chunks, &forged),
            Err(ChunkError::Authentication { index: index as u32 })
        );
    }
}

fn three_chunk_file() -> (ChunkLayout, keyshare::EncryptedFile) {
    let plaintext: Vec<u8> = (0..2500u32).map(|i| (i % 251) as u8).collect();
    let layout = ChunkLayout::new(plaintext.len() as u64, MIN_CHUNK_SIZE_BYTES).unwrap();
    let encrypted = encrypt_file(&key(), file_id(), layout, &plaintext).unwrap();
    (layout, encrypted)
}

#[test]
fn swapped_chunks_fail_even_with_swapped_hashes() {
    let plaintext = vec![9u8; 3 * MIN_CHUNK_SIZE_BYTES as usize];
    let layout = ChunkLayout::new(plaintext.len() as u64, MIN_CHUNK_SIZE_BYTES).unwrap();
    let encrypted = encrypt_file(&key(), file_id(), layout, &plaintext).unwrap();
    let mut chunks = chunk_bytes(&encrypted);
    let mut hashes = encrypted.hashes();
    chunks.swap(0, 2);
    assert!(matches!(
        decrypt_file(&key(), file_id(), layout, &chunks, &hashes),
        Err(ChunkError::HashMismatch { index: 0, .. })
    ));
    hashes.swap(0, 2);
    assert_eq!(
        decrypt_file(&key(), file_id(), layout, &chunks, &hashes),
        Err(ChunkError::Authentication { index: 0 })
    );
}

#[test]
fn dropped_chunk_is_detected() {
    let (layout, encrypted) = three_chunk_file();
    let chunks = chunk_bytes(&encrypted);
    let hashes = encrypted.hashes();
    assert_eq!(
        decrypt_file(&key(), file_id(), layout, &chunks[..2], &hashes[..2]),
        Err(ChunkError::ChunkCount {
            expected: 3,
            actual: 2
        })
    );
    // A forged master table that claims the file ends after two full chunks still fails: the
    // chunk count is bound into every chunk.
    let shorter =
        ChunkLayout::new(2 * u64::from(MIN_CHUNK_SIZE_BYTES), MIN_CHUNK_SIZE_BYTES).unwrap();
    assert_eq!(
        decrypt_file(&key(), file_id(), shorter, &chunks[..2], &hashes[..2]),
        Err(ChunkError::Authentication { index: 0 })
    );
}

#[test]
fn truncated_last_chunk_is_detected() {
    let (layout, encrypted) = three_chunk_file();
    let mut chunks = chunk_bytes(&encrypted);
    chunks[2].truncate(100);
    assert_eq!(
        decrypt_file(&key(), file_id(), layout, &chunks, &encrypted.hashes()),
        Err(ChunkError::Length {
            index: 2,
            expected_bytes: 452 + 16,
            actual_bytes: 100
        })
    );
}

#[test]
fn appended_chunk_is_detected() {
    let (layout, encrypted) = three_chunk_file();
    let mut chunks = chunk_bytes(&encrypted);
    let mut hashes = encrypted.hashes();
    chunks.push(chunks[0].clone());
    hashes.push(hashes[0]);
    assert_eq!(
        decrypt_file(&key(), file_id(), layout, &chunks, &hashes),
        Err(ChunkError::ChunkCount {
            expected: 3,
            actual: 4
        })
    );
    let longer =
        ChunkLayout::new(4 * u64::from(MIN_CHUNK_SIZE_BYTES), MIN_CHUNK_SIZE_BYTES).unwrap();
    let mut padded = chunk_bytes(&encrypted);
    padded[2].resize(MIN_CHUNK_SIZE_BYTES as usize + 16, 0);
    padded.push(chunks[0].clone());
    let padded_hashes: Vec<_> = padded.iter().map(|c| ChunkHash::of(c)).collect();
    assert_eq!(
        decrypt_file(&key(), file_id(), longer, &padded, &padded_hashes),
        Err(ChunkError::Authentication { index: 0 })
    );

    let mut decryptor =
        StreamDecryptor::new(&key(), file_id(), layout, encrypted.hashes()).unwrap();
    for chunk in chunk_bytes(&encrypted) {
        decryptor.next_chunk(chunk).unwrap();
    }
    assert_eq!(
        decryptor.next_chunk(chunks[0].clone()),
        Err(ChunkError::ChunkCount {
            expected: 3,
            actual: 4
        })
    );
}

#[test]
fn wrong_key_fails_authentication() {
    let (layout, encrypted) = three_chunk_file();
    assert_eq!(
        decrypt_file(
            &FileKey::from_bytes([0x43; 32]),
            file_id(),
            layout,
            &chunk_bytes(&encrypted),
            &encrypted.hashes()
        ),
        Err(ChunkError::Authentication { index: 0 })
    );
}

#[test]
fn streams_enforce_declared_size() {
    let layout = ChunkLayout::new(2000, MIN_CHUNK_SIZE_BYTES).unwrap();
    let mut encryptor = StreamEncryptor::new(&key(), file_id(), layout);
    assert_eq!(encryptor.update(&[1; 1500]).unwrap().len(), 1);
    assert_eq!(
        encryptor.update(&[1; 501]),
        Err(ChunkError::StreamOverflow {
            expected_bytes: 2000,
            actual_bytes: 2001
        })
    );
    assert_eq!(
        encryptor.finish(),
        Err(ChunkError::StreamTruncated {
            expected: 2000,
            actual: 1500,
            unit: "bytes"
        })
    );

    let (layout, encrypted) = three_chunk_file();
    let mut decryptor =
        StreamDecryptor::new(&key(), file_id(), layout, encrypted.hashes()).unwrap();
    decryptor
        .next_chunk(encrypted.chunks[0].bytes.clone())
        .unwrap();
    assert_eq!(
        decryptor.finish(),
        Err(ChunkError::StreamTruncated {
            expected: 3,
            actual: 1,
            unit: "chunks"
        })
    );
    assert!(matches!(
        StreamDecryptor::new(&key(), file_id(), layout, vec![]),
        Err(ChunkError::ChunkCount {
            expected: 3,
            actual: 0
        })
    ));
}

#[test]
fn empty_file_has_one_authenticated_chunk() {
    let layout = ChunkLayout::new(0, MIN_CHUNK_SIZE_BYTES).unwrap();
    let encrypted = encrypt_file(&key(), file_id(), layout, &[]).unwrap();
    assert_eq!(encrypted.chunks.len(), 1);
    assert_eq!(encrypted.chunks[0].bytes.len(), 16);
    let stream = StreamEncryptor::new(&key(), file_id(), layout)
        .finish()
        .unwrap();
    assert_eq!(stream.as_ref(), Some(&encrypted.chunks[0]));
    assert_eq!(
        decrypt_file(
            &key(),
            file_id(),
            layout,
            &chunk_bytes(&encrypted),
            &encrypted.hashes()
        ),
        Ok(vec![])
    );
}

#[test]
fn layout_deserialization_revalidates() {
    let layout = ChunkLayout::new(10, MIN_CHUNK_SIZE_BYTES).unwrap();
    let bytes = postcard::to_allocvec(&layout).unwrap();
    assert_eq!(postcard::from_bytes::<ChunkLayout>(&bytes).unwrap(), layout);
    let bad = postcard::to_allocvec(&(10u64, 1u32)).unwrap();
    assert!(postcard::from_bytes::<ChunkLayout>(&bad).is_err());
}
