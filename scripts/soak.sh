#!/usr/bin/env bash
# Kill -9 soak: a loopback cluster under steady store load through the public CLI while a random
# member — the leader every other time — is SIGKILLed and restarted every few seconds. At the
# end every member must be running, every acknowledged store must be on every member's chain
# (master table and deposit), `chain verify` must pass everywhere, the heads must agree within
# the catch-up bound, and the auditor must recreate every acknowledged file byte for byte.
#
#   scripts/soak.sh [--duration SECS] [--kill-every SECS] [--members N] [--loaders N]
#                   [--pace SECS] [--base-port PORT] [--max-file-kib KIB] [--catch-up SECS]
#                   [--checkers N] [--keep]
#
# Defaults: 600 s, a kill every 8 s, 5 members, 2 loaders each storing a file every 0.25 s
# (plus the store's own time), base port 28100, files of 1..64 KiB, 60 s of catch-up, 4 checks
# at a time at the end. The binary is $BT_BIN, or target/release/blocktorrent (build it
# first: `cargo build --release -p node`). The short variant in `cargo test`
# (node/tests/soak.rs) runs this script for 30 s against the test build.
#
# Prints one `soak:` line of figures at the end and exits non-zero when anything acknowledged
# was lost, a file could not be recreated, or the members disagree.
set -euo pipefail

duration=600
kill_every=8
members=5
loaders=2
pace=0.25
checkers=4
base_port=28100
max_file_kib=64
catch_up=60
keep=0
while [ $# -gt 0 ]; do
    case $1 in
        --duration) duration=$2; shift 2 ;;
        --kill-every) kill_every=$2; shift 2 ;;
        --members) members=$2; shift 2 ;;
        --loaders) loaders=$2; shift 2 ;;
        --pace) pace=$2; shift 2 ;;
        --checkers) checkers=$2; shift 2 ;;
        --base-port) base_port=$2; shift 2 ;;
        --max-file-kib) max_file_kib=$2; shift 2 ;;
        --catch-up) catch_up=$2; shift 2 ;;
        --keep) keep=1; shift ;;
        -h | --help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done
[ "$members" -ge 3 ] || { echo "--members must be at least 3 (a quorum must survive a kill)" >&2; exit 2; }

