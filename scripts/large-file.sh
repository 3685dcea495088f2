#!/usr/bin/env bash
# Stores and recreates one large file on the README's quick-start cluster (5 members on
# loopback) and reports time and peak memory of every process.
#
#   scripts/large-file.sh [SIZE_MIB]        # default 3072 (3 GiB)
#
# Needs `cargo build --release -p node` first, about 6 × SIZE of free disk under $TMPDIR, and
# GNU time (/usr/bin/time). Prints each step, then one line per process: peak resident memory
# (VmHWM of the node daemons, max RSS of the CLI).
set -euo pipefail

size_mib=${1:-3072}
root=$(cd "$(dirname "$0")/.." && pwd)
bt="$root/target/release/blocktorrent"
[ -x "$bt" ] || { echo "build first: cargo build --release -p node" >&2; exit 1; }
work=$(mktemp -d "${TMPDIR:-/tmp}/bt-large.XXXXXX")
dir="$work/cluster"
cleanup() {
    "$bt" cluster down --dir "$dir" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

"$bt" init --dir "$dir" --members 5 --base-port 27300 >/dev/null
"$bt" cluster up --dir "$dir"
echo "writing a ${size_mib} MiB file of random bytes"
head -c "$((size_mib << 20))" /dev/urandom >"$work/original.bin"

rss() { sed -n "s/^MaxRSS //p" "$1"; }
timed() { # timed NAME CMD... : runs CMD, keeps its wall time and max RSS in $work/NAME.time
    local name=$1; shift
    /usr/bin/time -f "Wall %e\nMaxRSS %M" -o "$work/$name.time" "$@"
}

timed store "$bt" store --config "$dir/member-1/node.toml" "$work/original.bin" --json >"$work/store.json"
file_id=$(sed -n 's/.*"file_id":"\([0-9a-f]*\)".*/\1/p' "$work/store.json")
echo "stored: $(cat "$work/store.json")"
"$bt" request --config "$dir/member-5/node.toml" "$file_id" --reason "large-file check" >/dev/null
timed fetch "$bt" fetch --config "$dir/member-5/node.toml" "$file_id" --out "$work/recreated.bin" --timeout 120 --json >"$work/fetch.json"
echo "fetched: $(cat "$work/fetch.json")"
if cmp -s "$work/original.bin" "$work/recreated.bin"; then
    echo "recreated file: byte-identical"
else
    echo "recreated file: DIFFERENT" >&2
    exit 1
fi

echo
echo "wall time: store $(sed -n 's/^Wall //p' "$work/store.time") s, fetch $(sed -n 's/^Wall //p' "$work/fetch.time") s"
echo "peak resident memory:"
for member in "$dir"/member-*; do
    pid=$(cat "$member/node.pid")
    hwm=$(sed -n 's/^VmHWM:\s*//p' "/proc/$pid/status")
    echo "  $(basename "$member") node   $hwm"
done
echo "  store CLI      $(rss "$work/store.time" | sed -n 's/^\(.*\)$/\1 kB/p')"
echo "  fetch CLI      $(rss "$work/fetch.time" | sed -n 's/^\(.*\)$/\1 kB/p')"
