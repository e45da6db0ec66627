#!/usr/bin/env bash
# What a fleet costs: three `tcpool bench agent`s driven by `tcpool bench --fleet`, next to one
# `tcpool bench` with the same connections, against one `tcpool serve`, all on this machine.
#
#   bash benches/fleet.sh                  # 3 agents x 1,000 connections, 10 s
#   CONNS=300 DURATION=5 bash benches/fleet.sh
#
# It prints, for the fleet and for the single generator: msgs/s and p50/p99; and for the
# fleet, what its coordination cost: the coordinator's CPU time (user + system, measured by
# /usr/bin/time), and the messages and bytes the broker carried for the run
# (nats-server's own /varz counts, before and after). On one machine the fleet cannot be
# faster than one generator with the same threads: the agents share its cores with the server.
#
# Settings (environment): AGENTS (3), CONNS per agent (1000), DURATION seconds (10), THREADS
# for the single generator (2). Everything listens on free loopback ports and is killed on
# exit; every run is bounded by `timeout`.

set -euo pipefail
cd "$(dirname "$0")/.."

AGENTS=${AGENTS:-3}
CONNS=${CONNS:-1000}
DURATION=${DURATION:-10}
THREADS=${THREADS:-2}
total=$((AGENTS * CONNS))

cargo build --release -q
tcpool=target/release/tcpool
work=$(mktemp -d)
pids=()
cleanup() {
    local pid
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
wait_port() {
    for _ in $(seq 200); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.05
    done
    echo "nothing listening on $1" >&2
    return 1
}
varz() {
    curl -s "127.0.0.1:$monitor/varz" |
        python3 -c 'import json,sys; v=json.load(sys.stdin); print(v["in_msgs"]+v["out_msgs"], v["in_bytes"]+v["out_bytes"])'
}
# Median msgs/s, p50 and p99 (µs) of a bench JSON report in file $1.
figures() {
    python3 - "$1" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
l = r["latency_us"]
print(f'{r["msgs_per_sec"]:.0f} {l["p50"]:.0f} {l["p99"]:.0f}')
EOF
}

nats=$(free_port)
monitor=$(free_port)
nats-server -a 127.0.0.1 -p "$nats" -m "$monitor" >/dev/null 2>&1 &
pids+=($!)
wait_port "$nats"
wait_port "$monitor"
server=$(free_port)
"$tcpool" serve --port "$server" --max-conns $((total + 100)) </dev/null >/dev/null 2>&1 &
pids+=($!)
wait_port "$server"
head -c 32 /dev/urandom | base64 >"$work/token"
for n in $(seq "$AGENTS"); do
    "$tcpool" bench agent --nats "nats://127.0.0.1:$nats" --fleet-token-file "$work/token" \
        --name "agent$n" </dev/null >"$work/agent$n.log" 2>&1 &
    pids+=($!)
done
sleep 1

limit=$((DURATION + 60))
read -r msgs0 bytes0 <<<"$(varz)"
timeout "$limit" /usr/bin/time -f "%U %S" -o "$work/cpu" \
    "$tcpool" bench "127.0.0.1:$server" --fleet "nats://127.0.0.1:$nats" \
    --fleet-token-file "$work/token" --agents "$AGENTS" -c "$total" -d "$DURATION" --json \
    >"$work/fleet.json" 2>"$work/fleet.err" || { cat "$work/fleet.err" >&2; exit 1; }
read -r msgs1 bytes1 <<<"$(varz)"

timeout "$limit" "$tcpool" bench "127.0.0.1:$server" -c "$total" -d "$DURATION" \
    --threads "$THREADS" --json >"$work/single.json" 2>/dev/null

read -r f_rate f_p50 f_p99 <<<"$(figures "$work/fleet.json")"
read -r s_rate s_p50 s_p99 <<<"$(figures "$work/single.json")"
echo "$AGENTS agents x $CONNS connections against one tcpool serve, ${DURATION}s; one machine, $(nproc) cores"
echo
printf '| generator | msgs/s | p50 | p99 |\n| --- | ---: | ---: | ---: |\n'
printf '| fleet: %s agents, --fleet | %s | %s µs | %s µs |\n' "$AGENTS" "$f_rate" "$f_p50" "$f_p99"
printf '| one tcpool bench, --threads %s | %s | %s µs | %s µs |\n' "$THREADS" "$s_rate" "$s_p50" "$s_p99"
echo
awk -v f="$f_rate" -v s="$s_rate" 'BEGIN { printf "fleet / one generator: %.2fx\n", f / s }'
awk -v d="$DURATION" \
    '{ printf "coordinator CPU: %.2f s user + system over the run (%.1f%% of one core over the %ss window)\n", $1 + $2, 100 * ($1 + $2) / d, d }' "$work/cpu"
awk -v m=$((msgs1 - msgs0)) -v b=$((bytes1 - bytes0)) -v d="$DURATION" \
    'BEGIN { printf "broker traffic for the run: %d messages, %.1f KiB (%.1f messages/s over the window)\n", m, b / 1024, m / d }'
