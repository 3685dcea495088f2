//! Replays every input kept under `fuzz/regressions/<target>/` — each crash a fuzzer found (the
//! fix beside it) and the well-formed seeds it starts from — through the target's body, so
//! `cargo test` keeps them fixed. Also checks that the committed seeds are the ones
//! [`fuzzing::seeds`] makes today (`BT_WRITE_SEEDS=1` rewrites them).
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

fn regressions() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/regressions")
}

#[test]
fn every_kept_input_runs_clean() {
    let mut ran = 0;
    for (target, body) in fuzzing::TARGETS {
        let dir = regressions().join(target);
        let mut inputs: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|error| panic!("{}: {error}", dir.display()))
            .map(|entry| entry.unwrap().path())
            .filter(|path| path.is_file())
            .collect();
        inputs.sort();
        for input in inputs {
            let bytes = std::fs::read(&input).unwrap();
            let outcome = std::panic::catch_unwind(|| body(&bytes));
            assert!(outcome.is_ok(), "{} panics", input.display());
            ran += 1;
        }
    }
    assert!(ran >= fuzzing::TARGETS.len(), "only {ran} inputs kept");
}

#[test]
fn the_kept_seeds_are_current() {
    let seeds = fuzzing::seeds();
    let mut counts = std::collections::BTreeMap::new();
    for (target, bytes) in seeds {
        let n = counts.entry(target).or_insert(0);
        *n += 1;
        let path = regressions().join(target).join(format!("seed-{n}"));
        if std::env::var_os("BT_WRITE_SEEDS").is_some() {
            std::fs::write(&path, &bytes).unwrap();
        }
        let kept = std::fs::read(&path).unwrap_or_else(|error| {
            panic!("{}: {error} (BT_WRITE_SEEDS=1 writes it)", path.display())
        });
        assert!(
            kept == bytes,
            "{} is stale (BT_WRITE_SEEDS=1 rewrites it)",
            path.display()
        );
    }
    for (target, _) in fuzzing::TARGETS {
        if !matches!(*target, "sealed_share" | "snapshot") {
            assert!(counts.contains_key(target), "no seed for {target}");
        }
    }
}
