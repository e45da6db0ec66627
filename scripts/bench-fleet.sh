#!/usr/bin/env bash
# A fleet of tcpool bench generators on this machine, driven as one over NATS:
#
#   scripts/bench-fleet.sh N HOST:PORT [tcpool bench args...]
#   scripts/bench-fleet.sh 4 127.0.0.1:6379 -c 200 -d 30s --send 'PING\r\n' --expect '+PONG\r\n'
#
# A thin wrapper over `tcpool bench --fleet`: it starts a nats-server on a free loopback port
# (or uses NATS, a broker URL, when set), makes a fleet token, starts N `tcpool bench agent`s
# named gen-1 ... gen-N, and runs `tcpool bench HOST:PORT --fleet ... --agents N ARGS...`:
# -c, -n and --rate are the fleet's totals, which the coordinator splits exactly among them;
# it starts them on one window in their own clocks, and merges their reports exactly. Each agent's own report
# is kept in OUT as agent-gen-I.json, the fleet's as fleet.json, and `tcpool bench merge` of
# the agents' reports as merged.json (the same figures; its text is printed at the end).
# Exit code: the coordinator's (0; 1 a run with errors; 3 a --fail-if threshold failed;
# 4 an agent was lost).
#
# Environment: TCPOOL the binary (default: `tcpool` on PATH, else target/release/tcpool),
# NATS a broker to use instead of starting one, ALLOW an --allow-target block for the agents
# when the target is not on loopback (such as 10.0.0.0/8), OUT the directory for the reports
# (default: a new temporary one, printed).
#
# To spread the agents over machines, start `tcpool bench agent --nats URL
# --fleet-token-file FILE` on each (deploy/kubernetes/bench-fleet.yaml runs them as a
# Deployment and the coordinator as a Job) and run the coordinator anywhere with --fleet.

set -euo pipefail

if [ "$#" -lt 2 ] || ! [[ "$1" =~ ^[1-9][0-9]*$ ]]; then
    echo "usage: $0 N HOST:PORT [tcpool bench args...]" >&2
    exit 2
fi
n=$1 target=$2
shift 2

tcpool=${TCPOOL:-}
if [ -z "$tcpool" ]; then
    if command -v tcpool >/dev/null 2>&1; then
        tcpool=tcpool
    else
        tcpool="$(dirname "$0")/../target/release/tcpool"
    fi
fi
out=${OUT:-$(mktemp -d)}
mkdir -p "$out"
pids=()
cleanup() {
    [ "${#pids[@]}" -gt 0 ] || return 0
    # The agents first (the broker is the first pid), so their last words still go out.
    local i
    for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
        kill "${pids[$i]}" 2>/dev/null || true
        wait "${pids[$i]}" 2>/dev/null || true
    done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_port() {
    for _ in $(seq 200); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.05
    done
    echo "nothing listening on 127.0.0.1:$1" >&2
    return 1
}

nats=${NATS:-}
if [ -z "$nats" ]; then
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    nats-server -a 127.0.0.1 -p "$port" >"$out/nats.log" 2>&1 &
    pids+=("$!")
    wait_port "$port"
    nats="nats://127.0.0.1:$port"
fi
head -c 32 /dev/urandom | base64 >"$out/fleet.token"
allow=()
[ -n "${ALLOW:-}" ] && allow=(--allow-target "$ALLOW")
for i in $(seq "$n"); do
    "$tcpool" bench agent --nats "$nats" --fleet-token-file "$out/fleet.token" --name "gen-$i" \
        "${allow[@]}" </dev/null >"$out/agent-$i.log" 2>&1 &
    pids+=("$!")
done
echo "$n agent(s) on $nats against $target; reports in $out" >&2

code=0
"$tcpool" bench "$target" --fleet "$nats" --fleet-token-file "$out/fleet.token" --agents "$n" \
    --keep-reports "$out" --json "$@" >"$out/fleet.json" 2>"$out/fleet.log" || code=$?
[ "$code" -le 1 ] || cat "$out/fleet.log" >&2

reports=()
for i in $(seq "$n"); do
    [ -f "$out/agent-gen-$i.json" ] && reports+=("$out/agent-gen-$i.json")
done
if [ "${#reports[@]}" -gt 0 ]; then
    "$tcpool" bench merge "${reports[@]}" --json >"$out/merged.json" 2>/dev/null || true
    "$tcpool" bench merge "${reports[@]}" || true
fi
exit "$code"
