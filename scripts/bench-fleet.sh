#!/usr/bin/env bash
# A fleet of tcpool bench generators on this machine, one measured window, one exact result:
#
#   scripts/bench-fleet.sh N HOST:PORT [tcpool bench args...]
#   scripts/bench-fleet.sh 4 127.0.0.1:6379 -c 50 -d 30s --send 'PING\r\n' --expect '+PONG\r\n'
#
# Starts N `tcpool bench HOST:PORT --start-at T --json ARGS...` processes with one start time
# T a few seconds ahead (each connects first, then all measure from T), waits for them, and
# prints `tcpool bench merge` of their reports. The reports and the merged one (merged.json)
# are kept in OUT. Exit code: the merge's (1 when any generator had errors or failed).
#
# Environment: TCPOOL the binary (default: `tcpool` on PATH, else target/release/tcpool),
# LEAD seconds between launch and T (3: time for every generator to connect), OUT the
# directory for the reports (default: a new temporary one, printed).
#
# To spread generators over machines, run the same `tcpool bench ... --start-at T --json` on
# each (ssh, a job runner, deploy/kubernetes/bench-job.yaml) with one T, collect the JSON
# files, and run `tcpool bench merge` on them: the clocks must agree (NTP) to well under the
# window.

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
lead=${LEAD:-3}
out=${OUT:-$(mktemp -d)}
mkdir -p "$out"

at=$(( $(date +%s) + lead ))
echo "starting $n generator(s) against $target at $at; reports in $out" >&2
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' INT TERM
for i in $(seq "$n"); do
    "$tcpool" bench "$target" --start-at "$at" --json "$@" >"$out/gen-$i.json" 2>"$out/gen-$i.log" &
    pids+=("$!")
done
failed=0
for pid in "${pids[@]}"; do
    # Exit 1 is a run with errors (still a report); anything else is a generator that failed.
    wait "$pid" || [ "$?" -eq 1 ] || failed=1
done
[ "$failed" -eq 0 ] || echo "some generator failed: see $out/gen-*.log" >&2

reports=()
for i in $(seq "$n"); do
    reports+=("$out/gen-$i.json")
done
"$tcpool" bench merge "${reports[@]}" --json >"$out/merged.json" 2>/dev/null || true
"$tcpool" bench merge "${reports[@]}"
