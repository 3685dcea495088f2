//! Verifiable secret sharing cost for the consortium sizes the design targets: split (polynomial,
//! commitments, shares), verify-all (batched), and combine (verify + interpolate + check); and a
//! holder's check of one deposited share (open the HPKE seal, decode the commitments, verify),
//! the per-share cost that bounds the ledger's throughput with deposits.

#![allow(missing_docs)]

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use keyshare::{
    Commitments, FileId, FileSecret, SealContext, SealPurpose, SealingSecretKey, combine,
    open_share, seal_share, split, verify, verify_all,
};
use rand::{SeedableRng, rngs::StdRng};

const SIZES: [(u32, u32); 3] = [(3, 5), (67, 100), (667, 1000)];

fn shares(c: &mut Criterion) {
    let mut rng = StdRng::seed_from_u64(1);
    let secret = FileSecret::random(&mut rng);
    let mut group = c.benchmark_group("vss");
    group.sample_size(20);
    for (t, n) in SIZES {
        let label = format!("{t}-of-{n}");
        group.bench_function(BenchmarkId::new("split", &label), |b| {
            b.iter(|| split(&secret, t, n, &mut rng).expect("valid parameters"))
        });
        let (all, commitments) = split(&secret, t, n, &mut rng).expect("valid parameters");
        group.bench_function(BenchmarkId::new("verify_all", &label), |b| {
            b.iter(|| verify_all(&all, &commitments).expect("shares verify"))
        });
        let subset = &all[..t as usize];
        group.bench_function(BenchmarkId::new("combine", &label), |b| {
            b.iter(|| combine(subset, &commitments).expect("shares combine"))
        });
    }
    group.finish();
}

/// One holder checking the share deposited to it, step by step, for the 2-of-3 deal of the
/// ledger benchmark's load. Commitments are decoded from their chain bytes each time, as a
/// holder reading a block does.
fn holder_check(c: &mut Criterion) {
    let mut rng = StdRng::seed_from_u64(2);
    let secret = FileSecret::random(&mut rng);
    let (shares, commitments) = split(&secret, 2, 3, &mut rng).expect("valid parameters");
    let holder = SealingSecretKey::generate(&mut rng);
    let context = SealContext {
        file_id: FileId::from_bytes([7; 32]),
        holder: [9; 32],
        share_index: shares[0].index(),
        purpose: SealPurpose::Deposit,
    };
    let sealed = seal_share(&shares[0], &holder.public_key(), &context, &mut rng).expect("seals");
    let chain_bytes = commitments.to_bytes();
    let mut group = c.benchmark_group("holder_check");
    group.bench_function("open_share", |b| {
        b.iter(|| open_share(&sealed, &holder, &context).expect("opens"))
    });
    group.bench_function("decode_and_verify", |b| {
        b.iter(|| {
            let commitments = Commitments::from_bytes(&chain_bytes).expect("decodes");
            verify(&shares[0], &commitments).expect("verifies")
        })
    });
    group.finish();
}

criterion_group!(benches, shares, holder_check);
criterion_main!(benches);