root=$(cd "$(dirname "$0")/.." && pwd)
bt=${BT_BIN:-$root/target/release/blocktorrent}
[ -x "$bt" ] || { echo "no binary at $bt: cargo build --release -p node (or set BT_BIN)" >&2; exit 1; }
work=$(mktemp -d "${TMPDIR:-/tmp}/bt-soak.XXXXXX")
dir="$work/cluster"
mkdir -p "$work/files" "$work/out"
loader_pids=()
cleanup() {
    touch "$work/stop"
    [ ${#loader_pids[@]} = 0 ] || kill "${loader_pids[@]}" 2>/dev/null || true
    "$bt" cluster down --dir "$dir" >/dev/null 2>&1 || true
    if [ "$keep" = 1 ]; then echo "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 143' INT TERM

config() { echo "$dir/member-$1/node.toml"; }
pid_of() { cat "$dir/member-$1/node.pid" 2>/dev/null || echo 0; }
alive() { # alive PID: the process exists and is not a zombie (an orphan's may linger unreaped)
    local state threads
    state=$(sed -n 's/^[0-9]* (.*) \([A-Za-z]\) .*/\1/p' "/proc/$1/stat" 2>/dev/null) || return 1
    [ -n "$state" ] || return 1
    [ "$state" != Z ] && return 0
    # A killed process's main thread can be a zombie while its other threads still exit, holding
    # its sockets: alive until they are gone.
    threads=$(ls "/proc/$1/task" 2>/dev/null | wc -l)
    [ "$threads" -gt 1 ]
}
running() { local pid; pid=$(pid_of "$1"); [ "$pid" != 0 ] && alive "$pid"; }
wait_gone() { # waits (bounded) until PID is gone, so its ports are free for the restart
    local deadline=$((SECONDS + 120)) started=$SECONDS
    while alive "$1" && [ $SECONDS -lt $deadline ]; do sleep 0.05; done
    if alive "$1"; then
        echo "soak: pid $1 still alive 120 s after SIGKILL: $(cat "/proc/$1/stat" 2>/dev/null)" >&2
    elif [ $((SECONDS - started)) -gt 5 ]; then
        echo "soak: pid $1 took $((SECONDS - started)) s to die after SIGKILL" >&2
    fi
}
json_field() { # json_field NAME: the value of a top-level string or number field on stdin
    sed -n "s/.*\"$1\":\"\{0,1\}\([^\",}]*\)\"\{0,1\}[,}].*/\1/p" | head -n 1
}
start_member() { # starts member K in a session of its own, not as a job of this shell
    (
        setsid "$bt" run --config "$(config "$1")" >>"$dir/member-$1/node.log" 2>&1 </dev/null &
        echo $! >"$dir/member-$1/node.pid"
    )
}
wait_ready() { # waits (bounded) until member K answers and knows a leader; fails if it exits
    local deadline=$((SECONDS + 60))
    while [ $SECONDS -lt $deadline ]; do
        running "$1" || return 1
        if "$bt" status --config "$(config "$1")" --json 2>/dev/null | grep -q '"leader":"'; then
            return 0
        fi
        sleep 0.2
    done
    return 1
}

"$bt" init --dir "$dir" --members "$members" --base-port "$base_port" >/dev/null
"$bt" cluster up --dir "$dir" >/dev/null
auditor=$members
participants=$((members - 1))
echo "soak: $members members, ${duration} s, a kill every ${kill_every} s, $loaders loaders ($work)"

# Loader L: stores random files as random participants until told to stop. An acknowledged store
# (exit 0 with a file id) goes to acked-L; anything else counts as a failed attempt.
load() {
    local loader=$1 n=0 member size path out file_id
    while [ ! -e "$work/stop" ]; do
        n=$((n + 1))
        member=$((RANDOM % participants + 1))
        size=$(((RANDOM % max_file_kib + 1) * 1024 - RANDOM % 1024))
        path="$work/files/$loader-$n.bin"
        head -c "$size" /dev/urandom >"$path"
        if out=$(timeout 60 "$bt" store --config "$(config "$member")" --json "$path" 2>/dev/null) &&
            file_id=$(echo "$out" | json_field file_id) && [ -n "$file_id" ]; then
            echo "$file_id $path" >>"$work/acked-$loader"
            sleep "$pace"
        else
            echo "member-$member $path" >>"$work/failed-$loader"
            rm -f "$path"
            sleep 0.2
        fi
    done
}

# Killer: every kill_every seconds SIGKILLs a member (the leader every other time), restarts it
# after up to two seconds, and waits until it is back, so a quorum always survives.
kill_loop() {
    local kills=0 leader_kills=0 failed_restarts=0 died=0 victim leader pid
    local end=$((SECONDS + duration))
    while [ $SECONDS -lt $end ]; do
        sleep "$kill_every"
        victim=$((RANDOM % members + 1))
        if [ $((kills % 2)) = 1 ]; then
            leader=$("$bt" status --config "$(config "$victim")" --json 2>/dev/null | json_field leader || true)
            case $leader in member-*) victim=${leader#member-} ;; esac
        fi
        if ! running "$victim"; then
            died=$((died + 1))
            echo "soak: member-$victim (pid $(pid_of "$victim")) died on its own; see its node.log" >&2
        else
            [ "$("$bt" status --config "$(config "$victim")" --json 2>/dev/null | json_field leader)" = "member-$victim" ] &&
                leader_kills=$((leader_kills + 1))
            pid=$(pid_of "$victim")
            kill -9 "$pid" 2>/dev/null || true
            wait_gone "$pid"
            kills=$((kills + 1))
        fi
        sleep "$((RANDOM % 3))"
        start_member "$victim"
        if ! wait_ready "$victim"; then
            failed_restarts=$((failed_restarts + 1))
            echo "soak: member-$victim did not come back within 60 s; see its node.log" >&2
            tail -n 3 "$dir/member-$victim/node.log" >&2 || true
        fi
        echo "$kills $leader_kills $failed_restarts $died" >"$work/kills"
    done
}

for loader in $(seq 1 "$loaders"); do
    load "$loader" &
    loader_pids+=($!)
done
kill_loop
touch "$work/stop"
wait "${loader_pids[@]}" || true
loader_pids=()
read -r kills leader_kills failed_restarts died <"$work/kills" ||
    { kills=0; leader_kills=0; failed_restarts=0; died=0; }

# A member down now died on its own (the killer restarts its victims and waits for them).
for k in $(seq 1 "$members"); do
    if ! running "$k"; then
        died=$((died + 1))
        echo "soak: member-$k died on its own; see its node.log" >&2
        start_member "$k"
        wait_ready "$k" || failed_restarts=$((failed_restarts + 1))
    fi
done

cat "$work"/acked-* 2>/dev/null | sort -u >"$work/acked" || true
acked=$(wc -l <"$work/acked")
failed=$( (cat "$work"/failed-* 2>/dev/null || true) | wc -l)
echo "soak: $kills kills ($leader_kills of the leader), $acked stores acknowledged, $failed attempts failed"

# Catch-up: every member at the same height with the same head.
agree=0
deadline=$((SECONDS + catch_up))
while [ $SECONDS -lt $deadline ]; do
    heads=$(for k in $(seq 1 "$members"); do
        "$bt" status --config "$(config "$k")" --json 2>/dev/null | json_field head_hash || true
    done)
    # Every member answered, and with one head.
    if [ "$(echo "$heads" | grep -c .)" = "$members" ] && [ "$(echo "$heads" | sort -u | grep -c .)" = 1 ]; then
        agree=1
        break
    fi
    sleep 1
done
caught_up=$((catch_up - (deadline - SECONDS)))

verified=0
for k in $(seq 1 "$members"); do
    if "$bt" chain verify --config "$(config "$k")" >/dev/null 2>"$work/verify-$k.err"; then
        verified=$((verified + 1))
    else
        echo "soak: member-$k: $(cat "$work/verify-$k.err")" >&2
    fi
done

# Every acknowledged store on every member's chain (its master table and its deposit), and
# recreated by the auditor byte for byte; `checkers` files at a time, one result file each.
mkdir -p "$work/checks"
check_file() { # check_file FILE_ID PATH: writes checks/FILE_ID as "lost" / "unrecoverable" / "ok"
    local file_id=$1 path=$2 k
    for k in $(seq 1 "$members"); do
        if ! "$bt" file show --config "$(config "$k")" --json "$file_id" 2>/dev/null |
            grep -q '"shares_deposited":true'; then
            echo "soak: member-$k lacks acknowledged file $file_id" >&2
            echo lost >"$work/checks/$file_id"
            return
        fi
    done
    if "$bt" request --config "$(config "$auditor")" --reason soak "$file_id" >/dev/null 2>&1 &&
        "$bt" fetch --config "$(config "$auditor")" --out "$work/out/$file_id" --timeout 60 "$file_id" >/dev/null 2>&1 &&
        cmp -s "$path" "$work/out/$file_id"; then
        echo ok >"$work/checks/$file_id"
    else
        echo "soak: file $file_id ($path) was not recreated byte for byte" >&2
        echo unrecoverable >"$work/checks/$file_id"
    fi
    rm -f "$work/out/$file_id"
}
check_started=$SECONDS
while read -r file_id path; do
    while [ "$(jobs -rp | wc -l)" -ge "$checkers" ]; do wait -n || true; done
    check_file "$file_id" "$path" &
done <"$work/acked"
wait
count() { (grep -lx "$1" "$work"/checks/* 2>/dev/null || true) | wc -l; }
recovered=$(count ok)
lost=$(count lost)
# A file with no result (its check died) counts as unrecoverable.
unrecoverable=$((acked - recovered - lost))
echo "soak: checked $acked files in $((SECONDS - check_started)) s"

echo "soak: acknowledged $acked, kills $kills (leader $leader_kills), died on their own $died, failed restarts $failed_restarts, heads agree $([ $agree = 1 ] && echo "after ${caught_up} s" || echo "NO"), chain verify $verified/$members, files recovered $recovered, lost $lost, unrecoverable $unrecoverable"
[ "$agree" = 1 ] && [ "$kills" -gt 0 ] && [ "$died" = 0 ] && [ "$failed_restarts" = 0 ] && [ "$verified" = "$members" ] && [ "$lost" = 0 ] && [ "$unrecoverable" = 0 ] && [ "$acked" -gt 0 ]
