#!/usr/bin/env bash
# tcpool bench next to redis-benchmark on the same redis-server: the same requests, the same
# connections and pipeline, run in turns (interleaved, so that a busy moment of a shared
# machine falls on both tools alike). Prints each run and then the median of each tool:
# requests per second and latency percentiles (p50, p99).
#
#   bash benches/redis.sh
#   ROUNDS=5 CONNECTIONS=50 PIPELINES="1 16" DURATION=5 bash benches/redis.sh
#
# Requests: PING (`*1\r\n$4\r\nPING\r\n`, redis-benchmark's PING_MBULK) and SET of a fixed
# key with a 3-byte value (redis-benchmark's SET without -r). tcpool checks every reply
# (`--expect`); redis-benchmark counts them.
#
# The `mix` case: tcpool sends 90 % GET and 10 % SET of keys drawn uniformly from 100,000
# (`--reply resp`, every reply framed and classified, misses counted), in redis-benchmark's
# own form (multi-bulk, `key:` and 12 digits: `{key:100000:pad=12}`), next to
# redis-benchmark's `-t get,set -r 100000`, which runs its GETs and its SETs one after the
# other; its line for the mix is the rate of that 90/10 mix at its own GET and SET rates
# (1 / (0.9 / get + 0.1 / set)), with the GET run's latency. tcpool's line ends with the
# hit ratio it saw: the key space fills as the runs go.
#
# Settings (environment): ROUNDS turns per case (3), CONNECTIONS (50, redis-benchmark's
# default), PIPELINES ("1 16"), DURATION seconds per tcpool run (3; redis-benchmark gets as
# many requests as tcpool answered in its first run, so the two run about as long), THREADS
# for tcpool (1: redis-benchmark is single-threaded too; "0" means one per CPU).
#
# Bounded in time: every run is limited by `timeout`; the redis-server started here listens
# on a free loopback port, saves nothing, and is killed on exit.

set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
CONNECTIONS=${CONNECTIONS:-50}
PIPELINES=${PIPELINES:-"1 16"}
CASES=${CASES:-"ping set mix"}
KEYS=${KEYS:-100000}
DURATION=${DURATION:-3}
THREADS=${THREADS:-1}

for tool in redis-server redis-benchmark; do
    command -v "$tool" >/dev/null || { echo "$tool is needed (scripts/test.sh installs it)" >&2; exit 1; }
done

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

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
redis-server --bind 127.0.0.1 --port "$port" --save '' --appendonly no >"$work/redis.log" 2>&1 &
redis_pid=$!
for _ in $(seq 100); do
    redis-cli -p "$port" ping >/dev/null 2>&1 && break
    sleep 0.1
done
redis-cli -p "$port" ping >/dev/null || { echo "redis-server did not start" >&2; exit 1; }
threads=()
[ "$THREADS" != 0 ] && threads=(--threads "$THREADS")

# Reads a number from tcpool's one-line JSON report: field FILE KEY [OBJECT].
field() {
    local json
    json=$(cat "$1")
    if [ -n "${3:-}" ]; then
        json=$(sed -n "s/.*\"$3\":{\([^}]*\)}.*/\1/p" <<<"$json")
    fi
    sed -n "s/.*\"$2\":\([0-9.eE+-]*\).*/\1/p" <<<"$json" | head -n 1
}

