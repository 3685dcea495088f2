//! Signature verification under ZIP-215: one verdict per signature, whatever batch it is in.
//!
//! Why not ed25519-dalek's `verify_batch` / `verify_strict`: the batch equation there is
//! cofactorless and the single one is strict, so a signature whose `R` carries a small-order
//! (torsion) component passes a batch for some random weights and fails on its own. Replicas that
//! batch a block differently (a leader reusing its proposal verdicts, a follower catching up over
//! several blocks, a restarted replica) would then apply the same block with different results.
//!
//! ZIP-215 (the rules Zcash and Penumbra use) fixes the verdict by construction:
//! - `A` (the member key) and `R` must decode as curve points; non-canonical encodings are
//!   accepted, and `k = SHA-512(R_bytes ‖ A_bytes ‖ M)` hashes the bytes as given;
//! - `s` must be canonical (`s < ℓ`);
//! - the check is *cofactored*: `[8]([s]B − R − [k]A) = 0`.
//!
//! Multiplying by 8 removes every torsion component, so the single equation and the batch
//! equation `[8]([Σ zᵢsᵢ]B − Σ[zᵢ]Rᵢ − Σ[zᵢkᵢ]Aᵢ) = 0` agree: a batch passes exactly when each of
//! its signatures does (up to the 2⁻¹²⁸ chance that random weights cancel a forgery). A failed
//! batch is re-checked one signature at a time with the single equation, which is the verdict.
//!
//! Written on the workspace's curve25519-dalek 5 rather than with the `ed25519-consensus` crate:
//! that crate is built on curve25519-dalek 4 and rand_core 0.6 (a second curve in the tree,
//! without the AVX-512 IFMA backend this workspace selects, see README → Performance → Ledger),
//! and it draws batch weights from a caller RNG. Here the weights come from a SHA3 transcript of
//! the whole batch (Fiat–Shamir), so the sans-IO core needs no randomness and a forger cannot
//! know the weights before fixing its signatures. Terms of one key are coalesced (`Σ zᵢkᵢ` per
//! member), as `ed25519-consensus` does: a block from a few members costs an `n + m + 1` point
//! multiscalar multiplication instead of `2n + 1`.

use std::collections::BTreeMap;

use curve25519_dalek::constants::ED25519_BASEPOINT_POINT;
use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::{IsIdentity, VartimeMultiscalarMul};
use ed25519_dalek::Signature;
use sha2::Sha512;
use sha3::{Digest, Sha3_256};

/// A member's ed25519 key, decoded once at genesis.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PublicKey {
    /// The encoding as listed in the genesis (hashed into `k` as given).
    bytes: [u8; 32],
    /// `−A`, for the single equation.
    minus_point: EdwardsPoint,
    point: EdwardsPoint,
}

/// Why a key cannot be a member key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum KeyError {
    /// The bytes are not the y-coordinate of a curve point.
    #[error("not a curve point")]
    NotAPoint,
    /// The point has order dividing 8: any signature verifies for it under cofactored rules.
    #[error("a small-order point")]
    SmallOrder,
    /// Not the point's canonical encoding: two encodings of one key would be two members with
    /// one signer.
    #[error("not the canonical encoding of its point")]
    NonCanonical,
}

impl PublicKey {
    /// Decodes a member key; small-order keys and non-canonical encodings are refused.
    pub(crate) fn from_bytes(bytes: [u8; 32]) -> Result<Self, KeyError> {
        let point = CompressedEdwardsY(bytes)
            .decompress()
            .ok_or(KeyError::NotAPoint)?;
        if point.is_small_order() {
            return Err(KeyError::SmallOrder);
        }
        if point.compress().to_bytes() != bytes {
            return Err(KeyError::NonCanonical);
        }
        Ok(Self {
            bytes,
            minus_point: -point,
            point,
        })
    }
}

/// One signature to check: the signer's key, the signed message, the signature.
#[derive(Clone, Copy)]
pub(crate) struct Item<'a> {
    pub(crate) key: &'a PublicKey,
    pub(crate) message: &'a [u8],
    pub(crate) signature: &'a Signature,
}

/// The parts of a signature the equations use, or `None` if it cannot verify (`R` not a point,
/// `s` not canonical).
struct Prepared {
    r_point: EdwardsPoint,
    s: Scalar,
    k: Scalar,
}

