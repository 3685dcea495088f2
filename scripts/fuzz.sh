#!/usr/bin/env bash
# Runs the cargo-fuzz targets in fuzz/ one after another, each for SECONDS (default 600), and
# prints what each did. A crash leaves its input in fuzz/artifacts/TARGET/; copy it into
# fuzz/regressions/TARGET/ with the fix, and `cargo test -p fuzzing` replays it from then on.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]        # default: every target in fuzz/Cargo.toml
#
# Needs cargo-fuzz (`cargo install cargo-fuzz`). libFuzzer needs the compiler's sanitizer
# flags, which stable Rust accepts only with RUSTC_BOOTSTRAP=1; this script sets it for the
# fuzz build alone (the workspace itself never needs it). The corpus grows in fuzz/corpus/,
# starting from the seeds in fuzz/regressions/.
set -euo pipefail

seconds=${1:-600}
shift || true
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
command -v cargo-fuzz >/dev/null || { echo "needs cargo-fuzz: cargo install cargo-fuzz" >&2; exit 1; }
if [ $# -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(sed -n 's/^name = "\(.*\)"$/\1/p' fuzz/Cargo.toml | grep -v blocktorrent-fuzz)
fi

export RUSTC_BOOTSTRAP=1
cargo fuzz build -O
status=0
for target in "${targets[@]}"; do
    mkdir -p "fuzz/corpus/$target" "fuzz/artifacts/$target"
    log="fuzz/artifacts/$target/last-run.log"
    echo "fuzzing $target for $seconds s"
    if cargo fuzz run -O "$target" "fuzz/corpus/$target" "fuzz/regressions/$target" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
        >"$log" 2>&1; then
        outcome="no crash"
    else
        outcome="CRASH: see $log and fuzz/artifacts/$target/"
        status=1
    fi
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    echo "  $target: ${runs:-?} runs in $seconds s, corpus $(ls "fuzz/corpus/$target" | wc -l) inputs, $outcome"
done
exit $status
