#!/usr/bin/env bash
# A chat room over a tcpool cluster next to the same fan-out through Redis pub/sub, measured
# by `tcpool bench --chat` (docs/src/bench-chat.md).
#
#   bash benches/chat-cluster.sh
#   RATES="10 20 40" SENDERS=30 READERS=870 DURATION=5 bash benches/chat-cluster.sh
#
# Starts a nats-server and three `tcpool serve --mode chat --cluster` nodes (release build),
# each with an admin endpoint, and a redis-server, all on free loopback ports. For each rate
# (lines per second per sender) it runs the bench over the three nodes, SENDERS + READERS
# clients spread evenly over them (300 a node by default), then over Redis with the same
# clients (senders PUBLISH, readers SUBSCRIBE one channel), and prints one table: deliveries
# per second, lines lost, doubled or reordered, and latency p50/p99 of local and cross-node
# deliveries (Redis has one node: all local). The last lines name the highest rate at which
# each delivered every line to every reader with no client cut off.
#
# Independent counts: during each run one more client that is not the bench's reads the room
# and counts the bench's lines it gets: `ncat --recv-only` on the third node (every line of
# every sender, local or from the other nodes, should reach it) and `redis-cli psubscribe`
# on Redis. The table shows its count next to the bench's lines sent. After each tcpool run
# the nodes' own counts of lines the cluster link dropped (`tcpool_cluster_dropped_total`)
# are summed from their /metrics.
#
# Settings (environment): RATES ("10 20 40 80"), SENDERS (30), READERS (870), DURATION
# seconds of sending per run (5), DRAIN seconds readers may read on after it (3), THREADS for
# the bench (empty: one per CPU). Bounded in time: every run is limited by `timeout`, and every
# process started here is killed on exit.

set -euo pipefail
cd "$(dirname "$0")/.."

RATES=${RATES:-"10 20 40 80"}
SENDERS=${SENDERS:-30}
READERS=${READERS:-870}
DURATION=${DURATION:-5}
DRAIN=${DRAIN:-3}
THREADS=${THREADS:-}

for tool in nats-server redis-server redis-cli ncat curl python3; do
    command -v "$tool" >/dev/null || { echo "$tool is needed (scripts/test.sh installs it)" >&2; exit 1; }
done

work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "building (release)..." >&2
cargo build --release --bin tcpool --message-format=json-render-diagnostics >"$work/build.json"
tcpool=$(grep -o '"executable":"[^"]*/tcpool"' "$work/build.json" | tail -n 1 | cut -d'"' -f4)
[ -x "$tcpool" ] || { echo "build produced no binary" >&2; exit 1; }

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
wait_port() {
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "nothing listens on port $1" >&2
    exit 1
}

nats_port=$(free_port)
nats-server -a 127.0.0.1 -p "$nats_port" >"$work/nats.log" 2>&1 &
pids+=($!)
wait_port "$nats_port"

nodes=()
admins=()
for name in a b c; do
    port=$(free_port)
    admin=$(free_port)
    RUST_LOG=warn "$tcpool" serve --mode chat --port "$port" --admin "127.0.0.1:$admin" \
        --cluster "nats://127.0.0.1:$nats_port" --node "$name" </dev/null >"$work/node-$name.log" 2>&1 &
    pids+=($!)
    wait_port "$port"
    nodes+=("127.0.0.1:$port")
    admins+=("$admin")
done

redis_port=$(free_port)
redis-server --bind 127.0.0.1 --port "$redis_port" --save '' --appendonly no --maxclients 10000 \
    >"$work/redis.log" 2>&1 &
pids+=($!)
wait_port "$redis_port"
sleep 1 # the nodes' cluster links come up

# The bench's lines sent by the cluster's links, dropped: summed over the three nodes.
dropped() {
    local total=0 n
    for admin in "${admins[@]}"; do
        n=$(curl -s --max-time 5 "http://127.0.0.1:$admin/metrics" |
            awk '/^tcpool_cluster_dropped_total/ { s += $2 } END { print s + 0 }')
        total=$((total + n))
    done
    echo "$total"
}

