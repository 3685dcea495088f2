//! The per-file secret and the AES key derived from it. The secret is a ristretto255 scalar so it
//! can be shared with Feldman VSS; the key is what encrypts the chunks.

use curve25519_dalek::Scalar;
use rand_core::CryptoRng;
use sha3::{Digest, Sha3_256};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// Domain label of the file-key KDF; changing it changes every key, so it carries a version.
const FILE_KEY_LABEL: &[u8] = b"blocktorrent/v1/file-key";

/// The secret a file's key derives from; what the `t`-of-`n` sharing splits. Zeroized on drop,
/// never printed.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct FileSecret(Scalar);

impl FileSecret {
    /// Draws a uniformly random secret.
    pub fn random<R: CryptoRng + ?Sized>(rng: &mut R) -> Self {
        Self(Scalar::random(rng))
    }

    /// Parses the canonical 32-byte encoding; `None` if the bytes are not a reduced scalar.
    pub fn from_bytes(bytes: &[u8; 32]) -> Option<Self> {
        Option::from(Scalar::from_canonical_bytes(*bytes)).map(Self)
    }

    /// The canonical 32-byte encoding, in a buffer that zeroizes itself.
    pub fn to_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.0.to_bytes())
    }

    /// Derives the AES-256 file key: SHA3-256(label ‖ secret).
    pub fn derive_key(&self) -> FileKey {
        let secret = self.to_bytes();
        let digest = Sha3_256::new()
            .chain_update(FILE_KEY_LABEL)
            .chain_update(secret.as_slice())
            .finalize();
        FileKey(digest.into())
    }

    pub(crate) fn from_scalar(scalar: Scalar) -> Self {
        Self(scalar)
    }

    pub(crate) fn scalar(&self) -> &Scalar {
        &self.0
    }
}

impl core::fmt::Debug for FileSecret {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("FileSecret(<redacted>)")
    }
}

/// The 256-bit AES-GCM key of one file. Zeroized on drop, never printed.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct FileKey([u8; 32]);

impl FileKey {
    /// Wraps raw key bytes (for keys stored by the owner itself).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The raw key bytes; keep them out of logs and off the wire.
    pub fn expose_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl core::fmt::Debug for FileKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("FileKey(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{SeedableRng, rngs::StdRng};

    #[test]
    fn debug_never_shows_secret_material() {
        let secret = FileSecret::random(&mut StdRng::seed_from_u64(1));
        let key = secret.derive_key();
        assert_eq!(format!("{secret:?}"), "FileSecret(<redacted>)");
        assert_eq!(format!("{key:?}"), "FileKey(<redacted>)");
    }

    #[test]
    fn bytes_round_trip_and_reject_non_canonical() {
        let secret = FileSecret::random(&mut StdRng::seed_from_u64(2));
        let bytes = secret.to_bytes();
        assert_eq!(FileSecret::from_bytes(&bytes), Some(secret.clone()));
        assert_eq!(FileSecret::from_bytes(&[0xff; 32]), None);
    }

    #[test]
    fn key_derivation_is_deterministic_and_secret_dependent() {
        let mut rng = StdRng::seed_from_u64(3);
        let a = FileSecret::random(&mut rng);
        let b = FileSecret::random(&mut rng);
        assert_eq!(a.derive_key(), a.clone().derive_key());
        assert_ne!(a.derive_key(), b.derive_key());
    }
}
