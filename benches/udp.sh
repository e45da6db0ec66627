#!/usr/bin/env bash
# tcpool's UDP echo and UDP load generator next to sockperf and iperf3, side by side in one run.
#
#   bash benches/udp.sh              # 3 runs of 3 s a cell (about 4 minutes on 2 cores)
#   QUICK=1 bash benches/udp.sh      # one run of 1 s a cell
#
# 1. Servers, loaded by sockperf's own client: `sockperf server` and `tcpool serve --udp
#    --udp-reply sockperf` (which answers as sockperf's server does: only the messages that
#    ask, marked as the server's). `sockperf ping-pong` (one message out at a time: round-trip
#    p50/p99/p99.9 and messages a second) and `sockperf under-load --mps=max --reply-every 1`
#    (a flood, every message answered: replies a second, what was dropped). sockperf runs
#    with --full-rtt: its figures are round trips, as tcpool bench's are (without it, sockperf
#    reports half the round trip).
# 2. Generators on one target, `sockperf server`: `sockperf ping-pong` and `tcpool bench
#    --udp -c 1 --pipeline 1` sending sockperf's header (so that sockperf's server answers
#    it), 64 B: round-trip percentiles and round trips a second.
# 3. Throughput at 64 B and 1,400 B: `iperf3 -u -b 0`, one way and `--bidir`, against
#    `iperf3 -s` (its client only talks to its own server), and `tcpool bench --udp` against
#    `tcpool serve --udp`, as datagrams delivered a second: iperf3's received by the far end
#    of each stream (both streams added with --bidir), tcpool's two for each echo answered
#    (the request and its reply).
#
# Settings (environment): DURATION seconds a measurement (3), RUNS (3), NICE (a niceness for
# every process, e.g. -19 as root), BENCH_SOCKETS and BENCH_PIPELINE for part 3 (2 and 32),
# KEEP=1 to keep the logs. Every process is bounded by `timeout` and killed on exit; servers
# run on 127.0.0.1 only.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -n "${QUICK:-}" ]; then
    DURATION=${DURATION:-1}
    RUNS=${RUNS:-1}
fi
DURATION=${DURATION:-3}
RUNS=${RUNS:-3}
BENCH_SOCKETS=${BENCH_SOCKETS:-2}
BENCH_PIPELINE=${BENCH_PIPELINE:-32}
niced=()
[ -n "${NICE:-}" ] && niced=(nice -n "$NICE")
for tool in sockperf iperf3 python3; do
    command -v "$tool" >/dev/null || { echo "needs $tool (Debian: apt-get install $tool)" >&2; exit 1; }
done

work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    [ -n "${KEEP:-}" ] && echo "kept $work" >&2 || rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "building (release)..." >&2
cargo build --release --bin tcpool --message-format=json-render-diagnostics >"$work/build.json"
tcpool=$(grep -o '"executable":"[^"]*/tcpool"' "$work/build.json" | tail -n 1 | cut -d'"' -f4)
[ -x "$tcpool" ] || { echo "build produced no binary" >&2; exit 1; }

free_port() {
    python3 -c 'import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
# Starts server $1 (sockperf, tcpool-sockperf, tcpool-echo, iperf3) on port $2.
start_server() {
    local log=$work/$1.$2.log
    case $1 in
        sockperf) "${niced[@]}" sockperf server -i 127.0.0.1 -p "$2" >"$log" 2>&1 & ;;
        tcpool-sockperf) RUST_LOG=warn "${niced[@]}" "$tcpool" serve -p "$2" --udp --udp-reply sockperf </dev/null >"$log" 2>&1 & ;;
        tcpool-echo) RUST_LOG=warn "${niced[@]}" "$tcpool" serve -p "$2" --udp </dev/null >"$log" 2>&1 & ;;
        iperf3) "${niced[@]}" iperf3 -s -B 127.0.0.1 -p "$2" >"$log" 2>&1 & ;;
    esac
    server_pid=$!
    pids+=("$server_pid")
    # Up when its port is bound (iperf3's server: its TCP control port), 10 s at most.
    local proto=-u
    [ "$1" = iperf3 ] && proto=-t
    for _ in $(seq 200); do
        [ -n "$(ss -Hln "$proto" "sport = :$2" 2>/dev/null)" ] && return 0
        sleep 0.05
    done
    echo "$1 did not come up on port $2:" >&2
    cat "$log" >&2
    exit 1
}
stop_server() {
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
}

