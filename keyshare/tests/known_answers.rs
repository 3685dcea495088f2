//! Known answers that pin every format this crate puts on the ledger or the wire. A change to any
//! of them is a format change: it must be deliberate, versioned, and these values updated.
//!
//! The chunk, file-key and file-id values were computed independently with Python's
//! `cryptography` (AES-GCM) and `hashlib` (SHA3-256) from the formats in the module docs; the
//! sealed-share value was opened by Python's `cryptography.hazmat.primitives.hpke` (RFC 9180,
//! DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-256-GCM) with the documented context as `info`.

#![allow(clippy::unwrap_used)] // Test helpers panic on failure by design.

use keyshare::{
    ChunkLayout, FileId, FileSecret, SealContext, SealPurpose, SealingSecretKey, encrypt_file,
    seal_share, split,
};
use rand::{SeedableRng, rngs::StdRng};

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn secret() -> FileSecret {
    let mut bytes: [u8; 32] = core::array::from_fn(|i| i as u8 + 1);
    bytes[31] = 0x0f;
    FileSecret::from_bytes(&bytes).unwrap()
}

#[test]
fn chunk_format() {
    let key = keyshare::FileKey::from_bytes(core::array::from_fn(|i| i as u8));
    let file_id = FileId::from_bytes([0xa0; 32]);
    let plaintext: Vec<u8> = (0..3000u32).map(|i| (i * 7 % 256) as u8).collect();
    let layout = ChunkLayout::new(3000, 1024).unwrap();
    let encrypted = encrypt_file(&key, file_id, layout, &plaintext).unwrap();
    let hashes: Vec<String> = encrypted.hashes().iter().map(ToString::to_string).collect();
    assert_eq!(
        hashes,
        [
            "fe4f43a71acb0973472909f2fcaecb56ccbbe75f49e75ff6127da6cb296bd730",
            "b1e83431450d7efc5d6d2a44e8a70e66ce2568ea304f097421c4b2998c017cbe",
            "b2f5d11b454d0826f8f53aa7b0c929b4b6a1570d4a6aa719a71b03427b932c55",
        ]
    );
}

#[test]
fn file_key_derivation() {
    let key = secret().derive_key();
    assert_eq!(
        hex(key.expose_bytes()),
        "01847f2c30169aba3c9e3c6ef0155cc50ad22ca9a0302e3b7f325c707b83ad2e"
    );
}

#[test]
fn file_id_derivation() {
    let id = FileId::derive(&[0x11; 32], &[0x22; 16], 1_700_000_000_000);
    assert_eq!(
        id.to_string(),
        "1fb0e1d47a6f86d8e2a4a65f0b4af376f448461ad7d07ab1f143b596ea5a014a"
    );
}

#[test]
fn sharing_format() {
    let mut rng = StdRng::seed_from_u64(2024);
    let (shares, commitments) = split(&secret(), 2, 3, &mut rng).unwrap();
    let share_bytes: Vec<String> = shares
        .iter()
        .map(|s| hex(s.to_bytes().as_slice()))
        .collect();
    // Checked in Python: the three values lie on one line through (0, secret) modulo the group order.
    assert_eq!(
        share_bytes,
        [
            "000000016bf1b39229e8666b94c49869bdc3762c085aa19277433cef305b1251c26e6002",
            "00000002c2b45a7e682dd926f61b1e6a4c73bd5dffa12f11da7061c6489c098667bfa105",
            "000000031978016aa7724be25773a36adb22048ff6e9bd8f3c9e869d60dd00bb0c10e308",
        ]
    );
    assert_eq!(
        hex(&commitments.to_bytes()),
        "482cbb7988c1cee18d0162148393d6d9a245e4b5e8a92d59b81621b674b20919\
         7c7825dcd7ac98d96314b54e4c9f1a1b796feb7dcf6da5dfe08c05acd2011b5e"
    );
}

#[test]
fn sealed_share_format() {
    let mut rng = StdRng::seed_from_u64(2025);
    let recipient = SealingSecretKey::from_bytes(&[0x33; 32]);
    let (shares, _) = split(&secret(), 2, 3, &mut rng).unwrap();
    let context = SealContext {
        file_id: FileId::from_bytes([0x44; 32]),
        holder: [0x55; 32],
        share_index: 2,
        purpose: SealPurpose::Release {
            request_id: [0x66; 32],
        },
    };
    let sealed = seal_share(&shares[1], &recipient.public_key(), &context, &mut rng).unwrap();
    assert_eq!(
        recipient.public_key().to_string(),
        "7b0d47d93427f8311160781c7c733fd89f88970aef490d8aa0ee19a4cb8a1b14"
    );
    assert_eq!(
        hex(shares[1].to_bytes().as_slice()),
        "00000002f7767a42cfc132202db346676e0b4eced635a5fc03b1897ae62c2fe72d9fc903"
    );
    assert_eq!(
        hex(&sealed.encapped_key),
        "e3f941d3b1a1981ed6e0b3caf5b406415a8abcdd63e1f5c912064cf8e6b43b6a"
    );
    assert_eq!(
        hex(&sealed.ciphertext),
        "a421f81e74781c887c5e1fdd20410bb8e2d1816df686ac885e0d72f685d951e8\
         a47b480ce49862499194f4a26bf9d36ad2c77464"
    );
}
