//! Feldman verifiable secret sharing over ristretto255.
//!
//! The owner picks a random polynomial `f` of degree `t - 1` with `f(0)` = the file secret, gives
//! member `j` (1-based) the share `f(j)`, and publishes commitments `C_k = a_k·G` to the
//! coefficients. Anyone can check a share against them: `f(j)·G == Σ_k j^k·C_k`. Any `t` shares
//! rebuild `f(0)` by Lagrange interpolation; fewer reveal nothing about it.
//!
//! Encodings (pinned by the known-answer tests): a share is its index (u32 big-endian) followed by
//! the canonical 32-byte scalar; commitments are the compressed 32-byte points in order.

use std::collections::BTreeSet;
use std::sync::OnceLock;

use curve25519_dalek::ristretto::CompressedRistretto;
use curve25519_dalek::traits::{IsIdentity, VartimeMultiscalarMul};
use curve25519_dalek::{RistrettoPoint, Scalar, constants::RISTRETTO_BASEPOINT_POINT};
use rand_core::CryptoRng;
use sha3::{Digest, Sha3_256};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::error::ShareError;
use crate::secret::FileSecret;

/// Largest number of shares (and so of holders) one secret can be split into.
pub const MAX_SHARE_COUNT: u32 = 1000;
/// Size of an encoded [`Share`].
pub const SHARE_SIZE_BYTES: usize = 4 + 32;

const BATCH_LABEL: &[u8] = b"blocktorrent/v1/vss-batch-weights";

/// One holder's share: the polynomial evaluated at the holder's index. Zeroized on drop, never
/// printed, and deliberately not serde: it leaves a node only sealed (see [`crate::seal_share`]).
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct Share {
    index: u32,
    value: Scalar,
}

impl Share {
    /// The 1-based index: the holder's position in the file's holder list.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// Encodes the share (index ‖ scalar) into a buffer that zeroizes itself.
    pub fn to_bytes(&self) -> Zeroizing<[u8; SHARE_SIZE_BYTES]> {
        let mut out = Zeroizing::new([0u8; SHARE_SIZE_BYTES]);
        out[..4].copy_from_slice(&self.index.to_be_bytes());
        out[4..].copy_from_slice(self.value.as_bytes());
        out
    }

    /// Decodes a share; rejects wrong lengths, indices out of range and non-canonical scalars.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ShareError> {
        let malformed = |reason| ShareError::Malformed {
            what: "share",
            reason,
        };
        let (index_bytes, value_bytes) = bytes
            .split_first_chunk::<4>()
            .ok_or(malformed("too short"))?;
        let value_bytes: [u8; 32] = value_bytes
            .try_into()
            .map_err(|_| malformed("wrong length"))?;
        let index = u32::from_be_bytes(*index_bytes);
        check_index(index)?;
        let value = Option::from(Scalar::from_canonical_bytes(value_bytes))
            .ok_or(malformed("non-canonical scalar"))?;
        Ok(Self { index, value })
    }
}

impl core::fmt::Debug for Share {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Share {{ index: {}, value: <redacted> }}", self.index)
    }
}

/// Public commitments to the sharing polynomial's coefficients; `threshold()` of them. Stored on
/// the ledger in the master table.
///
/// Decoding checks the count only; the points are decompressed, and checked, the first time a
/// share is verified against them. The ledger stores commitments but never verifies a share with
/// them, and decompressing costs ~9 µs a point: at the default threshold of a 1,000-member
/// consortium (500) that was 4.5 ms of every replica's time for each master table it applied.
/// Bytes that are not points make every share fail verification, as commitments to another
/// polynomial would: an owner could publish either, so checking points on the ledger guards
/// nothing.
#[derive(Clone)]
pub struct Commitments {
    encoded: Vec<[u8; 32]>,
    points: OnceLock<Option<Vec<RistrettoPoint>>>,
}

impl PartialEq for Commitments {
    fn eq(&self, other: &Self) -> bool {
        self.encoded == other.encoded
    }
}

impl Eq for Commitments {}

impl core::fmt::Debug for Commitments {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Commitments {{ threshold: {} }}", self.encoded.len())
    }
}

