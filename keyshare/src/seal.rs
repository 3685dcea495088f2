//! Sealing a share to one member with HPKE (RFC 9180, base mode, DHKEM(X25519, HKDF-SHA256),
//! HKDF-SHA256, AES-256-GCM).
//!
//! The HPKE `info` string is the encoded [`SealContext`]: file id, holder, share index and purpose.
//! A sealed share therefore opens only for its recipient *and* only under the context it was
//! sealed for: it cannot be replayed for another file, another holder or another request.
//!
//! Context encoding (pinned by the known-answer tests): `"blocktorrent/v1/share"` ‖ file id ‖
//! holder key (32) ‖ share index (u32 BE) ‖ purpose tag (`0` deposit, `1` release) ‖ for a
//! release, the request id (32).

use hpke::aead::AesGcm256;
use hpke::kdf::HkdfSha256;
use hpke::kem::X25519HkdfSha256;
use hpke::{Deserializable, Kem, OpModeR, OpModeS, Serializable};
use rand_core::CryptoRng;
use zeroize::Zeroizing;

use crate::error::SealError;
use crate::ids::FileId;
use crate::vss::Share;

type SuiteKem = X25519HkdfSha256;
type SuiteKdf = HkdfSha256;
type SuiteAead = AesGcm256;

const CONTEXT_LABEL: &[u8] = b"blocktorrent/v1/share";

/// A member's X25519 public key, listed in the genesis file; shares are sealed to it.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SealingPublicKey([u8; 32]);
crate::impl_bytes32!(SealingPublicKey);

/// A member's X25519 secret key. Zeroized on drop, never printed.
#[derive(Clone)]
pub struct SealingSecretKey {
    secret: <SuiteKem as Kem>::PrivateKey,
    public: SealingPublicKey,
}

impl SealingSecretKey {
    /// Draws a new key pair (RFC 9180 DeriveKeyPair over 32 random bytes).
    pub fn generate<R: CryptoRng + ?Sized>(rng: &mut R) -> Self {
        let mut ikm = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(ikm.as_mut_slice());
        let (secret, public) = SuiteKem::derive_keypair(ikm.as_slice());
        Self::from_parts(secret, &public)
    }

    /// Loads a secret key from its 32 bytes (clamped as RFC 9180 requires).
    pub fn from_bytes(bytes: &[u8; 32]) -> Self {
        // X25519 private keys accept any 32 bytes once clamped; the length is fixed by the type.
        let secret = <SuiteKem as Kem>::PrivateKey::from_bytes(bytes)
            .unwrap_or_else(|_| unreachable!("X25519 private keys are any 32 bytes"));
        let public = SuiteKem::sk_to_pk(&secret);
        Self::from_parts(secret, &public)
    }

    fn from_parts(
        secret: <SuiteKem as Kem>::PrivateKey,
        public: &<SuiteKem as Kem>::PublicKey,
    ) -> Self {
        let public = SealingPublicKey(public.to_bytes().into());
        Self { secret, public }
    }

    /// The 32 secret bytes, for writing the member's key file.
    pub fn to_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.secret.to_bytes().into())
    }

    /// The matching public key.
    pub fn public_key(&self) -> SealingPublicKey {
        self.public
    }
}

impl core::fmt::Debug for SealingSecretKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "SealingSecretKey {{ public: {}, secret: <redacted> }}",
            self.public
        )
    }
}

/// Why a share is being sealed; part of the context, so a deposit cannot pass for a release.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum SealPurpose {
    /// The owner deposits the share with its holder.
    Deposit,
    /// A holder releases the share to the requester of access request `request_id`.
    Release {
        /// Id of the access request on the ledger.
        request_id: [u8; 32],
    },
}

/// What a sealed share is bound to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SealContext {
    /// The file whose secret the share belongs to.
    pub file_id: FileId,
    /// The holder's member key (ed25519 public key bytes).
    pub holder: [u8; 32],
    /// The share's index; must match the share inside.
    pub share_index: u32,
    /// Deposit or release.
    pub purpose: SealPurpose,
}