fn prepare(item: &Item<'_>) -> Option<Prepared> {
    let r_bytes = *item.signature.r_bytes();
    let s = Option::<Scalar>::from(Scalar::from_canonical_bytes(*item.signature.s_bytes()))?;
    let r_point = CompressedEdwardsY(r_bytes).decompress()?;
    let digest = Sha512::new()
        .chain_update(r_bytes)
        .chain_update(item.key.bytes)
        .chain_update(item.message)
        .finalize();
    let mut wide = [0u8; 64];
    wide.copy_from_slice(&digest);
    Some(Prepared {
        r_point,
        s,
        k: Scalar::from_bytes_mod_order_wide(&wide),
    })
}

/// The single-signature verdict: `[8](R − ([s]B − [k]A)) = 0`.
#[cfg(test)]
pub(crate) fn verify_one(item: &Item<'_>) -> bool {
    let Some(prepared) = prepare(item) else {
        return false;
    };
    verify_prepared(item.key, &prepared)
}

fn verify_prepared(key: &PublicKey, prepared: &Prepared) -> bool {
    let r_check = EdwardsPoint::vartime_double_scalar_mul_basepoint(
        &prepared.k,
        &key.minus_point,
        &prepared.s,
    );
    (prepared.r_point - r_check).mul_by_cofactor().is_identity()
}