impl Commitments {
    fn from_points(points: Vec<RistrettoPoint>) -> Self {
        let encoded = points.iter().map(|p| p.compress().to_bytes()).collect();
        Self {
            encoded,
            points: OnceLock::from(Some(points)),
        }
    }

    /// `t`: how many shares rebuild the secret.
    pub fn threshold(&self) -> u32 {
        // Bounded by MAX_SHARE_COUNT at construction.
        self.encoded.len() as u32
    }

    /// The compressed points, in coefficient order.
    pub fn encoded(&self) -> &[[u8; 32]] {
        &self.encoded
    }

    /// Concatenated compressed points.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.encoded.concat()
    }

    /// Parses concatenated compressed points; rejects empty or overlong lists. Whether each is a
    /// ristretto255 point is checked on first use ([`Self::points`]).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ShareError> {
        let (chunks, rest) = bytes.as_chunks::<32>();
        if !rest.is_empty() {
            return Err(ShareError::Malformed {
                what: "commitments",
                reason: "length is not a multiple of 32",
            });
        }
        Self::from_encoded(chunks.to_vec())
    }

    fn from_encoded(encoded: Vec<[u8; 32]>) -> Result<Self, ShareError> {
        if encoded.is_empty() || encoded.len() > MAX_SHARE_COUNT as usize {
            return Err(ShareError::Malformed {
                what: "commitments",
                reason: "count outside 1..=MAX_SHARE_COUNT",
            });
        }
        Ok(Self {
            encoded,
            points: OnceLock::new(),
        })
    }

    /// The decompressed points, decoded once; an error if any encoding is not a ristretto255
    /// point.
    pub fn points(&self) -> Result<&[RistrettoPoint], ShareError> {
        self.points
            .get_or_init(|| {
                self.encoded
                    .iter()
                    .map(|bytes| CompressedRistretto(*bytes).decompress())
                    .collect()
            })
            .as_deref()
            .ok_or(ShareError::Malformed {
                what: "commitments",
                reason: "not a ristretto255 point",
            })
    }

    /// Whether `secret` is the one committed to (`secret·G == C_0`); never for commitments that
    /// are not points.
    pub fn check_secret(&self, secret: &FileSecret) -> bool {
        self.points()
            .is_ok_and(|points| RistrettoPoint::mul_base(secret.scalar()) == points[0])
    }
}

impl serde::Serialize for Commitments {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.encoded.serialize(serializer)
    }
}

impl<'de> serde::Deserialize<'de> for Commitments {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let encoded = Vec::<[u8; 32]>::deserialize(deserializer)?;
        Self::from_encoded(encoded).map_err(serde::de::Error::custom)
    }
}

/// Splits `secret` into `share_count` shares of which any `threshold` rebuild it.
pub fn split<R: CryptoRng + ?Sized>(
    secret: &FileSecret,
    threshold: u32,
    share_count: u32,
    rng: &mut R,
) -> Result<(Vec<Share>, Commitments), ShareError> {
    if !(1..=share_count).contains(&threshold) || share_count > MAX_SHARE_COUNT {
        return Err(ShareError::Parameters {
            threshold,
            share_count,
            max: MAX_SHARE_COUNT,
        });
    }
    let mut coefficients = Zeroizing::new(Vec::with_capacity(threshold as usize));
    coefficients.push(*secret.scalar());
    coefficients.extend((1..threshold).map(|_| Scalar::random(rng)));
    let points = coefficients.iter().map(RistrettoPoint::mul_base).collect();
    let shares = (1..=share_count)
        .map(|index| Share {
            index,
            value: evaluate(&coefficients, Scalar::from(index)),
        })
        .collect();
    Ok((shares, Commitments::from_points(points)))
}

/// Horner evaluation of the polynomial with `coefficients` (lowest degree first) at `x`.
fn evaluate(coefficients: &[Scalar], x: Scalar) -> Scalar {
    coefficients
        .iter()
        .rev()
        .fold(Scalar::ZERO, |acc, coefficient| acc * x + coefficient)
}

