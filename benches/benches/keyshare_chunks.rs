//! Chunk throughput on one core: encrypt + hash, and verify + decrypt, of a 64 MiB file in
//! 256 KiB chunks (the default). Two shapes: the whole-buffer API, which allocates all 64 MiB of
//! output (and pays the page faults), and the in-place chunk API over one reused buffer, which is
//! what a streaming store or fetch pipeline does.

#![allow(missing_docs)]

use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use keyshare::{
    ChunkCipher, ChunkLayout, DEFAULT_CHUNK_SIZE_BYTES, FileId, FileKey, decrypt_file, encrypt_file,
};

const FILE_SIZE_BYTES: usize = 64 * 1024 * 1024;

fn chunks(c: &mut Criterion) {
    let key = FileKey::from_bytes([7; 32]);
    let file_id = FileId::from_bytes([9; 32]);
    let plaintext: Vec<u8> = (0..FILE_SIZE_BYTES).map(|i| (i % 251) as u8).collect();
    let layout = ChunkLayout::new(FILE_SIZE_BYTES as u64, DEFAULT_CHUNK_SIZE_BYTES)
        .expect("64 MiB in 256 KiB chunks is within the limits");
    let encrypted =
        encrypt_file(&key, file_id, layout, &plaintext).expect("plaintext matches its layout");
    let ciphertext: Vec<&[u8]> = encrypted
        .chunks
        .iter()
        .map(|c| c.bytes.as_slice())
        .collect();
    let hashes = encrypted.hashes();

    let mut group = c.benchmark_group("chunks_64MiB");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(8))
        .throughput(Throughput::Bytes(FILE_SIZE_BYTES as u64));
    group.bench_function("encrypt_and_hash", |b| {
        b.iter(|| encrypt_file(&key, file_id, layout, &plaintext).expect("encrypts"))
    });
    group.bench_function("verify_and_decrypt", |b| {
        b.iter(|| decrypt_file(&key, file_id, layout, &ciphertext, &hashes).expect("decrypts"))
    });
    let cipher = ChunkCipher::new(&key, file_id, layout);
    let mut buffer = Vec::with_capacity(DEFAULT_CHUNK_SIZE_BYTES as usize + 16);
    group.bench_function("encrypt_and_hash_in_place", |b| {
        b.iter(|| {
            for (index, piece) in (0..).zip(plaintext.chunks(DEFAULT_CHUNK_SIZE_BYTES as usize)) {
                buffer.clear();
                buffer.extend_from_slice(piece);
                cipher
                    .encrypt_chunk_in_place(index, &mut buffer)
                    .expect("encrypts");
            }
        })
    });
    group.bench_function("verify_and_decrypt_in_place", |b| {
        b.iter(|| {
            for (index, (piece, hash)) in (0..).zip(ciphertext.iter().zip(&hashes)) {
                buffer.clear();
                buffer.extend_from_slice(piece);
                cipher
                    .decrypt_chunk_in_place(index, &mut buffer, hash)
                    .expect("decrypts");
            }
        })
    });
    group.finish();
}

criterion_group!(benches, chunks);
criterion_main!(benches);