impl SealContext {
    fn encode(&self) -> Vec<u8> {
        let mut info = Vec::with_capacity(CONTEXT_LABEL.len() + 32 + 32 + 4 + 1 + 32);
        info.extend_from_slice(CONTEXT_LABEL);
        info.extend_from_slice(self.file_id.as_bytes());
        info.extend_from_slice(&self.holder);
        info.extend_from_slice(&self.share_index.to_be_bytes());
        match self.purpose {
            SealPurpose::Deposit => info.push(0),
            SealPurpose::Release { request_id } => {
                info.push(1);
                info.extend_from_slice(&request_id);
            }
        }
        info
    }
}

/// A share encrypted to one recipient: the HPKE encapsulated key and the AES-GCM ciphertext.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SealedShare {
    /// HPKE `enc`: the sender's ephemeral X25519 public key.
    pub encapped_key: [u8; 32],
    /// The encoded share, encrypted and tagged.
    pub ciphertext: Vec<u8>,
}

/// Seals `share` to `recipient` under `context`. The share's index must equal the context's.
pub fn seal_share<R: CryptoRng + ?Sized>(
    share: &Share,
    recipient: &SealingPublicKey,
    context: &SealContext,
    rng: &mut R,
) -> Result<SealedShare, SealError> {
    if share.index() != context.share_index {
        return Err(SealError::IndexMismatch {
            expected: context.share_index,
            actual: share.index(),
        });
    }
    let recipient = <SuiteKem as Kem>::PublicKey::from_bytes(recipient.as_bytes())
        .map_err(|_| SealError::Seal)?;
    let plaintext = share.to_bytes();
    let (encapped_key, ciphertext) =
        hpke::single_shot_seal_with_rng::<SuiteAead, SuiteKdf, SuiteKem>(
            &OpModeS::Base,
            &recipient,
            &context.encode(),
            plaintext.as_slice(),
            &[],
            &mut &mut *rng,
        )
        .map_err(|_| SealError::Seal)?;
    Ok(SealedShare {
        encapped_key: encapped_key.to_bytes().into(),
        ciphertext,
    })
}

/// Opens a sealed share with the recipient's secret key under `context`, and checks that the share
/// inside carries the context's index. Does not check the share against the commitments: callers
/// do that with [`crate::verify`] before trusting it.
pub fn open_share(
    sealed: &SealedShare,
    recipient: &SealingSecretKey,
    context: &SealContext,
) -> Result<Share, SealError> {
    let encapped_key = <SuiteKem as Kem>::EncappedKey::from_bytes(&sealed.encapped_key)
        .map_err(|_| SealError::Open)?;
    let plaintext = Zeroizing::new(
        hpke::single_shot_open::<SuiteAead, SuiteKdf, SuiteKem>(
            &OpModeR::Base,
            &recipient.secret,
            &encapped_key,
            &context.encode(),
            &sealed.ciphertext,
            &[],
        )
        .map_err(|_| SealError::Open)?,
    );
    let share = Share::from_bytes(&plaintext)?;
    if share.index() != context.share_index {
        return Err(SealError::IndexMismatch {
            expected: context.share_index,
            actual: share.index(),
        });
    }
    Ok(share)
}

/// The release step: opens a deposited share with the holder's key and seals it to the requester
/// under the release context. The plaintext share exists only inside this call and is zeroized.
pub fn reseal_share<R: CryptoRng + ?Sized>(
    sealed: &SealedShare,
    holder: &SealingSecretKey,
    deposit_context: &SealContext,
    requester: &SealingPublicKey,
    release_context: &SealContext,
    rng: &mut R,
) -> Result<SealedShare, SealError> {
    let share = open_share(sealed, holder, deposit_context)?;
    seal_share(&share, requester, release_context, rng)
}