# tcpool CASE PIPELINE: prints "rps p50_ms p99_ms" (and the hit ratio for mix).
run_tcpool() {
    local send expect
    if [ "$1" = mix ]; then
        timeout --kill-after=5 $((DURATION + 30)) "$tcpool" bench "$port" --json -c "$CONNECTIONS" \
            --pipeline "$2" -d "$DURATION" --warmup 0.5 "${threads[@]}" --reply resp \
            --send "*2\\r\\n\$3\\r\\nGET\\r\\n\$16\\r\\nkey:{key:$KEYS:pad=12}\\r\\n" --weight 9 \
            --send "*3\\r\\n\$3\\r\\nSET\\r\\n\$16\\r\\nkey:{key:$KEYS:pad=12}\\r\\n\$3\\r\\nxxx\\r\\n" --weight 1 \
            >"$work/run.json" 2>>"$work/bench.log" || true
        python3 -c '
import json, sys
r = json.load(open(sys.argv[1]))
if r["errors"]:
    print("0 0 0 errors", sum(r["errors_by_kind"].values()))
else:
    hit = r["replies"]["hit_ratio"]
    print("%.0f %.3f %.3f hit_ratio=%s" % (r["msgs_per_sec"], r["latency_us"]["p50"] / 1000,
          r["latency_us"]["p99"] / 1000, "none" if hit is None else "%.3f" % hit))
' "$work/run.json"
        return
    fi
    case $1 in
        ping) send='*1\r\n$4\r\nPING\r\n' expect='+PONG\r\n' ;;
        set) send='*3\r\n$3\r\nSET\r\n$16\r\nkey:000000000000\r\n$3\r\nxxx\r\n' expect='+OK\r\n' ;;
    esac
    timeout --kill-after=5 $((DURATION + 30)) "$tcpool" bench "$port" --json -c "$CONNECTIONS" \
        --pipeline "$2" -d "$DURATION" --warmup 0.5 "${threads[@]}" \
        --send "$send" --expect "$expect" >"$work/run.json" 2>>"$work/bench.log" || true
    if [ "$(field "$work/run.json" errors)" != 0 ]; then
        echo "0 0 0"
        return
    fi
    awk -v rps="$(field "$work/run.json" msgs_per_sec)" \
        -v p50="$(field "$work/run.json" p50 latency_us)" \
        -v p99="$(field "$work/run.json" p99 latency_us)" \
        'BEGIN { printf "%.0f %.3f %.3f\n", rps, p50 / 1000, p99 / 1000 }'
}

# redis-benchmark CASE PIPELINE REQUESTS: prints "rps p50_ms p99_ms".
run_redis_benchmark() {
    local test
    if [ "$1" = mix ]; then
        timeout --kill-after=5 $((DURATION * 20 + 30)) redis-benchmark -p "$port" -c "$CONNECTIONS" \
            -P "$2" -n "$3" -r "$KEYS" -t get,set --csv 2>>"$work/bench.log" | tr -d '"' |
            awk -F, '$1 == "SET" { set = $2 } $1 == "GET" { get = $2; p50 = $5; p99 = $7 }
                END { if (get > 0 && set > 0) printf "%.0f %.3f %.3f get=%.0f set=%.0f\n", 1 / (0.9 / get + 0.1 / set), p50, p99, get, set; else print "0 0 0" }'
        return
    fi
    case $1 in ping) test=ping_mbulk ;; set) test=set ;; esac
    timeout --kill-after=5 $((DURATION * 10 + 30)) redis-benchmark -p "$port" -c "$CONNECTIONS" \
        -P "$2" -n "$3" -t "$test" --csv 2>>"$work/bench.log" | tail -n 1 | tr -d '"' |
        awk -F, '{ printf "%.0f %.3f %.3f\n", $2, $5, $7 }'
}

median() {
    sort -n | awk '{ v[NR] = $1 } END { if (NR) print v[int((NR + 1) / 2)]; else print 0 }'
}

printf '%-6s %-8s %-22s %12s %9s %9s\n' case pipeline tool "requests/s" "p50 ms" "p99 ms"
for case in $CASES; do
    for p in $PIPELINES; do
        requests=""
        : >"$work/tcpool.txt"
        : >"$work/redis-benchmark.txt"
        for round in $(seq "$ROUNDS"); do
            read -r rps p50 p99 extra <<<"$(run_tcpool "$case" "$p")"
            printf '%-6s %-8s %-22s %12s %9s %9s %s\n' "$case" "$p" "tcpool bench" "$rps" "$p50" "$p99" "${extra:-}"
            echo "$rps $p50 $p99" >>"$work/tcpool.txt"
            # As many requests as tcpool answered, so both tools run about as long.
            [ -n "$requests" ] || requests=$(awk -v r="$rps" -v d="$DURATION" 'BEGIN { n = int(r * d); print (n < 1000 ? 1000 : n) }')
            read -r rps p50 p99 extra <<<"$(run_redis_benchmark "$case" "$p" "$requests")"
            printf '%-6s %-8s %-22s %12s %9s %9s %s\n' "$case" "$p" "redis-benchmark" "$rps" "$p50" "$p99" "${extra:-}"
            echo "$rps $p50 $p99" >>"$work/redis-benchmark.txt"
            : "$round"
        done
        for tool in tcpool redis-benchmark; do
            printf '%-6s %-8s %-22s %12s %9s %9s\n' "$case" "$p" "median $tool" \
                "$(cut -d' ' -f1 "$work/$tool.txt" | median)" \
                "$(cut -d' ' -f2 "$work/$tool.txt" | median)" \
                "$(cut -d' ' -f3 "$work/$tool.txt" | median)"
        done
    done
done
