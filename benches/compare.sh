#!/usr/bin/env bash
# tcpool's echo server at its default worker count next to a minimal tokio echo server
# (examples/tokio_echo.rs) at tokio's default thread count, loaded alike by `tcpool bench`.
#
#   bash benches/compare.sh              # every cell, generator at 1 and 2 threads, 3 runs
#   QUICK=1 bash benches/compare.sh      # a short look: 1 s runs, one run a cell
#
# Cells (connections x message size, messages in flight per connection): 1, 16, 64, 256 and
# 1000 x 64 B; 16 x 16 KiB; 64 x 64 B with 16 in flight. Each cell is measured with the
# generator at 1 and at 2 threads (`tcpool bench --threads`), RUNS times, the two servers
# taking turns (which goes first alternates from run to run). For each cell it prints the
# median msgs/s of each server, tcpool / tokio for every run and their median, each
# server's median p99 latency, and each server's CPU time per message: user + system time
# from /proc/PID/stat over the measured run, divided by the messages answered. A summary of
# the ratios follows, then a cross-check of a few cells with a second, independent client
# (examples/tokio_client.rs), RUNS runs each, taking turns, with the ratio per run and the
# median.
#
# Settings (environment): DURATION seconds measured per run (3), WARMUP seconds of load before
# each (0.5), RUNS per cell (3), THREADS generator thread counts ("1 2"), CELLS (see below),
# CROSS connection counts for the cross-check ("64 1000"; empty: none), WORKERS, BALANCE and
# WORKER_SCHED passed as `--workers`, `--balance` and `--worker-sched` to tcpool (default:
# none, tcpool's own defaults),
# TCPOOL_LOG as tcpool's RUST_LOG into the kept log (with KEEP=1; default: info,
# `info,tcpool::server::worker::balance=debug` shows each change of the workers in use), and
# TOKIO_WORKER_THREADS to tokio (default: unset, tokio's own default), NICE a niceness for
# both servers and the generator (default: none; `NICE=-19`, as root, puts other work on a
# shared machine behind them, for figures that repeat). The servers and the generator share
# this machine's cores: the numbers compare the servers with each other, not with other
# machines. Check `uptime` first: other work on the machine shows up as noise.
#
# Bounded in time: every run is limited by `timeout`, a server that does not come up within
# 10 s aborts the script, and whatever the script started is killed on exit. The full run
# takes about (7 * 2 + 2) * RUNS * 2 * (DURATION + WARMUP + 2) s, some 9 minutes; QUICK=1
# under 3.

set -euo pipefail
cd "$(dirname "$0")/.."

if [ -n "${QUICK:-}" ]; then
    DURATION=${DURATION:-1}
    WARMUP=${WARMUP:-0.3}
    RUNS=${RUNS:-1}
fi
DURATION=${DURATION:-3}
WARMUP=${WARMUP:-0.5}
RUNS=${RUNS:-3}
THREADS=${THREADS:-"1 2"}
# connections:size:pipeline
CELLS=${CELLS:-"1:64:1 16:64:1 64:64:1 256:64:1 1000:64:1 16:16384:1 64:64:16"}
CROSS=${CROSS-"64 1000"}
niced=()
[ -n "${NICE:-}" ] && niced=(nice -n "$NICE")

work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    [ -n "${KEEP:-}" ] && echo "kept $work" >&2 || rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# 1000 connections need more descriptors than the usual soft limit of 1024 (the tokio
# server does not raise its own).
hard=$(ulimit -Hn)
[ "$hard" = unlimited ] && hard=65536
ulimit -n "$hard" 2>/dev/null || true

echo "building (release)..." >&2
cargo build --release --bin tcpool --example tokio_echo --example tokio_client \
    --message-format=json-render-diagnostics >"$work/build.json"
executable() {
    grep -o "\"executable\":\"[^\"]*/$1\"" "$work/build.json" | tail -n 1 | cut -d'"' -f4
}
tcpool=$(executable tcpool)
tokio_echo=$(executable tokio_echo)
tokio_client=$(executable tokio_client)
[ -x "$tcpool" ] && [ -x "$tokio_echo" ] && [ -x "$tokio_client" ] ||
    { echo "build produced no binaries" >&2; exit 1; }

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