# Seconds a run takes at most: connecting, settling, sending, draining, and margin.
limit=$((DURATION + DRAIN + 40))
watch=$((DURATION + DRAIN + 4))

run() { # what rate targets...
    local what=$1 rate=$2
    shift 2
    local extra=()
    [ "$what" = redis ] && extra=(--chat-protocol redis)
    [ -n "$THREADS" ] && extra+=(--threads "$THREADS")
    if [ "$what" = redis ]; then
        timeout "$watch" redis-cli -p "$redis_port" psubscribe 'tcpool-chat-*' 2>/dev/null |
            grep -c '^tcb:' >"$work/watch" || true &
    else
        timeout "$watch" ncat --recv-only 127.0.0.1 "${nodes[2]#*:}" 2>/dev/null |
            grep -c '> tcb:' >"$work/watch" || true &
    fi
    local watcher=$!
    sleep 0.5
    timeout "$limit" "$tcpool" bench --chat "${extra[@]}" --senders "$SENDERS" --readers "$READERS" \
        --rate "$rate" -d "$DURATION" --drain "$DRAIN" --json "$@" \
        >"$work/$what-$rate.json" 2>"$work/$what-$rate.err" || true
    wait "$watcher" || true
}

printf '%-6s %-7s %12s %10s %8s %5s %6s %9s %9s %9s %9s %7s %8s\n' \
    system rate/snd "deliveries/s" sent watcher lost dup+ooo "local-p50" "local-p99" "cross-p50" "cross-p99" errors "dropped"
best_tcpool=none
best_redis=none
for rate in $RATES; do
    before=$(dropped)
    run tcpool "$rate" "${nodes[@]}"
    after=$(dropped)
    for what in tcpool redis; do
        if [ "$what" = redis ]; then run redis "$rate" "127.0.0.1:$redis_port"; fi
        file="$work/$what-$rate.json"
        if ! [ -s "$file" ]; then
            echo "$what at $rate lines/s: no report: $(tail -n 3 "$work/$what-$rate.err")" >&2
            continue
        fi
        drop="-"
        [ "$what" = tcpool ] && drop=$((after - before))
        python3 - "$file" "$(cat "$work/watch" 2>/dev/null || echo 0)" "$what" "$rate" "$drop" \
            "$work/clean" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
watch, what, rate, drop, clean = sys.argv[2:7]
e = r["errors"]
failed = e["connect"] + e["join_timeout"] + e["closed"] + e["server_error"]
print("%-6s %-7s %12.0f %10d %8s %5d %6d %9d %9d %9d %9d %7d %8s" % (
    what, rate, r["delivered_per_sec"], r["lines_sent"], watch, r["missing"],
    r["duplicates"] + r["out_of_order"], r["local_us"]["p50"], r["local_us"]["p99"],
    r["cross_node_us"]["p50"], r["cross_node_us"]["p99"], failed, drop))
ok = (r["missing"] == 0 and r["duplicates"] == 0 and r["out_of_order"] == 0 and failed == 0
      and r["lines_not_sent"] == 0 and r["readers_ready"] == r["readers"])
open(clean, "w").write("yes" if ok else "no")
PY
        clean=$(cat "$work/clean")
        if [ "$clean" = yes ]; then
            if [ "$what" = tcpool ]; then best_tcpool=$rate; else best_redis=$rate; fi
        fi
    done
done
echo
echo "clients: $SENDERS senders + $READERS readers ($(( (SENDERS + READERS) / 3 )) a node on tcpool), $DURATION s a run; latency in µs from each line's intended send time"
echo "highest rate tried with every line delivered once, in order, no client cut: tcpool $best_tcpool, redis $best_redis (lines/s per sender)"