# sockperf's summary as "p50 p99 p99.9 per_sec received dropped" (µs; per_sec: replies a
# second over its valid duration).
sockperf_figures() {
    python3 - "$1" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
def pct(p):
    m = re.search(r"percentile %s = +([0-9.]+)" % re.escape(p), text)
    return float(m.group(1)) if m else float("nan")
valid = re.search(r"\[Valid Duration\] RunTime=([0-9.]+) sec; SentMessages=(\d+); ReceivedMessages=(\d+)", text)
dropped = re.search(r"# dropped messages = (\d+)", text)
secs, sent, got = (float(valid.group(1)), int(valid.group(2)), int(valid.group(3))) if valid else (float("nan"), 0, 0)
print(f"{pct('50.000'):.1f} {pct('99.000'):.1f} {pct('99.900'):.1f} {got / secs:.0f} {got} {dropped.group(1) if dropped else 0}")
PY
}

# tcpool bench's JSON report as "p50 p99 p99.9 per_sec answered lost" (latency) or
# "datagrams_a_second_both_ways lost" (throughput).
bench_figures() {
    python3 - "$1" "$2" <<'PY'
import json, sys
j = json.load(open(sys.argv[2]))
if sys.argv[1] == "latency":
    r = j["rtt_us"]
    print(r["p50"], r["p99"], r["p999"], round(j["received_per_sec"]), j["answered"], j["lost"])
else:
    # Each answered datagram reached the server and came back: two delivered.
    print(round(2 * j["answered"] / j["duration_s"]), j["lost"])
PY
}

# iperf3's JSON report as "delivered_a_second lost": the datagrams that reached the far end
# of each stream (both streams with --bidir), over the receiver's seconds.
iperf3_figures() {
    python3 - "$1" <<'PY'
import json, sys
e = json.load(open(sys.argv[1]))["end"]
keys = [k for k in ("sum_received", "sum_received_bidir_reverse") if k in e]
got = sum(e[k]["packets"] - e[k]["lost_packets"] for k in keys)
print(round(got / e["sum_received"]["seconds"]), sum(e[k]["lost_packets"] for k in keys))
PY
}

results=$work/results.txt
: >"$results"
# Records one measurement: part, cell, who, figures...
record() { echo "$*" >>"$results"; }

for run in $(seq "$RUNS"); do
    echo "run $run of $RUNS" >&2
    # 1. Servers under sockperf's client.
    for server in sockperf tcpool-sockperf; do
        port=$(free_port)
        start_server "$server" "$port"
        timeout $((DURATION + 20)) "${niced[@]}" sockperf ping-pong -i 127.0.0.1 -p "$port" -t "$DURATION" -m 64 --full-rtt >"$work/pp.$server.$run" 2>&1 || true
        record servers ping-pong "$server" $(sockperf_figures "$work/pp.$server.$run")
        timeout $((DURATION + 20)) "${niced[@]}" sockperf under-load -i 127.0.0.1 -p "$port" -t "$DURATION" -m 64 --mps=max --reply-every 1 --full-rtt >"$work/ul.$server.$run" 2>&1 || true
        record servers under-load "$server" $(sockperf_figures "$work/ul.$server.$run")
        stop_server
    done
    # 2. Generators on sockperf's server: sockperf's header (sequence, flags client|pong
    #    request, length 64), the sequence being tcpool bench's id field.
    port=$(free_port)
    start_server sockperf "$port"
    timeout $((DURATION + 20)) "${niced[@]}" sockperf ping-pong -i 127.0.0.1 -p "$port" -t "$DURATION" -m 64 --full-rtt >"$work/gen.sockperf.$run" 2>&1 || true
    record generators ping-pong sockperf $(sockperf_figures "$work/gen.sockperf.$run")
    header='\x00\x00\x00\x00\x00\x00\x00\x00\x00\x03\x00\x00\x00\x40'
    timeout $((DURATION + 20)) "${niced[@]}" "$tcpool" bench --udp "127.0.0.1:$port" -c 1 --pipeline 1 \
        -d "${DURATION}s" --send "$header$(printf '%050d' 0)" --id-field 0:8 --json \
        >"$work/gen.tcpool.$run" 2>"$work/gen.tcpool.$run.err" || true
    record generators ping-pong tcpool-bench $(bench_figures latency "$work/gen.tcpool.$run")
    stop_server
    # 3. Throughput, both directions added.
    for size in 64 1400; do
        for way in one-way bidir; do
            port=$(free_port)
            start_server iperf3 "$port"
            flags=()
            [ "$way" = bidir ] && flags=(--bidir)
            timeout $((DURATION + 20)) "${niced[@]}" iperf3 -c 127.0.0.1 -p "$port" -u "${flags[@]}" -b 0 \
                -l "$size" -t "$DURATION" --json >"$work/iperf3.$way.$size.$run" 2>&1 || true
            record throughput "$size" "iperf3-$way" $(iperf3_figures "$work/iperf3.$way.$size.$run")
            stop_server
        done
        port=$(free_port)
        start_server tcpool-echo "$port"
        timeout $((DURATION + 20)) "${niced[@]}" "$tcpool" bench --udp "127.0.0.1:$port" -c "$BENCH_SOCKETS" \
            --pipeline "$BENCH_PIPELINE" -s "$size" -d "${DURATION}s" --json \
            >"$work/bench.$size.$run" 2>"$work/bench.$size.$run.err" || true
        record throughput "$size" tcpool-bench $(bench_figures throughput "$work/bench.$size.$run")
        stop_server
    done
