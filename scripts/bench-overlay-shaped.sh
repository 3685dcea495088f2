#!/usr/bin/env bash
# `blocktorrent bench overlay` on a loopback cluster whose members' uplinks are capped, the
# setting the paper's swarm-against-client–server claim is about. On an uncapped loopback the
# bound is CPU (every member shares the same cores), which more senders do not add.
#
#   scripts/bench-overlay-shaped.sh [RATE_MBIT] [FILE_SIZE] [MEMBERS]   # default 200 64MiB 4
#
# Runs in a network namespace of its own (`unshare --net`; as a non-root user with
# `--map-root-user`), so the host's loopback is untouched and everything is gone when it ends.
# Inside it, loopback egress goes through an HTB qdisc: each member's QUIC port (its UDP source
# port) gets a class of RATE_MBIT, as if each member sat behind its own uplink; every other
# packet (the admin API, the CLI) is not limited. Needs `cargo build --release -p node` first,
# and `tc`, `ip` and `unshare` (iproute2, util-linux). Prints the bench's table, then its JSON.
set -euo pipefail

rate_mbit=${1:-200}
file_size=${2:-64MiB}
members=${3:-4}
base_port=27500
root=$(cd "$(dirname "$0")/.." && pwd)
bt="$root/target/release/blocktorrent"
[ -x "$bt" ] || { echo "build first: cargo build --release -p node" >&2; exit 1; }
for tool in tc ip unshare; do
    command -v "$tool" >/dev/null || { echo "needs $tool (iproute2 / util-linux)" >&2; exit 1; }
done

if [ "${BT_SHAPED_INSIDE:-}" != 1 ]; then
    userns=()
    [ "$(id -u)" = 0 ] || userns=(--map-root-user)
    exec env BT_SHAPED_INSIDE=1 unshare ${userns[@]+"${userns[@]}"} --net "$0" "$rate_mbit" "$file_size" "$members"
fi

ip link set lo up
# Default class fffe: not limited (10 Gbit/s is far above what this machine moves on loopback).
tc qdisc add dev lo root handle 1: htb default fffe r2q 1000
tc class add dev lo parent 1: classid 1:fffe htb rate 10gbit quantum 65536
for k in $(seq 1 "$members"); do
    port=$((base_port + k))
    class=$(printf "1:%x" "$k") # tc class ids are hex
    tc class add dev lo parent 1: classid "$class" htb rate "${rate_mbit}mbit" ceil "${rate_mbit}mbit" quantum 65536
    tc filter add dev lo parent 1: protocol ip prio 1 u32 match ip protocol 17 0xff match ip sport "$port" 0xffff flowid "$class"
done

work=$(mktemp -d "${TMPDIR:-/tmp}/bt-shaped.XXXXXX")
dir="$work/cluster"
cleanup() {
    "$bt" cluster down --dir "$dir" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

"$bt" init --dir "$dir" --members "$members" --base-port "$base_port" >/dev/null
# The member ports the filters name must be the ones `init` wrote.
for k in $(seq 1 "$members"); do
    grep -q "listen = \"127.0.0.1:$((base_port + k))\"" "$dir/genesis.toml" || {
        echo "member-$k does not listen on port $((base_port + k)); the shaping would miss it" >&2
        exit 1
    }
done
"$bt" cluster up --dir "$dir" >/dev/null
echo "$members members, each member's uplink capped at $rate_mbit Mbit/s ($((rate_mbit / 8)) MB/s)"
"$bt" bench overlay --dir "$dir" --file-size "$file_size"
"$bt" bench overlay --dir "$dir" --file-size "$file_size" --json
echo
tc -s class show dev lo | sed -n '/class htb 1:[0-9a-f]* /{N;p}' | grep -v "^ *$" || true
