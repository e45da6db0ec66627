#!/usr/bin/env bash
# tcpool's echo server next to a minimal tokio echo server (examples/tokio_echo.rs), both
# loaded by `tcpool bench --json` at 1, 64 and 1000 connections; prints one side-by-side
# table of messages per second and latency (p50, p99).
#
#   bash benches/compare.sh
#   DURATION=10 WARMUP=1 CONNECTIONS="1 16 256 1000" bash benches/compare.sh
#
# Settings (environment): DURATION seconds measured per run (3), WARMUP seconds before each
# (0.5), WORKERS server threads for both servers (2), CONNECTIONS to try ("1 64 1000"),
# SIZE bytes per message (64). Both servers and the load generator share this machine's
# cores, so the numbers compare the servers with each other, not with other machines.
#
# Bounded in time: every run is limited by `timeout`, a server that does not come up within
# 10 s aborts the script, and whatever the script started is killed on exit.

set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-3}
WARMUP=${WARMUP:-0.5}
WORKERS=${WORKERS:-2}
CONNECTIONS=${CONNECTIONS:-"1 64 1000"}
SIZE=${SIZE:-64}

work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# 1000 connections need more descriptors than the usual soft limit of 1024 (the tokio
# server does not raise its own).
hard=$(ulimit -Hn)
[ "$hard" = unlimited ] && hard=65536
ulimit -n "$hard" 2>/dev/null || true

echo "building (release)..." >&2
cargo build --release --bin tcpool --example tokio_echo --message-format=json-render-diagnostics \
    >"$work/build.json"
executable() {
    grep -o "\"executable\":\"[^\"]*/$1\"" "$work/build.json" | tail -n 1 | cut -d'"' -f4
}
tcpool=$(executable tcpool)
tokio_echo=$(executable tokio_echo)
[ -x "$tcpool" ] && [ -x "$tokio_echo" ] || { echo "build produced no binaries" >&2; exit 1; }

# Waits for `listening on ADDR` in file $1; prints ADDR.
listening_on() {
    local addr=""
    for _ in $(seq 100); do
        addr=$(grep -o 'listening on [0-9.]*:[0-9]*' "$1" 2>/dev/null | head -n 1 | cut -d' ' -f3 || true)
        [ -n "$addr" ] && { echo "$addr"; return 0; }
        sleep 0.1
    done
    echo "no 'listening on' line in $1:" >&2
    cat "$1" >&2
    return 1
}

RUST_LOG=info "$tcpool" serve --port 0 --workers "$WORKERS" </dev/null >/dev/null 2>"$work/tcpool.log" &
pids+=($!)
TOKIO_WORKER_THREADS=$WORKERS "$tokio_echo" 0 </dev/null >"$work/tokio.log" 2>&1 &
pids+=($!)
tcpool_addr=$(listening_on "$work/tcpool.log")
tokio_addr=$(listening_on "$work/tokio.log")
echo "tcpool serve on $tcpool_addr, tokio_echo on $tokio_addr; ${DURATION}s per run after ${WARMUP}s warm-up" >&2

# Runs the load generator; the JSON report goes to $1 (a run with errors still reports).
run_bench() {
    local out=$1 addr=$2 connections=$3
    local limit
    limit=$(awk -v d="$DURATION" -v w="$WARMUP" 'BEGIN { printf "%d", d + w + 30 }')
    timeout --kill-after=5 "$limit" "$tcpool" bench "$addr" --json -c "$connections" \
        -d "$DURATION" --warmup "$WARMUP" -s "$SIZE" --connect-timeout 10 \
        >"$out" 2>>"$work/bench.log" || true
}

# Reads a number from a one-line JSON report: field() FILE KEY [OBJECT].
field() {
    local json
    json=$(cat "$1")
    if [ -n "${3:-}" ]; then
        json=$(sed -n "s/.*\"$3\":{\([^}]*\)}.*/\1/p" <<<"$json")
    fi
    sed -n "s/.*\"$2\":\([0-9.eE+-]*\).*/\1/p" <<<"$json" | head -n 1
}

# Formats one server's cells: msgs/s, p50, p99, errors.
cells() {
    local f=$1
    if [ ! -s "$f" ]; then
        printf '%12s %9s %9s %7s' "-" "-" "-" "failed"
        return
    fi
    printf '%12.0f %9s %9s %7s' "$(field "$f" msgs_per_sec)" \
        "$(human_us "$(field "$f" p50 latency_us)")" \
        "$(human_us "$(field "$f" p99 latency_us)")" \
        "$(field "$f" errors)"
}

human_us() {
    awk -v us="$1" 'BEGIN {
        if (us < 1000) printf "%dus", us;
        else if (us < 1000000) printf "%.2fms", us / 1000;
        else printf "%.2fs", us / 1000000 }'
}

for c in $CONNECTIONS; do
    echo "  -c $c: tcpool..." >&2
    run_bench "$work/tcpool-$c.json" "$tcpool_addr" "$c"
    echo "  -c $c: tokio..." >&2
    run_bench "$work/tokio-$c.json" "$tokio_addr" "$c"
done

echo
printf '%-11s | %-40s | %-40s\n' "" "tcpool serve --workers $WORKERS" "tokio echo ($WORKERS threads)"
printf '%-11s | %12s %9s %9s %7s | %12s %9s %9s %7s\n' connections \
    msgs/s p50 p99 errors msgs/s p50 p99 errors
printf '%s\n' "------------+------------------------------------------+-----------------------------------------"
for c in $CONNECTIONS; do
    printf '%-11s | %s | %s\n' "$c" "$(cells "$work/tcpool-$c.json")" "$(cells "$work/tokio-$c.json")"
done
echo
echo "${SIZE}-byte messages, closed loop, ${DURATION}s measured after ${WARMUP}s warm-up; bench, servers and this shell share $(nproc 2>/dev/null || echo '?') core(s)."
