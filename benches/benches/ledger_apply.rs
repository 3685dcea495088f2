//! Contract apply throughput: signature batch verification and the contracts, per block of
//! 10,000 access requests (the default block size), on one core.

#![allow(missing_docs)]

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ed25519_dalek::SigningKey;
use keyshare::FileId;
use ledger::{Body, State, Transaction};
use rand::{SeedableRng, rngs::StdRng};

const BLOCK_TXS: usize = 10_000;

fn apply(c: &mut Criterion) {
    let mut rng = StdRng::seed_from_u64(3);
    let keys: Vec<SigningKey> = (0..4).map(|_| SigningKey::generate(&mut rng)).collect();
    let genesis = benches::genesis(&keys, &mut rng);
    // Complaints about an unknown file: every check runs, the result is a rejection, and the
    // state does not grow between iterations.
    let txs: Vec<Transaction> = (0..BLOCK_TXS)
        .map(|i| {
            let body = Body::ShareComplaint {
                file: FileId::from_bytes([7; 32]),
                reason: format!("complaint {i}"),
            };
            Transaction::sign(&keys[i % 4], "bench", 1 + (i / 4) as u64, body)
        })
        .collect();
    let state = State::new(genesis);
    let refs: Vec<&Transaction> = txs.iter().collect();
    let verdicts = ledger::verify_signatures(&state, &refs);

    let mut group = c.benchmark_group("ledger_block_10k");
    group
        .sample_size(10)
        .throughput(Throughput::Elements(BLOCK_TXS as u64));
    group.bench_function("verify_signatures", |b| {
        b.iter(|| ledger::verify_signatures(&state, &refs))
    });
    group.bench_function("apply_contracts", |b| {
        b.iter(|| state.clone().apply(0, txs.clone(), &verdicts))
    });
    group.finish();
}

criterion_group!(benches, apply);
criterion_main!(benches);
