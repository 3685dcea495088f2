//! Feldman VSS: any `t` shares rebuild the secret, `t - 1` do not, and a tampered share is caught
//! and named by `verify`, `verify_all` and `combine`.

#![allow(clippy::unwrap_used)] // Test helpers panic on failure by design.

use keyshare::{
    Commitments, FileSecret, MAX_SHARE_COUNT, Share, ShareError, combine, interpolate, split,
    verify, verify_all,
};
use proptest::prelude::*;
use rand::{SeedableRng, rngs::StdRng};

/// (seed, t, n) with 1 <= t <= n <= 12.
fn parameters() -> impl Strategy<Value = (u64, u32, u32)> {
    (any::<u64>(), 1u32..=12).prop_flat_map(|(seed, n)| (Just(seed), 1..=n, Just(n)))
}

fn setup(seed: u64, t: u32, n: u32) -> (FileSecret, Vec<Share>, Commitments) {
    let mut rng = StdRng::seed_from_u64(seed);
    let secret = FileSecret::random(&mut rng);
    let (shares, commitments) = split(&secret, t, n, &mut rng).unwrap();
    (secret, shares, commitments)
}

/// Flips the lowest bit of the share's scalar; keeps the encoding canonical.
fn tamper(share: &Share) -> Share {
    let mut bytes = *share.to_bytes();
    bytes[4] ^= 1;
    Share::from_bytes(&bytes).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn any_t_subset_combines(
        (seed, t, n) in parameters(),
        pick in any::<prop::sample::Index>(),
        order_seed in any::<u64>(),
    ) {
        let (secret, shares, commitments) = setup(seed, t, n);
        prop_assert_eq!(shares.len() as u32, n);
        prop_assert_eq!(commitments.threshold(), t);
        for share in &shares {
            prop_assert_eq!(verify(share, &commitments), Ok(()));
        }
        prop_assert_eq!(verify_all(&shares, &commitments), Ok(()));

        // A subset of size t, chosen and ordered from the seeds.
        let mut indices: Vec<usize> = (0..n as usize).collect();
        let mut order = StdRng::seed_from_u64(order_seed);
        for i in (1..indices.len()).rev() {
            let j = rand::RngExt::random_range(&mut order, 0..=i);
            indices.swap(i, j);
        }
        let start = pick.index(n as usize - t as usize + 1);
        let subset: Vec<Share> =
            indices[start..start + t as usize].iter().map(|&i| shares[i].clone()).collect();
        prop_assert_eq!(combine(&subset, &commitments), Ok(secret.clone()));
        prop_assert_eq!(combine(&shares, &commitments), Ok(secret.clone()));

        // One fewer is not enough: combine refuses, and interpolating anyway gives a secret the
        // zeroth commitment rejects.
        let fewer = &subset[..t as usize - 1];
        prop_assert_eq!(
            combine(fewer, &commitments),
            Err(ShareError::NotEnoughShares { have: t as usize - 1, need: t })
        );
        if t >= 2 {
            let guess = interpolate(fewer).unwrap();
            prop_assert!(!commitments.check_secret(&guess));
            prop_assert_ne!(guess, secret);
        }
    }

    #[test]
    fn tampered_shares_are_named(
        (seed, t, n) in parameters(),
        bad_mask in any::<u16>(),
    ) {
        let (_, shares, commitments) = setup(seed, t, n);
        let bad: Vec<u32> = (1..=n).filter(|i| bad_mask & (1 << (i - 1)) != 0).collect();
        let mixed: Vec<Share> = shares
            .iter()
            .map(|s| if bad.contains(&s.index()) { tamper(s) } else { s.clone() })
            .collect();
        for share in &mixed {
            let expected = if bad.contains(&share.index()) {
                Err(ShareError::InvalidShares { indices: vec![share.index()] })
            } else {
                Ok(())
            };
            prop_assert_eq!(verify(share, &commitments), expected);
        }
        if bad.is_empty() {
            prop_assert_eq!(verify_all(&mixed, &commitments), Ok(()));
        } else {
            let expected = Err(ShareError::InvalidShares { indices: bad.clone() });
            prop_assert_eq!(verify_all(&mixed, &commitments), expected.clone());
            prop_assert_eq!(combine(&mixed, &commitments).map(|_| ()), expected);
        }
    }

    #[test]
    fn encodings_round_trip((seed, t, n) in parameters()) {
        let (_, shares, commitments) = setup(seed, t, n);
        for share in &shares {
            prop_assert_eq!(&Share::from_bytes(share.to_bytes().as_slice()).unwrap(), share);
        }
        let bytes = commitments.to_bytes();
        prop_assert_eq!(bytes.len(), 32 * t as usize);
        prop_assert_eq!(&Commitments::from_bytes(&bytes).unwrap(), &commitments);
        let wire = postcard::to_allocvec(&commitments).unwrap();
        prop_assert_eq!(&postcard::from_bytes::<Commitments>(&wire).unwrap(), &commitments);
    }
}

#[test]
fn shares_of_one_secret_do_not_verify_against_another() {
    let (_, shares, _) = setup(1, 3, 5);
    let (_, _, other) = setup(2, 3, 5);
    assert_eq!(
        verify_all(&shares, &other),
        Err(ShareError::InvalidShares {
            indices: vec![1, 2, 3, 4, 5]
        })
    );
}

#[test]
fn malformed_encodings_are_rejected() {
    assert!(matches!(
        Share::from_bytes(&[0; 10]),
        Err(ShareError::Malformed { what: "share", .. })
    ));
    let mut non_canonical = [0xffu8; 36];
    non_canonical[..4].copy_from_slice(&1u32.to_be_bytes());
    assert!(matches!(
        Share::from_bytes(&non_canonical),
        Err(ShareError::Malformed { what: "share", .. })
    ));
    let mut index_too_big = [0u8; 36];
    index_too_big[..4].copy_from_slice(&(MAX_SHARE_COUNT + 1).to_be_bytes());
    assert!(matches!(
        Share::from_bytes(&index_too_big),
        Err(ShareError::IndexOutOfRange { .. })
    ));
    for bytes in [vec![], vec![0; 31]] {
        assert!(matches!(
            Commitments::from_bytes(&bytes),
            Err(ShareError::Malformed {
                what: "commitments",
                ..
            })
        ));
    }
    // Bytes that are not a point decode (the ledger stores them as given) and fail every check.
    let (secret, shares, _) = setup(3, 1, 2);
    let not_points = Commitments::from_bytes(&[0xff; 32]).unwrap();
    let malformed = Err(ShareError::Malformed {
        what: "commitments",
        reason: "not a ristretto255 point",
    });
    assert_eq!(verify(&shares[0], &not_points), malformed);
    assert_eq!(verify_all(&shares, &not_points), malformed);
    assert_eq!(combine(&shares, &not_points).map(|_| ()), malformed);
    assert!(!not_points.check_secret(&secret));
    let too_many = vec![[0u8; 32]; MAX_SHARE_COUNT as usize + 1];
    let wire = postcard::to_allocvec(&too_many).unwrap();
    assert!(postcard::from_bytes::<Commitments>(&wire).is_err());
}

#[test]
fn largest_sharing_round_trips() {
    let (secret, shares, commitments) = setup(7, 667, MAX_SHARE_COUNT);
    verify_all(&shares, &commitments).unwrap();
    assert_eq!(combine(&shares[333..], &commitments), Ok(secret));
}