/// One verdict per item, each equal to [`verify_one`] of that item: one batch equation, and on
/// failure the halves again, so a few bad signatures in a large batch cost a few batches, not one
/// check per signature. Where both halves of a failed range fail too, the bad signatures are
/// many, and that range is settled one by one at once (bisecting further would cost more).
pub(crate) fn verify_each(items: &[Item<'_>]) -> Vec<bool> {
    let prepared: Vec<Option<Prepared>> = items.iter().map(prepare).collect();
    let mut verdicts = vec![false; items.len()];
    if holds(items, &prepared) {
        verdicts.fill(true);
    } else {
        settle_failed(items, &prepared, &mut verdicts);
    }
    verdicts
}

/// Below this many items a failed batch is settled one signature at a time.
const SINGLE_CHECKS_BELOW: usize = 8;

/// Whether every item is well formed and the batch equation holds for them.
fn holds(items: &[Item<'_>], prepared: &[Option<Prepared>]) -> bool {
    let well_formed: Option<Vec<&Prepared>> = prepared.iter().map(Option::as_ref).collect();
    well_formed.is_some_and(|prepared| batch_holds(items, &prepared))
}

/// Verdicts for a range whose batch failed.
fn settle_failed(items: &[Item<'_>], prepared: &[Option<Prepared>], verdicts: &mut [bool]) {
    let half = items.len() / 2;
    let halves_hold = (items.len() >= SINGLE_CHECKS_BELOW).then(|| {
        (
            holds(&items[..half], &prepared[..half]),
            holds(&items[half..], &prepared[half..]),
        )
    });
    let Some((left_holds, right_holds)) = halves_hold.filter(|(l, r)| *l || *r) else {
        for ((item, prepared), verdict) in items.iter().zip(prepared).zip(verdicts) {
            *verdict = prepared
                .as_ref()
                .is_some_and(|prepared| verify_prepared(item.key, prepared));
        }
        return;
    };
    let (verdicts_left, verdicts_right) = verdicts.split_at_mut(half);
    if left_holds {
        verdicts_left.fill(true);
    } else {
        settle_failed(&items[..half], &prepared[..half], verdicts_left);
    }
    if right_holds {
        verdicts_right.fill(true);
    } else {
        settle_failed(&items[half..], &prepared[half..], verdicts_right);
    }
}

/// The cofactored batch equation over every item.
fn batch_holds(items: &[Item<'_>], prepared: &[&Prepared]) -> bool {
    if items.is_empty() {
        return true;
    }
    let weights = weights(items, prepared);
    let mut basepoint_scalar = Scalar::ZERO;
    let mut r_scalars = Vec::with_capacity(items.len());
    let mut r_points = Vec::with_capacity(items.len());
    // Keyed by encoding: ordered, and equal encodings are the same point.
    let mut per_key: BTreeMap<[u8; 32], (Scalar, EdwardsPoint)> = BTreeMap::new();
    for ((item, prepared), z) in items.iter().zip(prepared).zip(weights) {
        basepoint_scalar += z * prepared.s;
        r_scalars.push(-z);
        r_points.push(prepared.r_point);
        let entry = per_key
            .entry(item.key.bytes)
            .or_insert((Scalar::ZERO, item.key.point));
        entry.0 -= z * prepared.k;
    }
    let scalars = std::iter::once(basepoint_scalar)
        .chain(per_key.values().map(|(scalar, _)| *scalar))
        .chain(r_scalars);
    let points = std::iter::once(ED25519_BASEPOINT_POINT)
        .chain(per_key.values().map(|(_, point)| *point))
        .chain(r_points);
    EdwardsPoint::vartime_multiscalar_mul(scalars, points)
        .mul_by_cofactor()
        .is_identity()
}

/// 128-bit weights bound to the whole batch: a SHA3-256 transcript of every key, signature
/// (`R`, `s`) and `k` — everything the equation reads; `k` already hashes the message — expanded
/// one weight per position.
fn weights(items: &[Item<'_>], prepared: &[&Prepared]) -> Vec<Scalar> {
    let mut transcript = Sha3_256::new()
        .chain_update(b"blocktorrent/v1/zip215-batch")
        .chain_update((items.len() as u64).to_be_bytes());
    for (item, prepared) in items.iter().zip(prepared) {
        transcript.update(item.key.bytes);
        transcript.update(item.signature.to_bytes());
        transcript.update(prepared.k.as_bytes());
    }
    keyshare::batch_weights_from_seed(&transcript.finalize(), items.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use curve25519_dalek::constants::EIGHT_TORSION;
    use ed25519_dalek::{Signer, SigningKey};

    /// Encodings of the small-order points: the eight canonical ones and the six non-canonical
    /// ones that still decode (y ≥ p, or x = 0 with the sign bit set), as in ZIP-215's vectors.
    fn small_order_encodings() -> Vec<[u8; 32]> {
        let mut encodings: Vec<[u8; 32]> = EIGHT_TORSION
            .iter()
            .map(|point| point.compress().to_bytes())
            .collect();
        let mut y_one = [0u8; 32];
        y_one[0] = 1;
        let y_near_p = |low: u8| {
            let mut bytes = [0xff; 32];
            bytes[0] = low;
            bytes[31] = 0x7f;
            bytes
        };
        // y = 1, p - 1, p (≡ 0), p + 1 (≡ 1).
        for y in [y_one, y_near_p(0xec), y_near_p(0xed), y_near_p(0xee)] {
            for sign in [0u8, 0x80] {
                let mut bytes = y;
                bytes[31] |= sign;
                let Some(point) = CompressedEdwardsY(bytes).decompress() else {
                    continue;
                };
                assert!(point.is_small_order());
                if !encodings.contains(&bytes) {
                    encodings.push(bytes);
                }
            }
        }
        assert_eq!(encodings.len(), 14, "8 canonical and 6 non-canonical");
        encodings
    }

    #[test]
    fn small_order_keys_are_refused() {
        for bytes in small_order_encodings() {
            assert_eq!(
                PublicKey::from_bytes(bytes).err(),
                Some(KeyError::SmallOrder),
                "{bytes:02x?}"
            );
        }
        let honest = SigningKey::from_bytes(&[7; 32]).verifying_key().to_bytes();
        assert!(PublicKey::from_bytes(honest).is_ok());
        // The same point with the sign of x flipped is another point; with x = 0 it is the same
        // point, which only small-order points have. A large-order non-canonical encoding: the
        // honest key's y plus p, when that still fits in 255 bits, is the same point.
        let mut y_plus_p = honest;
        let mut carry = 0u16;
        let p_bytes: [u8; 32] = {
            let mut p = [0xff; 32];
            p[0] = 0xed;
            p[31] = 0x7f;
            p
        };
        let sign = honest[31] & 0x80;
        y_plus_p[31] &= 0x7f;
        for (byte, p) in y_plus_p.iter_mut().zip(p_bytes) {
            let sum = u16::from(*byte) + u16::from(p) + carry;
            *byte = sum.to_le_bytes()[0];
            carry = sum >> 8;
        }
        if carry == 0 && y_plus_p[31] & 0x80 == 0 {
            y_plus_p[31] |= sign;
            assert_eq!(
                PublicKey::from_bytes(y_plus_p).err(),
                Some(KeyError::NonCanonical)
            );
        }
    }

    /// The ZIP-215 small-order vectors: with `A` and `R` small order and `s = 0`, every
    /// combination is valid under the cofactored rule, singly and in a batch. (They bypass
    /// [`PublicKey::from_bytes`], which refuses such keys for membership.)
    #[test]
    fn zip215_small_order_vectors_are_valid_singly_and_in_batch() {
        let encodings = small_order_encodings();
        assert!(encodings.len() >= 10);
        let keys: Vec<PublicKey> = encodings
            .iter()
            .map(|bytes| {
                let point = CompressedEdwardsY(*bytes).decompress().unwrap();
                PublicKey {
                    bytes: *bytes,
                    minus_point: -point,
                    point,
                }
            })
            .collect();
        let signatures: Vec<Signature> = encodings
            .iter()
            .map(|r| {
                let mut bytes = [0u8; 64];
                bytes[..32].copy_from_slice(r);
                Signature::from_bytes(&bytes)
            })
            .collect();
        let mut items = Vec::new();
        for key in &keys {
            for signature in &signatures {
                let item = Item {
                    key,
                    message: b"Zcash",
                    signature,
                };
                assert!(verify_one(&item));
                items.push(item);
            }
        }
        assert!(verify_each(&items).iter().all(|ok| *ok));
    }

    #[test]
    fn bad_signatures_anywhere_in_a_large_batch_are_found_and_only_they() {
        let keys: Vec<SigningKey> = (1..=3u8)
            .map(|i| SigningKey::from_bytes(&[i; 32]))
            .collect();
        let public: Vec<PublicKey> = keys
            .iter()
            .map(|key| PublicKey::from_bytes(key.verifying_key().to_bytes()).unwrap())
            .collect();
        let messages: Vec<Vec<u8>> = (0..100u32).map(|i| i.to_le_bytes().to_vec()).collect();
        let bad = [0usize, 37, 38, 99];
        let signatures: Vec<Signature> = messages
            .iter()
            .enumerate()
            .map(|(i, message)| {
                let signer = &keys[i % 3];
                // A bad one signs other bytes.
                if bad.contains(&i) {
                    signer.sign(b"something else")
                } else {
                    signer.sign(message)
                }
            })
            .collect();
        let items: Vec<Item<'_>> = messages
            .iter()
            .zip(&signatures)
            .enumerate()
            .map(|(i, (message, signature))| Item {
                key: &public[i % 3],
                message,
                signature,
            })
            .collect();
        let verdicts = verify_each(&items);
        for (i, verdict) in verdicts.iter().enumerate() {
            assert_eq!(*verdict, !bad.contains(&i), "item {i}");
            assert_eq!(*verdict, verify_one(&items[i]), "item {i} alone");
        }
    }

    #[test]
    fn non_canonical_s_is_refused() {
        // ℓ, little-endian.
        const ELL: [u8; 32] = [
            0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9,
            0xde, 0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
        ];
        let key = SigningKey::from_bytes(&[3; 32]);
        let public = PublicKey::from_bytes(key.verifying_key().to_bytes()).unwrap();
        let signature = key.sign(b"m");
        // s + ℓ: the same scalar mod ℓ, but not its canonical encoding.
        let mut bytes = signature.to_bytes();
        let mut carry = 0u16;
        for (i, ell) in ELL.iter().enumerate() {
            let sum = u16::from(bytes[32 + i]) + u16::from(*ell) + carry;
            bytes[32 + i] = sum.to_le_bytes()[0];
            carry = sum >> 8;
        }
        assert_eq!(carry, 0);
        let forged = Signature::from_bytes(&bytes);
        let good = Item {
            key: &public,
            message: b"m",
            signature: &signature,
        };
        let bad = Item {
            signature: &forged,
            ..good
        };
        assert!(verify_one(&good));
        assert!(!verify_one(&bad));
        assert_eq!(verify_each(&[good, bad, good]), vec![true, false, true]);
    }
}
