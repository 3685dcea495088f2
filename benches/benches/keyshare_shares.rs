//! Verifiable secret sharing cost for the consortium sizes the design targets: split (polynomial,
//! commitments, shares), verify-all (batched), and combine (verify + interpolate + check).

#![allow(missing_docs)]

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use keyshare::{FileSecret, combine, split, verify_all};
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

criterion_group!(benches, shares);
criterion_main!(benches);
