#!/usr/bin/env bash
# tcpool bench --tls next to redis-benchmark --tls on one redis-server speaking TLS only:
# the same requests, the same connections and pipeline, run in turns (interleaved, so that a
# busy moment of a shared machine falls on both tools alike). Prints each run, then a
# markdown table of the medians: requests per second of each tool and their ratio, p50 and
# p99, and the CPU per request of the redis-server and of each tool.
#
#   bash benches/redis-tls.sh
#   RUNS=5 CONNECTIONS=50 PIPELINES="1 16" DURATION=5 bash benches/redis-tls.sh
#
# The server: `redis-server --port 0 --tls-port PORT` on 127.0.0.1, with the certificates of
# `tcpool tls gen` (client certificates not asked), saving nothing. Requests, byte for byte
# what redis-benchmark sends for its tests: `ping_inline` (`PING\r\n`), `set` (multi-bulk
# `SET key:__rand_int__ xxx`, one key without -r) and `get` (`GET key:__rand_int__`, a hit:
# the key is written first). tcpool reads every reply as RESP says (`--reply resp`);
# redis-benchmark counts them.
#
# Each run: tcpool for DURATION seconds (after a 0.5 s warm-up), then redis-benchmark for as
# many requests as tcpool answered in its first run of that cell, so both run about as long.
# Both connect and do their handshakes first. CPU per request: the server's (utime + stime
# from /proc/PID/stat) and the tool's (its user + system time), each over the whole run,
# handshakes and warm-up included, divided by the commands the server counted meanwhile
# (INFO's total_commands_processed). Each run's line also says how much CPU the rest of the
# machine used meanwhile, in cores ("others"): a run beside another busy process is noise.
#
# PIN (1): on a machine of 2 CPUs or more, redis-server runs on CPU 0 and the tools on the
# others (taskset), so that neither takes the other's CPU; PIN=0 leaves them to the
# scheduler.
#
# Settings (environment): RUNS per cell (3), CONNECTIONS (50, redis-benchmark's default),
# PIPELINES ("1 16"), TESTS ("ping_inline set get"), DURATION seconds per tcpool run (3),
# THREADS for tcpool (1: redis-benchmark is single-threaded too; "0" means one per CPU).
#
# Bounded in time: every run is limited by `timeout`; the redis-server started here listens
# on a free loopback port and is killed on exit.

set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-3}
CONNECTIONS=${CONNECTIONS:-50}
PIPELINES=${PIPELINES:-"1 16"}
TESTS=${TESTS:-"ping_inline set get"}
DURATION=${DURATION:-3}
THREADS=${THREADS:-1}
PIN=${PIN:-1}

for tool in redis-server redis-benchmark redis-cli; do
    command -v "$tool" >/dev/null || { echo "$tool is needed (scripts/test.sh installs it)" >&2; exit 1; }
done
[ -x /usr/bin/time ] || { echo "/usr/bin/time is needed (Debian's package time)" >&2; exit 1; }