tcpool_args=(serve --port 0)
[ -n "${WORKERS:-}" ] && tcpool_args+=(--workers "$WORKERS")
[ -n "${BALANCE:-}" ] && tcpool_args+=(--balance "$BALANCE")
[ -n "${WORKER_SCHED:-}" ] && tcpool_args+=(--worker-sched "$WORKER_SCHED")
RUST_LOG=${TCPOOL_LOG:-info} "${niced[@]}" "$tcpool" "${tcpool_args[@]}" </dev/null >/dev/null 2>"$work/tcpool.log" &
tcpool_pid=$!
pids+=("$tcpool_pid")
"${niced[@]}" "$tokio_echo" 0 </dev/null >"$work/tokio.log" 2>&1 &
tokio_pid=$!
pids+=("$tokio_pid")
tcpool_addr=$(listening_on "$work/tcpool.log")
tokio_addr=$(listening_on "$work/tokio.log")
tcpool_workers=$(grep -o ' workers=[0-9]*' "$work/tcpool.log" | head -n 1 | cut -d= -f2)
tcpool_sched=$(grep -o 'worker-sched=[a-z]*' "$work/tcpool.log" | head -n 1 | cut -d= -f2)
tokio_threads=${TOKIO_WORKER_THREADS:-$(nproc)}
echo "tcpool serve (workers=$tcpool_workers) on $tcpool_addr, tokio_echo ($tokio_threads threads) on $tokio_addr" >&2
echo "${DURATION}s per run after ${WARMUP}s warm-up, $RUNS run(s) a cell${NICE:+, nice $NICE}; load: $(uptime | sed 's/.*load/load/')" >&2

ticks=$(getconf CLK_TCK)
# User + system CPU ticks of process $1 so far.
cpu_ticks() {
    awk '{ print $14 + $15 }' "/proc/$1/stat"
}

# Reads a number from a one-line JSON report, the key's first occurrence (the report's own,
# before any per-second timeline): field FILE KEY [OBJECT].
field() {
    local json
    json=$(cat "$1")
    if [ -n "${3:-}" ]; then
        json=$(grep -o "\"$3\":{[^}]*}" <<<"$json" | head -n 1)
    fi
    grep -o "\"$2\":[0-9.eE+-]*" <<<"$json" | head -n 1 | cut -d: -f2
}

# One measured run: bench SERVER CONNECTIONS SIZE PIPELINE THREADS; prints
# "msgs_per_sec p99_us cpu_us_per_msg errors" (or "0 0 0 failed").
bench() {
    local server=$1 c=$2 s=$3 p=$4 t=$5 addr pid out before after limit
    if [ "$server" = tcpool ]; then addr=$tcpool_addr pid=$tcpool_pid; else addr=$tokio_addr pid=$tokio_pid; fi
    out="$work/run.json"
    limit=$(awk -v d="$DURATION" -v w="$WARMUP" 'BEGIN { printf "%d", d + w + 30 }')
    # Warm-up in its own run, so that the CPU window below covers measured load only.
    timeout --kill-after=5 "$limit" "${niced[@]}" "$tcpool" bench "$addr" --json -c "$c" -s "$s" \
        --pipeline "$p" --threads "$t" -d "$WARMUP" --connect-timeout 10 \
        >/dev/null 2>>"$work/bench.log" || true
    before=$(cpu_ticks "$pid")
    timeout --kill-after=5 "$limit" "${niced[@]}" "$tcpool" bench "$addr" --json -c "$c" -s "$s" \
        --pipeline "$p" --threads "$t" -d "$DURATION" --connect-timeout 10 \
        >"$out" 2>>"$work/bench.log" || true
    after=$(cpu_ticks "$pid")
    if [ ! -s "$out" ]; then
        echo "0 0 0 failed"
        return
    fi
    awk -v mps="$(field "$out" msgs_per_sec)" -v n="$(field "$out" messages)" \
        -v p99="$(field "$out" p99 latency_us)" -v errors="$(field "$out" errors)" \
        -v cpu=$((after - before)) -v hz="$ticks" \
        'BEGIN { printf "%.0f %d %.2f %d\n", mps, p99, (n > 0 ? cpu / hz * 1e6 / n : 0), errors }'
}

median() {
    tr ' ' '\n' | grep -v '^$' | sort -g | awk '{ v[NR] = $1 } END {
        if (NR == 0) print 0; else if (NR % 2) print v[(NR + 1) / 2];
        else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

human_us() {
    awk -v us="$1" 'BEGIN {
        if (us < 1000) printf "%dus", us;
        else if (us < 1000000) printf "%.1fms", us / 1000;
        else printf "%.2fs", us / 1000000 }'
}

