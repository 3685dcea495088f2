//! Identifiers that travel on the ledger and the wire: [`FileId`] and [`ChunkHash`].

use sha3::{Digest, Sha3_256};

/// Names one stored file across the consortium. Derived from owner, a random nonce and time, so
/// two files never share an id even when their contents are equal.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FileId([u8; 32]);
crate::impl_bytes32!(FileId);

/// SHA3-256 of one ciphertext chunk (ciphertext followed by its GCM tag). Peers store and serve
/// chunks by this hash, and check it before storing and before serving.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ChunkHash([u8; 32]);
crate::impl_bytes32!(ChunkHash);

/// Domain label for file ids, so no other SHA3 input in the system can collide with one.
const FILE_ID_LABEL: &[u8] = b"blocktorrent/v1/file-id";

impl FileId {
    /// Derives the id of a file stored by `owner` (its 32-byte member key) at `timestamp_ms`,
    /// with a caller-drawn random `nonce`.
    pub fn derive(owner: &[u8; 32], nonce: &[u8; 16], timestamp_ms: u64) -> Self {
        let digest = Sha3_256::new()
            .chain_update(FILE_ID_LABEL)
            .chain_update(owner)
            .chain_update(nonce)
            .chain_update(timestamp_ms.to_be_bytes())
            .finalize();
        Self(digest.into())
    }
}

impl ChunkHash {
    /// Hashes a ciphertext chunk.
    pub fn of(ciphertext: &[u8]) -> Self {
        Self(Sha3_256::digest(ciphertext).into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_hash_is_sha3_256() {
        // SHA3-256("abc") from FIPS 202's examples.
        assert_eq!(
            ChunkHash::of(b"abc").to_string(),
            "3a985da74fe225b2045c172d6bd390bd855f086e3e9d525b46bfe24511431532"
        );
    }

    #[test]
    fn display_parse_round_trip() {
        let id = FileId::derive(&[7; 32], &[9; 16], 1_700_000_000_000);
        let text = id.to_string();
        assert_eq!(text.len(), 64);
        assert!(
            text.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        );
        assert_eq!(text.parse::<FileId>(), Ok(id));
        assert!(format!("{id:?}").starts_with("FileId("));
    }

    #[test]
    fn file_id_depends_on_every_input() {
        let base = FileId::derive(&[1; 32], &[2; 16], 3);
        assert_ne!(base, FileId::derive(&[0; 32], &[2; 16], 3));
        assert_ne!(base, FileId::derive(&[1; 32], &[0; 16], 3));
        assert_ne!(base, FileId::derive(&[1; 32], &[2; 16], 4));
    }
}
