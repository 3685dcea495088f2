//! [`PeerId`]: how the overlay names a member — its 32-byte ed25519 public key, the same key the
//! ledger calls a `MemberId` and QUIC presents as its raw public key.

/// A member's ed25519 public key, used as its overlay address and TLS identity.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PeerId([u8; 32]);
keyshare::impl_bytes32!(PeerId);