done

python3 - "$results" "$RUNS" "$DURATION" <<'PY'
import statistics, sys
from collections import defaultdict
rows = defaultdict(list)
for line in open(sys.argv[1]):
    part, cell, who, *figures = line.split()
    rows[(part, cell, who)].append([float(f) for f in figures])
def med(key, i):
    return statistics.median(r[i] for r in rows[key])
print(f"median of {sys.argv[2]} run(s) of {sys.argv[3]} s each, side by side in one run\n")
print("Servers, loaded by sockperf's client (64 B)")
print("| load | server | p50 µs | p99 µs | p99.9 µs | replies/s | dropped |")
print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
for cell in ("ping-pong", "under-load"):
    for who in ("sockperf", "tcpool-sockperf"):
        k = ("servers", cell, who)
        if k in rows:
            name = "sockperf server" if who == "sockperf" else "tcpool serve --udp"
            print(f"| {cell} | {name} | {med(k,0):.1f} | {med(k,1):.1f} | {med(k,2):.1f} | {med(k,3):,.0f} | {med(k,5):,.0f} |")
print("\nGenerators, on sockperf's server (64 B, one out at a time)")
print("| generator | p50 µs | p99 µs | p99.9 µs | round trips/s |")
print("| --- | ---: | ---: | ---: | ---: |")
for who, name in (("sockperf", "sockperf ping-pong"), ("tcpool-bench", "tcpool bench --udp")):
    k = ("generators", "ping-pong", who)
    if k in rows:
        print(f"| {name} | {med(k,0):.1f} | {med(k,1):.1f} | {med(k,2):.1f} | {med(k,3):,.0f} |")
print("\nThroughput: datagrams delivered a second (both directions added where there are two)")
print("| size | iperf3 -u (one way, to iperf3 -s) | iperf3 -u --bidir | tcpool bench --udp (echoed, to serve --udp) | ratio to iperf3's better | lost (iperf3 one-way / bidir / tcpool) |")
print("| --- | ---: | ---: | ---: | ---: | ---: |")
for size in ("64", "1400"):
    a, b, c = (("throughput", size, w) for w in ("iperf3-one-way", "iperf3-bidir", "tcpool-bench"))
    if a in rows and b in rows and c in rows:
        best = max(med(a, 0), med(b, 0))
        print(f"| {size} B | {med(a,0):,.0f} | {med(b,0):,.0f} | {med(c,0):,.0f} | {med(c,0)/best:.2f}x | {med(a,1):,.0f} / {med(b,1):,.0f} / {med(c,1):,.0f} |")
PY
