//! HPKE sealing: a sealed share opens for its recipient under its context and for nobody and
//! nothing else; `reseal_share` hands a deposited share on to a requester.

#![allow(clippy::unwrap_used)] // Test helpers panic on failure by design.

use keyshare::{
    FileId, FileSecret, SealContext, SealError, SealPurpose, SealedShare, SealingSecretKey, Share,
    open_share, reseal_share, seal_share, split, verify,
};
use proptest::prelude::*;
use rand::{SeedableRng, rngs::StdRng};

struct Fixture {
    rng: StdRng,
    holder_key: SealingSecretKey,
    auditor_key: SealingSecretKey,
    shares: Vec<Share>,
    commitments: keyshare::Commitments,
}

fn fixture(seed: u64) -> Fixture {
    let mut rng = StdRng::seed_from_u64(seed);
    let holder_key = SealingSecretKey::generate(&mut rng);
    let auditor_key = SealingSecretKey::generate(&mut rng);
    let secret = FileSecret::random(&mut rng);
    let (shares, commitments) = split(&secret, 2, 3, &mut rng).unwrap();
    Fixture {
        rng,
        holder_key,
        auditor_key,
        shares,
        commitments,
    }
}

fn deposit(index: u32) -> SealContext {
    SealContext {
        file_id: FileId::from_bytes([1; 32]),
        holder: [2; 32],
        share_index: index,
        purpose: SealPurpose::Deposit,
    }
}

fn release(index: u32) -> SealContext {
    SealContext {
        purpose: SealPurpose::Release {
            request_id: [3; 32],
        },
        ..deposit(index)
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn seal_open_round_trip(seed in any::<u64>(), which in 0usize..3) {
        let mut f = fixture(seed);
        let share = &f.shares[which];
        let context = deposit(share.index());
        let sealed =
            seal_share(share, &f.holder_key.public_key(), &context, &mut f.rng).unwrap();
        let opened = open_share(&sealed, &f.holder_key, &context).unwrap();
        prop_assert_eq!(&opened, share);
        prop_assert_eq!(verify(&opened, &f.commitments), Ok(()));
        prop_assert_eq!(open_share(&sealed, &f.auditor_key, &context), Err(SealError::Open));
    }
}

#[test]
fn any_context_change_refuses_to_open() {
    let mut f = fixture(11);
    let share = &f.shares[0];
    let context = deposit(1);
    let sealed = seal_share(share, &f.holder_key.public_key(), &context, &mut f.rng).unwrap();
    let wrong_contexts = [
        SealContext {
            file_id: FileId::from_bytes([9; 32]),
            ..context
        },
        SealContext {
            holder: [9; 32],
            ..context
        },
        SealContext {
            share_index: 2,
            ..context
        },
        release(1),
    ];
    for wrong in wrong_contexts {
        assert_eq!(
            open_share(&sealed, &f.holder_key, &wrong),
            Err(SealError::Open),
            "{wrong:?}"
        );
    }
}

#[test]
fn tampering_refuses_to_open() {
    let mut f = fixture(12);
    let context = deposit(1);
    let sealed = seal_share(
        &f.shares[0],
        &f.holder_key.public_key(),
        &context,
        &mut f.rng,
    )
    .unwrap();
    for position in 0..sealed.ciphertext.len() {
        let mut bad = sealed.clone();
        bad.ciphertext[position] ^= 0x80;
        assert_eq!(
            open_share(&bad, &f.holder_key, &context),
            Err(SealError::Open)
        );
    }
    let mut bad = sealed.clone();
    bad.encapped_key[0] ^= 1;
    assert_eq!(
        open_share(&bad, &f.holder_key, &context),
        Err(SealError::Open)
    );
    let truncated = SealedShare {
        ciphertext: sealed.ciphertext[..10].to_vec(),
        ..sealed
    };
    assert_eq!(
        open_share(&truncated, &f.holder_key, &context),
        Err(SealError::Open)
    );
}

#[test]
fn context_index_must_match_share() {
    let mut f = fixture(13);
    assert_eq!(
        seal_share(
            &f.shares[0],
            &f.holder_key.public_key(),
            &deposit(2),
            &mut f.rng
        ),
        Err(SealError::IndexMismatch {
            expected: 2,
            actual: 1
        })
    );
}

#[test]
fn reseal_hands_the_share_to_the_requester_only() {
    let mut f = fixture(14);
    let share = f.shares[1].clone();
    let deposited =
        seal_share(&share, &f.holder_key.public_key(), &deposit(2), &mut f.rng).unwrap();
    let released = reseal_share(
        &deposited,
        &f.holder_key,
        &deposit(2),
        &f.auditor_key.public_key(),
        &release(2),
        &mut f.rng,
    )
    .unwrap();
    assert_eq!(
        open_share(&released, &f.auditor_key, &release(2)),
        Ok(share)
    );
    assert_eq!(
        open_share(&released, &f.auditor_key, &deposit(2)),
        Err(SealError::Open)
    );
    assert_eq!(
        open_share(&released, &f.holder_key, &release(2)),
        Err(SealError::Open)
    );
    // A holder that is not the recipient of the deposit cannot release it.
    assert_eq!(
        reseal_share(
            &deposited,
            &f.auditor_key,
            &deposit(2),
            &f.auditor_key.public_key(),
            &release(2),
            &mut f.rng,
        ),
        Err(SealError::Open)
    );
}

#[test]
fn keys_round_trip_and_never_print_secrets() {
    let key = SealingSecretKey::generate(&mut StdRng::seed_from_u64(15));
    let again = SealingSecretKey::from_bytes(&key.to_bytes());
    assert_eq!(again.public_key(), key.public_key());
    let printed = format!("{key:?}");
    assert!(printed.contains("<redacted>"));
    let secret_hex: String = key.to_bytes().iter().map(|b| format!("{b:02x}")).collect();
    assert!(!printed.contains(&secret_hex));
    assert_eq!(key.public_key().to_string().parse(), Ok(key.public_key()));
}