/// Checks one share against the commitments.
pub fn verify(share: &Share, commitments: &Commitments) -> Result<(), ShareError> {
    check_index(share.index)?;
    let committed = commitments.points()?;
    let x = Scalar::from(share.index);
    let mut power = -Scalar::ONE;
    let mut scalars = Vec::with_capacity(committed.len() + 1);
    scalars.push(share.value);
    for _ in committed {
        scalars.push(power);
        power *= x;
    }
    let points = std::iter::once(&RISTRETTO_BASEPOINT_POINT).chain(committed);
    if RistrettoPoint::vartime_multiscalar_mul(&scalars, points).is_identity() {
        Ok(())
    } else {
        Err(ShareError::InvalidShares {
            indices: vec![share.index],
        })
    }
}

/// Checks many shares at once. One multi-scalar multiplication checks a random linear combination
/// of all of them (weights are derived by hashing the shares and commitments, so no RNG is needed
/// and a forger cannot predict them); only if that fails is each share checked alone, so the
/// error can name every bad one.
pub fn verify_all(shares: &[Share], commitments: &Commitments) -> Result<(), ShareError> {
    for share in shares {
        check_index(share.index)?;
    }
    let committed = commitments.points()?;
    if shares.is_empty() || batch_holds(shares, commitments, committed) {
        return Ok(());
    }
    let indices: Vec<u32> = shares
        .iter()
        .filter(|share| verify(share, commitments).is_err())
        .map(Share::index)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    // The batch failed, so at least one share alone must fail too (the batch equation is the sum
    // of the single ones); an empty list here would mean the arithmetic is wrong.
    assert!(
        !indices.is_empty(),
        "batch check failed but every share verified"
    );
    Err(ShareError::InvalidShares { indices })
}

fn batch_holds(shares: &[Share], commitments: &Commitments, committed: &[RistrettoPoint]) -> bool {
    let weights = batch_weights(shares, commitments);
    let threshold = committed.len();
    let mut share_sum = Scalar::ZERO;
    let mut coefficient_sums = vec![Scalar::ZERO; threshold];
    for (share, weight) in shares.iter().zip(&weights) {
        share_sum += weight * share.value;
        let x = Scalar::from(share.index);
        let mut term = *weight;
        for sum in &mut coefficient_sums {
            *sum += term;
            term *= x;
        }
    }
    let scalars = std::iter::once(share_sum).chain(coefficient_sums.iter().map(|s| -s));
    let points = std::iter::once(&RISTRETTO_BASEPOINT_POINT).chain(committed);
    RistrettoPoint::vartime_multiscalar_mul(scalars, points).is_identity()
}

/// 128-bit weights from SHA3 over the commitments and every share (Fiat–Shamir).
fn batch_weights(shares: &[Share], commitments: &Commitments) -> Vec<Scalar> {
    let mut transcript = Sha3_256::new().chain_update(BATCH_LABEL);
    for point in &commitments.encoded {
        transcript.update(point);
    }
    for share in shares {
        transcript.update(share.to_bytes().as_slice());
    }
    batch_weights_from_seed(&transcript.finalize(), shares.len())
}

/// `count` random-looking 128-bit weights for a batch equation, expanded from `seed` (a hash of
/// everything the batch checks, so nobody can know the weights before fixing what is checked):
/// weight `i` is the first 16 bytes of SHA3-256(`seed` ‖ `i` as u64 BE). The ledger's signature
/// batches use the same expansion.
pub fn batch_weights_from_seed(seed: &[u8], count: usize) -> Vec<Scalar> {
    (0..count as u64)
        .map(|position| {
            let digest = Sha3_256::new()
                .chain_update(seed)
                .chain_update(position.to_be_bytes())
                .finalize();
            let mut wide = [0u8; 32];
            wide[..16].copy_from_slice(&digest[..16]);
            Scalar::from_bytes_mod_order(wide)
        })
        .collect()
}

/// Rebuilds the secret from at least `threshold` shares: verifies every share (naming any bad
/// ones), interpolates from the first `threshold`, and checks the result against `C_0`.
pub fn combine(shares: &[Share], commitments: &Commitments) -> Result<FileSecret, ShareError> {
    let need = commitments.threshold();
    if shares.len() < need as usize {
        return Err(ShareError::NotEnoughShares {
            have: shares.len(),
            need,
        });
    }
    check_distinct(shares)?;
    verify_all(shares, commitments)?;
    let secret = interpolate(&shares[..need as usize])?;
    if !commitments.check_secret(&secret) {
        return Err(ShareError::SecretMismatch);
    }
    Ok(secret)
}