work=$(mktemp -d)
redis_pid=""
cleanup() {
    [ -n "$redis_pid" ] && kill "$redis_pid" 2>/dev/null && wait "$redis_pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "building (release)..." >&2
cargo build --release --bin tcpool --message-format=json-render-diagnostics >"$work/build.json"
tcpool=$(grep -o '"executable":"[^"]*/tcpool"' "$work/build.json" | tail -n 1 | cut -d'"' -f4)
[ -x "$tcpool" ] || { echo "build produced no binary" >&2; exit 1; }

certs=$work/certs
"$tcpool" tls gen "$certs" >/dev/null
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
server_cpu=() client_cpu=()
if [ "$PIN" = 1 ] && [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null; then
    server_cpu=(taskset -c 0) client_cpu=(taskset -c 1-$(($(nproc) - 1)))
fi
"${server_cpu[@]}" redis-server --bind 127.0.0.1 --port 0 --tls-port "$port" \
    --tls-cert-file "$certs/server.pem" --tls-key-file "$certs/server-key.pem" \
    --tls-ca-cert-file "$certs/ca.pem" --tls-auth-clients no \
    --save '' --appendonly no >"$work/redis.log" 2>&1 &
redis_pid=$!
cli() { redis-cli --tls --cacert "$certs/ca.pem" -h 127.0.0.1 -p "$port" "$@"; }
for _ in $(seq 100); do
    cli ping >/dev/null 2>&1 && break
    sleep 0.1
done
[ "$(cli ping 2>/dev/null)" = PONG ] || { echo "redis-server did not start: $(cat "$work/redis.log")" >&2; exit 1; }
cli set key:__rand_int__ xxx >/dev/null
threads=()
[ "$THREADS" != 0 ] && threads=(--threads "$THREADS")
ticks_per_sec=$(getconf CLK_TCK)

# The server's CPU ticks (user + system), the commands it has processed, and the machine's
# busy ticks (every CPU), on one line.
counts() {
    local ticks commands busy
    ticks=$(awk '{ print $14 + $15 }' "/proc/$redis_pid/stat")
    commands=$(cli info stats | tr -d '\r' | sed -n 's/^total_commands_processed://p')
    busy=$(awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat)
    echo "$ticks $commands $busy $(date +%s.%N)"
}

# Per-command CPU between two `counts` lines, the tool's CPU seconds being in $work/time:
# prints "server_us client_us others" — the server's and the tool's CPU microseconds per
# command the server counted, and the CPU the rest of the machine used meanwhile (in cores).
per_request() {
    awk -v a="$1" -v b="$2" -v hz="$ticks_per_sec" -v tool="$(awk '{ print $1 + $2 }' "$work/time" 2>/dev/null)" 'BEGIN {
        split(a, x, " "); split(b, y, " ")
        n = y[2] - x[2]; server = (y[1] - x[1]) / hz; busy = (y[3] - x[3]) / hz; wall = y[4] - x[4]
        others = wall > 0 ? (busy - server - tool) / wall : 0
        if (others < 0) others = 0
        if (n > 0) printf "%.2f %.2f %.2f\n", server * 1e6 / n, tool * 1e6 / n, others; else print "0 0 0"
    }'
}

# TOOL TEST PIPELINE [REQUESTS]: runs one tool, its CPU time (user, system) written to
# $work/time, and prints "rps p50_ms p99_ms answered tls" (the last two tcpool's only).
run_tool() {
    local send
    : >"$work/time"
    if [ "$1" = tcpool ]; then
        case $2 in
            ping_inline) send='PING\r\n' ;;
            set) send='*3\r\n$3\r\nSET\r\n$16\r\nkey:__rand_int__\r\n$3\r\nxxx\r\n' ;;
            get) send='*2\r\n$3\r\nGET\r\n$16\r\nkey:__rand_int__\r\n' ;;
        esac
        /usr/bin/time -f '%U %S' -o "$work/time" \
            timeout --kill-after=5 $((DURATION + 60)) "${client_cpu[@]}" "$tcpool" bench "127.0.0.1:$port" --json \
            --tls --tls-ca "$certs/ca.pem" --tls-servername localhost --reply resp \
            -c "$CONNECTIONS" --pipeline "$3" -d "$DURATION" --warmup 0.5 "${threads[@]}" \
            --send "$send" >"$work/run.json" 2>>"$work/bench.log" || true
        python3 -c '
import json, sys
try:
    r = json.load(open(sys.argv[1]))
except ValueError:
    print("0 0 0 0 no-report"); sys.exit()
bad = r["errors"] or r["replies"]["error"]
if bad or r["connected"] == 0:
    print("0 0 0 0 errors=%s" % bad)
else:
    tls = ",".join(r["tls"]["negotiated"]) if r.get("tls") else "-"
    print("%.0f %.3f %.3f %d %s" % (r["msgs_per_sec"], r["latency_us"]["p50"] / 1000,
          r["latency_us"]["p99"] / 1000, r["messages"], tls.replace(" ", "_")))