all_ratios=""
rows=() slower=() later=() costlier=()
for t in $THREADS; do
    for cell in $CELLS; do
        IFS=: read -r c s p <<<"$cell"
        label="$c x ${s}B"
        [ "$p" != 1 ] && label="$label, $p in flight"
        echo "  threads $t, $label..." >&2
        declare -A got=()
        ratios="" errors=0
        for run in $(seq "$RUNS"); do
            order="tcpool tokio"
            [ $((run % 2)) = 0 ] && order="tokio tcpool"
            for server in $order; do
                read -r mps p99 cpu err <<<"$(bench "$server" "$c" "$s" "$p" "$t")"
                [ "$err" = failed ] && err=1
                errors=$((errors + err))
                got[$server.mps]="${got[$server.mps]:-} $mps"
                got[$server.p99]="${got[$server.p99]:-} $p99"
                got[$server.cpu]="${got[$server.cpu]:-} $cpu"
                got[$server.$run]=$mps
            done
            ratio=$(awk -v a="${got[tcpool.$run]}" -v b="${got[tokio.$run]}" \
                'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }')
            ratios="$ratios $ratio"
        done
        med=$(median <<<"$ratios")
        all_ratios="$all_ratios $med"
        p99_a=$(median <<<"${got[tcpool.p99]}") p99_b=$(median <<<"${got[tokio.p99]}")
        cpu_a=$(median <<<"${got[tcpool.cpu]}") cpu_b=$(median <<<"${got[tokio.cpu]}")
        rows+=("$(printf '| %-2s | %-22s | %9.0f | %9.0f | %-16s | %5.2fx | %7s | %7s | %5.2f / %5.2f | %s |' \
            "$t" "$label" "$(median <<<"${got[tcpool.mps]}")" "$(median <<<"${got[tokio.mps]}")" \
            "$(sed 's/^ //' <<<"$ratios")" "$med" "$(human_us "$p99_a")" "$(human_us "$p99_b")" \
            "$cpu_a" "$cpu_b" "$errors")")
        # Where tcpool is behind, for the summary: a lower median ratio, a higher p99, a
        # higher CPU cost per message.
        where="T$t $label"
        awk -v m="$med" 'BEGIN { exit !(m < 1) }' && slower+=("$where: ${med}x")
        awk -v a="$p99_a" -v b="$p99_b" 'BEGIN { exit !(a > b) }' &&
            later+=("$where: $(human_us "$p99_a") vs $(human_us "$p99_b")")
        awk -v a="$cpu_a" -v b="$cpu_b" 'BEGIN { exit !(a > b) }' && costlier+=("$where: $cpu_a vs $cpu_b")
        unset got
    done
done

echo
echo "tcpool serve (workers=$tcpool_workers worker-sched=$tcpool_sched) / tokio_echo ($tokio_threads threads); generator: tcpool bench --threads T"
echo
echo "| T  | cell                   | tcpool/s  | tokio/s   | ratio per run    | median | tcpool p99 | tokio p99 | CPU us/msg tcpool / tokio | errors |"
echo "| -- | ---------------------- | --------- | --------- | ---------------- | ------ | ------- | ------- | ------------- | ------ |"
printf '%s\n' "${rows[@]}"
echo
printf 'median of the cells'"'"' median ratios: %sx; lowest cell: %sx (%d cells)\n' \
    "$(median <<<"$all_ratios")" "$(tr ' ' '\n' <<<"$all_ratios" | grep -v '^$' | sort -g | head -n 1)" \
    "$(wc -w <<<"$all_ratios")"
# Prints "HEADING: none" or the heading and one line per entry.
behind() {
    local heading=$1
    shift
    if [ $# = 0 ]; then echo "$heading: none"; else echo "$heading ($#):"; printf '  %s\n' "$@"; fi
}
behind "cells where tcpool answered fewer messages (median ratio below 1)" "${slower[@]}"
behind "cells where tcpool's p99 was higher" "${later[@]}"
behind "cells where tcpool's CPU per message (us) was higher" "${costlier[@]}"

if [ -n "$CROSS" ]; then
    echo
    echo "cross-check with examples/tokio_client ($(nproc) threads, 64 B lines, ${DURATION}s runs after ${WARMUP}s of warm-up, $RUNS a count, taking turns):"
    echo
    echo "| connections | tcpool msgs/s | tokio msgs/s | ratio per run | median |"
    echo "| ----------- | ------------- | ------------ | ------------- | ------ |"
    for c in $CROSS; do
        declare -A got=()
        ratios=""
        for run in $(seq "$RUNS"); do
            order="tcpool tokio"
            [ $((run % 2)) = 0 ] && order="tokio tcpool"
            for server in $order; do
                if [ "$server" = tcpool ]; then addr=$tcpool_addr; else addr=$tokio_addr; fi
                limit=$(awk -v d="$DURATION" 'BEGIN { printf "%d", d + 30 }')
                # A warm-up of its own first, as for the cells above.
                timeout --kill-after=5 "$limit" "${niced[@]}" "$tokio_client" "$addr" "$c" "$WARMUP" \
                    >/dev/null 2>>"$work/bench.log" || true
                # Its line ends "msgs/s N"; a failed run counts as 0.
                mps=$(timeout --kill-after=5 "$limit" "${niced[@]}" "$tokio_client" "$addr" "$c" "$DURATION" \
                    2>>"$work/bench.log" | awk '{ print $NF }' || true)
                got[$server.mps]="${got[$server.mps]:-} ${mps:-0}"
                got[$server.$run]=${mps:-0}
            done
            ratios="$ratios $(awk -v a="${got[tcpool.$run]}" -v b="${got[tokio.$run]}" \
                'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }')"
        done
        printf '| %-11s | %13.0f | %12.0f | %-13s | %5.2fx |\n' "$c" \
            "$(median <<<"${got[tcpool.mps]}")" "$(median <<<"${got[tokio.mps]}")" \
            "$(sed 's/^ //' <<<"$ratios")" "$(median <<<"$ratios")"
        unset got
    done
fi
echo
echo "load afterwards: $(uptime | sed 's/.*load/load/'); $(nproc) core(s) shared by both servers and the generator."
