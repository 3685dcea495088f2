//! BlockTorrent's cryptographic core: everything the store and recreate flows need to turn a
//! private record into chunks that anyone may hold but only key holders may read, and to split the
//! key so that `t` of `n` members can rebuild it without the owner.
//!
//! What it does:
//! - [`FileId`] and [`ChunkHash`] (SHA3-256 of a ciphertext chunk), printed as lowercase hex.
//! - [`FileSecret`] → [`FileKey`] derivation; both zeroize on drop and never print.
//! - Chunk encryption with AES-256-GCM ([`ChunkCipher`], [`StreamEncryptor`], [`StreamDecryptor`],
//!   [`encrypt_file`], [`decrypt_file`]): the nonce is the chunk index and the associated data
//!   binds file id, index and count, so chunks cannot be swapped, dropped or appended.
//! - Feldman verifiable secret sharing over ristretto255 ([`split`], [`verify`], [`verify_all`],
//!   [`combine`]): every share can be checked against public [`Commitments`].
//! - Sealing a share to one member's X25519 key with HPKE (RFC 9180) ([`seal_share`],
//!   [`open_share`], [`reseal_share`]), bound to a [`SealContext`].
//!
//! What it does not do: no I/O, no clocks, no global randomness. Every random value comes from a
//! caller-supplied [`rand_core::CryptoRng`], so the simulator can replay a run from its seed.

mod chunk;
mod error;
#[doc(hidden)]
pub mod hex;
mod ids;
mod layout;
mod seal;
mod secret;
mod stream;
mod vss;

pub use chunk::{ChunkCipher, EncryptedChunk, EncryptedFile, decrypt_file, encrypt_file};
pub use error::{ChunkError, Error, LayoutError, ParseHexError, SealError, ShareError};
pub use ids::{ChunkHash, FileId};
pub use layout::{
    ChunkLayout, DEFAULT_CHUNK_SIZE_BYTES, MAX_CHUNK_SIZE_BYTES, MAX_FILE_SIZE_BYTES,
    MIN_CHUNK_SIZE_BYTES, TAG_SIZE_BYTES,
};
pub use seal::{
    SealContext, SealPurpose, SealedShare, SealingPublicKey, SealingSecretKey, open_share,
    reseal_share, seal_share,
};
pub use secret::{FileKey, FileSecret};
pub use stream::{StreamDecryptor, StreamEncryptor};
pub use vss::{
    Commitments, MAX_SHARE_COUNT, SHARE_SIZE_BYTES, Share, batch_weights_from_seed, combine,
    interpolate, split, verify, verify_all,
};
