#!/usr/bin/env bash
# A load's first second next to the seconds after it: where moving sessions between workers
# shows in the tail, for tcpool and for servers that never move one.
#
#   bash benches/startup.sh              # 5 runs a server and start (about 4 minutes on 2 cores)
#   QUICK=1 bash benches/startup.sh      # 2 runs
#
# Servers: `tcpool serve` at its defaults (or WORKERS, BALANCE below), the tokio echo server
# (examples/tokio_echo.rs) and the C epoll echo server of benches/compare.sh on one thread
# (epoll-1t) and on one per CPU with SO_REUSEPORT (epoll-Nt-rp). Each is loaded by `tcpool
# bench -c CONNECTIONS --threads THREADS -d DURATION --json` on new connections, from two
# starts: `fresh`, the server just started; and `idle`, the server ran a light load (one
# connection for 3 s: tcpool gathers it on one worker) and then nothing for a second, so that
# tcpool must bring a second worker into use under the new load. Every server is started
# afresh for each run. The report's per-second histograms are decoded with the Python
# hdrhistogram package (`hdrh`, an HdrHistogram written by others, as the tests use) and the
# script prints, for each server and start, the medians over the runs of the first second's
# msgs/s, p99, p99.9 and max, and the same over the seconds after it.
#
# Settings (environment): RUNS (5), DURATION seconds a run (4), CONNECTIONS (64), THREADS (2),
# WORKERS, BALANCE (tcpool's --workers, --balance; default: its own), SERVER (another tcpool
# executable to serve, e.g. an older build, for a before and after; the generator stays this
# build's), NICE (a niceness for
# every process, e.g. -19 as root), CC (cc), KEEP=1 to keep the reports. Every process is
# bounded by `timeout` and killed on exit; servers listen on 127.0.0.1 only.
set -euo pipefail
cd "$(dirname "$0")/.."

[ -n "${QUICK:-}" ] && RUNS=${RUNS:-2}
RUNS=${RUNS:-5}
DURATION=${DURATION:-4}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-2}
CC=${CC:-cc}
niced=()
[ -n "${NICE:-}" ] && niced=(nice -n "$NICE")
python3 -c 'import hdrh' 2>/dev/null ||
    { echo "needs the Python hdrhistogram package: python3 -m pip install hdrhistogram" >&2; exit 1; }

work=$(mktemp -d)
pid=""
cleanup() {
    [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
    [ -n "${KEEP:-}" ] && echo "kept $work" >&2 || rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "building (release, and the C server with $CC -O2)..." >&2
cargo build --release --bin tcpool --example tokio_echo \
    --message-format=json-render-diagnostics >"$work/build.json"
executable() {
    grep -o "\"executable\":\"[^\"]*/$1\"" "$work/build.json" | tail -n 1 | cut -d'"' -f4
}
tcpool=$(executable tcpool)
tokio_echo=$(executable tokio_echo)
epoll_echo=$work/epoll_echo
"$CC" -O2 -Wall -pthread -o "$epoll_echo" benches/yardsticks/epoll_echo.c

cpus=$(nproc)
rp=epoll-${cpus}t-rp
servers=(tcpool tokio epoll-1t "$rp")
server_bin=${SERVER:-$tcpool}
tcpool_args=(serve --port 0)
[ -n "${WORKERS:-}" ] && tcpool_args+=(--workers "$WORKERS")
[ -n "${BALANCE:-}" ] && tcpool_args+=(--balance "$BALANCE")

# Starts server $1 on a free port of 127.0.0.1; sets pid and addr.
start() {
    local log=$work/server.log
    : >"$log"
    case $1 in
        tcpool) "${niced[@]}" "$server_bin" "${tcpool_args[@]}" </dev/null >/dev/null 2>"$log" & ;;
        tokio) "${niced[@]}" "$tokio_echo" 0 </dev/null >"$log" 2>&1 & ;;
        epoll-1t) "${niced[@]}" "$epoll_echo" -t 1 0 </dev/null >"$log" 2>&1 & ;;
        "$rp") "${niced[@]}" "$epoll_echo" -t "$cpus" -r 0 </dev/null >"$log" 2>&1 & ;;
    esac
    pid=$!
    addr=""
    for _ in $(seq 500); do
        addr=$(grep -o 'listening on [0-9.]*:[0-9]*' "$log" | head -n 1 | cut -d' ' -f3 || true)
        [ -n "$addr" ] && return 0
        sleep 0.02
    done
    echo "$1 did not come up:" >&2
    cat "$log" >&2
    exit 1
}
stop() {
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    pid=""
}
bench() {
    timeout --kill-after=5 $(($2 + 30)) "${niced[@]}" "$tcpool" bench "$addr" --json -c "$1" \
        --threads "$THREADS" -d "$2" --connect-timeout 10 2>>"$work/bench.log"
}

echo "$RUNS run(s) a server and start, ${DURATION} s each, $CONNECTIONS connections x 64 B from tcpool bench --threads $THREADS; load: $(uptime | sed 's/.*load/load/')" >&2
for start_kind in fresh idle; do
    for run in $(seq "$RUNS"); do
        for server in "${servers[@]}"; do
            start "$server"
            if [ "$start_kind" = idle ]; then
                bench 1 3 >/dev/null || true
                sleep 1
            fi
            bench "$CONNECTIONS" "$DURATION" >"$work/$start_kind.$server.$run.json" || true
            stop
        done
    done
done

python3 - "$work" "$RUNS" "${servers[@]}" <<'EOF'
import json, statistics, sys
from hdrh.histogram import HdrHistogram

work, runs, servers = sys.argv[1], int(sys.argv[2]), sys.argv[3:]

def figures(seconds):
    """msgs/s, p99, p99.9 and max (µs) over the given per-second entries of a report."""
    merged = None
    for s in seconds:
        h = HdrHistogram.decode(s["histogram"])
        if merged is None:
            merged = h
        else:
            merged.add(h)
    if merged is None or merged.get_total_count() == 0:
        return None
    return (sum(s["messages"] for s in seconds) / len(seconds),
            merged.get_value_at_percentile(99), merged.get_value_at_percentile(99.9),
            merged.get_max_value())

def cell(values):
    mps, p99, p999, mx = (statistics.median(v[i] for v in values) for i in range(4))
    us = lambda v: f"{v:.0f} µs" if v < 1000 else f"{v / 1000:.1f} ms"
    return f"{mps:>9,.0f} | {us(p99):>8} | {us(p999):>8} | {us(mx):>8}"

print()
print("medians over the runs; first: the load's first second; after: the seconds after it")
print()
print("| start | server        | first msgs/s |   p99    |  p99.9   |   max    | after msgs/s |   p99    |  p99.9   |   max    |")
print("| ----- | ------------- | ------------ | -------- | -------- | -------- | ------------ | -------- | -------- | -------- |")
for start in ("fresh", "idle"):
    for server in servers:
        first, after = [], []
        for run in range(1, runs + 1):
            try:
                with open(f"{work}/{start}.{server}.{run}.json") as f:
                    timeline = json.load(f)["timeline"]
            except (OSError, ValueError, KeyError):
                continue
            if len(timeline) >= 2:
                first.append(figures(timeline[:1]))
                after.append(figures(timeline[1:]))
        first = [v for v in first if v]
        after = [v for v in after if v]
        if not first or not after:
            print(f"| {start:<5} | {server:<13} | no reports")
            continue
        print(f"| {start:<5} | {server:<13} |    {cell(first)} |    {cell(after)} |")
EOF