/// Lagrange interpolation at zero, with no commitment check: what `combine` uses, exposed so tests
/// can show that fewer than `t` shares give a secret the commitments reject.
pub fn interpolate(shares: &[Share]) -> Result<FileSecret, ShareError> {
    if shares.is_empty() {
        return Err(ShareError::NotEnoughShares { have: 0, need: 1 });
    }
    check_distinct(shares)?;
    for share in shares {
        check_index(share.index)?;
    }
    let xs: Vec<Scalar> = shares.iter().map(|s| Scalar::from(s.index)).collect();
    let numerator = xs.iter().product::<Scalar>();
    // λ_i = Π_{j≠i} x_j / (x_j − x_i) = numerator / (x_i · Π_{j≠i} (x_j − x_i)).
    let mut denominators: Vec<Scalar> = xs
        .iter()
        .enumerate()
        .map(|(i, x_i)| {
            xs.iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .fold(*x_i, |acc, (_, x_j)| acc * (x_j - x_i))
        })
        .collect();
    Scalar::invert_batch_alloc(&mut denominators);
    let mut secret = Scalar::ZERO;
    for (share, inverse) in shares.iter().zip(&denominators) {
        secret += numerator * inverse * share.value;
    }
    Ok(FileSecret::from_scalar(secret))
}

fn check_index(index: u32) -> Result<(), ShareError> {
    if !(1..=MAX_SHARE_COUNT).contains(&index) {
        return Err(ShareError::IndexOutOfRange {
            index,
            max: MAX_SHARE_COUNT,
        });
    }
    Ok(())
}

fn check_distinct(shares: &[Share]) -> Result<(), ShareError> {
    let mut seen = BTreeSet::new();
    for share in shares {
        if !seen.insert(share.index) {
            return Err(ShareError::DuplicateIndex { index: share.index });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{SeedableRng, rngs::StdRng};

    #[test]
    fn polynomial_evaluation() {
        // f(x) = 3 + 2x + x^2 → f(4) = 27.
        let coefficients = [Scalar::from(3u32), Scalar::from(2u32), Scalar::ONE];
        assert_eq!(
            evaluate(&coefficients, Scalar::from(4u32)),
            Scalar::from(27u32)
        );
    }

    #[test]
    fn parameters_are_validated() {
        let secret = FileSecret::random(&mut StdRng::seed_from_u64(0));
        let mut rng = StdRng::seed_from_u64(1);
        for (t, n) in [(0, 5), (6, 5), (1, MAX_SHARE_COUNT + 1)] {
            assert!(matches!(
                split(&secret, t, n, &mut rng),
                Err(ShareError::Parameters { .. })
            ));
        }
        assert!(split(&secret, 1, 1, &mut rng).is_ok());
    }

    #[test]
    fn duplicates_and_bad_indices_are_rejected() {
        let mut rng = StdRng::seed_from_u64(2);
        let secret = FileSecret::random(&mut rng);
        let (shares, commitments) = split(&secret, 2, 3, &mut rng).unwrap();
        let doubled = [shares[0].clone(), shares[0].clone()];
        assert_eq!(
            combine(&doubled, &commitments),
            Err(ShareError::DuplicateIndex { index: 1 })
        );
        let mut bytes = *shares[1].to_bytes();
        bytes[..4].copy_from_slice(&0u32.to_be_bytes());
        assert!(matches!(
            Share::from_bytes(&bytes),
            Err(ShareError::IndexOutOfRange { index: 0, .. })
        ));
    }

    #[test]
    fn debug_hides_value() {
        let mut rng = StdRng::seed_from_u64(3);
        let (shares, _) = split(&FileSecret::random(&mut rng), 1, 1, &mut rng).unwrap();
        assert_eq!(
            format!("{:?}", shares[0]),
            "Share { index: 1, value: <redacted> }"
        );
    }
}