' "$work/run.json"
        return
    fi
    /usr/bin/time -f '%U %S' -o "$work/time" \
        timeout --kill-after=5 $((DURATION * 10 + 60)) "${client_cpu[@]}" redis-benchmark --tls \
        --cacert "$certs/ca.pem" -h 127.0.0.1 -p "$port" -c "$CONNECTIONS" -P "$3" -n "$4" -t "$2" \
        --csv >"$work/run.csv" 2>>"$work/bench.log" || true
    tail -n 1 "$work/run.csv" | tr -d '"' |
        awk -F, '$2 > 0 { printf "%.0f %.3f %.3f\n", $2, $5, $7; ok = 1 } END { if (!ok) print "0 0 0" }'
}

median() {
    sort -n | awk '{ v[NR] = $1 } END { if (NR) print v[int((NR + 1) / 2)]; else print 0 }'
}

echo "redis-server $(redis-server --version | sed -n 's/.*v=\([^ ]*\).*/\1/p'), TLS on 127.0.0.1:$port;" \
    "$CONNECTIONS connections, tcpool threads: $([ "$THREADS" = 0 ] && echo "one per CPU" || echo "$THREADS"), $DURATION s per tcpool run"
row() { printf '%-12s %-8s %-16s %12s %9s %9s %11s %11s %8s %s\n' "$@"; }
row test pipeline tool "requests/s" "p50 ms" "p99 ms" "server µs" "client µs" "others" ""
: >"$work/table.md"
for test in $TESTS; do
    for p in $PIPELINES; do
        requests=""
        : >"$work/tcpool.txt"
        : >"$work/redis-benchmark.txt"
        for run in $(seq "$RUNS"); do
            before=$(counts)
            read -r rps p50 p99 answered tls <<<"$(run_tool tcpool "$test" "$p")"
            read -r server client others <<<"$(per_request "$before" "$(counts)")"
            row "$test" "$p" "tcpool bench" "$rps" "$p50" "$p99" "$server" "$client" "$others" "$tls"
            echo "$rps $p50 $p99 $server $client" >>"$work/tcpool.txt"
            # As many requests as tcpool answered, so both tools run about as long.
            [ -n "$requests" ] || requests=$(( answered < 1000 ? 1000 : answered ))
            before=$(counts)
            read -r rps p50 p99 <<<"$(run_tool redis-benchmark "$test" "$p" "$requests")"
            read -r server client others <<<"$(per_request "$before" "$(counts)")"
            row "$test" "$p" "redis-benchmark" "$rps" "$p50" "$p99" "$server" "$client" "$others" ""
            echo "$rps $p50 $p99 $server $client" >>"$work/redis-benchmark.txt"
            : "$run"
        done
        col() { cut -d' ' -f"$2" "$work/$1.txt" | median; }
        awk -v t="$test" -v p="$p" \
            -v tr="$(col tcpool 1)" -v t50="$(col tcpool 2)" -v t99="$(col tcpool 3)" \
            -v ts="$(col tcpool 4)" -v tc="$(col tcpool 5)" \
            -v rr="$(col redis-benchmark 1)" -v r50="$(col redis-benchmark 2)" -v r99="$(col redis-benchmark 3)" \
            -v rs="$(col redis-benchmark 4)" -v rc="$(col redis-benchmark 5)" 'BEGIN {
                ratio = rr > 0 ? sprintf("%.2f×", tr / rr) : "-"
                printf "| %s | %s | %d | %d | %s | %.3f / %.3f | %.3f / %.3f | %.2f / %.2f | %.2f / %.2f |\n",
                    t, p, tr, rr, ratio, t50, t99, r50, r99, ts, rs, tc, rc
            }' >>"$work/table.md"
    done
done

echo
echo "Medians of $RUNS runs:"
echo
echo "| test | pipeline | tcpool req/s | redis-benchmark req/s | tcpool ÷ redis-benchmark | tcpool p50 / p99 ms | redis-benchmark p50 / p99 ms | server µs/req, tcpool / redis-benchmark | client µs/req, tcpool / redis-benchmark |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
cat "$work/table.md"
